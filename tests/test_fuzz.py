"""Property-based parity (hypothesis): the fused op against the pure-PyTorch reference over
generated cases, including the corners a hand-written test would miss.

Generated: B, T or N of zero; tau from 1e-4 to 10 s, threshold from 1e-3 to 1e3 (log-uniform, per
neuron or scalar); learning_window 0..2; max_spikes_per_dt 1..2^16 (integers, fractions, inf);
dt 1e-5..0.1; input magnitudes from 1e-40 (denormal in float32) to 1e38; elements placed exactly
at u == thr, at integer multiples of thr and at u == thr - window (at t = 0 with v0 = bias = 0 the
membrane is the input, exactly); denormals; NaN and +-Inf; float16/bfloat16/float32/float64 input;
no noise, an explicit noise tensor, or in-kernel noise (noise_std > 0, the same seed on both
backends: the reference path computes the kernels' Philox stream); both surrogates; record on or off; v0 (B,N) or (N,).

Forward: spikes, recorded membrane and final state identical to the last bit (NaN compared as NaN;
with noise the sign of zero too, SPEC §1). Gradients (float32/float64 cases whose input and
outputs are finite), every one of input, v0, tau_mem, threshold, bias (and noise):
  ||g_fused - g_ref|| <= tol * ||g_ref||   (tol 1e-5 float32, 1e-10 float64: the core tolerance)
or, where the problem is so ill-conditioned that the reference itself is further than that from the
exact answer, the accuracy rule of flash-attention against an extended-precision oracle
(SPEC §3 evaluated in numpy longdouble on the reference's own forward trajectory):
  ||g_fused - g_exact|| <= max(2 * ||g_ref - g_exact||, tol * ||g_exact||).

CI runs a bounded, derandomised set (LIF_FUZZ_EXAMPLES, default 300 per property, a few seconds);
set LIF_FUZZ_EXAMPLES=5000 LIF_FUZZ_RANDOM=1 for a long random hunt. No example database is written
(database=None), so nothing lands in the working tree.
"""
import math
import os

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.control import currently_in_test_context  # noqa: E402

import lif_cuda  # noqa: E402
from lif_cuda import PeriodicExponential, StepPWL  # noqa: E402
from lif_cuda import noise as lif_noise  # noqa: E402
from lif_cuda.reference import tau_to_decay  # noqa: E402

pytestmark = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")

FUZZ = settings(
    max_examples=int(os.environ.get("LIF_FUZZ_EXAMPLES", "300")),
    deadline=None,
    database=None,
    derandomize=os.environ.get("LIF_FUZZ_RANDOM", "0") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

def event(what):
    """hypothesis.event, also callable from the plain (non-hypothesis) tests below."""
    if currently_in_test_context():
        hypothesis.event(what)


GRAD_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
INT_VIEW = {
    torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64
}
# A subnormal value per dtype, and the largest decimal exponent of a finite input magnitude.
DENORMAL = {torch.float16: 1e-7, torch.bfloat16: 1e-40, torch.float32: 1e-40, torch.float64: 1e-310}
MAX_EXP = {torch.float16: 4, torch.bfloat16: 38, torch.float32: 38, torch.float64: 300}

SPECIALS = ("multiple", "at_thr", "thr_minus_window", "denormal", "nan", "inf", "neg_inf", "zero", "neg_zero")
NONFINITE = {"nan", "inf", "neg_inf"}


# ------------------------------------------------------------------------------- generation

@st.composite
def cases(draw, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16)):
    dtype = draw(st.sampled_from(dtypes))
    B = draw(st.integers(0, 3))
    T = draw(st.integers(0, 6))
    N = draw(st.sampled_from([0, 1, 2, 3, 5, 8, 17, 70]))
    p = dict(
        dtype=dtype,
        B=B,
        T=T,
        N=N,
        seed=draw(st.integers(0, 2**31 - 1)),
        tau_exp=sorted(draw(st.tuples(st.floats(-4, 1), st.floats(-4, 1)))),
        thr_exp=sorted(draw(st.tuples(st.floats(-3, 3), st.floats(-3, 3)))),
        param_shapes=draw(st.tuples(*[st.sampled_from(["neuron", "scalar"])] * 3)),
        dt=draw(st.one_of(st.just(1e-3), st.floats(1e-5, 0.1))),
        window=draw(st.one_of(st.sampled_from([0.0, 0.5, 2.0]), st.floats(0, 2))),
        max_spikes=draw(
            st.one_of(
                st.sampled_from([1.0, 2.0, 2.0**16, math.inf]),
                st.integers(1, 2**16).map(float),
                st.floats(1, 2**16),
            )
        ),
        input_exp=sorted(draw(st.tuples(st.integers(-40, MAX_EXP[dtype]), st.integers(-40, MAX_EXP[dtype])))),
        specials=draw(st.sets(st.sampled_from(SPECIALS))),
        special_density=draw(st.floats(0.05, 1.0)),
        v0_kind=draw(st.sampled_from(["zero", "random", "denormal", "vector"])),
        bias_zero=draw(st.booleans()),
        noise=draw(st.sampled_from(["none", "tensor", "kernel"])),
        noise_std=draw(st.floats(1e-3, 10)),
        surrogate=draw(st.sampled_from([StepPWL, PeriodicExponential])),
        record=draw(st.booleans()),
    )
    return p


