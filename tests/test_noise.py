"""In-kernel noise (SPEC §4, issue 5): a Philox stream keyed by torch's generator.

The noise is read back exactly through the recorded membrane: with alpha = 0 (tau -> 0), zero input
and bias and a threshold no value reaches, u[t] = ((0*w + 0) + z[t]) + 0 = z[t] and w[t] = u[t].
"""
import math

import numpy as np
import pytest
import torch

import lif_cuda
from lif_cuda.noise import draw_noise_key, kernel_noise, philox_normals

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
    # The value of element i depends only on i: a batch row alone (with its flat offset) equals the
    # same row inside the big call.
    B, T, N = shape
    idx = np.arange(T * N, dtype=np.uint64) + np.uint64(2 * T * N)
    row2 = torch.from_numpy(philox_normals(11, 22, idx).reshape(T, N))
    assert torch.equal(two[2], row2)


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
    # Lanes of one Philox block (the sine and cosine of one Box-Muller pair) must not correlate in
    # magnitude either: compare |z| of even and odd elements.
    flat = z.flatten()
    assert abs(corr(flat[0::2].abs(), flat[1::2].abs())) < 10 * bound


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
