"""Rockpool's own tests of LIFNeuronTorch, LIFTorch and aLIFTorch (tests/tests_default/
test_lif_neuron_torch.py, test_lif_torch.py, test_ahp_lif_torch.py in Rockpool's repository, the 3.x
versions), their checks rewritten here and run on the drop-ins of lif_cuda.rockpool, and on
Rockpool's own classes (`impl` "rockpool"), which shows that each check holds where it should.

Every test of those files applies, with two reservations:
- the reset tests (`*_reset`: a module moved to CUDA keeps its state and parameters there after
  reset_state/reset_parameters) need a GPU: they skip without one, as Rockpool's do;
- the aLIF network test also builds a Xylo configuration (config_from_specification), which needs
  `samna`, SynSense's hardware library: without it the mapped specification is checked, not the
  configuration.
The aLIFTorch checks run on the drop-in once lif_cuda.rockpool has one (skipped until then).
Skips when Rockpool is not installed.
"""
import pytest
import torch

from conftest import load_xylo_v2_mapper

rp_params = pytest.importorskip("rockpool.parameters")
Constant = rp_params.Constant

IMPLS = ("rockpool", "lif_cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA required to test reset to device")


@pytest.fixture(params=IMPLS)
def impl(request):
    """The classes of one implementation: Rockpool's own, or lif_cuda's drop-ins (None: not yet)."""
    if request.param == "rockpool":
        from rockpool.nn.modules import LIFNeuronTorch, LIFTorch
        from rockpool.nn.modules.torch.ahp_lif_torch import aLIFTorch
    else:
        import lif_cuda.rockpool as drop_ins

        LIFNeuronTorch, LIFTorch = drop_ins.LIFNeuronTorch, drop_ins.LIFTorch
        aLIFTorch = getattr(drop_ins, "aLIFTorch", None)
    return dict(LIFNeuronTorch=LIFNeuronTorch, LIFTorch=LIFTorch, aLIFTorch=aLIFTorch)


@pytest.fixture
def alif(impl):
    if impl["aLIFTorch"] is None:
        pytest.skip("lif_cuda.rockpool has no aLIFTorch drop-in yet")
    return impl["aLIFTorch"]


# ------------------------------------------------------------------------------- LIFNeuronTorch


def test_lif_neuron_torch_shapes(impl):
    cls = impl["LIFNeuronTorch"]
    N, B, T = 10, 3, 20
    cls((N,)), cls(N)  # minimal construction, shape as a tuple or a number
    mod = cls(shape=N, tau_mem=torch.rand(N), bias=torch.rand(N), dt=1e-3, noise_std=0.1)
    x = torch.rand(B, T, N, requires_grad=True)
    mod.forward(x).sum().backward()  # the torch API, and a backward through it
    out, state, record = mod.evolve(x, record=True)
    assert out.shape == x.shape
    assert state and all(v.shape == (N,) for v in state.values())
    assert record and all(v.shape == x.shape for v in record.values())


# ------------------------------------------------------------------------- LIFTorch (and aLIF)


def _call(mod, x):
    out, state, record = mod(x, record=True)
    out.sum().backward()
    return out, state, record


@pytest.mark.parametrize("which", ["LIFTorch", "aLIFTorch"])
def test_shapes_of_output_state_and_records(impl, which):
    cls = impl[which]
    if cls is None:
        pytest.skip("lif_cuda.rockpool has no aLIFTorch drop-in yet")
    S, N, B, T = 5, 10, 3, 20
    mod = cls(shape=(S * N, N), tau_mem=torch.rand(N), tau_syn=0.05, has_rec=False, dt=1e-3, noise_std=0.0)
    out, state, record = _call(mod, torch.rand(B, T, S * N, requires_grad=True))
    assert out.shape == (B, T, N)
    assert state["isyn"].shape == (N, S) and state["vmem"].shape == (N,)
    assert record["isyn"].shape == (B, T, N, S) and record["vmem"].shape == (B, T, N)
    if which == "aLIFTorch":
        assert state["iahp"].shape == (N,) and record["iahp"].shape == (B, T, N)
        graph = mod.as_graph()
        assert len(graph.input_nodes) == mod.size_in and len(graph.output_nodes) == mod.size_out


