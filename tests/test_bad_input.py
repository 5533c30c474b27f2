"""SPEC §6, bad input: a clear error, nothing corrupted, for every model (LIF, synaptic §7, adaptive §10).

Every row of the tables below is one bad input. Each must raise ValueError or TypeError (as the row
says) whose message names the argument and says what was expected, before any kernel runs, and
leave everything it was given bit-identical: the functional API's tensors, and a module's
parameters, their gradients and its state. Every row runs on both backends ("fused" and
"reference"). Rows that hold for every model run for each (the `model` fixture); the others are
the model's own (a synaptic layer's tau_syn and w_rec). The synaptic op's own C++ checks, forward
and backward, are called directly (the op is public). Zero-sized B, T or N is not an error: empty
outputs, state untouched.
"""
import contextlib
import math
import re

import pytest
import torch

import lif_cuda
import lif_cuda.ops as ops
from conftest import MODELS, bits

pytestmark = pytest.mark.usefixtures("keep_global_rng")  # tests here seed torch's global generator

BACKENDS = ("fused", "reference")
B, T, N, S = 2, 3, 4, 2
META = torch.device("meta")  # a second device that exists on every machine

# Where the functional forms (and the modules) find the fused op and the reference loop.
_OP_AND_REFERENCE = [MODELS[m].internals() for m in ("lif", "synaptic-rec", "adaptive")]


@pytest.fixture(autouse=True)
def no_kernel(monkeypatch):
    """Any kernel launch inside a bad call is a failure: the checks must come first. The fused ops
    check some arguments themselves (parameter values on the CPU), so they are called, but their
    kernels must not run: the extension counts every launch (lif_cuda.ops.kernel_launches). The
    reference loops must not start at all. Tests of valid calls restore the real functions
    (`real_kernels`, `_real`)."""
    real = []
    for module, op_name, ref_name in _OP_AND_REFERENCE:
        op = getattr(module, op_name)
        real.append((module, op_name, op))
        real.append((module, ref_name, getattr(module, ref_name)))

        def guarded_op(*args, _op=op, **kwargs):
            before = ops.kernel_launches()
            try:
                _op(*args, **kwargs)
            except (ValueError, TypeError):
                assert ops.kernel_launches() == before, "a kernel ran before the bad argument was reported"
                raise
            raise AssertionError(
                f"the fused op accepted a bad argument ({ops.kernel_launches() - before} kernel launches)")

        def forbidden(*args, **kwargs):
            raise AssertionError("a kernel ran before the bad argument was reported")

        monkeypatch.setattr(module, op_name, guarded_op)
        monkeypatch.setattr(module, ref_name, forbidden)
    return real


@contextlib.contextmanager
def _real(no_kernel):
    """The real kernels for the duration (e.g. to build a module with state)."""
    guarded = [(module, name, getattr(module, name)) for module, name, _ in no_kernel]
    for module, name, fn in no_kernel:
        setattr(module, name, fn)
    try:
        yield
    finally:
        for module, name, fn in guarded:
            setattr(module, name, fn)


@pytest.fixture
def real_kernels(no_kernel):
    with _real(no_kernel):
        yield


def _check_message(exc, arg, expect):
    """The message names `arg` as a word (unless None) and matches every regex in `expect`."""
    msg = str(exc)
    if arg is not None:
        word = rf"(?<![A-Za-z_]){re.escape(arg)}(?![A-Za-z_])"
        assert re.search(word, msg), f"message does not name {arg!r}: {msg!r}"
    for e in (expect,) if isinstance(expect, str) else expect:
        assert re.search(e, msg, re.IGNORECASE), f"message does not say what was expected ({e!r}): {msg!r}"


def at(i, value):
    """A parameter equal to the good one except element i."""

    def make(t):
        t = t.clone()
        t[i] = value
        return t

    return make


# ------------------------------------------------------------------ the functional forms


def lif_args():
    g = torch.Generator().manual_seed(7)
    return dict(
        input=torch.randn(B, T, N, generator=g) + 0.5,
        v0=torch.randn(B, N, generator=g),
        tau_mem=torch.full((N,), 0.02),
        threshold=torch.full((N,), 0.8),
        bias=torch.full((N,), 0.1),
        dt=1e-3,
    )


def synaptic_args():
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


def ahp_args():
    g = torch.Generator().manual_seed(8)
    return dict(synaptic_args(), h0=-0.1 * torch.rand(B, N, generator=g), w_ahp=torch.full((N,), -0.5),
                tau_ahp=torch.full((N,), 0.02))


def adaptive_args():
    g = torch.Generator().manual_seed(7)
    return dict(lif_args(), b0=torch.rand(N, generator=g), tau_adapt=torch.full((N,), 0.1),
                beta_adapt=torch.full((N,), 1.5))


BASE_ARGS = {"lif": lif_args, "synaptic-rec": synaptic_args, "ahp-rec": ahp_args, "adaptive": adaptive_args}

