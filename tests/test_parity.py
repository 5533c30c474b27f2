"""SPEC §1 and §7 bit-exactness: the fused forward equals the pure-PyTorch reference to the last bit,
for the LIF op and (in its own section) the synaptic op; zero-sized shapes for every model.

Spikes, the recorded post-reset membrane and the final state are compared with `torch.equal`
(float32 and float64) over random cases covering every shape and regime the spec names. Where a
case is meant to exercise something (several spikes in a step, the clamp, an exact boundary), the
test asserts that it really happened, so a change of inputs cannot make it vacuous.
"""
import math

import pytest
import torch

import lif_cuda
from conftest import (
    DTYPE_IDS,
    DTYPES,
    MODELS,
    assert_bitwise,
    assert_outputs_bitwise,
    assert_synaptic_bitwise,
    make_adaptive_case,
    make_case,
    make_synaptic_case,
    needs_fused_cpu,
    pre_spike_membrane,
    run_fused,
    run_reference,
    run_synaptic_fused,
    run_synaptic_reference,
)

DTYPE = pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)

# name: make_case arguments (seed, B, T, N and keywords)
RANDOM_CASES = {
    "T1": dict(seed=1, B=3, T=1, N=9, input_mean=1.0),
    "B1": dict(seed=2, B=1, T=25, N=17),
    "N1": dict(seed=3, B=4, T=30, N=1),
    "B1_T1_N1": dict(seed=4, B=1, T=1, N=1, input_mean=2.0),
    "odd_N": dict(seed=5, B=2, T=13, N=37),
    "N_over_1024_small_tiles": dict(seed=6, B=2, T=8, N=1500),
    "N_over_1024_full_tiles": dict(seed=7, B=8, T=3, N=1100),
    "scalar_params": dict(seed=8, B=3, T=20, N=11, params="scalar"),
    "mixed_params": dict(seed=9, B=3, T=20, N=11, params="mixed"),
    "v0_per_neuron": dict(seed=10, B=3, T=15, N=8, v0_shape="neuron"),
    "noise_tensor": dict(seed=11, B=3, T=20, N=19, noise=True),
    "noise_scalar_params": dict(seed=12, B=2, T=20, N=7, noise=True, params="scalar"),
    "dt_5ms_window_1": dict(seed=13, B=2, T=20, N=10, dt=5e-3, learning_window=1.0),
    "strong_input": dict(seed=14, B=2, T=10, N=33, input_mean=2.5, input_scale=2.0),
    "max_spikes_inf": dict(seed=15, B=2, T=10, N=9, input_mean=2.0, max_spikes_per_dt=math.inf),
}


@DTYPE
@pytest.mark.parametrize("name", list(RANDOM_CASES))
def test_random_cases_equal_reference(name, dtype):
    case = make_case(dtype=dtype, **RANDOM_CASES[name])
    got = run_fused(case)
    want = run_reference(case)
    assert_outputs_bitwise(got, want)
    spikes = got[0]
    if spikes.numel() >= 20:  # not a silent network, not a saturated one
        assert (spikes > 0).any() and (spikes == 0).any()


@DTYPE
def test_record_false_gives_same_spikes_and_state(dtype):
    case = make_case(21, 3, 17, 12, dtype)
    spikes, vmem, final = run_fused(case, record=False)
    assert vmem is None
    r_spikes, _, r_final = run_fused(case, record=True)
    assert_bitwise(spikes, r_spikes, "spikes")
    assert_bitwise(final, r_final, "final state")
    assert_outputs_bitwise((spikes, vmem, final), run_reference(case, record=False), record=False)


@DTYPE
def test_multi_spike_steps(dtype):
    """Several events in one step: s = floor(u / thr) >= 2, and the reset subtracts s * thr."""
    case = make_case(31, 2, 12, 25, dtype, input_mean=3.0, input_scale=2.0)
    got = run_fused(case)
    assert_outputs_bitwise(got, run_reference(case))
    spikes = got[0]
    assert (spikes >= 2).any(), "the case was meant to produce multi-spike steps"
    assert (spikes >= 4).any()


