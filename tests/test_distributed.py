"""DistributedDataParallel over Linear + LIFNeuron: gloo, 2 processes on this CPU, spawned here.

After a few SGD steps the parameters are identical on both ranks and equal (1e-6 relative) to one
process training on the combined batch. The same script runs on GPUs with backend="nccl" (see
docs/ecosystem.md).
"""
import math
import os
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import lif_cuda

WORLD_SIZE = 2
PER_RANK_BATCH = 3
T, N_IN, N_HID, N_OUT = 20, 5, 8, 3
STEPS = 4
LR = 0.02


def make_model(linear="plain"):
    """linear="spike": SpikeLinear layers, which keep their spike inputs as bits and bytes and must
    train exactly as nn.Linear does."""
    torch.manual_seed(0)  # the same initial weights in every process (DDP also broadcasts rank 0's)
    first = lif_cuda.SpikeLinear(N_IN, N_HID) if linear == "spike" else nn.Linear(N_IN, N_HID)
    second = lif_cuda.SpikeLinear(N_HID, N_OUT, max_count=255) if linear == "spike" else nn.Linear(N_HID, N_OUT)
    model = nn.Sequential(
        first,
        lif_cuda.LIFNeuron(N_HID, tau_mem=torch.linspace(5e-3, 30e-3, N_HID), threshold=0.8),
        second,
        lif_cuda.LIFNeuron(N_OUT, tau_mem=15e-3, threshold=0.6),
    )
    with torch.no_grad():
        model[0].weight.add_(0.2)
        model[2].weight.add_(0.2)
    return model


def make_data():
    """STEPS batches of the combined size, and a target spike rate per output neuron."""
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(STEPS, WORLD_SIZE * PER_RANK_BATCH, T, N_IN, generator=g) < 0.4).float()
    return x, torch.tensor([0.2, 0.05, 0.3])


def loss_fn(spikes, target):
    # A mean over the batch, so that DDP's average of per-rank gradients is the combined batch's.
    return (spikes.mean(dim=1) - target).pow(2).mean()


def train(model, batches, target):
    # Time constants (seconds) get gradients far larger than they are: a much smaller step.
    taus = [p for name, p in model.named_parameters() if name.endswith("tau_mem")]
    rest = [p for name, p in model.named_parameters() if not name.endswith("tau_mem")]
    opt = torch.optim.SGD([{"params": rest}, {"params": taus, "lr": LR * 1e-4}], lr=LR)
    losses = []
    for x in batches:
        opt.zero_grad()
        loss = loss_fn(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _worker(rank, init_file, out_dir, linear):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = make_model(linear)
        # broadcast_buffers (the default) gives every rank rank 0's membrane state before each
        # forward: the state of batch row 0 of the combined batch, as in one process.
        ddp = DistributedDataParallel(model)
        x, target = make_data()
        shard = slice(rank * PER_RANK_BATCH, (rank + 1) * PER_RANK_BATCH)
        train(ddp, [xb[shard] for xb in x], target)
        torch.save({k: v.detach() for k, v in model.named_parameters()}, os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks done before either tears gloo down: a rank that leaves while the other still
        # talks to it can abort in gloo's teardown ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
@pytest.mark.parametrize("linear", ["plain", "spike"])
def test_ddp_matches_single_process_training(tmp_path, monkeypatch, linear):
    if sys.platform.startswith("linux") and "GLOO_SOCKET_IFNAME" not in os.environ:
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback only; the workers inherit it
    ctx = mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path), linear), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=2):  # raises, with the worker's traceback, if a worker failed
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the DDP workers did not finish in 240 s")

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    single = make_model()  # nn.Linear: SpikeLinear must train exactly as it does
    x, target = make_data()
    losses = train(single, list(x), target)
    assert losses[-1] < losses[0], f"no training progress: {losses}"

    start = dict(make_model().named_parameters())
    for name, want in single.named_parameters():
        assert not torch.equal(want, start[name]), f"{name} did not change"
        for r in range(1, WORLD_SIZE):
            assert torch.equal(ranks[r][name], ranks[0][name]), f"{name} differs between rank 0 and rank {r}"
        got = ranks[0][name].double()
        err = (got - want.detach().double()).norm().item() / want.detach().double().norm().item()
        assert math.isfinite(err) and err <= 1e-6, f"{name}: DDP vs single process, relative error {err:.2e}"
