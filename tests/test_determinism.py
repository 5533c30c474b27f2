"""Determinism: the same call gives the same bits, whatever the thread count or the memory layout.

- The same call twice: identical outputs and identical gradients of every input (also with the
  in-kernel noise under the same torch.manual_seed).
- torch.set_num_threads(1) and (2): identical bits, although the CPU kernel then tiles the neurons
  differently and splits the work differently (the parameter gradients are reduced in a fixed order).
- Permuted, sliced (non-contiguous) and broadcast (stride-0) arguments: identical bits to the same
  values made contiguous; their gradients are the contiguous copy's, mapped back through the view.

"Identical" is byte equality of the tensors (NaN-safe, and -0.0 differs from +0.0).
"""
import pytest
import torch

import lif_cuda
from lif_cuda import LIFNeuron, PeriodicExponential, StepPWL

pytestmark = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")

DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["f32", "f64"]
NAMES = ("input", "v0", "tau_mem", "threshold", "bias", "noise")


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Tests here seed torch's global generator; leave it as it was for the rest of the suite."""
    with torch.random.fork_rng(devices=[]):
        yield


def bits(t):
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.numel() else t


def assert_identical(a, b, what):
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    diff = (a.double() - b.double()).abs().max().item()
    assert torch.equal(bits(a), bits(b)), f"{what}: not bit-identical (max |diff| {diff:.3e})"


