"""lif_cuda.rockpool's drop-ins against Rockpool's own modules: LIFNeuronTorch (SPEC §5), LIFTorch
(SPEC §7, Rockpool 3.1, in each leak mode: "taus", "decays", "bitshifts") and aLIFTorch (SPEC §9,
LIFTorch with an AHP current).

Same network (inside a Rockpool Sequential with LinearTorch), same weights, float32 on the CPU:
spikes, the records and the states bit-identical over two calls (the second starts from the state
the first left); gradients of every parameter (and of the input) within 1e-5 norm-wise relative;
optimiser steps in lockstep; the same noise under one seed. LIFTorch: with and without recurrent
weights, one to three synapses per neuron, every tau_syn shape, each leak mode (the gradients of
alpha and beta, or of dash_mem and dash_syn); aLIFTorch likewise, and every tau_ahp shape; all
models: both surrogates, per-neuron and scalar parameters. The graph of a network of drop-ins
(as_graph) is Rockpool's, and Xylo's mapper makes the same specification of it. Skips when Rockpool
is not installed (the `test` extra has it).
"""
import copy
import importlib
import sys

import numpy as np
import pytest
import torch

import lif_cuda
from conftest import load_xylo_v2_mapper, random_neuron_params, rel_err

N_IN = 6
GRAD_TOL = 1e-5
MODELS = ("lif", "synaptic", "alif")
LEAK_MODES = ("taus", "decays", "bitshifts")
DT = 1e-3


@pytest.fixture(scope="module")
def rp():
    """Rockpool's pieces, and ours: per model, (Rockpool's class, ours)."""
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFNeuronTorch, LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.ahp_lif_torch import aLIFTorch
    from rockpool.nn.modules.torch.lif_neuron_torch import StepPWL
    from rockpool.nn.modules.torch.lif_torch import PeriodicExponential
    from rockpool.nn.modules.torch.torch_module import TorchModule

    import lif_cuda.rockpool

    return dict(
        Sequential=Sequential,
        LinearTorch=LinearTorch,
        TorchModule=TorchModule,
        StepPWL=StepPWL,
        PeriodicExponential=PeriodicExponential,
        lif=(LIFNeuronTorch, lif_cuda.rockpool.LIFNeuronTorch),
        synaptic=(LIFTorch, lif_cuda.rockpool.LIFTorch),
        alif=(aLIFTorch, lif_cuda.rockpool.aLIFTorch),
    )


def build_lif(rp, cls, surrogate="StepPWL", params="neuron", noise_std=0.0, max_spikes=2.0**16):
    """Linear -> LIF -> Linear -> LIF with fixed random weights and parameters."""
    n_hid, n_out = 8, 3
    g = torch.Generator().manual_seed(7)
    fn = rp[surrogate]
    if params == "neuron":
        tau, thr, bias = random_neuron_params(n_hid, g)
    else:
        tau, thr, bias = 15e-3, 0.8, 0.02
    net = rp["Sequential"](
        rp["LinearTorch"]((N_IN, n_hid), has_bias=True),
        cls(n_hid, tau_mem=tau, threshold=thr, bias=bias, spike_generation_fn=fn, noise_std=noise_std,
            max_spikes_per_dt=max_spikes),
        rp["LinearTorch"]((n_hid, n_out)),
        cls(n_out, spike_generation_fn=fn, noise_std=noise_std, learning_window=0.3),
    )
    with torch.no_grad():
        net[0].weight.copy_(0.6 * torch.randn(N_IN, n_hid, generator=g) + 0.3)
        net[0].bias.copy_(0.1 * torch.randn(n_hid, generator=g))
        net[2].weight.copy_(0.8 * torch.randn(n_hid, n_out, generator=g) + 0.4)
    return net


def leak_kwargs(leak_mode, tau_mem, tau_syn):
    """A LIFTorch's leak arguments in `leak_mode` for these time constants: themselves, their decays,
    or their (fractional) bitshifts, -log2(1 - decay)."""
    alpha, beta = torch.exp(-DT / torch.as_tensor(tau_mem)), torch.exp(-DT / torch.as_tensor(tau_syn))
    return {
        "taus": dict(tau_mem=tau_mem, tau_syn=tau_syn),
        "decays": dict(leak_mode="decays", alpha=alpha, beta=beta),
        "bitshifts": dict(leak_mode="bitshifts", dash_mem=-torch.log2(1 - alpha), dash_syn=-torch.log2(1 - beta)),
    }[leak_mode]


