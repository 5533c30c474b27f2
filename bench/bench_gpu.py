"""Fused LIF on CUDA against the pure-PyTorch reference on the same card (issue 3's benchmark).

    python bench/bench_gpu.py                    # the issue's four shapes, float32
    python bench/bench_gpu.py --quick            # small and fast: checks that everything runs
    python bench/bench_gpu.py --shapes 16x500x16384 --repeats 50

For each (B,T,N) and each mode it times one call of the public functional API
(`lif_cuda.lif_evolve`, default parameters: tau 20 ms, threshold 1, bias 0, input 0.4 + N(0,1)):
  infer    forward under torch.no_grad()                        8 B/elem: input, spikes
  fwd      forward with inputs requiring grad (saves u)        12 B/elem: input, spikes, u
  fwd+bwd  forward, then backward from a fixed spike gradient  24 B/elem: + grad-out, u, grad-in
with CUDA events around the call, the median of `--repeats` samples (>= 20) after warm-up. The
reference runs T Python steps of small kernels and is far slower: it gets `--ref-repeats` samples
(default 5). A device-to-device `copy_` of a large buffer, timed the same way in the same run,
gives the bandwidth the achieved GB/s are compared with (a copy moves 2 bytes per byte copied).
Peak memory is torch.cuda.max_memory_allocated() during one call, above what was allocated before.
The spikes of fused and reference are compared (torch.equal) as a sanity check.

Writes a table to stdout and JSON to bench/results/gpu-<card>-<date>.json (and to $OUT when set).
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import lif_cuda  # noqa: E402
from lif_cuda.reference import lif_evolve_reference  # noqa: E402

SHAPES = [(16, 500, 4096), (16, 500, 16384), (32, 100, 512), (1, 1000, 128)]
BYTES_PER_ELEM = {"infer": 8, "fwd": 12, "fwd+bwd": 24}  # float32; doubled for float64
TARGET_SHAPE = (16, 500, 16384)
TARGET_FRACTION, TARGET_SPEEDUP = 0.6, 100.0


def parse_shape(text):
    parts = [int(p) for p in re.split(r"[x,]", text.strip()) if p]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"shape must be BxTxN, got {text!r}")
    return tuple(parts)


def cuda_time(fn, repeats, warmup):
    """Median (and spread) in ms of fn() timed with CUDA events, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    s = sorted(samples)
    return {"median_ms": statistics.median(s), "min_ms": s[0], "max_ms": s[-1], "n": len(s)}


def peak_bytes(fn):
    """Peak bytes allocated during one fn() call, above what was allocated before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def copy_bandwidth(nbytes, repeats, warmup):
    """Device-to-device copy_ bandwidth in GB/s (bytes read + bytes written per second)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    t = cuda_time(lambda: dst.copy_(src), repeats, warmup)
    gbps = 2 * src.numel() * 4 / (t["median_ms"] * 1e-3) / 1e9
    src = dst = None  # free both (the lambda above holds them as closure cells) before emptying the cache
    torch.cuda.empty_cache()
    return gbps, t


class Workload:
    """One shape: inputs, parameters and the three modes for one implementation."""

    def __init__(self, shape, dtype, seed=0):
        B, T, N = shape
        g = torch.Generator(device="cuda").manual_seed(seed)
        self.x = torch.empty(shape, dtype=dtype, device="cuda").normal_(0.0, 1.0, generator=g).add_(0.4)
        self.v0 = torch.zeros(B, N, dtype=dtype, device="cuda")
        self.tau = torch.full((N,), 20e-3, dtype=dtype, device="cuda")
        self.thr = torch.ones(N, dtype=dtype, device="cuda")
        self.bias = torch.zeros(N, dtype=dtype, device="cuda")
        self.grad = torch.empty(shape, dtype=dtype, device="cuda").normal_(0.0, 1.0, generator=g)
        self.leaves = [t.clone().requires_grad_(True) for t in (self.x, self.v0, self.tau, self.thr, self.bias)]

    def call(self, impl, mode):
        if impl == "fused":
            run = lambda *a: lif_cuda.lif_evolve(*a, 1e-3, backend="fused")  # noqa: E731
        else:
            run = lambda *a: lif_evolve_reference(*a, 1e-3)  # noqa: E731
        if mode == "infer":
            def fn():
                with torch.no_grad():
                    return run(self.x, self.v0, self.tau, self.thr, self.bias)[0]
        elif mode == "fwd":
            def fn():
                return run(*self.leaves)[0]
        else:
            def fn():
                spikes = run(*self.leaves)[0]
                grads = torch.autograd.grad(spikes, self.leaves, self.grad)
                return spikes, grads
        return fn


