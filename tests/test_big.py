"""64-bit indexing (SPEC §6): more than 2^31 elements in one call, compared against the same
computation done in pieces small enough for 32-bit indices.

The big cases are skipped unless LIF_BIG_TESTS=1 (they need ~19.5 GB of free memory and a minute or
two); the same code runs on small analogues always, so the comparison logic itself is tested in CI.
Run them alone:  LIF_BIG_TESTS=1 .venv/bin/python -m pytest -s tests/test_big.py
(-s shows the figures: elements, seconds, GB/s).

Memory: under torch.inference_mode with record=False the fused op saves nothing for backward, so a
call holds the input and the spikes, 2 x 4 bytes x B*T*N (float32) = 17.3 GB at the sizes below,
plus one piece (input copy and spikes, ~1.1 GB). Neurons are independent, so the pieces split the
neuron axis: spikes[:, :, n0:n1] and final[:, n0:n1] of the big call must equal, bit for bit, the
call on input[:, :, n0:n1]. A few neurons at the far end (flat indices beyond 2^31) are also checked
against the pure-PyTorch reference.

  big-time  (1, 33000, 65536): one row; time offsets t*N pass 2^31 inside the row.
  big-batch (2, 16500, 65537): two rows; the second row's elements pass 2^31 (row offset + t*N).
"""
import os
import time

import pytest
import torch

import lif_cuda
from lif_cuda.reference import lif_evolve_reference

BIG = os.environ.get("LIF_BIG_TESTS", "0") == "1"
big_only = pytest.mark.skipif(not BIG, reason="set LIF_BIG_TESTS=1 to run the > 2^31-element cases (~19.5 GB RAM)")

pytestmark = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")

CASES = [
    pytest.param((1, 33, 65), 16, id="small-time"),
    pytest.param((2, 17, 41), 9, id="small-batch"),
    pytest.param((1, 33_000, 65_536), 4_096, id="big-time", marks=big_only),
    pytest.param((2, 16_500, 65_537), 4_096, id="big-batch", marks=big_only),
]


def available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def make_inputs(shape, seed=0):
    B, T, N = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)  # one allocation, no temporaries
    x.mul_(0.9).add_(0.05)  # mean drive ~0.5 per step: a spike every few steps
    v0 = torch.rand(B, N, generator=g)
    tau = 0.005 + 0.05 * torch.rand(N, generator=g)
    thr = 0.5 + torch.rand(N, generator=g)
    bias = 0.01 * torch.randn(N, generator=g)
    return x, v0, tau, thr, bias


def evolve(x, v0, tau, thr, bias, backend="fused"):
    if backend == "reference":
        return lif_evolve_reference(x, v0, tau, thr, bias, 1e-3, max_spikes_per_dt=3.0, record=False)
    return lif_cuda.lif_evolve(x, v0, tau, thr, bias, 1e-3, max_spikes_per_dt=3.0, record=False, backend="fused")


@pytest.mark.parametrize("shape,piece", CASES)
def test_more_than_2_31_elements_equal_pieces(shape, piece):
    B, T, N = shape
    numel = B * T * N
    if BIG and numel > 2**31:
        need = 2 * 4 * numel + 2 * 4 * B * T * piece + 2**30
        have = available_bytes()
        if have is not None and have < need:
            pytest.skip(f"needs ~{need / 1e9:.1f} GB free memory, {have / 1e9:.1f} GB available")
    with torch.inference_mode():
        t0 = time.perf_counter()
        x, v0, tau, thr, bias = make_inputs(shape)
        t1 = time.perf_counter()
        spikes, vmem, final = evolve(x, v0, tau, thr, bias)
        t2 = time.perf_counter()
        assert vmem is None
        assert spikes.shape == shape and final.shape == (B, N)
        flat = spikes.view(-1)
        # The far end really was computed: elements past 2^31 (or past half, for the analogues).
        far = min(2**31, numel // 2)
        assert flat[far:].sum() > 0 and (flat[far:] == 0).any()

        # The same in pieces over neurons (each piece far below 2^31 elements).
        for n0 in range(0, N, piece):
            n1 = min(N, n0 + piece)
            sp, _, fp = evolve(x[:, :, n0:n1], v0[:, n0:n1], tau[n0:n1], thr[n0:n1], bias[n0:n1])
            assert torch.equal(spikes[:, :, n0:n1], sp), f"spikes of neurons {n0}:{n1} differ from the piecewise result"
            assert torch.equal(final[:, n0:n1], fp), f"final state of neurons {n0}:{n1} differs"
            del sp, fp
        t3 = time.perf_counter()

        # The last neurons (largest flat indices) against the pure-PyTorch reference.
        k = 3
        sr, _, fr = evolve(x[:, :, -k:].contiguous(), v0[:, -k:], tau[-k:], thr[-k:], bias[-k:], backend="reference")
        assert torch.equal(spikes[:, :, -k:], sr) and torch.equal(final[:, -k:], fr)
        t4 = time.perf_counter()

    gbytes = 2 * 4 * numel / 1e9  # input read + spikes written
    print(
        f"\n[64-bit] shape {shape}: {numel:,} elements ({numel / 2**31:.3f} x 2^31); "
        f"input {t1 - t0:.1f} s; one fused call {t2 - t1:.2f} s ({gbytes / max(t2 - t1, 1e-9):.1f} GB/s); "
        f"{-(-N // piece)} pieces {t3 - t2:.1f} s; reference on {k} neurons {t4 - t3:.1f} s; all equal"
    )
    del x, spikes, final, flat