def build_synaptic(rp, cls, N=5, S=2, rec=True, tau_syn="full", params="neuron", surrogate="StepPWL",
                   max_spikes=3.0, leak_mode="taus", **kw):
    """Linear -> LIFTorch (N neurons, S synapses each) with fixed random weights and parameters; the
    leaks in `leak_mode` (leak_kwargs)."""
    g = torch.Generator().manual_seed(7)
    if params == "neuron":
        tau, thr, bias = random_neuron_params(N, g)
    else:
        tau, thr, bias = torch.tensor(15e-3), torch.tensor(0.8), torch.tensor(0.02)
    ts = {"full": 2e-3 + 20e-3 * torch.rand(N, S, generator=g), "row": 2e-3 + 20e-3 * torch.rand(1, S, generator=g),
          "scalar": torch.tensor(8e-3)}[tau_syn]
    w = 0.5 * torch.randn(N, N * S, generator=g) if rec else None
    net = rp["Sequential"](
        rp["LinearTorch"]((N_IN, N * S), has_bias=True),
        cls((N * S, N), **leak_kwargs(leak_mode, tau, ts), threshold=thr, bias=bias, has_rec=rec, w_rec=w,
            spike_generation_fn=rp[surrogate], max_spikes_per_dt=max_spikes, **kw),
    )
    with torch.no_grad():
        net[0].weight.copy_(0.6 * torch.randn(N_IN, N * S, generator=g) + 0.3)
        net[0].bias.copy_(0.1 * torch.randn(N * S, generator=g))
    return net


def build_alif(rp, cls, N=5, tau_ahp="neuron", **kw):
    """Linear -> aLIFTorch: build_synaptic's network with an AHP current, w_ahp (N,) and tau_ahp (N,),
    (1,) or () (Rockpool's own takes a () w_ahp for one neuron only)."""
    g = torch.Generator().manual_seed(9)
    ta = {"neuron": 5e-3 + 30e-3 * torch.rand(N, generator=g), "one": torch.tensor([12e-3]),
          "scalar": torch.tensor(12e-3)}[tau_ahp]
    return build_synaptic(rp, cls, N=N, w_ahp=-0.2 - 0.8 * torch.rand(N, generator=g), tau_ahp=ta, **kw)


BUILD = {"lif": build_lif, "synaptic": build_synaptic, "alif": build_alif}
# The neuron layers in a network, by Rockpool's names, with their records and states.
LAYERS = {"lif": ("1_LIFNeuronTorch", "3_LIFNeuronTorch"), "synaptic": ("1_LIFTorch",), "alif": ("1_aLIFTorch",)}
RECORDS = {"lif": {"vmem", "spikes"}, "synaptic": {"vmem", "isyn", "irec", "spikes"},
           "alif": {"vmem", "isyn", "irec", "iahp", "spikes"}}
STATES = {"lif": {"vmem"}, "synaptic": {"vmem", "isyn", "spikes"}, "alif": {"vmem", "isyn", "iahp", "spikes"}}


def pair(rp, model, **kw):
    theirs, ours = rp[model]
    return BUILD[model](rp, theirs, **kw), BUILD[model](rp, ours, **kw)


def make_input(seed, B=3, T=25, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, N_IN, generator=g) < p).float() * 1.5


def run_and_backprop(net, x, model, rec=False):
    """One call with records, and the gradients of a loss on the spikes and every record."""
    for p in net.parameters().astorch():  # Rockpool's parameters() is a dict
        p.grad = None
    x = x.clone().requires_grad_(True)
    out, state, record = net(x, record=True)
    r = record[LAYERS[model][0]]
    loss = (out * torch.linspace(0.5, 1.5, out.shape[-1])).sum() + 0.1 * r["vmem"].pow(2).sum()
    if model != "lif":
        loss = loss + 0.05 * r["isyn"].sum()
    if model == "alif":
        loss = loss + 0.05 * r["iahp"].sum()
    if rec:
        loss = loss + 0.05 * r["irec"].sum()
    loss.backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    grads["input"] = x.grad
    return out, state, record, grads


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rockpool", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "lif_cuda.rockpool", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'lif_cuda\[rockpool\]'"):
        importlib.import_module("lif_cuda.rockpool")


