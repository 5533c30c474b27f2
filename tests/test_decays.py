"""Leaks given as decays (Rockpool's leak_mode "decays"): the ops' `decays` flag, the functional
`leak_mode="decays"` and the modules' `leak_mode="decays"` (alpha and beta trained directly).

- Forward: with alpha = exp(-dt/tau_mem) and beta = exp(-dt/tau_syn) as torch computes them, a
  decays call gives the time-constant call's bits (fused and reference; LIF, and the synaptic model
  feed-forward and recurrent, 1-3 synapses, every beta shape).
- Backward: in float64 the fused gradients (of alpha and beta too) equal autograd of the reference
  given the decays; and dL/dtau of a time-constant call is dL/dalpha * dalpha/dtau.
- torch.compile(fullgraph=True) of a decays layer gives the eager bits: tests/test_compile_exact.py.
- opcheck of both ops with decays=True (fake kernels, autograd registration).
- Bad input: a decay outside [0, 1] (or NaN) is refused naming alpha or beta, on both backends,
  before any kernel runs; 0 and 1 are decays.
- Modules: LIFNeuron and SynapticLIF with leak_mode="decays" equal their time-constant twins, train
  alpha and beta, script, and refuse the other family's arguments.
"""
import pytest
import torch

import lif_cuda
from conftest import make_case, make_synaptic_case, make_synaptic_layer, needs_fused_cpu, rel_err, run_synaptic
from lif_cuda import PeriodicExponential, StepPWL
from lif_cuda.ops import kernel_launches
from lif_cuda.reference import tau_to_decay

pytestmark = needs_fused_cpu
DT = 1e-3
BACKENDS = ("fused", "reference")
# (S, recurrent, beta's shape, the neuron parameters' shape)
SYN_CASES = [(1, False, "full", "neuron"), (2, True, "row", "neuron"), (3, True, "scalar", "scalar"),
             (2, False, "full", "scalar")]
SYN_IDS = [f"S{S}-{'rec' if rec else 'ff'}-{ts}-{p}" for S, rec, ts, p in SYN_CASES]


def lif_call(case, leak, backend, leak_mode, record=True, **kw):
    return lif_cuda.lif_evolve(case.input, case.v0, leak, case.threshold, case.bias, DT, record=record,
                               backend=backend, leak_mode=leak_mode, **kw)


def as_decays(case):
    """The synaptic case with its time constants replaced by their decays."""
    return {**case, "tau_mem": tau_to_decay(DT, case["tau_mem"]), "tau_syn": tau_to_decay(DT, case["tau_syn"])}


def syn_call(case, backend, leak_mode, record=True, **kw):
    return run_synaptic(lif_cuda.synaptic_evolve, case, record, DT, backend=backend, leak_mode=leak_mode, **kw)


# ----------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("params", ["neuron", "scalar"])
def test_lif_decays_give_the_time_constants_bits(backend, params):
    case = make_case(3, 3, 40, 6, params=params)
    want = lif_call(case, case.tau_mem, backend, "taus")
    got = lif_call(case, tau_to_decay(DT, case.tau_mem), backend, "decays")
    assert want[0].sum() > 0
    for g, w in zip(got, want):
        assert torch.equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("S,rec,tau_syn,params", SYN_CASES, ids=SYN_IDS)
def test_synaptic_decays_give_the_time_constants_bits(backend, S, rec, tau_syn, params):
    case = make_synaptic_case(4, 3, 30, 5, S, tau_syn=tau_syn, params=params, rec=rec)
    want = syn_call(case, backend, "taus")
    got = syn_call(as_decays(case), backend, "decays")
    assert want[0].sum() > 0
    for g, w in zip(got, want):
        assert torch.equal(g, w)


# ---------------------------------------------------------------------------------- backward


def _grads(call, leaves, outs_of, upstream_seed=9):
    outs = outs_of(call(leaves))
    g = torch.Generator().manual_seed(upstream_seed)
    ups = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    return outs, torch.autograd.grad(outs, list(leaves.values()), ups)


@pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("params", ["neuron", "scalar"])
def test_lif_decay_gradient_equals_reference_autograd_float64(surrogate, params):
    case = make_case(5, 3, 30, 6, torch.float64, params=params)
    alpha = tau_to_decay(DT, case.tau_mem)
    base = dict(input=case.input, v0=case.v0, alpha=alpha, threshold=case.threshold, bias=case.bias)

    def call(backend):
        def run(p):
            return lif_cuda.lif_evolve(p["input"], p["v0"], p["alpha"], p["threshold"], p["bias"], DT, record=True,
                                       backend=backend, leak_mode="decays", spike_generation_fn=surrogate)
        return run

    def leaves():
        return {k: v.detach().clone().requires_grad_(True) for k, v in base.items()}

    outs_f, got = _grads(call("fused"), leaves(), lambda o: [o[0], o[1], o[2]])
    outs_r, want = _grads(call("reference"), leaves(), lambda o: [o[0], o[1], o[2]])
    assert torch.equal(outs_f[0], outs_r[0])
    for name, g, w in zip(base, got, want):
        assert g.shape == w.shape and w.abs().sum() > 0, name
        assert rel_err(g, w) <= 1e-10, f"{name}: {rel_err(g, w):.2e}"


