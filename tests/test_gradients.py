"""SPEC §2-§3 (and §7, the synaptic op, at the end): the fused, hand-written backward through time.

Three independent checks:
1. Against autograd of the reference (the per-step pure-PyTorch model whose only hand-written
   part is the surrogate of SPEC §2): gradients of input, v0, tau_mem, threshold, bias (and noise)
   for upstream gradients on spikes, the recorded membrane and the final state, both surrogates,
   scalar and per-neuron parameters; float64 <= 1e-10 and float32 <= 1e-5 relative (norm-wise).
2. `torch.autograd.gradcheck` (float64 finite differences) of the fused path itself:
   a) below threshold (u < thr - window everywhere, StepPWL): spikes are 0 and the surrogate is
      0, so the op is a smooth function and its true derivative is what the backward must give.
      This proves the leak, the integration, the carry W = alpha * U and the tau_mem / v0 / bias
      chains without any surrogate;
   b) with spikes: spikes are piecewise constant, so finite differences of the op itself say
      nothing about a surrogate. Instead we finite-difference the model in which every spike
      count is replaced by its first-order surrogate expansion around the evaluation point,
      s(u, thr) = s0 + ds/du|0 (u - u0) + ds/dthr|0 (thr - thr0), with the coefficients written
      out here from SPEC §2. That function is smooth, equals the real forward at the point, and
      its exact gradient is by definition the surrogate gradient: gradcheck of it against the
      fused backward proves SPEC §3's equations (reset path included) from first principles.
3. The exact surrogate at the boundaries u == thr - window and u == thr, against its formula.
Plus: backward saves only u (B,T,N) and small tensors; nothing when no gradient is needed.
"""
import math

import pytest
import torch

import lif_cuda
from conftest import (
    DTYPE_IDS,
    DTYPES,
    MODELS,
    assert_rel_close,
    make_adaptive_case,
    make_case,
    make_synaptic_case,
    needs_fused_cpu,
    pre_spike_membrane,
    rel_err,
    run_fused,
    run_reference,
    run_synaptic_fused,
    run_synaptic_reference,
)
from lif_cuda import PeriodicExponential, StepPWL

SURROGATES = [lif_cuda.StepPWL, lif_cuda.PeriodicExponential]
SURROGATE_IDS = ["StepPWL", "PeriodicExponential"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
PARAM_NAMES = ["input", "v0", "tau_mem", "threshold", "bias", "noise"]


def _upstream(case, which, seed=1234):
    """Random upstream gradients on (spikes, vmem, final state); None where not in `which`."""
    g = torch.Generator().manual_seed(seed)
    B, T, N = case.input.shape
    dtype = case.input.dtype
    randn = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return (
        randn(B, T, N) if "spikes" in which else None,
        randn(B, T, N) if "vmem" in which else None,
        randn(B, N) if "final" in which else None,
    )


def _grads(run, case, upstream, with_noise=False, **kw):
    """Gradients of sum(out * upstream) w.r.t. the case's differentiable arguments."""
    case, leaves = case.leaves(with_noise=with_noise)
    record = upstream[1] is not None
    outs = run(case, record=record, **kw)
    pairs = [(o, g) for o, g in zip(outs, upstream) if g is not None]
    grads = torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs])
    return outs, grads


def _assert_grads_match(case, upstream, with_noise=False, **kw):
    f_outs, f_grads = _grads(run_fused, case, upstream, with_noise, **kw)
    r_outs, r_grads = _grads(run_reference, case, upstream, with_noise, **kw)
    assert torch.equal(f_outs[0], r_outs[0])  # same spikes, so the same surrogate masks
    tol = TOL[case.input.dtype]
    for name, fg, rg in zip(PARAM_NAMES, f_grads, r_grads):
        assert fg.shape == rg.shape, f"grad {name}: shape {tuple(fg.shape)} != {tuple(rg.shape)}"
        assert rg.abs().sum() > 0, f"grad {name} is zero: the case does not test it"
        assert_rel_close(fg, rg, tol, f"grad {name}")
    return f_grads