# (model, constructor arguments, parameter families, parameters, states)
ATTRIBUTES = {
    "lif": (dict(shape=5, tau_mem=0.01), ("taus", "thresholds", "bias"), {"tau_mem", "threshold", "bias"}),
    "synaptic": (dict(shape=(6, 3), has_rec=True), ("weights", "taus", "bias", "thresholds"),
                 {"w_rec", "tau_mem", "tau_syn", "bias", "threshold"}),
    "alif": (dict(shape=(6, 3), has_rec=True), ("weights", "taus", "bias", "thresholds"),
             {"w_rec", "tau_mem", "tau_syn", "bias", "threshold", "w_ahp", "tau_ahp"}),
}


@pytest.mark.parametrize("model", MODELS)
def test_is_a_rockpool_module_with_the_same_attributes(rp, model):
    kwargs, families, params = ATTRIBUTES[model]
    theirs, ours = rp[model][0](**kwargs), rp[model][1](**kwargs)
    assert isinstance(ours, rp["TorchModule"]) and isinstance(ours, torch.nn.Module)
    for family in families:
        assert ours.parameters(family).keys() == theirs.parameters(family).keys(), family
    assert ours.parameters().keys() == theirs.parameters().keys() == params
    assert ours.state().keys() == theirs.state().keys() == STATES[model]
    assert set(theirs.simulation_parameters()) <= set(ours.simulation_parameters())
    assert dict(ours.named_parameters()).keys() == dict(theirs.named_parameters()).keys()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    if model == "lif":
        assert ours.size_in == ours.size_out == ours.n_neurons == 5
        assert ours.spike_generation_fn == lif_cuda.StepPWL.apply  # stored as Rockpool stores it
    else:
        assert isinstance(ours, rp[model][0])  # LIFTorch: a subclass of Rockpool's
        assert ours.tau_syn.shape == (3, 2) and ours.w_rec.shape == (3, 6)
        assert ours.as_graph() is not None  # Rockpool's graph export, inherited


@pytest.mark.parametrize("model", MODELS)
def test_rockpools_surrogates_run_on_the_fused_kernels(rp, model):
    for theirs, ours in (("StepPWL", lif_cuda.StepPWL), ("PeriodicExponential", lif_cuda.PeriodicExponential)):
        layer = rp[model][1](ATTRIBUTES[model][0]["shape"], spike_generation_fn=rp[theirs])
        assert layer._spike_fn_class() is ours  # the fused kernels know ours by identity


# (model, network arguments)
CASES = [
    ("lif", dict(surrogate=s, params=p, max_spikes=3.0))
    for s in ("StepPWL", "PeriodicExponential") for p in ("neuron", "scalar")
] + [
    ("synaptic", dict(S=S, rec=rec, tau_syn=ts, params=p, surrogate=s))
    for S, rec, ts, p, s in [
        (1, False, "full", "neuron", "StepPWL"),
        (2, False, "row", "scalar", "PeriodicExponential"),
        (1, True, "scalar", "neuron", "StepPWL"),
        (2, True, "full", "neuron", "StepPWL"),
        (3, True, "row", "neuron", "PeriodicExponential"),
        (3, False, "full", "scalar", "StepPWL"),
    ]
] + [
    ("alif", dict(S=S, rec=rec, tau_syn=ts, params=p, surrogate=s, tau_ahp=ta, max_spikes=m))
    for S, rec, ts, p, s, ta, m in [
        (1, False, "full", "neuron", "StepPWL", "neuron", 3.0),
        (2, False, "row", "scalar", "PeriodicExponential", "one", 3.0),
        (1, True, "scalar", "neuron", "StepPWL", "scalar", 3.0),
        (2, True, "full", "neuron", "StepPWL", "neuron", 1.0),
        (3, True, "row", "neuron", "PeriodicExponential", "neuron", 3.0),
        (3, False, "full", "scalar", "StepPWL", "one", 2.0**16),
    ]
]


CASES = CASES + [  # the same networks with their leaks as decays or bitshifts
    (m, dict(kw, leak_mode=mode)) for mode in ("decays", "bitshifts") for m, kw in CASES if m in ("synaptic", "alif")
]


