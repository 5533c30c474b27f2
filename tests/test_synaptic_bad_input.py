"""SPEC §6 for the synaptic model (§7): every bad input is a clear ValueError/TypeError naming the
argument, raised before any kernel runs, leaving everything it was given bit-identical.

The tripwire is tests/test_bad_input.py's: the fused op counts its kernel launches
(lif_cuda.ops.kernel_launches) and a rejected call must not move it; the reference loop must not
start. Rows run on both backends through `synaptic_evolve`, directly on the op (its own C++ checks),
and on `SynapticLIF` (construction, and calls that must leave the state untouched).
"""
import math
import re

import pytest
import torch

import lif_cuda
import lif_cuda.functional as functional
import lif_cuda.ops as ops
from lif_cuda import SynapticLIF, synaptic_evolve

B, T, N, S = 2, 3, 4, 2
META = torch.device("meta")


@pytest.fixture(autouse=True)
def _keep_global_rng():
    with torch.random.fork_rng(devices=[]):
        yield


def bits(t):
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).clone() if t.numel() else t.clone()


@pytest.fixture
def tripwire(monkeypatch):
    """A bad call may reach the fused op (it checks values itself) but no kernel may run; the
    reference loop must not start at all."""
    real = functional.synaptic_forward_op

    def guarded(*args, **kwargs):
        before = ops.kernel_launches()
        try:
            real(*args, **kwargs)
        except (ValueError, TypeError):
            assert ops.kernel_launches() == before, "a kernel ran before the bad argument was reported"
            raise
        raise AssertionError("the fused op accepted a bad argument")

    def forbidden(*args, **kwargs):
        raise AssertionError("the reference loop started before the bad argument was reported")

    monkeypatch.setattr(functional, "synaptic_forward_op", guarded)
    monkeypatch.setattr(functional, "synaptic_evolve_reference", forbidden)


def base_args():
    g = torch.Generator().manual_seed(7)
    return dict(
        input=torch.randn(B, T, N * S, generator=g) + 0.5,
        v0=torch.randn(B, N, generator=g),
        i0=torch.randn(N, S, generator=g),
        tau_mem=torch.full((N,), 0.02),
        tau_syn=torch.full((N, S), 0.01),
        threshold=torch.full((N,), 0.8),
        bias=torch.full((N,), 0.1),
        dt=1e-3,
        w_rec=0.1 * torch.randn(N, N * S, generator=g),
        s0=torch.zeros(N),
    )


def at(index, value):
    def make(t):
        t = t.clone()
        t[index] = value
        return t

    return make


