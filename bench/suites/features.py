"""features: what noise and bfloat16 I/O cost the fused op at one shape (default (16,500,1024)):
noise off, in-kernel noise (noise_std), a torch.randn noise tensor made per call, and bfloat16
input/spikes; forward (no_grad) and forward+backward (loss = spikes.sum())."""
import math

import torch

from bench.engine import CallCase, Point
from bench.suites import parse_shapes

NAME = "features"
ISOLATE = False
BASE = "float32"
KEYS = ("float32", "in-kernel noise", "torch.randn noise", "bfloat16 I/O")
DEFAULTS = dict(shape="16x500x1024", repeats=15, max_repeats=15, budget_s=0.0)
QUICK = dict(shape="4x50x256", repeats=3, max_repeats=3)
DT, STD = 1e-3, 0.5


def add_options(p):
    p.add_argument("--shape", help="BxTxN (default 16x500x1024)")


def describe(cfg):
    return {k: dict(label=k, available=True) for k in KEYS}


def points(cfg):
    (shape,) = parse_shapes(cfg["shape"])
    for phase in ("forward", "forward+backward"):
        keys = [k for k in KEYS if not (phase != "forward" and k == "torch.randn noise")]
        yield Point(dict(shape=list(shape), phase=phase),
                    {k: dict(suite=NAME, impl=k, shape=list(shape), phase=phase, device=cfg["device"]) for k in keys})


def build(spec):
    import lif_cuda

    B, T, N = spec["shape"]
    dev, key, grad = torch.device(spec["device"]), spec["impl"], spec["phase"] == "forward+backward"
    x = (torch.randn(B, T, N, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.05).to(dev)
    if key == "bfloat16 I/O":
        x = x.bfloat16()
    tau, thr, bias = (torch.full((N,), v, device=dev) for v in (0.02, 1.0, 0.0))
    v0 = torch.zeros(N, device=dev)

    def call():
        xi = x.detach().requires_grad_(grad)
        kw = {}
        if key == "in-kernel noise":
            kw["noise_std"] = STD
        elif key == "torch.randn noise":
            kw["noise"] = STD * math.sqrt(DT) * torch.randn(B, T, N, device=dev)
        with torch.set_grad_enabled(grad):
            s = lif_cuda.lif_evolve(xi, v0, tau, thr, bias, DT, backend="fused", **kw)[0]
            if grad:
                s.sum().backward()
    return CallCase({spec["phase"]: call}, dev)
