"""No leaks: 10,000 forward+backward calls keep the resident memory flat.

The workload is a LIFNeuron (fused backend, in-kernel noise, recorded membrane) of 64 neurons on a
(4, 16, 64) float32 input: every call allocates the spikes, the recorded membrane, the saved u, the
final state, a noise key, the autograd node and its context, and the five gradients.

The bound, 20 MB of resident-set growth over the 10,000 calls (after 300 warm-up calls): leaking the
smallest thing a call creates that the user could notice -- one (4,16,64) float32 tensor, 16 KiB --
would grow the process by >= 160 MB, eight times the bound; so would keeping the autograd graph (it
holds u). Leaking only a ~2 KB Python object per call (20 MB) is at the edge, which is why the
test also bounds the number of live Python objects. Without a leak the growth is allocator noise,
well under the bound; `test_meter_sees_a_planted_leak` shows the meter detects a 16 KiB/call leak.

The loop runs with torch.set_num_threads(1): on a shared 2-core machine OpenMP's barrier makes tiny
calls much slower under load, and nothing that can leak depends on the thread count (the kernels
allocate nothing; every tensor is allocated by the op wrapper before the parallel loop).
Linux only (/proc/self/statm).
"""
import ctypes
import gc
import os

import pytest
import torch

import lif_cuda

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)"),
    pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built"),
]

CALLS = 10_000
WARMUP = 300
BOUND_BYTES = 20 * 2**20
OBJECT_BOUND = 1_000  # live gc-tracked Python objects
B, T, N = 4, 16, 64
LEAK_UNIT = B * T * N * 4  # one float32 (B,T,N) tensor: 16 KiB


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """Tests here seed torch's global generator; leave it as it was for the rest of the suite."""
    with torch.random.fork_rng(devices=[]):
        yield


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim_heap():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def growth(step, calls, warmup=WARMUP, trim=False):
    """Resident-set and live-object growth over `calls` calls of step(), after `warmup` calls."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(warmup):
            step()
        gc.collect()
        if trim:  # free heap that earlier tests left resident would absorb a planted leak unseen
            _trim_heap()
        rss0, obj0 = rss_bytes(), len(gc.get_objects())
        for _ in range(calls):
            step()
        gc.collect()
        return rss_bytes() - rss0, len(gc.get_objects()) - obj0
    finally:
        torch.set_num_threads(old)


def module_step_factory(backend="fused"):
    torch.manual_seed(0)
    m = lif_cuda.LIFNeuron(N, tau_mem=torch.linspace(0.01, 0.05, N), threshold=0.9, noise_std=0.1, backend=backend)
    x = torch.randn(B, T, N) + 0.5

    def step():
        xi = x.clone().requires_grad_(True)
        spikes, state, rec = m.evolve(xi, record=True)
        (spikes.sum() + rec["vmem"].sum() + state["vmem"].sum()).backward()
        m.zero_grad(set_to_none=True)

    return step


def test_module_forward_backward_does_not_leak():
    rss, objects = growth(module_step_factory(), CALLS)
    assert rss < BOUND_BYTES, (
        f"resident memory grew by {rss / 2**20:.1f} MiB over {CALLS} calls (bound {BOUND_BYTES / 2**20:.0f} MiB)"
    )
    assert objects < OBJECT_BOUND, f"{objects} more live Python objects after {CALLS} calls"


def test_functional_no_grad_does_not_leak():
    """The inference path (no u saved, no graph), a fifth of the calls."""
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(B, T, N, generator=g), torch.zeros(B, N), torch.full((N,), 0.02), torch.ones(N))
    args = (*args, torch.zeros(N), 1e-3)

    def step():
        with torch.no_grad():
            lif_cuda.lif_evolve(*args, record=True, backend="fused")

    rss, objects = growth(step, CALLS // 5)
    assert rss < BOUND_BYTES / 5, f"resident memory grew by {rss / 2**20:.1f} MiB"
    assert objects < OBJECT_BOUND


def test_meter_sees_a_planted_leak():
    """The measurement can fail: keeping one (B,T,N) float32 tensor per call is caught."""
    kept = []

    def leaky_step():
        kept.append(torch.ones(B, T, N))

    rss, objects = growth(leaky_step, CALLS, warmup=10, trim=True)
    assert rss >= BOUND_BYTES, f"a {LEAK_UNIT // 1024} KiB/call leak went unseen: growth {rss / 2**20:.1f} MiB"
    assert rss >= 0.8 * CALLS * LEAK_UNIT
    kept.clear()
