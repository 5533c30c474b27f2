"""lif_cuda.nir: export/import of every model, round trips exact.

- LIFNeuron <-> nir.LIF with Rockpool's mapping for LIFNeuronTorch: tau = tau_mem, v_threshold =
  threshold, v_leak = bias, dt = min(tau / (1 + r)) on import; export writes r = tau/dt - 1 so that
  export then import gives back the same layer, bit for bit.
- SynapticLIF <-> nir.CubaLIF (one synapse per neuron), and a recurrent CubaLIF sub-graph (CubaLIF +
  Linear(w_rec.T) feeding back, as Rockpool writes one).
"""
import importlib
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

import lif_cuda
from conftest import random_neuron_params

nir = pytest.importorskip("nir")
import lif_cuda.nir as lnir  # noqa: E402


def make_layer(n=6, dt=1e-3, params="neuron", seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    if params == "neuron":
        tau, thr, bias = random_neuron_params(n, g)
    else:
        tau, thr, bias = 12e-3, 0.7, 0.03
    return lif_cuda.LIFNeuron(n, tau_mem=tau, threshold=thr, bias=bias, dt=dt, **kw)


def make_synaptic_layer(n=5, rec=False, dt=1e-3, **kw):
    g = torch.Generator().manual_seed(0)
    return lif_cuda.SynapticLIF(
        (n, n), tau_mem=5e-3 + 30e-3 * torch.rand(n, generator=g), tau_syn=2e-3 + 10e-3 * torch.rand(n, 1, generator=g),
        threshold=0.5 + torch.rand(n, generator=g), bias=0.05 * torch.randn(n, generator=g), has_rec=rec,
        w_rec=0.4 * torch.randn(n, n, generator=g) if rec else None, dt=dt, **kw,
    )


def spikes_of(layer, x):
    layer.reset_state()
    with torch.no_grad():
        return layer(x)


def neuron_node(model, layer, node):
    """The node of the neurons (a recurrent layer's is inside a sub-graph), after checking what only
    that model's export writes; returns (node, its membrane time constants)."""
    n = layer.n_neurons
    if model == "lif":
        assert isinstance(node, nir.LIF)
        np.testing.assert_array_equal(node.tau, np.broadcast_to(layer.tau_mem.detach().numpy(), (n,)))
        return node, node.tau
    if model == "synaptic-rec":
        assert isinstance(node, nir.NIRGraph) and ("w_rec", "lif") in node.edges
        np.testing.assert_array_equal(node.nodes["w_rec"].weight, layer.w_rec.detach().numpy().T)
        node = node.nodes["lif"]
    assert isinstance(node, nir.CubaLIF)
    np.testing.assert_array_equal(node.tau_syn, layer.tau_syn.detach().numpy().reshape(-1))
    np.testing.assert_array_equal(node.tau_mem, np.broadcast_to(layer.tau_mem.detach().numpy(), (n,)))
    return node, node.tau_mem


NODE_FIELDS = {"lif": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
               "synaptic": ("tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset")}
# (model, dt, parameters: per neuron or scalar)
ROUND_TRIPS = [("lif", dt, p) for p in ("neuron", "scalar") for dt in (1e-3, 7e-4, 2.5e-4)] + [
    (m, dt, "neuron") for m in ("synaptic-ff", "synaptic-rec") for dt in (1e-3, 4e-4)]


@pytest.mark.parametrize("model,dt,params", ROUND_TRIPS, ids=[f"{m}-{dt}-{p}" for m, dt, p in ROUND_TRIPS])
def test_layer_round_trip_is_exact(model, dt, params):
    if model == "lif":
        layer = make_layer(dt=dt, params=params, learning_window=0.2, max_spikes_per_dt=3)
    else:
        layer = make_synaptic_layer(rec=model == "synaptic-rec", dt=dt, learning_window=0.2, max_spikes_per_dt=3)
    node = lnir.to_nir(layer)
    neurons, tau = neuron_node(model, layer, node)
    n = layer.n_neurons
    np.testing.assert_array_equal(neurons.v_threshold, np.broadcast_to(layer.threshold.detach().numpy(), (n,)))
    np.testing.assert_array_equal(neurons.v_leak, np.broadcast_to(layer.bias.detach().numpy(), (n,)))
    # Rockpool's import formula gives dt back.
    assert np.min(tau / (1 + neurons.r)) == pytest.approx(dt, rel=1e-15)

    back = lnir.from_nir(node)
    assert isinstance(back, type(layer))
    assert back.dt == dt
    assert (back.learning_window, back.max_spikes_per_dt) == (0.2, 3.0)
    if model != "lif":
        assert back.has_rec == (model == "synaptic-rec")
    for name, p in layer.named_parameters():
        assert torch.equal(getattr(back, name).detach(), p.detach().expand_as(getattr(back, name))), name
    x = 0.5 + torch.randn(2, 40, n, generator=torch.Generator().manual_seed(1))
    assert torch.equal(spikes_of(back, x), spikes_of(layer, x))
    # And the node survives import then export unchanged.
    again = neuron_node(model, back, lnir.to_nir(back))[0]
    for field in NODE_FIELDS[model.split("-")[0]]:
        np.testing.assert_array_equal(getattr(again, field), getattr(neurons, field), err_msg=field)


def test_import_uses_rockpools_mapping():
    # A node as Rockpool 3.1 exports its LIFNeuronTorch: r = tau * exp(-dt/tau) / dt, v_leak = 0.
    tau = np.array([0.01, 0.02, 0.015], dtype=np.float32)
    dt = 1e-3
    node = nir.LIF(
        tau=tau,
        r=(tau * np.exp(-dt / tau) / dt).astype(np.float32),
        v_leak=np.array([0.0, 0.1, -0.2], dtype=np.float32),
        v_threshold=np.array([1.0, 0.5, 2.0], dtype=np.float32),
    )
    layer = lnir.from_nir(node, backend="reference")
    assert layer.dt == float(np.min(node.tau.astype(np.float64) / (1 + node.r.astype(np.float64))))
    assert layer.backend == "reference"
    assert torch.equal(layer.tau_mem.detach(), torch.from_numpy(tau))
    assert torch.equal(layer.threshold.detach(), torch.tensor([1.0, 0.5, 2.0]))
    assert torch.equal(layer.bias.detach(), torch.tensor([0.0, 0.1, -0.2]))
    assert (layer.learning_window, layer.max_spikes_per_dt) == (0.5, 2.0**16)  # no metadata: defaults
    assert lnir.from_nir(node, dt=5e-4).dt == 5e-4


@pytest.mark.parametrize("model", ["lif", "synaptic"])
def test_stored_dt_is_used_only_while_r_agrees(model):
    node = lnir.to_nir(make_layer(dt=7e-4) if model == "lif" else make_synaptic_layer(dt=7e-4))
    assert lnir.from_nir(node).dt == 7e-4  # exact, from the metadata
    tau = node.tau if model == "lif" else node.tau_mem
    node.r = tau.astype(np.float64) / 5e-4 - 1.0  # another tool changed the time step
    assert lnir.from_nir(node).dt == pytest.approx(5e-4, rel=1e-12)


def make_net():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Linear(4, 6),
        make_layer(6, dt=5e-4),
        nn.Linear(6, 3, bias=False),
        make_layer(3, dt=5e-4, params="scalar", seed=1),
    )
    with torch.no_grad():
        net[0].weight.add_(0.4)
        net[2].weight.add_(0.5)
    return net