def test_bias_alone_charges_the_membrane(impl):
    """No input: no synaptic current; the membrane is the bias at the first step, then the bias plus
    its decay (exactly, as torch computes exp(-dt/tau)); the bias gets a gradient."""
    tau_mem, bias, dt = torch.rand(1), torch.ones(1) * 0.1, 1e-3
    mod = impl["LIFTorch"](shape=(1, 1), tau_mem=tau_mem, tau_syn=0.02, threshold=1.0, bias=bias, dt=dt,
                           noise_std=0.0)
    _, state, record = _call(mod, torch.zeros(1, 20, 1, requires_grad=True))
    assert torch.all(state["isyn"] == 0) and torch.all(record["isyn"] == 0)
    assert torch.all(record["vmem"][:, 0] == 0.1)
    assert torch.all(record["vmem"][:, 1] == 0.1 * torch.exp(-dt / tau_mem) + 0.1)
    assert not torch.all(mod.bias.grad == 0)


def _ordered_recurrent_weights(N, S):
    """Neuron 0's spikes drive neurons 1-4 more strongly the higher their index."""
    w = torch.zeros(N, N, S)
    w[0, 1, 0], w[0, 1, 1], w[0, 2, 0], w[0, 2, 1], w[0, 3, 0], w[0, 4, 1] = 1, 2, 3, 4, 5, 6
    return w.reshape(N, N * S)


def test_recurrent_weights_order_the_activity(impl):
    S, N = 2, 5
    mod = impl["LIFTorch"](shape=(S * N, N), tau_mem=0.01, tau_syn=0.02, has_rec=True,
                           w_rec=_ordered_recurrent_weights(N, S), dt=1e-3, noise_std=0.0)
    x = torch.zeros(1, 20, S * N, requires_grad=True)
    with torch.no_grad():
        x[:, 0, 0] = 100  # a burst into neuron 0
    out, _, _ = _call(mod, x)
    assert torch.all(out[:, :, 1] <= out[:, :, 2]) and torch.all(out[:, :, 3] <= out[:, :, 4])
    assert not torch.all(mod.w_rec.grad == 0)


def test_noise_moves_the_membrane_without_input(impl):
    S, N = 5, 10
    mod = impl["LIFTorch"](shape=(S * N, N), tau_mem=torch.rand(N), tau_syn=torch.rand(N, S), dt=1e-3,
                           noise_std=0.1)
    _, _, record = _call(mod, torch.zeros(3, 20, S * N, requires_grad=True))
    assert not torch.all(record["vmem"] == 0)


@pytest.mark.parametrize("fill", [torch.zeros, torch.ones])
def test_a_per_synapse_tau_syn_keeps_its_shape(impl, fill):
    S, N = 5, 10
    mod = impl["LIFTorch"](shape=(S * N, N), tau_mem=torch.rand(N), tau_syn=torch.rand(N, S), dt=1e-3,
                           noise_std=0.1)
    _call(mod, fill(3, 20, S * N, requires_grad=True))
    assert mod.tau_syn.shape == (N, S)


def test_a_per_neuron_threshold_keeps_its_shape(impl):
    S, N = 5, 10
    mod = impl["LIFTorch"](shape=(S * N, N), tau_mem=torch.rand(N), tau_syn=0.03, dt=1e-3,
                           threshold=0.5 * torch.ones(N), noise_std=0.1)
    _call(mod, torch.zeros(3, 20, S * N, requires_grad=True))
    assert mod.threshold.shape == (N,)


def test_a_lower_threshold_fires_more(impl):
    mod = impl["LIFTorch"](shape=(2, 2), tau_mem=torch.ones(2) * 0.05, tau_syn=0.03, dt=1e-3,
                           threshold=torch.tensor([0.1, 10.0]), noise_std=0.0)
    out, _, _ = _call(mod, 2 * torch.ones(1, 20, 2, requires_grad=True))
    assert mod.threshold.shape == (2,)
    assert torch.all(out[:, :, 0] >= out[:, :, 1]) and out[:, :, 0].sum() > out[:, :, 1].sum()


@needs_cuda
@pytest.mark.parametrize("which", ["LIFTorch", "aLIFTorch"])
def test_reset_keeps_the_device(impl, which):
    cls = impl[which]
    if cls is None:
        pytest.skip("lif_cuda.rockpool has no aLIFTorch drop-in yet")
    mod = cls(10).to("cuda")
    device = mod.isyn.device
    mod.reset_state()
    assert mod.isyn.device == device and mod.vmem.device == device
    mod.reset_parameters()
    for name in ("tau_syn", "tau_mem", "threshold", "bias"):
        assert getattr(mod, name).device == device, name


# -------------------------------------------------------------------- leak modes (LIFTorch)


@pytest.mark.parametrize("leak_mode,trained", [("taus", {"tau_mem", "tau_syn"}), ("decays", {"alpha", "beta"}),
                                               ("bitshifts", {"dash_mem", "dash_syn"})])