# (id, argument, replacement, exception, regex of what was expected); the argument's name must be
# in the message.
TABLE = [
    ("input-list", "input", lambda x: x.tolist(), TypeError, "torch.Tensor"),
    ("input-int", "input", lambda x: x.to(torch.int32), TypeError, "float"),
    ("input-complex", "input", lambda x: x.to(torch.complex64), TypeError, "float"),
    ("input-rank2", "input", lambda x: x[0], ValueError, r"\(B, ?T, ?N\*S\)"),
    ("input-last-dim", "input", lambda x: torch.zeros(B, T, N * S + 1), ValueError, "N\\*S"),
    ("i0-rank1", "i0", lambda t: torch.zeros(N * S), ValueError, "shape"),
    ("i0-batch", "i0", lambda t: torch.zeros(B + 1, N, S), ValueError, "shape"),
    ("i0-int", "i0", lambda t: t.to(torch.int64), TypeError, "float"),
    ("v0-shape", "v0", lambda t: torch.zeros(B, N + 1), ValueError, "shape"),
    ("v0-device", "v0", lambda t: t.to(META), ValueError, "device"),
    ("s0-shape", "s0", lambda t: torch.zeros(N + 1), ValueError, "shape"),
    ("tau_mem-zero", "tau_mem", lambda t: torch.zeros(N), ValueError, "> 0"),
    ("tau_mem-nan", "tau_mem", at(1, math.nan), ValueError, "finite"),
    ("tau_syn-zero", "tau_syn", lambda t: torch.zeros(N, S), ValueError, "> 0"),
    ("tau_syn-negative-one", "tau_syn", at((2, 1), -0.01), ValueError, "> 0"),
    ("tau_syn-negative-scalar", "tau_syn", lambda t: torch.tensor(-0.01), ValueError, "> 0"),
    ("tau_syn-inf", "tau_syn", at((0, 0), math.inf), ValueError, "finite"),
    ("tau_syn-nan", "tau_syn", at((3, 1), math.nan), ValueError, "finite"),
    ("tau_syn-neurons", "tau_syn", lambda t: torch.full((N,), 0.01), ValueError, r"\(4, 2\), \(1, 2\) or \(\)"),
    ("tau_syn-rows", "tau_syn", lambda t: torch.full((N + 1, S), 0.01), ValueError, r"\(4, 2\), \(1, 2\) or \(\)"),
    ("tau_syn-two-rows", "tau_syn", lambda t: torch.full((2, S), 0.01), ValueError, r"\(4, 2\), \(1, 2\) or \(\)"),
    ("tau_syn-synapses", "tau_syn", lambda t: torch.full((N, S + 1), 0.01), ValueError, "shape"),
    ("tau_syn-rank3", "tau_syn", lambda t: torch.full((1, N, S), 0.01), ValueError, "shape"),
    ("tau_syn-int", "tau_syn", lambda t: torch.ones(N, S, dtype=torch.int64), TypeError, "float"),
    ("tau_syn-device", "tau_syn", lambda t: t.to(META), ValueError, "device"),
    ("threshold-negative", "threshold", at(0, -1.0), ValueError, "> 0"),
    ("bias-inf", "bias", at(2, math.inf), ValueError, "finite"),
    ("w_rec-square", "w_rec", lambda w: torch.zeros(N, N), ValueError, r"\(N, N\*S\) = \(4, 8\)"),
    ("w_rec-transposed", "w_rec", lambda w: w.t().contiguous(), ValueError, r"\(N, N\*S\) = \(4, 8\)"),
    ("w_rec-rank1", "w_rec", lambda w: w.reshape(-1), ValueError, "shape"),
    ("w_rec-int", "w_rec", lambda w: w.to(torch.int32), TypeError, "float"),
    ("w_rec-device", "w_rec", lambda w: w.to(META), ValueError, "device"),
    ("noise-shape", "noise", lambda _: torch.zeros(B, T, N * S), ValueError, "shape"),
    ("dt-zero", "dt", lambda _: 0.0, ValueError, "> 0"),
    ("dt-nan", "dt", lambda _: math.nan, ValueError, "finite"),
    ("window-negative", "learning_window", lambda _: -0.1, ValueError, ">= 0"),
    ("max-spikes-zero", "max_spikes_per_dt", lambda _: 0.5, ValueError, ">= 1"),
    # Per-row lengths (SPEC §8), not among the base arguments (replace gets None).
    ("lengths-negative", "lengths", lambda _: [2, -1], ValueError, r"\[0, T\]"),
    ("lengths-beyond-T", "lengths", lambda _: torch.tensor([0, T + 1]), ValueError, r"\[0, T\] = \[0, 3\]"),
    ("lengths-shape", "lengths", lambda _: torch.tensor([1, 2, 3]), ValueError, "shape"),
    ("lengths-rank2", "lengths", lambda _: torch.tensor([[1, 2]]), ValueError, "shape"),
    ("lengths-float", "lengths", lambda _: torch.tensor([1.0, 2.0]), TypeError, "integer"),
    ("lengths-bool", "lengths", lambda _: torch.tensor([True, False]), TypeError, "integer"),
    ("lengths-not-a-list", "lengths", lambda _: 3, TypeError, "integer"),
    ("lengths-device", "lengths", lambda _: torch.tensor([1, 2], device=META), ValueError, "device"),
]


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("row", TABLE, ids=[r[0] for r in TABLE])
def test_functional_rejects_bad_input(tripwire, backend, row):
    _, name, replace, exc, expected = row
    args = base_args()
    good = args.get(name)
    args[name] = replace(good)
    kept = {k: bits(v) for k, v in args.items() if isinstance(v, torch.Tensor) and v.device != META}
    with pytest.raises(exc) as info:
        synaptic_evolve(**args, backend=backend)
    message = str(info.value)
    assert name in message, f"the message does not name {name}: {message!r}"
    assert re.search(expected, message, re.IGNORECASE), f"{message!r} does not say {expected!r}"
    for k, v in kept.items():
        assert torch.equal(bits(args[k]), v), f"{k} was changed by the failed call"


def test_noise_tensor_and_noise_std_together(tripwire):
    args = base_args()
    with pytest.raises(ValueError, match="not both"):
        synaptic_evolve(**args, noise=torch.zeros(B, T, N), noise_std=0.1, backend="fused")


