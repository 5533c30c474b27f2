"""What training keeps between forward and backward (SPEC §11): the least that gives the same
gradients bit for bit. The LIF op keeps the window mask (1 bit per element) instead of u when the
surrogate is StepPWL and neither tau_mem nor threshold needs a gradient."""
import pytest
import torch

import lif_cuda

pytestmark = pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="the fused CPU op is not built")


def kept(fn):
    """(what fn's autograd graph saved: {dtype: bytes}, fn's result), parameters included."""
    out = {}
    seen = set()

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            out[t.dtype] = out.get(t.dtype, 0) + s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return out, result


def case(B=3, T=45, N=21, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + torch.randn(B, T, N, generator=g, dtype=torch.float64)).to(dtype)
    v0 = (0.3 * torch.randn(B, N, generator=g, dtype=torch.float64)).to(dtype)
    tau = (0.005 + 0.03 * torch.rand(N, generator=g, dtype=torch.float64)).to(dtype)
    thr = (0.5 + torch.rand(N, generator=g, dtype=torch.float64)).to(dtype)
    bias = (0.1 * torch.randn(N, generator=g, dtype=torch.float64)).to(dtype)
    return x, v0, tau, thr, bias


def grads(x, v0, tau, thr, bias, *, train, surrogate=lif_cuda.StepPWL, lengths=None, noise=None, io=None,
          record=True):
    """Gradients of input, v0, bias (and the noise tensor) through the fused op, with tau and threshold
    trainable or frozen; and what the graph kept."""
    leaves = [x.clone().to(io or x.dtype).requires_grad_(), v0.clone().requires_grad_(),
              tau.clone().requires_grad_(train), thr.clone().requires_grad_(train), bias.clone().requires_grad_()]
    if noise is not None:
        noise = noise.clone().requires_grad_()

    def fwd():
        return lif_cuda.lif_evolve(*leaves, 1e-3, noise=noise, spike_generation_fn=surrogate, record=record,
                                   backend="fused", lengths=lengths, learning_window=0.4)

    saved, (s, w, vf) = kept(fwd)
    g = torch.Generator().manual_seed(7)
    outs = [s, vf] + ([w] if record else [])
    upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]
    wrt = [leaves[0], leaves[1], leaves[4]] + ([noise] if noise is not None else [])
    return torch.autograd.grad(outs, wrt, upstream), saved


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T", [1, 31, 32, 33, 100])
@pytest.mark.parametrize("record", [True, False])
def test_frozen_tau_and_threshold_keep_bits_same_gradients(dtype, T, record):
    c = case(T=T, dtype=dtype)
    want, saved_u = grads(*c, train=True, record=record)
    got, saved_mask = grads(*c, train=False, record=record)
    for name, a, b in zip(("input", "v0", "bias"), got, want):
        assert torch.equal(a, b), name
    B, _, N = c[0].shape
    words = (T + 31) // 32
    assert saved_mask.get(torch.int32) == B * words * N * 4
    # u and the copy of v0 (the masked backward reads no v0), and nothing else, are gone
    assert saved_u[dtype] - saved_mask[dtype] == (B * T * N + B * N) * dtype.itemsize


@pytest.mark.parametrize("v0_rows", [True, False], ids=["v0-BN", "v0-N"])
def test_window_mask_keeps_no_copy_of_v0(v0_rows):
    """The masked backward reads no v0 (it enters only the tau_mem term): beside the mask the op's v0
    copy is (0,); beside u it is v0's. A state written in place after the forward, as a module writes
    its own, changes no gradient either way."""
    x, v0, tau, thr, bias = case()
    v0 = v0 if v0_rows else v0[0].clone()
    op = torch.ops.lif_cuda.lif_forward
    for mask in (True, False):
        out = op(x, v0, tau, thr, bias, None, None, 1e-3, 0.0, 0.4, 2.0**16, 0, False, True, None, False, mask)
        assert out[4].shape == ((0,) if mask else v0.shape)
    want = None
    for overwrite in (False, True):
        state = v0.clone()  # a module's state buffer: no gradient, written in place after the call
        xl = x.clone().requires_grad_()
        s, _, vf = lif_cuda.lif_evolve(xl, state, tau, thr, bias, 1e-3, backend="fused", learning_window=0.4)
        if overwrite:
            state.copy_(vf.detach() if v0_rows else vf[0].detach())
        got = torch.autograd.grad((s.sum() + vf.sum()), xl)[0]
        if want is None:
            want = got
        assert torch.equal(got, want)


