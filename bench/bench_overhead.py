"""What one call costs: one or a few time steps per call, the real-time inference and streaming case.

    python bench/bench_overhead.py                # the four shapes, ~1-2 min on 2 cores
    python bench/bench_overhead.py --quick        # fewer rounds, for a check
    python bench/bench_overhead.py --shapes 1x1x128 --rounds 30

At (B,T,N) = (1,1,128), (1,1,1024), (8,1,512), (1,10,128), float32, default threads, each of:

  module       lif_cuda.LIFNeuron(N)(x)                  (fused backend, state carried)
  functional   lif_cuda.lif_evolve(x, v0, tau, thr, bias, dt)   (the caller's own tensors)
  torchscript  torch.jit.script(LIFNeuron(N))(x)
  rockpool     Rockpool 3.1.0 LIFNeuronTorch(N)(x)       (when installed)
  4-op step    four elementwise torch ops on x: u = a*v + x; m = u >= thr (forward) or
               u = a*v + x + b; w = u - thr (forward+backward, where >= has no gradient)

Passes: `forward` under torch.no_grad() (the inference loop), and `forward+backward`: x and the
parameters require grad, loss = out.sum(), .backward(), gradients set to None before each call.
A sample is the mean of a batch of calls (--calls, default 200: a call is microseconds); the
implementations run interleaved, batch by batch, for --rounds rounds; the median and spread over
the rounds are reported, and ratios are taken between medians of the same run. JSON goes to
bench/results/overhead-cpu-<date>.json.
"""
import argparse
import os
import sys
import time
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

import torch  # noqa: E402

import lif_cuda  # noqa: E402
from bench import common  # noqa: E402

SHAPES = [(1, 1, 128), (1, 1, 1024), (8, 1, 512), (1, 10, 128)]
PASSES = ("forward", "forward+backward")
IMPLS = ("module", "functional", "torchscript", "rockpool", "4-op step")
DT = 1e-3
# Issue 10's targets at (1,1,128).
TARGET_SHAPE = (1, 1, 128)
TARGETS = {
    ("forward", "rockpool"): ("rockpool / module", 5.0, "≥"),
    ("forward", "4-op step"): ("module / 4-op step", 4.0, "≤"),
    ("forward+backward", "rockpool"): ("rockpool / module", 4.0, "≥"),
}


def _grads_none(params):
    for p in params:
        p.grad = None


def _make(impl, shape, mode):
    """A no-argument callable doing one call of `impl` in pass `mode`, or a reason it cannot run."""
    B, T, N = shape
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(B, T, N, generator=g) + 0.3
    train = mode == "forward+backward"
    if train:
        x.requires_grad_(True)

    def run(fwd, params):
        if not train:
            def call():
                with torch.no_grad():
                    fwd()
            return call

        def call():
            _grads_none(params)
            fwd().sum().backward()
        return call

    if impl in ("module", "torchscript"):
        layer = lif_cuda.LIFNeuron(N, backend="fused")
        if impl == "torchscript":
            layer = torch.jit.script(layer)
        return run(lambda: layer(x), [x, *layer.parameters()])
    if impl == "functional":
        v0 = torch.zeros(N)
        tau, thr, bias = (torch.full((N,), v, requires_grad=train) for v in (20e-3, 1.0, 0.0))
        return run(lambda: lif_cuda.lif_evolve(x, v0, tau, thr, bias, DT, backend="fused")[0], [x, tau, thr, bias])
    if impl == "rockpool":
        try:
            common.quiet_peer_logging()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from rockpool.nn.modules import LIFNeuronTorch
        except Exception as exc:  # not installed, or broken beside this torch
            return f"rockpool does not import ({type(exc).__name__})"
        layer = LIFNeuronTorch((N,), tau_mem=20e-3, threshold=1.0, bias=0.0, dt=DT)
        params = list(torch.nn.Module.parameters(layer))
        return run(lambda: layer(x)[0], [x, *params])
    if impl == "4-op step":
        a, thr, b = (torch.full((N,), v, requires_grad=train) for v in (0.95, 1.0, 0.0))
        v = torch.zeros(N)
        if train:
            return run(lambda: ((a * v + x) + b) - thr, [x, a, thr, b])
        return run(lambda: (a * v + x) >= thr, [])
    raise ValueError(impl)