OP_ROWS = [
    ("w_rec", lambda a: a.update(w_rec=torch.zeros(N, N)), ValueError, r"w_rec must have shape \(N, N\*S\)"),
    ("tau_syn", lambda a: a.update(tau_syn=torch.full((N,), 0.01)), ValueError, "tau_syn must have shape"),
    ("tau_syn", lambda a: a.update(tau_syn=torch.full((N, S), -0.01)), ValueError, "tau_syn must be finite and > 0"),
    ("input", lambda a: a.update(input=torch.zeros(B, T, N)), ValueError, "N\\*S"),
    ("i0", lambda a: a.update(i0=torch.zeros(N, 0)), ValueError, "at least one synapse"),
    ("s0", lambda a: a.update(s0=torch.zeros(B + 1, N)), ValueError, "s0 must have shape"),
    ("w_rec", lambda a: a.update(w_rec=torch.zeros(N, N * S, dtype=torch.float64)), TypeError, "w_rec must have dtype"),
    ("lengths", lambda a: a.update(lengths=torch.tensor([1, -1])), ValueError, r"lengths must be in \[0, T\]"),
    ("lengths", lambda a: a.update(lengths=torch.tensor([T + 1, 0])), ValueError, r"lengths must be in \[0, T\]"),
    ("lengths", lambda a: a.update(lengths=torch.tensor([1, 2, 3])), ValueError, r"lengths must have shape \(2,\)"),
    ("lengths", lambda a: a.update(lengths=torch.tensor([1.0, 2.0])), TypeError, "lengths must be an int64"),
    ("lengths", lambda a: a.update(lengths=torch.tensor([1, 2], dtype=torch.int32)), TypeError,
     "lengths must be an int64"),
]


@pytest.mark.parametrize("row", OP_ROWS, ids=[f"{r[0]}-{i}" for i, r in enumerate(OP_ROWS)])
def test_op_checks_its_arguments_before_any_kernel(row):
    """The op's own C++ checks (the functional API and the modules check first, but the op is public)."""
    name, change, exc, expected = row
    a = base_args()
    change(a)
    before = ops.kernel_launches()
    with pytest.raises(exc, match=expected):
        torch.ops.lif_cuda.synaptic_forward(a["input"], a["v0"], a["i0"], a["s0"], a["tau_mem"], a["tau_syn"],
                                            a["threshold"], a["bias"], a["w_rec"], None, None, 1e-3, 0.0, 0.5,
                                            2.0**16, 0, True, False, a.get("lengths"))
    assert ops.kernel_launches() == before


@pytest.mark.parametrize("lengths,exc,expected", [
    (torch.tensor([0, T + 1]), ValueError, r"lengths must be in \[0, T\]"),
    (torch.tensor([1]), ValueError, r"lengths must have shape \(2,\)"),
    (torch.tensor([1.0, 2.0]), TypeError, "lengths must be an int64"),
], ids=["beyond-T", "shape", "float"])
def test_backward_op_checks_lengths_before_any_kernel(lengths, exc, expected):
    a = base_args()
    out = torch.ops.lif_cuda.synaptic_forward(a["input"], a["v0"], a["i0"], a["s0"], a["tau_mem"], a["tau_syn"],
                                              a["threshold"], a["bias"], a["w_rec"], None, None, 1e-3, 0.0, 0.5,
                                              2.0**16, 0, False, True)
    before = ops.kernel_launches()
    with pytest.raises(exc, match=expected):
        torch.ops.lif_cuda.synaptic_backward(torch.ones(B, T, N), None, None, None, None, None, out[7], out[8],
                                             a["v0"], a["s0"], a["tau_mem"], a["tau_syn"], a["threshold"], a["w_rec"],
                                             1e-3, 0.5, 2.0**16, 0, False, True, False, lengths)
    assert ops.kernel_launches() == before


def test_module_construction_errors():
    with pytest.raises(ValueError, match="w_rec may not be provided if has_rec is False"):
        SynapticLIF((N * S, N), w_rec=torch.zeros(N, N * S))
    with pytest.raises(ValueError, match=r"w_rec must have shape \(N, N\*S\) = \(4, 8\)"):
        SynapticLIF((N * S, N), has_rec=True, w_rec=torch.zeros(N, N))
    with pytest.raises(ValueError, match="tau_syn must have shape"):
        SynapticLIF((N * S, N), tau_syn=torch.full((N,), 0.01))
    with pytest.raises(ValueError, match="tau_syn must be finite and > 0"):
        SynapticLIF((N * S, N), tau_syn=-0.01)
    with pytest.raises(ValueError, match="multiple"):
        SynapticLIF((N * S + 1, N))
    with pytest.raises(ValueError, match="shape"):
        SynapticLIF((2, 3, 4))
    with pytest.raises(TypeError, match="has_rec"):
        SynapticLIF((N * S, N), has_rec="yes")
    with pytest.raises(ValueError, match="noise"):
        SynapticLIF((N * S, N), noise="numpy")
    with pytest.raises(ValueError, match="backend"):
        SynapticLIF((N * S, N), backend="gpu")