def make_args(seed, B, T, N, dtype, noise=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    u = lambda *s: torch.rand(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return dict(
        input=0.6 + r(B, T, N),
        v0=r(B, N),
        tau_mem=5e-3 + 0.05 * u(N),
        threshold=0.3 + u(N),
        bias=0.1 * r(N),
        noise=0.3 * r(B, T, N) if noise else None,
    )


def call(args, backend, spike_fn=StepPWL, upstream_seed=0, **kw):
    """Runs fwd + bwd with fresh leaves; returns the outputs and the gradient of every leaf."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in args.items() if v is not None}
    full = {**{k: None for k in NAMES}, **leaves}
    spikes, vmem, final = lif_cuda.lif_evolve(
        full["input"], full["v0"], full["tau_mem"], full["threshold"], full["bias"], 1e-3, noise=full["noise"],
        learning_window=0.4, max_spikes_per_dt=3.0, spike_generation_fn=spike_fn, record=True, backend=backend, **kw
    )
    g = torch.Generator().manual_seed(upstream_seed)
    weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in (spikes, vmem, final)]
    loss = sum((o * w).sum() for o, w in zip((spikes, vmem, final), weights))
    loss.backward()
    return {"spikes": spikes, "vmem": vmem, "final": final, **{f"grad {k}": v.grad for k, v in leaves.items()}}


def assert_all_identical(r1, r2, context=""):
    assert r1.keys() == r2.keys()
    for k in r1:
        assert_identical(r1[k], r2[k], f"{context}{k}")


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("spike_fn", [StepPWL, PeriodicExponential], ids=["pwl", "pexp"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_same_call_twice(dtype, spike_fn, backend):
    args = make_args(1, 3, 40, 70, dtype)
    assert_all_identical(call(args, backend, spike_fn), call(args, backend, spike_fn))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_in_kernel_noise_reproducible_under_seed(dtype):
    args = make_args(2, 2, 30, 50, dtype, noise=False)
    torch.manual_seed(123)
    r1 = call(args, "fused", noise_std=0.5)
    torch.manual_seed(123)
    r2 = call(args, "fused", noise_std=0.5)
    assert_all_identical(r1, r2)
    torch.manual_seed(124)
    r3 = call(args, "fused", noise_std=0.5)
    assert not torch.equal(r1["vmem"], r3["vmem"]), "another seed must give other noise"


# Shapes chosen so that one and two threads tile and split differently: B=1 with many neurons (the
# tile width shrinks with the thread count), several rows with an odd N, and a long sequence.
THREAD_SHAPES = [(1, 16, 1000), (3, 25, 301), (2, 200, 65)]


@pytest.mark.parametrize("shape", THREAD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_thread_count_does_not_change_bits(shape, dtype):
    args = make_args(3, *shape, dtype)
    old = torch.get_num_threads()
    try:
        results = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            results[n] = call(args, "fused")
    finally:
        torch.set_num_threads(old)
    assert_all_identical(results[1], results[2], "1 vs 2 threads: ")


def test_thread_count_does_not_change_module_training_bits():
    """A few optimiser steps of a module (state carried between calls) under 1 and 2 threads."""

    def train(threads):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            torch.manual_seed(0)
            m = LIFNeuron(300, tau_mem=torch.linspace(0.01, 0.05, 300), threshold=0.8, backend="fused")
            opt = torch.optim.SGD(m.parameters(), lr=1e-7)
            x = torch.randn(4, 30, 300) + 0.5
            out = []
            for _ in range(3):
                opt.zero_grad()
                s = m(x)
                (s * torch.linspace(-1, 1, 300)).sum().backward()
                opt.step()
                out.append(s.detach())
            return [*out, m.vmem.clone(), *[p.detach().clone() for p in m.parameters()]]
        finally:
            torch.set_num_threads(old)

    for i, (a, b) in enumerate(zip(train(1), train(2))):
        assert_identical(a, b, f"item {i}")


# ------------------------------------------------------------------------- layouts

def _perm_input(x):  # (B,T,N) values stored as (N,B,T): every stride differs from contiguous
    return x.permute(2, 0, 1).contiguous()


def _scatter_middle(g):
    out = torch.zeros(g.shape[0], 3, dtype=g.dtype)
    out[:, 1] = g
    return out.reshape(-1)


LAYOUTS = {
    # name: (argument, make base from contiguous values, view of base, contiguous grad -> base grad)
    "input-permuted": ("input", _perm_input, lambda b: b.permute(1, 2, 0), lambda g: g.permute(2, 0, 1)),
    "input-time-major": (
        "input", lambda x: x.transpose(0, 1).contiguous(), lambda b: b.transpose(0, 1), lambda g: g.transpose(0, 1)
    ),
    "input-sliced": (
        "input",
        lambda x: torch.stack([x, torch.full_like(x, 7.0)], dim=-1),  # interleave with junk
        lambda b: b[..., 0],
        lambda g: torch.stack([g, torch.zeros_like(g)], dim=-1),
    ),
    "input-broadcast-neurons": (
        "input", lambda x: x[:, :, :1].clone(), lambda b: b.expand(-1, -1, N), lambda g: g.sum(-1, keepdim=True)
    ),
    "input-broadcast-batch": (
        "input", lambda x: x[:1].clone(), lambda b: b.expand(B, -1, -1), lambda g: g.sum(0, keepdim=True)
    ),
    "input-broadcast-time": (
        "input", lambda x: x[:, :1].clone(), lambda b: b.expand(-1, T, -1), lambda g: g.sum(1, keepdim=True)
    ),
    "v0-transposed": ("v0", lambda v: v.t().contiguous(), lambda b: b.t(), lambda g: g.t()),
    "v0-broadcast": ("v0", lambda v: v[0].clone(), lambda b: b.expand(B, -1), lambda g: g.sum(0)),
    "noise-permuted": ("noise", _perm_input, lambda b: b.permute(1, 2, 0), lambda g: g.permute(2, 0, 1)),
    "noise-broadcast": (
        "noise", lambda z: z[:, :, :1].clone(), lambda b: b.expand(-1, -1, N), lambda g: g.sum(-1, keepdim=True)
    ),
    "tau-strided": (
        "tau_mem",
        lambda p: torch.stack([p, p + 1], -1),
        lambda b: b[:, 0],
        lambda g: torch.stack([g, torch.zeros_like(g)], -1),
    ),
    "tau-broadcast": ("tau_mem", lambda p: p[:1].clone(), lambda b: b.expand(N), lambda g: g.sum(0, keepdim=True)),
    "thr-strided": (
        "threshold",
        lambda p: torch.stack([p, p], -1),
        lambda b: b[:, 1],
        lambda g: torch.stack([torch.zeros_like(g), g], -1),
    ),
    "thr-broadcast": ("threshold", lambda p: p[0].clone(), lambda b: b.expand(N), lambda g: g.sum()),
    "bias-strided": (
        "bias", lambda p: torch.stack([p + 3, p, p - 3], -1).reshape(-1), lambda b: b[1::3], _scatter_middle
    ),
    "bias-broadcast": ("bias", lambda p: p[:1].clone(), lambda b: b.expand(N), lambda g: g.sum(0, keepdim=True)),
}
B, T, N = 3, 20, 33


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_does_not_change_bits(layout, dtype, backend):
    name, make_base, view, back = LAYOUTS[layout]
    args = make_args(4, B, T, N, dtype)
    base = make_base(args[name]).requires_grad_(True)
    arg_view = view(base)
    assert arg_view.shape == args[name].shape
    if arg_view.dim():
        assert not arg_view.is_contiguous() or 0 in arg_view.stride(), (
            f"{layout}: the view must not be a plain contiguous tensor"
        )
    copy = arg_view.detach().contiguous()
    # The view, with the other arguments as fresh leaves.
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in args.items() if k != name}
    leaves_c = {k: v.detach().clone().requires_grad_(True) for k, v in args.items() if k != name}
    copy_leaf = copy.clone().requires_grad_(True)

    def run(a):
        out = lif_cuda.lif_evolve(a["input"], a["v0"], a["tau_mem"], a["threshold"], a["bias"], 1e-3, noise=a["noise"],
                                  learning_window=0.4, max_spikes_per_dt=3.0, record=True, backend=backend)
        g = torch.Generator().manual_seed(9)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum() for o in out)
        loss.backward()
        return out

    out_v = run({**leaves, name: arg_view})
    out_c = run({**leaves_c, name: copy_leaf})
    for what, a, b in zip(("spikes", "vmem", "final"), out_v, out_c):
        assert_identical(a, b, f"{layout}: {what}")
    for k in leaves:
        assert_identical(leaves[k].grad, leaves_c[k].grad, f"{layout}: grad {k}")
    assert_identical(base.grad, back(copy_leaf.grad), f"{layout}: grad {name} (through the view)")


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_module_broadcast_input_same_bits(backend):
    """LIFNeuron's (..., 1) input is broadcast over the neurons with a stride-0 view."""
    torch.manual_seed(0)
    m1 = LIFNeuron(N, tau_mem=torch.linspace(0.01, 0.05, N), threshold=0.7, backend=backend)
    m2 = LIFNeuron(N, tau_mem=torch.linspace(0.01, 0.05, N), threshold=0.7, backend=backend)
    x = torch.randn(B, T, 1) + 0.8
    for _ in range(2):  # and the carried state stays identical
        s1 = m1(x)
        s2 = m2(x.expand(B, T, N).contiguous())
        assert_identical(s1, s2, "spikes")
        assert_identical(m1.vmem, m2.vmem, "vmem state")
