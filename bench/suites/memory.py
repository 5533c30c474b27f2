"""memory: what training keeps between forward and backward (SPEC §11), and what that costs in time.
A stack of --layers x (Linear(n,n) -> LIF(n), at most one spike per step), input spikes (B,T,n)
(Bernoulli, rate 0.1), loss = MSE of the last layer's spike rates against fixed random targets,
Adam on every trainable parameter. Configurations:

  plain        nn.Linear + LIFNeuron(max_spikes_per_dt=1) with its defaults (tau, threshold, bias
               trainable): the Linear keeps its input as floats, the LIF op keeps u
  compact      SpikeLinear + LIFNeuron, tau and threshold frozen (bias trains): the Linear keeps its
               input as bits, the LIF op the window mask as bits
  compact_thr  SpikeLinear + LIFNeuron with trainable thresholds: the LIF op must keep u
  chunked      plain's layers (everything trainable) in a lif_cuda.TimeChunked(chunk=--chunk, output="sum"):
               the forward keeps each chunk's starting state, the backward recomputes a chunk at a time;
               also run at --long-steps, where only it runs (its peak grows too slowly to fit at short T)
  snntorch, spikingjelly, norse: their LIF layer (bench/impls.py) in the same stack, nn.Linear

At each T: one training step, timed (interleaved, medians); the bytes the autograd graph keeps after
the forward (saved tensors, parameters excluded) per element per layer; the peak memory of a
training step. Then the longest T whose step fits in --budget-gib, from a least-squares line
through peak(T) (peak memory grows linearly in T).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.engine import Point, sync
from bench.suites import available, parse_ints
from bench.workloads import TrainStep

NAME = "memory"
ISOLATE = True
BASE = "plain"
OURS = ("plain", "compact", "compact_thr", "chunked")
PEERS = ("snntorch", "spikingjelly", "norse")
DEFAULTS = dict(impls="all", neurons=1024, batch=16, steps="100,200,400,800", layers=4, budget_gib=4.0, rate=0.1,
                chunk=64, long_steps="4000,16000")
QUICK = dict(neurons=64, batch=2, steps="20,40", layers=2, repeats=2, max_repeats=3, budget_s=0.2, budget_gib=0.25,
             long_steps="200")
KEPT = "kept bytes/element/layer"
LONGEST = "longest T"
NOTES = ("Peers emit at most one spike per step and differ slightly in their equations (bench/impls.py); the stack "
         "is the same for all.",)


def add_options(p):
    p.add_argument("--neurons", type=int, help="n of each layer (default 1024)")
    p.add_argument("--batch", type=int, help="batch size (default 16)")
    p.add_argument("--steps", help="time steps T, comma-separated (default 100,200,400,800)")
    p.add_argument("--layers", type=int, help="Linear+LIF layers (default 4)")
    p.add_argument("--budget-gib", type=float, help="memory budget for the longest T (default 4)")
    p.add_argument("--chunk", type=int, help="time steps per chunk of the chunked configuration (default 64)")
    p.add_argument("--long-steps", help="further T where only the chunked configuration runs (default 4000,16000; "
                   "'' for none)")


LABELS = dict(plain="lif_cuda: nn.Linear + LIFNeuron (defaults)",
              compact="lif_cuda: SpikeLinear + LIFNeuron, tau and threshold frozen",
              compact_thr="lif_cuda: SpikeLinear + LIFNeuron, thresholds trainable",
              chunked="lif_cuda: TimeChunked(nn.Linear + LIFNeuron (defaults)), output='sum'")


def describe(cfg):
    from bench.suites import describe_impls, pick

    keys = pick(cfg["impls"], OURS + PEERS)
    out = {k: dict(label=LABELS[k], available=True, reason=None) for k in keys if k in OURS}
    peers = [k for k in keys if k in PEERS]
    if peers:
        out.update(describe_impls(",".join(peers), cfg["device"]))
    return out


def points(cfg):
    keys = available(cfg)
    steps = parse_ints(cfg["steps"])
    long_steps = [T for T in parse_ints(cfg["long_steps"] or "") if T not in steps] if "chunked" in keys else []
    for T in steps + long_steps:
        shape = [cfg["batch"], T, cfg["neurons"]]
        spec = dict(suite=NAME, shape=shape, layers=cfg["layers"], device=cfg["device"], seed=cfg["seed"],
                    rate=cfg["rate"], chunk=cfg["chunk"])
        here = keys if T in steps else ["chunked"]
        yield Point(dict(steps=T, shape=shape), {k: dict(spec, impl=k) for k in here}, size=T)


def _lif(kind, n):
    import lif_cuda

    lif = lif_cuda.LIFNeuron(n, max_spikes_per_dt=1)
    if kind == "compact":
        lif.tau_mem.requires_grad_(False)
        lif.threshold.requires_grad_(False)
    elif kind == "compact_thr":
        lif.tau_mem.requires_grad_(False)
    return lif


class _Ours(nn.Module):
    """LIFNeuron starting from a zero membrane on every call, as the peers' layers do."""

    def __init__(self, lif):
        super().__init__()
        self.lif = lif

    def forward(self, x):
        self.lif.reset_state()
        return self.lif(x)


