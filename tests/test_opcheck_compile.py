"""The custom ops are proper PyTorch citizens (SPEC §5, issue item 4).

- `torch.library.opcheck` on `lif_forward` and `lif_backward`: schema, autograd registration,
  fake (meta) kernel and AOT dispatch, over the argument combinations that change the outputs
  (record, save_u, noise tensor / in-kernel noise / none, dtype, inputs requiring grad); on
  `synaptic_forward` (with lengths: tests/test_lengths_state.py).
- `torch.compile(fullgraph=True)` of a small model using `LIFNeuron` trains without graph breaks
  and matches eager: spikes equal, gradients close. Compilation is slow on a small machine, so
  there is one compiled model in total.
"""
import copy

import pytest
import torch

import lif_cuda
from conftest import make_adaptive_case, make_synaptic_case, needs_fused_cpu

B, T, N = 2, 5, 7


def _forward_args(dtype, noise, record, save_u, requires_grad, surrogate=0, seed=0, params="neuron", v0_shape="batch"):
    g = torch.Generator().manual_seed(seed)
    state_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    P = (N,) if params == "neuron" else ()

    def randn(*shape, dt=state_dtype):
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dt)

    x = (0.5 + randn(B, T, N, dt=torch.float64)).to(dtype)
    v0 = 0.5 * randn(*((B, N) if v0_shape == "batch" else (N,)))
    tau = (5e-3 + 45e-3 * torch.rand(P, generator=g, dtype=torch.float64)).to(state_dtype)
    thr = (0.3 + 1.2 * torch.rand(P, generator=g, dtype=torch.float64)).to(state_dtype)
    bias = 0.1 * randn(*P)
    z = 0.3 * randn(B, T, N) if noise == "tensor" else None
    key = torch.tensor([1234, 0], dtype=torch.int64) if noise == "kernel" else None
    scale = 0.06 if noise == "kernel" else 0.0
    if requires_grad:
        for t in (x, v0, tau, thr, bias, z):
            if t is not None:
                t.requires_grad_(True)
    return (x, v0, tau, thr, bias, z, key, 1e-3, scale, 0.5, 2.0**16, surrogate, record, save_u)


FORWARD_COMBOS = {
    # name: (dtype, noise, record, save_u, requires_grad, surrogate, params, v0 shape)
    "f32_record_grad": (torch.float32, None, True, True, True, 0, "neuron", "batch"),
    "f32_norecord_noise_grad": (torch.float32, "tensor", False, True, True, 1, "neuron", "batch"),
    "f64_record_noise_grad": (torch.float64, "tensor", True, True, True, 0, "neuron", "batch"),
    "f32_kernel_noise_grad": (torch.float32, "kernel", True, True, True, 1, "neuron", "batch"),
    "f32_inference": (torch.float32, None, True, False, False, 0, "neuron", "batch"),
    "f64_inference_kernel_noise": (torch.float64, "kernel", False, False, False, 0, "neuron", "batch"),
    "f32_save_u_without_grad": (torch.float32, "tensor", False, True, False, 0, "neuron", "batch"),
    "f16_io_grad": (torch.float16, None, True, True, True, 0, "neuron", "batch"),
    "f32_scalar_params_shared_v0_grad": (torch.float32, None, True, True, True, 0, "scalar", "shared"),
    "f64_scalar_params_shared_v0_inference": (torch.float64, None, False, False, False, 1, "scalar", "shared"),
}


