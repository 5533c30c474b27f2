"""lif_cuda.nir for synaptic layers: nir.CubaLIF (one synapse per neuron), and a recurrent CubaLIF
sub-graph (CubaLIF + Linear(w_rec.T) feeding back, as Rockpool writes one); round trips exact."""
import numpy as np
import pytest
import torch
from torch import nn

import lif_cuda

nir = pytest.importorskip("nir")
import lif_cuda.nir as lnir  # noqa: E402


def make_layer(n=5, rec=False, dt=1e-3, **kw):
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


@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("dt", [1e-3, 4e-4])
def test_round_trip_is_exact(rec, dt):
    layer = make_layer(rec=rec, dt=dt, learning_window=0.3, max_spikes_per_dt=4)
    node = lnir.to_nir(layer)
    if rec:
        assert isinstance(node, nir.NIRGraph) and ("w_rec", "lif") in node.edges
        cuba = node.nodes["lif"]
        np.testing.assert_array_equal(node.nodes["w_rec"].weight, layer.w_rec.detach().numpy().T)
    else:
        cuba = node
    assert isinstance(cuba, nir.CubaLIF)
    np.testing.assert_array_equal(cuba.tau_syn, layer.tau_syn.detach().numpy().reshape(-1))
    np.testing.assert_array_equal(cuba.tau_mem, layer.tau_mem.detach().numpy())
    np.testing.assert_array_equal(cuba.v_leak, layer.bias.detach().numpy())
    assert np.min(cuba.tau_mem / (1 + cuba.r)) == pytest.approx(dt, rel=1e-15)
    back = lnir.from_nir(node)
    assert isinstance(back, lif_cuda.SynapticLIF) and back.has_rec == rec and back.dt == dt
    assert (back.learning_window, back.max_spikes_per_dt) == (0.3, 4.0)
    for name, p in layer.named_parameters():
        assert torch.equal(getattr(back, name).detach(), p.detach()), name
    x = 0.5 + torch.rand(2, 30, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(spikes_of(back, x), spikes_of(layer, x))


def test_a_network_with_a_synaptic_layer_round_trips():
    net = nn.Sequential(nn.Linear(3, 5), make_layer(rec=True), nn.Linear(5, 2), lif_cuda.LIFNeuron(2))
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