def build(p):
    """The tensors of a generated case (deterministic in p)."""
    dtype, B, T, N = p["dtype"], p["B"], p["T"], p["N"]
    cdtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype  # compute dtype
    g = torch.Generator().manual_seed(p["seed"])
    f64 = dict(dtype=torch.float64, generator=g)

    def log_uniform(shape, lo, hi):
        return 10.0 ** (lo + (hi - lo) * torch.rand(shape, **f64))

    shapes = [(N,) if s == "neuron" else () for s in p["param_shapes"]]
    tau = log_uniform(shapes[0], *p["tau_exp"]).to(cdtype)
    thr = log_uniform(shapes[1], *p["thr_exp"]).to(cdtype)
    bias = torch.zeros(shapes[2], dtype=cdtype) if p["bias_zero"] else (torch.randn(shapes[2], **f64)).to(cdtype)

    # Input: random signs, magnitudes log-uniform over the drawn decades.
    lo, hi = p["input_exp"]
    x = torch.randn(B, T, N, **f64).sign() * log_uniform((B, T, N), lo, hi)
    x = x.to(cdtype)
    if p["specials"] and x.numel():
        thr_n = thr.expand(N)
        kinds = sorted(p["specials"])
        where = torch.rand(B, T, N, **f64) < p["special_density"]
        which = torch.randint(len(kinds), (B, T, N), generator=g)
        k = torch.randint(1, 5, (B, T, N), generator=g).to(cdtype)
        k = torch.where(torch.rand(B, T, N, **f64) < 0.2, k * 16384, k)  # some beyond max_spikes
        window = torch.tensor(p["window"], dtype=cdtype)
        values = {
            "multiple": k * thr_n,
            "at_thr": thr_n.expand(B, T, N),
            "thr_minus_window": (thr_n - window).expand(B, T, N),
            "denormal": (
                torch.full((B, T, N), DENORMAL[dtype], dtype=cdtype) * torch.randint(1, 4, (B, T, N), generator=g)
            ),
            "nan": torch.full((B, T, N), math.nan, dtype=cdtype),
            "inf": torch.full((B, T, N), math.inf, dtype=cdtype),
            "neg_inf": torch.full((B, T, N), -math.inf, dtype=cdtype),
            "zero": torch.zeros(B, T, N, dtype=cdtype),
            "neg_zero": torch.full((B, T, N), -0.0, dtype=cdtype),
        }
        for i, kind in enumerate(kinds):
            x = torch.where(where & (which == i), values[kind], x)
    x = x.to(dtype)

    v0_shape = (N,) if p["v0_kind"] == "vector" else (B, N)
    if p["v0_kind"] == "zero":
        v0 = torch.zeros(v0_shape, dtype=cdtype)
    elif p["v0_kind"] == "denormal":
        v0 = torch.full(v0_shape, DENORMAL[dtype], dtype=cdtype)
    else:
        v0 = (torch.randn(v0_shape, **f64) * thr.expand(N)).to(cdtype)
    noise = (torch.randn(B, T, N, **f64) * 0.3 * thr.expand(N)).to(cdtype) if p["noise"] == "tensor" else None
    noise_std = p["noise_std"] if p["noise"] == "kernel" else 0.0
    return dict(input=x, v0=v0, tau_mem=tau, threshold=thr, bias=bias, dt=p["dt"], noise=noise, noise_std=noise_std,
                learning_window=p["window"], max_spikes_per_dt=p["max_spikes"],
                spike_generation_fn=p["surrogate"])


