"""lif_cuda.rockpool.LIFTorch against Rockpool 3.1's own LIFTorch (SPEC §7; issue: a fused LIFTorch).

Same network, same weights, float32 on the CPU: spikes, the records vmem/isyn/irec/spikes and the
states vmem/isyn/spikes bit-identical over two calls (the second starts from the state the first
left); gradients of the input, tau_mem, tau_syn, threshold, bias and w_rec (and of the LinearTorch
before it) within 1e-5 norm-wise relative; with and without recurrent weights, one to three synapses
per neuron, every tau_syn shape, both surrogates, inside a Rockpool Sequential with LinearTorch.
Skips when Rockpool is not installed (the `test` extra has it).
"""
import pytest
import torch

import lif_cuda
from conftest import rel_err

N_IN = 4
GRAD_TOL = 1e-5
LIF = "1_LIFTorch"


@pytest.fixture(scope="module")
def rp():
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.lif_torch import PeriodicExponential, StepPWL

    import lif_cuda.rockpool

    return dict(Sequential=Sequential, LinearTorch=LinearTorch, Theirs=LIFTorch, Ours=lif_cuda.rockpool.LIFTorch,
                StepPWL=StepPWL, PeriodicExponential=PeriodicExponential)


def build(rp, cls, N=5, S=2, rec=True, tau_syn="full", params="neuron", surrogate="StepPWL", **kw):
    g = torch.Generator().manual_seed(7)
    if params == "neuron":
        tau, thr, bias = 5e-3 + 30e-3 * torch.rand(N, generator=g), 0.5 + torch.rand(N, generator=g), \
            0.05 * torch.randn(N, generator=g)
    else:
        tau, thr, bias = torch.tensor(15e-3), torch.tensor(0.8), torch.tensor(0.02)
    ts = {"full": 2e-3 + 20e-3 * torch.rand(N, S, generator=g), "row": 2e-3 + 20e-3 * torch.rand(1, S, generator=g),
          "scalar": torch.tensor(8e-3)}[tau_syn]
    w = 0.5 * torch.randn(N, N * S, generator=g) if rec else None
    net = rp["Sequential"](
        rp["LinearTorch"]((N_IN, N * S), has_bias=True),
        cls((N * S, N), tau_mem=tau, tau_syn=ts, threshold=thr, bias=bias, has_rec=rec, w_rec=w,
            spike_generation_fn=rp[surrogate], max_spikes_per_dt=3.0, **kw),
    )
    with torch.no_grad():
        net[0].weight.copy_(0.6 * torch.randn(N_IN, N * S, generator=g) + 0.3)
        net[0].bias.copy_(0.1 * torch.randn(N * S, generator=g))
    return net


def make_input(seed, B=3, T=25):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, N_IN, generator=g) < 0.4).float() * 1.5


def run_and_backprop(net, x, rec):
    for p in net.parameters().astorch():
        p.grad = None
    x = x.clone().requires_grad_(True)
    out, state, record = net(x, record=True)
    r = record[LIF]
    loss = (out * torch.linspace(0.5, 1.5, out.shape[-1])).sum() + 0.1 * r["vmem"].pow(2).sum() + 0.05 * r["isyn"].sum()
    if rec:
        loss = loss + 0.05 * r["irec"].sum()
    loss.backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    grads["input"] = x.grad
    return out, state, record, grads


CASES = [
    # (S, recurrent, tau_syn shape, parameters, surrogate)
    (1, False, "full", "neuron", "StepPWL"),
    (2, False, "row", "scalar", "PeriodicExponential"),
    (1, True, "scalar", "neuron", "StepPWL"),
    (2, True, "full", "neuron", "StepPWL"),
    (3, True, "row", "neuron", "PeriodicExponential"),
    (3, False, "full", "scalar", "StepPWL"),
]


@pytest.mark.parametrize("S,rec,tau_syn,params,surrogate", CASES)
def test_same_spikes_records_state_and_gradients(rp, S, rec, tau_syn, params, surrogate):
    theirs = build(rp, rp["Theirs"], S=S, rec=rec, tau_syn=tau_syn, params=params, surrogate=surrogate)
    ours = build(rp, rp["Ours"], S=S, rec=rec, tau_syn=tau_syn, params=params, surrogate=surrogate)
    for call in range(2):
        x = make_input(call)
        out_t, state_t, rec_t, g_t = run_and_backprop(theirs, x, rec)
        out_o, state_o, rec_o, g_o = run_and_backprop(ours, x, rec)
        assert torch.equal(out_o, out_t)
        assert out_t.sum() > 0 and out_t.max() > 1, "the case should have (multiple) spikes"
        assert rec_o[LIF].keys() == rec_t[LIF].keys() == {"vmem", "isyn", "irec", "spikes"}
        for key in rec_t[LIF]:
            assert torch.equal(rec_o[LIF][key], rec_t[LIF][key]), key
        assert state_o[LIF].keys() == state_t[LIF].keys() == {"vmem", "isyn", "spikes"}
        for key in state_t[LIF]:
            assert torch.equal(state_o[LIF][key], state_t[LIF][key]), key
        assert g_o.keys() == g_t.keys()
        for name in g_t:
            assert g_t[name].abs().sum() > 0, f"{name}: no gradient reached it"
            err = rel_err(g_o[name], g_t[name])
            assert err <= GRAD_TOL, f"{name}: relative error {err:.2e}"


