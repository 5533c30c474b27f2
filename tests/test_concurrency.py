"""Concurrency: two Python threads, each training its own LIFNeuron at the same time, get exactly
the results (spikes, gradients, updated parameters, carried state) of running one after the other.

The fused op releases the GIL while its kernel runs, so the two threads really overlap inside the
kernels (and inside at::parallel_for). Noise is off: the in-kernel noise draws its key from torch's
global generator, so with noise the interleaving of the two threads' draws (not the kernels) would
decide which thread gets which stream.
"""
import threading

import pytest
import torch

import lif_cuda
from lif_cuda import LIFNeuron

pytestmark = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")

STEPS = 8
B, T = 4, 40


def make_job(seed, n, backend):
    """A module and its inputs; run() trains it for STEPS steps and returns everything it produced."""
    g = torch.Generator().manual_seed(seed)
    tau = 0.01 + 0.04 * torch.rand(n, generator=g)
    thr = 0.5 + torch.rand(n, generator=g)
    m = LIFNeuron(n, tau_mem=tau, threshold=thr, bias=0.05, backend=backend)
    xs = [torch.randn(B, T, n, generator=g) + 0.6 for _ in range(STEPS)]
    weights = torch.randn(n, generator=g)

    def run(start=None):
        opt = torch.optim.SGD([m.threshold, m.bias], lr=1e-6)  # tau keeps its (large) gradient only
        if start is not None:
            start.wait()
        out = []
        for x in xs:
            x = x.clone().requires_grad_(True)
            m.zero_grad()
            spikes, state, rec = m.evolve(x, record=True)
            loss = (spikes * weights).sum() + (rec["vmem"] * weights).sum() / 10
            loss.backward()
            out += [spikes.detach(), rec["vmem"].detach(), x.grad, *(p.grad.clone() for p in m.parameters())]
            opt.step()
            out.append(m.vmem.clone())
        return out + [p.detach().clone() for p in m.parameters()]

    return run


def bits(t):
    return t.contiguous().reshape(-1).view(torch.uint8)


@pytest.mark.parametrize(
    "backends", [("fused", "fused"), ("fused", "reference"), ("reference", "reference")], ids=lambda b: "+".join(b)
)
def test_two_threads_equal_sequential(backends):
    jobs = [(11, 257, backends[0]), (12, 130, backends[1])]

    sequential = [make_job(*j)() for j in jobs]

    runs = [make_job(*j) for j in jobs]
    start = threading.Barrier(len(runs))
    results, errors = [None] * len(runs), []

    def worker(i):
        try:
            results[i] = runs[i](start)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    assert not errors, errors

    for k, (seq, conc) in enumerate(zip(sequential, results)):
        assert len(seq) == len(conc)
        for i, (a, b) in enumerate(zip(seq, conc)):
            assert a.shape == b.shape and torch.equal(bits(a), bits(b)), f"job {k}, item {i}: concurrent != sequential"


def test_many_threads_share_one_input_read_only():
    """Several threads calling the functional op on the same (read-only) tensors at once."""
    g = torch.Generator().manual_seed(3)
    args = (torch.randn(3, 50, 200, generator=g) + 0.5, torch.zeros(3, 200), torch.full((200,), 0.02),
            torch.full((200,), 0.8), torch.zeros(200), 1e-3)
    want = lif_cuda.lif_evolve(*args, record=True, backend="fused")
    start = threading.Barrier(4)
    got, errors = [], []

    def worker():
        try:
            start.wait()
            for _ in range(10):
                got.append(lif_cuda.lif_evolve(*args, record=True, backend="fused"))
        except BaseException as exc:
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(got) == 40
    for out in got:
        for a, b in zip(out, want):
            assert torch.equal(bits(a), bits(b))