# (id, argument, replacement (a value, or a function of the good value), exception, message regex
# for "what was expected"). The argument's name must appear in the message as a word.
LIF_TABLE = [
    # input: wrong type, dtype, rank
    ("input-list", "input", lambda x: x.tolist(), TypeError, "torch.Tensor"),
    ("input-int32", "input", lambda x: x.to(torch.int32), TypeError, "float"),
    ("input-int64", "input", lambda x: x.to(torch.int64), TypeError, "float"),
    ("input-bool", "input", lambda x: x > 0, TypeError, "float"),
    ("input-complex", "input", lambda x: x.to(torch.complex64), TypeError, "float"),
    ("input-rank1", "input", lambda x: x.reshape(-1), ValueError, r"\(B, ?T, ?N\)"),
    ("input-rank2", "input", lambda x: x[0], ValueError, r"\(B, ?T, ?N\)"),
    ("input-rank4", "input", lambda x: x[None], ValueError, r"\(B, ?T, ?N\)"),
    # v0: dtype, shape (last dimension, batch, rank), device
    ("v0-int", "v0", lambda v: v.to(torch.int32), TypeError, "float"),
    ("v0-bool", "v0", lambda v: v > 0, TypeError, "float"),
    ("v0-complex", "v0", lambda v: v.to(torch.complex64), TypeError, "float"),
    ("v0-last-dim", "v0", lambda v: torch.zeros(B, N + 1), ValueError, "shape"),
    ("v0-batch", "v0", lambda v: torch.zeros(B + 1, N), ValueError, "shape"),
    ("v0-rank3", "v0", lambda v: torch.zeros(1, B, N), ValueError, "shape"),
    ("v0-device", "v0", lambda v: v.to(META), ValueError, "device"),
    # tau_mem: <= 0, non-finite, shape, dtype, device
    ("tau-zero", "tau_mem", lambda p: torch.zeros(N), ValueError, "> 0"),
    ("tau-negative-one", "tau_mem", at(2, -0.01), ValueError, "> 0"),
    ("tau-negative-scalar", "tau_mem", lambda p: torch.tensor(-0.02), ValueError, "> 0"),
    ("tau-nan", "tau_mem", at(0, math.nan), ValueError, "finite"),
    ("tau-inf", "tau_mem", at(1, math.inf), ValueError, "finite"),
    ("tau-neg-inf", "tau_mem", at(3, -math.inf), ValueError, "finite"),
    ("tau-shape", "tau_mem", lambda p: torch.full((N + 1,), 0.02), ValueError, "shape"),
    ("tau-rank2", "tau_mem", lambda p: torch.full((1, N), 0.02), ValueError, "shape"),
    ("tau-int", "tau_mem", lambda p: torch.ones(N, dtype=torch.int64), TypeError, "float"),
    ("tau-bool", "tau_mem", lambda p: torch.ones(N, dtype=torch.bool), TypeError, "float"),
    ("tau-complex", "tau_mem", lambda p: p.to(torch.complex64), TypeError, "float"),
    ("tau-number", "tau_mem", 0.02, TypeError, "torch.Tensor"),
    ("tau-device", "tau_mem", lambda p: p.to(META), ValueError, "device"),
    # threshold
    ("thr-zero", "threshold", at(0, 0.0), ValueError, "> 0"),
    ("thr-negative", "threshold", lambda p: -p, ValueError, "> 0"),
    ("thr-nan", "threshold", at(1, math.nan), ValueError, "finite"),
    ("thr-inf", "threshold", at(2, math.inf), ValueError, "finite"),
    ("thr-shape", "threshold", lambda p: torch.ones(N - 1), ValueError, "shape"),
    ("thr-int", "threshold", lambda p: torch.ones(N, dtype=torch.int32), TypeError, "float"),
    ("thr-device", "threshold", lambda p: p.to(META), ValueError, "device"),
    # bias (any finite value is fine)
    ("bias-nan", "bias", at(0, math.nan), ValueError, "finite"),
    ("bias-inf", "bias", at(3, math.inf), ValueError, "finite"),
    ("bias-neg-inf", "bias", lambda p: torch.tensor(-math.inf), ValueError, "finite"),
    ("bias-shape", "bias", lambda p: torch.zeros(N, 1), ValueError, "shape"),
    ("bias-int", "bias", lambda p: torch.zeros(N, dtype=torch.int64), TypeError, "float"),
    ("bias-device", "bias", lambda p: p.to(META), ValueError, "device"),
    # noise tensor
    ("noise-shape", "noise", torch.zeros(B, T, N + 1), ValueError, "shape"),
    ("noise-rank", "noise", torch.zeros(T, N), ValueError, "shape"),
    ("noise-int", "noise", torch.zeros(B, T, N, dtype=torch.int32), TypeError, "float"),
    ("noise-complex", "noise", torch.zeros(B, T, N, dtype=torch.complex64), TypeError, "float"),
    ("noise-device", "noise", torch.zeros(B, T, N, device=META), ValueError, "device"),
    # dt
    ("dt-zero", "dt", 0.0, ValueError, "> 0"),
    ("dt-negative", "dt", -1e-3, ValueError, "> 0"),
    ("dt-nan", "dt", math.nan, ValueError, "finite"),
    ("dt-inf", "dt", math.inf, ValueError, "finite"),
    ("dt-str", "dt", "1ms", TypeError, "real number"),
    ("dt-none", "dt", None, TypeError, "real number"),
    ("dt-bool", "dt", True, TypeError, "real number"),
    ("dt-complex", "dt", 1e-3 + 0j, TypeError, "real number"),
    ("dt-tensor-2", "dt", torch.tensor([1e-3, 2e-3]), ValueError, "scalar"),
    ("dt-tensor-zero", "dt", torch.tensor(0.0), ValueError, "> 0"),
    # learning_window
    ("window-negative", "learning_window", -0.1, ValueError, ">= 0"),
    ("window-nan", "learning_window", math.nan, ValueError, "finite"),
    ("window-inf", "learning_window", math.inf, ValueError, "finite"),
    ("window-str", "learning_window", "0.5", TypeError, "real number"),
    # max_spikes_per_dt
    ("maxspk-zero", "max_spikes_per_dt", 0, ValueError, ">= 1"),
    ("maxspk-half", "max_spikes_per_dt", 0.5, ValueError, ">= 1"),
    ("maxspk-negative", "max_spikes_per_dt", -3.0, ValueError, ">= 1"),
    ("maxspk-nan", "max_spikes_per_dt", math.nan, ValueError, "finite"),
    ("maxspk-neg-inf", "max_spikes_per_dt", -math.inf, ValueError, "finite"),
    ("maxspk-bool", "max_spikes_per_dt", True, TypeError, "real number"),
    ("maxspk-str", "max_spikes_per_dt", "many", TypeError, "real number"),
    # noise_std (in-kernel noise), and both noise sources at once
    ("noise-std-negative", "noise_std", -0.1, ValueError, ">= 0"),
    ("noise-std-nan", "noise_std", math.nan, ValueError, "finite"),
    # lengths (SPEC §8): B integers in [0, T], on the input's device (or the CPU)
    ("lengths-shape", "lengths", torch.tensor([1, 2, 3]), ValueError, "shape"),
    ("lengths-rank2", "lengths", torch.ones(B, 1, dtype=torch.int64), ValueError, "shape"),
    ("lengths-scalar", "lengths", torch.tensor(2), ValueError, "shape"),
    ("lengths-list-short", "lengths", [1], ValueError, "shape"),
    ("lengths-negative", "lengths", torch.tensor([1, -1]), ValueError, r"\[0, T\]"),
    ("lengths-beyond-T", "lengths", torch.tensor([T + 1, 0]), ValueError, r"\[0, T\]"),
    ("lengths-list-beyond-T", "lengths", [0, T + 1], ValueError, r"\[0, T\]"),
    ("lengths-int32-negative", "lengths", torch.tensor([-2, 1], dtype=torch.int32), ValueError, r"\[0, T\]"),
    ("lengths-float", "lengths", torch.tensor([1.0, 2.0]), TypeError, "integer"),
    ("lengths-float-list", "lengths", [1.5, 2], TypeError, "integer"),
    ("lengths-bool", "lengths", torch.tensor([True, False]), TypeError, "integer"),
    ("lengths-complex", "lengths", torch.tensor([1, 2], dtype=torch.complex64), TypeError, "integer"),
    ("lengths-str", "lengths", "3", TypeError, "integer"),
    ("lengths-device", "lengths", torch.tensor([1, 2], device=META), ValueError, "device"),
    # spike function and backend
    ("spikefn-none", "spike_generation_fn", None, TypeError, "autograd.Function"),
    ("spikefn-str", "spike_generation_fn", "StepPWL", TypeError, "autograd.Function"),
    ("spikefn-function", "spike_generation_fn", lambda u, thr, w, m: u >= thr, TypeError, "autograd.Function"),
    ("backend-unknown", "backend", "cuda", ValueError, "one of"),
    ("backend-none", "backend", None, ValueError, "one of"),
]

