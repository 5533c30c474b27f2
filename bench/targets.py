"""The acceptance targets, in one table; the report prints each as met, missed or not measured, and
the JSON of every run holds them evaluated.

A target's value is scale * time(num) / time(den), each (implementation, pass) a median of the same
run; a record holding a `value` (a quantity other than a time, e.g. the memory suite's bytes kept)
takes the place of its time. A speed-up is ("peer", p) over ("fused", p). A fraction of copy_ bandwidth is ("copy_",
"forward") over (fused, pass), scaled by bytes per element moved: copy_ 8, fused forward 8 and
forward+backward 24 (float32). `at` picks the point (shape, workload, ...); without it the worst
value over all points counts. `device` limits a target to runs on that device type.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Target:
    suite: str
    name: str
    num: tuple  # (implementation, pass) whose median time is on top
    den: tuple  # (implementation, pass) whose median time is below
    at_least: float = None
    at_most: float = None
    at: dict = None
    scale: float = 1.0
    device: str = None


FB = "forward+backward"
LARGE, LONG, WIDE = dict(shape=[128, 100, 1024]), dict(shape=[16, 500, 1024]), dict(shape=[32, 100, 512])
GPU_SHAPE = dict(shape=[16, 500, 16384])
SINGLE_STEP = dict(shape=[1, 1, 128])

TARGETS = [
    # layer, CPU: bandwidth against copy_ of the same bytes, and forward+backward against Rockpool
    *(Target("layer", f"fused forward >= 0.6 of copy_ bandwidth at {tuple(s['shape'])}", ("copy_", "forward"),
             ("fused", "forward"), at_least=0.6, at=s, device="cpu") for s in (LARGE, LONG)),
    *(Target("layer", f"fused forward+backward >= 0.5 of copy_ bandwidth at {tuple(s['shape'])}", ("copy_", "forward"),
             ("fused", FB), at_least=0.5, at=s, scale=3.0, device="cpu") for s in (LARGE, LONG)),
    *(Target("layer", f"frozen tau and threshold (the mask kept, not u): forward+backward <= fused's at "
             f"{tuple(s['shape'])}", ("fused_frozen", FB), ("fused", FB), at_most=1.0, at=s, device="cpu")
      for s in (LARGE, LONG)),
    *(Target("layer", f"forward+backward >= {g:g}x Rockpool at {tuple(s['shape'])}", ("rockpool", FB), ("fused", FB),
             at_least=g, at=s, device="cpu") for s, g in ((LONG, 100), (LARGE, 100), (WIDE, 60))),
    *(Target("layer", f"forward+backward >= 10x {p} at every shape", (p, FB), ("fused", FB), at_least=10, device="cpu")
      for p in ("snntorch", "spikingjelly", "norse")),
    *(Target("network", f"forward+backward >= {g:g}x {p} at every n", (p, FB), ("fused", FB), at_least=g,
             device="cpu") for p, g in (("rockpool", 100), ("snntorch", 10), ("spikingjelly", 10), ("norse", 10))),
    # per-call, at one step of 128 neurons
    Target("per-call", "forward: Rockpool / LIFNeuron >= 5", ("rockpool", "forward"), ("module", "forward"),
           at_least=5, at=SINGLE_STEP),
    Target("per-call", "forward: LIFNeuron / 4-op step <= 4", ("module", "forward"), ("4-op step", "forward"),
           at_most=4, at=SINGLE_STEP),
    Target("per-call", "forward+backward: Rockpool / LIFNeuron >= 4", ("rockpool", FB), ("module", FB),
           at_least=4, at=SINGLE_STEP),
    Target("features", "in-kernel noise forward <= 2.5x noise off", ("in-kernel noise", "forward"),
           ("float32", "forward"), at_most=2.5, device="cpu"),
    *(Target("lengths", f"{p}: lengths all T <= 1.05x no lengths, every shape", ("lengths all T", p), ("no lengths", p),
             at_most=1.05) for p in ("forward", FB)),
    *(Target("synaptic", f"{w} forward+backward >= {g:g}x Rockpool ({k})", ("rockpool", FB), (k, FB), at_least=g,
             at=dict(workload=w)) for w, g in (("recurrent", 5), ("feedforward", 50)) for k in ("native", "dropin")),
    # memory (SPEC §11): what a Linear+LIF stack keeps, the step's time, the longest T in the budget
    Target("memory", "kept per element per layer: plain / compact >= 10", ("plain", "kept bytes/element/layer"),
           ("compact", "kept bytes/element/layer"), at_least=10),
    Target("memory", "training step: compact <= 1.15x plain", ("compact", "step"), ("plain", "step"), at_most=1.15),
    *(Target("memory", f"longest T in the budget: chunked >= 8x {p}", ("chunked", "longest T"), (p, "longest T"),
             at_least=8) for p in ("snntorch", "spikingjelly", "norse")),
    # the same with the AHP current (SPEC §9; python -m bench synaptic --model ahp), against Rockpool's aLIFTorch
    *(Target("synaptic", f"{w} forward+backward >= {g:g}x Rockpool's aLIFTorch ({k})", ("rockpool", FB), (k, FB),
             at_least=g, at=dict(workload=w)) for w, g in (("ahp-recurrent", 5), ("ahp-feedforward", 50))
      for k in ("native", "dropin")),
    # adaptive: the adaptive threshold's cost over the LIF's, and the fused op against its reference
    *(Target("adaptive", f"{p}: AdaptiveLIF <= 1.5x LIFNeuron at {tuple(s['shape'])}", ("adaptive", p), ("lif", p),
             at_most=1.5, at=s) for p in ("forward", FB) for s in (LONG, LARGE)),
    *(Target("adaptive", f"{p}: AdaptiveLIF >= 50x its reference at {tuple(s['shape'])}", ("reference", p),
             ("adaptive", p), at_least=50, at=s) for p in ("forward", FB) for s in (LONG, LARGE)),
    # gpu, at the largest shape
    Target("gpu", "forward+backward >= 0.7 of copy_ bandwidth", ("copy_", "forward"), ("fused", FB), at_least=0.7,
           at=GPU_SHAPE, scale=3.0, device="cuda"),
    Target("gpu", "forward+backward >= 2x SpikingJelly", ("spikingjelly", FB), ("fused", FB), at_least=2,
           at=GPU_SHAPE, device="cuda"),
    Target("gpu", "forward+backward >= 300x Rockpool", ("rockpool", FB), ("fused", FB), at_least=300, at=GPU_SHAPE,
           device="cuda"),
    Target("gpu", "in-kernel noise forward <= 1.3x noise off", ("fused noise", "forward"), ("fused", "forward"),
           at_most=1.3, at=GPU_SHAPE, device="cuda"),
    Target("gpu", "bfloat16 I/O forward+backward <= 0.75x float32", ("fused bf16", FB), ("fused", FB), at_most=0.75,
           at=GPU_SHAPE, device="cuda"),
]


def _point(r):
    """What identifies a record's point, without its pass."""
    from bench.report import VALUE_KEYS

    skip = {"impl", "phase", "n", "reduced_repeats", "warmup_only", "peak_mem_bytes", *VALUE_KEYS}
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in r.items()
                        if k not in skip and not k.endswith("_s") and not isinstance(v, (dict, float))))


def evaluate(data):
    """Each target of this run's suite: value, where, met (None: not measured)."""
    device = str(data["machine"].get("device", "cpu")).split(":")[0]
    med = {}
    for r in data["results"]:
        v = r["value"] if r.get("value") is not None else r.get("median_s")
        if v is not None and "phase" in r:
            med[(_point(r), r["impl"], r["phase"])] = v
    points = dict.fromkeys(p for p, _, _ in med)
    out = []
    for t in TARGETS:
        if t.suite != data["suite"] or (t.device and t.device != device):
            continue
        values = []
        for p in points:
            d = dict(p)
            if t.at and any(d.get(k) != (tuple(v) if isinstance(v, list) else v) for k, v in t.at.items()):
                continue
            a, b = med.get((p, *t.num)), med.get((p, *t.den))
            if a and b:
                values.append((t.scale * a / b, d))
        row = dict(target=t.name, at_least=t.at_least, at_most=t.at_most, value=None, where=None, met=None)
        if values:
            value, where = (min if t.at_least is not None else max)(values, key=lambda v: v[0])
            met = value >= t.at_least if t.at_least is not None else value <= t.at_most
            row.update(value=value, where=where, met=met)
        out.append(row)
    return out
