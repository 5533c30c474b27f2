"""Fused LIF on a GPU against the card's copy_ bandwidth, Rockpool and SpikingJelly (issue 11).

    python bench/bench_gpu.py                        # the issue's four shapes, float32 and bfloat16
    python bench/bench_gpu.py --quick                # small shapes, few repeats: checks that all runs
    python bench/bench_gpu.py --device cpu --quick   # the script itself on the CPU (no GPU needed)

Everything is measured in one run, each timed call between two torch.cuda.synchronize() (wall
clock), the median of --repeats after --warmup untimed calls:
  fused         lif_cuda.lif_evolve(backend="fused"), default parameters (tau 20 ms, threshold 1,
                bias 0), input 0.4 + N(0,1): "fwd" forward without grad; "fwd-noise" the same with
                in-kernel noise (noise_std=0.5); "fwd+bwd" forward, then the gradients of input,
                v0, tau, threshold and bias from a fixed spike gradient. float32, and bfloat16 I/O
                (state and math float32).
  copy_         a device-to-device copy_ of a --copy-mib buffer: the bandwidth (bytes read + written
                per second) the fused op's traffic is compared with.
  rockpool      Rockpool's LIFNeuronTorch (the same equations: its spikes are checked equal to the
                fused op's), "fwd" and "fwd+bwd", float32.
  spikingjelly  SpikingJelly's LIFNode(step_mode="m") on its own CUDA/Triton kernels (its choice:
                SJ_LIF_CUDA_IMPLEMENTATION, --sj-impl), "fwd" and "fwd+bwd", float32 (a similar,
                not identical neuron: bench/impls.py says how).
Peers that do not import are reported with the reason (the GPU machine has no network: bring their
wheels, bench/fetch_wheels.sh). Bytes per element of the fused op: fwd 8 (input, spikes),
fwd+bwd 24 (+ u written; grad-out and u read, grad-in written) in float32; bfloat16 I/O 4 and 16.

Targets (issue 11), at (16,500,16384): fwd+bwd float32 >= 0.7 of the copy_ bandwidth at 24 B per
element, >= 2x SpikingJelly, >= 300x Rockpool; in-kernel noise forward <= 1.3x the noise-off
forward; bfloat16 fwd+bwd <= 0.75x float32's time. Met or not, they are printed and written to
bench/results/gpu-<card>-<date>.json (and $OUT when set); they do not change the exit status.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import lif_cuda  # noqa: E402

SHAPES = [(16, 500, 16384), (16, 500, 1024), (128, 100, 1024), (1, 1000, 128)]
QUICK_SHAPES = [(4, 50, 1024), (1, 100, 128)]
DT = 1e-3
NOISE_STD = 0.5
TARGET_SHAPE = (16, 500, 16384)
TARGETS = {  # name: (target, "min" = at least / "max" = at most)
    "fwd+bwd fraction of copy_ bandwidth": (0.7, "min"),
    "fwd+bwd speed-up over SpikingJelly": (2.0, "min"),
    "fwd+bwd speed-up over Rockpool": (300.0, "min"),
    "in-kernel noise forward / noise-off forward": (1.3, "max"),
    "bfloat16 fwd+bwd / float32 fwd+bwd": (0.75, "max"),
}
# Bytes moved per element by the fused op, by I/O element size (state is float32).
BYTES = {4: {"fwd": 8, "fwd-noise": 8, "fwd+bwd": 24}, 2: {"fwd": 4, "fwd-noise": 4, "fwd+bwd": 16}}


def parse_shapes(text):
    shapes = []
    for part in text.split(";"):
        dims = [int(p) for p in re.split(r"[x,]", part.strip()) if p]
        if len(dims) != 3:
            raise argparse.ArgumentTypeError(f"shape must be BxTxN, got {part!r}")
        shapes.append(tuple(dims))
    return shapes


class Clock:
    """Times calls between two synchronisations of the device."""

    def __init__(self, device):
        self.device = device
        self.sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def time(self, fn, repeats, warmup):
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            samples.append((time.perf_counter() - t0) * 1e3)
        s = sorted(samples)
        return {"median_ms": statistics.median(s), "min_ms": s[0], "max_ms": s[-1], "n": len(s)}

    def peak_bytes(self, fn):
        """Peak bytes allocated during one call, above what was allocated before it (CUDA only)."""
        if self.device.type != "cuda":
            return None
        self.sync()
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        fn()
        self.sync()
        return torch.cuda.max_memory_allocated(self.device) - base


def copy_bandwidth(clock, nbytes, repeats, warmup):
    """Device-to-device copy_ bandwidth in GB/s (bytes read + bytes written per second)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=clock.device).uniform_()
    dst = torch.empty_like(src)
    t = clock.time(lambda: dst.copy_(src), repeats, warmup)
    gbps = 2 * src.numel() * 4 / (t["median_ms"] * 1e-3) / 1e9
    src = dst = None  # free both (the lambda holds them as closure cells) before emptying the cache
    if clock.device.type == "cuda":
        torch.cuda.empty_cache()
    return gbps, t