SYNAPTIC_TABLE = [
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
    ("noise-shape", "noise", torch.zeros(B, T, N * S), ValueError, "shape"),
    ("dt-zero", "dt", 0.0, ValueError, "> 0"),
    ("dt-nan", "dt", math.nan, ValueError, "finite"),
    ("window-negative", "learning_window", -0.1, ValueError, ">= 0"),
    ("max-spikes-zero", "max_spikes_per_dt", 0.5, ValueError, ">= 1"),
    # Per-row lengths (SPEC §8), not among the base arguments.
    ("lengths-negative", "lengths", [2, -1], ValueError, r"\[0, T\]"),
    ("lengths-beyond-T", "lengths", torch.tensor([0, T + 1]), ValueError, r"\[0, T\] = \[0, 3\]"),
    ("lengths-shape", "lengths", torch.tensor([1, 2, 3]), ValueError, "shape"),
    ("lengths-rank2", "lengths", torch.tensor([[1, 2]]), ValueError, "shape"),
    ("lengths-float", "lengths", torch.tensor([1.0, 2.0]), TypeError, "integer"),
    ("lengths-bool", "lengths", torch.tensor([True, False]), TypeError, "integer"),
    ("lengths-not-a-list", "lengths", 3, TypeError, "integer"),
    ("lengths-device", "lengths", torch.tensor([1, 2], device=META), ValueError, "device"),
]

# The AHP current's arguments (SPEC §9), beside the synaptic ones.
AHP_TABLE = [
    ("h0-shape", "h0", lambda t: torch.zeros(N + 1), ValueError, "shape"),
    ("h0-batch", "h0", lambda t: torch.zeros(B + 1, N), ValueError, "shape"),
    ("h0-int", "h0", lambda t: t.to(torch.int64), TypeError, "float"),
    ("h0-device", "h0", lambda t: t.to(META), ValueError, "device"),
    ("w_ahp-shape", "w_ahp", lambda t: torch.zeros(N + 1), ValueError, "shape"),
    ("w_ahp-nan", "w_ahp", at(1, math.nan), ValueError, "finite"),
    ("w_ahp-inf", "w_ahp", lambda t: torch.tensor(math.inf), ValueError, "finite"),
    ("tau_ahp-zero", "tau_ahp", lambda t: torch.zeros(N), ValueError, "> 0"),
    ("tau_ahp-negative-scalar", "tau_ahp", lambda t: torch.tensor(-0.01), ValueError, "> 0"),
    ("tau_ahp-nan", "tau_ahp", at(2, math.nan), ValueError, "finite"),
    ("tau_ahp-shape", "tau_ahp", lambda t: torch.full((1, N), 0.02), ValueError, "shape"),
    ("tau_ahp-complex", "tau_ahp", lambda t: t.to(torch.complex64), TypeError, "float"),
]

# The adaptive model's own arguments (SPEC §10); every LIF row holds for it too.
ADAPTIVE_TABLE = [
    ("b0-shape", "b0", lambda t: torch.zeros(B, N + 1), ValueError, "shape"),
    ("b0-batch", "b0", lambda t: torch.zeros(B + 1, N), ValueError, "shape"),
    ("b0-int", "b0", lambda t: t.to(torch.int64), TypeError, "float"),
    ("b0-device", "b0", lambda t: t.to(META), ValueError, "device"),
    ("tau_adapt-zero", "tau_adapt", lambda t: torch.zeros(N), ValueError, "> 0"),
    ("tau_adapt-negative-scalar", "tau_adapt", lambda t: torch.tensor(-0.1), ValueError, "> 0"),
    ("tau_adapt-nan", "tau_adapt", at(1, math.nan), ValueError, "finite"),
    ("tau_adapt-shape", "tau_adapt", lambda t: torch.full((N + 1,), 0.1), ValueError, "shape"),
    ("tau_adapt-int", "tau_adapt", lambda t: torch.ones(N, dtype=torch.int64), TypeError, "float"),
    ("tau_adapt-device", "tau_adapt", lambda t: t.to(META), ValueError, "device"),
    ("beta_adapt-inf", "beta_adapt", at(3, math.inf), ValueError, "finite"),
    ("beta_adapt-nan", "beta_adapt", at(0, math.nan), ValueError, "finite"),
    ("beta_adapt-shape", "beta_adapt", lambda t: torch.ones(1, N), ValueError, "shape"),
    ("beta_adapt-complex", "beta_adapt", lambda t: t.to(torch.complex64), TypeError, "float"),
]

FUNCTIONAL_ROWS = [("lif", r) for r in LIF_TABLE] + [("synaptic-rec", r) for r in SYNAPTIC_TABLE] + [
    ("ahp-rec", r) for r in SYNAPTIC_TABLE + AHP_TABLE] + [("adaptive", r) for r in LIF_TABLE + ADAPTIVE_TABLE]


def _apply(args, arg, replacement):
    args = dict(args)
    args[arg] = replacement(args[arg]) if callable(replacement) and arg in args else replacement
    return args


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model,row", FUNCTIONAL_ROWS, indirect=["model"],
                         ids=[f"{m.split('-')[0]}-{r[0]}" for m, r in FUNCTIONAL_ROWS])
