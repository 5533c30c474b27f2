"""torch.compile changes no bit.

Under torch.compile(fullgraph=True) (Inductor), the fused op is one opaque call whose kernels compute
everything themselves, alpha = exp(-dt/tau) and the gradient of tau included, so the compiled
program gives eager mode's bits: spikes, recorded membrane, final state, and the gradients of input,
v0, tau_mem, threshold, bias (and of a noise tensor), in float32 and float64, for both surrogates,
without noise, with a noise tensor, and with in-kernel noise under the same torch.manual_seed.

- The op itself, compiled inside a function (every argument differentiable, v0 (B,N)).
- LIFNeuron.evolve(x, record=True), compiled, over two calls (the state is carried), and a
  module's training step.
- Both with per-row lengths (SPEC §8), and the module also with batch_state=True.
- SynapticLIF's training step, compiled, with its leaks as time constants or as decays (with lengths
  and batch_state: tests/test_lengths_state.py).
- AdaptiveLIF.evolve, compiled, with and without in-kernel noise and lengths, and its gradients.
The loss is formed outside the compiled region, so that only our op is compared.
"""
import copy

import pytest
import torch

import lif_cuda
from conftest import MODELS, assert_bitwise, make_synaptic_layer
from lif_cuda import LIFNeuron, PeriodicExponential, StepPWL

pytestmark = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")

B, T, N = 3, 9, 5
DTYPES = {"f32": torch.float32, "f64": torch.float64}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    with torch.random.fork_rng(devices=[]):
        yield
    torch._dynamo.reset()


def bits(t):
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.numel() else t


def assert_identical(a, b, what):
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    diff = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    assert torch.equal(bits(a), bits(b)), f"{what}: compiled differs from eager (max |diff| {diff:.3e})"


def _weights(dtype, seed=11):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for shape in ((B, T, N), (B, T, N), (B, N))]


def _loss(outs, weights):
    return sum((o * w).sum() for o, w in zip(outs, weights))