@pytest.mark.parametrize("model,kw", CASES, ids=[f"{m}-" + "-".join(map(str, kw.values())) for m, kw in CASES])
def test_same_spikes_records_state_and_gradients(rp, model, kw):
    theirs, ours = pair(rp, model, **kw)
    for call in range(2):  # the second call starts from the state the first one left
        x = make_input(call, p=0.3 if model == "lif" else 0.4)
        out_t, state_t, rec_t, g_t = run_and_backprop(theirs, x, model, kw.get("rec", False))
        out_o, state_o, rec_o, g_o = run_and_backprop(ours, x, model, kw.get("rec", False))
        assert torch.equal(out_o, out_t)
        # (max_spikes 1.0: the clamp at work, one spike a step at most)
        multi = out_t.max() == 1 if kw.get("max_spikes") == 1.0 else out_t.max() > 1
        assert out_t.sum() > 0 and multi, "the case should have (multiple) spikes"
        for name in LAYERS[model]:
            assert rec_o[name].keys() == rec_t[name].keys() == RECORDS[model]
            for key in rec_t[name]:
                assert torch.equal(rec_o[name][key], rec_t[name][key]), (name, key)
            assert state_o[name].keys() == state_t[name].keys() == STATES[model]
            for key in state_t[name]:
                assert torch.equal(state_o[name][key], state_t[name][key]), (name, key)
                assert torch.equal(state_o[name][key], rec_o[name][key][0, -1]), "state = batch row 0"
        assert g_o.keys() == g_t.keys()
        for name in g_t:
            assert g_t[name].abs().sum() > 0, f"{name}: no gradient reached it"
            err = rel_err(g_o[name], g_t[name])
            assert err <= GRAD_TOL, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("model", MODELS)
def test_same_noise_under_the_same_seed(rp, model):
    theirs, ours = pair(rp, model, noise_std=0.2)
    x = make_input(3)
    torch.manual_seed(11)
    out_t, _, rec_t = theirs(x, record=True)
    torch.manual_seed(11)
    out_o, _, rec_o = ours(x, record=True)
    assert torch.equal(out_o, out_t)
    layer = LAYERS[model][0]
    assert torch.equal(rec_o[layer]["vmem"], rec_t[layer]["vmem"])


def test_synaptic_kernel_noise_is_reproducible_under_a_seed(rp):
    """In-kernel noise (LIFTorch's noise="kernel"): reproducible under one seed, no (B,T,N) tensor."""
    kernel = build_synaptic(rp, rp["synaptic"][1], noise_std=0.2, noise="kernel")
    x = make_input(3)
    torch.manual_seed(11)
    a, _, _ = kernel(x)
    kernel.reset_state()
    torch.manual_seed(11)
    assert torch.equal(kernel(x)[0], a)


@pytest.mark.parametrize("model,leak_mode",
                         [("lif", "taus")] + [(k, m) for k in ("synaptic", "alif") for m in LEAK_MODES])
def test_trains_in_lockstep_with_rockpool(rp, model, leak_mode):
    theirs, ours = pair(rp, model, **({} if model == "lif" else dict(leak_mode=leak_mode)))
    target = torch.tensor([0.3, 0.1, 0.2]) if model == "lif" else 0.3
    opts = [torch.optim.Adam(net.parameters().astorch(), lr=1e-3) for net in (theirs, ours)]
    x = make_input(5, B=3, T=30)
    losses = {id(theirs): [], id(ours): []}
    initial = {name: p.detach().clone() for name, p in ours.named_parameters()}
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
    if leak_mode == "taus":  # (an Adam step of 1e-3 moves a decay or a bitshift too little to tell)
        assert losses[id(ours)][-1] < losses[id(ours)][0]
    p_t, p_o = dict(theirs.named_parameters()), dict(ours.named_parameters())
    for name in p_t:
        assert not torch.equal(p_o[name], initial[name]), f"{name} was not trained"
        assert rel_err(p_o[name], p_t[name]) <= 1e-6, name


@pytest.mark.parametrize("model", MODELS)
def test_evolve_without_record_and_auto_batching(rp, model):
    shape = 4 if model == "lif" else (8, 4)
    theirs, ours = (cls(shape, tau_mem=0.01, threshold=0.5) for cls in rp[model])
    x = torch.rand(30, 1) * 0.6  # (T, 1): batch 1, broadcast over the inputs, as Rockpool does
    out_t, _, rec_t = theirs(x)
    out_o, _, rec_o = ours(x)
    assert rec_o == rec_t == {}
    assert out_o.shape == (1, 30, 4) and torch.equal(out_o, out_t)
    with pytest.raises(ValueError, match="wrong neuron dimension"):
        ours(torch.zeros(2, 5, 3))


