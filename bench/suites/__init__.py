"""The suites of `python -m bench <suite>`. Each module declares what to run and nothing about how
it is timed (bench/engine.py does that):

  NAME, ISOLATE (each implementation in a worker process of its own), BASE (the implementation
  ratios are taken against), DEFAULTS and QUICK (option values; QUICK for --quick),
  add_options(parser), describe(cfg) -> {key: {label, available, ...}}, points(cfg) -> Points,
  build(spec) -> a case (run() -> {phase: seconds}); optionally after_point(data, point, slots,
  cfg), finish(data, cfg) and summary(data) -> Markdown for the report.
"""
import importlib
import re

NAMES = ("layer", "network", "per-call", "features", "synaptic", "adaptive", "lengths", "train", "gpu", "memory")


class _Suites(dict):
    """Suite modules by name, imported on first use (a worker imports only its own)."""

    def __missing__(self, name):
        if name not in NAMES:
            raise KeyError(f"unknown suite {name!r}; choose from {', '.join(NAMES)}")
        module = importlib.import_module(f"bench.suites.{name.replace('-', '_')}")
        self[name] = module
        return module


SUITES = _Suites()


def parse_shapes(text):
    """'1x1000x128,32x100x512' -> [(1, 1000, 128), (32, 100, 512)]."""
    shapes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        dims = tuple(int(d) for d in re.split(r"[x* ]+", part) if d)
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"a shape must be BxTxN with positive sizes, got {part!r}")
        shapes.append(dims)
    return shapes


def pick(text, keys):
    """The keys named in --impls ('all': every one), in the suite's order; unknown ones end the run."""
    if text in (None, "all"):
        return list(keys)
    wanted = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in wanted if k not in keys]
    if bad:
        raise SystemExit(f"--impls: unknown {bad}; choose from {', '.join(keys)}")
    return [k for k in keys if k in wanted]


def parse_ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def describe_impls(keys, device):
    """{key: what the JSON says of it} for implementations of bench/impls.py."""
    from bench import impls

    out = {}
    for impl in impls.select(keys):
        why = impl.unavailable(device)
        out[impl.key] = dict(label=impl.label, version=impl.version(), equation=impl.equation,
                             time_major=impl.time_major, available=why is None, reason=why)
    return out


def add_impl_cases(point, cfg, shape, **spec):
    """Fills `point` with a case of every available implementation of bench/impls.py that runs at
    `shape` (the others skipped, with why); `spec` completes each case's spec."""
    from bench import impls

    for key in available(cfg):
        impl = impls.IMPLS[key]
        why = impl.skip(shape, cfg)
        if why:
            point.skipped[key] = why
            continue
        point.cases[key] = dict(spec, impl=key, shape=list(shape), device=cfg["device"], seed=cfg["seed"])
        point.warmup[key] = impl.warmup
    return point


def available(cfg):
    """The keys of cfg["impls_info"] that can run."""
    return [k for k, v in cfg["impls_info"].items() if v.get("available", True)]


def layer_call_case(layer, x, phase, device):
    """A CallCase timing one call of `layer` on `x` from a reset state (forward, or forward and
    backward of spikes.sum()); `spikes_btn` reruns it and returns the spikes, for the suites'
    spike checks. A layer returning a tuple has its spikes first."""
    import torch

    from bench.engine import CallCase

    grad = phase == "forward+backward"

    def call():
        layer.reset_state()
        xi = x.detach().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            out = layer(xi)
            out = out[0] if isinstance(out, tuple) else out
            if grad:
                out.sum().backward()
        return out.detach()

    case = CallCase({phase: call}, device)
    case.spikes_btn = call
    return case
