"""SPEC §6, bad input: a clear error, nothing corrupted.

Every row of the tables below is one bad input. Each must raise ValueError or TypeError (as the row
says) whose message names the argument and says what was expected, before any kernel runs, and
leave everything it was given bit-identical: the functional API's tensors, and a LIFNeuron's
parameters, their gradients and its `vmem` state. Every row runs on both backends ("fused" and
"reference"). Zero-sized B, T or N is not an error: empty outputs, state untouched.
"""
import contextlib
import math
import re

import pytest
import torch

import lif_cuda
import lif_cuda.functional as functional
import lif_cuda.ops as ops
from lif_cuda import LIFNeuron

BACKENDS = ("fused", "reference")
B, T, N = 2, 3, 4


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Tests here seed torch's global generator; leave it as it was for the rest of the suite."""
    with torch.random.fork_rng(devices=[]):
        yield


def bits(t):
    """The exact bytes of a tensor (NaN-safe, -0.0 != 0.0), for "bit-identical" checks."""
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).clone() if t.numel() else t.clone()


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


@pytest.fixture(autouse=True)
def no_kernel(monkeypatch):
    """Any kernel launch inside a bad call is a failure: the checks must come first. The fused op
    checks some arguments itself (parameter values on the CPU), so it is called, but its kernels
    must not run: the extension counts every launch (lif_cuda.ops.kernel_launches). The reference
    loop must not start at all. Tests of valid calls restore the real functions (`real_kernels`)."""
    real = (functional.lif_forward_op, functional.lif_evolve_reference)

    def guarded_op(*args, **kwargs):
        before = ops.kernel_launches()
        try:
            real[0](*args, **kwargs)
        except (ValueError, TypeError):
            assert ops.kernel_launches() == before, "a kernel ran before the bad argument was reported"
            raise
        raise AssertionError(f"the fused op accepted a bad argument ({ops.kernel_launches() - before} kernel launches)")

    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel ran before the bad argument was reported")

    monkeypatch.setattr(functional, "lif_forward_op", guarded_op)
    monkeypatch.setattr(functional, "lif_evolve_reference", forbidden)
    return real


@contextlib.contextmanager
def _real(no_kernel):
    """The real kernels for the duration (e.g. to build a module with state)."""
    forbidden = (functional.lif_forward_op, functional.lif_evolve_reference)
    functional.lif_forward_op, functional.lif_evolve_reference = no_kernel
    try:
        yield
    finally:
        functional.lif_forward_op, functional.lif_evolve_reference = forbidden


@pytest.fixture
def real_kernels(no_kernel):
    with _real(no_kernel):
        yield


def base_args():
    g = torch.Generator().manual_seed(7)
    return dict(
        input=torch.randn(B, T, N, generator=g) + 0.5,
        v0=torch.randn(B, N, generator=g),
        tau_mem=torch.full((N,), 0.02),
        threshold=torch.full((N,), 0.8),
        bias=torch.full((N,), 0.1),
        dt=1e-3,
    )


def at(i, value):
    """A per-neuron parameter equal to the good one except element i."""

    def make(t):
        t = t.clone()
        t[i] = value
        return t

    return make


META = torch.device("meta")  # a second device that exists on every machine

# (id, argument, replacement (a value, or a function of the good value), exception, message regex
# for "what was expected"). The argument's name must appear in the message as a word.
FUNCTIONAL_TABLE = [
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


def _apply(args, arg, replacement):
    args = dict(args)
    args[arg] = replacement(args[arg]) if callable(replacement) and arg in args else replacement
    return args


def _check_message(exc, arg, expect):
    msg = str(exc)
    assert re.search(rf"(?<![A-Za-z_]){re.escape(arg)}(?![A-Za-z_])", msg), f"message does not name {arg!r}: {msg!r}"
    assert re.search(expect, msg, re.IGNORECASE), f"message does not say what was expected ({expect!r}): {msg!r}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "case_id,arg,replacement,exc_type,expect", FUNCTIONAL_TABLE, ids=[r[0] for r in FUNCTIONAL_TABLE]
)
def test_lif_evolve_rejects(case_id, arg, replacement, exc_type, expect, backend):
    args = _apply(base_args(), arg, replacement)
    args.setdefault("backend", backend)
    before = {k: bits(v) for k, v in args.items() if isinstance(v, torch.Tensor) and v.device.type == "cpu"}
    with pytest.raises(exc_type) as info:
        lif_cuda.lif_evolve(**args, record=True)
    _check_message(info.value, arg, expect)
    for k, b in before.items():  # nothing the caller gave is touched
        assert torch.equal(bits(args[k]), b), f"{k} was modified by a failed call"


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_evolve_rejects_two_noise_sources(backend):
    args = base_args()
    with pytest.raises(ValueError) as info:
        lif_cuda.lif_evolve(**args, noise=torch.zeros(B, T, N), noise_std=0.1, backend=backend)
    assert "noise" in str(info.value) and "noise_std" in str(info.value)


