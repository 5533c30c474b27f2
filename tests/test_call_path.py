"""The per-call path: thin, free of host syncs, checks made where they are free.

- After a first call, a forward+backward of a network with a LIFNeuron dispatches no
  `aten._local_scalar_dense`, `item` or `is_nonzero` (the ops behind every device-to-host read),
  watched by a TorchDispatchMode. On the CPU the op checks parameter values in C++ from the raw
  data; on CUDA lif_cuda checks them once per change (CheckedValues), tested here on CPU tensors.
- No Python autograd: a call is one dispatcher call into C++ (forward and backward).
- Double backward raises a RuntimeError that names what is unsupported (the synaptic op's too).
"""
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lif_cuda
from conftest import make_synaptic_case, run_synaptic_fused
from lif_cuda._checks import CheckedValues

pytestmark = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")

SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero"}


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def _net(noise_std=0.0):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16),
        lif_cuda.LIFNeuron(16, tau_mem=torch.linspace(0.01, 0.03, 16), noise_std=noise_std, backend="fused"),
        torch.nn.Linear(16, 4),
    )


@pytest.mark.parametrize("noise_std", [0.0, 0.5], ids=["no-noise", "kernel-noise"])
def test_steady_state_training_step_has_no_host_sync(noise_std):
    net = _net(noise_std)
    x = torch.randn(4, 10, 8)
    net(x).sum().backward()  # the first call may check and resolve what it needs
    with RecordOps() as rec:
        for _ in range(3):
            net(x).square().mean().backward()
        with torch.no_grad():
            net(x)
    assert "lif_forward" in rec.ops and "lif_backward" in rec.ops, rec.ops  # the mode saw our ops
    syncs = [op for op in rec.ops if op in SYNC_OPS]
    assert syncs == [], f"host syncs in steady state: {syncs}"


def test_steady_state_with_lengths_and_batch_state_has_no_host_sync():
    """SPEC §8 on the CPU: int64 CPU lengths are checked by the op in C++; a per-row state is
    updated in place. (CUDA, with CPU lengths: tests/test_cuda.py.)"""
    torch.manual_seed(0)
    fc = torch.nn.Linear(8, 16)
    lif = lif_cuda.LIFNeuron(16, backend="fused", batch_state=True)
    x = torch.randn(4, 10, 8)
    lengths = torch.tensor([10, 3, 0, 7])
    lif(fc(x), lengths).sum().backward()  # the state becomes (B, N)
    with RecordOps() as rec:
        for _ in range(3):
            lif(fc(x), lengths).square().mean().backward()
    assert "lif_forward" in rec.ops and "lif_backward" in rec.ops, rec.ops
    syncs = [op for op in rec.ops if op in SYNC_OPS]
    assert syncs == [], f"host syncs in steady state: {syncs}"


def test_a_call_is_one_dispatch_into_the_op():
    """Inference: the op and the state update; no Python autograd, no copies of v0 or parameters."""
    layer = lif_cuda.LIFNeuron(16, backend="fused")
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        layer(x)
        with RecordOps() as rec:
            layer(x)
    assert rec.ops == ["lif_forward", "select", "detach", "copy_"], rec.ops


def test_checked_values_check_once_per_change():
    """The CUDA path's value checks (here on CPU tensors): a sync only when a parameter changed."""
    checked = CheckedValues()
    tau = torch.full((4,), 0.02, requires_grad=True)
    thr = torch.ones(4)
    params = [("tau_mem", tau, True), ("threshold", thr, True)]
    with RecordOps() as rec:
        checked.check(params)
    assert [op for op in rec.ops if op in SYNC_OPS] == ["_local_scalar_dense"], "one sync for all params"
    with RecordOps() as rec:
        for _ in range(5):
            checked.check(params)
    assert rec.ops == [], rec.ops
    with torch.no_grad():  # an optimiser step: the version counter moves, the values are checked again
        tau.sub_(0.001)
    with RecordOps() as rec:
        checked.check(params)
    assert [op for op in rec.ops if op in SYNC_OPS] == ["_local_scalar_dense"]
    with torch.no_grad():
        thr[2] = -1.0
    with pytest.raises(ValueError, match=r"threshold must be finite and > 0"):
        checked.check(params)
    with pytest.raises(ValueError, match=r"threshold"):  # still bad: still refused
        checked.check(params)
    with torch.no_grad():
        thr[2] = 1.0
    checked.check(params)
    # A tensor that dies is forgotten; a new one at the same address is checked afresh.
    del params, tau
    assert len(checked._valid) == 1


