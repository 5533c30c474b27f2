"""Peak resident memory of a training loop: one call against many (issue 12).

    python bench/peak_rss.py --shape 128x100x1024 --calls 100 [--pool-mb 1024 | --pool-mb 0]

In this fresh process: the resident set before the first call, the peak (VmHWM, reset through
/proc/self/clear_refs) during the first forward+backward call (x requires grad, loss = spikes.sum()),
and the peak over the next --calls calls. Prints one JSON line. bench/bench_cpu.py --rss runs it with
the output pool on and off.
"""
import argparse
import gc
import json
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import lif_cuda  # noqa: E402


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS


def measure(shape, calls, pool_mb):
    lif_cuda.output_pool(pool_mb << 20)
    B, T, N = shape
    x = 0.5 * torch.randn(B, T, N, generator=torch.Generator().manual_seed(0)) + 0.05
    layer = lif_cuda.LIFNeuron(N, backend="fused")

    def step():
        xi = x.detach().requires_grad_(True)
        layer(xi).sum().backward()

    gc.collect()
    base = _status("VmRSS")
    _reset_peak()
    step()
    one = _status("VmHWM") - base
    _reset_peak()
    for _ in range(calls):
        step()
    peak = _status("VmHWM") - base
    return {"shape": list(shape), "calls": calls, "pool_mb": pool_mb, "tensor_bytes": B * T * N * 4,
            "one_call_peak_bytes": one, "many_calls_peak_bytes": peak, "ratio": peak / one if one else None,
            "pool": lif_cuda.output_pool()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="128x100x1024")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--pool-mb", type=int, default=1024)
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split("x"))
    print(json.dumps(measure(shape, args.calls, args.pool_mb)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
