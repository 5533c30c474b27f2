"""The synaptic op on CUDA (SPEC §7): the reference's bits on the same device, gradients, the modules.

- Forward: spikes, records and final state `torch.equal` to the pure-PyTorch reference run on the
  same CUDA device, whose synapse sum is torch.sum on CUDA (ATen's gpu reduce) and whose recurrent
  product is cuBLAS through F.linear: this is the check of lif_core.h's CUDA order (cuda_torch_sum),
  which tests/test_synaptic_host.py can only check against its own emulation. S = 1..40 covers the
  lane counts P = 1, 2, 4, 8, 16, 32.
- Backward: gradients against the reference's autograd (float64 <= 1e-10, float32 <= 1e-5).
- lif_cuda.rockpool.LIFTorch against Rockpool's LIFTorch on CUDA: spikes, records and state
  bit-identical, gradients within 1e-5.
- The CPU and CUDA kernels agree where the devices' exp and GEMM do (feed-forward, alpha and beta
  equal on both devices): bit for bit.
Skipped as a whole without a GPU; fails (test_cuda_kernels_are_built) on a GPU machine whose
extension was built without CUDA kernels.
"""
import pytest
import torch

import lif_cuda
from conftest import assert_bitwise, rel_err
from lif_cuda import StepPWL, synaptic_evolve, synaptic_evolve_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")
NAMES = ("spikes", "vmem", "isyn", "irec", "v_final", "i_final", "s_final")


def test_cuda_kernels_are_built():
    assert lif_cuda.fused_available("cuda"), "the extension has no CUDA kernels: build with LIF_FORCE_CUDA=1"


needs_kernels = pytest.mark.skipif(not (torch.cuda.is_available() and lif_cuda.fused_available("cuda")),
                                   reason="no CUDA kernels")


def make_case(seed, B, T, N, S, dtype=torch.float32, rec=False, device=CUDA):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    n = lambda *s: torch.randn(s, generator=g, dtype=torch.float64)  # noqa: E731
    case = dict(
        input=0.4 + 0.8 * n(B, T, N * S), v0=0.5 * n(B, N), i0=0.3 * n(N, S), s0=(r(N) < 0.3).double(),
        tau_mem=5e-3 + 45e-3 * r(N), tau_syn=2e-3 + 20e-3 * r(N, S), threshold=0.3 + 1.2 * r(N), bias=0.1 * n(N),
        w_rec=0.3 * n(N, N * S) if rec else None,
    )
    return {k: None if v is None else v.to(dtype=dtype, device=device) for k, v in case.items()}


def _run(fn, case, **kw):
    c = dict(case)
    args = [c.pop(k) for k in ("input", "v0", "i0", "tau_mem", "tau_syn", "threshold", "bias")]
    return fn(*args, 1e-3, **c, record=True, **kw)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_forward_equals_reference_on_the_device(dtype, rec):
    for S in list(range(1, 41)) + [63]:
        case = make_case(S, 3, 12, 7, S, dtype, rec=rec)
        got = _run(synaptic_evolve, case, backend="fused")
        want = _run(synaptic_evolve_reference, case)
        for name, g, w in zip(NAMES, got, want):
            assert_bitwise(g, w, f"{name}, S={S}")


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S,rec", [(1, True), (2, False), (3, True)])
def test_backward_equals_reference_autograd(dtype, S, rec):
    B, T, N = 3, 17, 6
    case = make_case(7, B, T, N, S, dtype, rec=rec)
    names = [k for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec") if
             case[k] is not None]
    g = torch.Generator(device=CUDA).manual_seed(1)
    ups = [torch.randn(s, generator=g, device=CUDA, dtype=dtype) for s in
           ((B, T, N), (B, T, N), (B, T, N, S), (B, N), (B, N, S))]
    grads = []
    for fn, kw in ((synaptic_evolve, dict(backend="fused")), (synaptic_evolve_reference, {})):
        leaves = {k: case[k].clone().requires_grad_(True) for k in names}
        out = _run(fn, {**case, **leaves}, spike_generation_fn=StepPWL, **kw)
        outs = [out[0], out[1], out[2], out[4], out[5]]
        grads.append(torch.autograd.grad(outs, list(leaves.values()), ups, allow_unused=True))
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    for name, a, b in zip(names, *grads):
        if b is None:
            continue
        assert rel_err(a, b) <= tol, name


@needs_kernels
def test_cpu_and_cuda_kernels_agree_where_the_devices_do():
    """Feed-forward, S <= 2 (the CPU and CUDA sum orders agree), on the neurons whose decays are the
    same on both devices: the same bits from the two kernels."""
    for S in (1, 2):
        case = make_case(3, 2, 20, 64, S)
        cpu = {k: None if v is None else v.cpu() for k, v in case.items()}
        a = _run(synaptic_evolve, case, backend="fused")
        b = _run(synaptic_evolve, cpu, backend="fused")
        same = (torch.exp(-1e-3 / case["tau_mem"]).cpu() == torch.exp(-1e-3 / cpu["tau_mem"]))
        same &= (torch.exp(-1e-3 / case["tau_syn"]).cpu() == torch.exp(-1e-3 / cpu["tau_syn"])).all(-1)
        assert same.sum() > 0
        assert torch.equal(a[0].cpu()[..., same], b[0][..., same])
        assert torch.equal(a[1].cpu()[..., same], b[1][..., same])