@DTYPE
@pytest.mark.parametrize("max_spikes", [1.0, 2.0, 3.5])
def test_max_spikes_per_dt_clamps(dtype, max_spikes):
    case = make_case(41, 2, 12, 25, dtype, input_mean=3.0, input_scale=2.0, max_spikes_per_dt=max_spikes)
    got = run_fused(case)
    assert_outputs_bitwise(got, run_reference(case))
    spikes, vmem, _ = got
    assert spikes.max().item() == max_spikes, "the clamp was meant to be hit"
    unclamped = run_reference(case, max_spikes_per_dt=math.inf)[0]
    assert (unclamped > max_spikes).any(), "without the clamp some step must emit more events"
    # A clamped step resets by only M * thr, so the membrane stays above threshold.
    thr = case.threshold.expand_as(vmem)
    assert (vmem >= thr).any()


@DTYPE
def test_negative_input(dtype):
    case = make_case(51, 3, 20, 14, dtype, input_mean=-1.0, input_scale=0.5)
    case = case.replace(input=-case.input.abs(), v0=case.v0.abs() * 4)  # spikes only from v0
    got = run_fused(case)
    assert_outputs_bitwise(got, run_reference(case))
    spikes, vmem, _ = got
    assert (case.input < 0).all()
    assert (vmem < -1).any() and (spikes > 0).any()


def _boundary_case(dtype, window):
    """v0 = 0 and bias = 0, so at t = 0: u = (alpha * 0 + I) + 0 = I exactly. The first step's
    input puts u on (and one ulp either side of) thr, thr - window and k * thr; the second step
    adds nothing, so u[1] = alpha * w[0] decays from the exact reset value."""
    thr = torch.tensor([0.5, 1.0, 0.7, 1.3, 0.3, 1.1], dtype=dtype)
    N = thr.numel()
    below = lambda t: torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype))  # noqa: E731
    above = lambda t: torch.nextafter(t, torch.tensor(math.inf, dtype=dtype))  # noqa: E731
    lower = thr - window  # rounded in dtype, as the surrogate's mask computes it
    k_thr = torch.stack([2 * thr, 3 * thr, 7 * thr])
    first = torch.cat([
        thr, below(thr), above(thr), lower, below(lower), above(lower),
        k_thr.reshape(-1), below(k_thr).reshape(-1), above(k_thr).reshape(-1),
    ])
    rows = first.numel() // N
    x = torch.zeros(rows, 2, N, dtype=dtype)
    x[:, 0, :] = first.reshape(rows, N)
    case = make_case(0, rows, 2, N, dtype, learning_window=window)
    return case.replace(
        input=x,
        v0=torch.zeros(rows, N, dtype=dtype),
        threshold=thr,
        bias=torch.zeros((), dtype=dtype),
        tau_mem=torch.full((N,), 0.02, dtype=dtype),
    )


@DTYPE
@pytest.mark.parametrize("window", [0.5, 0.25, 0.1, 0.0])
def test_exact_boundaries(dtype, window):
    case = _boundary_case(dtype, window)
    got = run_fused(case)
    want = run_reference(case)
    assert_outputs_bitwise(got, want)
    spikes, vmem, _ = got
    u = pre_spike_membrane(case, want[1])
    thr = case.threshold.expand_as(u)
    at_thr = u == thr
    at_lower = u == thr - window
    assert at_thr[:, 0].sum() >= thr.shape[-1], "u == thr was meant to be hit"
    assert at_lower[:, 0].sum() >= thr.shape[-1], "u == thr - window was meant to be hit"
    assert (spikes[at_thr] == 1).all() and (vmem[at_thr] == 0).all()
    if window > 0:
        assert (spikes[at_lower] == 0).all()
    # One ulp below the threshold: no spike; at or above: at least one.
    assert (spikes[u < thr] == 0).all() and (spikes[u >= thr] >= 1).all()
    assert (spikes[:, 0] >= 2).any() and (spikes[:, 0] == 0).any()