def test_lengths_noise_tensor_and_half_io():
    c = case(T=40)
    lengths = torch.tensor([40, 0, 17])
    noise = 0.1 * torch.randn(c[0].shape, generator=torch.Generator().manual_seed(3))
    for kw in (dict(lengths=lengths), dict(noise=noise), dict(io=torch.bfloat16), dict(lengths=lengths, noise=noise)):
        want, _ = grads(*c, train=True, **kw)
        got, saved = grads(*c, train=False, **kw)
        assert torch.int32 in saved, kw
        for i, (a, b) in enumerate(zip(got, want)):
            assert torch.equal(a, b), (kw, i)


def test_periodic_exponential_keeps_u():
    c = case()
    _, saved = grads(*c, train=False, surrogate=lif_cuda.PeriodicExponential)
    assert torch.int32 not in saved
    assert saved[torch.float32] >= c[0].numel() * 4


@pytest.mark.parametrize("trained", ["tau_mem", "threshold"])
def test_a_trained_tau_or_threshold_keeps_u(trained):
    layer = lif_cuda.LIFNeuron(16, threshold=0.7)
    for name in ("tau_mem", "threshold"):
        getattr(layer, name).requires_grad_(name == trained)
    x = torch.rand(2, 30, 16).requires_grad_()
    saved, _ = kept(lambda: layer(x))
    assert torch.int32 not in saved


def test_module_with_frozen_neurons_trains_as_before():
    """Linear + LIFNeuron with tau and threshold frozen: a few SGD steps give the same weights, bit
    for bit, as with them trainable (their updates switched off by a zero learning rate)."""
    results = []
    for frozen in (False, True):
        torch.manual_seed(0)
        lin = torch.nn.Linear(10, 12)
        lif = lif_cuda.LIFNeuron(12, tau_mem=0.01, threshold=0.5)
        lif.tau_mem.requires_grad_(not frozen)
        lif.threshold.requires_grad_(not frozen)
        opt = torch.optim.SGD([lin.weight, lin.bias, lif.bias], lr=0.05)
        x = torch.rand(4, 60, 10, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            opt.zero_grad()
            lif.reset_state()
            lif(lin(x)).mean().backward()
            opt.step()
        results.append([t.detach().clone() for t in (lin.weight, lin.bias, lif.bias)])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_compile_keeps_bits_and_gradients():
    """torch.compile(fullgraph=True) of a module with frozen tau and threshold: the op keeps the mask
    there too (the fake kernel says so), and spikes and gradients equal eager's bit for bit."""
    torch._dynamo.reset()
    x, _, tau, thr, _ = case(T=37)
    results = []
    for compile_it in (False, True):
        layer = lif_cuda.LIFNeuron(x.shape[-1], tau_mem=tau, threshold=thr, learning_window=0.4)
        layer.tau_mem.requires_grad_(False)
        layer.threshold.requires_grad_(False)
        evolve = torch.compile(layer.evolve, fullgraph=True) if compile_it else layer.evolve
        xi = x.clone().requires_grad_()
        saved, (s, _, rec) = kept(lambda evolve=evolve, xi=xi: evolve(xi, record=True))
        assert torch.int32 in saved
        loss = (s * torch.linspace(-1, 1, s.numel()).view(s.shape)).sum() + rec["vmem"].square().sum()
        loss.backward()
        results.append((s.detach(), xi.grad, layer.bias.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)
