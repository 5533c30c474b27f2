"""lif_cuda.rockpool.LIFNeuronTorch against Rockpool's own LIFNeuronTorch (issue: Rockpool drop-in).

Same network, same weights: spikes and records identical, gradients within 1e-5 (norm-wise relative,
float32), optimiser steps in lockstep. Skips when Rockpool is not installed (the `test` extra has it).
"""
import importlib
import sys

import pytest
import torch

import lif_cuda
from conftest import rel_err

N_IN, N_HID, N_OUT = 6, 8, 3
GRAD_TOL = 1e-5


@pytest.fixture(scope="module")
def rp():
    """Rockpool's pieces, and ours."""
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFNeuronTorch, LinearTorch
    from rockpool.nn.modules.torch.lif_neuron_torch import StepPWL
    from rockpool.nn.modules.torch.lif_torch import PeriodicExponential
    from rockpool.nn.modules.torch.torch_module import TorchModule

    import lif_cuda.rockpool

    return dict(
        Sequential=Sequential,
        LinearTorch=LinearTorch,
        RockpoolLIF=LIFNeuronTorch,
        OurLIF=lif_cuda.rockpool.LIFNeuronTorch,
        TorchModule=TorchModule,
        StepPWL=StepPWL,
        PeriodicExponential=PeriodicExponential,
    )


def build(rp, lif_class, surrogate="StepPWL", params="neuron", noise_std=0.0, max_spikes=2.0**16):
    """Linear -> LIF -> Linear -> LIF with fixed random weights and parameters."""
    g = torch.Generator().manual_seed(7)
    fn = rp[surrogate]
    if params == "neuron":
        tau = 5e-3 + 30e-3 * torch.rand(N_HID, generator=g)
        thr = 0.5 + torch.rand(N_HID, generator=g)
        bias = 0.05 * torch.randn(N_HID, generator=g)
    else:
        tau, thr, bias = 15e-3, 0.8, 0.02
    net = rp["Sequential"](
        rp["LinearTorch"]((N_IN, N_HID), has_bias=True),
        lif_class(N_HID, tau_mem=tau, threshold=thr, bias=bias, spike_generation_fn=fn, noise_std=noise_std,
                  max_spikes_per_dt=max_spikes),
        rp["LinearTorch"]((N_HID, N_OUT)),
        lif_class(N_OUT, spike_generation_fn=fn, noise_std=noise_std, learning_window=0.3),
    )
    with torch.no_grad():
        net[0].weight.copy_(0.6 * torch.randn(N_IN, N_HID, generator=g) + 0.3)
        net[0].bias.copy_(0.1 * torch.randn(N_HID, generator=g))
        net[2].weight.copy_(0.8 * torch.randn(N_HID, N_OUT, generator=g) + 0.4)
    return net


def pair(rp, **kw):
    return build(rp, rp["RockpoolLIF"], **kw), build(rp, rp["OurLIF"], **kw)


def named_grads(net):
    return {name: p.grad for name, p in net.named_parameters()}


def make_input(seed, B=3, T=25):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, N_IN, generator=g) < 0.3).float() * 1.5


LIF_NAMES = ("1_LIFNeuronTorch", "3_LIFNeuronTorch")


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rockpool", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "lif_cuda.rockpool", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'lif_cuda\[rockpool\]'"):
        importlib.import_module("lif_cuda.rockpool")


def test_is_a_rockpool_module_with_the_same_attributes(rp):
    theirs, ours = rp["RockpoolLIF"](5, tau_mem=0.01), rp["OurLIF"](5, tau_mem=0.01)
    assert isinstance(ours, rp["TorchModule"]) and isinstance(ours, torch.nn.Module)
    for family in ("taus", "thresholds", "bias"):
        assert ours.parameters(family).keys() == theirs.parameters(family).keys(), family
    assert ours.parameters().keys() == theirs.parameters().keys() == {"tau_mem", "threshold", "bias"}
    assert ours.state().keys() == theirs.state().keys() == {"vmem"}
    assert set(theirs.simulation_parameters()) <= set(ours.simulation_parameters())
    assert dict(ours.named_parameters()).keys() == dict(theirs.named_parameters()).keys()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert ours.size_in == ours.size_out == ours.n_neurons == 5
    assert ours.spike_generation_fn == lif_cuda.StepPWL.apply  # stored as Rockpool stores it


def test_rockpools_surrogates_run_on_the_fused_kernels(rp):
    for theirs, ours in (("StepPWL", lif_cuda.StepPWL), ("PeriodicExponential", lif_cuda.PeriodicExponential)):
        layer = rp["OurLIF"](3, spike_generation_fn=rp[theirs])
        assert layer._spike_fn_class() is ours  # the fused kernels know ours by identity