@pytest.mark.parametrize("model", MODELS)
def test_torch_api_reset_and_backends(rp, model):
    shape, kw = (4, {}) if model == "lif" else ((6, 3), dict(has_rec=True))
    ours = rp[model][1](shape, tau_mem=0.01, threshold=0.5, **kw).to_torch()
    ref = rp[model][1](shape, tau_mem=0.01, threshold=0.5, backend="reference", **kw).to_torch()
    ref.load_state_dict(ours.state_dict())
    x = torch.rand(2, 30, ours.size_in)
    out = ours(x)  # the torch API: a tensor, not a tuple
    assert isinstance(out, torch.Tensor) and out.shape == (2, 30, ours.size_out)
    assert ours.vmem.abs().sum() > 0
    assert torch.equal(ref(x), out)
    ours.reset_state()
    for name in STATES[model]:
        assert torch.equal(getattr(ours, name), torch.zeros(ours.size_out, *getattr(ours, name).shape[1:])), name


# (model, constructor arguments, exception, message)
BAD_ARGUMENTS = [
    ("lif", dict(shape=(2, 3)), ValueError, "one dimension"),
    ("lif", dict(shape=3, backend="gpu"), ValueError, "backend"),
    ("lif", dict(shape=3, spike_generation_fn=torch.relu), TypeError, "spike_generation_fn"),
    ("synaptic", dict(shape=(4, 2), leak_mode="xylo"), ValueError, "leak_mode"),  # Rockpool's errors, as Rockpool
    ("synaptic", dict(shape=(4, 2), alpha=0.8), ValueError, "leak mode is set to taus"),
    ("synaptic", dict(shape=(4, 2), leak_mode="decays", tau_syn=0.02), ValueError, "leak mode is set to decays"),
    ("synaptic", dict(shape=(4, 2), leak_mode="decays", dash_mem=2), ValueError, "leak mode is set to decays"),
    ("synaptic", dict(shape=(4, 2), leak_mode="bitshifts", beta=0.8), ValueError, "leak mode is set to bitshifts"),
    ("synaptic", dict(shape=(4, 2), leak_mode="decays", beta=torch.full((3, 2), 0.5)), ValueError, "shape"),
    ("synaptic", dict(shape=(4, 2), w_rec=torch.zeros(2, 4)), ValueError, "w_rec"),  # without has_rec, as Rockpool
    ("synaptic", dict(shape=(4, 2), has_rec=True, w_rec=torch.zeros(2, 2)), ValueError, "shape"),
    ("synaptic", dict(shape=(4, 2), tau_syn=torch.full((3, 2), 0.01)), ValueError, "shape"),
    ("synaptic", dict(shape=(4, 2), backend="gpu"), ValueError, "backend"),
    ("synaptic", dict(shape=(4, 2), noise="numpy"), ValueError, "noise"),
    ("synaptic", dict(shape=(4, 2), spike_generation_fn=torch.relu), TypeError, "spike_generation_fn"),
    ("alif", dict(shape=(4, 2), leak_mode="xylo"), ValueError, "leak_mode"),
    ("alif", dict(shape=(4, 2), leak_mode="decays", tau_syn=0.02), ValueError, "leak mode is set to decays"),
    ("alif", dict(shape=(4, 2), backend="gpu"), ValueError, "backend"),
    ("alif", dict(shape=(4, 2), noise="numpy"), ValueError, "noise"),
    ("alif", dict(shape=(4, 2), tau_ahp=torch.full((3,), 0.01)), ValueError, "shape"),
]


@pytest.mark.parametrize("model,kwargs,exc,match", BAD_ARGUMENTS,
                         ids=[f"{m}-{'-'.join(k for k in kw if k != 'shape') or 'shape'}" for m, kw, _, _ in
                              BAD_ARGUMENTS])