# ------------------------------------------------------------------------------- comparison

def assert_same_bits(actual, expected, what, signed_zero):
    """Identical values: NaN where the other is NaN, every other element equal; with signed_zero
    the bit patterns of all non-NaN elements are equal (so -0.0 != +0.0)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    nan_a, nan_e = actual.isnan(), expected.isnan()
    bad = nan_a != nan_e
    both = ~(nan_a | nan_e)
    if signed_zero:
        ia, ie = actual.view(INT_VIEW[actual.dtype]), expected.view(INT_VIEW[expected.dtype])
        bad |= both & (ia != ie)
    else:
        bad |= both & (actual != expected)
    if bad.any():
        idx = bad.nonzero()[:5].tolist()
        pairs = [(i, actual[tuple(i)].item(), expected[tuple(i)].item()) for i in idx]
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ; first (index, fused, reference): {pairs}"
        )


NOISE_SEED = 1234  # torch.manual_seed before every call with in-kernel noise (SPEC §4)


def run(args, backend, record, grads, upstream):
    """One call with fresh leaves; returns (outputs, gradients by name or None). Both backends go
    through lif_evolve; the reference path draws the very noise stream the kernels draw."""
    names = ["input", "v0", "tau_mem", "threshold", "bias"] + (["noise"] if args["noise"] is not None else [])
    args = dict(args)
    leaves = {}
    if grads:
        for n in names:
            leaves[n] = args[n] = args[n].detach().clone().requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(NOISE_SEED)
        out = lif_cuda.lif_evolve(**args, record=record, backend=backend)
    if not grads:
        return out, None
    spikes, vmem, final = out
    gs, gw, gf = upstream
    loss = (spikes * gs).sum() + (final * gf).sum()
    if record:
        loss = loss + (vmem * gw).sum()
    loss.backward()
    return out, {n: leaves[n].grad if leaves[n].grad is not None else torch.zeros_like(leaves[n]) for n in names}


@np.errstate(all="ignore")  # window = 0 (PeriodicExponential) divides by zero, as torch does
def oracle_gradients(args, vmem_ref, upstream, record):
    """SPEC §3 in numpy longdouble (64-bit mantissa) on the reference's own float trajectory.

    Returns (exact, scale, gamma): `exact`, the gradients of the computation the reference
    performed, to ~1e-19 relative; `scale`, the same recurrence run on absolute values (|W|, |a|,
    |ds/du|, ...), so that the classical a-priori bound of a float evaluation of it, in the input's
    dtype, is |computed - exact| <= gamma * scale element-wise, gamma = m u / (1 - m u) with u the
    unit roundoff and m a count (generous by a factor of two) of the roundings on the longest
    dependency path of one gradient element. scale["peak"] bounds every intermediate value (partial
    sums in any order, products like u * a): the bound needs it within the dtype's range."""
    x = args["input"]
    dtype = x.dtype
    B, T, N = x.shape
    L = np.longdouble
    if args["noise_std"] > 0:  # the in-kernel noise of the call, rebuilt from the same key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(NOISE_SEED)
            key = lif_noise.draw_noise_key()
        z = lif_noise.kernel_noise((B, T, N), args["noise_std"] * math.sqrt(args["dt"]), key, dtype)
        args = {**args, "noise": z}
    npl = lambda t: t.detach().to(torch.float64).numpy().astype(L)  # noqa: E731  (exact: f32/f64 -> f64 -> long double)
    tau = args["tau_mem"].to(dtype)
    alpha_t = tau_to_decay(args["dt"], tau).expand(N)
    thr_t = args["threshold"].to(dtype).expand(N)
    v0_t = args["v0"].to(dtype).expand(B, N)
    # u[t] with the reference's rounded operations (as it computed it), w[t-1] from its record.
    w_prev_t = torch.cat([v0_t.unsqueeze(1), vmem_ref[:, :-1]], dim=1)
    u_t = alpha_t * w_prev_t
    u_t = u_t + x
    if args["noise"] is not None:
        u_t = u_t + args["noise"].to(dtype)
    u_t = u_t + args["bias"].to(dtype)
    window, M = args["learning_window"], args["max_spikes_per_dt"]
    s_t = torch.clamp(torch.where(u_t >= thr_t, torch.floor(u_t / thr_t), torch.zeros_like(u_t)), max=M)

    u, w_prev, s = npl(u_t), npl(w_prev_t), npl(s_t)
    thr, alpha = npl(thr_t), npl(alpha_t)
    if args["spike_generation_fn"] is StepPWL:
        m = (u_t >= (thr_t - window)).numpy().astype(L)  # the mask as the float computation decides it
        dsdu = m / thr
        dsdthr = -u * m / (thr * thr)
    else:
        # pdf as the float computation evaluates it (SPEC §2, the reference's own operations): its
        # argument vs - k*thr cancels, so the float pdf is what both implementations differentiate.
        vs = u_t - thr_t / 2
        k = torch.clamp(torch.floor(vs / thr_t), max=M - 1)
        vn = torch.where(u_t < thr_t, vs, vs - k * thr_t)
        pdf = npl(torch.exp(-torch.abs(vn - thr_t / 2) / window) / thr_t)
        dsdu, dsdthr = pdf, -pdf * u / thr
    gs, gw, gf = (npl(t) for t in upstream)
    if not record:
        gw = np.zeros_like(gw)

    def bptt(gs, gw, gf, dsdu, dsdthr, s, w_prev, absolute):
        sign = 1 if absolute else -1  # on absolute values every subtraction becomes an addition
        W = gf.copy()
        g_in = np.zeros((B, T, N), dtype=L)
        g_alpha, g_thr, g_bias = (np.zeros((B, N), dtype=L) for _ in range(3))
        peak = [L(0)]  # on absolute values: the largest intermediate any evaluation order can meet
        for t in range(T - 1, -1, -1):
            W = W + gw[:, t]
            a = gs[:, t] + sign * W * thr
            U = W + a * dsdu[:, t]
            g_in[:, t] = U
            g_bias += U
            g_thr += sign * W * s[:, t] + a * dsdthr[:, t]
            g_alpha += U * w_prev[:, t]
            if absolute:
                peak += [np.max(v, initial=L(0)) for v in (W * thr, U, a * np.abs(u[:, t]), g_thr, g_alpha, g_bias)]
            W = alpha * U
        tau_l = npl(tau.expand(N))
        g_alpha_n = g_alpha.sum(0)
        g_tau = g_alpha_n * alpha * L(args["dt"]) / (tau_l * tau_l)
        if absolute:
            terms = (W, g_alpha_n, g_alpha_n / (tau_l * tau_l), g_tau, g_thr.sum(), g_bias.sum(), g_alpha_n.sum())
            peak += [np.max(v, initial=L(0)) for v in terms]
        out = {
            "input": g_in,
            "v0": W,
            "tau_mem": g_tau,
            "threshold": g_thr.sum(0),
            "bias": g_bias.sum(0),
            "peak": max(peak),
        }
        # Broadcast parameters (scalars, an (N,) v0) collect the gradient of every element they stand for.
        for name in ("tau_mem", "threshold", "bias"):
            if args[name].dim() == 0:
                out[name] = out[name].sum()
        if args["v0"].dim() == 1:
            out["v0"] = out["v0"].sum(0)
        if args["noise"] is not None:
            out["noise"] = g_in
        return out

    exact = bptt(gs, gw, gf, dsdu, dsdthr, s, w_prev, absolute=False)
    scale = bptt(*(np.abs(a) for a in (gs, gw, gf, dsdu, dsdthr, s, w_prev)), absolute=True)
    del exact["peak"]
    # Roundings per step on the carried chain: W += gw, W*thr, a, a*dsdu, U, alpha*U, and the
    # surrogate (a/thr or the pdf's exp and division, up to a few ulps): 10 counted per step; then
    # the sums over time, batch and (scalar parameters) neurons, and ~5 for tau's chain rule.
    m = 2 * (10 * T + T + B + N + 5)
    unit = torch.finfo(dtype).eps / 2
    gamma = m * unit / (1 - m * unit)
    return exact, scale, gamma