# --------------------------------------------------------------------------------- the module

# Constructor arguments that must be refused (nothing is built, so there is no state to protect).
CONSTRUCTOR_TABLE = [
    ("shape-2d", "shape", (3, 4), ValueError, "one dimension"),
    ("shape-negative", "shape", -1, ValueError, "non-negative"),
    ("shape-fraction", "shape", 2.5, ValueError, "whole number"),
    ("shape-none", "shape", None, ValueError, "must be given"),
    ("tau-negative", "tau_mem", -0.02, ValueError, "> 0"),
    ("tau-zero-one", "tau_mem", [0.02, 0.0, 0.02, 0.02], ValueError, "> 0"),
    ("tau-nan", "tau_mem", math.nan, ValueError, "finite"),
    ("tau-shape", "tau_mem", [0.02, 0.02], ValueError, "shape"),
    ("tau-str", "tau_mem", "fast", TypeError, "real number"),
    ("tau-complex", "tau_mem", torch.ones(N, dtype=torch.complex64), TypeError, "real number"),
    ("thr-zero", "threshold", 0.0, ValueError, "> 0"),
    ("thr-inf", "threshold", math.inf, ValueError, "finite"),
    ("bias-nan", "bias", math.nan, ValueError, "finite"),
    ("bias-shape", "bias", torch.zeros(N + 1), ValueError, "shape"),
    ("dt-zero", "dt", 0.0, ValueError, "> 0"),
    ("dt-nan", "dt", math.nan, ValueError, "finite"),
    ("dt-str", "dt", "1ms", TypeError, "real number"),
    ("dt-none", "dt", None, TypeError, "real number"),
    ("noise-std-negative", "noise_std", -1.0, ValueError, ">= 0"),
    ("window-negative", "learning_window", -0.5, ValueError, ">= 0"),
    ("window-none", "learning_window", None, TypeError, "real number"),
    ("maxspk-zero", "max_spikes_per_dt", 0, ValueError, ">= 1"),
    ("maxspk-nan", "max_spikes_per_dt", math.nan, ValueError, "finite"),
    ("spikefn-none", "spike_generation_fn", None, TypeError, "autograd.Function"),
    ("backend-unknown", "backend", "gpu", ValueError, "'auto'"),
    ("noise-unknown", "noise", "philox", ValueError, "'kernel'"),
]


@pytest.mark.parametrize("case_id,arg,value,exc_type,expect", CONSTRUCTOR_TABLE, ids=[r[0] for r in CONSTRUCTOR_TABLE])
def test_constructor_rejects(case_id, arg, value, exc_type, expect):
    kwargs = {"shape": N, arg: value}
    with pytest.raises(exc_type) as info:
        LIFNeuron(**kwargs)
    _check_message(info.value, arg, expect)


def _trained_module(backend):
    """A module with non-trivial state: non-default parameters, a non-zero vmem, and gradients."""
    torch.manual_seed(3)
    m = LIFNeuron(
        N,
        tau_mem=torch.linspace(0.01, 0.04, N),
        threshold=torch.linspace(0.5, 1.2, N),
        bias=torch.linspace(-0.1, 0.1, N),
        backend=backend,
    )
    m(torch.randn(B, T, N) + 0.7).sum().backward()
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


# Each "corruption" takes the module and returns (input to call it with, a function that puts back
# what the corruption itself changed).


def _set_param(name, make):
    """Overwrite a parameter's values in place (as an optimiser step gone wrong would)."""

    def corrupt(m):
        p = getattr(m, name)
        saved = p.detach().clone()
        with torch.no_grad():
            p.copy_(make(p.detach()))

        def restore(m):
            with torch.no_grad():
                getattr(m, name).copy_(saved)

        return GOOD_X(), restore

    return corrupt


def _set_attr(name, value):
    def corrupt(m):
        old = getattr(m, name)
        setattr(m, name, value)
        return GOOD_X(), lambda m: setattr(m, name, old)

    return corrupt


def _input(make):
    return lambda m: (make(), lambda m: None)