def test_bad_arguments(rp, model, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rp[model][1](**kwargs)


# (model, shape, a parameter Rockpool accepts but a call refuses, its name, the input's width): a
# decay must be in [0, 1] (what exp(-dt/tau) gives for tau > 0), a bitshift >= 0 (its decay then is).
BAD_AT_CALL = [
    ("lif", 3, dict(tau_mem=-1.0), "tau_mem", 3),
    ("synaptic", (4, 2), dict(tau_syn=-0.01), "tau_syn", 4),
    ("synaptic", (4, 2), dict(leak_mode="decays", alpha=1.5), "alpha", 4),
    ("synaptic", (4, 2), dict(leak_mode="decays", beta=torch.tensor([[0.5, -0.1]])), "beta", 4),
    ("synaptic", (4, 2), dict(leak_mode="bitshifts", dash_mem=-0.5), "dash_mem", 4),
    ("synaptic", (4, 2), dict(leak_mode="bitshifts", dash_syn=float("nan")), "dash_syn", 4),
    ("alif", (4, 2), dict(tau_ahp=-0.01), "tau_ahp", 4),
]


@pytest.mark.parametrize("model,shape,kwargs,name,n_in", BAD_AT_CALL, ids=[f"{r[0]}-{r[3]}" for r in BAD_AT_CALL])
def test_a_call_refuses_a_bad_parameter_and_keeps_the_state(rp, model, shape, kwargs, name, n_in):
    layer = rp[model][1](shape, **kwargs)
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        layer(torch.ones(1, 3, n_in))
    for state in STATES[model]:
        assert not getattr(layer, state).any(), state
    with pytest.raises(ValueError, match="wrong neuron dimension"):
        layer(torch.zeros(1, 3, n_in + 1))


# ------------------------------------------------------------------------------------ leak modes

LEAK_NAMES = ("tau_mem", "tau_syn", "alpha", "beta", "dash_mem", "dash_syn")


@pytest.mark.parametrize("leak_mode", LEAK_MODES)
def test_leak_modes_have_rockpools_parameters_defaults_and_derived_leaks(rp, leak_mode):
    """Each mode's trainable parameters, families, defaults and shapes are Rockpool's, and so are the
    other families' values computed from them (Rockpool's leak attributes, e.g. tau_mem of a
    "bitshifts" layer)."""
    theirs, ours = (cls((6, 3), leak_mode=leak_mode, has_rec=True) for cls in rp["synaptic"])
    assert ours.parameters().keys() == theirs.parameters().keys()
    for family in ("taus", "decays", "bitshifts", "weights"):
        assert ours.parameters(family).keys() == theirs.parameters(family).keys(), family
    for name, p in dict(theirs.named_parameters()).items():
        if name != "w_rec":  # Kaiming-initialised at random
            assert torch.equal(dict(ours.named_parameters())[name], p), name
    for name in LEAK_NAMES:
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name


@pytest.mark.parametrize("leak_mode", ["decays", "bitshifts"])
def test_a_leak_set_through_another_family_is_set_as_rockpool_sets_it(rp, leak_mode):
    theirs, ours = (cls((4, 2), leak_mode=leak_mode) for cls in rp["synaptic"])
    for layer in (theirs, ours):
        layer.tau_mem = torch.full((2,), 0.01)  # Rockpool converts it into this mode's parameter
    for name in LEAK_NAMES:
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name
    x = make_input(2, B=1, T=20)[..., :4]
    assert torch.equal(ours(x)[0], theirs(x)[0])


# --------------------------------------------------------------------- the graph Xylo's mapper reads


@pytest.fixture(scope="module")
def xylo_mapper():
    pytest.importorskip("rockpool")
    return load_xylo_v2_mapper()


def xylo_network(rp, cls, leak_mode):
    """Linear -> LIFTorch (6 neurons, 2 synapses each, recurrent) -> Linear -> LIFTorch (3 neurons)."""
    g = torch.Generator().manual_seed(17)
    tau, thr, bias = random_neuron_params(6, g)
    ts = 4e-3 + 20e-3 * torch.rand(6, 2, generator=g)
    net = rp["Sequential"](
        rp["LinearTorch"]((N_IN, 12)),
        cls((12, 6), **leak_kwargs(leak_mode, tau, ts), threshold=thr, bias=bias, has_rec=True,
            w_rec=0.5 * torch.randn(6, 12, generator=g)),
        rp["LinearTorch"]((6, 3)),
        cls((3,), **leak_kwargs(leak_mode, 12e-3, 8e-3), threshold=0.7),
    )
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(N_IN, 12, generator=g))
        net[2].weight.copy_(torch.randn(6, 3, generator=g))
    return net