def test_functional_rejects(model, row, backend):
    case_id, arg, replacement, exc_type, expect = row
    args = _apply(BASE_ARGS[model.name](), arg, replacement)
    args.setdefault("backend", backend)
    before = {k: bits(v) for k, v in args.items() if isinstance(v, torch.Tensor) and v.device.type == "cpu"}
    with pytest.raises(exc_type) as info:
        model.evolve_fn(**args, record=True)
    _check_message(info.value, arg, expect)
    for k, b in before.items():  # nothing the caller gave is touched
        assert torch.equal(bits(args[k]), b), f"{k} was modified by a failed call"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", ["lif", "synaptic-rec", "adaptive"], indirect=True)
def test_functional_rejects_two_noise_sources(model, backend):
    args = BASE_ARGS[model.name]()
    with pytest.raises(ValueError) as info:
        model.evolve_fn(**args, noise=torch.zeros(B, T, N), noise_std=0.1, backend=backend)
    _check_message(info.value, "noise_std", ("noise", "not both"))


# --------------------------------------------------------------- the synaptic op's own checks


def _synaptic_forward(a, record=True, grad=False, lengths=None):
    return torch.ops.lif_cuda.synaptic_forward(a["input"], a["v0"], a["i0"], a["s0"], a["tau_mem"], a["tau_syn"],
                                               a["threshold"], a["bias"], a["w_rec"], None, None, 1e-3, 0.0, 0.5,
                                               2.0**16, 0, record, grad, lengths)


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
def test_synaptic_op_checks_its_arguments_before_any_kernel(row):
    """The op's own C++ checks (the functional API and the modules check first, but the op is public)."""
    name, change, exc, expected = row
    a = synaptic_args()
    change(a)
    before = ops.kernel_launches()
    with pytest.raises(exc, match=expected):
        _synaptic_forward(a, lengths=a.get("lengths"))
    assert ops.kernel_launches() == before


@pytest.mark.parametrize("change,exc,expected", [
    (dict(h0=None), ValueError, "go together"),
    (dict(w_ahp=None), ValueError, "go together"),
    (dict(h0=torch.zeros(B, N + 1)), ValueError, "h0 must have shape"),
    (dict(tau_ahp=torch.full((N,), -0.01)), ValueError, "tau_ahp must be finite and > 0"),
    (dict(w_ahp=torch.full((N,), -0.5, dtype=torch.float64)), TypeError, "w_ahp must have dtype"),
], ids=["no-h0", "no-w_ahp", "h0-shape", "tau_ahp-negative", "w_ahp-dtype"])
def test_synaptic_op_checks_its_ahp_arguments_before_any_kernel(change, exc, expected):
    """SPEC §9, §6: the op's C++ checks of w_ahp, tau_ahp and h0 (all three or none)."""
    a = dict(ahp_args(), **change)
    before = ops.kernel_launches()
    with pytest.raises(exc, match=expected):
        torch.ops.lif_cuda.synaptic_forward(a["input"], a["v0"], a["i0"], a["s0"], a["tau_mem"], a["tau_syn"],
                                            a["threshold"], a["bias"], a["w_rec"], None, None, 1e-3, 0.0, 0.5,
                                            2.0**16, 0, True, False, None, a["w_ahp"], a["tau_ahp"], a["h0"])
    assert ops.kernel_launches() == before


@pytest.mark.parametrize("op,surrogate,max_spikes,flags,expected", [
    ("synaptic", 1, 2.0**16, dict(save_mask=True), "save_mask: the window mask serves the StepPWL surrogate only"),
    ("lif", 1, 2.0**16, dict(save_mask=True), "save_mask: the window mask serves the StepPWL surrogate only"),
    ("synaptic", 0, 3.0, dict(save_counts=True), "save_counts: .* save_mask must be set too"),
    ("synaptic", 0, 300.0, dict(save_mask=True, save_counts=True), "whole number <= 255, got 300"),
    ("synaptic", 0, 2.5, dict(save_mask=True, save_counts=True), "whole number <= 255, got 2.5"),
], ids=["syn-mask-periodic", "lif-mask-periodic", "counts-without-mask", "counts-above-255", "counts-not-whole"])
def test_forward_ops_check_their_saving_flags_before_any_kernel(op, surrogate, max_spikes, flags, expected):
    """SPEC §11, §6: the saving flags the autograd kernels set, checked by the public ops themselves: the
    window mask only for StepPWL, uint8 spike counts only beside it and only for whole counts up to 255."""
    before = ops.kernel_launches()
    with pytest.raises(ValueError, match=expected):
        if op == "lif":
            a = lif_args()
            torch.ops.lif_cuda.lif_forward(a["input"], a["v0"], a["tau_mem"], a["threshold"], a["bias"], None, None,
                                           1e-3, 0.0, 0.5, max_spikes, surrogate, False, True, None, **flags)
        else:
            a = synaptic_args()
            torch.ops.lif_cuda.synaptic_forward(a["input"], a["v0"], a["i0"], a["s0"], a["tau_mem"], a["tau_syn"],
                                                a["threshold"], a["bias"], a["w_rec"], None, None, 1e-3, 0.0, 0.5,
                                                max_spikes, surrogate, False, True, None, **flags)
    assert ops.kernel_launches() == before


def test_synaptic_backward_op_checks_its_ahp_arguments_before_any_kernel():
    a = ahp_args()
    out = torch.ops.lif_cuda.synaptic_forward(a["input"], a["v0"], a["i0"], a["s0"], a["tau_mem"], a["tau_syn"],
                                              a["threshold"], a["bias"], a["w_rec"], None, None, 1e-3, 0.0, 0.5,
                                              2.0**16, 0, False, True, None, a["w_ahp"], a["tau_ahp"], a["h0"])
    h_pre = out[13]
    for change, expected in ((dict(w_ahp=None), "go together"), (dict(h_pre=h_pre[:, :-1]), "h_pre must have shape"),
                             (dict(grad_iahp=torch.zeros(B, T, N + 1)), "grad_iahp must have shape"),
                             (dict(grad_hfinal=torch.zeros(B + 1, N)), "grad_hfinal must have shape")):
        k = {**dict(grad_iahp=None, grad_hfinal=None, h_pre=h_pre, w_ahp=a["w_ahp"], tau_ahp=a["tau_ahp"]), **change}
        before = ops.kernel_launches()
        with pytest.raises(ValueError, match=expected):
            torch.ops.lif_cuda.synaptic_backward(torch.ones(B, T, N), None, None, None, None, None, out[7], out[8],
                                                 a["v0"], a["s0"], a["tau_mem"], a["tau_syn"], a["threshold"],
                                                 a["w_rec"], 1e-3, 0.5, 2.0**16, 0, False, True, False, None,
                                                 k["grad_iahp"], k["grad_hfinal"], k["h_pre"], k["w_ahp"],
                                                 k["tau_ahp"], False)
        assert ops.kernel_launches() == before