def check_gradient(name, g_fused, g_ref, exact, scale, gamma, tol, dtype):
    """The core tolerance, or (ill-conditioned sums) the a-priori rounding bound element-wise."""
    f = g_fused.detach().to(torch.float64).numpy().astype(np.longdouble)
    r = g_ref.detach().to(torch.float64).numpy().astype(np.longdouble)
    assert f.shape == r.shape == np.shape(exact), name
    norm = lambda a: float(np.sqrt(np.sum(np.square(a))))  # noqa: E731
    assert np.isfinite(f).all(), f"{name}: fused gradient not finite where the reference's is"
    d_fr, n_r = norm(f - r), norm(r)
    if d_fr <= tol * n_r:
        return
    event("gradient: ill-conditioned case decided by the rounding bound")
    # Underflow adds at most half the smallest subnormal (tiny * eps / 2) per rounding.
    bound = gamma * (scale + torch.finfo(dtype).tiny)
    worst_f = float(np.max(np.abs(f - exact) - bound, initial=-1.0))
    worst_r = float(np.max(np.abs(r - exact) - bound, initial=-1.0))
    assert worst_r <= 0, (
        f"{name}: the oracle's bound does not even hold for the reference (test bug): excess {worst_r:.3e}"
    )
    assert worst_f <= 0, (
        f"{name}: |fused-ref|/|ref| = {d_fr / max(n_r, 1e-300):.3e} > {tol:.0e} and the fused gradient "
        f"exceeds the rounding bound gamma*scale (gamma = {gamma:.2e}) by {worst_f:.3e}; "
        f"|fused-exact| = {norm(f - exact):.3e}, |ref-exact| = {norm(r - exact):.3e}"
    )


