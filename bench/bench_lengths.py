"""Issue 15's cost of per-row lengths (SPEC §8): the fused op with lengths all == T against the same
call without lengths (target: <= 1.05x), forward (inference) and forward+backward, at (16,500,1024)
and (128,100,1024) by default; for information also half the rows at T/2 (less work). Interleaved
in one run with a rotating order, so that a load change hits every variant alike; medians, and the
median of the per-repeat ratios. Writes bench/results/lengths-<device>-<date>.json.

    python bench/bench_lengths.py [--shapes 16x500x1024,128x100x1024] [--repeats 15] [--device cpu]
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lif_cuda  # noqa: E402
from bench.common import machine_info, parse_shapes, results_path, summarize, sync, write_json  # noqa: E402

VARIANTS = ("no lengths", "lengths all T", "half the rows T/2")


def calls(shape, dev):
    B, T, N = shape
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(B, T, N, generator=g) * 0.5 + 0.05).to(dev)
    tau, thr, bias = (torch.full((N,), v, device=dev) for v in (0.02, 1.0, 0.0))
    v0 = torch.zeros(N, device=dev)
    grad_out = torch.ones(B, T, N, device=dev)
    lengths = {
        "no lengths": None,
        "lengths all T": torch.full((B,), T),  # a CPU tensor, as a data loader gives it
        "half the rows T/2": torch.tensor([T if b % 2 else T // 2 for b in range(B)]),
    }

    def make(variant, grad):
        def fn():
            xi = x.detach().requires_grad_(grad)
            with torch.set_grad_enabled(grad):
                s, _, _ = lif_cuda.lif_evolve(xi, v0, tau, thr, bias, 1e-3, backend="fused", lengths=lengths[variant])
                if grad:
                    s.backward(grad_out)
            sync(dev)
        return fn

    return {(p, v): make(v, p == "forward+backward") for p in ("forward", "forward+backward") for v in VARIANTS}


def measure(cases, repeats):
    times = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm-up
    keys = list(cases)
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            t0 = time.perf_counter()
            cases[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="16x500x1024,128x100x1024")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    out = {"what": __doc__.split("\n\n")[0], "machine": machine_info(dev), "repeats": args.repeats, "results": []}
    for shape in parse_shapes(args.shapes):
        times = measure(calls(shape, dev), args.repeats)
        print(f"shape {shape}, {dev}, {torch.get_num_threads()} threads, median of {args.repeats}, "
              f"load average {os.getloadavg()[0]:.2f}")
        for (phase, variant), samples in times.items():
            base = times[(phase, "no lengths")]
            ratio = statistics.median(t / b for t, b in zip(samples, base))
            print(f"  {phase:17s} {variant:18s} {statistics.median(samples) * 1e3:9.2f} ms   "
                  f"x{ratio:.3f} of no lengths (median of per-repeat ratios)")
            out["results"].append({"shape": list(shape), "phase": phase, "variant": variant,
                                   "time": summarize(samples), "ratio_to_no_lengths": ratio})
    out["load_average_at_end"] = list(os.getloadavg())
    print("results:", write_json(results_path("lengths", dev), out))


if __name__ == "__main__":
    main()