def _synaptic_backward(args, out, lengths=None, **change):
    a = args
    args = dict(grad_spikes=torch.ones(B, T, N), u=out[7], i_pre=out[8], v0=a["v0"], s0=a["s0"], tau_mem=a["tau_mem"],
                tau_syn=a["tau_syn"], threshold=a["threshold"], w_rec=a["w_rec"])
    args.update(change)
    return torch.ops.lif_cuda.synaptic_backward(args["grad_spikes"], None, None, None, None, None, args["u"],
                                                args["i_pre"], args["v0"], args["s0"], args["tau_mem"], args["tau_syn"],
                                                args["threshold"], args["w_rec"], 1e-3, 0.5, 2.0**16, 0, False, True,
                                                False, lengths)


@pytest.mark.parametrize("lengths,exc,expected", [
    (torch.tensor([0, T + 1]), ValueError, r"lengths must be in \[0, T\]"),
    (torch.tensor([1]), ValueError, r"lengths must have shape \(2,\)"),
    (torch.tensor([1.0, 2.0]), TypeError, "lengths must be an int64"),
], ids=["beyond-T", "shape", "float"])
def test_synaptic_backward_op_checks_lengths_before_any_kernel(lengths, exc, expected):
    a = synaptic_args()
    out = _synaptic_forward(a, record=False, grad=True)
    before = ops.kernel_launches()
    with pytest.raises(exc, match=expected):
        _synaptic_backward(a, out, lengths)
    assert ops.kernel_launches() == before


ADAPTIVE_BACKWARD_ROWS = [
    # The CPU forward keeps b as checkpoints (core/adaptive.h): one row for T = 3, not every b[t].
    ("b-shape", dict(b=torch.zeros(B, 1, N + 1)), ValueError, r"b must have shape \[2, 1, 4\]"),
    ("b-every-step", dict(b=torch.zeros(B, T, N)), ValueError, r"b must have shape \[2, 1, 4\], got \[2, 3, 4\]"),
    ("b-dtype", dict(b=torch.zeros(B, 1, N, dtype=torch.float64)), TypeError, "b must have dtype"),
    ("b0-shape", dict(b0=torch.zeros(N + 1)), ValueError, r"b0 must have shape \(2, 4\) or \(4,\)"),
    ("grad_adapt-shape", dict(grad_adapt=torch.zeros(B, N)), ValueError, "grad_adapt must have shape"),
    ("grad_bfinal-shape", dict(grad_bfinal=torch.zeros(N)), ValueError, "grad_bfinal must have shape"),
    ("tau_adapt-shape", dict(tau_adapt=torch.full((N + 1,), 0.1)), ValueError, "tau_adapt must have shape"),
    ("beta_adapt-dtype", dict(beta_adapt=torch.ones(N, dtype=torch.float64)), TypeError, "beta_adapt must have dtype"),
    ("lengths-beyond-T", dict(lengths=torch.tensor([0, T + 1])), ValueError, r"lengths must be in \[0, T\]"),
    # A LIF op's window mask (SPEC §11) in place of u: this model needs u itself.
    ("u-window-mask", dict(u=torch.zeros(B, 1, N, dtype=torch.int32)), TypeError, "u must be float32 or float64"),
]


@pytest.mark.parametrize("change,exc,expected", [r[1:] for r in ADAPTIVE_BACKWARD_ROWS],
                         ids=[r[0] for r in ADAPTIVE_BACKWARD_ROWS])
def test_adaptive_backward_op_checks_its_arguments_before_any_kernel(change, exc, expected):
    """The adaptive backward op is public: its own checks name the argument, before any kernel."""
    a = adaptive_args()
    names = ("input", "v0", "b0", "tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt")
    out = torch.ops.lif_cuda.adaptive_forward(*(a[k] for k in names), None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, False,
                                              True, None)
    args = dict(grad_spikes=torch.ones(B, T, N), grad_vmem=None, grad_adapt=None, grad_vfinal=None, grad_bfinal=None,
                u=out[5], b=out[6], v0=out[7], b0=out[8], tau_mem=a["tau_mem"], threshold=a["threshold"],
                tau_adapt=a["tau_adapt"], beta_adapt=a["beta_adapt"], lengths=None)
    args.update(change)
    lengths = args.pop("lengths")
    before = ops.kernel_launches()
    with pytest.raises(exc, match=expected):
        torch.ops.lif_cuda.adaptive_backward(*args.values(), 1e-3, 0.5, 2.0**16, 0, False, lengths)
    assert ops.kernel_launches() == before


def test_adaptive_forward_op_refuses_decays_before_any_kernel():
    """`run` gives every model's forward op `decays`; AdaptiveLIF has no leak modes: decays=True is an
    error naming it, before any kernel (decays=False runs)."""
    a = adaptive_args()
    args = [a[k] for k in ("input", "v0", "b0", "tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt")]
    settings = (None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, False, False, None)
    before = ops.kernel_launches()
    with pytest.raises(ValueError, match=r"\bdecays\b"):
        ops.adaptive_forward_op(*args, *settings, decays=True)
    assert ops.kernel_launches() == before
    assert ops.adaptive_forward_op(*args, *settings, decays=False)[0].shape == (B, T, N)


def test_synaptic_backward_op_rejects_zero_synapses_before_any_kernel():
    """The backward's own shape check of the saved currents: S = 0 with N > 0 is an error naming `a`
    (it once reached the CPU kernel's tile arithmetic, a division by S)."""
    a = synaptic_args()
    out = _synaptic_forward(a, record=False, grad=True)
    before = ops.kernel_launches()
    with pytest.raises(ValueError, match="i_pre must have at least one synapse"):
        _synaptic_backward(a, out, i_pre=torch.zeros(B, T, N, 0), s0=None, tau_syn=torch.tensor(0.005), w_rec=None)
    assert ops.kernel_launches() == before


# --------------------------------------------------------------------------------- the modules