GOOD_X = lambda: torch.randn(B, T, N) + 0.7  # noqa: E731

# Bad calls on a built module: a bad input, or an attribute/parameter made bad after construction.
# (id, what goes wrong, argument named, exception, expected). The module must be bit-identical after
# (the corrupted attribute itself is put back before comparing, everything else must be untouched).
MODULE_TABLE = [
    ("input-int", _input(lambda: GOOD_X().to(torch.int64)), "input", TypeError, "float"),
    ("input-bool", _input(lambda: GOOD_X() > 0), "input", TypeError, "float"),
    ("input-complex", _input(lambda: GOOD_X().to(torch.complex64)), "input", TypeError, "float"),
    ("input-list", _input(lambda: GOOD_X().tolist()), "input", TypeError, "torch.Tensor"),
    ("input-rank1", _input(lambda: torch.randn(N)), "input", ValueError, "shape"),
    ("input-rank4", _input(lambda: torch.randn(1, B, T, N)), "input", ValueError, "shape"),
    ("input-last-dim", _input(lambda: torch.randn(B, T, N + 1)), "input", ValueError, "last dimension"),
    ("input-last-dim-2d", _input(lambda: torch.randn(T, N - 1)), "input", ValueError, "last dimension"),
    ("input-device", _input(lambda: GOOD_X().to(META)), "tau_mem", ValueError, "device"),
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


@pytest.mark.parametrize("method", ["forward", "evolve"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id,corrupt,arg,exc_type,expect", MODULE_TABLE, ids=[r[0] for r in MODULE_TABLE])
def test_module_rejects_and_keeps_state(case_id, corrupt, arg, exc_type, expect, backend, method, no_kernel):
    with _real(no_kernel):
        m = _trained_module(backend)
    snap = _snapshot(m)
    x, restore = corrupt(m)
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
    ("lengths-negative", [2, -1], B, False, "lengths", ValueError, r"\[0, T\]"),
    ("lengths-beyond-T", torch.tensor([0, T + 1]), B, True, "lengths", ValueError, r"\[0, T\]"),
    ("lengths-shape", torch.tensor([1, 2, 3]), B, False, "lengths", ValueError, "shape"),
    ("lengths-float", torch.tensor([1.0, 2.0]), B, True, "lengths", TypeError, "integer"),
    ("lengths-device", torch.tensor([1, 2], device=META), B, False, "lengths", ValueError, "device"),
    ("batch-size", None, B + 1, True, "batch size", ValueError, r"reset_state\(\)"),
    ("batch-size-with-lengths", [1, 1, 1], B + 1, True, "batch size", ValueError, r"reset_state\(\)"),
]


@pytest.mark.parametrize("method", ["forward", "evolve"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id,lengths,batch,batch_state,arg,exc_type,expect", MODULE_LENGTHS_TABLE,
                         ids=[r[0] for r in MODULE_LENGTHS_TABLE])
def test_module_rejects_lengths_and_batch_size(case_id, lengths, batch, batch_state, arg, exc_type, expect, backend,
                                               method, no_kernel):
    with _real(no_kernel):
        m = _trained_module(backend)
        m.batch_state = batch_state
        m(GOOD_X())  # with batch_state, the state is now (B, N)
    snap = _snapshot(m)
    x = torch.randn(batch, T, N)
    with pytest.raises(exc_type) as info:
        if method == "forward":
            m(x, lengths)
        else:
            m.evolve(x, record=True, lengths=lengths)
    _check_message(info.value, arg, expect)
    _assert_unchanged(m, snap, lambda m: None)


# ------------------------------------------------------------- zero-sized: not an error

ZERO_SHAPES = [(0, T, N), (B, 0, N), (B, T, 0), (0, 0, 0)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", ZERO_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_zero_sized_gives_empty_outputs(shape, backend, dtype, real_kernels):
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
@pytest.mark.parametrize("shape", [(0, T, N), (B, 0, N)], ids=["B0", "T0"])
def test_module_zero_sized_keeps_state(shape, backend, real_kernels):
    m = _trained_module(backend)
    snap = _snapshot(m)
    spikes = m(torch.randn(*shape))
    assert spikes.shape == shape
    _assert_unchanged(m, snap, lambda m: None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_zero_neurons(backend, real_kernels):
    m = LIFNeuron(0, backend=backend)
    spikes, state, rec = m.evolve(torch.randn(B, T, 0), record=True)
    assert spikes.shape == (B, T, 0) and rec["vmem"].shape == (B, T, 0) and state["vmem"].shape == (0,)