@pytest.mark.parametrize("surrogate", ["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("params", ["neuron", "scalar"])
def test_same_spikes_records_state_and_gradients(rp, surrogate, params):
    theirs, ours = pair(rp, surrogate=surrogate, params=params, max_spikes=3.0)
    for call in range(2):  # the second call starts from the state the first one left
        x = make_input(call)
        out_t, state_t, rec_t = theirs(x, record=True)
        out_o, state_o, rec_o = ours(x, record=True)
        assert torch.equal(out_o, out_t)
        assert out_t.sum() > 0 and out_t.max() > 1, "the case should have (multiple) spikes"
        for name in LIF_NAMES:
            for key in ("vmem", "spikes"):
                assert torch.equal(rec_o[name][key], rec_t[name][key]), (name, key)
            assert torch.equal(state_o[name]["vmem"], state_t[name]["vmem"]), name
            assert torch.equal(state_o[name]["vmem"], rec_o[name]["vmem"][0, -1]), "state = batch row 0"
        for net, out, rec in ((theirs, out_t, rec_t), (ours, out_o, rec_o)):
            for param in net.parameters().astorch():  # Rockpool's parameters() is a dict
                param.grad = None
            loss = (out * torch.linspace(0.5, 1.5, N_OUT)).sum() + 0.1 * rec["1_LIFNeuronTorch"]["vmem"].pow(2).sum()
            loss.backward()
        g_t, g_o = named_grads(theirs), named_grads(ours)
        assert g_o.keys() == g_t.keys()
        for name in g_t:
            assert g_t[name].abs().sum() > 0, f"{name}: no gradient reached it"
            err = rel_err(g_o[name], g_t[name])
            assert err <= GRAD_TOL, f"{name}: relative error {err:.2e}"


def test_same_noise_under_the_same_seed(rp):
    theirs, ours = pair(rp, noise_std=0.2)
    x = make_input(3)
    torch.manual_seed(11)
    out_t, _, rec_t = theirs(x, record=True)
    torch.manual_seed(11)
    out_o, _, rec_o = ours(x, record=True)
    assert torch.equal(out_o, out_t)
    assert torch.equal(rec_o["1_LIFNeuronTorch"]["vmem"], rec_t["1_LIFNeuronTorch"]["vmem"])


def test_trains_in_lockstep_with_rockpool(rp):
    theirs, ours = pair(rp)
    target = torch.tensor([0.3, 0.1, 0.2])
    opts = [torch.optim.Adam(net.parameters().astorch(), lr=1e-3) for net in (theirs, ours)]
    x = make_input(5, B=3, T=30)
    losses = {id(theirs): [], id(ours): []}
    for _ in range(3):
        for net, opt in zip((theirs, ours), opts):
            net.reset_state()
            out, _, _ = net(x)
            loss = (out.mean(dim=(0, 1)) - target).pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[id(net)].append(loss.item())
    assert losses[id(ours)] == pytest.approx(losses[id(theirs)], rel=1e-5)
    assert losses[id(ours)][-1] < losses[id(ours)][0]
    p_t, p_o = dict(theirs.named_parameters()), dict(ours.named_parameters())
    for name in p_t:
        assert rel_err(p_o[name], p_t[name]) <= 1e-6, name


def test_evolve_without_record_and_auto_batching(rp):
    theirs, ours = rp["RockpoolLIF"](4, tau_mem=0.01, threshold=0.5), rp["OurLIF"](4, tau_mem=0.01, threshold=0.5)
    x = torch.rand(30, 1) * 0.6  # (T, 1): batch 1, broadcast over the neurons, as Rockpool does
    out_t, _, rec_t = theirs(x)
    out_o, _, rec_o = ours(x)
    assert rec_o == rec_t == {}
    assert out_o.shape == (1, 30, 4) and torch.equal(out_o, out_t)
    with pytest.raises(ValueError, match="wrong neuron dimension"):
        ours(torch.zeros(2, 5, 3))


def test_torch_api_reset_and_backends(rp):
    ours = rp["OurLIF"](4, tau_mem=0.01, threshold=0.5).to_torch()
    x = torch.rand(2, 30, 4)
    out = ours(x)  # the torch API: a tensor, not a tuple
    assert isinstance(out, torch.Tensor) and out.shape == (2, 30, 4)
    assert ours.vmem.abs().sum() > 0
    ours.reset_state()
    assert torch.equal(ours.vmem, torch.zeros(4))
    ref = rp["OurLIF"](4, tau_mem=0.01, threshold=0.5, backend="reference").to_torch()
    assert torch.equal(ref(x), out)


def test_bad_arguments(rp):
    with pytest.raises(ValueError, match="one dimension"):
        rp["OurLIF"]((2, 3))
    with pytest.raises(ValueError, match="backend"):
        rp["OurLIF"](3, backend="gpu")
    with pytest.raises(TypeError, match="spike_generation_fn"):
        rp["OurLIF"](3, spike_generation_fn=torch.relu)
    with pytest.raises(ValueError, match="tau_mem"):
        rp["OurLIF"](3, tau_mem=-1.0)(torch.zeros(1, 2, 3))