@pytest.mark.parametrize("combo", list(FORWARD_COMBOS))
def test_opcheck_lif_forward(combo):
    dtype, noise, record, save_u, requires_grad, surrogate, params, v0_shape = FORWARD_COMBOS[combo]
    args = _forward_args(dtype, noise, record, save_u, requires_grad, surrogate, params=params, v0_shape=v0_shape)
    spikes, vmem, v_final, u, v0_saved = torch.ops.lif_cuda.lif_forward(*args)
    assert spikes.shape == (B, T, N) and v_final.shape == (B, N)
    # u is saved whenever a gradient is needed, whatever save_u says (the autograd kernel sets it).
    assert vmem.shape == ((B, T, N) if record else (0,))
    assert u.shape == ((B, T, N) if save_u or requires_grad else (0,))
    assert v0_saved.shape == (tuple(args[1].shape) if save_u or requires_grad else (0,))
    torch.library.opcheck(torch.ops.lif_cuda.lif_forward.default, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("surrogate", [0, 1], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("upstream", ["spikes", "spikes+vmem+final"])
@pytest.mark.parametrize("params,v0_shape", [("neuron", "batch"), ("scalar", "shared")], ids=["neuron", "scalar"])
def test_opcheck_lif_backward(dtype, surrogate, upstream, params, v0_shape):
    args = _forward_args(dtype, None, True, True, False, surrogate, params=params, v0_shape=v0_shape)
    _, _, _, u, _ = torch.ops.lif_cuda.lif_forward(*args)
    x, v0, tau, thr, bias = args[:5]
    g = torch.Generator().manual_seed(1)
    gs = torch.randn(B, T, N, generator=g, dtype=dtype)
    gw = torch.randn(B, T, N, generator=g, dtype=dtype) if "vmem" in upstream else None
    gvf = torch.randn(B, N, generator=g, dtype=dtype) if "final" in upstream else None
    bargs = (gs, gw, gvf, u, v0, tau, thr, 1e-3, 0.5, 2.0**16, surrogate, bias.dim() == 0)
    outs = torch.ops.lif_cuda.lif_backward(*bargs)
    assert [tuple(o.shape) for o in outs] == [(B, T, N), tuple(v0.shape), tuple(tau.shape), tuple(thr.shape),
                                              tuple(bias.shape)]
    torch.library.opcheck(torch.ops.lif_cuda.lif_backward.default, bargs)


# Per-row lengths (SPEC §8): T, 0 (B = 2 rows).
LENGTHS = torch.tensor([T, 0])


@pytest.mark.parametrize("combo", ["f32_record_grad", "f32_kernel_noise_grad", "f64_inference_kernel_noise",
                                   "f16_io_grad", "f32_scalar_params_shared_v0_grad"])
def test_opcheck_lif_forward_with_lengths(combo):
    dtype, noise, record, save_u, requires_grad, surrogate, params, v0_shape = FORWARD_COMBOS[combo]
    args = _forward_args(dtype, noise, record, save_u, requires_grad, surrogate, params=params, v0_shape=v0_shape)
    args = args + (LENGTHS,)
    spikes, vmem, v_final, _, _ = torch.ops.lif_cuda.lif_forward(*args)
    assert not spikes[1].any() and (spikes[0] > 0).any()
    torch.library.opcheck(torch.ops.lif_cuda.lif_forward.default, args)


@pytest.mark.parametrize("surrogate", [0, 1], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("params,v0_shape", [("neuron", "batch"), ("scalar", "shared")], ids=["neuron", "scalar"])
def test_opcheck_lif_backward_with_lengths(surrogate, params, v0_shape):
    args = _forward_args(torch.float64, None, True, True, False, surrogate, params=params, v0_shape=v0_shape)
    _, _, _, u, _ = torch.ops.lif_cuda.lif_forward(*args, LENGTHS)
    x, v0, tau, thr, bias = args[:5]
    g = torch.Generator().manual_seed(2)
    gs, gw = (torch.randn(B, T, N, generator=g, dtype=torch.float64) for _ in range(2))
    gvf = torch.randn(B, N, generator=g, dtype=torch.float64)
    bargs = (gs, gw, gvf, u, v0, tau, thr, 1e-3, 0.5, 2.0**16, surrogate, bias.dim() == 0, LENGTHS)
    g_in = torch.ops.lif_cuda.lif_backward(*bargs)[0]
    assert not g_in[1].any() and g_in[0].abs().sum() > 0
    torch.library.opcheck(torch.ops.lif_cuda.lif_backward.default, bargs)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 16)
        self.lif = lif_cuda.LIFNeuron(16, tau_mem=torch.full((16,), 0.02), backend="fused")
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x):
        spikes = self.lif(self.fc1(x))
        return self.fc2(spikes), spikes


def test_compiled_model_trains_like_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = _Net()
    with torch.no_grad():
        eager.fc1.weight.mul_(4.0)  # enough drive for several spikes per step
    compiled_net = copy.deepcopy(eager)
    initial_fc1 = eager.fc1.weight.detach().clone()
    compiled = torch.compile(compiled_net, fullgraph=True)  # a graph break is an error

    def sgd(net):  # tau_mem's gradient is large (dL/dtau ~ 1/tau^2): a small step keeps it > 0
        return torch.optim.SGD(
            [{"params": [net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias]},
             {"params": net.lif.parameters(), "lr": 1e-7}],
            lr=1e-3,
        )

    opt_e, opt_c = sgd(eager), sgd(compiled_net)
    g = torch.Generator().manual_seed(1)
    try:
        for step in range(3):
            x = torch.randn(4, 10, 6, generator=g)
            out_e, s_e = eager(x)
            out_c, s_c = compiled(x)
            assert torch.equal(s_c, s_e), f"step {step}: spikes differ"
            assert (s_e >= 2).any() and (s_e == 0).any()
            # Not bitwise: inductor generates its own exp for alpha = exp(-dt / tau_mem), which
            # differs from ATen's by an ulp for some tau (a spike flip would need u within that
            # ulp of a threshold).
            torch.testing.assert_close(compiled_net.lif.vmem, eager.lif.vmem, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
            out_e.pow(2).sum().backward()
            out_c.pow(2).sum().backward()
            for (name, p_c), p_e in zip(compiled_net.named_parameters(), eager.parameters()):
                assert p_e.grad is not None and p_e.grad.abs().sum() > 0, name
                torch.testing.assert_close(p_c.grad, p_e.grad, rtol=1e-5, atol=1e-6, msg=f"step {step}: grad {name}")
            opt_e.step()
            opt_c.step()
            opt_e.zero_grad()
            opt_c.zero_grad()
            with torch.no_grad():
                for (name, p_c), p_e in zip(compiled_net.named_parameters(), eager.parameters()):
                    torch.testing.assert_close(p_c, p_e, rtol=1e-6, atol=1e-7, msg=f"step {step}: {name}")
                    # Gradients agree to rounding only; start the next step from identical
                    # parameters so that its spikes can be compared exactly again.
                    p_c.copy_(p_e)
        assert not torch.equal(eager.fc1.weight, initial_fc1), "the optimiser steps changed nothing"
    finally:
        torch._dynamo.reset()


# ------------------------------------------------------------------ the synaptic model (SPEC §7)


@needs_fused_cpu
def test_opcheck_synaptic_forward():
    case = make_synaptic_case(11, 2, 5, 3, 2, rec=True)
    for record, grad in ((True, True), (False, False)):
        args = [case[k].clone().requires_grad_(grad) for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn",
                                                                "threshold", "bias", "w_rec")]
        torch.library.opcheck(torch.ops.lif_cuda.synaptic_forward,
                              (*args, None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, record, grad))


@needs_fused_cpu
def test_opcheck_synaptic_with_ahp():
    """synaptic_forward and synaptic_backward with the AHP current (SPEC §9): schemas, fake kernels and
    autograd registration agree."""
    case = make_synaptic_case(12, 2, 5, 3, 2, rec=True)
    g = torch.Generator().manual_seed(4)
    ahp = dict(w_ahp=-0.5 * torch.rand(3, generator=g), tau_ahp=0.01 + 0.02 * torch.rand(3, generator=g),
               h0=-0.2 * torch.rand(2, 3, generator=g))
    for record, grad in ((True, True), (False, False)):
        args = [case[k].clone().requires_grad_(grad) for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn",
                                                                "threshold", "bias", "w_rec")]
        extra = [ahp[k].clone().requires_grad_(grad) for k in ("w_ahp", "tau_ahp", "h0")]
        torch.library.opcheck(torch.ops.lif_cuda.synaptic_forward,
                              (*args, None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, record, grad, None, *extra))
    out = torch.ops.lif_cuda.synaptic_forward(*(case[k] for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn",
                                                                  "threshold", "bias", "w_rec")),
                                              None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, True, True, None,
                                              ahp["w_ahp"], ahp["tau_ahp"], ahp["h0"])
    u, i_pre, h_pre = out[7], out[8], out[13]
    gs = torch.randn(2, 5, 3, generator=g)
    torch.library.opcheck(torch.ops.lif_cuda.synaptic_backward,
                          (gs, None, None, None, None, None, u, i_pre, case["v0"], case["s0"], case["tau_mem"],
                           case["tau_syn"], case["threshold"], case["w_rec"], 1e-3, 0.5, 2.0**16, 0, False, False,
                           False, None, torch.randn(2, 5, 3, generator=g), torch.randn(2, 3, generator=g), h_pre,
                           ahp["w_ahp"], ahp["tau_ahp"], False))