def test_graph_file_round_trip(tmp_path):
    net = make_net()
    graph = lnir.to_nir(net)
    assert isinstance(graph, nir.NIRGraph)
    assert sorted(graph.edges) == sorted([("input", "0"), ("0", "1"), ("1", "2"), ("2", "3"), ("3", "output")])
    assert isinstance(graph.nodes["0"], nir.Affine) and isinstance(graph.nodes["2"], nir.Linear)
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    back = lnir.from_nir(nir.read(path))
    assert [type(m) for m in back] == [type(m) for m in net]
    x = 0.5 + torch.randn(2, 50, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = net(x), back(x)
    assert want.sum() > 0 and torch.equal(got, want)
    assert back[1].dt == net[1].dt == 5e-4


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # nirtorch, inside Rockpool's to_nir
def test_rockpool_export_imports_and_our_dropin_exports():
    pytest.importorskip("rockpool")
    pytest.importorskip("nirtorch")  # Rockpool's to_nir uses it
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFNeuronTorch, LinearTorch, to_nir

    import lif_cuda.rockpool

    theirs = Sequential(LinearTorch((3, 4), has_bias=True), LIFNeuronTorch(4, tau_mem=0.01, threshold=0.8))
    net = lnir.from_nir(to_nir(theirs, torch.zeros(1, 10, 3)))
    lin, lif = net
    assert torch.equal(lin.weight.detach(), theirs[0].weight.detach().T)
    assert torch.equal(lin.bias.detach(), theirs[0].bias.detach())
    assert torch.equal(lif.tau_mem.detach(), torch.full((4,), 0.01))
    assert torch.equal(lif.threshold.detach(), torch.full((4,), 0.8))
    r = 0.01 * math.exp(-1e-3 / 0.01) / 1e-3
    assert lif.dt == pytest.approx(0.01 / (1 + r), rel=1e-6)  # Rockpool's own round trip drifts

    # Our Rockpool drop-in, both ways.
    dropin = lnir.from_nir(lnir.to_nir(make_layer(5)), module_class=lif_cuda.rockpool.LIFNeuronTorch)
    assert isinstance(dropin, lif_cuda.rockpool.LIFNeuronTorch) and dropin.dt == 1e-3
    node = lnir.to_nir(dropin)
    np.testing.assert_array_equal(node.tau, make_layer(5).tau_mem.detach().numpy())


def test_what_cannot_be_mapped():
    with pytest.raises(NotImplementedError, match="ReLU"):
        lnir.to_nir(nn.ReLU())
    # NIR has no adaptive threshold: an AdaptiveLIF is refused, not exported as a plain LIF.
    with pytest.raises(NotImplementedError, match="AdaptiveLIF"):
        lnir.to_nir(lif_cuda.AdaptiveLIF(3))
    with pytest.raises(NotImplementedError, match="LI"):  # (CubaLIF maps to SynapticLIF)
        ones = np.ones(2)
        lnir.from_nir(nir.LI(tau=ones, r=ones, v_leak=0 * ones))
    lif = lnir.to_nir(make_layer(2))
    branching = nir.NIRGraph(
        nodes={
            "input": nir.Input({"input": np.array([2])}),
            "a": lif,
            "b": lif,
            "output": nir.Output({"output": np.array([2])}),
        },
        edges=[("input", "a"), ("input", "b"), ("a", "output"), ("b", "output")],
    )
    with pytest.raises(NotImplementedError, match="chain"):
        lnir.from_nir(branching)
    reset_to_value = nir.LIF(
        tau=lif.tau, r=lif.r, v_leak=lif.v_leak, v_threshold=lif.v_threshold, v_reset=0.1 + lif.v_reset
    )
    with pytest.warns(RuntimeWarning, match="v_reset"):
        lnir.from_nir(reset_to_value)


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "lif_cuda.nir")
    with pytest.raises(ImportError, match=r"pip install 'lif_cuda\[nir\]'"):
        importlib.import_module("lif_cuda.nir")


