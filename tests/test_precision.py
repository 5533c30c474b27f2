"""Half-precision I/O: float16/bfloat16 input, float32 state and arithmetic, spikes and
input gradients in the input's dtype; equal to the float32 path applied to the upcast input. The
module check runs for every model; the synaptic op's half-precision input at the end."""
import pytest
import torch

import lif_cuda
from conftest import (
    assert_synaptic_bitwise,
    make_synaptic_case,
    run_synaptic_fused,
    run_synaptic_reference,
)

pytestmark = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built")

HALF = (torch.float16, torch.bfloat16)


def case(dtype, B=3, T=60, N=70, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, T, N, generator=g) * 0.8 + 0.4).to(dtype)
    v0 = torch.randn(B, N, generator=g) * 0.2
    tau = torch.rand(N, generator=g) * 0.03 + 0.005
    thr = torch.rand(N, generator=g) * 0.5 + 0.5
    bias = torch.randn(N, generator=g) * 0.05
    return x, v0, tau, thr, bias


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_forward_equals_float32_on_the_upcast_input(dtype, backend):
    x, v0, tau, thr, bias = case(dtype)
    s, w, vf = lif_cuda.lif_evolve(x, v0, tau, thr, bias, 1e-3, record=True, max_spikes_per_dt=3, backend=backend)
    s32, w32, vf32 = lif_cuda.lif_evolve(
        x.float(), v0, tau, thr, bias, 1e-3, record=True, max_spikes_per_dt=3, backend="fused"
    )
    assert s.dtype == dtype and w.dtype == torch.float32 and vf.dtype == torch.float32
    assert torch.equal(s.float(), s32)
    assert torch.equal(w, w32) and torch.equal(vf, vf32)
    assert s32.max() >= 2  # multi-spike values survive the half cast (small integers are exact)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_gradients_in_the_input_dtype_and_equal_to_float32(dtype):
    x, v0, tau, thr, bias = case(dtype, seed=1)
    gs = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(dtype)

    def grads(inp, backend, g):
        leaves = [inp.clone().requires_grad_(), tau.clone().requires_grad_(), thr.clone().requires_grad_(),
                  bias.clone().requires_grad_()]
        s, _, _ = lif_cuda.lif_evolve(leaves[0], v0, leaves[1], leaves[2], leaves[3], 1e-3, backend=backend)
        (s * g).sum().backward()
        return [t.grad for t in leaves]

    fused = grads(x, "fused", gs)
    ref = grads(x, "reference", gs)
    f32 = grads(x.float(), "fused", gs.float())
    assert fused[0].dtype == dtype
    assert all(g.dtype == torch.float32 for g in fused[1:])
    # The input gradient is the float32 gradient rounded once to the input's dtype.
    assert torch.equal(fused[0], f32[0].to(dtype))
    for a, b in zip(fused[1:], f32[1:]):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(fused, ref):
        assert ((a.float() - b.float()).norm() / b.float().norm()) < 1e-5


@pytest.mark.parametrize("cast", [False, True], ids=["float32-layer", "bfloat16-layer"])
def test_module_keeps_half_input_half(model, cast):
    """Every model: bfloat16 input gives bfloat16 spikes, float32 records, parameters and state, and
    the spikes of the float32 run on the upcast input, on either backend; model.to(bfloat16) changes
    none of that."""
    kw = dict(max_spikes_per_dt=16.0)  # spike counts a bfloat16 holds exactly (a recurrent layer runs away)
    layer = model.layer(6, backend="fused", **kw)
    if cast:
        layer = layer.to(torch.bfloat16)
    x = model.input(2, 40, 6, seed=5).bfloat16()
    s, _, rec = layer.evolve(x, record=True)
    assert s.dtype == torch.bfloat16 and rec["vmem"].dtype == torch.float32
    assert layer.tau_mem.dtype == torch.float32
    for name in model.states:
        assert getattr(layer, name).dtype == torch.float32, name
    assert torch.equal(s.float(), model.layer(6, backend="fused", **kw)(x.float()))
    assert torch.equal(s, model.layer(6, backend="reference", **kw)(x.float()).to(torch.bfloat16))


def test_noise_gradient_stays_float32_with_half_input():
    # SPEC §3: gz = U, computed in float32; only the input's copy is rounded to its dtype.
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(2, 30, 8, generator=g) + 0.5).bfloat16()
    z = torch.randn(2, 30, 8, generator=g) * 0.1
    args = (torch.zeros(8), torch.full((8,), 0.02), torch.ones(8), torch.zeros(8), 1e-3)
    grads = {}
    for backend, inp in (("fused", x), ("reference", x.float())):
        xi, zi = inp.clone().requires_grad_(), z.clone().requires_grad_()
        s, _, _ = lif_cuda.lif_evolve(xi, *args, noise=zi, backend=backend)
        # Upstream weights exact in bfloat16 (the spikes are bfloat16, so is their gradient).
        (s.float() * torch.tensor([-1, -0.75, -0.5, -0.25, 0.25, 0.5, 0.75, 1.0])).sum().backward()
        grads[backend] = (xi.grad, zi.grad)
    assert grads["fused"][0].dtype == torch.bfloat16 and grads["fused"][1].dtype == torch.float32
    assert torch.equal(grads["fused"][1], grads["reference"][1])
    assert torch.equal(grads["fused"][0], grads["reference"][1].bfloat16())


@pytest.mark.parametrize("cast", ["half", "bfloat16"])
def test_model_half_keeps_parameters_and_state_float32(cast):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), lif_cuda.LIFNeuron(8))
    model = getattr(model, cast)()
    layer = model[1]
    assert all(t.dtype == torch.float32 for t in (layer.tau_mem, layer.threshold, layer.bias, layer.vmem))
    x = torch.rand(2, 10, 4).to(model[0].weight.dtype)
    out = model(x)
    assert out.dtype == model[0].weight.dtype


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_conversion_keeps_the_float32_parameter_values(half):
    """model.half() / .to(bfloat16) keeps LIFNeuron's parameters and state float32 with their very
    values (a round trip through half precision would round them)."""
    layer = lif_cuda.LIFNeuron(5, tau_mem=torch.tensor([0.0123456, 0.02, 0.031, 0.047, 0.0101]), threshold=0.777)
    layer(torch.rand(2, 3, 5) + 0.8).sum().backward()
    before = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in layer.named_parameters()}
    layer.to(half)
    for k, v in layer.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, before[k]), k
    for k, p in layer.named_parameters():
        assert torch.equal(p.grad, grads[k]), k


# ------------------------------------------------------------------ the synaptic model (SPEC §7)


@pytest.mark.parametrize("io", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_synaptic_half_precision_input(io):
    """float16/bfloat16 input: state and arithmetic in float32 (the reference's float32 run on the
    rounded input), spikes in the input's dtype."""
    case = make_synaptic_case(7, 2, 17, 5, 2, rec=True)
    case["input"] = case["input"].to(io)
    got, want = run_synaptic_fused(case), run_synaptic_reference(case)
    assert got[0].dtype == io and got[4].dtype == torch.float32
    assert_synaptic_bitwise(got, want)
