"""Issue 15's cost of per-row lengths (SPEC §8): the fused op with lengths all == T against the same
call without lengths (target: <= 1.05x), forward (inference) and forward+backward, at (16,500,1024)
and (128,100,1024) by default; for information also half the rows at T/2 (less work). Interleaved
in one run with a rotating order, so that a load change hits every variant alike; medians, and the
median of the per-repeat ratios. Writes bench/results/lengths-<device>-<date>.json.
--model synaptic measures the synaptic op (SPEC §7) the same way: feed-forward (16,500,1024) and
recurrent (16,200,256) (B,T,N), S = 2 synapses per neuron by default (lengths-synaptic-*.json).

    python bench/bench_lengths.py [--shapes 16x500x1024,128x100x1024] [--repeats 15] [--device cpu]
    python bench/bench_lengths.py --model synaptic [--synaptic ff:16x500x1024,rec:16x200x256] [--synapses 2]
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


def synaptic_calls(shape, S, rec, dev):
    """The same variants for lif_cuda.synaptic_evolve: feed-forward, or with recurrent weights (the
    op's C++ time loop)."""
    B, T, N = shape
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(B, T, N * S, generator=g) * 0.5 + 0.05).to(dev)
    tau, thr, bias = (torch.full((N,), v, device=dev) for v in (0.02, 1.0, 0.0))
    tau_syn = torch.full((N, S), 0.01, device=dev)
    w_rec = (0.1 * torch.randn(N, N * S, generator=g) / N**0.5).to(dev) if rec else None
    v0, i0 = torch.zeros(N, device=dev), torch.zeros(N, S, device=dev)
    grad_out = torch.ones(B, T, N, device=dev)
    lengths = {
        "no lengths": None,
        "lengths all T": torch.full((B,), T),
        "half the rows T/2": torch.tensor([T if b % 2 else T // 2 for b in range(B)]),
    }

    def make(variant, grad):
        def fn():
            xi = x.detach().requires_grad_(grad)
            with torch.set_grad_enabled(grad):
                out = lif_cuda.synaptic_evolve(xi, v0, i0, tau, tau_syn, thr, bias, 1e-3, w_rec=w_rec,
                                               backend="fused", lengths=lengths[variant])
                if grad:
                    out[0].backward(grad_out)
            sync(dev)
        return fn

    return {(p, v): make(v, p == "forward+backward") for p in ("forward", "forward+backward") for v in VARIANTS}


def parse_synaptic(text):
    """'ff:16x500x1024,rec:16x200x256' -> [("ff", (16,500,1024)), ("rec", (16,200,256))]."""
    out = []
    for part in text.split(","):
        kind, _, shape = part.strip().partition(":")
        if kind not in ("ff", "rec"):
            raise SystemExit(f"--synaptic: expected ff:BxTxN or rec:BxTxN, got {part!r}")
        out.append((kind, parse_shapes(shape)[0]))
    return out


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
    p.add_argument("--model", choices=("lif", "synaptic"), default="lif")
    p.add_argument("--synaptic", default="ff:16x500x1024,rec:16x200x256", help="--model synaptic: kind:BxTxN,...")
    p.add_argument("--synapses", type=int, default=2, help="--model synaptic: S, synapses per neuron")
    args = p.parse_args()
    dev = torch.device(args.device)
    out = {"what": __doc__.split("\n\n")[0], "machine": machine_info(dev), "repeats": args.repeats, "results": []}
    if args.model == "lif":
        cases = [(None, shape, lambda shape=shape: calls(shape, dev)) for shape in parse_shapes(args.shapes)]
    else:
        out["model"] = "synaptic"
        out["synapses"] = args.synapses
        cases = [(kind, shape, lambda shape=shape, kind=kind: synaptic_calls(shape, args.synapses, kind == "rec", dev))
                 for kind, shape in parse_synaptic(args.synaptic)]
    for kind, shape, make in cases:
        load_before = os.getloadavg()[0]
        times = measure(make(), args.repeats)
        label = "" if kind is None else f"synaptic {kind} S={args.synapses}, "
        print(f"{label}shape {shape}, {dev}, {torch.get_num_threads()} threads, median of {args.repeats}, "
              f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
        for (phase, variant), samples in times.items():
            base = times[(phase, "no lengths")]
            ratio = statistics.median(t / b for t, b in zip(samples, base))
            print(f"  {phase:17s} {variant:18s} {statistics.median(samples) * 1e3:9.2f} ms   "
                  f"x{ratio:.3f} of no lengths (median of per-repeat ratios)")
            row = {"shape": list(shape), "phase": phase, "variant": variant, "time": summarize(samples),
                   "ratio_to_no_lengths": ratio, "load_average": [load_before, os.getloadavg()[0]]}
            if kind is not None:
                row["kind"] = kind
            out["results"].append(row)
    out["load_average_at_end"] = list(os.getloadavg())
    stem = "lengths" if args.model == "lif" else "lengths-synaptic"
    print("results:", write_json(results_path(stem, dev), out))


if __name__ == "__main__":
    main()