def test_a_network_with_a_synaptic_layer_round_trips():
    net = nn.Sequential(nn.Linear(3, 5), make_synaptic_layer(rec=True), nn.Linear(5, 2), lif_cuda.LIFNeuron(2))
    graph = lnir.to_nir(net)
    back = lnir.from_nir(graph)
    assert isinstance(back[1], lif_cuda.SynapticLIF) and isinstance(back[3], lif_cuda.LIFNeuron)
    x = torch.rand(2, 20, 3, generator=torch.Generator().manual_seed(2))
    for m in (net, back):
        for layer in m:
            if hasattr(layer, "reset_state"):
                layer.reset_state()
    with torch.no_grad():
        assert torch.equal(back(x), net(x))


def test_rockpools_lif_torch_exports_and_imports():
    pytest.importorskip("rockpool")
    import lif_cuda.rockpool as lrp

    ours = lrp.LIFTorch((4, 4), has_rec=True, tau_syn=0.01, threshold=0.7)
    node = lnir.to_nir(ours)
    back = lnir.from_nir(node, synaptic_class=lrp.LIFTorch)
    assert isinstance(back, lrp.LIFTorch)
    assert torch.equal(back.w_rec, ours.w_rec)


def test_several_synapses_per_neuron_have_no_nir_node():
    with pytest.raises(NotImplementedError, match="synaptic currents per neuron"):
        lnir.to_nir(lif_cuda.SynapticLIF((6, 3)))


def test_a_layer_with_an_ahp_current_is_refused():
    """SPEC §9: NIR has no node for the AHP current (a second current per neuron); exporting the
    layer as a CubaLIF would drop it, so to_nir refuses it, alone or in a chain, ours or Rockpool's."""
    layers = [lif_cuda.AHPSynapticLIF((4,)), lif_cuda.AHPSynapticLIF((4,), has_rec=True)]
    if importlib.util.find_spec("rockpool") is not None:
        layers.append(importlib.import_module("lif_cuda.rockpool").aLIFTorch((4, 4)))
    for layer in layers:
        with pytest.raises(NotImplementedError, match="after-hyperpolarisation"):
            lnir.to_nir(layer)
    with pytest.raises(NotImplementedError, match="after-hyperpolarisation"):
        lnir.to_nir(nn.Sequential(nn.Linear(3, 4), lif_cuda.AHPSynapticLIF((4,))))