def graph_summary(graph):
    """A graph as comparable values: per module (in traversal order) its class, its name without the
    object id, the indices of its input and output nodes, and every other field (the parameters the
    mapper reads: weights; tau_mem, tau_syn, threshold, bias, dt); the graph's own nodes."""
    from rockpool.graph.utils import bag_graph

    nodes, modules = bag_graph(graph)
    index = {id(n): i for i, n in enumerate(nodes)}
    summary = [[index[id(n)] for n in graph.input_nodes], [index[id(n)] for n in graph.output_nodes]]
    for m in modules:
        fields = {k: v for k, v in vars(m).items() if k not in ("input_nodes", "output_nodes", "name",
                                                                 "computational_module")}
        summary.append((type(m), m.name.rsplit("_", 1)[0], [index[id(n)] for n in m.input_nodes],
                        [index[id(n)] for n in m.output_nodes], fields))
    return summary, modules


def assert_same_values(a, b, what):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            assert_same_values(a[k], b[k], f"{what}.{k}")
    elif isinstance(a, (list, tuple)) and not (a and isinstance(a[0], (int, float, np.number))):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_values(x, y, f"{what}[{i}]")
    elif isinstance(a, (np.ndarray, list, tuple, float, int, np.number)):
        assert np.array_equal(np.asarray(a), np.asarray(b)), what
    else:
        assert a == b, what


@pytest.mark.parametrize("leak_mode", LEAK_MODES)
def test_graph_and_xylo_specification_equal_rockpools(rp, xylo_mapper, leak_mode):
    theirs, ours = (xylo_network(rp, cls, leak_mode) for cls in rp["synaptic"])
    (summary_t, modules_t), (summary_o, modules_o) = graph_summary(theirs.as_graph()), graph_summary(ours.as_graph())
    assert len(modules_o) == len(modules_t) == 5  # three weight matrices (one recurrent), two neuron layers
    assert_same_values(summary_o, summary_t, "graph")
    # Each neuron module of our graph points to our layer, as Rockpool's to Rockpool's.
    neurons = [m for m in modules_o if type(m).__name__ == "LIFNeuronWithSynsRealValue"]
    assert [type(m.computational_module) for m in neurons] == [rp["synaptic"][1]] * 2
    spec_t, spec_o = xylo_mapper(theirs.as_graph()), xylo_mapper(ours.as_graph())
    assert spec_o.keys() == spec_t.keys()
    assert spec_t["weights_rec"].any() and spec_t["dash_syn_2"] is not None
    for key in spec_t:
        if key != "mapped_graph":  # a graph object: compared above
            assert_same_values(spec_o[key], spec_t[key], key)


def test_lif_neuron_torch_has_no_graph_as_in_rockpool(rp):
    for cls in rp["lif"]:
        with pytest.raises(NotImplementedError, match="graph serialisation"):
            cls(3).as_graph()


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")  # PyTorch 2.13 says so
@pytest.mark.parametrize("leak_mode", LEAK_MODES)
def test_compiled_drop_in_is_bit_identical(rp, leak_mode):
    """torch.compile of a LIFTorch drop-in's call: spikes, records, state and every gradient are
    eager's bits, over two calls, in each leak mode. Dynamo breaks the graph in Rockpool's attribute
    lookup (LIFBaseTorch.__getattr__, in Rockpool's own module too), so this is not fullgraph; the
    fused op is one opaque node of a piece (a fullgraph compile of it: test_compile_exact.py)."""
    torch._dynamo.reset()
    eager = build_synaptic(rp, rp["synaptic"][1], leak_mode=leak_mode)[1]
    compiled_layer = copy.deepcopy(eager)

    def step(layer, x):
        out, state, record = layer(x, record=True)
        return out, record["vmem"], record["isyn"], record["irec"]

    compiled = torch.compile(step)
    try:
        for call in range(2):
            x = make_input(call, p=0.4)[..., :1].expand(3, 25, 10)
            a, b = step(eager, x), compiled(compiled_layer, x)
            for u, v in zip(a, b):
                assert torch.equal(u, v)
            sum(o.pow(2).sum() for o in a).backward()
            sum(o.pow(2).sum() for o in b).backward()
        assert a[0].sum() > 0
        theirs = dict(compiled_layer.named_parameters())
        for name, p in eager.named_parameters():
            assert p.grad.abs().sum() > 0 and torch.equal(theirs[name].grad, p.grad), name
        for name in STATES["synaptic"]:
            assert torch.equal(getattr(compiled_layer, name), getattr(eager, name)), name
    finally:
        torch._dynamo.reset()
