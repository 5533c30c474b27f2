"""layer: the LIF layer alone on input (B,T,N) = 0.5*randn + 0.05, float32: lif_cuda fused against
its reference, Rockpool (the same neuron: its spikes are checked equal) and, with --impls, the other
peers; the fused forward's bandwidth against `copy_` and `clone` of the same bytes in the same rounds.
Passes: forward (under no_grad) and forward+backward (loss = spikes.sum(), one clock around both).
"""
from bench import impls as impls_mod
from bench.engine import Point
from bench.suites import add_impl_cases, describe_impls, parse_shapes

NAME = "layer"
ISOLATE = True
BASE = "fused"
SHAPES = "1x1000x128,32x100x512,16x500x1024,128x100x1024"
PHASES = ("forward", "forward+backward")
# Every implementation gets --repeats calls, none skipped: the targets compare them at every shape.
DEFAULTS = dict(impls="fused,fused_frozen,fused_nopool,reference,rockpool", shapes=SHAPES, slow_repeats=5, max_call_s=0,
                compile_max_t=100)
QUICK = dict(shapes="1x200x64,4x50x256", repeats=2, max_repeats=3, budget_s=0.2, slow_repeats=2, compile_max_t=50)
NOTES = ("Peers run slightly different neuron equations (see 'equation' per implementation); only Rockpool's "
         "LIFNeuronTorch computes exactly lif_cuda's neuron, and its spikes are checked to be equal.",
         "Bandwidth: the fused forward moves input read + spikes written, 8 bytes per element; copy_ "
         "(preallocated) and clone (allocating) move the same bytes.")


def add_options(p):
    p.add_argument("--shapes", help=f"BxTxN,... (default {SHAPES})")
    p.add_argument("--compile-max-t", type=int,
                   help="run torch.compile(reference) only where T <= this: it unrolls the time loop (default 100)")


def describe(cfg):
    return describe_impls(cfg["impls"], cfg["device"])


def points(cfg):
    for shape in parse_shapes(cfg["shapes"]):
        B, T, N = shape
        for phase in PHASES:
            where = dict(shape=list(shape), phase=phase)
            point = Point(where, cases={}, size=B * N * T * T)  # the Python loops' backward grows as T^2
            add_impl_cases(point, cfg, shape, suite=NAME, phase=phase)
            if phase == "forward":
                for key in ("copy_", "clone"):
                    point.cases[key] = dict(suite=NAME, impl=key, shape=list(shape), device=cfg["device"],
                                            seed=cfg["seed"])
            yield point


def build(spec):
    from bench.workloads import CloneCase, CopyCase, LayerCase

    shape = tuple(spec["shape"])
    if spec["impl"] in ("copy_", "clone"):
        return (CopyCase if spec["impl"] == "copy_" else CloneCase)(shape, spec["device"], spec["seed"])
    return LayerCase(impls_mod.IMPLS[spec["impl"]], shape, spec["phase"], spec["device"], spec["seed"])


def after_point(data, point, slots, cfg):
    """The spikes of every implementation against fused's (same input, zero initial state)."""
    if point.where["phase"] != "forward":
        return
    cases = {s.key: s.case for s in slots if s.key not in ("copy_", "clone")}
    base_key = next((k for k in ("fused", "reference") if k in cases), None)
    if base_key is None:
        return
    base = cases[base_key].spikes_btn()
    for key, case in cases.items():
        try:
            s = base if key == base_key else case.spikes_btn()
        except Exception as exc:
            data["checks"].append(dict(shape=point.where["shape"], impl=key, error=str(exc)[:200]))
            continue
        data["checks"].append(dict(shape=point.where["shape"], impl=key, compared_with=base_key,
                                   spikes_equal=bool((s == base).all()), agreement=float((s == base).float().mean()),
                                   spike_rate=float(s.mean()), multi_spike_fraction=float((s > 1).float().mean())))


def summary(data):
    """Bandwidth of the fused forward against copy_ and clone."""
    med = {(tuple(r["shape"]), r["phase"], r["impl"]): r["median_s"] for r in data["results"] if "median_s" in r}
    lines = ["Fused forward bandwidth (input read + spikes written, 8 B per element), same rounds:", "",
             "| shape (B,T,N) | fused GB/s | copy_ GB/s | fused / copy_ | clone GB/s | fused / clone |",
             "|---|---|---|---|---|---|"]
    for shape in dict.fromkeys(s for s, _, _ in med):
        nbytes = 8 * shape[0] * shape[1] * shape[2]
        gbps = {k: nbytes / med[(shape, "forward", k)] / 1e9 for k in ("fused", "copy_", "clone")
                if (shape, "forward", k) in med}
        if "fused" not in gbps:
            continue
        cells = [f"{gbps['fused']:.1f}"]
        for k in ("copy_", "clone"):
            cells += [f"{gbps[k]:.1f}", f"{gbps['fused'] / gbps[k]:.2f}"] if k in gbps else ["—", "—"]
        lines.append(f"| {tuple(shape)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