@needs_fused_cpu
@pytest.mark.parametrize("ahp", [False, True], ids=["syn", "ahp"])
def test_opcheck_synaptic_compact_save(ahp):
    """The compact save (SPEC §11: the window mask in u's place, (0,S) for i_pre, no h_pre): the fake
    kernel's shapes and dtypes are the op's, and the backward takes them."""
    case = make_synaptic_case(13, 2, 40, 3, 2, rec=True)
    g = torch.Generator().manual_seed(5)
    names = ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec")
    extra = [-0.5 * torch.rand(3, generator=g), 0.01 + 0.02 * torch.rand(3, generator=g),
             -0.2 * torch.rand(2, 3, generator=g)] if ahp else [None, None, None]
    compact = dict(save_mask=True, save_i_pre=False, save_h_pre=False)
    args = (*(case[k] for k in names), None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, False, True, None, *extra)
    torch.library.opcheck(torch.ops.lif_cuda.synaptic_forward, args, compact)
    out = torch.ops.lif_cuda.synaptic_forward(*args, **compact)
    assert out[7].shape == (2, 2, 3) and out[7].dtype == torch.int32 and out[8].shape == (0, 2)
    assert out[13].numel() == 0
    gs = torch.randn(2, 40, 3, generator=g)
    ahp_args = (torch.randn(2, 40, 3, generator=g), torch.randn(2, 3, generator=g), out[13], extra[0], extra[1],
                False) if ahp else ()
    torch.library.opcheck(torch.ops.lif_cuda.synaptic_backward,
                          (gs, None, None, None, None, None, out[7], out[8], case["v0"], case["s0"], case["tau_mem"],
                           case["tau_syn"], case["threshold"], case["w_rec"], 1e-3, 0.5, 2.0**16, 0, False, False,
                           False, None, *ahp_args))


