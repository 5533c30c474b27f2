"""TimeChunked (lif_cuda/chunked.py): a stack run a chunk of time steps at a time, its backward
recomputing one chunk at a time. Its forward must be the plain stack's bit for bit (spikes and final
state), its input gradient the same bits, and its parameter gradients the plain stack's to float
rounding (sums over chunks instead of one sum over all steps)."""
import pytest
import torch
from torch import nn

import lif_cuda

B, F, N = 3, 12, 20


def _stack(kind, dtype=torch.float32, seed=1, **lif_kw):
    """Linear -> neuron -> SpikeLinear -> neuron, the same weights for the same seed."""
    torch.manual_seed(seed)
    lif_kw.setdefault("max_spikes_per_dt", 1)

    def neuron(n):
        g = torch.Generator().manual_seed(seed + n)
        tau = 5e-3 + 30e-3 * torch.rand(n, generator=g)
        if kind == "lif":
            return lif_cuda.LIFNeuron(n, tau_mem=tau, **lif_kw)
        if kind == "synaptic-rec":
            m = lif_cuda.SynapticLIF((2 * n, n), tau_mem=tau, has_rec=True, **lif_kw)
            with torch.no_grad():
                m.w_rec.mul_(0.05)  # no exploding gradient over a few hundred steps
            return m
        if kind == "ahp":
            return lif_cuda.AHPSynapticLIF(n, tau_mem=tau, **lif_kw)
        return lif_cuda.AdaptiveLIF(n, tau_mem=tau, **lif_kw)

    width = 2 * N if kind == "synaptic-rec" else N
    layers = [nn.Linear(F, width), neuron(N), lif_cuda.SpikeLinear(N, width, max_count=1), neuron(N)]
    return [m.to(dtype) for m in layers]


def _input(T, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(B, T, F, generator=g) < 0.3).to(dtype) * 3).requires_grad_()


def _grads(y, x, module, g):
    return torch.autograd.grad(y, [x, *module.parameters()], g)


def _close(a, b, dtype):
    # The chunks' sums against one sum over all B*T terms: rounding of the summed terms' size.
    eps = torch.finfo(dtype).eps
    tol = 16 * eps * (1 + a.abs().max().item()) * (B * 300) ** 0.5
    assert (a - b).abs().max().item() <= tol, (a - b).abs().max().item()