def test_each_leak_mode_trains_its_own_family(impl, leak_mode, trained):
    mod = impl["LIFTorch"](1, bias=Constant(0), threshold=Constant(1.0), leak_mode=leak_mode)
    assert set(mod.parameters().keys()) == trained
    out, _, _ = mod(torch.ones(1, 10, 1), record=True)  # and it runs
    assert out.shape == (1, 10, 1)


def test_constant_bitshifts_leave_nothing_to_train(impl):
    """dash_mem = 0 is a decay of 0 (1 - 1/2**0): a layer that forgets at once, and runs."""
    mod = impl["LIFTorch"](1, bias=Constant(0), dash_mem=Constant(0), dash_syn=Constant(0.02),
                           threshold=Constant(1.0), leak_mode="bitshifts")
    assert mod.parameters() == {}
    _, _, record = mod(torch.full((1, 5, 1), 0.5), record=True)
    assert torch.equal(record["vmem"], record["isyn"].sum(-1)) and record["vmem"].sum() > 0  # no memory


# (leak_mode, an argument of another family)
WRONG_FAMILY = [
    ("taus", dict(alpha=0.8)), ("taus", dict(beta=0.8)), ("taus", dict(dash_mem=2)), ("taus", dict(dash_syn=2)),
    ("decays", dict(tau_mem=0.02)), ("decays", dict(tau_syn=0.02)), ("decays", dict(dash_mem=2)),
    ("decays", dict(dash_syn=2)),
    ("bitshifts", dict(tau_mem=0.02)), ("bitshifts", dict(tau_syn=0.02)), ("bitshifts", dict(alpha=0.8)),
    ("bitshifts", dict(beta=0.8)),
]


@pytest.mark.parametrize("leak_mode,kwargs", WRONG_FAMILY, ids=[f"{m}-{next(iter(k))}" for m, k in WRONG_FAMILY])
def test_another_familys_argument_is_refused(impl, leak_mode, kwargs):
    """Rockpool's own error (not a refusal of the whole mode): it names the mode."""
    with pytest.raises(ValueError, match=f"leak mode is set to {leak_mode}"):
        impl["LIFTorch"](1, leak_mode=leak_mode, **kwargs)


# ---------------------------------------------------------------------------------- aLIFTorch


def _alif_burst(cls, **kw):
    S, N = 2, 5
    mod = cls(shape=(S * N, N), tau_mem=0.01, tau_syn=0.02, dt=1e-3, noise_std=0.0, **kw)
    x = torch.zeros(10, 20, S * N, requires_grad=True)
    with torch.no_grad():
        x[:, 0, :] = 100  # a burst at the first step, then silence
    out, state, record = mod(x, record=True)
    return mod, record


def test_alif_stronger_ahp_weight_lowers_the_membrane(alif):
    w_ahp = Constant(-torch.arange(1.0, 6.0))  # more inhibition the higher the index
    mod, record = _alif_burst(alif, w_ahp=w_ahp, tau_ahp=0.02)
    for n in range(4):
        assert torch.all(record["vmem"][:, 1:, n] > record["vmem"][:, 1:, n + 1])
    assert not mod.w_ahp.grad
    mod.as_graph()


def test_alif_slower_ahp_keeps_its_current_longer(alif):
    mod, record = _alif_burst(alif, w_ahp=Constant(-torch.ones(5)), tau_ahp=0.1 * torch.arange(1.0, 6.0))
    for n in range(4):
        assert torch.all(record["iahp"][:, 1:, n] > record["iahp"][:, 1:, n + 1])
    assert not mod.w_ahp.grad
    mod.as_graph()


def test_alif_network_maps_to_xylo_with_ahp_on_the_diagonal(impl, alif):
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LinearTorch

    net = Sequential(LinearTorch((2, 5)), alif((5, 5)), LinearTorch((5, 5)), alif((5, 5), has_rec=True),
                     LinearTorch((5, 8)), impl["LIFTorch"]((8, 8)))
    mapper = load_xylo_v2_mapper()
    spec = mapper(net.as_graph())
    assert spec["weights_in"].shape[0] == 2
    assert spec["weights_rec"].shape[0] == spec["weights_rec"].shape[1]
    assert spec["weights_out"].shape[1] == 8
    assert all(spec["weights_rec"][i, i] != 0 for i in range(spec["weights_rec"].shape[0])), "AHP weight missing"
    try:
        from rockpool.devices.xylo.syns61201 import config_from_specification

        _, valid, msg = config_from_specification(**spec)
    except ImportError:  # samna missing (at import, or at the call): no configuration to build here
        return
    assert valid, msg