def _assert_surrogate_regimes(case):
    """Non-vacuity: some steps spike, some sit in the learning window without spiking (the
    surrogate acts, the spike does not), and some are below it."""
    spikes, vmem, _ = run_reference(case)
    u = pre_spike_membrane(case, vmem)
    thr = case.threshold.expand_as(u)
    assert (spikes >= 2).any()
    assert ((u >= thr - case.learning_window) & (u < thr)).any()
    assert (u < thr - case.learning_window).any()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
@pytest.mark.parametrize("params", ["neuron", "scalar", "mixed"])
@pytest.mark.parametrize("which", ["spikes", "spikes+vmem", "spikes+vmem+final", "vmem+final"])
def test_fused_backward_equals_autograd_of_reference(dtype, surrogate, params, which):
    case = make_case(101, 3, 25, 13, dtype, params=params)
    _assert_surrogate_regimes(case)
    _assert_grads_match(case, _upstream(case, which), spike_generation_fn=surrogate)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
@pytest.mark.parametrize(
    "variant",
    ["noise", "clamp_M2", "window_1_dt_5ms", "window_0", "v0_per_neuron", "T1", "N_over_1024"],
)
def test_fused_backward_variants(dtype, surrogate, variant):
    kw = dict(seed=111, B=3, T=20, N=9)
    with_noise = False
    if variant == "noise":
        kw.update(noise=True)
        with_noise = True
    elif variant == "clamp_M2":  # the surrogate passes straight through the clamp
        kw.update(max_spikes_per_dt=2.0, input_mean=2.0)
    elif variant == "window_1_dt_5ms":
        kw.update(learning_window=1.0, dt=5e-3)
    elif variant == "window_0":
        kw.update(learning_window=0.0)
    elif variant == "v0_per_neuron":
        kw.update(v0_shape="neuron")
    elif variant == "T1":
        kw.update(T=1, input_mean=1.0)
    elif variant == "N_over_1024":
        kw.update(B=2, T=4, N=1100)
    case = make_case(dtype=dtype, **kw)
    if variant == "clamp_M2":
        assert (run_reference(case, max_spikes_per_dt=math.inf)[0] > 2).any()
    grads = _assert_grads_match(
        case, _upstream(case, "spikes+vmem+final"), with_noise=with_noise, spike_generation_fn=surrogate
    )
    if with_noise:  # the noise enters u exactly as the input does
        assert torch.equal(grads[5], grads[0])