# Constructor arguments that must be refused (nothing is built, so there is no state to protect):
# (id, constructor arguments but the shape, argument named (None: any), exception, expected).
SHARED_CONSTRUCTOR_TABLE = [
    ("tau-negative", dict(tau_mem=-0.02), "tau_mem", ValueError, "> 0"),
    ("tau-zero-one", dict(tau_mem=[0.02, 0.0, 0.02, 0.02]), "tau_mem", ValueError, "> 0"),
    ("tau-nan", dict(tau_mem=math.nan), "tau_mem", ValueError, "finite"),
    ("tau-shape", dict(tau_mem=[0.02, 0.02]), "tau_mem", ValueError, "shape"),
    ("tau-str", dict(tau_mem="fast"), "tau_mem", TypeError, "real number"),
    ("tau-complex", dict(tau_mem=torch.ones(N, dtype=torch.complex64)), "tau_mem", TypeError, "real number"),
    ("thr-zero", dict(threshold=0.0), "threshold", ValueError, "> 0"),
    ("thr-inf", dict(threshold=math.inf), "threshold", ValueError, "finite"),
    ("bias-nan", dict(bias=math.nan), "bias", ValueError, "finite"),
    ("bias-shape", dict(bias=torch.zeros(N + 1)), "bias", ValueError, "shape"),
    ("dt-zero", dict(dt=0.0), "dt", ValueError, "> 0"),
    ("dt-nan", dict(dt=math.nan), "dt", ValueError, "finite"),
    ("dt-str", dict(dt="1ms"), "dt", TypeError, "real number"),
    ("dt-none", dict(dt=None), "dt", TypeError, "real number"),
    ("noise-std-negative", dict(noise_std=-1.0), "noise_std", ValueError, ">= 0"),
    ("window-negative", dict(learning_window=-0.5), "learning_window", ValueError, ">= 0"),
    ("window-none", dict(learning_window=None), "learning_window", TypeError, "real number"),
    ("maxspk-zero", dict(max_spikes_per_dt=0), "max_spikes_per_dt", ValueError, ">= 1"),
    ("maxspk-nan", dict(max_spikes_per_dt=math.nan), "max_spikes_per_dt", ValueError, "finite"),
    ("spikefn-none", dict(spike_generation_fn=None), "spike_generation_fn", TypeError, "autograd.Function"),
    ("backend-unknown", dict(backend="gpu"), "backend", ValueError, "'auto'"),
    ("noise-unknown", dict(noise="philox"), "noise", ValueError, "'kernel'"),
    ("batch-state-str", dict(batch_state="yes"), "batch_state", TypeError, "batch_state"),
]
SHAPE = {"lif": N, "synaptic": (N * S, N), "ahp": (N * S, N), "adaptive": N}
# (id, model, constructor arguments, argument named, exception, expected)
CONSTRUCTOR_TABLE = [(f"{m}-{r[0]}", m, dict(shape=SHAPE[m], **r[1]), *r[2:])
                     for m in SHAPE for r in SHARED_CONSTRUCTOR_TABLE] + [
    ("lif-shape-2d", "lif", dict(shape=(3, 4)), "shape", ValueError, "one dimension"),
    ("lif-shape-negative", "lif", dict(shape=-1), "shape", ValueError, "non-negative"),
    ("lif-shape-fraction", "lif", dict(shape=2.5), "shape", ValueError, "whole number"),
    ("lif-shape-none", "lif", dict(shape=None), "shape", ValueError, "must be given"),
    ("synaptic-w_rec-without-has_rec", "synaptic", dict(shape=(N * S, N), w_rec=torch.zeros(N, N * S)), "w_rec",
     ValueError, "w_rec may not be provided if has_rec is False"),
    ("synaptic-w_rec-shape", "synaptic", dict(shape=(N * S, N), has_rec=True, w_rec=torch.zeros(N, N)), "w_rec",
     ValueError, r"w_rec must have shape \(N, N\*S\) = \(4, 8\)"),
    ("synaptic-tau_syn-shape", "synaptic", dict(shape=(N * S, N), tau_syn=torch.full((N,), 0.01)), "tau_syn",
     ValueError, "tau_syn must have shape"),
    ("synaptic-tau_syn-negative", "synaptic", dict(shape=(N * S, N), tau_syn=-0.01), "tau_syn", ValueError,
     "tau_syn must be finite and > 0"),
    ("synaptic-shape-not-a-multiple", "synaptic", dict(shape=(N * S + 1, N)), "shape", ValueError, "multiple"),
    ("synaptic-shape-3d", "synaptic", dict(shape=(2, 3, 4)), "shape", ValueError, "shape"),
    ("synaptic-has_rec-str", "synaptic", dict(shape=(N * S, N), has_rec="yes"), "has_rec", TypeError, "has_rec"),
    ("synaptic-noise-unknown", "synaptic", dict(shape=(N * S, N), noise="numpy"), "noise", ValueError, "noise"),
    ("synaptic-backend-unknown", "synaptic", dict(shape=(N * S, N), backend="gpu"), "backend", ValueError, "backend"),
    ("ahp-w_ahp-shape", "ahp", dict(shape=(N * S, N), w_ahp=[-0.5] * (N + 1)), "w_ahp", ValueError, "shape"),
    ("ahp-w_ahp-nan", "ahp", dict(shape=(N * S, N), w_ahp=math.nan), "w_ahp", ValueError, "finite"),
    ("ahp-tau_ahp-negative", "ahp", dict(shape=(N * S, N), tau_ahp=-0.01), "tau_ahp", ValueError, "> 0"),
    ("ahp-tau_ahp-str", "ahp", dict(shape=(N * S, N), tau_ahp="slow"), "tau_ahp", TypeError, "real number"),
    ("adaptive-tau_adapt-negative", "adaptive", dict(shape=N, tau_adapt=-0.1), "tau_adapt", ValueError, "> 0"),
    ("adaptive-tau_adapt-shape", "adaptive", dict(shape=N, tau_adapt=[0.1, 0.2]), "tau_adapt", ValueError, "shape"),
    ("adaptive-beta_adapt-nan", "adaptive", dict(shape=N, beta_adapt=math.nan), "beta_adapt", ValueError, "finite"),
    ("adaptive-beta_adapt-str", "adaptive", dict(shape=N, beta_adapt="big"), "beta_adapt", TypeError, "real number"),
    ("adaptive-shape-2d", "adaptive", dict(shape=(3, 4)), "shape", ValueError, "one dimension"),
]
MODULE_CLASS = {"lif": lif_cuda.LIFNeuron, "synaptic": lif_cuda.SynapticLIF, "ahp": lif_cuda.AHPSynapticLIF,
                "adaptive": lif_cuda.AdaptiveLIF}


