"""SPEC §1 bit-exactness: the fused forward equals the pure-PyTorch reference to the last bit.

Spikes, the recorded post-reset membrane and the final state are compared with `torch.equal`
(float32 and float64) over random cases covering every shape and regime the spec names. Where a
case is meant to exercise something (several spikes in a step, the clamp, an exact boundary), the
test asserts that it really happened, so a change of inputs cannot make it vacuous.
"""
import math

import pytest
import torch

from conftest import (
    DTYPE_IDS,
    DTYPES,
    assert_bitwise,
    assert_outputs_bitwise,
    make_case,
    pre_spike_membrane,
    run_fused,
    run_reference,
)

pytestmark = pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)

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


@pytest.mark.parametrize("name", list(RANDOM_CASES))
def test_random_cases_equal_reference(name, dtype):
    case = make_case(dtype=dtype, **RANDOM_CASES[name])
    got = run_fused(case)
    want = run_reference(case)
    assert_outputs_bitwise(got, want)
    spikes = got[0]
    if spikes.numel() >= 20:  # not a silent network, not a saturated one
        assert (spikes > 0).any() and (spikes == 0).any()


def test_record_false_gives_same_spikes_and_state(dtype):
    case = make_case(21, 3, 17, 12, dtype)
    spikes, vmem, final = run_fused(case, record=False)
    assert vmem is None
    r_spikes, _, r_final = run_fused(case, record=True)
    assert_bitwise(spikes, r_spikes, "spikes")
    assert_bitwise(final, r_final, "final state")
    assert_outputs_bitwise((spikes, vmem, final), run_reference(case, record=False), record=False)


def test_multi_spike_steps(dtype):
    """Several events in one step: s = floor(u / thr) >= 2, and the reset subtracts s * thr."""
    case = make_case(31, 2, 12, 25, dtype, input_mean=3.0, input_scale=2.0)
    got = run_fused(case)
    assert_outputs_bitwise(got, run_reference(case))
    spikes = got[0]
    assert (spikes >= 2).any(), "the case was meant to produce multi-spike steps"
    assert (spikes >= 4).any()


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


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0), (0, 0, 0)])
@pytest.mark.parametrize("record", [True, False])
def test_zero_sized_returns_empty(dtype, shape, record):
    B, T, N = shape
    case = make_case(61, B, T, N, dtype)
    spikes, vmem, final = run_fused(case, record=record)
    assert spikes.shape == (B, T, N) and spikes.dtype == dtype
    assert final.shape == (B, N)
    if record:
        assert vmem.shape == (B, T, N)
    else:
        assert vmem is None
    if T == 0:
        assert_bitwise(final, case.v0, "final state with T = 0 (the initial state)")
    assert_outputs_bitwise((spikes, vmem, final), run_reference(case, record=record), record=record)


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


@pytest.mark.parametrize("layout", ["transposed", "strided", "time_sliced"])
def test_non_contiguous_equals_contiguous(dtype, layout):
    case = make_case(81, 3, 11, 27, dtype, noise=True)
    want = run_fused(case)
    assert_outputs_bitwise(run_fused(_strided(case, layout)), want)
    assert_outputs_bitwise(want, run_reference(case))


def test_broadcast_input_over_batch(dtype):
    """A stride-0 (expanded) input equals the materialised one."""
    case = make_case(91, 1, 15, 13, dtype)
    wide = case.replace(input=case.input.expand(4, -1, -1), v0=case.v0.expand(4, -1))
    dense = wide.replace(input=wide.input.contiguous(), v0=wide.v0.contiguous())
    assert_outputs_bitwise(run_fused(wide), run_fused(dense))
    assert_outputs_bitwise(run_fused(dense), run_reference(dense))