class StackCase(TrainStep):
    def __init__(self, impl, shape, layers, device, seed=0, rate=0.1, chunk=64):
        import lif_cuda
        from bench.impls import IMPLS

        B, T, n = shape
        self.device = torch.device(device)
        torch.manual_seed(seed)  # the same Linear weights for every configuration
        mods = []
        for _ in range(layers):
            linear = nn.Linear(n, n)
            if impl in OURS and impl != "plain":
                spiking = lif_cuda.SpikeLinear(n, n, max_count=1)
                spiking.load_state_dict(linear.state_dict())
                linear = spiking
            if impl == "chunked":  # the stack carries the neuron state itself, from zero each step
                mods += [linear, lif_cuda.LIFNeuron(n, max_spikes_per_dt=1)]
            else:
                mods += [linear, _Ours(_lif(impl, n)) if impl in OURS else IMPLS[impl].layer(n, device)]
        if impl == "chunked":
            self.module = lif_cuda.TimeChunked(*mods, chunk=chunk, output="sum").to(device)
        else:
            self.module = nn.Sequential(*mods).to(device)
        self.time_major = impl not in OURS and IMPLS[impl].time_major
        g = torch.Generator().manual_seed(seed + 1)
        x = (torch.rand(shape, generator=g) < rate).float()
        self.x = (x.transpose(0, 1).contiguous() if self.time_major else x).to(device)
        self.target = torch.rand((B, n), generator=g).to(device)
        self.opt = torch.optim.Adam([p for p in self.module.parameters() if p.requires_grad], lr=1e-4)
        self.elements = B * T * n * layers
        self.phases = ("step",)

    def _loss(self):
        if isinstance(self.module, nn.Sequential):
            rates = self.module(self.x).mean(dim=0 if self.time_major else 1)
        else:  # TimeChunked: the spike counts over time
            rates = self.module.reset_state()(self.x) / self.x.shape[1]
        return F.mse_loss(rates, self.target)

    def run_memory(self):
        import lif_cuda
        from bench.memory import PeakMemory

        # The CPU output pool keeps the LIF op's buffers resident between steps, which would hide
        # them from a peak taken above the pre-step baseline: off in this (memory-only) worker.
        if lif_cuda.extension_loaded():
            lif_cuda.output_pool(0)
        self._step()  # Adam's state exists before the measured step, as in a training loop
        with PeakMemory(self.device) as pm:
            self._step()
            sync(self.device)
        return {"step": pm.peak_bytes}

    def report(self):
        """Bytes the autograd graph holds for the backward (each saved storage once, parameters and the
        optimiser's state not counted), per element per layer."""
        params = {p.untyped_storage().data_ptr() for p in self.module.parameters()}
        kept = {}

        def pack(t):
            s = t.untyped_storage()
            if s.data_ptr() not in params:
                kept[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self._loss()
        del loss
        return {"kept_bytes": sum(kept.values()), "elements": self.elements}

    def free(self):
        pass


def build(spec):
    return StackCase(spec["impl"], spec["shape"], spec["layers"], spec["device"], spec["seed"], spec["rate"],
                     spec.get("chunk", 64))


def after_point(data, point, slots, cfg):
    for slot in slots:
        rep = slot.case.report()
        data["results"].append(dict(point.where, impl=slot.key, phase=KEPT,
                                    value=rep["kept_bytes"] / rep["elements"], kept_bytes=rep["kept_bytes"]))


def _fit(pairs):
    """Least-squares line bytes = a + b*T through (T, bytes)."""
    n = len(pairs)
    mt = sum(t for t, _ in pairs) / n
    mb = sum(b for _, b in pairs) / n
    var = sum((t - mt) ** 2 for t, _ in pairs)
    slope = sum((t - mt) * (b - mb) for t, b in pairs) / var if var else float("nan")
    return mb - slope * mt, slope


def finish(data, cfg):
    """The longest T within the budget per configuration, from its peak(T) line."""
    budget = cfg["budget_gib"] * 2**30
    peaks = {}
    for r in data["results"]:
        if r.get("phase") == "step" and r.get("peak_mem_bytes"):
            peaks.setdefault(r["impl"], []).append((r["steps"], r["peak_mem_bytes"]))
    shape = [cfg["batch"], None, cfg["neurons"]]
    for key, pairs in peaks.items():
        if len(pairs) < 2:
            continue
        a, b = _fit(pairs)
        longest = math.floor((budget - a) / b) if b > 0 else None
        data["results"].append(dict(impl=key, phase=LONGEST, value=longest, budget_gib=cfg["budget_gib"],
                                    intercept_bytes=a, bytes_per_step=b, fit_points=sorted(pairs),
                                    shape=shape))


def summary(data):
    recs = [r for r in data["results"] if r.get("phase") in (KEPT, LONGEST) and r.get("value") is not None]
    if not recs:
        return ""
    steps = sorted({r["steps"] for r in recs if r["phase"] == KEPT})
    keys = list(dict.fromkeys(r["impl"] for r in recs))
    lines = ["bytes kept for the backward per element per layer, and the longest T within the budget "
             "(from the peak-memory line):", "",
             "| configuration | " + " | ".join(f"kept, T={t}" for t in steps) + " | longest T |",
             "|---|" + "---|" * (len(steps) + 1)]
    for k in keys:
        kept = {r["steps"]: r["value"] for r in recs if r["impl"] == k and r["phase"] == KEPT}
        longest = [r for r in recs if r["impl"] == k and r["phase"] == LONGEST]
        cells = [f"{kept[t]:.3f}" if t in kept else "—" for t in steps]
        lt = f"{longest[0]['value']:,} ({longest[0]['budget_gib']:g} GiB)" if longest else "—"
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {lt} |")
    return "\n".join(lines)


def plot(data, plt, path):
    """Peak memory of a training step over T, per configuration, with the budget."""
    series = {}
    for r in data["results"]:
        if r.get("phase") == "step" and r.get("peak_mem_bytes"):
            series.setdefault(r["impl"], []).append((r["steps"], r["peak_mem_bytes"] / 2**20))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, pts in series.items():
        pts.sort()
        ax.plot([t for t, _ in pts], [m for _, m in pts], "o-", label=k)
    ax.set(xlabel="time steps T", ylabel="peak memory of a training step (MiB)", xscale="log", yscale="log",
           title="Linear+LIF stack: peak memory over T")
    ax.legend(fontsize=7)
    return fig