def fmt_mib(n):
    return f"{n / 2**20:,.0f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(";") if x], default=SHAPES,
                   help="BxTxN;BxTxN;... (default: the issue's four)")
    p.add_argument("--modes", default="infer,fwd,fwd+bwd")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeats", type=int, default=30, help="timed samples of the fused op (>= 20)")
    p.add_argument("--ref-repeats", type=int, default=5, help="timed samples of the (slow) reference")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--copy-mib", type=int, default=1024, help="size of the copy_ bandwidth buffer")
    p.add_argument("--no-reference", action="store_true", help="time the fused op only")
    p.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    p.add_argument("--out-dir", default=os.path.join(REPO, "bench", "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.shapes = [(4, 50, 1024), (1, 100, 128)]
        args.repeats, args.ref_repeats, args.warmup, args.copy_mib = 5, 2, 1, 64

    if not torch.cuda.is_available():
        print("bench_gpu: NO GPU FOUND (torch.cuda.is_available() is False): nothing to benchmark.")
        return 2
    if not lif_cuda.fused_available("cuda"):
        print("bench_gpu: lif_cuda has no CUDA kernels (build with LIF_FORCE_CUDA=1); nothing to benchmark.")
        return 3
    modes = [m for m in args.modes.split(",") if m]
    dtype = getattr(torch, args.dtype)
    elem = torch.tensor([], dtype=dtype).element_size()
    props = torch.cuda.get_device_properties(0)
    card = torch.cuda.get_device_name(0)
    now = datetime.datetime.now(datetime.timezone.utc)
    print(f"bench_gpu: {card}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; "
          f"torch {torch.__version__} (CUDA {torch.version.cuda}); {args.dtype}; {now:%Y-%m-%d %H:%M} UTC")

    copy_gbps, copy_t = copy_bandwidth(args.copy_mib * 2**20, max(args.repeats, 20), args.warmup)
    print(f"copy_ bandwidth ({args.copy_mib} MiB buffer): {copy_gbps:,.0f} GB/s (median {copy_t['median_ms']:.3f} ms)")

    rows = []
    for shape in args.shapes:
        B, T, N = shape
        elems = B * T * N
        w = Workload(shape, dtype)
        for mode in modes:
            row = {"shape": list(shape), "mode": mode, "bytes_per_elem": BYTES_PER_ELEM[mode] * elem // 4}
            fn = w.call("fused", mode)
            row["fused"] = cuda_time(fn, args.repeats, args.warmup)
            row["fused"]["peak_bytes"] = peak_bytes(fn)
            ms = row["fused"]["median_ms"]
            row["gbps"] = row["bytes_per_elem"] * elems / (ms * 1e-3) / 1e9
            row["fraction_of_copy"] = row["gbps"] / copy_gbps
            if not args.no_reference:
                rfn = w.call("reference", mode)
                row["reference"] = cuda_time(rfn, args.ref_repeats, 1)
                row["reference"]["peak_bytes"] = peak_bytes(rfn)
                row["speedup"] = row["reference"]["median_ms"] / ms
                if mode == "infer":
                    row["spikes_equal"] = bool(torch.equal(fn(), rfn()))
            rows.append(row)
            torch.cuda.empty_cache()
        del w
        torch.cuda.empty_cache()

    # The table.
    head = (f"{'B,T,N':>15} {'mode':>8} {'fused ms':>10} {'GB/s':>8} {'of copy':>8} {'ref ms':>10} "
            f"{'speed-up':>9} {'fused MiB':>10} {'ref MiB':>9}")
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        ref = r.get("reference")
        print(f"{'x'.join(map(str, r['shape'])):>15} {r['mode']:>8} {r['fused']['median_ms']:>10.3f} "
              f"{r['gbps']:>8,.0f} {r['fraction_of_copy']:>8.2f} "
              f"{(ref['median_ms'] if ref else math.nan):>10.2f} {r.get('speedup', math.nan):>8.0f}x "
              f"{fmt_mib(r['fused']['peak_bytes']):>10} {(fmt_mib(ref['peak_bytes']) if ref else '-'):>9}")
    print(f"\nGB/s count {', '.join(f'{m} {b * elem // 4} B/elem' for m, b in BYTES_PER_ELEM.items())}; "
          f"copy_ = {copy_gbps:,.0f} GB/s. Fused: median of {args.repeats} after {args.warmup} warm-up; "
          f"reference: median of {args.ref_repeats} after 1 (it is slow).")
    mismatched = [r["shape"] for r in rows if r.get("spikes_equal") is False]
    if mismatched:
        print(f"WARNING: fused and reference spikes differ at {mismatched}")

    targets = {}
    for r in rows:
        if tuple(r["shape"]) == TARGET_SHAPE and r["mode"] == "fwd+bwd" and args.dtype == "float32":
            targets = {
                "shape": list(TARGET_SHAPE),
                "fraction_of_copy": r["fraction_of_copy"],
                "fraction_target": TARGET_FRACTION,
                "fraction_met": r["fraction_of_copy"] >= TARGET_FRACTION,
                "speedup": r.get("speedup"),
                "speedup_target": TARGET_SPEEDUP,
                "speedup_met": None if "speedup" not in r else r["speedup"] >= TARGET_SPEEDUP,
            }
            print(f"target at {'x'.join(map(str, TARGET_SHAPE))} fwd+bwd: {r['fraction_of_copy']:.2f} of copy "
                  f"bandwidth (>= {TARGET_FRACTION}: {'met' if targets['fraction_met'] else 'NOT met'})"
                  + ("" if "speedup" not in r else
                     f", {r['speedup']:.0f}x the reference (>= {TARGET_SPEEDUP:.0f}x: "
                     f"{'met' if targets['speedup_met'] else 'NOT met'})"))

    result = {
        "schema": "lif_cuda-bench-gpu/1",
        "card": card,
        "date": now.isoformat(timespec="seconds"),
        "machine": {
            "card": card,
            "total_memory_gib": props.total_memory / 2**30,
            "sms": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "host": platform.node(),
        },
        "dtype": args.dtype,
        "api": "lif_cuda.lif_evolve (fused) vs lif_cuda.reference.lif_evolve_reference, dt=1e-3",
        "timing": {
            "method": "CUDA events around one call, median",
            "fused_repeats": args.repeats,
            "reference_repeats": args.ref_repeats,
            "warmup": args.warmup,
        },
        "copy_bandwidth_gbps": copy_gbps,
        "copy_buffer_mib": args.copy_mib,
        "bytes_per_elem": {m: b * elem // 4 for m, b in BYTES_PER_ELEM.items()},
        "results": rows,
        "targets": targets,
    }
    os.makedirs(args.out_dir, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", card).strip("-").lower()
    path = os.path.join(args.out_dir, f"gpu-{slug}-{now:%Y%m%d-%H%M%S}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {path}")
    out = os.environ.get("OUT")
    if out and os.path.isdir(out) and os.path.abspath(out) != os.path.abspath(args.out_dir):
        shutil.copy(path, out)
        print(f"copied to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