# ------------------------------------------------------------------ the adaptive LIF (SPEC §10)


@needs_fused_cpu
@pytest.mark.parametrize("combo", ["f32-record-grad", "f64-noise-tensor-grad", "f32-kernel-noise", "f16-grad",
                                   "f32-scalar-shared-lengths-grad"])
def test_opcheck_adaptive_ops(combo):
    """torch.library.opcheck (schema, fake kernel, autograd registration, AOT dispatch) of the
    forward and backward ops."""
    dtype = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float32}[combo[:3]]
    shared = "shared" in combo
    case = make_adaptive_case(81, 3, 6, 4, dtype, params="scalar" if shared else "neuron",
                              state="shared" if shared else "rows")
    grad = combo.endswith("grad")
    x = case["input"].to(torch.float16) if combo.startswith("f16") else case["input"]
    names = ("v0", "b0", "tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt")
    args = [x.clone().requires_grad_(grad)] + [case[k].clone().requires_grad_(grad) for k in names]
    noise = 0.1 * torch.ones_like(case["input"]) if "noise-tensor" in combo else None
    scale = 0.2 if "kernel-noise" in combo else 0.0
    lengths = torch.tensor([6, 0, 3]) if "lengths" in combo else None
    key = torch.tensor([1234, 0]) if scale > 0 else None  # a given key: the op is then deterministic
    fwd = (*args, noise, key, 1e-3, scale, 0.5, 2.0**16, 0, "record" in combo, grad, lengths)
    torch.library.opcheck(torch.ops.lif_cuda.adaptive_forward.default, fwd)
    out = torch.ops.lif_cuda.adaptive_forward(*[a.detach() if torch.is_tensor(a) else a for a in fwd[:-4]],
                                              *fwd[-4:-2], True, lengths)
    B, T, N = case["input"].shape
    g = torch.Generator().manual_seed(1)
    gs = torch.randn(B, T, N, generator=g).to(x.dtype)
    rows = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    bwd = (gs, rows(B, T, N), rows(B, T, N), rows(B, N), rows(B, N), out[5], out[6], out[7], out[8],
           case["tau_mem"], case["threshold"], case["tau_adapt"], case["beta_adapt"], 1e-3, 0.5, 2.0**16, 1, shared,
           lengths)
    grads = torch.ops.lif_cuda.adaptive_backward(*bwd)
    shapes = [(B, T, N), out[7].shape, out[8].shape, case["tau_mem"].shape, case["threshold"].shape,
              () if shared else (N,), case["tau_adapt"].shape, case["beta_adapt"].shape]
    assert [tuple(t.shape) for t in grads] == [tuple(s) for s in shapes]
    torch.library.opcheck(torch.ops.lif_cuda.adaptive_backward.default, bwd)
