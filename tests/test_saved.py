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


# ---------------------------------------------------------------- SynapticLIF and its AHP lane
# The compact path against the path that keeps everything (every parameter trainable), gradient
# for gradient, bit for bit: the gradients both paths give (input, state, bias, and the parameters
# the compact path still trains) must be the same tensors.

def syn_case(B=3, T=45, N=7, S=2, *, rec=False, ahp=False, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = lambda *s: torch.randn(s, generator=g, dtype=torch.float64)  # noqa: E731
    r = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    c = dict(
        x=0.4 + 0.8 * n(B, T, N * S), v0=0.5 * n(B, N), i0=0.3 * n(N, S), tau_mem=5e-3 + 45e-3 * r(N),
        tau_syn=2e-3 + 20e-3 * r(N, S), threshold=0.3 + 1.2 * r(N), bias=0.1 * n(N),
        w_rec=0.3 * n(N, N * S) if rec else None, s0=(r(N) < 0.3).double() if rec or ahp else None,
    )
    if ahp:
        c.update(h0=0.2 * n(B, N), w_ahp=-0.9 + 0.2 * n(N), tau_ahp=5e-3 + 30e-3 * r(N))
    return {k: None if v is None else v.to(dtype) for k, v in c.items()}


SYN_LEAVES = ("x", "v0", "i0", "s0", "h0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec", "w_ahp", "tau_ahp")


def syn_grads(c, frozen=(), *, record=True, lengths=None, noise=None, surrogate=lif_cuda.StepPWL, evolve=None,
              max_spikes=3.0):
    """{leaf: gradient} of the fused synaptic (or AHP) op with `frozen` leaves not requiring one, and
    what the graph kept ({dtype: bytes})."""
    leaves = {k: None if c.get(k) is None else c[k].clone().requires_grad_(k not in frozen) for k in SYN_LEAVES}
    ahp = "h0" in c
    noise = None if noise is None else noise.clone().requires_grad_()

    def fwd():
        kw = dict(w_rec=leaves["w_rec"], s0=leaves["s0"], noise=noise, learning_window=0.4,
                  max_spikes_per_dt=max_spikes, spike_generation_fn=surrogate, record=record, backend="fused",
                  lengths=lengths)
        L = leaves
        if ahp:
            out = (evolve or lif_cuda.ahp_synaptic_evolve)(L["x"], L["v0"], L["i0"], L["h0"], L["tau_mem"],
                                                           L["tau_syn"], L["threshold"], L["bias"], L["w_ahp"],
                                                           L["tau_ahp"], 1e-3, **kw)
            return [o for o in out if o is not None and o.requires_grad]
        out = (evolve or lif_cuda.synaptic_evolve)(L["x"], L["v0"], L["i0"], L["tau_mem"], L["tau_syn"],
                                                   L["threshold"], L["bias"], 1e-3, **kw)
        return [o for o in out if o is not None and o.requires_grad]

    saved, outs = kept(fwd)
    g = torch.Generator().manual_seed(7)
    upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]
    wrt = {k: v for k, v in leaves.items() if v is not None and v.requires_grad}
    if noise is not None:
        wrt["noise"] = noise
    got = torch.autograd.grad(outs, list(wrt.values()), upstream, allow_unused=True)
    return dict(zip(wrt, got)), saved


def assert_same_grads(got, want):
    for k, v in got.items():
        assert torch.equal(v, want[k]), k


# What each configuration keeps, by what is frozen (SPEC §11): u or the mask, and beside the mask
# the spikes as uint8 counts where w_rec or w_ahp trains (max_spikes <= 255); i_pre (B,T,N,S) only
# for tau_syn; h_pre (B,T,N) only for tau_ahp.
SYN_FROZEN = {
    "neurons": ("tau_mem", "threshold", "w_rec", "w_ahp"),                 # mask, i_pre, h_pre
    "all": ("tau_mem", "threshold", "tau_syn", "w_rec", "w_ahp", "tau_ahp"),  # mask only
    "tau_syn": ("tau_syn", "tau_ahp"),                                     # u, no i_pre, no h_pre
    "w_rec": ("tau_mem", "threshold", "w_ahp"),                           # mask and counts (rec)
    "w_ahp": ("tau_mem", "threshold", "w_rec"),                           # mask and counts (ahp)
}