@DTYPE
@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0), (0, 0, 0)])
@pytest.mark.parametrize("record", [True, False])
def test_zero_sized_returns_empty(model, dtype, shape, record):
    """Nothing to compute: outputs of the right shapes (the records None without record), the
    initial state as the final one when T = 0, the reference's outputs, and no kernel launch."""
    B, T, N = shape
    case = model.case(61, B, T, N, dtype)
    before = lif_cuda.ops.kernel_launches()
    got = dict(zip(model.outputs, model.evolve_fn(**case, record=record, backend="fused")))
    assert lif_cuda.ops.kernel_launches() == before, "nothing to compute: no kernel"
    assert got["spikes"].shape == (B, T, N) and got["spikes"].dtype == dtype
    for name, o in got.items():
        if name in model.finals:
            assert o.shape == case[model.finals[name]].shape, name
        elif name != "spikes" and not record:
            assert o is None, name
        else:
            assert o.shape == (B, T, N) + ((model.S,) if name in ("isyn", "irec") else ()), name
    if T == 0:
        for name, k in model.finals.items():
            assert_bitwise(got[name], case[k], f"{name} with T = 0 (the initial state)")
    want = model.reference_fn(**case, record=record)
    for name, w in zip(model.outputs, want):
        if got[name] is None:
            assert w is None, name
        else:
            assert_bitwise(got[name], w, name)


@DTYPE
@pytest.mark.parametrize("split", [1, 9, 19])
@pytest.mark.parametrize("noise", [False, True], ids=["no_noise", "noise"])
def test_state_carried_across_calls_equals_one_call(dtype, split, noise):
    case = make_case(71, 3, 20, 21, dtype, noise=noise)
    whole = run_fused(case)
    first_half = case.replace(
        input=case.input[:, :split], noise=None if case.noise is None else case.noise[:, :split]
    )
    s1, w1, f1 = run_fused(first_half)
    second_half = case.replace(
        input=case.input[:, split:], v0=f1, noise=None if case.noise is None else case.noise[:, split:]
    )
    s2, w2, f2 = run_fused(second_half)
    assert_bitwise(torch.cat([s1, s2], dim=1), whole[0], "spikes, two calls vs one")
    assert_bitwise(torch.cat([w1, w2], dim=1), whole[1], "recorded membrane, two calls vs one")
    assert_bitwise(f2, whole[2], "final state, two calls vs one")
    assert_outputs_bitwise(whole, run_reference(case))


def _strided(case, layout):
    """The same values as `case`, laid out non-contiguously."""
    B, T, N = case.input.shape

    def transposed(t):  # (B,T,N) stored as (B,N,T)
        return t.transpose(1, 2).contiguous().transpose(1, 2)

    def every_other(t):  # a view with stride 2 in the last dimension
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        big[..., ::2] = t
        return big[..., ::2]

    if layout == "transposed":
        out = case.replace(
            input=transposed(case.input),
            v0=case.v0.t().contiguous().t(),
            noise=transposed(case.noise),
            tau_mem=every_other(case.tau_mem),
            threshold=every_other(case.threshold),
            bias=every_other(case.bias),
        )
    elif layout == "strided":
        out = case.replace(input=every_other(case.input), v0=every_other(case.v0), noise=every_other(case.noise))
    elif layout == "time_sliced":
        big = torch.zeros(B, 2 * T, N, dtype=case.input.dtype)
        big[:, ::2] = case.input
        out = case.replace(input=big[:, ::2])
    else:
        raise AssertionError(layout)
    assert not out.input.is_contiguous()
    assert torch.equal(out.input, case.input)
    return out


@DTYPE
@pytest.mark.parametrize("layout", ["transposed", "strided", "time_sliced"])
def test_non_contiguous_equals_contiguous(dtype, layout):
    case = make_case(81, 3, 11, 27, dtype, noise=True)
    want = run_fused(case)
    assert_outputs_bitwise(run_fused(_strided(case, layout)), want)
    assert_outputs_bitwise(want, run_reference(case))


