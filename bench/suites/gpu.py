"""gpu: the fused op on a GPU against the card's copy_ bandwidth, Rockpool and SpikingJelly, float32
and bfloat16 I/O (state and math float32). `--device cpu --quick` checks the suite without a GPU.

  fused                  lif_evolve(backend="fused"), tau 20 ms, threshold 1, bias 0, input 0.4 + N(0,1);
                         forward under no_grad; forward+backward: the gradients of input, v0, tau,
                         threshold and bias from a fixed spike gradient
  fused noise            the forward with in-kernel noise (noise_std=0.5)
  fused bf16 (+ noise)   the same with bfloat16 input and spikes
  copy_                  dst.copy_(x) of the float32 input: 8 bytes per element, as the fused forward
  rockpool, spikingjelly bench/impls.py's layers (SpikingJelly on its own CUDA/Triton kernels:
                         SJ_LIF_CUDA_IMPLEMENTATION, --sj-impl), float32; Rockpool's spikes checked equal

Bytes per element of the fused op: forward 8 (input, spikes), forward+backward 24 (+ u written;
grad-out and u read, grad-in written) in float32; 4 and 16 with bfloat16 I/O.
"""
import os

import torch

from bench.engine import CallCase, Point
from bench.suites import parse_shapes, pick

NAME = "gpu"
ISOLATE = False
BASE = "fused"
FUSED = ("fused", "fused noise", "fused bf16", "fused bf16 noise")
PEERS = ("rockpool", "spikingjelly")
SHAPES = "16x500x16384,16x500x1024,128x100x1024,1x1000x128"
DEFAULTS = dict(device="cuda", shapes=SHAPES, impls=",".join(FUSED + PEERS), repeats=10, max_repeats=30,
                budget_s=1.0, sj_impl=None)
QUICK = dict(shapes="4x50x1024,1x100x128", repeats=3, max_repeats=5, budget_s=0.1, slow_repeats=2)
DT, NOISE_STD = 1e-3, 0.5


def add_options(p):
    p.add_argument("--shapes", help=f"BxTxN,... (default {SHAPES})")
    p.add_argument("--sj-impl", help="SpikingJelly's LIF implementation on CUDA: auto, cuda, triton, torch "
                                     "(default: SJ_LIF_CUDA_IMPLEMENTATION, else auto)")


def describe(cfg):
    import lif_cuda
    from bench.suites import describe_impls

    # read by SpikingJelly when it is imported
    os.environ["SJ_LIF_CUDA_IMPLEMENTATION"] = cfg["sj_impl"] or os.environ.get("SJ_LIF_CUDA_IMPLEMENTATION", "auto")
    keys = pick(cfg["impls"], FUSED + PEERS)
    if not lif_cuda.fused_available(torch.device(cfg["device"])):
        raise SystemExit(f"gpu: lif_cuda has no fused kernels for {cfg['device']} (build with LIF_FORCE_CUDA=1)")
    out = {k: dict(label=k, available=True) for k in keys if k in FUSED}
    out["copy_"] = dict(label="copy_ (float32 input, preallocated)", available=True)
    out.update(describe_impls([k for k in keys if k in PEERS], cfg["device"]) if any(k in PEERS for k in keys) else {})
    return out


def points(cfg):
    keys = [k for k, v in cfg["impls_info"].items() if v["available"]]
    for shape in parse_shapes(cfg["shapes"]):
        for phase in ("forward", "forward+backward"):
            here = [k for k in keys if phase == "forward" or not (k.endswith("noise") or k == "copy_")]
            spec = dict(suite=NAME, shape=list(shape), phase=phase, device=cfg["device"])
            yield Point(dict(shape=list(shape), phase=phase), {k: dict(spec, impl=k) for k in here})


def _inputs(shape, device):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.empty(shape, device=device).normal_(0.0, 1.0, generator=g).add_(0.4)
    return x, torch.empty(shape, device=device).normal_(0.0, 1.0, generator=g)


def build(spec):
    import lif_cuda

    device, key, phase = torch.device(spec["device"]), spec["impl"], spec["phase"]
    B, T, N = spec["shape"]
    x, grad = _inputs(spec["shape"], device)
    if key == "copy_":
        dst = torch.empty_like(x)
        return CallCase({phase: lambda: dst.copy_(x)}, device)
    if key in FUSED:
        io = torch.bfloat16 if "bf16" in key else torch.float32
        x, grad = x.to(io), grad.to(io)
        params = [torch.full(size, v, device=device) for size, v in (((B, N), 0.0), ((N,), 20e-3), ((N,), 1.0),
                                                                      ((N,), 0.0))]
        noise_std = NOISE_STD if key.endswith("noise") else 0.0
        if phase == "forward":
            def fwd():
                with torch.no_grad():
                    return lif_cuda.lif_evolve(x, *params, DT, noise_std=noise_std, backend="fused")[0]
            case = CallCase({phase: fwd}, device)
            case.spikes_btn = fwd
            return case
        leaves = [x.requires_grad_(True)] + [p.requires_grad_(True) for p in params]
        return CallCase({phase: lambda: torch.autograd.grad(lif_cuda.lif_evolve(*leaves, DT, backend="fused")[0],
                                                            leaves, grad)}, device)
    from bench.impls import IMPLS

    impl = IMPLS[key]
    layer = impl.layer(N, device)
    x, grad = impl.native(x), impl.native(grad)
    if phase == "forward":
        def fwd():
            with torch.no_grad():
                return layer(x)
        case = CallCase({phase: fwd}, device)
        case.spikes_btn = lambda: impl.to_btn(fwd())
        return case
    params = [p for p in layer.parameters() if p.requires_grad]
    xg = x.detach().requires_grad_(True)
    return CallCase({phase: lambda: torch.autograd.grad(layer(xg), [xg] + params, grad)}, device)


def after_point(data, point, slots, cfg):
    """Rockpool computes the same neuron: its spikes must equal the fused op's."""
    cases = {s.key: s.case for s in slots}
    if point.where["phase"] == "forward" and "fused" in cases and "rockpool" in cases:
        data["checks"].append(dict(shape=point.where["shape"], impl="rockpool", compared_with="fused",
                                   spikes_equal=bool(torch.equal(cases["rockpool"].spikes_btn(),
                                                                 cases["fused"].spikes_btn()))))


def finish(data, cfg):
    try:  # which LIF implementation SpikingJelly picked (its private state: report, never fail)
        import spikingjelly._ops.lif as sj_lif

        sel = sj_lif._selection
        data["spikingjelly_selection"] = {k: repr(v)[:200] for k, v in vars(sel).items()
                                          if not k.startswith("__") and not callable(v)}
    except Exception:
        pass