@pytest.mark.parametrize("shape", [(2, 0, 3), (0, 4, 3), (2, 4, 0)])
def test_zero_sized_gradients(shape):
    case = make_case(121, *shape, torch.float64)
    case, leaves = case.leaves()
    upstream = _upstream(case, "spikes+vmem+final")

    def grads_of(outs, leaves):  # empty outputs may have no graph (the reference's do not)
        pairs = [(o, g) for o, g in zip(outs, upstream) if o.requires_grad]
        return torch.autograd.grad(
            [o for o, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True, materialize_grads=True
        )

    grads = grads_of(run_fused(case), leaves)
    r_case, r_leaves = case.leaves()
    r_grads = grads_of(run_reference(r_case), r_leaves)
    for name, fg, rg in zip(PARAM_NAMES, grads, r_grads):
        assert fg.shape == rg.shape and torch.equal(fg, rg), name
    if shape[1] == 0:  # no step: the final state is v0, and so is its gradient
        assert torch.equal(grads[1], upstream[2])


# ------------------------------------------------------------------ gradcheck (float64)


def _fused_fn(case, surrogate=lif_cuda.StepPWL):
    def fn(input, v0, tau_mem, threshold, bias, noise):
        c = case.replace(input=input, v0=v0, tau_mem=tau_mem, threshold=threshold, bias=bias, noise=noise)
        return run_fused(c, record=True, spike_generation_fn=surrogate)

    return fn


def _gradcheck_inputs(case):
    return tuple(
        getattr(case, n).detach().clone().requires_grad_(True) for n in PARAM_NAMES
    )


@pytest.mark.parametrize("params", ["neuron", "scalar"])
def test_gradcheck_below_threshold(params, one_thread):
    """No spike and no surrogate anywhere: the fused op is smooth, gradcheck it as it is."""
    case = make_case(131, 2, 6, 4, torch.float64, params=params, noise=True, input_mean=-0.6, input_scale=0.1)
    case = case.replace(v0=case.v0.clamp(max=0.0), noise=0.1 * case.noise)
    _, vmem, _ = run_reference(case)
    u = pre_spike_membrane(case, vmem)
    margin = (case.threshold - case.learning_window).expand_as(u) - u
    assert margin.min() > 1e-3, "precondition: every u below the learning window, with room for eps"
    assert torch.autograd.gradcheck(_fused_fn(case), _gradcheck_inputs(case), eps=1e-6, atol=1e-9, rtol=1e-7)


def _surrogate_coefficients(u, thr, window, max_spikes, surrogate):
    """ds/du and ds/dthr of SPEC §2, written out independently of the library."""
    if surrogate is lif_cuda.StepPWL:
        m = (u >= thr - window).to(u.dtype)
        return m / thr, -u * m / thr**2
    vs = u - thr / 2
    k = torch.clamp(torch.floor(vs / thr), max=max_spikes - 1)
    vp = vs - k * thr
    vn = torch.where(u < thr, vs, vp)
    pdf = torch.exp(-torch.abs(vn - thr / 2) / window) / thr
    return pdf, -pdf * u / thr


def _linearised_model(case, surrogate):
    """The forward of SPEC §1 with s[t] replaced by its first-order surrogate expansion around
    `case` (all coefficients frozen there). Smooth; equals the real forward at `case`."""
    s0, vmem0, _ = run_reference(case)
    u0 = pre_spike_membrane(case, vmem0)
    thr0 = case.threshold.expand_as(u0)
    dsdu, dsdthr = _surrogate_coefficients(u0, thr0, case.learning_window, case.max_spikes_per_dt, surrogate)
    dt = case.dt

    def model(input, v0, tau_mem, threshold, bias, noise):
        B, T, N = input.shape
        alpha = torch.exp(-dt / tau_mem)
        w = v0.expand(B, N)
        spikes, vmem = [], []
        for t in range(T):
            u = ((alpha * w + input[:, t]) + noise[:, t]) + bias
            s = s0[:, t] + dsdu[:, t] * (u - u0[:, t]) + dsdthr[:, t] * (threshold - thr0[:, t])
            w = u - s * threshold
            spikes.append(s)
            vmem.append(w)
        return torch.stack(spikes, 1), torch.stack(vmem, 1), w

    return model


class _LinearisedModelWithFusedBackward(torch.autograd.Function):
    """forward: the linearised model (pure PyTorch); backward: the fused op's backward at the
    point where the model was linearised. gradcheck compares the latter with finite differences
    of the former."""

    @staticmethod
    def forward(ctx, model, fused_fn, *inputs):
        ctx.fused_fn = fused_fn
        ctx.save_for_backward(*inputs)
        with torch.no_grad():
            return model(*inputs)

    @staticmethod
    def backward(ctx, *grad_outputs):
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in ctx.saved_tensors]
            outs = ctx.fused_fn(*leaves)
            grads = torch.autograd.grad(outs, leaves, grad_outputs, allow_unused=True, materialize_grads=True)
        return (None, None, *grads)


@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
@pytest.mark.parametrize("params", ["neuron", "scalar"])
def test_gradcheck_surrogate_linearisation(surrogate, params, one_thread):
    case = make_case(141, 2, 7, 4, torch.float64, params=params, noise=True, input_mean=0.8, max_spikes_per_dt=2.0)
    model = _linearised_model(case, surrogate)
    fused = _fused_fn(case, surrogate)
    inputs = _gradcheck_inputs(case)
    # At the point, the linearised model is the real forward, and the case is not trivial.
    real = fused(*inputs)
    lin = model(*inputs)
    for r, m in zip(real, lin):
        torch.testing.assert_close(m, r, rtol=0, atol=1e-12)
    assert (real[0] >= 2).any() and (real[0] == 0).any()

    def fn(*xs):
        return _LinearisedModelWithFusedBackward.apply(model, fused, *xs)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