def all_finite(*ts):
    return all(t is None or bool(torch.isfinite(t).all()) for t in ts)


# ------------------------------------------------------------------------------- properties

def check_case(p):
    args = build(p)
    record = p["record"]
    note(f"shapes B,T,N = {p['B']},{p['T']},{p['N']}; dtype {p['dtype']}")
    for kind in p["specials"]:
        event(f"special: {kind}")
    x = args["input"]
    differentiable = x.dtype in GRAD_TOL
    finite_in = all_finite(x, args["v0"], args["noise"])
    grads = differentiable
    g = torch.Generator().manual_seed(p["seed"] + 1)
    cdtype = args["v0"].dtype
    B, T, N = x.shape
    upstream = (
        torch.randn(B, T, N, generator=g, dtype=torch.float64).to(x.dtype),
        torch.randn(B, T, N, generator=g, dtype=torch.float64).to(cdtype),
        torch.randn(B, N, generator=g, dtype=torch.float64).to(cdtype),
    )
    fused, g_fused = run(args, "fused", record, grads, upstream)
    ref, g_ref = run(args, "reference", record, grads, upstream)

    signed_zero = p["noise"] != "none"  # SPEC §1: without noise, equal up to the sign of a zero
    assert_same_bits(fused[0], ref[0], "spikes", signed_zero)
    if record:
        assert_same_bits(fused[1], ref[1], "recorded membrane", signed_zero)
    else:
        assert fused[1] is None and ref[1] is None
    assert_same_bits(fused[2], ref[2], "final state", signed_zero)

    if not record and grads and finite_in:
        # The oracle needs the trajectory: take it from a recorded reference run (same values).
        vmem_ref = run(args, "reference", True, False, upstream)[0][1]
    else:
        vmem_ref = ref[1]
    if not (grads and finite_in and all_finite(*ref) and all_finite(*g_ref.values())):
        event("gradients: not compared (non-finite case or half precision)")
        return
    exact, scale, gamma = oracle_gradients(args, vmem_ref, upstream, record)
    if scale["peak"] > torch.finfo(x.dtype).max / 4:
        # Some partial sum or product may exceed the dtype's range in one evaluation order and not
        # in another (the result is then inf/NaN or finite depending on the order): no float
        # implementation can promise a value here.
        event("gradients: not compared (intermediate magnitudes beyond the dtype's range)")
        return
    event("gradients: compared")
    for name in g_ref:
        check_gradient(name, g_fused[name], g_ref[name], exact[name], scale[name], gamma, GRAD_TOL[x.dtype], x.dtype)


@FUZZ
@given(cases())
def test_fused_matches_reference(p):
    check_case(p)