@needs_kernels
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_rockpool_drop_in_on_cuda(rec):
    pytest.importorskip("rockpool")
    from rockpool.nn.modules import LIFTorch

    import lif_cuda.rockpool

    g = torch.Generator().manual_seed(0)
    N, S = 16, 2
    kw = dict(tau_mem=5e-3 + 30e-3 * torch.rand(N, generator=g), tau_syn=2e-3 + 10e-3 * torch.rand(N, S, generator=g),
              threshold=0.5 + torch.rand(N, generator=g), has_rec=rec,
              w_rec=0.3 * torch.randn(N, N * S, generator=g) if rec else None)
    theirs, ours = LIFTorch((N * S, N), **kw).to(CUDA), lif_cuda.rockpool.LIFTorch((N * S, N), **kw).to(CUDA)
    x = (torch.rand(4, 40, N * S, generator=g) < 0.3).float().mul(2).to(CUDA)
    outs = []
    for net in (theirs, ours):
        xx = x.clone().requires_grad_(True)
        out, state, record = net(xx, record=True)
        (out.sum() + 0.1 * record["vmem"].to(CUDA).pow(2).sum()).backward()
        outs.append((out, state, record, {n: p.grad for n, p in net.named_parameters()}, xx.grad))
    (o_t, s_t, r_t, g_t, x_t), (o_o, s_o, r_o, g_o, x_o) = outs
    assert torch.equal(o_o, o_t)
    for k in r_t:
        assert torch.equal(r_o[k].cpu(), r_t[k].cpu()), k
    for k in s_t:
        assert torch.equal(s_o[k], s_t[k]), k
    for name in g_t:
        assert rel_err(g_o[name], g_t[name]) <= 1e-5, name
    assert rel_err(x_o, x_t) <= 1e-5


# ------------------------------------------------------------------ lengths and batch_state (SPEC §8)
LENGTHS = [17, 0, 9, 1]


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S,rec", [(1, True), (2, False), (3, True)])
@pytest.mark.parametrize("where", ["cuda", "cpu"], ids=["lengths-on-cuda", "lengths-on-cpu"])
def test_lengths_equal_reference_on_the_device(dtype, S, rec, where):
    """With per-row lengths (a CUDA tensor, or a CPU one as a data loader gives it): forward bit for bit
    against the masked reference on the device (padding included), backward against its autograd, with
    gradients arriving on the padding; the padding's input gradient is 0."""
    B, T, N = len(LENGTHS), 17, 6
    case = make_case(8, B, T, N, S, dtype, rec=rec)
    lengths = torch.tensor(LENGTHS, device=where)
    names = [k for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec") if
             case[k] is not None and (rec or k != "s0")]
    g = torch.Generator(device=CUDA).manual_seed(2)
    ups = [torch.randn(s, generator=g, device=CUDA, dtype=dtype) for s in
           ((B, T, N), (B, T, N), (B, T, N, S), (B, N), (B, N, S))]
    results = []
    for fn, kw in ((synaptic_evolve, dict(backend="fused")), (synaptic_evolve_reference, {})):
        leaves = {k: case[k].clone().requires_grad_(True) for k in names}
        out = _run(fn, {**case, **leaves}, lengths=lengths.to(CUDA) if fn is synaptic_evolve_reference else lengths,
                   **kw)
        outs = [out[0], out[1], out[2], out[4], out[5]]
        results.append((out, dict(zip(names, torch.autograd.grad(outs, list(leaves.values()), ups)))))
    (got, g_got), (want, g_want) = results
    for name, a, b in zip(NAMES, got, want):
        assert_bitwise(a.detach(), b.detach(), name)
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    for name in names:
        assert g_want[name].abs().sum() > 0, name
        assert rel_err(g_got[name], g_want[name]) <= tol, f"grad {name}"
    for b, L in enumerate(LENGTHS):
        assert not got[0][b, L:].any() and not g_got["input"][b, L:].any(), f"row {b}: padding"


@needs_kernels
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_batch_state_chunks_equal_one_run_on_the_device(rec):
    g = torch.Generator().manual_seed(0)
    N, S = 6, 2
    layer = lif_cuda.SynapticLIF((N * S, N), threshold=0.5 + torch.rand(N, generator=g), has_rec=rec,
                                 w_rec=0.4 * torch.randn(N, N * S, generator=g) if rec else None,
                                 batch_state=True).to(CUDA)
    x = (0.3 + 0.8 * torch.randn(3, 40, N * S, generator=g)).to(CUDA)
    lengths = torch.tensor([40, 11, 25])
    _, _, whole = layer.evolve(x, record=True, lengths=lengths)
    kept = (layer.vmem.clone(), layer.isyn.clone(), layer.spikes.clone())
    layer.reset_state()
    parts = [layer.evolve(x[:, a:b], record=True, lengths=(lengths - a).clamp(0, b - a))[2]
             for a, b in ((0, 13), (13, 40))]
    for k in ("spikes", "vmem", "isyn", "irec"):
        assert_bitwise(torch.cat([p[k] for p in parts], 1), whole[k], k)
    for name, a, b in zip(("vmem", "isyn", "spikes"), (layer.vmem, layer.isyn, layer.spikes), kept):
        assert_bitwise(a, b, name)
    with pytest.raises(ValueError, match=r"batch size 3.*batch size 2.*reset_state\(\)"):
        layer(x[:2])