# ------------------------------------------------------------------ the surrogate at its boundaries


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("window", [0.5, 0.1, 0.0])
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_steppwl_mask_includes_its_lower_boundary(dtype, window, backend):
    """T = 1, v0 = 0, bias = 0: u = I exactly, and with only an upstream gradient on the spikes
    dL/dI = m / thr and dL/dthr = -u m / thr^2, m = (u >= thr - window)."""
    thr = torch.tensor([1.0, 0.7, 1.3], dtype=dtype)
    lower = thr - window
    down = lambda t: torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype))  # noqa: E731
    u = torch.stack([lower, down(lower), thr, down(thr), 2 * thr])  # (5, 3)
    B, N = u.shape
    case = make_case(0, B, 1, N, dtype, learning_window=window).replace(
        input=u.unsqueeze(1).clone(),
        v0=torch.zeros(B, N, dtype=dtype),
        bias=torch.zeros(N, dtype=dtype),
        threshold=thr.clone(),
    )
    m = (u >= thr - window).to(dtype)
    assert m[0].all() and not m[1].any(), "u == thr - window is inside the window, one ulp below is not"
    case, leaves = case.leaves()
    run = run_fused if backend == "fused" else run_reference
    spikes, _, _ = run(case, record=False)
    g_in, g_thr = torch.autograd.grad(spikes, [leaves[0], leaves[3]], torch.ones_like(spikes))
    torch.testing.assert_close(g_in.squeeze(1), m / thr, rtol=1e-12, atol=0)
    # A sum of 5 terms, the kernel multiplying by 1/thr^2: a few ulps of the dtype.
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(g_thr, (-u * m / thr**2).sum(0), rtol=rtol, atol=0)


# ------------------------------------------------------------------ what backward keeps


def _count_saved(fn):
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


@pytest.mark.parametrize("record", [True, False])
def test_backward_saves_only_u(record):
    """SPEC §3: the one sequence-sized tensor kept for backward is u, the pre-spike membrane;
    everything else saved is (B,N) or (N,) (v0 and the parameters)."""
    case = make_case(151, 3, 9, 7, torch.float32, noise=True)
    B, T, N = case.input.shape
    case, _ = case.leaves(with_noise=True)
    outs, saved = _count_saved(lambda: run_fused(case, record=record))
    big = [t for t in saved if t.numel() >= B * T * N]
    assert len(big) == 1, f"sequence-sized tensors saved: {[tuple(t.shape) for t in big]}"
    _, vmem, _ = run_reference(case)
    assert torch.equal(big[0], pre_spike_membrane(case, vmem).detach()), "the saved tensor is u"
    assert all(t.numel() <= B * N for t in saved if t is not big[0])


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "nothing_requires_grad", "grad"])
def test_u_is_saved_only_when_needed(monkeypatch, mode):
    calls = []
    original = lif_cuda.functional.lif_forward_op

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((args[-1], out[3].numel()))
        return out

    monkeypatch.setattr(lif_cuda.functional, "lif_forward_op", spy)
    case = make_case(161, 2, 5, 3)
    if mode in ("no_grad", "inference_mode", "grad"):
        case, _ = case.leaves()
    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode)
    if ctx is None:
        outs, saved = _count_saved(lambda: run_fused(case))
    else:
        with ctx():
            outs, saved = _count_saved(lambda: run_fused(case))
    # The op's autograd kernel (csrc/autograd.cpp) decides: u is computed, returned and saved
    # exactly when a gradient is needed.
    (_, u_numel), = calls
    if mode == "grad":
        assert u_numel == case.input.numel()
    else:
        assert u_numel == 0 and saved == []
        assert not outs[0].requires_grad