@pytest.mark.parametrize("case_id,model,kwargs,arg,exc_type,expect", CONSTRUCTOR_TABLE,
                         ids=[r[0] for r in CONSTRUCTOR_TABLE])
def test_constructor_rejects(case_id, model, kwargs, arg, exc_type, expect):
    with pytest.raises(exc_type) as info:
        MODULE_CLASS[model](**kwargs)
    _check_message(info.value, arg, expect)


def good_x(model, batch=B):
    return model.input(batch, T, N, seed=11)


def _trained_module(model, backend, **kw):
    """A module with non-trivial state: non-default parameters, a non-zero state, and gradients."""
    m = model.layer(N, backend=backend, **kw)
    m(model.input(B, 5, N, seed=3)).sum().backward()
    assert m.vmem.abs().sum() > 0 and m.tau_mem.grad is not None
    return m


def _snapshot(m):
    snap = {f"state.{k}": bits(v) for k, v in m.state_dict().items()}
    snap.update({f"grad.{k}": bits(p.grad) for k, p in m.named_parameters() if p.grad is not None})
    snap["config"] = (m.dt, m.noise_std, m.learning_window, m.max_spikes_per_dt, m.backend, m.noise)
    return snap


def _assert_unchanged(m, snap, restore):
    restore(m)
    now = _snapshot(m)
    assert now.keys() == snap.keys()
    for k in snap:
        if isinstance(snap[k], torch.Tensor):
            assert torch.equal(now[k], snap[k]), f"module {k} changed by a failed call"
        else:
            assert now[k] == snap[k], f"module {k} changed by a failed call"


# Each "corruption" takes the model and the module and returns (input to call it with, a function
# that puts back what the corruption itself changed).


def _set_param(name, make):
    """Overwrite a parameter's values in place (as an optimiser step gone wrong would)."""

    def corrupt(model, m):
        p = getattr(m, name)
        saved = p.detach().clone()
        with torch.no_grad():
            p.copy_(make(p.detach()))

        def restore(m):
            with torch.no_grad():
                getattr(m, name).copy_(saved)

        return good_x(model), restore

    return corrupt


def _set_attr(name, value):
    def corrupt(model, m):
        old = getattr(m, name)
        setattr(m, name, value(m) if callable(value) else value)
        return good_x(model), lambda m: setattr(m, name, old)

    return corrupt


def _input(make):
    return lambda model, m: (make(model), lambda m: None)


# Bad calls on a built module: a bad input, or an attribute/parameter made bad after construction.
# (id, what goes wrong, argument named, exception, expected). The module must be bit-identical after
# (the corrupted attribute itself is put back before comparing, everything else must be untouched).
MODULE_TABLE = [
    ("input-int", _input(lambda md: good_x(md).to(torch.int64)), "input", TypeError, "float"),
    ("input-bool", _input(lambda md: good_x(md) > 0), "input", TypeError, "float"),
    ("input-complex", _input(lambda md: good_x(md).to(torch.complex64)), "input", TypeError, "float"),
    ("input-list", _input(lambda md: good_x(md).tolist()), "input", TypeError, "torch.Tensor"),
    ("input-rank1", _input(lambda md: torch.randn(N)), "input", ValueError, "shape"),
    ("input-rank4", _input(lambda md: torch.randn(1, B, T, md.n_in(N))), "input", ValueError, "shape"),
    ("input-last-dim", _input(lambda md: torch.randn(B, T, md.n_in(N) + 1)), "input", ValueError, "last dimension"),
    ("input-last-dim-2", _input(lambda md: torch.rand(B, T, md.n_in(N) + 2)), "input", ValueError, "last dimension"),
    ("input-last-dim-2d", _input(lambda md: torch.randn(T, md.n_in(N) - 1)), "input", ValueError, "last dimension"),
    ("input-device", _input(lambda md: good_x(md).to(META)), "tau_mem", ValueError, "device"),
    ("tau-negative", _set_param("tau_mem", lambda p: -p), "tau_mem", ValueError, "> 0"),
    ("tau-zero-one", _set_param("tau_mem", at(1, 0.0)), "tau_mem", ValueError, "> 0"),
    ("tau-nan", _set_param("tau_mem", at(2, math.nan)), "tau_mem", ValueError, "finite"),
    ("thr-zero", _set_param("threshold", at(0, 0.0)), "threshold", ValueError, "> 0"),
    ("thr-inf", _set_param("threshold", at(3, math.inf)), "threshold", ValueError, "finite"),
    ("bias-nan", _set_param("bias", at(1, math.nan)), "bias", ValueError, "finite"),
    ("bias-inf", _set_param("bias", at(0, -math.inf)), "bias", ValueError, "finite"),
    ("dt-zero", _set_attr("dt", 0.0), "dt", ValueError, "> 0"),
    ("dt-nan", _set_attr("dt", math.nan), "dt", ValueError, "finite"),
    ("window-negative", _set_attr("learning_window", -1.0), "learning_window", ValueError, ">= 0"),
    ("maxspk-zero", _set_attr("max_spikes_per_dt", 0.0), "max_spikes_per_dt", ValueError, ">= 1"),
    ("noise-std-negative", _set_attr("noise_std", -0.5), "noise_std", ValueError, ">= 0"),
    ("spikefn-none", _set_attr("spike_generation_fn", None), "spike_generation_fn", TypeError, "autograd.Function"),
    ("backend-unknown", _set_attr("backend", "tpu"), "backend", ValueError, "one of"),
]
SYNAPTIC_MODULE_TABLE = [
    ("tau_syn-negative", _set_param("tau_syn", at((1, 0), -0.01)), "tau_syn", ValueError, "> 0"),
    ("tau_syn-nan", _set_param("tau_syn", at((0, 1), math.nan)), "tau_syn", ValueError, "finite"),
]
RECURRENT_MODULE_TABLE = [
    ("w_rec-shape", _set_attr("w_rec", lambda m: torch.nn.Parameter(torch.zeros(N, N))), "w_rec", ValueError,
     "shape"),
]
AHP_MODULE_TABLE = [
    ("tau_ahp-negative", _set_param("tau_ahp", at(1, -0.01)), "tau_ahp", ValueError, "> 0"),
    ("w_ahp-nan", _set_param("w_ahp", at(0, math.nan)), "w_ahp", ValueError, "finite"),
]
ADAPTIVE_MODULE_TABLE = [
    ("tau_adapt-zero", _set_param("tau_adapt", at(2, 0.0)), "tau_adapt", ValueError, "> 0"),
    ("beta_adapt-inf", _set_param("beta_adapt", at(1, math.inf)), "beta_adapt", ValueError, "finite"),
]
MODULE_ROWS = [(m, r) for m in MODELS for r in MODULE_TABLE] + [
    (m, r) for m in ("synaptic-ff", "synaptic-rec", "ahp-ff", "ahp-rec") for r in SYNAPTIC_MODULE_TABLE] + [
    (m, r) for m in ("synaptic-rec", "ahp-rec") for r in RECURRENT_MODULE_TABLE] + [
    (m, r) for m in ("ahp-ff", "ahp-rec") for r in AHP_MODULE_TABLE] + [("adaptive", r) for r in ADAPTIVE_MODULE_TABLE]


