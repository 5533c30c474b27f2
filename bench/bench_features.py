"""Issue 5's feature costs on one shape: noise off / in-kernel noise / a torch.randn noise tensor,
and float32 vs bfloat16 I/O, fused forward (inference) and forward+backward, interleaved in one
run, medians. Writes bench/results/features-<device>-<date>.json.

    python bench/bench_features.py [--shape 16,500,1024] [--repeats 15] [--device cpu]
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import time

import torch

import lif_cuda


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="16,500,1024")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    B, T, N = (int(v) for v in args.shape.split(","))
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    x32 = (torch.randn(B, T, N, generator=g) * 0.5 + 0.05).to(dev)
    xbf = x32.bfloat16()
    tau, thr, bias = (torch.full((N,), v, device=dev) for v in (0.02, 1.0, 0.0))
    v0 = torch.zeros(N, device=dev)
    dt, std = 1e-3, 0.5

    def call(x, noise_mode, grad):
        def fn():
            xi = x.detach().requires_grad_(grad)
            kw = {}
            if noise_mode == "kernel":
                kw["noise_std"] = std
            elif noise_mode == "torch":
                kw["noise"] = std * math.sqrt(dt) * torch.randn(B, T, N, device=dev)
            with torch.set_grad_enabled(grad):
                s, _, _ = lif_cuda.lif_evolve(xi, v0, tau, thr, bias, dt, backend="fused", **kw)
                if grad:
                    s.sum().backward()
            sync()
        return fn

    cases = {
        ("forward", "float32, no noise"): call(x32, None, False),
        ("forward", "float32, in-kernel noise"): call(x32, "kernel", False),
        ("forward", "float32, torch.randn noise tensor"): call(x32, "torch", False),
        ("forward", "bfloat16 I/O, no noise"): call(xbf, None, False),
        ("forward+backward", "float32, no noise"): call(x32, None, True),
        ("forward+backward", "float32, in-kernel noise"): call(x32, "kernel", True),
        ("forward+backward", "bfloat16 I/O, no noise"): call(xbf, None, True),
    }
    times = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm-up
    for r in range(args.repeats):  # interleaved, rotating order
        keys = list(cases)
        keys = keys[r % len(keys):] + keys[: r % len(keys)]
        for k in keys:
            t0 = time.perf_counter()
            cases[k]()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"shape {(B, T, N)}, device {dev}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for (p_, name), t in med.items():
        base = med[(p_, "float32, no noise")]
        print(f"  {p_:17s} {name:36s} {t * 1e3:9.2f} ms   x{t / base:.2f} of float32 no-noise")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "device": str(dev), "threads": torch.get_num_threads(),
        "shape": [B, T, N], "repeats": args.repeats, "load_average": os.getloadavg(),
        "median_ms": {f"{p_} | {name}": t * 1e3 for (p_, name), t in med.items()},
    }
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    path = os.path.join(os.path.dirname(__file__), "results",
                        f"features-{dev.type}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("results:", path)


if __name__ == "__main__":
    main()