@pytest.mark.parametrize(
    "make_grad",
    [
        lambda B, T, N: torch.ones(1, 1, 1).expand(B, T, N),  # loss = spikes.sum()
        lambda B, T, N: torch.randn(1, T, N).expand(B, T, N),  # broadcast over the batch
        lambda B, T, N: torch.randn(B, T, 1).expand(B, T, N),  # broadcast over the neurons
        lambda B, T, N: torch.randn(B, N, T).transpose(1, 2),  # neurons not innermost: copied
    ],
    ids=["scalar", "batch-bcast", "neuron-bcast", "transposed"],
)
def test_strided_upstream_gradient_equals_its_contiguous_copy(make_grad):
    # The CPU backward reads grad_spikes in place when its rows are contiguous or broadcast.
    torch.manual_seed(0)
    B, T, N = 3, 20, 300
    x = torch.randn(B, T, N) + 0.5
    g = make_grad(B, T, N)
    grads = []
    for upstream in (g, g.contiguous()):
        xi = x.clone().requires_grad_()
        tau = torch.full((N,), 0.02, requires_grad=True)
        thr = torch.ones(N, requires_grad=True)
        s, _, _ = lif_cuda.lif_evolve(xi, torch.zeros(N), tau, thr, torch.zeros(N), 1e-3, backend="fused")
        torch.autograd.backward(s, upstream)
        grads.append((xi.grad, tau.grad, thr.grad))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ the synaptic op (SPEC §7)
# The hand-written reverse loop through the synapses, the reset and the recurrence against autograd
# of the reference (every input: x, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise).


SYNAPTIC_GRAD_NAMES = ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec", "noise")


def _synaptic_grads(run, case, z, ups, surrogate, rec):
    names = [k for k in SYNAPTIC_GRAD_NAMES[:9] if case.get(k) is not None]
    leaves = {k: case[k].detach().clone().requires_grad_(True) for k in names}
    zl = z.detach().clone().requires_grad_(True)
    out = run({**case, **leaves}, noise=zl, spike_generation_fn=surrogate)
    outs = [out[0], out[1], out[2], out[4], out[5]] + ([out[3]] if rec else [])
    grads = torch.autograd.grad(outs, [*leaves.values(), zl], ups[: len(outs)], allow_unused=True)
    return dict(zip(names + ["noise"], grads))


def _synaptic_fused_and_reference_grads(seed, B, T, N, S, dtype, surrogate, rec, upstream_seed, **case_kw):
    """A case, and the gradients of the fused op and of the reference's autograd w.r.t. every input,
    with noise and gradients arriving on every output."""
    case = make_synaptic_case(seed, B, T, N, S, dtype, rec=rec, **case_kw)
    g = torch.Generator().manual_seed(upstream_seed)
    rn = lambda *s: torch.randn(s, generator=g, dtype=dtype)  # noqa: E731
    z = 0.1 * rn(B, T, N)
    ups = [rn(B, T, N), rn(B, T, N), rn(B, T, N, S), rn(B, N), rn(B, N, S), rn(B, T, N, S)]
    got = _synaptic_grads(run_synaptic_fused, case, z, ups, surrogate, rec)
    want = _synaptic_grads(run_synaptic_reference, case, z, ups, surrogate, rec)
    return case, got, want



def _assert_grad_close(name, got, want, tol):
    """Same shape, a gradient that reached the argument, relative error within tol."""
    assert got.shape == want.shape, name
    assert want.abs().sum() > 0, f"{name}: no gradient reached it"
    err = rel_err(got, want)
    assert err <= tol, f"grad {name}: relative error {err:.2e}"

@needs_fused_cpu
@pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("S,rec,shapes", [(1, False, "full-neuron-rows"), (2, True, "full-neuron-rows"),
                                          (3, True, "row-scalar-shared"), (2, False, "scalar-neuron-shared"),
                                          (5, True, "full-scalar-rows")])
def test_synaptic_backward_equals_reference_autograd_float64(surrogate, S, rec, shapes):
    """SPEC §7: the hand-written backward through the synapses, the reset and the recurrence (dL/dw_rec
    one product over all steps) against autograd of the reference, in float64."""
    tau_syn, params, state = shapes.split("-")
    case, got, want = _synaptic_fused_and_reference_grads(20 + S, 3, 19, 5, S, torch.float64, surrogate, rec, 5,
                                                          tau_syn=tau_syn, params=params, state=state)
    for name in got:
        if name == "s0" and not rec:
            assert want[name] is None and torch.equal(got[name], torch.zeros_like(case["s0"]))
            continue
        _assert_grad_close(name, got[name], want[name], 1e-10)


@needs_fused_cpu
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_synaptic_backward_float32_within_tolerance(rec):
    _, got, want = _synaptic_fused_and_reference_grads(31, 4, 30, 8, 2, torch.float32, StepPWL, rec, 6)
    for name in got:
        if name == "s0" and not rec:
            continue
        assert rel_err(got[name], want[name]) <= 1e-5, name