@DTYPE
def test_broadcast_input_over_batch(dtype):
    """A stride-0 (expanded) input equals the materialised one."""
    case = make_case(91, 1, 15, 13, dtype)
    wide = case.replace(input=case.input.expand(4, -1, -1), v0=case.v0.expand(4, -1))
    dense = wide.replace(input=wide.input.contiguous(), v0=wide.v0.contiguous())
    assert_outputs_bitwise(run_fused(wide), run_fused(dense))
    assert_outputs_bitwise(run_fused(dense), run_reference(dense))


# ------------------------------------------------------------------ the synaptic op (SPEC §7)
# The fused CPU op gives the reference's bits (spikes, the records vmem/isyn/irec, the final state),
# feed-forward and recurrent, for every parameter shape; the synapse sum in torch.sum's order.


@needs_fused_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S", [1, 2, 3, 8])
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("shapes", ["full-neuron-rows", "row-scalar-shared", "scalar-neuron-shared"])
def test_synaptic_forward_equals_reference(dtype, S, rec, shapes):
    tau_syn, params, state = shapes.split("-")
    B, T, N = 3, 23, 7
    case = make_synaptic_case(S + 10 * rec, B, T, N, S, dtype, tau_syn=tau_syn, params=params, rec=rec, state=state)
    got, want = run_synaptic_fused(case), run_synaptic_reference(case)
    assert_synaptic_bitwise(got, want)
    assert (got[0] > 0).any() and (got[0] == 0).any(), "the case should spike, and not everywhere"
    if not rec:
        assert torch.equal(got[3], torch.zeros_like(got[3])), "irec is zeros without recurrent weights"
    # Without record: the same spikes and state from the variant that records nothing.
    assert_synaptic_bitwise(run_synaptic_fused(case, record=False), run_synaptic_reference(case, record=False),
                            record=False)


@needs_fused_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_synaptic_sum_order_is_torch_sum(dtype):
    """SPEC §7: sum_k i[k] in the order torch.sum(dim=-1) adds. Established by experiment and from
    ATen's SumKernel.cpp (csrc/core/torch_sum.h cpu_torch_sum): rows shorter than 32 bytes of lanes are summed as
    4 interleaved running sums, longer ones over 8-float (4-double) vectors, with a cascade of partial
    sums from 64 vectors on. The membrane record pins it: u = w*alpha + sum + bias, bit for bit, for S
    across every regime; the currents are spread over 8 decades so that any other order shows."""
    B, T, N = 2, 3, 3
    for S in list(range(1, 41)) + [63, 64, 65, 127, 129, 255, 511, 512, 513, 600, 2100]:
        g = torch.Generator().manual_seed(S)
        case = make_synaptic_case(S, B, T, N, S, dtype)
        case["input"] = (torch.randn(B, T, N * S, generator=g, dtype=torch.float64)
                         * torch.logspace(-4, 4, N * S, dtype=torch.float64)).to(dtype)
        case["threshold"] = torch.full((N,), 1e30, dtype=dtype)  # no spikes: the membrane is the sum's record
        got, want = run_synaptic_fused(case), run_synaptic_reference(case)
        assert_bitwise(got[1], want[1], f"membrane, S={S}")
    # The test can tell orders apart: a plain left-to-right sum differs from torch.sum here.
    x = torch.randn(64, 7, dtype=dtype) * torch.logspace(-4, 4, 7, dtype=dtype)
    seq = x[:, 0]
    for k in range(1, 7):
        seq = seq + x[:, k]
    assert not torch.equal(seq, x.sum(-1))


@needs_fused_cpu
def test_synaptic_max_spikes_clamp_and_multi_spikes():
    case = make_synaptic_case(4, 2, 15, 5, 2, input_mean=3.0, rec=True)
    for M in (1.0, 3.0):
        got, want = run_synaptic_fused(case, max_spikes_per_dt=M), run_synaptic_reference(case, max_spikes_per_dt=M)
        assert_synaptic_bitwise(got, want)
        assert got[0].max() == M