# Per-row lengths (B = 3 rows): T, 0, a part.
LENGTHS = [T, 0, 4]


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["all-T", "lengths"])
@pytest.mark.parametrize("noise", ["none", "tensor", "kernel"])
@pytest.mark.parametrize("surrogate", [0, 1], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_compiled_op_is_bit_identical(dtype, surrogate, noise, lengths):
    dtype = DTYPES[dtype]
    g = torch.Generator().manual_seed(3)
    rnd = lambda *s: torch.rand(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    rndn = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    leaves = {
        "input": 0.6 + rndn(B, T, N),
        "v0": 0.5 * rndn(B, N),
        "tau_mem": 5e-3 + 45e-3 * rnd(N),  # a spread of taus: alpha's last bit is exp's
        "threshold": 0.3 + 1.2 * rnd(N),
        "bias": 0.1 * rndn(N),
    }
    if noise == "tensor":
        leaves["noise"] = 0.3 * rndn(B, T, N)
    scale = 0.2 if noise == "kernel" else 0.0
    lengths_t = None if lengths is None else torch.tensor(lengths)

    def f(input, v0, tau_mem, threshold, bias, noise=None):
        s, w, vf, _, _ = torch.ops.lif_cuda.lif_forward(
            input, v0, tau_mem, threshold, bias, noise, None, 1e-3, scale, 0.5, 2.0**16, surrogate, True, False,
            lengths_t,
        )
        return s, w, vf

    compiled = torch.compile(f, fullgraph=True)
    weights = _weights(dtype)
    results = []
    for fn in (f, compiled):
        args = {k: v.clone().requires_grad_(True) for k, v in leaves.items()}
        torch.manual_seed(1234)  # the in-kernel noise key, drawn by the op at run time
        outs = fn(**args)
        grads = torch.autograd.grad(_loss(outs, weights), list(args.values()))
        results.append((outs, dict(zip(args, grads))))
    (eager_outs, eager_grads), (comp_outs, comp_grads) = results
    assert (eager_outs[0] > 0).any() and (eager_outs[0] == 0).any(), "the case must spike and not spike"
    for name, a, b in zip(("spikes", "vmem", "final state"), comp_outs, eager_outs):
        assert_identical(a, b, name)
    for name in leaves:
        assert eager_grads[name].abs().sum() > 0, f"grad {name} is zero: the comparison would be vacuous"
        assert_identical(comp_grads[name], eager_grads[name], f"grad {name}")


@pytest.mark.parametrize("batch_state,lengths", [(False, None), (True, LENGTHS)], ids=["row0", "batch_state-lengths"])
@pytest.mark.parametrize(
    "surrogate,noise_std",
    [(StepPWL, 0.0), (PeriodicExponential, 0.4)],
    ids=["StepPWL", "PeriodicExponential-kernel-noise"],
)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_compiled_module_evolve_is_bit_identical(dtype, surrogate, noise_std, batch_state, lengths):
    dtype = DTYPES[dtype]
    g = torch.Generator().manual_seed(5)
    tau = 5e-3 + 45e-3 * torch.rand(N, generator=g)
    thr = 0.3 + 1.2 * torch.rand(N, generator=g)
    xs = [0.6 + torch.randn(B, T, N, generator=g, dtype=torch.float64).to(dtype) for _ in range(2)]
    weights = _weights(dtype)
    results = []
    for compile_it in (False, True):
        layer = LIFNeuron(N, tau_mem=tau, threshold=thr, bias=0.05, spike_generation_fn=surrogate, noise_std=noise_std,
                          backend="fused", batch_state=batch_state).to(dtype)
        evolve = torch.compile(layer.evolve, fullgraph=True) if compile_it else layer.evolve
        torch.manual_seed(77)
        steps = []
        for x in xs:  # two calls: the second starts from the state the first left
            x = x.clone().requires_grad_(True)
            spikes, state, rec = evolve(x, record=True, lengths=None if lengths is None else torch.tensor(lengths))
            loss = _loss((spikes, rec["vmem"], state["vmem"].expand(B, N)), weights)
            grads = torch.autograd.grad(loss, [x, layer.tau_mem, layer.threshold, layer.bias], allow_unused=True)
            steps.append(((spikes, rec["vmem"], layer.vmem.clone()), grads))
        results.append(steps)
    for step, ((e_outs, e_grads), (c_outs, c_grads)) in enumerate(zip(*results)):
        for name, a, b in zip(("spikes", "vmem", "state"), c_outs, e_outs):
            assert_identical(a, b, f"call {step}: {name}")
        for name, a, b in zip(("input", "tau_mem", "threshold", "bias"), c_grads, e_grads):
            assert b is not None and b.abs().sum() > 0, f"call {step}: grad {name} is zero"
            assert_identical(a, b, f"call {step}: grad {name}")


# ------------------------------------------------------------------ the synaptic model (SPEC §7)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")  # PyTorch 2.13 says so
@pytest.mark.parametrize("ahp,rec,leak_mode", [(False, r, m) for r in (True, False) for m in ("taus", "decays")]
                         + [(True, True, "taus")], ids=lambda v: str(v))
def test_compiled_synaptic_module_is_bit_identical_and_has_no_graph_break(_fresh_dynamo, ahp, rec, leak_mode):
    """torch.compile(fullgraph=True) of a training step: the op is one opaque call, so spikes, state
    and every gradient (of the time constants, or of the decays alpha and beta) are eager's bits
    (with the AHP current of SPEC §9 too)."""
    eager = MODELS["ahp-rec"].layer(6) if ahp else make_synaptic_layer(rec=rec, leak_mode=leak_mode)
    compiled_layer = copy.deepcopy(eager)
    x = 0.6 + torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(3))

    def step(layer, x):
        out, state, rec = layer.evolve(x, record=True)
        return (out, rec["vmem"], rec["isyn"]) + ((rec["iahp"],) if ahp else ())

    compiled = torch.compile(step, fullgraph=True)
    for _ in range(2):
        a = step(eager, x)
        b = compiled(compiled_layer, x)
        for u, v in zip(a, b):
            assert_bitwise(v, u, "compiled output")
        sum(o.sum() for o in a).backward()
        sum(o.sum() for o in b).backward()
    for (name, p), q in zip(eager.named_parameters(), compiled_layer.parameters()):
        assert_bitwise(q.grad, p.grad, f"grad {name}")
    assert_bitwise(compiled_layer.vmem, eager.vmem, "state")
    if ahp:
        assert_bitwise(compiled_layer.iahp, eager.iahp, "AHP state")


# ------------------------------------------------------------------ the adaptive LIF (SPEC §10)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
@pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("noise_std", [0.0, 0.3], ids=["no-noise", "kernel-noise"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["all-T", "lengths"])
def test_compiled_adaptive_module_is_bit_identical(surrogate, noise_std, lengths):
    """AdaptiveLIF.evolve compiled (fullgraph): spikes, both records, the state and every parameter's
    gradient are eager's bits, over two calls (the state carried), under the same seed."""
    g = torch.Generator().manual_seed(5)
    eager = lif_cuda.AdaptiveLIF(
        N, tau_mem=0.01 + 0.02 * torch.rand(N, generator=g), threshold=0.5 + torch.rand(N, generator=g),
        tau_adapt=0.02 + 0.05 * torch.rand(N, generator=g), beta_adapt=0.5 + torch.rand(N, generator=g),
        spike_generation_fn=surrogate, noise_std=noise_std,
    )
    compiled_layer = copy.deepcopy(eager)
    x = 0.8 + torch.randn(B, T, N, generator=g)
    lens = None if lengths is None else torch.tensor(lengths)

    def step(layer, x):
        out, state, rec = layer.evolve(x, record=True, lengths=lens)
        return out, rec["vmem"], rec["adapt"]

    compiled = torch.compile(step, fullgraph=True)
    for call in range(2):
        torch.manual_seed(call)
        a = step(eager, x)
        torch.manual_seed(call)
        b = compiled(compiled_layer, x)
        for name, u, v in zip(("spikes", "vmem", "adapt"), a, b):
            assert_identical(v, u, f"call {call}: {name}")
        w = _weights(torch.float32)[:2] * 2  # three (B,T,N) weights
        _loss(a, w).backward()
        _loss(b, w).backward()
    for (name, p), q in zip(eager.named_parameters(), compiled_layer.parameters()):
        assert p.grad.abs().sum() > 0, name
        assert_identical(q.grad, p.grad, f"grad {name}")
    assert_identical(compiled_layer.vmem, eager.vmem, "vmem state")
    assert_identical(compiled_layer.adapt, eager.adapt, "adapt state")