@pytest.mark.parametrize("corrupt", ["nan", "zero", "negative"])
@pytest.mark.parametrize("name", ["tau_mem", "threshold"])
def test_parameter_made_bad_after_calls_is_refused_before_any_kernel(name, corrupt):
    layer = lif_cuda.LIFNeuron(6, backend="fused")
    x = torch.randn(2, 4, 6) + 0.5
    layer(x).sum().backward()
    state = layer.vmem.clone()
    value = {"nan": math.nan, "zero": 0.0, "negative": -1.0}[corrupt]
    with torch.no_grad():
        getattr(layer, name)[3] = value
    launches = lif_cuda.ops.kernel_launches()
    with pytest.raises(ValueError, match=rf"{name} must be finite and > 0"):
        layer(x)
    assert lif_cuda.ops.kernel_launches() == launches
    assert torch.equal(layer.vmem, state)


def test_parameter_changed_through_data_is_seen_on_the_cpu():
    # On the CPU the op reads the values themselves: a write through .data (no version bump) counts.
    layer = lif_cuda.LIFNeuron(6, backend="fused")
    x = torch.randn(2, 4, 6)
    layer(x)
    layer.tau_mem.data[0] = -0.5
    with pytest.raises(ValueError, match="tau_mem"):
        layer(x)


def test_decay_follows_tau_changed_in_any_way():
    """alpha is remembered per tau *value* (csrc/host/prepare.h, DecayCache): a changed tau, in place,
    through .data or by a new tensor, gives the new alpha, exactly as the reference computes it."""
    x = torch.randn(2, 30, 6) + 0.8
    layer = lif_cuda.LIFNeuron(6, tau_mem=0.02, backend="fused")
    ref = lif_cuda.LIFNeuron(6, tau_mem=0.02, backend="reference")

    def both():
        layer.reset_state()
        ref.reset_state()
        a = layer.evolve(x, record=True)[2]["vmem"]
        b = ref.evolve(x, record=True)[2]["vmem"]
        assert torch.equal(a, b)
        return a

    first = both()
    with torch.no_grad():
        layer.tau_mem.mul_(1.5)
        ref.tau_mem.mul_(1.5)
    second = both()
    layer.tau_mem.data.fill_(0.011)
    ref.tau_mem.data.fill_(0.011)
    third = both()
    assert not torch.equal(first, second) and not torch.equal(second, third)


@pytest.mark.parametrize("params_require_grad", [True, False])
def test_double_backward_raises_a_clear_error(params_require_grad):
    x = (torch.randn(2, 6, 5) + 0.7).requires_grad_(True)
    tau = torch.full((5,), 0.02, requires_grad=params_require_grad)
    thr = torch.ones(5, requires_grad=params_require_grad)
    s, _, _ = lif_cuda.lif_evolve(x, torch.zeros(5), tau, thr, torch.zeros(5), 1e-3, backend="fused")
    (g,) = torch.autograd.grad((s * s).sum(), x, create_graph=True)
    # First-order gradients under create_graph=True are fine and equal the plain ones.
    (g_plain,) = torch.autograd.grad(
        (lif_cuda.lif_evolve(x, torch.zeros(5), tau, thr, torch.zeros(5), 1e-3, backend="fused")[0] ** 2).sum(), x
    )
    assert torch.equal(g, g_plain)
    with pytest.raises(RuntimeError, match=r"double backward.*not supported"):
        g.square().sum().backward()


def test_module_double_backward_raises():
    layer = lif_cuda.LIFNeuron(5, backend="fused")
    x = (torch.randn(2, 6, 5) + 0.7).requires_grad_(True)
    (g,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="lif_backward"):
        torch.autograd.grad(g.sum(), layer.tau_mem)


# ------------------------------------------------------------------ the synaptic model (SPEC §7)


def test_synaptic_gradient_flows_only_where_asked_and_double_backward_is_refused():
    case = make_synaptic_case(9, 2, 7, 3, 2, rec=True)
    x = case["input"].clone().requires_grad_(True)
    out = run_synaptic_fused(dict(case, input=x))
    (g,) = torch.autograd.grad(out[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        g.sum().backward()