@needs_fused_cpu
def test_synaptic_strided_input_gives_the_contiguous_result():
    case = make_synaptic_case(6, 3, 11, 4, 2, rec=True)
    wide = torch.randn(3, 11, 16)
    wide[..., ::2] = case["input"]
    strided = dict(case, input=wide[..., ::2])
    assert not strided["input"].is_contiguous()
    assert_synaptic_bitwise(run_synaptic_fused(strided), run_synaptic_fused(case))


@needs_fused_cpu
def test_synaptic_nan_input_propagates():
    case = make_synaptic_case(8, 2, 9, 3, 2)
    case["input"][0, 4, 1] = math.nan
    got, want = run_synaptic_fused(case), run_synaptic_reference(case)
    assert torch.isnan(got[1][0, 4:, 0]).all(), "NaN stays in the membrane it entered"
    assert torch.equal(got[0][1], want[0][1]), "and nowhere else"


@needs_fused_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_ahp_sum_order_is_torch_sum_over_the_s_plus_one_lanes(dtype):
    """SPEC §9: the membrane adds the S + 1 currents [i..., h] in the order torch.sum adds
    torch.cat((isyn, iahp), 2) (Rockpool's aLIFTorch), across every regime of that order; h is
    spread over decades too, so that a sum of i then + h shows."""
    model = MODELS["ahp-ff"]
    B, T, N = 2, 3, 3
    for S in list(range(1, 41)) + [63, 64, 127, 128, 511, 600]:
        g = torch.Generator().manual_seed(S)
        case = model.case(S, B, T, N, dtype, S=S)
        case["input"] = (torch.randn(B, T, N * S, generator=g, dtype=torch.float64)
                         * torch.logspace(-4, 4, N * S, dtype=torch.float64)).to(dtype)
        case["h0"] = (torch.randn(B, N, generator=g, dtype=torch.float64) * 1e3).to(dtype)
        case["threshold"] = torch.full((N,), 1e30, dtype=dtype)  # no spikes: the membrane is the sum's record
        got = model.evolve_fn(**case, record=True, backend="fused")
        want = model.reference_fn(**case, record=True)
        assert_bitwise(got[1], want[1], f"membrane, S={S}")


# ------------------------------------------------------------------ the adaptive LIF (SPEC §10)

ADAPTIVE_OUTPUTS = ("spikes", "vmem", "adapt", "v_final", "b_final")


@needs_fused_cpu
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("variant", ["plain", "noise", "scalar-shared", "M-2", "window-0", "N-1100", "f16", "bf16"])
def test_adaptive_forward_bit_identical_to_reference(dtype, variant):
    """SPEC §10: spikes, both records and both final states bit for bit, the threshold really moving
    (several spikes per step and an adaptation that changes the outcome)."""
    kw = {"scalar-shared": dict(params="scalar", state="shared"), "N-1100": dict(B=2, T=6, N=1100)}.get(variant, {})
    shape = dict(B=3, T=40, N=11)
    shape.update({k: kw.pop(k) for k in ("B", "T", "N") if k in kw})
    case = make_adaptive_case(61, **shape, dtype=dtype, **kw)
    call = dict(max_spikes_per_dt=2.0 if variant == "M-2" else 2.0**16,
                learning_window=0.0 if variant == "window-0" else 0.5)
    if variant == "noise":
        g = torch.Generator().manual_seed(62)
        call["noise"] = (0.2 * torch.randn(case["input"].shape, generator=g, dtype=torch.float64)).to(dtype)
    if variant in ("f16", "bf16"):
        if dtype == torch.float64:
            pytest.skip("half input is computed in float32")
        case["input"] = case["input"].to(torch.float16 if variant == "f16" else torch.bfloat16)
    got = lif_cuda.adaptive_evolve(**case, record=True, backend="fused", **call)
    want = lif_cuda.adaptive_evolve_reference(**case, record=True, **call)
    for name, g_, w_ in zip(ADAPTIVE_OUTPUTS, got, want):
        assert_bitwise(g_, w_, name)
    assert got[0].dtype == case["input"].dtype
    assert (want[0] >= 2).any()
    # The adaptation matters: without it (beta_adapt = 0) the spikes differ.
    plain = lif_cuda.adaptive_evolve_reference(**dict(case, beta_adapt=torch.zeros_like(case["beta_adapt"])), **call)
    assert not torch.equal(plain[0], want[0])