def measure(shapes, rounds, calls, impls):
    results = []
    for shape in shapes:
        for mode in PASSES:
            fns = {}
            for impl in impls:
                fn = _make(impl, shape, mode)
                if isinstance(fn, str):
                    results.append({"shape": list(shape), "mode": mode, "impl": impl, "skipped": fn})
                    continue
                for _ in range(max(20, calls // 5)):  # warm-up: caches, first-call checks, JIT
                    fn()
                fns[impl] = fn
            samples = {impl: [] for impl in fns}
            for _ in range(rounds):
                for impl, fn in fns.items():  # interleaved, batch by batch
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        fn()
                    samples[impl].append((time.perf_counter() - t0) / calls)
            for impl, s in samples.items():
                results.append({"shape": list(shape), "mode": mode, "impl": impl, "calls_per_sample": calls,
                                **common.summarize(s)})
            meds = {r["impl"]: r["median_s"] for r in results[-len(samples):]}
            print(f"{common.shape_str(shape):14s} {mode:17s} "
                  + "  ".join(f"{k} {v * 1e6:7.1f} us" for k, v in meds.items()), flush=True)
    return results


def _median(results, shape, mode, impl):
    for r in results:
        if tuple(r["shape"]) == tuple(shape) and r["mode"] == mode and r["impl"] == impl:
            return r.get("median_s")
    return None


def targets(results):
    out = []
    for (mode, other), (what, goal, sense) in TARGETS.items():
        mod, oth = _median(results, TARGET_SHAPE, mode, "module"), _median(results, TARGET_SHAPE, mode, other)
        if not (mod and oth):
            out.append({"pass": mode, "ratio": what, "target": f"{sense} {goal:g}", "value": None, "met": None})
            continue
        value = oth / mod if other == "rockpool" else mod / oth
        met = value >= goal if sense == "≥" else value <= goal
        out.append({"pass": mode, "ratio": what, "target": f"{sense} {goal:g}", "value": value, "met": met})
    return out


def table(data):
    res = data["results"]
    impls = [i for i in IMPLS if any(r["impl"] == i and "median_s" in r for r in res)]
    head = ["(B,T,N)", "pass"] + impls + ["Rockpool / module", "module / 4-op step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for shape in dict.fromkeys(tuple(r["shape"]) for r in res):
        for mode in PASSES:
            meds = {i: _median(res, shape, mode, i) for i in impls}
            row = [common.shape_str(shape), mode] + [f"{meds[i] * 1e6:.1f} µs" if meds[i] else "—" for i in impls]
            m, rp, op4 = meds.get("module"), meds.get("rockpool"), meds.get("4-op step")
            row.append(f"{rp / m:.1f}×" if m and rp else "—")
            row.append(f"{m / op4:.1f}×" if m and op4 else "—")
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for t in data["targets"]:
        v = "not measured" if t["value"] is None else f"{t['value']:.2f} ({'met' if t['met'] else 'MISSED'})"
        lines.append(f"- {t['pass']} at {common.shape_str(TARGET_SHAPE)}: {t['ratio']} = {v}, target {t['target']}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python bench/bench_overhead.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=common.parse_shapes, default=SHAPES, help="e.g. 1x1x128,8x1x512")
    p.add_argument("--rounds", type=int, default=15, help="samples per implementation (default 15)")
    p.add_argument("--calls", type=int, default=200, help="calls per sample (default 200)")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma-separated subset of " + ", ".join(IMPLS))
    p.add_argument("--quick", action="store_true", help="5 rounds of 50 calls")
    p.add_argument("--out", help="JSON path (default bench/results/overhead-cpu-<date>.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.calls = 5, 50
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    bad = [i for i in impls if i not in IMPLS]
    if bad:
        p.error(f"unknown implementations {bad}; choose from {IMPLS}")
    machine = common.machine_info("cpu")
    results = measure([tuple(s) for s in args.shapes], args.rounds, args.calls, impls)
    machine["load_average_at_end"] = list(os.getloadavg())
    data = {"schema": common.SCHEMA, "benchmark": "overhead", "machine": machine, "rounds": args.rounds,
            "calls_per_sample": args.calls, "results": results}
    data["targets"] = targets(results)
    path = args.out or common.results_path("overhead", "cpu")
    common.write_json(path, data)
    print()
    print(table(data))
    print(f"\nMachine: {common.describe_machine(machine)}; load average at start "
          f"{machine.get('load_average_at_start')}, at end {machine['load_average_at_end']}")
    print(f"results: {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