@pytest.mark.parametrize("S,rec,tau_syn,params", SYN_CASES, ids=SYN_IDS)
def test_synaptic_decay_gradients_equal_reference_autograd_float64(S, rec, tau_syn, params):
    case = as_decays(make_synaptic_case(6, 3, 25, 5, S, torch.float64, tau_syn=tau_syn, params=params, rec=rec))
    names = [k for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec")
             if case[k] is not None and (rec or k != "s0")]

    def run(backend):
        def call(p):
            return syn_call({**case, **p}, backend, "decays")
        return call

    def leaves():
        return {k: case[k].detach().clone().requires_grad_(True) for k in names}

    outs = lambda o: [o[0], o[1], o[2], o[4], o[5]]  # noqa: E731  (spikes, records, final state)
    outs_f, got = _grads(run("fused"), leaves(), outs)
    outs_r, want = _grads(run("reference"), leaves(), outs)
    assert torch.equal(outs_f[0], outs_r[0]) and outs_f[0].sum() > 0
    for name, g, w in zip(names, got, want):
        assert g.shape == w.shape and w.abs().sum() > 0, name
        assert rel_err(g, w) <= 1e-10, f"{name} (alpha, beta for tau_mem, tau_syn): {rel_err(g, w):.2e}"


def test_a_time_constants_gradient_is_its_decays_chained():
    """dL/dtau (taus) = dL/dalpha (decays) * dalpha/dtau, alpha = exp(-dt/tau): the two calls differ
    only in the backward's last step."""
    case = make_synaptic_case(7, 2, 30, 4, 2, torch.float64, rec=True)
    taus = {k: case[k].clone().requires_grad_(True) for k in ("tau_mem", "tau_syn")}
    out = syn_call({**case, **taus}, "fused", "taus")
    g_tau = torch.autograd.grad(out[0].sum() + out[1].sum(), list(taus.values()))
    decays = {k: tau_to_decay(DT, case[k]).requires_grad_(True) for k in taus}
    out = syn_call({**case, **decays}, "fused", "decays")
    g_decay = torch.autograd.grad(out[0].sum() + out[1].sum(), list(decays.values()))
    for gt, gd, tau, d in zip(g_tau, g_decay, taus.values(), decays.values()):
        chained = gd * d.detach() * DT / tau.detach() ** 2
        assert gt.abs().sum() > 0 and rel_err(gt, chained) <= 1e-10


# ------------------------------------------------------------- the op (compiled: test_compile_exact.py)


def test_opcheck_both_ops_with_decays():
    case = make_case(9, 2, 6, 3)
    alpha = tau_to_decay(DT, case.tau_mem)
    args = (case.input, case.v0, alpha, case.threshold, case.bias, None, None, DT, 0.0, 0.5, 2.0**16, 0, True, True,
            None, True)
    torch.library.opcheck(torch.ops.lif_cuda.lif_forward.default, args)
    u = torch.ops.lif_cuda.lif_forward(*args)[3]
    bargs = (torch.randn(2, 6, 3), None, None, u, case.v0, alpha, case.threshold, DT, 0.5, 2.0**16, 0, False, None,
             True)
    torch.library.opcheck(torch.ops.lif_cuda.lif_backward.default, bargs)
    s = as_decays(make_synaptic_case(9, 2, 6, 3, 2, rec=True))
    sargs = (s["input"], s["v0"], s["i0"], s["s0"], s["tau_mem"], s["tau_syn"], s["threshold"], s["bias"], s["w_rec"],
             None, None, DT, 0.0, 0.5, 2.0**16, 0, True, True, None, None, None, None, True)
    torch.library.opcheck(torch.ops.lif_cuda.synaptic_forward.default, sargs)


# ----------------------------------------------------------------------------------- bad input