class FusedCase:
    """One shape and I/O dtype for the fused op: inputs, leaves for the backward, the three modes."""

    def __init__(self, shape, io_dtype, device, seed=0):
        B, T, N = shape
        g = torch.Generator(device=device).manual_seed(seed)
        state = torch.float32
        self.x = torch.empty(shape, dtype=state, device=device).normal_(0.0, 1.0, generator=g).add_(0.4).to(io_dtype)
        self.grad = torch.empty(shape, dtype=state, device=device).normal_(0.0, 1.0, generator=g).to(io_dtype)
        full = lambda size, value: torch.full(size, value, dtype=state, device=device)  # noqa: E731
        self.params = (full((B, N), 0.0), full((N,), 20e-3), full((N,), 1.0), full((N,), 0.0))
        self.leaves = [self.x.clone().requires_grad_(True)] + [p.clone().requires_grad_(True) for p in self.params]

    def fn(self, mode):
        if mode in ("fwd", "fwd-noise"):
            noise_std = NOISE_STD if mode == "fwd-noise" else 0.0

            def fwd():
                with torch.no_grad():
                    return lif_cuda.lif_evolve(self.x, *self.params, DT, noise_std=noise_std, backend="fused")[0]
            return fwd

        def fwd_bwd():
            spikes = lif_cuda.lif_evolve(*self.leaves, DT, backend="fused")[0]
            return spikes, torch.autograd.grad(spikes, self.leaves, self.grad)
        return fwd_bwd


class PeerCase:
    """One shape for a peer from bench/impls.py (float32, its own layout, zero state per call)."""

    def __init__(self, impl, fused_case, device):
        self.impl = impl
        B, T, N = fused_case.x.shape
        self.layer = impl.layer(N, device)
        self.x = impl.native(fused_case.x.float())
        self.grad = impl.native(fused_case.grad.float())
        self.params = [p for p in self.layer.parameters() if p.requires_grad]

    def fn(self, mode):
        if mode == "fwd":
            def fwd():
                with torch.no_grad():
                    return self.layer(self.x)
            return fwd

        def fwd_bwd():
            x = self.x.detach().requires_grad_(True)
            out = self.layer(x)
            return out, torch.autograd.grad(out, [x] + self.params, self.grad)
        return fwd_bwd


def peer_impls(names, device):
    """{name: (Impl or None, why not)} for the peers asked for."""
    from bench.impls import IMPLS

    found = {}
    for name in names:
        impl = IMPLS[name]
        why = impl.unavailable(device)
        found[name] = (None if why else impl, why)
    return found