@pytest.mark.parametrize("method", ["forward", "evolve"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model,row", MODULE_ROWS, indirect=["model"], ids=[f"{m}-{r[0]}" for m, r in MODULE_ROWS])
def test_module_rejects_and_keeps_state(model, row, backend, method, no_kernel):
    case_id, corrupt, arg, exc_type, expect = row
    with _real(no_kernel):
        m = _trained_module(model, backend)
    snap = _snapshot(m)
    x, restore = corrupt(model, m)
    with pytest.raises(exc_type) as info:
        if method == "forward":
            m(x)
        else:
            m.evolve(x, record=True)
    _check_message(info.value, arg, expect)
    _assert_unchanged(m, snap, restore)


# Bad lengths given to a built module, and a call of another batch size than the state a
# batch_state=True module keeps (SPEC §8): (id, lengths or None, input batch size, batch_state,
# argument named, exception, expected).
MODULE_LENGTHS_TABLE = [
    ("lengths-negative", [2, -1], B, False, "lengths", ValueError, r"lengths.*\[0, T\]"),
    ("lengths-beyond-T", torch.tensor([0, T + 1]), B, True, "lengths", ValueError, r"lengths.*\[0, T\]"),
    ("lengths-shape", torch.tensor([1, 2, 3]), B, False, "lengths", ValueError, "lengths.*shape"),
    ("lengths-float", torch.tensor([1.0, 2.0]), B, True, "lengths", TypeError, "lengths.*integer"),
    ("lengths-device", torch.tensor([1, 2], device=META), B, False, "lengths", ValueError, "lengths.*device"),
    ("batch-size", None, B + 1, True, "batch size", ValueError, r"batch size 2.*batch size 3.*reset_state\(\)"),
    ("batch-size-with-lengths", [1, 1, 1], B + 1, True, "batch size", ValueError, r"batch size.*reset_state\(\)"),
]


@pytest.mark.parametrize("method", ["forward", "evolve"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id,lengths,batch,batch_state,arg,exc_type,expect", MODULE_LENGTHS_TABLE,
                         ids=[r[0] for r in MODULE_LENGTHS_TABLE])
def test_module_rejects_lengths_and_batch_size(model, case_id, lengths, batch, batch_state, arg, exc_type, expect,
                                               backend, method, no_kernel):
    with _real(no_kernel):
        m = _trained_module(model, backend, batch_state=batch_state)
        m(good_x(model))  # with batch_state, the state is now per row
    snap = _snapshot(m)
    before = ops.kernel_launches()
    x = good_x(model, batch)
    with pytest.raises(exc_type) as info:
        if method == "forward":
            m(x, lengths)
        else:
            m.evolve(x, record=True, lengths=lengths)
    _check_message(info.value, arg, expect)
    assert ops.kernel_launches() == before, "a kernel ran before the error"
    _assert_unchanged(m, snap, lambda m: None)


# ------------------------------------------------------------- zero-sized: not an error

ZERO_SHAPES = [(0, T, N), (B, 0, N), (B, T, 0), (0, 0, 0)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", ZERO_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_lif_zero_sized_gives_empty_outputs(shape, backend, dtype, real_kernels):
    """The LIF op's gradients too. (The synaptic op's empty shapes: tests/test_parity.py.)"""
    b, t, n = shape
    v0 = torch.randn(b, n, dtype=dtype)
    args = dict(
        input=torch.randn(b, t, n, dtype=dtype, requires_grad=True),
        v0=v0.clone().requires_grad_(True),
        tau_mem=torch.full((n,), 0.02, dtype=dtype, requires_grad=True),
        threshold=torch.ones(n, dtype=dtype, requires_grad=True),
        bias=torch.zeros(n, dtype=dtype, requires_grad=True),
        dt=1e-3,
    )
    spikes, vmem, final = lif_cuda.lif_evolve(**args, record=True, backend=backend)
    assert spikes.shape == (b, t, n) and vmem.shape == (b, t, n) and final.shape == (b, n)
    assert spikes.dtype == vmem.dtype == final.dtype == dtype
    assert torch.equal(final, v0), "with nothing to do the final state is v0"
    (spikes.sum() + vmem.sum() + final.sum()).backward()
    for name in ("input", "tau_mem", "threshold", "bias"):
        g = args[name].grad
        assert g is None or (g.shape == args[name].shape and not g.any()), name
    assert args["v0"].grad is None or torch.equal(args["v0"].grad, torch.ones(b, n, dtype=dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, T), (B, 0)], ids=["B0", "T0"])
def test_module_zero_sized_keeps_state(model, shape, backend, real_kernels):
    m = _trained_module(model, backend)
    snap = _snapshot(m)
    before = ops.kernel_launches()
    spikes = m(torch.randn(*shape, model.n_in(N)))
    assert ops.kernel_launches() == before, "nothing to compute: no kernel"
    assert spikes.shape == (*shape, N)
    _assert_unchanged(m, snap, lambda m: None)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")  # w_rec (0, 0)
@pytest.mark.parametrize("backend", BACKENDS)
def test_module_zero_neurons(model, backend, real_kernels):
    if model.name in ("lif", "adaptive"):
        m = {"lif": lif_cuda.LIFNeuron, "adaptive": lif_cuda.AdaptiveLIF}[model.name](0, backend=backend)
    else:
        cls = lif_cuda.AHPSynapticLIF if "iahp" in model.states else lif_cuda.SynapticLIF
        m = cls((0,), has_rec=model.recurrent, backend=backend)
    assert m.n_neurons == 0
    spikes, state, rec = m.evolve(torch.randn(B, T, 0), record=True)
    assert spikes.shape == (B, T, 0) and rec["vmem"].shape == (B, T, 0)
    assert state.keys() == set(model.states) and all(state[k].shape[0] == 0 for k in model.states)