@pytest.fixture
def trained():
    """A layer with some state (built before the tripwire is set)."""
    layer = SynapticLIF((N * S, N), has_rec=True, w_rec=0.1 * torch.randn(N, N * S), threshold=0.5)
    layer(0.5 + torch.rand(B, 5, N * S))
    assert layer.vmem.any()
    return layer


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("corrupt", ["tau_syn-negative", "tau_syn-nan", "w_rec-shape", "input-shape"])
def test_module_call_leaves_state_and_parameters_untouched(trained, tripwire, backend, corrupt):
    layer = trained
    layer.backend = backend
    x = 0.5 + torch.rand(B, T, N * S)
    with torch.no_grad():
        if corrupt == "tau_syn-negative":
            layer.tau_syn[1, 0] = -0.01
        elif corrupt == "tau_syn-nan":
            layer.tau_syn[0, 1] = math.nan
        elif corrupt == "w_rec-shape":
            layer.w_rec = torch.nn.Parameter(torch.zeros(N, N))
        else:
            x = torch.rand(B, T, N * S + 2)
    kept = {k: bits(v) for k, v in layer.state_dict().items()}
    with pytest.raises(ValueError, match="tau_syn|w_rec|input"):
        layer(x)
    for k, v in layer.state_dict().items():
        assert torch.equal(bits(v), kept[k]), f"{k} changed in a failed call"


# Bad lengths given to a layer, and a call of another batch size than the state a batch_state=True
# layer keeps (SPEC §8): (id, lengths or None, input batch size, batch_state, expected).
MODULE_LENGTHS_TABLE = [
    ("lengths-negative", [2, -1], B, False, ValueError, r"lengths.*\[0, T\]"),
    ("lengths-beyond-T", torch.tensor([0, T + 1]), B, True, ValueError, r"lengths.*\[0, T\]"),
    ("lengths-shape", torch.tensor([1, 2, 3]), B, False, ValueError, "lengths.*shape"),
    ("lengths-float", torch.tensor([1.0, 2.0]), B, True, TypeError, "lengths.*integer"),
    ("lengths-device", torch.tensor([1, 2], device=META), B, False, ValueError, "lengths.*device"),
    ("batch-size", None, B + 1, True, ValueError, r"batch size 2.*batch size 3.*reset_state\(\)"),
    ("batch-size-with-lengths", [1, 1, 1], B + 1, True, ValueError, r"batch size.*reset_state\(\)"),
]


@pytest.mark.parametrize("method", ["forward", "evolve"])
@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("case_id,lengths,batch,batch_state,exc,expected", MODULE_LENGTHS_TABLE,
                         ids=[r[0] for r in MODULE_LENGTHS_TABLE])
def test_module_rejects_lengths_and_batch_size(case_id, lengths, batch, batch_state, exc, expected, backend, method):
    layer = SynapticLIF((N * S, N), has_rec=True, w_rec=0.1 * torch.randn(N, N * S), threshold=0.5, backend=backend,
                        batch_state=batch_state)
    layer(0.5 + torch.rand(B, 5, N * S))  # with batch_state, the state is now per row
    kept = {k: bits(v) for k, v in layer.state_dict().items()}
    before = ops.kernel_launches()
    x = 0.5 + torch.rand(batch, T, N * S)
    with pytest.raises(exc, match=expected):
        if method == "forward":
            layer(x, lengths)
        else:
            layer.evolve(x, record=True, lengths=lengths)
    assert ops.kernel_launches() == before, "a kernel ran before the error"
    for k, v in layer.state_dict().items():
        assert torch.equal(bits(v), kept[k]), f"{k} changed in a failed call"


def test_empty_shapes_launch_nothing():
    layer = SynapticLIF((N * S, N), has_rec=True)
    before = ops.kernel_launches()
    assert layer(torch.zeros(0, 5, N * S)).shape == (0, 5, N)
    assert layer(torch.zeros(2, 0, N * S)).shape == (2, 0, N)
    assert ops.kernel_launches() == before
    assert lif_cuda.SynapticLIF((0,)).n_neurons == 0


def test_backward_op_rejects_zero_synapses_before_any_kernel():
    """The backward's own shape check of the saved currents: S = 0 with N > 0 is an error naming `a`
    (it once reached the CPU kernel's tile arithmetic, a division by S)."""
    a = base_args()
    out = torch.ops.lif_cuda.synaptic_forward(a["input"], a["v0"], a["i0"], a["s0"], a["tau_mem"], a["tau_syn"],
                                              a["threshold"], a["bias"], a["w_rec"], None, None, 1e-3, 0.0, 0.5,
                                              2.0**16, 0, False, True)
    u = out[7]
    before = ops.kernel_launches()
    with pytest.raises(ValueError, match="a must have at least one synapse"):
        torch.ops.lif_cuda.synaptic_backward(torch.ones(B, T, N), None, None, None, None, None, u,
                                             torch.zeros(B, T, N, 0), a["v0"], None, a["tau_mem"], torch.tensor(0.005),
                                             a["threshold"], None, 1e-3, 0.5, 2.0**16, 0, False, True, False, None)
    assert ops.kernel_launches() == before