@needs_fused_cpu
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_adaptive_without_adaptation_is_the_lif(dtype):
    """beta_adapt = 0 makes the threshold constant: the adaptive op then gives the LIF op's spikes and
    membrane bit for bit (the same §1 steps), while its adaptation still follows the spikes."""
    case = make_adaptive_case(63, 3, 30, 9, dtype)
    case["beta_adapt"] = torch.zeros_like(case["beta_adapt"])
    s, vmem, adapt, vf, bf = lif_cuda.adaptive_evolve(**case, record=True, backend="fused")
    ls, lvmem, lvf = lif_cuda.lif_evolve(case["input"], case["v0"], case["tau_mem"], case["threshold"], case["bias"],
                                         case["dt"], record=True, backend="fused")
    assert_bitwise(s, ls, "spikes")
    assert_bitwise(vmem, lvmem, "vmem")
    assert_bitwise(vf, lvf, "final membrane")
    assert adapt.abs().sum() > 0


@needs_fused_cpu
def test_adaptive_streamed_outputs_equal_the_row_calls():
    """A CPU call that moves more than a last-level cache holds (input read, spikes and u written)
    writes its spikes and u with streaming stores (csrc/cpu/tiles.h, from 32 MiB): its spikes, final
    states, saved u and checkpoints, and the backward's input gradient equal, bit for bit, those of
    each batch row called alone (small enough to go through the caches)."""
    B, T, N = 5, 1024, 1024  # input, spikes and u: 60 MiB moved in one call, 12 MiB in a row's
    case = make_adaptive_case(64, B, T, N)
    params = [case[k] for k in ("tau_mem", "threshold", "tau_adapt", "beta_adapt")]
    M, window, ops = 2.0**16, 0.5, torch.ops.lif_cuda

    def forward(c):
        return ops.adaptive_forward(c["input"], c["v0"], c["b0"], *params[:2], c["bias"], *params[2:], None, None,
                                    c["dt"], 0.0, window, M, 0, False, True)

    def backward(gs, out, c):
        return ops.adaptive_backward(gs, None, None, None, None, out[5], out[6], c["v0"], c["b0"], *params, c["dt"],
                                     window, M, 0, False)

    gs = torch.randn(B, T, N, generator=torch.Generator().manual_seed(65))
    big = forward(case)
    g_big = backward(gs, big, case)
    assert (big[0] > 0).any()
    for b in range(B):
        row = dict(case, input=case["input"][b : b + 1], v0=case["v0"][b : b + 1], b0=case["b0"][b : b + 1])
        small = forward(row)
        for i, name in ((0, "spikes"), (3, "v_final"), (4, "b_final"), (5, "u"), (6, "b checkpoints")):
            assert_bitwise(big[i][b : b + 1], small[i], name)
        assert_bitwise(g_big[0][b : b + 1], backward(gs[b : b + 1], small, row)[0], "grad_input")


# name: (B, T, N) and what the call adds; each call moves >= 32 MiB (the streaming threshold, counted
# as the kernel counts it), each of its rows less.
STREAMED_CALLS = {
    # padding written with plain stores after the streamed rows; both records; a row of length 0
    "lengths-record": dict(shape=(3, 1024, 1024), record=True, lengths=[1024, 0, 517]),
    "noise-tensor": dict(shape=(3, 1024, 1024), noise=True),
    # the rows' calls given the kernel's draws as a tensor (lif_cuda.noise)
    "kernel-noise": dict(shape=(3, 1024, 1024), kernel_noise=True),
    # rows on cache lines, not every tile: streamed and plain tiles in one call, a streamed tile's last
    # partial line with plain stores
    "N-1008": dict(shape=(3, 1024, 1008)),
    "N-1000-rows-off-lines": dict(shape=(3, 1024, 1000)),
    "input-off-a-line": dict(shape=(3, 1024, 1024), offset_input=True),
    "just-above": dict(shape=(2, 1366, 1024)),
    "no-save-at-the-threshold": dict(shape=(2, 2048, 1024), save=False),
    "float64": dict(shape=(2, 700, 1024), dtype=torch.float64),
    "bfloat16-io": dict(shape=(4, 1024, 1024), io=torch.bfloat16),
}