def sj_selection():
    """Which LIF implementation SpikingJelly says it picked (its private state; None if unknown)."""
    try:
        import spikingjelly._ops.lif as sj_lif

        sel = sj_lif._selection
        return {k: repr(v)[:200] for k, v in vars(sel).items() if not k.startswith("__") and not callable(v)}
    except Exception as exc:  # a private API: report, never fail
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def evaluate_targets(rows, copy_gbps, shape):
    """The issue's targets at `shape`, from the measured rows."""
    def find(impl, dtype, mode):
        for r in rows:
            if (r["impl"], r["dtype"], r["mode"], tuple(r["shape"])) == (impl, dtype, mode, shape) and "error" not in r:
                return r
        return None

    f32 = find("fused", "float32", "fwd+bwd")
    values = {
        "fwd+bwd fraction of copy_ bandwidth": f32 and f32["gbps"] / copy_gbps,
        "fwd+bwd speed-up over SpikingJelly": None,
        "fwd+bwd speed-up over Rockpool": None,
        "in-kernel noise forward / noise-off forward": None,
        "bfloat16 fwd+bwd / float32 fwd+bwd": None,
    }
    for peer, key in (("spikingjelly", "fwd+bwd speed-up over SpikingJelly"),
                      ("rockpool", "fwd+bwd speed-up over Rockpool")):
        p = find(peer, "float32", "fwd+bwd")
        if f32 and p:
            values[key] = p["median_ms"] / f32["median_ms"]
    noisy, quiet = find("fused", "float32", "fwd-noise"), find("fused", "float32", "fwd")
    if noisy and quiet:
        values["in-kernel noise forward / noise-off forward"] = noisy["median_ms"] / quiet["median_ms"]
    bf16 = find("fused", "bfloat16", "fwd+bwd")
    if bf16 and f32:
        values["bfloat16 fwd+bwd / float32 fwd+bwd"] = bf16["median_ms"] / f32["median_ms"]
    out = {}
    for name, (target, kind) in TARGETS.items():
        v = values[name]
        met = None if v is None else (v >= target if kind == "min" else v <= target)
        out[name] = {"value": v, "target": target, "kind": "at least" if kind == "min" else "at most", "met": met}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=parse_shapes, default=None, help="BxTxN;BxTxN;... (default: the issue's four)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="fused op I/O dtypes")
    p.add_argument("--peers", default="rockpool,spikingjelly", help="peers to run ('' for none)")
    p.add_argument("--repeats", type=int, default=30, help="timed calls of the fused op and copy_")
    p.add_argument("--peer-repeats", type=int, default=5, help="timed calls of each peer (slower)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--copy-mib", type=int, default=1024, help="size of the copy_ buffer")
    p.add_argument("--sj-impl", default=os.environ.get("SJ_LIF_CUDA_IMPLEMENTATION", "auto"),
                   help="SpikingJelly's LIF implementation on CUDA: auto, cuda, triton, torch")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu to check the script without a GPU")
    p.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    p.add_argument("--out-dir", default=os.path.join(REPO, "bench", "results"))
    args = p.parse_args(argv)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    if args.quick:
        args.repeats, args.peer_repeats, args.warmup, args.copy_mib = 5, 2, 1, 64
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: NO GPU FOUND (torch.cuda.is_available() is False): nothing to benchmark.")
        return 2
    if not lif_cuda.fused_available(device):
        print(f"bench_gpu: lif_cuda has no fused kernels for {device} (build with LIF_FORCE_CUDA=1).")
        return 3
    os.environ["SJ_LIF_CUDA_IMPLEMENTATION"] = args.sj_impl  # read by SpikingJelly when it is imported
    dtypes = [d for d in args.dtypes.split(",") if d]
    peers = [q for q in args.peers.split(",") if q]
    clock = Clock(device)
    now = datetime.datetime.now(datetime.timezone.utc)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        card = torch.cuda.get_device_name(device)
        machine = {"card": card, "total_memory_gib": props.total_memory / 2**30, "sms": props.multi_processor_count,
                   "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    else:
        card = platform.processor() or platform.machine() or "cpu"
        machine = {"card": card, "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    machine.update(torch=torch.__version__, python=platform.python_version(), host=platform.node())
    print(f"bench_gpu: {card} ({device}); torch {torch.__version__}; {now:%Y-%m-%d %H:%M} UTC")

    copy_gbps, copy_t = copy_bandwidth(clock, args.copy_mib * 2**20, max(args.repeats, 5), args.warmup)
    print(f"copy_ bandwidth ({args.copy_mib} MiB): {copy_gbps:,.0f} GB/s (median {copy_t['median_ms']:.3f} ms)")
    found = peer_impls(peers, device)
    for name, (impl, why) in found.items():
        print(f"peer {name}: " + (f"{impl.label} {impl.version() or ''}".strip() if impl else f"unavailable ({why})"))

    rows = []

    def record(impl, dtype, shape, mode, fn, repeats, bytes_per_elem=None, **extra):
        row = {"impl": impl, "dtype": dtype, "shape": list(shape), "mode": mode}
        try:
            row.update(clock.time(fn, repeats, args.warmup))
            row["peak_bytes"] = clock.peak_bytes(fn)
        except Exception as exc:  # a peer that fails on this shape: say so, go on
            row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            print(f"  {impl} {dtype} {shape} {mode}: FAILED {row['error']}")
            rows.append(row)
            return row
        if bytes_per_elem:
            row["bytes_per_elem"] = bytes_per_elem
            row["gbps"] = bytes_per_elem * shape[0] * shape[1] * shape[2] / (row["median_ms"] * 1e-3) / 1e9
            row["fraction_of_copy"] = row["gbps"] / copy_gbps
        row.update(extra)
        rows.append(row)
        return row

    for shape in shapes:
        for dtype in dtypes:
            case = FusedCase(shape, getattr(torch, dtype), device)
            size = case.x.element_size()
            for mode in ("fwd", "fwd-noise", "fwd+bwd"):
                record("fused", dtype, shape, mode, case.fn(mode), args.repeats, BYTES[size][mode])
            if dtype != "float32":
                del case
                continue
            for name, (impl, _) in found.items():
                if impl is None:
                    continue
                try:
                    peer = PeerCase(impl, case, device)
                except Exception as exc:
                    rows.append({"impl": name, "dtype": dtype, "shape": list(shape), "mode": "setup",
                                 "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
                    continue
                extra = {}
                if name == "rockpool":  # the same neuron: the same spikes
                    with torch.no_grad():
                        extra["spikes_equal_fused"] = bool(torch.equal(impl.to_btn(peer.fn("fwd")()), case.fn("fwd")()))
                for mode in ("fwd", "fwd+bwd"):
                    record(name, dtype, shape, mode, peer.fn(mode), args.peer_repeats, **extra)
                del peer
            del case
            if device.type == "cuda":
                torch.cuda.empty_cache()

    head = f"{'impl':>13} {'dtype':>9} {'B,T,N':>14} {'mode':>9} {'ms':>10} {'GB/s':>8} {'of copy':>8} {'MiB':>8}"
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['impl']:>13} {r['dtype']:>9} {'x'.join(map(str, r['shape'])):>14} {r['mode']:>9}  {r['error']}")
            continue
        gb = f"{r['gbps']:8,.0f} {r['fraction_of_copy']:8.2f}" if "gbps" in r else f"{'':>8} {'':>8}"
        mib = "-" if r.get("peak_bytes") is None else f"{r['peak_bytes'] / 2**20:,.0f}"
        print(f"{r['impl']:>13} {r['dtype']:>9} {'x'.join(map(str, r['shape'])):>14} {r['mode']:>9} "
              f"{r['median_ms']:10.3f} {gb} {mib:>8}")
    print(f"\ncopy_ = {copy_gbps:,.0f} GB/s; each call between two synchronisations; median of {args.repeats} "
          f"(fused) / {args.peer_repeats} (peers) after {args.warmup} warm-up calls.")
    if any(r.get("spikes_equal_fused") is False for r in rows):
        print("WARNING: Rockpool's spikes differ from the fused op's at "
              f"{sorted({tuple(r['shape']) for r in rows if r.get('spikes_equal_fused') is False})}")

    target_shape = TARGET_SHAPE if TARGET_SHAPE in shapes else shapes[0]
    targets = evaluate_targets(rows, copy_gbps, target_shape)
    print(f"\ntargets at {'x'.join(map(str, target_shape))}"
          + ("" if target_shape == TARGET_SHAPE else " (NOT the issue's shape: indicative only)") + ":")
    for name, t in targets.items():
        state = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        print(f"  {name:45s} {value:>8}  ({t['kind']} {t['target']:g}: {state})")

    result = {
        "schema": "lif_cuda-bench-gpu/2",
        "card": card,
        "device": str(device),
        "date": now.isoformat(timespec="seconds"),
        "machine": machine,
        "api": f"lif_cuda.lif_evolve(backend='fused'), dt={DT}; in-kernel noise noise_std={NOISE_STD}",
        "timing": {"method": "wall clock between two synchronisations per call, median",
                   "repeats": args.repeats, "peer_repeats": args.peer_repeats, "warmup": args.warmup},
        "copy_bandwidth_gbps": copy_gbps,
        "copy_buffer_mib": args.copy_mib,
        "peers": {name: ({"label": impl.label, "version": impl.version(), "equation": impl.equation}
                         if impl else {"unavailable": why}) for name, (impl, why) in found.items()},
        "spikingjelly_selection": sj_selection() if found.get("spikingjelly", (None,))[0] else None,
        "sj_lif_cuda_implementation": args.sj_impl,
        "results": rows,
        "target_shape": list(target_shape),
        "targets": targets,
    }
    os.makedirs(args.out_dir, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", card).strip("-").lower()
    path = os.path.join(args.out_dir, f"gpu-{slug}-{now:%Y%m%d-%H%M%S}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {path}")
    out = os.environ.get("OUT")
    if out and os.path.isdir(out) and os.path.abspath(out) != os.path.abspath(args.out_dir):
        shutil.copy(path, out)
        print(f"copied to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
