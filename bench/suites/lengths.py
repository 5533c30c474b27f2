"""lengths: what per-row lengths (SPEC §8) cost the fused op: lengths all == T against the same call
without lengths, and half the rows at T/2 (less work), forward (no_grad) and forward+backward.
--model lif: (B,T,N) shapes; --model synaptic: the synaptic op (SPEC §7), feed-forward and
recurrent, S synapses per neuron."""
import torch

from bench.engine import CallCase, Point
from bench.suites import parse_shapes

NAME = "lengths"
ISOLATE = False
BASE = "no lengths"
KEYS = ("no lengths", "lengths all T", "half the rows T/2")
DEFAULTS = dict(model="lif", shapes="16x500x1024,128x100x1024", synaptic="ff:16x500x1024,rec:16x200x256",
                synapses=2, repeats=15, max_repeats=15, budget_s=0.0)
QUICK = dict(shapes="4x50x128", synaptic="ff:4x50x64,rec:4x40x32", repeats=3, max_repeats=3)


def add_options(p):
    p.add_argument("--model", choices=("lif", "synaptic"))
    p.add_argument("--shapes", help="--model lif: BxTxN,... (default 16x500x1024,128x100x1024)")
    p.add_argument("--synaptic", help="--model synaptic: ff:BxTxN or rec:BxTxN,... (default "
                                      "ff:16x500x1024,rec:16x200x256)")
    p.add_argument("--synapses", type=int, help="--model synaptic: synapses per neuron (default 2)")


def describe(cfg):
    return {k: dict(label=k, available=True) for k in KEYS}


def _kinds(cfg):
    if cfg["model"] == "lif":
        return [("lif", s) for s in parse_shapes(cfg["shapes"])]
    out = []
    for part in cfg["synaptic"].split(","):
        kind, _, shape = part.strip().partition(":")
        if kind not in ("ff", "rec"):
            raise SystemExit(f"--synaptic: expected ff:BxTxN or rec:BxTxN, got {part!r}")
        out.append((kind, parse_shapes(shape)[0]))
    return out


def points(cfg):
    for kind, shape in _kinds(cfg):
        for phase in ("forward", "forward+backward"):
            spec = dict(suite=NAME, kind=kind, shape=list(shape), phase=phase, device=cfg["device"],
                        synapses=cfg["synapses"])
            yield Point(dict(kind=kind, shape=list(shape), phase=phase), {k: dict(spec, impl=k) for k in KEYS})


def build(spec):
    import lif_cuda

    B, T, N = spec["shape"]
    dev, kind, grad = torch.device(spec["device"]), spec["kind"], spec["phase"] == "forward+backward"
    S = 1 if kind == "lif" else spec["synapses"]
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(B, T, N * S, generator=g) * 0.5 + 0.05).to(dev)
    tau, thr, bias = (torch.full((N,), v, device=dev) for v in (0.02, 1.0, 0.0))
    v0 = torch.zeros(N, device=dev)
    grad_out = torch.ones(B, T, N, device=dev)
    # CPU tensors, as a data loader gives them
    lengths = {"no lengths": None, "lengths all T": torch.full((B,), T),
               "half the rows T/2": torch.tensor([T if b % 2 else T // 2 for b in range(B)])}[spec["impl"]]
    if kind == "lif":
        op = lambda xi: lif_cuda.lif_evolve(xi, v0, tau, thr, bias, 1e-3, backend="fused", lengths=lengths)  # noqa: E731
    else:
        tau_syn, i0 = torch.full((N, S), 0.01, device=dev), torch.zeros(N, S, device=dev)
        w_rec = (0.1 * torch.randn(N, N * S, generator=g) / N**0.5).to(dev) if kind == "rec" else None
        op = lambda xi: lif_cuda.synaptic_evolve(xi, v0, i0, tau, tau_syn, thr, bias, 1e-3, w_rec=w_rec,  # noqa: E731
                                                 backend="fused", lengths=lengths)

    def call():
        xi = x.detach().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            s = op(xi)[0]
            if grad:
                s.backward(grad_out)
    return CallCase({spec["phase"]: call}, dev)
