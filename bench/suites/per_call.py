"""per-call: what one call costs at one or a few time steps per call (a real-time loop, streaming).
A sample is the mean of a block of --calls calls (torch.utils.benchmark); the implementations are
interleaved block by block. Passes: forward under no_grad, and forward+backward with x and the
parameters requiring grad, loss = out.sum(), gradients set to None before each call.

  module       lif_cuda.LIFNeuron(N)(x), fused, state carried between calls
  functional   lif_cuda.lif_evolve(x, v0, tau, thr, bias, dt) on the caller's own tensors
  torchscript  torch.jit.script(LIFNeuron(N))(x)
  rockpool     Rockpool's LIFNeuronTorch(N)(x), when installed
  4-op step    four eager elementwise torch ops: u = a*v + x; u >= thr (forward), or
               u = a*v + x + b; u - thr (forward+backward: >= has no gradient)
"""
import torch

from bench.engine import CallCase, Point
from bench.suites import parse_shapes, pick

NAME = "per-call"
ISOLATE = False
BASE = "module"
KEYS = ("module", "functional", "torchscript", "rockpool", "4-op step")
SHAPES = "1x1x128,1x1x1024,8x1x512,1x10x128"
DT = 1e-3
DEFAULTS = dict(impls=",".join(KEYS), shapes=SHAPES, calls=200, repeats=15, max_repeats=15, budget_s=0.0)
QUICK = dict(calls=50, repeats=5, max_repeats=5)


def add_options(p):
    p.add_argument("--shapes", help=f"BxTxN,... (default {SHAPES})")
    p.add_argument("--calls", type=int, help="calls per sample (default 200: a call takes microseconds)")


def _rockpool():
    from rockpool.nn.modules import LIFNeuronTorch

    return LIFNeuronTorch


def describe(cfg):
    out = {}
    for key in pick(cfg["impls"], KEYS):
        why = None
        if key == "rockpool":
            try:
                _rockpool()
            except Exception as exc:  # not installed, or broken beside this torch
                why = f"rockpool does not import ({type(exc).__name__})"
        out[key] = dict(label=key, available=why is None, reason=why)
    return out


def points(cfg):
    keys = [k for k, v in cfg["impls_info"].items() if v["available"]]
    for shape in parse_shapes(cfg["shapes"]):
        for phase in ("forward", "forward+backward"):
            yield Point(dict(shape=list(shape), phase=phase),
                        {k: dict(suite=NAME, impl=k, shape=list(shape), phase=phase, calls=cfg["calls"]) for k in keys})


def build(spec):
    import lif_cuda

    B, T, N = spec["shape"]
    train = spec["phase"] == "forward+backward"
    x = (0.5 * torch.randn(B, T, N, generator=torch.Generator().manual_seed(0)) + 0.3).requires_grad_(train)
    key = spec["impl"]
    if key in ("module", "torchscript"):
        layer = lif_cuda.LIFNeuron(N, backend="fused")
        fwd, params = (torch.jit.script(layer) if key == "torchscript" else layer), [x, *layer.parameters()]
        call = lambda: fwd(x)  # noqa: E731
    elif key == "functional":
        v0 = torch.zeros(N)
        tau, thr, bias = (torch.full((N,), v, requires_grad=train) for v in (20e-3, 1.0, 0.0))
        params = [x, tau, thr, bias]
        call = lambda: lif_cuda.lif_evolve(x, v0, tau, thr, bias, DT, backend="fused")[0]  # noqa: E731
    elif key == "rockpool":
        layer = _rockpool()((N,), tau_mem=20e-3, threshold=1.0, bias=0.0, dt=DT)
        params = [x, *torch.nn.Module.parameters(layer)]
        call = lambda: layer(x)[0]  # noqa: E731
    else:
        a, thr, b = (torch.full((N,), v, requires_grad=train) for v in (0.95, 1.0, 0.0))
        v = torch.zeros(N)
        params = [x, a, thr, b]
        call = (lambda: ((a * v + x) + b) - thr) if train else (lambda: (a * v + x) >= thr)

    if train:
        def step():
            for p in params:
                p.grad = None
            call().sum().backward()
    else:
        def step():
            with torch.no_grad():
                call()
    return CallCase({spec["phase"]: step}, calls=spec["calls"])
