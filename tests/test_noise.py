"""In-kernel noise (SPEC §4): a Philox stream keyed by torch's generator.

The noise is read back exactly through the recorded membrane: with alpha = 0 (tau -> 0), zero input
and bias and a threshold no value reaches, u[t] = ((0*w + 0) + z[t]) + 0 = z[t] and w[t] = u[t].
The synaptic op's noise tensor and in-kernel noise: at the end.
"""
import math

import numpy as np
import pytest
import torch

import lif_cuda
from conftest import (
    assert_bitwise,
    assert_synaptic_bitwise,
    make_adaptive_case,
    make_synaptic_case,
    run_synaptic,
    run_synaptic_fused,
    run_synaptic_reference,
)
from lif_cuda import synaptic_evolve
from lif_cuda.noise import draw_noise_key, kernel_noise, philox_normals, standard_normals

pytestmark = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")


def raw_noise(shape, key, scale=1.0, dtype=torch.float32):
    """The noise term the fused CPU kernel adds, for an explicit (seed, offset) key."""
    B, T, N = shape
    z = torch.zeros(shape, dtype=dtype)
    _, w, _, _, _ = torch.ops.lif_cuda.lif_forward(
        z, torch.zeros(B, N, dtype=dtype), torch.full((N,), 1e-12, dtype=dtype),
        torch.full((N,), 1e30, dtype=dtype), torch.zeros(N, dtype=dtype), None, key, 1.0, scale, 0.5, 65536.0, 0,
        True, False,
    )
    return w


def seeded_noise(shape, seed, noise_std=1.0, dt=1.0, backend="fused"):
    """The noise the public API draws under torch.manual_seed(seed)."""
    B, T, N = shape
    torch.manual_seed(seed)
    _, w, _ = lif_cuda.lif_evolve(
        torch.zeros(shape), torch.zeros(N), torch.full((N,), 1e-12), torch.full((N,), 1e30), torch.zeros(N),
        dt, noise_std=noise_std, record=True, backend=backend,
    )
    return w


def test_the_readback_is_exact():
    # A noise tensor passed in comes back unchanged through the alpha = 0 trick.
    z = torch.randn(2, 5, 7)
    _, w, _ = lif_cuda.lif_evolve(
        torch.zeros(2, 5, 7), torch.zeros(7), torch.full((7,), 1e-12), torch.full((7,), 1e30), torch.zeros(7),
        1.0, noise=z, record=True, backend="fused",
    )
    assert torch.equal(w, z)


def test_reproducible_under_a_seed_and_different_across_seeds():
    a = seeded_noise((3, 40, 50), seed=7)
    b = seeded_noise((3, 40, 50), seed=7)
    c = seeded_noise((3, 40, 50), seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a == c).float().mean() < 1e-3


def test_successive_calls_draw_fresh_noise():
    torch.manual_seed(0)
    k1, k2 = draw_noise_key(), draw_noise_key()
    assert not torch.equal(k1, k2)
    assert not torch.equal(raw_noise((1, 10, 10), k1), raw_noise((1, 10, 10), k2))


def test_scale_is_noise_std_sqrt_dt():
    unit = seeded_noise((2, 50, 64), seed=3, noise_std=1.0, dt=1.0)
    scaled = seeded_noise((2, 50, 64), seed=3, noise_std=0.5, dt=1e-2)
    assert torch.equal(scaled, torch.tensor(0.5 * math.sqrt(1e-2), dtype=torch.float32) * unit)


def test_kernel_stream_equals_its_numpy_definition():
    # lif_cuda.noise writes the stream out in NumPy; the kernel must match it bit for bit, for any
    # key (including negative int64 halves) and for float32 and float64 state.
    for key in ([0, 0], [123456789012345, 987654321], [-5, -(2**62)]):
        key = torch.tensor(key, dtype=torch.int64)
        for dtype in (torch.float32, torch.float64):
            got = raw_noise((3, 17, 29), key, scale=0.7, dtype=dtype)
            assert torch.equal(got, kernel_noise((3, 17, 29), 0.7, key, dtype=dtype))