class Scale(nn.Module):
    """A per-feature weight: a layer that acts on each step alone with no matmul, whose rounding
    cannot depend on how many rows it is given (a matmul's can: see test_same_as_the_chunks_run_in_turn)."""

    def __init__(self, n, seed):
        super().__init__()
        self.weight = nn.Parameter(0.5 + torch.rand(n, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        return x.repeat(1, 1, self.weight.shape[0] // x.shape[-1]) * self.weight  # N -> N*S synapses


def _neuron_stack(kind, dtype=torch.float32):
    """Scale -> neuron -> Scale -> neuron: the forward and the input gradient of the chunks must be
    the plain stack's bit for bit."""
    ls = _stack(kind, dtype)
    return [Scale(ls[0].out_features, 1).to(dtype), ls[1], Scale(ls[2].out_features, 2).to(dtype), ls[3]]


@pytest.mark.parametrize("kind", ["lif", "synaptic-rec", "ahp", "adaptive"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 300, 1000])
def test_forward_bitwise_gradients_to_rounding(kind, chunk):
    T = 300 if chunk > 1 else 40
    plain = nn.Sequential(*_neuron_stack(kind))
    chunked = lif_cuda.TimeChunked(*_neuron_stack(kind), chunk=chunk)
    width = plain[0].weight.shape[0]
    x = (torch.rand(B, T, width, generator=torch.Generator().manual_seed(4)) * 1.5).requires_grad_()
    y, yc = plain(x), chunked(x)
    assert y.sum() > 0
    assert torch.equal(y, yc)
    for a, b in zip(plain, chunked.layers):
        if isinstance(a, lif_cuda.neurons.NeuronLayer):
            for name in a.model.state:
                assert torch.equal(getattr(a, name), getattr(b, name)), name
    g = torch.randn_like(y)
    gp, gc = _grads(y, x, plain, g), _grads(yc, x, chunked, g)
    assert torch.equal(gp[0], gc[0])  # the input's: the same steps, no sum over time
    assert gp[0].abs().sum() > 0
    for a, b in zip(gp[1:], gc[1:]):
        _close(a, b, torch.float32)


def _chunk_loop(layers, x, C):
    """The stack run on one chunk after another, its neuron state carried with its gradient: one graph
    over every chunk (what TimeChunked computes without keeping it)."""
    neurons = [m for m in layers if isinstance(m, lif_cuda.neurons.NeuronLayer)]
    state = [tuple(getattr(m, n).clone() for n in m.model.state) for m in neurons]
    outs = []
    for t0 in range(0, x.shape[1], C):
        h, k = x[:, t0 : t0 + C], 0
        for m in layers:
            if isinstance(m, lif_cuda.neurons.NeuronLayer):
                h, state[k] = m._call_from(h, state[k])
                k += 1
            else:
                h = m(h)
        outs.append(h)
    return torch.cat(outs, 1)


@pytest.mark.parametrize("kind", ["lif", "synaptic-rec", "ahp", "adaptive"])
@pytest.mark.parametrize("chunk", [1, 9, 64])
def test_same_as_the_chunks_run_in_turn(kind, chunk):
    """With Linear layers: the same bits as the chunks run one after another. Against one call over
    all steps a matmul's rounding may differ in the last bit (its blocking depends on the rows)."""
    T = 200 if chunk > 1 else 30
    chunked = lif_cuda.TimeChunked(*_stack(kind), chunk=chunk)
    layers = _stack(kind)
    x = _input(T)
    y, yc = _chunk_loop(layers, x, chunk), chunked(x)
    assert y.sum() > 0
    assert torch.equal(y, yc)
    g = torch.randn_like(y)
    gp, gc = _grads(y, x, nn.Sequential(*layers), g), _grads(yc, x, chunked, g)
    assert torch.equal(gp[0], gc[0])
    for a, b in zip(gp[1:], gc[1:]):
        _close(a, b, torch.float32)


@pytest.mark.parametrize("kind", ["lif", "synaptic-rec", "adaptive"])
def test_float64_gradients(kind):
    T = 150
    plain = nn.Sequential(*_stack(kind, torch.float64))
    chunked = lif_cuda.TimeChunked(*_stack(kind, torch.float64), chunk=32)
    x = _input(T, torch.float64)
    y, yc = plain(x), chunked(x)
    assert torch.equal(y, yc)
    g = torch.randn_like(y)
    gp, gc = _grads(y, x, plain, g), _grads(yc, x, chunked, g)
    assert torch.equal(gp[0], gc[0])
    for a, b in zip(gp[1:], gc[1:]):
        assert a.dtype == torch.float64
        _close(a, b, torch.float64)


@pytest.mark.parametrize("kind", ["synaptic-rec", "ahp"])
def test_reference_backend(kind):
    """The reference's spike state carries its gradient itself (the fused op's does not): the chunks
    hand it on once, not twice."""
    plain = nn.Sequential(*_stack(kind, torch.float64, backend="reference"))
    chunked = lif_cuda.TimeChunked(*_stack(kind, torch.float64, backend="reference"), chunk=32)
    x = _input(150, torch.float64)
    y, yc = plain(x), chunked(x)
    assert torch.equal(y, yc)
    g = torch.randn_like(y)
    gp, gc = _grads(y, x, plain, g), _grads(yc, x, chunked, g)
    for a, b in zip(gp, gc):
        _close(a, b, torch.float64)


def test_sum_output():
    T = 230
    plain = nn.Sequential(*_stack("lif"))
    chunked = lif_cuda.TimeChunked(*_stack("lif"), chunk=64, output="sum")
    x = _input(T)
    y = plain(x).sum(1)
    yc = chunked(x)
    assert yc.shape == (B, N) and torch.equal(y, yc)  # spike counts: exact sums
    g = torch.randn_like(y)
    gp, gc = _grads(y, x, plain, g), _grads(yc, x, chunked, g)
    assert torch.equal(gp[0], gc[0])
    for a, b in zip(gp[1:], gc[1:]):
        _close(a, b, torch.float32)


def test_lengths():
    T = 180
    lengths = [180, 61, 0]
    plain = _stack("synaptic-rec")
    chunked = lif_cuda.TimeChunked(*_stack("synaptic-rec"), chunk=32)
    x = _input(T)
    h = x
    for m in plain:
        h = m(h, lengths=lengths) if isinstance(m, lif_cuda.neurons.NeuronLayer) else m(h)
    yc = chunked(x, lengths=torch.tensor(lengths))
    assert torch.equal(h, yc)
    assert yc[1, 61:].abs().sum() == 0 and yc[0].abs().sum() > 0
    g = torch.randn_like(h)
    gp, gc = _grads(h, x, nn.Sequential(*plain), g), _grads(yc, x, chunked, g)
    assert torch.equal(gp[0], gc[0])
    for a, b in zip(gp[1:], gc[1:]):
        _close(a, b, torch.float32)


def test_state_carries_to_the_next_call_and_batch_state():
    plain = nn.Sequential(*_stack("lif", batch_state=True))
    chunked = lif_cuda.TimeChunked(*_stack("lif", batch_state=True), chunk=16)
    x = _input(100)
    for part in (x[:, :37], x[:, 37:]):
        assert torch.equal(plain(part), chunked(part))
    assert chunked.layers[1].vmem.shape == (B, N)
    assert torch.equal(plain[3].vmem, chunked.layers[3].vmem)
    chunked.reset_state()
    assert chunked.layers[1].vmem.shape == (N,) and not chunked.layers[1].vmem.any()


@pytest.mark.parametrize("draws", ["kernel-noise", "torch-noise", "dropout"])
def test_noise_and_dropout_are_drawn_again_the_same(draws):
    """The backward's second forward replays the random draws: its gradient is that of the chunks run
    once with their graph (the same seed), and without preserve_rng_state it is not."""
    T, C = 120, 40

    def layers():
        kw = dict(noise_std=0.3) if draws != "dropout" else {}
        if draws == "torch-noise":
            kw["noise"] = "torch"
        ls = _stack("lif", torch.float64, **kw)
        return [nn.Dropout(0.3)] + ls if draws == "dropout" else ls

    x = _input(T, torch.float64)
    results = []
    for preserve in (True, False):
        chunked = lif_cuda.TimeChunked(*layers(), chunk=C, preserve_rng_state=preserve)
        torch.manual_seed(5)
        yc = chunked(x)
        g = torch.ones_like(yc)
        results.append((yc, _grads(yc, x, chunked, g)))
    mods = layers()
    torch.manual_seed(5)
    y = _chunk_loop(mods, x, C)
    ref = _grads(y, x, nn.Sequential(*mods), torch.ones_like(y))
    (yc, gc), (yn, gn) = results
    assert torch.equal(y, yc) and torch.equal(y, yn)
    for a, b in zip(ref, gc):
        _close(a, b, torch.float64)
    assert not all(torch.allclose(a, b) for a, b in zip(ref, gn))


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8])
def test_spike_input_as_bool_or_bytes(dtype):
    T = 90
    x = (torch.rand(B, T, F, generator=torch.Generator().manual_seed(3)) < 0.3).to(dtype)
    plain = nn.Sequential(*_stack("lif"))
    chunked = lif_cuda.TimeChunked(*_stack("lif"), chunk=32)
    y, yc = plain(x.float()), chunked(x)
    assert torch.equal(y, yc)
    gp = torch.autograd.grad(y.sum(), list(plain.parameters()))
    gc = torch.autograd.grad(yc.sum(), list(chunked.parameters()))
    for a, b in zip(gp, gc):
        _close(a, b, torch.float32)


def test_frozen_parameters_and_no_grad():
    layers = _stack("lif")
    for m in layers:
        for p in m.parameters():
            p.requires_grad_(False)
    chunked = lif_cuda.TimeChunked(*layers, chunk=25)
    plain = nn.Sequential(*_stack("lif"))
    x = _input(80)
    y, yc = plain(x), chunked(x)
    assert torch.equal(y, yc)
    g = torch.randn_like(y)
    assert torch.equal(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(yc, x, g)[0])
    with torch.no_grad():
        plain2 = nn.Sequential(*_stack("lif"))
        chunked2 = lif_cuda.TimeChunked(*_stack("lif"), chunk=25)
        assert torch.equal(plain2(x), chunked2(x))
        assert torch.equal(plain2[3].vmem, chunked2.layers[3].vmem)


def test_training_steps_follow_the_plain_stack():
    """Adam on both for a few steps: the same spikes every step (the weights differ by rounding only
    as far as the spikes do not move)."""
    torch.manual_seed(0)
    x = _input(120).detach()
    target = torch.rand(B, N)
    losses = []
    for make in (lambda: nn.Sequential(*_stack("lif", torch.float64)),
                 lambda: lif_cuda.TimeChunked(*_stack("lif", torch.float64), chunk=30, output="sum")):
        model = make()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        run = []
        for _ in range(3):
            for m in model.modules():
                if isinstance(m, lif_cuda.neurons.NeuronLayer):
                    m.reset_state()
            out = model(x.double())
            rate = (out.sum(1) if out.dim() == 3 else out) / x.shape[1]
            loss = ((rate - target.double()) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)


def test_compile_runs_it_eagerly():
    chunked = lif_cuda.TimeChunked(*_stack("lif"), chunk=32)
    x = _input(70)
    y = chunked(x)
    chunked.reset_state()
    yc = torch.compile(chunked)(x)
    assert torch.equal(y, yc)


def test_bad_arguments():
    with pytest.raises(ValueError, match="chunk"):
        lif_cuda.TimeChunked(nn.Linear(2, 2), chunk=0)
    with pytest.raises(ValueError, match="chunk"):
        lif_cuda.TimeChunked(nn.Linear(2, 2), chunk=True)
    with pytest.raises(ValueError, match="output"):
        lif_cuda.TimeChunked(nn.Linear(2, 2), output="mean")
    with pytest.raises(ValueError, match="at least one layer"):
        lif_cuda.TimeChunked()
    with pytest.raises(TypeError, match="layer 0"):
        lif_cuda.TimeChunked(lambda x: x)
    with pytest.raises(ValueError, match="inside it"):
        lif_cuda.TimeChunked(nn.Sequential(nn.Linear(4, 4), nn.Sequential(lif_cuda.LIFNeuron(4))))
    lif, lin = lif_cuda.LIFNeuron(4), nn.Linear(4, 4)
    with pytest.raises(ValueError, match="layers 1 and 3 are the same neuron layer"):
        lif_cuda.TimeChunked(lin, lif, lin, lif)  # one call after another: the second from the first's end
    chunked = lif_cuda.TimeChunked(*_stack("lif"))
    with pytest.raises(ValueError, match="shape"):
        chunked(torch.zeros(5, F))
    with pytest.raises(TypeError, match="torch.Tensor"):
        chunked([[0.0] * F])
    with pytest.raises(ValueError, match="lengths"):
        chunked(torch.zeros(B, 5, F), lengths=[1, 2])


def test_one_sequential_is_its_layers():
    seq = nn.Sequential(*_stack("lif"))
    chunked = lif_cuda.TimeChunked(seq, chunk=8)
    assert list(chunked.layers) == list(seq)
    assert "chunk=8" in repr(chunked)
    x = _input(20)
    assert chunked(x).shape == (B, 20, N)
    assert chunked(x[:, :0]).shape == (B, 0, N)


def test_kept_states_are_their_own_tensors():
    """What the forward keeps per chunk is (B, N) per state: no state is a view that holds its chunk's
    spikes (B, chunk, N) alive (the spike state of SynapticLIF is the last step's spikes)."""
    chunked = lif_cuda.TimeChunked(*_stack("synaptic-rec"), chunk=32)
    x = _input(256)
    kept = []

    def pack(t):
        kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked(x)
    assert len(kept) > 8 * 6  # every chunk's states
    for t in kept:
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), tuple(t.shape)