# (the leak argument, its value) refused: outside [0, 1], or NaN.
BAD_DECAYS = [("tau_mem", 1.5, "alpha"), ("tau_mem", -0.1, "alpha"), ("tau_syn", float("nan"), "beta"),
              ("tau_syn", 1.0001, "beta")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arg,value,name", BAD_DECAYS, ids=[f"{n}={v}" for _, v, n in BAD_DECAYS])
def test_a_decay_outside_0_1_is_refused_naming_it(backend, arg, value, name):
    case = as_decays(make_synaptic_case(10, 2, 5, 3, 2))
    bad = case[arg].clone()
    bad.view(-1)[1] = value
    before = kernel_launches()
    with pytest.raises(ValueError, match=rf"^{name} must be in \[0, 1\]"):
        syn_call({**case, arg: bad}, backend, "decays")
    assert kernel_launches() == before
    if arg == "tau_mem":  # the LIF model names it too
        lif = make_case(10, 2, 5, 3)
        with pytest.raises(ValueError, match=rf"^{name} must be in \[0, 1\]"):
            lif_call(lif, bad, backend, "decays")


@pytest.mark.parametrize("backend", BACKENDS)
def test_decays_0_and_1_are_decays(backend):
    case = as_decays(make_synaptic_case(11, 2, 8, 3, 2))
    case["tau_mem"] = torch.tensor([0.0, 1.0, 0.5])
    case["tau_syn"] = torch.tensor(0.0)
    spikes, vmem, isyn = syn_call(case, backend, "decays")[:3]
    assert torch.equal(isyn, torch.zeros_like(isyn))  # beta = 0: nothing survives a step


def test_a_decays_shape_and_an_unknown_leak_mode_are_named():
    case = as_decays(make_synaptic_case(12, 2, 5, 3, 2))
    with pytest.raises(ValueError, match=r"^beta must have shape \(3, 2\), \(1, 2\) or \(\)"):
        syn_call({**case, "tau_syn": torch.full((2, 2), 0.5)}, "fused", "decays")
    with pytest.raises(ValueError, match="leak_mode must be one of"):
        syn_call(case, "fused", "bitshifts")


# ------------------------------------------------------------------------------------- modules


def test_synaptic_module_with_decays_equals_its_time_constant_twin_and_trains_them():
    taus, decays = make_synaptic_layer(S=2, N=5), make_synaptic_layer(S=2, N=5, leak_mode="decays")
    assert set(dict(decays.named_parameters())) == {"alpha", "beta", "threshold", "bias", "w_rec"}
    assert decays.tau_mem is None and decays.tau_syn is None
    x = torch.rand(3, 30, 10)
    for _ in range(2):  # the second call starts from the state the first left
        out_t, state_t, rec_t = taus.evolve(x, record=True)
        out_d, state_d, rec_d = decays.evolve(x, record=True)
        assert torch.equal(out_t, out_d) and out_t.sum() > 0
        for k in rec_t:
            assert torch.equal(rec_t[k], rec_d[k]), k
        for k in state_t:
            assert torch.equal(state_t[k], state_d[k]), k
    opt = torch.optim.SGD(decays.parameters(), lr=1e-3)
    before = decays.alpha.detach().clone(), decays.beta.detach().clone()
    decays.reset_state()
    decays(x).sum().backward()
    assert decays.alpha.grad.abs().sum() > 0 and decays.beta.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(decays.alpha, before[0]) and not torch.equal(decays.beta, before[1])


def test_lif_module_with_decays_equals_its_time_constant_twin_and_scripts():
    tau = torch.linspace(5e-3, 40e-3, 4)
    taus = lif_cuda.LIFNeuron(4, tau_mem=tau, threshold=0.7)
    decays = lif_cuda.LIFNeuron(4, leak_mode="decays", alpha=tau_to_decay(DT, tau), threshold=0.7)
    x = torch.rand(2, 25, 4)
    assert torch.equal(taus(x), decays(x))
    decays.reset_state()
    assert torch.equal(torch.jit.script(decays)(x), taus.reset_state()(x))
    default = lif_cuda.LIFNeuron(4, leak_mode="decays")
    assert torch.equal(default.alpha.detach(), tau_to_decay(DT, torch.full((4,), 20e-3)))  # the default tau's


# (constructor arguments, the message)
BAD_MODULES = [
    (dict(leak_mode="decays", tau_mem=0.01), "tau_mem is a parameter of another leak_mode"),
    (dict(alpha=0.9), "alpha is a parameter of another leak_mode"),
    (dict(leak_mode="decays", beta=torch.full((3, 2), 0.9), tau_syn=0.01), "tau_syn is a parameter"),
    (dict(leak_mode="decays", alpha=1.2), r"alpha must be in \[0, 1\]"),
    (dict(leak_mode="decays", beta=-0.5), r"beta must be in \[0, 1\]"),
    (dict(leak_mode="bitshifts"), "leak_mode must be one of"),
]


@pytest.mark.parametrize("kwargs,match", BAD_MODULES, ids=[m.split(" ")[0] + "-" + str(i) for i, (_, m) in
                                                            enumerate(BAD_MODULES)])
def test_module_refuses_the_other_familys_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lif_cuda.SynapticLIF((6, 3), **kwargs)