def test_is_rockpools_module_with_its_parameters_and_states(rp):
    theirs, ours = rp["Theirs"]((6, 3), has_rec=True), rp["Ours"]((6, 3), has_rec=True)
    assert isinstance(ours, rp["Theirs"])
    assert ours.parameters().keys() == theirs.parameters().keys() == {"w_rec", "tau_mem", "tau_syn", "bias",
                                                                       "threshold"}
    for family in ("weights", "taus", "bias", "thresholds"):
        assert ours.parameters(family).keys() == theirs.parameters(family).keys(), family
    assert ours.state().keys() == theirs.state().keys() == {"vmem", "isyn", "spikes"}
    assert set(theirs.simulation_parameters()) <= set(ours.simulation_parameters())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert ours.tau_syn.shape == (3, 2) and ours.w_rec.shape == (3, 6)
    assert ours.as_graph() is not None  # Rockpool's graph export, inherited


def test_same_noise_under_the_same_seed(rp):
    theirs = build(rp, rp["Theirs"], noise_std=0.2)
    ours = build(rp, rp["Ours"], noise_std=0.2)
    x = make_input(3)
    torch.manual_seed(11)
    out_t, _, rec_t = theirs(x, record=True)
    torch.manual_seed(11)
    out_o, _, rec_o = ours(x, record=True)
    assert torch.equal(out_o, out_t)
    assert torch.equal(rec_o[LIF]["vmem"], rec_t[LIF]["vmem"])
    # In-kernel noise: reproducible under one seed, no (B,T,N) tensor.
    kernel = build(rp, rp["Ours"], noise_std=0.2, noise="kernel")
    torch.manual_seed(11)
    a, _, _ = kernel(x)
    kernel.reset_state()
    torch.manual_seed(11)
    assert torch.equal(kernel(x)[0], a)


def test_trains_in_lockstep_with_rockpool(rp):
    theirs, ours = build(rp, rp["Theirs"]), build(rp, rp["Ours"])
    opts = [torch.optim.Adam(net.parameters().astorch(), lr=1e-3) for net in (theirs, ours)]
    x = make_input(5, B=3, T=30)
    losses = {id(theirs): [], id(ours): []}
    for _ in range(3):
        for net, opt in zip((theirs, ours), opts):
            net.reset_state()
            out, _, _ = net(x)
            loss = (out.mean(dim=(0, 1)) - 0.3).pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[id(net)].append(loss.item())
    assert losses[id(ours)] == pytest.approx(losses[id(theirs)], rel=1e-5)
    p_t, p_o = dict(theirs.named_parameters()), dict(ours.named_parameters())
    for name in p_t:
        assert rel_err(p_o[name], p_t[name]) <= 1e-6, name


def test_reference_backend_and_torch_api(rp):
    ours = rp["Ours"]((6, 3), has_rec=True, threshold=0.5).to_torch()
    ref = rp["Ours"]((6, 3), has_rec=True, threshold=0.5, backend="reference").to_torch()
    ref.load_state_dict(ours.state_dict())
    x = torch.rand(2, 30, 6)
    out = ours(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 30, 3)
    assert torch.equal(ref(x), out)
    ours.reset_state()
    assert not ours.vmem.any() and not ours.isyn.any() and not ours.spikes.any()


def test_bad_arguments(rp):
    with pytest.raises(ValueError, match="leak_mode"):
        rp["Ours"]((4, 2), leak_mode="decays")
    with pytest.raises(ValueError, match="w_rec"):
        rp["Ours"]((4, 2), w_rec=torch.zeros(2, 4))  # w_rec without has_rec, as Rockpool says
    with pytest.raises(ValueError, match="shape"):
        rp["Ours"]((4, 2), has_rec=True, w_rec=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="shape"):
        rp["Ours"]((4, 2), tau_syn=torch.full((3, 2), 0.01))
    with pytest.raises(ValueError, match="backend"):
        rp["Ours"]((4, 2), backend="gpu")
    with pytest.raises(ValueError, match="noise"):
        rp["Ours"]((4, 2), noise="numpy")
    with pytest.raises(TypeError, match="spike_generation_fn"):
        rp["Ours"]((4, 2), spike_generation_fn=torch.relu)
    layer = rp["Ours"]((4, 2), tau_syn=-0.01)  # Rockpool accepts it; a call refuses it, state untouched
    with pytest.raises(ValueError, match="tau_syn"):
        layer(torch.ones(1, 3, 4))
    assert not layer.vmem.any() and not layer.isyn.any()
    with pytest.raises(ValueError, match="wrong neuron dimension"):
        layer(torch.zeros(1, 3, 5))


def test_spike_functions_run_fused(rp):
    for theirs, ours in (("StepPWL", lif_cuda.StepPWL), ("PeriodicExponential", lif_cuda.PeriodicExponential)):
        layer = rp["Ours"]((4, 2), spike_generation_fn=rp[theirs])
        assert layer._spike_fn_class() is ours