@needs_fused_cpu
@pytest.mark.parametrize("name", list(STREAMED_CALLS))
def test_adaptive_streamed_calls_equal_the_row_calls(name):
    """As test_adaptive_streamed_outputs_equal_the_row_calls, for what surrounds the streaming stores:
    lengths (padding) and records, noise (a tensor, or drawn in the kernel), rows or tiles off cache
    lines, an input off a cache line, the threshold's edge, and the types that do not stream
    (float64, bfloat16 I/O). Every output of the forward, and the backward's input and state
    gradients, equal each row's own call bit for bit."""
    kw = STREAMED_CALLS[name]
    (B, T, N), dtype = kw["shape"], kw.get("dtype", torch.float32)
    record, save = kw.get("record", False), kw.get("save", True)
    case = make_adaptive_case(66, B, T, N, dtype)
    x = case["input"].to(kw.get("io", dtype))
    if kw.get("offset_input"):
        flat = torch.empty(x.numel() + 1, dtype=x.dtype)
        flat[1:] = x.flatten()
        x = flat[1:].view(B, T, N)
        assert x.data_ptr() % 64 != 0
    g = torch.Generator().manual_seed(67)
    noise = (0.3 * torch.randn(B, T, N, generator=g, dtype=torch.float64)).to(dtype) if kw.get("noise") else None
    lengths = torch.tensor(kw["lengths"], dtype=torch.int64) if "lengths" in kw else None
    key, scale = torch.tensor([11, 3], dtype=torch.int64), 0.3
    if kw.get("kernel_noise"):
        noise = lif_cuda.noise.kernel_noise((B, T, N), scale, key, dtype=dtype)
    moved = B * T * N * (2 * x.element_size() + (case["v0"].element_size() if save else 0))
    assert moved >= 32 << 20 > moved // B
    params = [case[k] for k in ("tau_mem", "threshold", "tau_adapt", "beta_adapt")]
    M, window, ops = 2.0**16, 0.5, torch.ops.lif_cuda

    def rows(t, sl):
        return None if t is None else t[sl]

    def forward(sl):
        drawn = kw.get("kernel_noise") and sl == slice(None)  # the whole call draws its own
        z, z_key, z_scale = (None, key, scale) if drawn else (rows(noise, sl), None, 0.0)
        return ops.adaptive_forward(x[sl], case["v0"][sl], case["b0"][sl], *params[:2], case["bias"], *params[2:],
                                    z, z_key, case["dt"], z_scale, window, M, 0, record, save, rows(lengths, sl))

    grads = [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype) for s in ((B, T, N),) * 3 + ((B, N),) * 2]
    grads[0] = grads[0].to(x.dtype)  # on the spikes

    def backward(out, sl):
        gs, gw, gb, gvf, gbf = (t[sl] for t in grads)
        return ops.adaptive_backward(gs, gw if record else None, gb if record else None, gvf, gbf, out[5], out[6],
                                     case["v0"][sl], case["b0"][sl], *params, case["dt"], window, M, 0, False,
                                     rows(lengths, sl))

    names = ["spikes", "vmem", "adapt", "v_final", "b_final", "u", "b checkpoints"]
    kept = [i for i, n in enumerate(names) if (record or n not in ("vmem", "adapt")) and (save or i < 5)]
    big = forward(slice(None))
    assert (big[0] > 0).any() and (big[0] == 0).any()
    g_big = backward(big, slice(None)) if save else None
    for b in range(B):
        sl = slice(b, b + 1)
        small = forward(sl)
        for i in kept:
            assert_bitwise(big[i][sl], small[i], f"{names[i]}, row {b}")
        if save:
            g_small = backward(small, sl)
            for i, what in enumerate(("grad_input", "grad_v0", "grad_b0")):
                assert_bitwise(g_big[i][sl], g_small[i], f"{what}, row {b}")