@pytest.mark.parametrize("S", [1, 2, 3])
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("ahp", [False, True], ids=["syn", "ahp"])
@pytest.mark.parametrize("frozen", list(SYN_FROZEN))
@pytest.mark.parametrize("T", [1, 33, 70])
def test_synaptic_compact_save_same_gradients(S, rec, ahp, frozen, T):
    c = syn_case(T=T, S=S, rec=rec, ahp=ahp)
    want, saved_all = syn_grads(c)
    got, saved = syn_grads(c, SYN_FROZEN[frozen])
    assert_same_grads(got, want)
    B, _, N = c["x"].shape[0], T, c["v0"].shape[1]
    mask = frozen != "tau_syn"
    assert saved.get(torch.int32, 0) == (B * ((T + 31) // 32) * N * 4 if mask else 0)
    counts = mask and ((rec and "w_rec" not in SYN_FROZEN[frozen]) or (ahp and "w_ahp" not in SYN_FROZEN[frozen]))
    assert saved.get(torch.uint8, 0) == (B * T * N if counts else 0)
    # What left: u (B,T,N) for the mask, i_pre (B,T,N,S) without tau_syn, h_pre (B,T,N) without tau_ahp.
    gone = (B * T * N if mask else 0) + (B * T * N * S if "tau_syn" in SYN_FROZEN[frozen] else 0)
    gone += B * T * N if ahp and "tau_ahp" in SYN_FROZEN[frozen] else 0
    assert saved_all[torch.float64] - saved[torch.float64] == gone * 8


@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("ahp", [False, True], ids=["syn", "ahp"])
def test_synaptic_compact_with_lengths_noise_and_float32(rec, ahp):
    lengths = torch.tensor([40, 0, 17])
    for dtype in (torch.float32, torch.float64):
        c = syn_case(T=40, rec=rec, ahp=ahp, dtype=dtype, seed=2)
        noise = (0.1 * torch.randn(3, 40, 7, generator=torch.Generator().manual_seed(3))).to(dtype)
        configs = ["all"] + (["w_rec"] if rec else []) + (["w_ahp"] if ahp else [])
        for kw in (dict(lengths=lengths), dict(noise=noise), dict(lengths=lengths, noise=noise, record=False)):
            want, _ = syn_grads(c, **kw)
            for frozen in configs:
                got, saved = syn_grads(c, SYN_FROZEN[frozen], **kw)
                assert torch.int32 in saved and (torch.uint8 in saved) == (frozen != "all"), (kw, frozen)
                assert_same_grads(got, want)


@pytest.mark.parametrize("ahp", [False, True], ids=["syn", "ahp"])
def test_synaptic_counts_only_up_to_255(ahp):
    """A trained w_rec (or w_ahp) with more than 255 spikes a step allowed: no uint8 counts, u kept
    (the spikes are recomputed from it), the same gradients."""
    c = syn_case(rec=True, ahp=ahp)
    want, _ = syn_grads(c, max_spikes=300.0)
    got, saved = syn_grads(c, ("tau_mem", "threshold"), max_spikes=300.0)
    assert torch.int32 not in saved and torch.uint8 not in saved
    assert_same_grads(got, want)


@pytest.mark.parametrize("ahp", [False, True], ids=["syn", "ahp"])
def test_synaptic_counts_only_for_whole_max_spikes(ahp):
    """max_spikes_per_dt = 2.5 clamps a step's spikes to 2.5, which no uint8 count holds: a trained
    w_rec (or w_ahp) then keeps u (the spikes recomputed from it), and its gradient is the full save's."""
    c = syn_case(rec=True, ahp=ahp)
    kw = dict(w_rec=c["w_rec"], s0=c["s0"], max_spikes_per_dt=2.5, backend="fused")
    if ahp:
        s = lif_cuda.ahp_synaptic_evolve(c["x"], c["v0"], c["i0"], c["h0"], c["tau_mem"], c["tau_syn"],
                                         c["threshold"], c["bias"], c["w_ahp"], c["tau_ahp"], 1e-3, **kw)[0]
    else:
        s = lif_cuda.synaptic_evolve(c["x"], c["v0"], c["i0"], c["tau_mem"], c["tau_syn"], c["threshold"],
                                     c["bias"], 1e-3, **kw)[0]
    assert (s == 2.5).any()  # not vacuous: some step is clamped to the fraction
    want, _ = syn_grads(c, max_spikes=2.5)
    got, saved = syn_grads(c, ("tau_mem", "threshold"), max_spikes=2.5)
    assert torch.int32 not in saved and torch.uint8 not in saved
    assert_same_grads(got, want)


def test_synaptic_periodic_exponential_keeps_u():
    c = syn_case()
    _, saved = syn_grads(c, SYN_FROZEN["neurons"], surrogate=lif_cuda.PeriodicExponential)
    assert torch.int32 not in saved


STEP_PWL = lif_cuda.ops.SURROGATE_IDS["StepPWL"]  # the one surrogate the compiled calls below use


def _op_evolve(x, v0, i0, tau_mem, tau_syn, threshold, bias, dt, *, w_rec, s0, noise, learning_window,
               max_spikes_per_dt, spike_generation_fn, record, backend, lengths):
    """synaptic_evolve's call of the op, with its outputs (the functional's Python checks are not
    traced: the op is what is compiled)."""
    return torch.ops.lif_cuda.synaptic_forward(x, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise, None,
                                               dt, 0.0, learning_window, max_spikes_per_dt, STEP_PWL, record, False,
                                               lengths)[:7]


def _ahp_op_evolve(x, v0, i0, h0, tau_mem, tau_syn, threshold, bias, w_ahp, tau_ahp, dt, *, w_rec, s0, noise,
                   learning_window, max_spikes_per_dt, spike_generation_fn, record, backend, lengths):
    return lif_cuda.ops.ahp_synaptic_forward_op(x, v0, i0, s0, h0, tau_mem, tau_syn, threshold, bias, w_rec, w_ahp,
                                                tau_ahp, noise, None, dt, 0.0, learning_window, max_spikes_per_dt,
                                                STEP_PWL, record, False, lengths)


@pytest.mark.parametrize("ahp", [False, True], ids=["syn", "ahp"])
def test_synaptic_compile_keeps_bits_and_gradients(ahp):
    """torch.compile(fullgraph=True) of the op: the fake kernel gives the compact outputs' shapes, the
    graph keeps the mask, and the gradients equal eager's bit for bit (and the full save's)."""
    torch._dynamo.reset()
    c = syn_case(T=37, ahp=ahp, rec=True, dtype=torch.float32)
    fn = _ahp_op_evolve if ahp else _op_evolve
    full, _ = syn_grads(c, evolve=fn)
    want, _ = syn_grads(c, SYN_FROZEN["all"], evolve=fn)
    got, saved = syn_grads(c, SYN_FROZEN["all"], evolve=torch.compile(fn, fullgraph=True))
    assert torch.int32 in saved
    assert_same_grads(got, want)
    assert_same_grads(got, full)