def _ahp_grads(model, case, backend, ups, surrogate, M):
    """Gradients of sum(out * up) over every differentiable output of ahp_synaptic_evolve (noise
    included), w.r.t. every argument it reaches."""
    names = model.grad_args(case)
    leaves = {k: case[k].detach().clone().requires_grad_(True) for k in names}
    out = dict(zip(model.outputs, model.evolve_fn(**{**case, **leaves}, record=True, backend=backend,
                                                  spike_generation_fn=surrogate, max_spikes_per_dt=M)))
    keys = [k for k in model.grad_outputs if k in ups]
    g = torch.autograd.grad([out[k] for k in keys], list(leaves.values()), [ups[k] for k in keys], allow_unused=True)
    return dict(zip(names, g))


@needs_fused_cpu
@pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("S,rec,shapes,M", [(1, False, "full-neuron-rows", 2.0**16), (2, True, "full-neuron-rows", 2.0),
                                            (3, True, "row-scalar-shared", 2.0**16),
                                            (2, False, "scalar-neuron-shared", 1.0),
                                            (5, True, "full-scalar-rows", 3.0)])
def test_ahp_backward_equals_reference_autograd_float64(surrogate, S, rec, shapes, M):
    """SPEC §9: the hand-written backward through the AHP current (into w_ahp, tau_ahp through
    gamma, h0, and through s[t-1] into h's update, s0 included), with the synapses, the reset, the
    recurrence, noise and the clamp, against autograd of the reference in float64."""
    model = MODELS["ahp-rec" if rec else "ahp-ff"]
    tau_syn, params, state = shapes.split("-")
    B, T, N = 3, 19, 5
    case = model.case(80 + S, B, T, N, torch.float64, S=S, tau_syn=tau_syn, params=params, state=state)
    g = torch.Generator().manual_seed(9)
    case["noise"] = 0.1 * torch.randn(B, T, N, generator=g, dtype=torch.float64)
    shapes_of = dict(spikes=(B, T, N), vmem=(B, T, N), isyn=(B, T, N, S), irec=(B, T, N, S), iahp=(B, T, N),
                     v_final=(B, N), i_final=(B, N, S), h_final=(B, N))
    ups = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes_of.items()}
    got = _ahp_grads(model, case, "fused", ups, surrogate, M)
    want = _ahp_grads(model, case, "reference", ups, surrogate, M)
    for name in want:
        _assert_grad_close(name, got[name], want[name], 1e-10)


@needs_fused_cpu
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_ahp_backward_float32_within_tolerance(rec):
    model = MODELS["ahp-rec" if rec else "ahp-ff"]
    B, T, N = 4, 30, 8
    case = model.case(31, B, T, N, torch.float32)
    g = torch.Generator().manual_seed(6)
    ups = {"spikes": torch.randn(B, T, N, generator=g), "iahp": torch.randn(B, T, N, generator=g),
           "vmem": torch.randn(B, T, N, generator=g), "h_final": torch.randn(B, N, generator=g)}
    got = _ahp_grads(model, case, "fused", ups, StepPWL, 2.0**16)
    want = _ahp_grads(model, case, "reference", ups, StepPWL, 2.0**16)
    for name in want:
        assert rel_err(got[name], want[name]) <= 1e-5, name


# ------------------------------------------------------------------ the adaptive LIF (SPEC §10)

ADAPTIVE_GRAD_ARGS = ("input", "v0", "b0", "tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt", "noise")


def _adaptive_grads(fn, case, z, ups, only=None, **kw):
    """Gradients of sum(out * up) over every output of adaptive_evolve (or its reference), or over
    output `only` alone (the others get no gradient at all), w.r.t. every argument, with the noise
    tensor z."""
    leaves = {k: case[k].detach().clone().requires_grad_(True) for k in ADAPTIVE_GRAD_ARGS[:-1]}
    zl = z.detach().clone().requires_grad_(True)
    out = fn(**{**case, **leaves}, noise=zl, record=True, **kw)
    outs, ups = (out, ups) if only is None else ([out[only]], [ups[only]])
    grads = torch.autograd.grad(outs, [*leaves.values(), zl], ups)
    return out, dict(zip(ADAPTIVE_GRAD_ARGS, grads))