def test_spike_state_exact_with_bfloat16_input():
    """bfloat16 spikes round counts above 256; the spike state carried to the next chunk (the
    recurrent product's input) and left in the layer is the op's exact count, as one call's."""
    T, C = 32, 16
    x = (300 + 700 * torch.rand(B, T, 2 * N, generator=torch.Generator().manual_seed(6))).to(torch.bfloat16)

    def layer():
        torch.manual_seed(0)
        m = lif_cuda.SynapticLIF((2 * N, N), has_rec=True, batch_state=True)
        with torch.no_grad():
            m.w_rec.mul_(1e-3)
        return m

    plain, chunked = layer(), lif_cuda.TimeChunked(layer(), chunk=C)
    y, yc = plain(x), chunked(x)
    assert plain.spikes.max() > 256 and plain.spikes.remainder(2).any()  # counts bfloat16 cannot hold
    assert torch.equal(y, yc)
    for name in plain.model.state:
        assert torch.equal(getattr(plain, name), getattr(chunked.layers[0], name)), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_parameter_gradients_summed_in_float64(dtype):
    """A half parameter's gradient, one term per chunk, is summed in float64 and rounded once: the
    bias of a Linear gets B*T = 3000 ones, 3000 rounded once (a sum in the half type rounds at each
    chunk past 256 (bfloat16) or 2048 (float16): 2048 + 3 -> 2052)."""
    lin = nn.Linear(4, 4).to(dtype)
    chunked = lif_cuda.TimeChunked(lin, chunk=1, output="sum")
    chunked(torch.rand(3, 1000, 4).to(dtype)).sum().backward()
    assert lin.bias.grad.dtype == dtype
    assert torch.equal(lin.bias.grad, torch.full((4,), 3000.0).to(dtype))


def test_second_order_gradients_are_refused():
    """Its backward's gradients carry no graph: create_graph=True must raise (as the fused ops'
    double backward does), not give a second-order term of zero."""
    chunked = lif_cuda.TimeChunked(*_stack("lif"), chunk=16)
    x = _input(40)
    with pytest.raises(RuntimeError, match="second-order"):
        torch.autograd.grad(chunked(x).sum(), x, create_graph=True)