def test_reference_backend_draws_the_same_noise():
    assert torch.equal(seeded_noise((2, 20, 33), 5), seeded_noise((2, 20, 33), 5, backend="reference"))


def test_independent_of_threads_and_tiling():
    key = torch.tensor([11, 22])
    shape = (3, 20, 2500)  # several tiles per row
    torch.set_num_threads(1)
    try:
        one = raw_noise(shape, key)
    finally:
        torch.set_num_threads(2)
    two = raw_noise(shape, key)
    assert torch.equal(one, two)
    # The value of element (b, t, n) depends only on (b*N + n, t): batch row 2 computed alone, from
    # its subsequences, equals the same row inside the big call.
    B, T, N = shape
    sub = np.arange(N, dtype=np.uint64)[None, :] + np.uint64(2 * N)
    row2 = torch.from_numpy(philox_normals(11, 22, sub, np.arange(T, dtype=np.uint64)[:, None]))
    assert torch.equal(two[2], row2)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 5), (3, 2, 7), (1, 3, 9), (2, 5, 3), (3, 6, 13), (5, 9, 1),
                                   (2, 12, 1030)], ids=lambda s: "x".join(map(str, s)))
def test_stream_for_shapes_not_multiples_of_four(shape):
    """B, T, N not multiples of 4 (T = 1: one lane of a block used), N beyond one tile: the kernel's
    stream is noise.py's, and noise.py's block-wise (B,T,N) draw is its per-element definition."""
    key = torch.tensor([987654321987, 55], dtype=torch.int64)
    got = raw_noise(shape, key)
    want = torch.from_numpy(standard_normals(shape, key))
    assert torch.equal(got, want)
    B, T, N = shape
    sub = (np.arange(B, dtype=np.uint64)[:, None, None] * np.uint64(N) + np.arange(N, dtype=np.uint64)[None, None, :])
    per_element = philox_normals(987654321987, 55, sub, np.arange(T, dtype=np.uint64)[None, :, None])
    assert torch.equal(want, torch.from_numpy(per_element))


def test_layout_one_block_four_steps_of_one_neuron():
    """The counter layout (csrc/core/philox.h): element (b, t, n) is lane t % 4 of the block at subsequence
    b*N + n, position offset + t // 4. So a value does not depend on T (a longer run starts with the
    shorter one's noise), a neuron's stream is the same inside any batch shape with the same b*N + n,
    and the next key offset by k blocks is the same stream shifted by 4k steps."""
    key = torch.tensor([31337, 1000], dtype=torch.int64)
    short, long_ = raw_noise((2, 7, 5), key), raw_noise((2, 13, 5), key)
    assert torch.equal(long_[:, :7], short)
    shifted = raw_noise((2, 9, 5), torch.tensor([31337, 1001], dtype=torch.int64))
    assert torch.equal(long_[:, 4:13], shifted)
    assert not torch.equal(long_[:, :9], shifted)
    # One block gives the pair (cos, sin) of one angle and radius twice: z[4q]^2 + z[4q+1]^2 is the
    # squared radius of w0, i.e. -2 log u: the pairing is along time, not along neurons.
    z = raw_noise((1, 8, 3), key, dtype=torch.float64)
    for q in (0, 1):
        r2 = z[0, 4 * q] ** 2 + z[0, 4 * q + 1] ** 2
        words = lif_cuda.noise._philox_blocks(31337, 1000, np.arange(3, dtype=np.uint64), np.uint64(q))
        u = ((words[0] >> np.uint32(8)) + np.uint32(1)).astype(np.float64) / 2.0**24
        assert torch.allclose(r2, torch.from_numpy(-2.0 * np.log(u)), rtol=1e-5)


