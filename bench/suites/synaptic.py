"""synaptic: the synaptic LIF (SPEC §7) against Rockpool's LIFTorch. Input spikes (p = 0.05,
amplitude 2) requiring grad, loss = spikes.sum(), a reset state per call, the same parameters for
every implementation; the spikes of each are checked equal to Rockpool's.

  recurrent    (B,T,N) = (16,200,256), one synapse per neuron, recurrent weights (256, 256)
  feedforward  (B,T,N) = (16,500,1024), two synapses per neuron, no recurrence

  dropin    lif_cuda.rockpool.LIFTorch (the fused op behind Rockpool's API)
  native    lif_cuda.SynapticLIF
  rockpool  rockpool.nn.modules.LIFTorch
  exodus    Rockpool's LIFExodus (CUDA only, feed-forward only: it refuses recurrent weights)

--model ahp: the same workloads (named ahp-recurrent, ahp-feedforward) with the AHP current (SPEC
§9): lif_cuda.rockpool.aLIFTorch (dropin) and lif_cuda.AHPSynapticLIF (native) against Rockpool's
aLIFTorch (exodus has no AHP current).
"""
import torch

from bench.engine import Point
from bench.suites import layer_call_case, pick

NAME = "synaptic"
ISOLATE = False
BASE = "native"
KEYS = ("dropin", "native", "rockpool", "exodus")
WORKLOADS = {"recurrent": dict(B=16, T=200, N=256, S=1, rec=True),
             "feedforward": dict(B=16, T=500, N=1024, S=2, rec=False)}
DEFAULTS = dict(impls=",".join(KEYS), scale=1, repeats=5, max_repeats=5, budget_s=0.0, model="synaptic")
QUICK = dict(repeats=2, max_repeats=2, scale=8)


def add_options(p):
    p.add_argument("--scale", type=int, help="divide B, T and N by this (default 1; --quick: 8)")
    p.add_argument("--model", choices=("synaptic", "ahp"), help="ahp: with the AHP current (default synaptic)")


def _layer(key, w, device):
    N, S = w["N"], w["S"]
    g = torch.Generator().manual_seed(0)
    kw = dict(tau_mem=5e-3 + 30e-3 * torch.rand(N, generator=g), tau_syn=2e-3 + 10e-3 * torch.rand(N, S, generator=g),
              threshold=0.5 + torch.rand(N, generator=g), bias=0.02 * torch.randn(N, generator=g))
    if w["rec"]:
        kw.update(has_rec=True, w_rec=0.05 * torch.randn(N, N * S, generator=g))
    if w.get("ahp"):
        return _ahp_layer(key, w, device, kw, g)
    if key == "native":
        import lif_cuda

        return lif_cuda.SynapticLIF((N * S, N), backend="fused", **kw).to(device)
    if key == "dropin":
        import lif_cuda.rockpool

        return lif_cuda.rockpool.LIFTorch((N * S, N), backend="fused", **kw).to(device)
    if key == "rockpool":
        from rockpool.nn.modules import LIFTorch

        return LIFTorch((N * S, N), **kw).to(device)
    if w["rec"]:
        raise RuntimeError("LIFExodus refuses recurrent weights")
    from rockpool.nn.modules import LIFExodus

    kw.pop("bias")
    return LIFExodus((N * S, N), **kw).to(device)


def _ahp_layer(key, w, device, kw, g):
    N, S = w["N"], w["S"]
    kw.update(w_ahp=-0.2 - 0.6 * torch.rand(N, generator=g), tau_ahp=5e-3 + 30e-3 * torch.rand(N, generator=g))
    if key == "native":
        import lif_cuda

        return lif_cuda.AHPSynapticLIF((N * S, N), backend="fused", **kw).to(device)
    if key == "dropin":
        import lif_cuda.rockpool

        return lif_cuda.rockpool.aLIFTorch((N * S, N), backend="fused", **kw).to(device)
    if key == "rockpool":
        from rockpool.nn.modules.torch.ahp_lif_torch import aLIFTorch

        return aLIFTorch((N * S, N), **kw).to(device)
    raise RuntimeError("LIFExodus has no AHP current")


def _workloads(cfg):
    """The workloads of --model: the synaptic ones, or the same with the AHP current."""
    if cfg.get("model", "synaptic") == "synaptic":
        return WORKLOADS
    return {f"ahp-{name}": dict(w, ahp=True) for name, w in WORKLOADS.items()}


def describe(cfg):
    out = {}
    for key in pick(cfg["impls"], KEYS):
        try:
            _layer(key, dict(WORKLOADS["feedforward"], N=4, ahp=cfg.get("model") == "ahp"), cfg["device"])
            why = None
        except Exception as exc:  # not installed, or not on this device
            why = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        out[key] = dict(label=key, available=why is None, reason=why)
    return out


def points(cfg):
    keys = [k for k, v in cfg["impls_info"].items() if v["available"]]
    for name, w in _workloads(cfg).items():
        w = dict(w, **{d: max(1, w[d] // cfg["scale"]) for d in "BTN"})
        for phase in ("forward", "forward+backward"):
            where = dict(workload=name, shape=[w["B"], w["T"], w["N"]], synapses=w["S"], phase=phase)
            cases = {k: dict(suite=NAME, impl=k, phase=phase, device=cfg["device"], **w) for k in keys}
            skipped = {}
            if (w["rec"] or w.get("ahp")) and "exodus" in cases:
                why = "has no AHP current" if w.get("ahp") else "refuses recurrent weights"
                skipped["exodus"] = f"LIFExodus {why}"
                del cases["exodus"]
            yield Point(where, cases, skipped=skipped)


def build(spec):
    device = torch.device(spec["device"])
    layer = _layer(spec["impl"], spec, device)
    g = torch.Generator().manual_seed(1)
    x = ((torch.rand(spec["B"], spec["T"], spec["N"] * spec["S"], generator=g) < 0.05).float() * 2).to(device)
    return layer_call_case(layer, x, spec["phase"], device)


def after_point(data, point, slots, cfg):
    """Every implementation's spikes against Rockpool's (same input, parameters and state)."""
    cases = {s.key: s.case for s in slots}
    if "rockpool" not in cases:
        return
    ref = cases["rockpool"].spikes_btn().cpu()
    for key, case in cases.items():
        if key != "rockpool":
            data["checks"].append(dict(workload=point.where["workload"], phase=point.where["phase"], impl=key,
                                       compared_with="rockpool", spikes_equal=bool(torch.equal(case.spikes_btn().cpu(),
                                                                                               ref))))
