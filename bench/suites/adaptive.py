"""adaptive: the adaptive-threshold LIF (SPEC §10) against the fused LIF and against its own
pure-PyTorch reference. Input 0.5 + N(0,1) requiring grad, loss = spikes.sum(), a reset state per
call, per-neuron parameters (the same for every implementation); the fused adaptive layer's spikes
are checked equal to its reference's.

  adaptive   lif_cuda.AdaptiveLIF, fused
  lif        lif_cuda.LIFNeuron, fused (the same tau_mem, threshold, bias; no adaptation)
  reference  lif_cuda.AdaptiveLIF, backend="reference" (one Python step per time step)
"""
import torch

from bench.engine import Point
from bench.suites import layer_call_case, parse_shapes, pick

NAME = "adaptive"
ISOLATE = False
BASE = "adaptive"
KEYS = ("adaptive", "lif", "reference")
SHAPES = "16x500x1024,128x100x1024"
DEFAULTS = dict(impls=",".join(KEYS), shapes=SHAPES, repeats=5, max_repeats=5, budget_s=0.0)
QUICK = dict(repeats=2, max_repeats=2, shapes="4x50x256")


def add_options(p):
    p.add_argument("--shapes", help=f"BxTxN,... (default {SHAPES}; --quick: 4x50x256)")


def _layer(key, n, device):
    import lif_cuda

    g = torch.Generator().manual_seed(0)
    kw = dict(tau_mem=5e-3 + 30e-3 * torch.rand(n, generator=g), threshold=0.5 + torch.rand(n, generator=g),
              bias=0.02 * torch.randn(n, generator=g))
    adapt = dict(tau_adapt=50e-3 + 150e-3 * torch.rand(n, generator=g), beta_adapt=0.5 + torch.rand(n, generator=g))
    if key == "lif":
        return lif_cuda.LIFNeuron(n, backend="fused", **kw).to(device)
    backend = "reference" if key == "reference" else "fused"
    return lif_cuda.AdaptiveLIF(n, backend=backend, **kw, **adapt).to(device)


def describe(cfg):
    out = {}
    for key in pick(cfg["impls"], KEYS):
        try:
            _layer(key, 4, cfg["device"])(torch.zeros(1, 1, 4, device=cfg["device"]))
            why = None
        except Exception as exc:  # no fused kernels for this device
            why = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        out[key] = dict(label=key, available=why is None, reason=why)
    return out


def points(cfg):
    keys = [k for k, v in cfg["impls_info"].items() if v["available"]]
    for B, T, N in parse_shapes(cfg["shapes"]):
        for phase in ("forward", "forward+backward"):
            cases = {k: dict(suite=NAME, impl=k, phase=phase, device=cfg["device"], B=B, T=T, N=N) for k in keys}
            yield Point(dict(shape=[B, T, N], phase=phase), cases)


def build(spec):
    device = torch.device(spec["device"])
    layer = _layer(spec["impl"], spec["N"], device)
    g = torch.Generator().manual_seed(1)
    x = (0.5 + torch.randn(spec["B"], spec["T"], spec["N"], generator=g)).to(device)
    return layer_call_case(layer, x, spec["phase"], device)


def after_point(data, point, slots, cfg):
    """The fused adaptive layer's spikes against its reference's (same input, parameters, state)."""
    cases = {s.key: s.case for s in slots}
    if "adaptive" in cases and "reference" in cases:
        equal = torch.equal(cases["adaptive"].spikes_btn().cpu(), cases["reference"].spikes_btn().cpu())
        data["checks"].append(dict(shape=point.where["shape"], phase=point.where["phase"], impl="adaptive",
                                   compared_with="reference", spikes_equal=bool(equal)))