@pytest.mark.parametrize("offset", [2**32 - 2, -3, 2**63 - 1], ids=["carry-into-high-word", "wrap-2^64", "2^63"])
def test_64_bit_counter_position(offset):
    """The position offset + t // 4 is 64-bit, modulo 2^64: the carry from its low into its high word
    and the wrap past 2^64 as noise.py computes them."""
    key = torch.tensor([424242, offset], dtype=torch.int64)
    shape = (2, 17, 6)  # positions offset .. offset + 4
    assert torch.equal(raw_noise(shape, key), torch.from_numpy(standard_normals(shape, key)))


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_ISA_CHECK = r"""
import sys, torch, lif_cuda
from lif_cuda.noise import standard_normals
for shape, key in [((3, 9, 2500), [11, 22]), ((2, 5, 37), [-1, 2**32 - 2]), ((1, 3, 7), [5, -3]),
                   ((2, 4, 16), [0, 0])]:
    B, T, N = shape
    key = torch.tensor(key, dtype=torch.int64)
    _, w, _, _, _ = torch.ops.lif_cuda.lif_forward(
        torch.zeros(shape), torch.zeros(B, N), torch.full((N,), 1e-12), torch.full((N,), 1e30), torch.zeros(N),
        None, key, 1.0, 1.0, 0.5, 65536.0, 0, True, False)
    if not torch.equal(w, torch.from_numpy(standard_normals(shape, key))):
        sys.exit(f"{shape} {key.tolist()}: the kernel's stream differs from noise.py")
print("same")
"""


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_every_cpu_variant_draws_the_same_stream(isa):
    """The CPU draws the noise rows with AVX-512, AVX2 or portable loops (csrc/cpu/noise_x86.h),
    the best the CPU has; LIF_CPU_NOISE_ISA forces a lower one. Each gives noise.py's bits: tiles of
    many widths (vector tails of every length), 64-bit positions that carry and wrap."""
    import os
    import subprocess
    import sys

    need = {"avx2": "avx2", "avx512": "avx512f"}.get(isa)
    if need and need not in _cpu_flags():
        pytest.skip(f"this CPU has no {need}")
    env = dict(os.environ, LIF_CPU_NOISE_ISA=isa)
    proc = subprocess.run([sys.executable, "-c", _ISA_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("same"), proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def million():
    return raw_noise((4, 250, 1024), torch.tensor([2024, 1]))  # 1,024,000 draws


def test_mean_and_standard_deviation(million):
    z = million.double().flatten()
    n = z.numel()
    assert n >= 1_000_000
    # 5 standard errors: a correct generator fails this with probability ~6e-7.
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.std().item() - 1.0) < 5 * math.sqrt(0.5 / n)
    # Higher moments of the normal: skewness 0, kurtosis 3.
    assert abs((z**3).mean().item()) < 5 * math.sqrt(15 / n)
    assert abs((z**4).mean().item() - 3.0) < 5 * math.sqrt(96 / n)


def test_histogram_goodness_of_fit(million):
    z = million.double().flatten().numpy()
    edges = np.concatenate([[-np.inf], np.linspace(-4, 4, 41), [np.inf]])
    observed, _ = np.histogram(z, bins=edges)
    cdf = np.array(
        [0.5 * (1 + math.erf(e / math.sqrt(2))) if np.isfinite(e) else (0.0 if e < 0 else 1.0) for e in edges]
    )
    expected = np.diff(cdf) * z.size
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    dof = len(observed) - 1
    # chi2 with 41 dof: P(chi2 > 90) ~ 1e-5. A biased transform (e.g. a wrong log or angle) gives
    # chi2 in the thousands with a million draws.
    assert chi2 < 90, f"chi2 = {chi2:.1f} for {dof} dof"


def test_no_correlation_between_neighbours(million):
    z = million.double()
    bound = 5 / math.sqrt(z.numel())

    def corr(a, b):
        a, b = a.flatten(), b.flatten()
        a, b = a - a.mean(), b - b.mean()
        return ((a * b).mean() / (a.std() * b.std())).item()

    assert abs(corr(z[:, :, 1:], z[:, :, :-1])) < 5 * bound  # neighbouring neurons
    assert abs(corr(z[:, 1:], z[:, :-1])) < 5 * bound  # neighbouring time steps
    assert abs(corr(z[1:], z[:-1])) < 5 * bound  # neighbouring batch rows
    # Lanes of one Philox block (the cosine and sine of one Box-Muller pair: steps 4q and 4q+1, 4q+2
    # and 4q+3 of one neuron) must not correlate in magnitude either: compare |z| of even and odd
    # steps, and the two pairs of a block.
    assert abs(corr(z[:, 0::2].abs(), z[:, 1::2].abs())) < 10 * bound
    assert abs(corr(z[:, 0:248:4].abs(), z[:, 2:248:4].abs())) < 10 * bound


def test_module_kernel_noise_is_seeded_and_differs_from_no_noise():
    layer = lif_cuda.LIFNeuron(16, noise_std=0.5, backend="fused")
    x = torch.full((2, 100, 16), 0.5)
    torch.manual_seed(0)
    a = layer(x)
    layer.reset_state()
    torch.manual_seed(0)
    b = layer(x)
    layer.reset_state()
    quiet = lif_cuda.LIFNeuron(16, backend="fused")(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, quiet)


def test_module_torch_noise_matches_an_explicit_randn_tensor():
    # noise="torch" draws noise_std * sqrt(dt) * randn exactly as Rockpool does.
    layer = lif_cuda.LIFNeuron(8, noise_std=0.3, noise="torch", backend="fused")
    x = torch.full((2, 50, 8), 0.2)
    torch.manual_seed(4)
    s, _, rec = layer.evolve(x, record=True)
    torch.manual_seed(4)
    z = 0.3 * torch.sqrt(torch.tensor(1e-3)) * torch.randn(2, 50, 8)
    s2, w2, _ = lif_cuda.lif_evolve(x, torch.zeros(8), layer.tau_mem, layer.threshold, layer.bias, 1e-3,
                                    noise=z, record=True, backend="reference")
    assert torch.equal(s, s2) and torch.equal(rec["vmem"], w2)


# ------------------------------------------------------------------ the synaptic model (SPEC §7)


@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_synaptic_noise_tensor_and_in_kernel_noise(rec):
    B, T, N, S = 2, 13, 6, 2
    case = make_synaptic_case(5, B, T, N, S, rec=rec)
    z = 0.3 * torch.randn(B, T, N, generator=torch.Generator().manual_seed(1))
    assert_synaptic_bitwise(run_synaptic_fused(case, noise=z), run_synaptic_reference(case, noise=z))
    # In-kernel noise: the fused and reference backends draw the same stream under one seed.
    outs = []
    for backend in ("fused", "reference"):
        torch.manual_seed(3)
        outs.append(run_synaptic(synaptic_evolve, case, backend=backend, noise_std=0.5))
    assert_synaptic_bitwise(*outs)
    assert not torch.equal(outs[0][1], run_synaptic_fused(case)[1]), "the noise changed the membrane"


# ------------------------------------------------------------------ the adaptive LIF (SPEC §10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_adaptive_in_kernel_noise_is_the_lif_stream(dtype, keep_global_rng):
    """The adaptive op draws the LIF's stream (one Philox key per call, element (b, t, n) the same
    number): with beta_adapt = 0 it is the LIF op under the same seed, bit for bit; the reference
    backend draws the same noise; another seed gives other spikes."""
    case = make_adaptive_case(71, 3, 37, 6, dtype, input_mean=0.3)
    still = dict(case, beta_adapt=torch.zeros_like(case["beta_adapt"]))
    lif_args = [case[k] for k in ("input", "v0", "tau_mem", "threshold", "bias")]

    def seeded(fn, seed, *args, **kw):
        torch.manual_seed(seed)
        return fn(*args, noise_std=0.5, record=True, **kw)

    a = seeded(lif_cuda.adaptive_evolve, 3, **still, backend="fused")
    lif = seeded(lif_cuda.lif_evolve, 3, *lif_args, case["dt"], backend="fused")
    assert_bitwise(a[0], lif[0], "spikes")
    assert_bitwise(a[1], lif[1], "vmem")
    fused = seeded(lif_cuda.adaptive_evolve, 4, **case, backend="fused")
    ref = seeded(lif_cuda.adaptive_evolve, 4, **case, backend="reference")
    for name, f, r in zip(("spikes", "vmem", "adapt", "v_final", "b_final"), fused, ref):
        assert_bitwise(f, r, name)
    quiet = lif_cuda.adaptive_evolve(**case, record=True, backend="fused")
    assert not torch.equal(fused[1], quiet[1])