def _adaptive_case_and_upstream(seed, dtype, B=3, T=25, N=7, **case_kw):
    case = make_adaptive_case(seed, B, T, N, dtype, **case_kw)
    g = torch.Generator().manual_seed(seed + 1)
    rn = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return case, 0.1 * rn(B, T, N), [rn(B, T, N), rn(B, T, N), rn(B, T, N), rn(B, N), rn(B, N)]


@needs_fused_cpu
@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
@pytest.mark.parametrize("params,state", [("neuron", "rows"), ("scalar", "shared"), ("neuron", "shared"),
                                          ("scalar", "rows")])
@pytest.mark.parametrize("max_spikes", [2.0**16, 2.0], ids=["M-large", "M-2"])
@pytest.mark.parametrize("T", [25, 70])
def test_adaptive_backward_equals_reference_autograd_float64(surrogate, params, state, max_spikes, T):
    """SPEC §10: the hand-written backward through the adaptation (core/adaptive.h) against autograd
    of the reference, float64, every argument (the threshold's, beta_adapt's and tau_adapt's through
    rho and q, the initial adaptation's), gradients arriving on every output. T = 70: the CPU backward
    rebuilds b from three checkpoint segments."""
    case, z, ups = _adaptive_case_and_upstream(41, torch.float64, T=T, params=params, state=state)
    kw = dict(spike_generation_fn=surrogate, max_spikes_per_dt=max_spikes)
    f_out, got = _adaptive_grads(lif_cuda.adaptive_evolve, case, z, ups, backend="fused", **kw)
    r_out, want = _adaptive_grads(lif_cuda.adaptive_evolve_reference, case, z, ups, **kw)
    assert torch.equal(f_out[0], r_out[0])
    # Not vacuous: several spikes in a step, and the adaptation moves the threshold a good deal.
    assert (r_out[0] >= 2).any() and (r_out[2].std() > 0.05)
    for name in ADAPTIVE_GRAD_ARGS:
        assert got[name].shape == want[name].shape, name
        assert want[name].abs().sum() > 0, f"{name}: no gradient reached it"
        err = rel_err(got[name], want[name])
        assert err <= 1e-10, f"grad {name}: relative error {err:.2e}"
    assert torch.equal(got["noise"], got["input"])  # the noise enters u as the input does


@needs_fused_cpu
@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
def test_adaptive_backward_float32_within_tolerance(surrogate):
    """float32: the fused backward equals autograd of the reference to float32 rounding (SPEC §3's
    1e-5 norm-wise), every argument."""
    case, z, ups = _adaptive_case_and_upstream(43, torch.float32, B=4, T=40, N=9)
    _, got = _adaptive_grads(lif_cuda.adaptive_evolve, case, z, ups, backend="fused", spike_generation_fn=surrogate)
    _, want = _adaptive_grads(lif_cuda.adaptive_evolve_reference, case, z, ups, spike_generation_fn=surrogate)
    for name in ADAPTIVE_GRAD_ARGS:
        assert want[name].abs().sum() > 0, name
        assert rel_err(got[name], want[name]) <= 1e-5, name


@needs_fused_cpu
@pytest.mark.parametrize("upstream", ["spikes", "adapt", "b_final"])
def test_adaptive_backward_with_gradients_on_one_output(upstream):
    """Each output alone carries a gradient back (the kernels' variants without the record gradients,
    float64 against the reference)."""
    case, z, ups = _adaptive_case_and_upstream(47, torch.float64)
    which = {"spikes": 0, "adapt": 2, "b_final": 4}[upstream]
    _, got = _adaptive_grads(lif_cuda.adaptive_evolve, case, z, ups, only=which, backend="fused")
    _, want = _adaptive_grads(lif_cuda.adaptive_evolve_reference, case, z, ups, only=which)
    for name in ADAPTIVE_GRAD_ARGS:
        assert want[name].abs().sum() > 0, name
        assert rel_err(got[name], want[name]) <= 1e-10, name