@FUZZ
@given(cases(dtypes=(torch.float32, torch.float64)).map(lambda p: {**p, "specials": set(p["specials"]) - NONFINITE}))
def test_fused_matches_reference_finite(p):
    """Training cases (float32/float64, finite input) get their own budget of examples, so the
    gradient comparison is exercised on nearly all of them."""
    check_case(p)


# --------------------------------------------------------- the corners, deterministically

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential], ids=["pwl", "pexp"])
def test_exact_boundaries_are_hit_and_agree(dtype, surrogate):
    """The generator's boundary placement works: at t = 0 with v0 = bias = 0 the membrane equals
    the input exactly, so u == thr, u == k*thr and u == thr - window really occur."""
    N = 6
    thr = torch.tensor([1e-3, 0.1, 0.75, 1.0, 3.0, 1e3], dtype=dtype)  # k*thr exact for the last four
    window = 0.25
    k = torch.tensor([1.0, 2.0, 3.0, 7.0, 2.0**16, 2.0**16 + 5.0], dtype=dtype)
    rows = [thr, k * thr, thr - torch.tensor(window, dtype=dtype), torch.nextafter(thr, torch.zeros_like(thr))]
    x = torch.stack(rows).unsqueeze(1).repeat(1, 3, 1)  # B=4 rows of boundary values, T=3
    args = dict(input=x, v0=torch.zeros(4, N, dtype=dtype), tau_mem=torch.full((N,), 0.02, dtype=dtype),
                threshold=thr, bias=torch.zeros(N, dtype=dtype), dt=1e-3, noise=None, noise_std=0.0,
                learning_window=window, max_spikes_per_dt=2.0**16, spike_generation_fn=surrogate)
    p_upstream = torch.Generator().manual_seed(0)
    upstream = (
        torch.randn(4, 3, N, generator=p_upstream, dtype=dtype),
        torch.randn(4, 3, N, generator=p_upstream, dtype=dtype),
                torch.randn(4, N, generator=p_upstream, dtype=dtype))
    fused, g_fused = run(args, "fused", True, True, upstream)
    ref, g_ref = run(args, "reference", True, True, upstream)
    for a, b, what in zip(fused, ref, ("spikes", "membrane", "final")):
        assert_same_bits(a, b, what, signed_zero=False)
    s0 = ref[0][:, 0]
    assert torch.equal(s0[0], torch.ones(N, dtype=dtype)), "u == thr fires exactly one spike"
    clamped = torch.minimum(k, torch.tensor(2.0**16, dtype=dtype))
    assert torch.equal(s0[1, 2:], clamped[2:]), "u == k*thr fires k (clamped)"
    assert torch.equal(s0[2], torch.zeros(N, dtype=dtype)) and torch.equal(s0[3], torch.zeros(N, dtype=dtype))
    exact, scale, gamma = oracle_gradients(args, ref[1], upstream, True)
    for name in g_ref:
        check_gradient(name, g_fused[name], g_ref[name], exact[name], scale[name], gamma, GRAD_TOL[dtype], dtype)


def test_oracle_agrees_with_autograd_float64():
    """The extended-precision oracle is SPEC §3; on a benign float64 case it must agree with
    autograd of the reference to float64 rounding (else the fuzz tolerance rule would be vacuous)."""
    p = dict(dtype=torch.float64, B=2, T=5, N=3, seed=11, tau_exp=[-2.0, -1.0], thr_exp=[-0.5, 0.2],
             param_shapes=("neuron", "scalar", "neuron"), dt=1e-3, window=0.5, max_spikes=4.0,
             input_exp=[-1, 0], specials=set(), special_density=0.1, v0_kind="random", bias_zero=False,
             noise="tensor", noise_std=0.0, surrogate=StepPWL, record=True)
    args = build(p)
    g = torch.Generator().manual_seed(5)
    upstream = tuple(torch.randn(s, generator=g, dtype=torch.float64) for s in ((2, 5, 3), (2, 5, 3), (2, 3)))
    ref, g_ref = run(args, "reference", True, True, upstream)
    exact, scale, gamma = oracle_gradients(args, ref[1], upstream, True)
    for name, gr in g_ref.items():
        assert np.all(np.abs(gr.numpy() - exact[name]) <= gamma * scale[name]), name
        e = exact[name].astype(np.float64)
        err = np.linalg.norm(gr.numpy() - e) / np.linalg.norm(e)
        assert err < 1e-12, (name, err)
