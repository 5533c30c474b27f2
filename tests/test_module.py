"""SPEC §5: `LIFNeuron`, the drop-in for the seed's `LIFNeuronTorch`.

Constructor defaults and shapes, input auto-batching, `evolve`'s record dict, the persistent
membrane state, backend choice (including a fused backend that is missing), training, dtype and
noise. Results are checked against the functional reference, not only for shapes. The checks that
hold for every model (backends agree, a spike function without a fused kernel, noise modes) run for
SynapticLIF too (the `model` fixture); SynapticLIF's own shapes and records at the end.
"""
import math
import warnings

import pytest
import torch

import lif_cuda
from conftest import assert_bitwise, make_case, make_synaptic_layer, needs_fused_cpu, rel_err, run_reference
from lif_cuda import SynapticLIF
from lif_cuda.reference import lif_evolve_reference


def _layer(n=6, seed=0, **kw):
    """A layer with random per-neuron parameters (defaults would spike rarely)."""
    g = torch.Generator().manual_seed(seed)
    kw.setdefault("tau_mem", 5e-3 + 45e-3 * torch.rand(n, generator=g))
    kw.setdefault("threshold", 0.3 + 1.2 * torch.rand(n, generator=g))
    kw.setdefault("bias", 0.1 * torch.randn(n, generator=g))
    return lif_cuda.LIFNeuron(n, **kw)


def _input(*shape, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return 0.4 + torch.randn(shape, generator=g, dtype=dtype)


def _reference_of(layer, x, v0=None, noise=None, record=True):
    """What the layer must compute: the functional reference with the layer's parameters."""
    B, T, N = x.shape
    v0 = layer.vmem if v0 is None else v0
    with torch.no_grad():
        return lif_evolve_reference(
            x.to(layer.tau_mem.dtype), v0, layer.tau_mem, layer.threshold, layer.bias, layer.dt, noise,
            layer.learning_window, layer.max_spikes_per_dt, layer.spike_generation_fn, record,
        )


# ------------------------------------------------------------------ construction


def test_defaults_are_the_seeds():
    """tau_mem 20 ms and threshold 1.0 per neuron; bias 0.0 given as a number stays a scalar ()."""
    layer = lif_cuda.LIFNeuron(5)
    for name, value, shape in (("tau_mem", 20e-3, (5,)), ("threshold", 1.0, (5,)), ("bias", 0.0, ())):
        p = getattr(layer, name)
        assert isinstance(p, torch.nn.Parameter) and p.requires_grad, name
        assert p.shape == shape and p.dtype == torch.float32, name
        assert torch.equal(p, torch.full(shape, value)), name
    assert layer.dt == 1e-3 and layer.noise_std == 0.0 and layer.learning_window == 0.5
    assert layer.max_spikes_per_dt == 2.0**16
    assert layer.spike_generation_fn is lif_cuda.StepPWL and layer.backend == "auto"
    assert torch.equal(layer.vmem, torch.zeros(5)) and "vmem" in layer.state_dict()


@pytest.mark.parametrize("shape", [7, (7,), [7]])
def test_shape_int_or_one_tuple(shape):
    layer = lif_cuda.LIFNeuron(shape)
    assert layer.shape == (7,) and layer.vmem.shape == (7,) and layer.tau_mem.shape == (7,)


@pytest.mark.parametrize("shape", [(3, 4), (1, 5), [2, 2]])
def test_shape_with_two_dimensions_is_a_value_error(shape):
    with pytest.raises(ValueError, match="shape"):
        lif_cuda.LIFNeuron(shape)


def test_scalar_and_per_neuron_parameters():
    layer = lif_cuda.LIFNeuron(4, tau_mem=0.03, threshold=torch.tensor([0.5, 1.0, 1.5, 2.0]), bias=0.1)
    assert layer.tau_mem.shape == () and layer.threshold.shape == (4,) and layer.bias.shape == ()
    assert all(isinstance(p, torch.nn.Parameter) for p in (layer.tau_mem, layer.threshold, layer.bias))
    x = _input(2, 9, 4)
    assert_bitwise(layer.evolve(x, record=True)[2]["vmem"], _reference_of(lif_cuda.LIFNeuron(
        4, tau_mem=0.03, threshold=torch.tensor([0.5, 1.0, 1.5, 2.0]), bias=0.1), x)[1], "vmem")


@pytest.mark.parametrize("backend", ["gpu", "", None])
def test_unknown_backend_is_a_value_error(backend):
    with pytest.raises(ValueError, match="backend"):
        lif_cuda.LIFNeuron(3, backend=backend)


# ------------------------------------------------------------------ forward and evolve


def test_forward_batched_input():
    layer = _layer()
    x = _input(3, 20, 6)
    spikes = layer(x)
    assert spikes.shape == (3, 20, 6) and spikes.dtype == torch.float32 and spikes.device == x.device
    assert_bitwise(spikes, _reference_of(_layer(), x)[0], "spikes")
    assert (spikes > 0).any()


def test_forward_unbatched_input_is_batch_one():
    x = _input(20, 6)
    spikes = _layer()(x)
    assert spikes.shape == (1, 20, 6)
    assert_bitwise(spikes, _layer()(x.unsqueeze(0)), "spikes of (T,N) vs (1,T,N)")


def test_forward_broadcasts_a_last_dimension_of_one():
    x = _input(2, 20, 1)
    spikes = _layer()(x)
    assert spikes.shape == (2, 20, 6)
    assert_bitwise(spikes, _layer()(x.expand(2, 20, 6).contiguous()), "spikes of (B,T,1) vs (B,T,N)")


@pytest.mark.parametrize("shape", [(2, 20, 5), (2, 20, 7), (20,), (1, 2, 20, 6)])
def test_wrong_input_shape_raises_and_keeps_state(shape):
    layer = _layer()
    layer(_input(1, 10, 6))
    before = layer.vmem.clone()
    with pytest.raises(ValueError, match="input"):
        layer(_input(*shape))
    assert_bitwise(layer.vmem, before, "state after a failed call")


@pytest.mark.parametrize("record", [True, False])
def test_evolve_returns_spikes_state_and_record(record):
    layer = _layer()
    x = _input(3, 15, 6)
    spikes, state, rec = layer.evolve(x, record=record)
    want = _reference_of(_layer(), x)
    assert_bitwise(spikes, want[0], "spikes")
    assert set(state) == {"vmem"}
    assert_bitwise(state["vmem"], want[2][0], "state: batch row 0 of the final membrane")
    if record:
        assert set(rec) == {"vmem", "spikes"}
        for key in ("vmem", "spikes"):
            assert rec[key].shape == (3, 15, 6) and rec[key].device == x.device, key
        assert_bitwise(rec["vmem"], want[1], "recorded vmem")
        assert_bitwise(rec["spikes"], spikes, "recorded spikes")
    else:
        assert rec == {}


# ------------------------------------------------------------------ state


def test_state_persists_batch_row_zero_detached():
    layer = _layer()
    x = _input(3, 12, 6).requires_grad_(True)
    _, _, final = _reference_of(_layer(), x.detach())
    layer(x)
    assert_bitwise(layer.vmem, final[0], "state after a call")
    assert not layer.vmem.requires_grad and layer.vmem.grad_fn is None


def test_two_calls_equal_one_long_call():
    x = _input(1, 30, 6)
    whole = _layer().evolve(x, record=True)
    layer = _layer()
    first = layer.evolve(x[:, :11], record=True)
    second = layer.evolve(x[:, 11:], record=True)
    assert_bitwise(torch.cat([first[0], second[0]], 1), whole[0], "spikes")
    assert_bitwise(torch.cat([first[2]["vmem"], second[2]["vmem"]], 1), whole[2]["vmem"], "vmem")
    assert_bitwise(second[1]["vmem"], whole[1]["vmem"], "final state")


def test_next_call_starts_every_batch_row_from_row_zero():
    """The seed keeps one (N,) state, batch row 0's, and broadcasts it over the next batch."""
    layer = _layer()
    x1, x2 = _input(3, 10, 6, seed=2), _input(3, 10, 6, seed=3)
    layer(x1)
    v = layer.vmem.clone()
    assert not torch.equal(v, torch.zeros(6))
    assert_bitwise(layer.evolve(x2, record=True)[2]["vmem"], _reference_of(_layer(), x2, v0=v)[1], "vmem")


def test_reset_state():
    layer = _layer()
    x = _input(2, 10, 6)
    first = layer(x)
    assert (layer.vmem != 0).any()
    assert layer.reset_state() is layer
    assert torch.equal(layer.vmem, torch.zeros(6))
    assert_bitwise(layer(x), first, "spikes after reset_state")


# ------------------------------------------------------------------ backends


@needs_fused_cpu
def test_fused_and_reference_backends_agree(model):
    """Every model, over two calls (the second starts from the state the first left): spikes, every
    record and the state bit for bit; then the parameter gradients of a training step within 1e-5."""
    x = model.input(4, 25, 6, seed=2)
    layers = [model.layer(6, backend=backend) for backend in ("fused", "reference")]
    for _ in range(2):
        (f, f_state, f_rec), (r, r_state, r_rec) = [layer.evolve(x, record=True) for layer in layers]
        assert_bitwise(f, r, "spikes")
        assert f_rec.keys() == r_rec.keys() == set(model.records)
        for k in f_rec:
            assert_bitwise(f_rec[k], r_rec[k], k)
        for k in model.states:
            assert_bitwise(f_state[k], r_state[k], f"state {k}")
            assert_bitwise(getattr(layers[0], k), getattr(layers[1], k), f"kept state {k}")
    for layer in layers:
        layer.reset_state()
        layer(x).sum().backward()
    for (name, p), q in zip(layers[0].named_parameters(), layers[1].parameters()):
        assert p.grad.abs().sum() > 0, name
        assert rel_err(p.grad, q.grad) <= 1e-5, name


def test_fused_backend_runs_the_fused_op(monkeypatch):
    calls = []
    original = lif_cuda.functional.lif_forward_op
    monkeypatch.setattr(lif_cuda.functional, "lif_forward_op", lambda *a, **k: calls.append(1) or original(*a, **k))
    _layer(backend="fused")(_input(2, 5, 6))
    _layer(backend="auto")(_input(2, 5, 6))
    assert len(calls) == 2
    _layer(backend="reference")(_input(2, 5, 6))
    assert len(calls) == 2


@pytest.fixture
def fused_unavailable(monkeypatch):
    """As if the extension had no kernel for the CPU."""
    monkeypatch.setattr(lif_cuda.functional, "fused_available", lambda device: False)
    monkeypatch.setattr(lif_cuda._ext, "_warned", set())


def test_fused_backend_unavailable_raises_and_keeps_state(fused_unavailable):
    layer = _layer(backend="fused")
    with torch.no_grad():
        layer.vmem.fill_(0.25)
    with pytest.raises(RuntimeError, match="fused"):
        layer(_input(2, 5, 6))
    assert torch.equal(layer.vmem, torch.full((6,), 0.25))


def test_auto_backend_falls_back_with_one_warning(fused_unavailable):
    x = _input(2, 10, 6)
    layer = _layer(backend="auto")
    with pytest.warns(RuntimeWarning, match="reference"):
        spikes = layer(x)
    assert_bitwise(spikes, _reference_of(_layer(), x)[0], "spikes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(x)  # warned once already


@needs_fused_cpu
def test_custom_surrogate_runs_on_the_reference_path(model, monkeypatch):
    """A spike function without a fused kernel: backend="auto" warns (naming it) and runs the
    reference path, the fused op never called, with the reference's result; backend="fused" refuses
    it before anything runs."""

    class MySurrogate(lif_cuda.StepPWL):
        pass

    monkeypatch.setattr(lif_cuda._ext, "_warned", set())
    calls = []
    module, op_name, _ = model.internals()
    original = getattr(module, op_name)
    monkeypatch.setattr(module, op_name, lambda *a, **kw: calls.append(1) or original(*a, **kw))
    x = model.input(2, 10, 6, seed=1)
    layer = model.layer(6, spike_generation_fn=MySurrogate)
    with pytest.warns(RuntimeWarning, match="MySurrogate has no fused kernel"):
        spikes = layer(x)
    assert calls == []
    assert spikes.shape == (2, 10, 6)
    assert_bitwise(spikes, model.layer(6, backend="reference")(x), "spikes")
    fused = model.layer(6, spike_generation_fn=MySurrogate, backend="fused")
    with pytest.raises(ValueError, match="backend='fused'.*MySurrogate has no fused kernel"):
        fused(x)
    for name in model.states:
        assert not getattr(fused, name).any(), f"{name} changed by a refused call"


# ------------------------------------------------------------------ training, dtype, noise


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_parameters_are_trainable(backend):
    layer = _layer(backend=backend)
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    assert set(before) == {"tau_mem", "threshold", "bias"}
    opt = torch.optim.SGD(layer.parameters(), lr=1e-4)
    x = _input(4, 20, 6)
    spikes, _, rec = layer.evolve(x, record=True)
    (spikes.sum() + rec["vmem"].pow(2).sum()).backward()
    opt.step()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert not torch.equal(p.detach(), before[name]), name


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_to_float64_computes_in_float64(backend):
    layer = _layer(backend=backend).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in layer.parameters()) and layer.vmem.dtype == torch.float64
    x = _input(2, 20, 6)  # float32 input: the layer computes in its own dtype
    spikes, _, rec = layer.evolve(x, record=True)
    assert spikes.dtype == torch.float64 and rec["vmem"].dtype == torch.float64
    ref = _layer().to(torch.float64)
    want = _reference_of(ref, x.to(torch.float64))
    # Bitwise equal to a float64 computation: not a float32 one cast up afterwards.
    assert_bitwise(rec["vmem"], want[1], "vmem")
    as_f32 = _reference_of(_layer(), x)[1].to(torch.float64)
    assert not torch.equal(rec["vmem"], as_f32)


def _noisy_runs(x, noise, runs):
    out = []
    for backend, seed in runs:
        layer = _layer(x.shape[-1], backend=backend, noise_std=2.0, noise=noise)
        torch.manual_seed(seed)
        out.append(layer.evolve(x, record=True))
    return out


def test_torch_noise_with_a_seed_equals_the_reference_backend():
    """noise="torch": noise_std * sqrt(dt) * torch.randn(B,T,N), as the seed draws it."""
    x = _input(3, 30, 6)
    f, r, other = _noisy_runs(x, "torch", [("fused", 7), ("reference", 7), ("fused", 8)])
    assert_bitwise(f[0], r[0], "spikes")
    assert_bitwise(f[2]["vmem"], r[2]["vmem"], "vmem")
    quiet = _layer().evolve(x, record=True)
    assert not torch.equal(f[2]["vmem"], quiet[2]["vmem"]), "noise_std > 0 must add noise"
    assert not torch.equal(f[2]["vmem"], other[2]["vmem"]), "another seed, other noise"
    torch.manual_seed(7)
    z = 2.0 * torch.sqrt(torch.tensor(1e-3)) * torch.randn(3, 30, 6)
    assert_bitwise(f[2]["vmem"], _reference_of(_layer(), x, noise=z)[1], "vmem with the same noise tensor")


def test_kernel_noise_is_reproducible_under_a_seed():
    """noise="kernel" (the default): drawn inside the fused kernel from torch's seed (SPEC §4);
    the same seed gives the same result on either backend."""
    x = _input(4, 50, 10)
    a, b, ref, other = _noisy_runs(x, "kernel", [("fused", 7), ("fused", 7), ("reference", 7), ("fused", 8)])
    assert_bitwise(a[2]["vmem"], b[2]["vmem"], "vmem, same seed")
    # The reference backend computes the kernel's noise stream too (lif_cuda.noise).
    assert_bitwise(a[0], ref[0], "spikes, fused vs reference backend, same seed")
    assert_bitwise(a[2]["vmem"], ref[2]["vmem"], "vmem, fused vs reference backend, same seed")
    assert not torch.equal(a[2]["vmem"], other[2]["vmem"]), "another seed, other noise"
    # The noise each step added, recovered from the record, is N(0, (noise_std * sqrt(dt))^2).
    layer = _layer(10, noise_std=2.0)
    quiet = _reference_of(layer, x, v0=torch.zeros(10))
    vmem, spikes = a[2]["vmem"], a[0]
    w_prev = torch.cat([torch.zeros(4, 1, 10), vmem[:, :-1]], 1).detach()
    alpha = torch.exp(-layer.dt / layer.tau_mem).detach()
    u = vmem.detach() + spikes * layer.threshold.detach()
    z = u - (alpha * w_prev + x + layer.bias.detach())
    sigma = 2.0 * math.sqrt(1e-3)
    assert abs(z.mean().item()) < 0.1 * sigma and abs(z.std().item() / sigma - 1) < 0.1
    assert not torch.equal(vmem, quiet[1])


@needs_fused_cpu
def test_module_noise_modes(model):
    """Every model: noise="kernel" (the default) is reproducible under a seed, differs under another,
    and the reference backend draws the kernel's stream; noise="torch" gives the same on both
    backends under a seed; noise_std > 0 changes the membrane."""
    x = model.input(2, 15, 6, seed=1)

    def run(seed, **kw):
        layer = model.layer(6, noise_std=0.3, **kw)
        torch.manual_seed(seed)
        return layer.evolve(x, record=True)

    a, again, ref, other = run(1), run(1), run(1, backend="reference"), run(2)
    for what, b in (("same seed", again), ("the reference backend, same seed", ref)):
        assert_bitwise(a[0], b[0], f"spikes, {what}")
        assert_bitwise(a[2]["vmem"], b[2]["vmem"], f"vmem, {what}")
    assert not torch.equal(a[2]["vmem"], other[2]["vmem"]), "another seed, other noise"
    assert not torch.equal(a[2]["vmem"], model.layer(6).evolve(x, record=True)[2]["vmem"]), "no noise added"
    t, t_ref = run(2, noise="torch"), run(2, noise="torch", backend="reference")
    assert_bitwise(t[0], t_ref[0], "spikes, torch noise")
    assert_bitwise(t[2]["vmem"], t_ref[2]["vmem"], "vmem, torch noise")


def test_functional_api_equals_module():
    """lif_evolve with the layer's parameters is the module's computation."""
    case = make_case(5, 2, 12, 6)
    layer = lif_cuda.LIFNeuron(6, tau_mem=case.tau_mem, threshold=case.threshold, bias=case.bias)
    with torch.no_grad():
        layer.vmem.copy_(case.v0[0])
    v0 = case.v0[0].expand(2, 6)
    spikes, _, rec = layer.evolve(case.input, record=True)
    want = run_reference(case.replace(v0=v0))
    assert_bitwise(spikes, want[0], "spikes")
    assert_bitwise(rec["vmem"], want[1], "vmem")


def test_fused_backend_refuses_a_spike_function_without_a_kernel():
    class Heaviside(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, thr, window, max_spikes):
            return (x >= thr).to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            return g, None, None, None

    layer = lif_cuda.LIFNeuron(4, spike_generation_fn=Heaviside, backend="fused")
    with pytest.raises(ValueError, match="backend='fused'.*Heaviside"):
        layer(torch.rand(1, 5, 4))
    assert torch.equal(layer.vmem, torch.zeros(4))


def test_internal_outputs_are_not_differentiable():
    # u and v0_saved (saved for backward) and an unrecorded vmem are internal: no gradient can flow
    # into them, and the backward is not handed (B,T,N) zeros for them.
    x = torch.rand(2, 6, 3, requires_grad=True)
    out = torch.ops.lif_cuda.lif_forward(
        x, torch.zeros(2, 3), torch.full((3,), 0.02), torch.ones(3), torch.zeros(3),
        None, None, 1e-3, 0.0, 0.5, 65536.0, 0, False, True,
    )
    assert out[0].requires_grad and out[2].requires_grad
    assert not out[1].requires_grad and not out[3].requires_grad and not out[4].requires_grad


# ------------------------------------------------------------------ the synaptic model (SPEC §7)


@needs_fused_cpu
def test_synaptic_module_shapes_parameters_state_and_records():
    layer = make_synaptic_layer(S=3, N=4)
    assert layer.size_in == 12 and layer.size_out == layer.n_neurons == 4 and layer.n_synapses == 3
    assert {n for n, _ in layer.named_parameters()} == {"tau_mem", "tau_syn", "threshold", "bias", "w_rec"}
    assert layer.tau_syn.shape == (4, 3) and layer.w_rec.shape == (4, 12)
    assert SynapticLIF(5).n_synapses == 1 and SynapticLIF((5,)).size_in == 5
    assert SynapticLIF(5).w_rec is None
    x = 0.5 + torch.rand(2, 20, 12)
    out, state, rec = layer.evolve(x, record=True)
    assert out.shape == (2, 20, 4)
    assert {k: tuple(v.shape) for k, v in rec.items()} == {
        "vmem": (2, 20, 4), "isyn": (2, 20, 4, 3), "irec": (2, 20, 4, 3), "spikes": (2, 20, 4)}
    assert torch.equal(state["vmem"], rec["vmem"][0, -1]) and torch.equal(state["isyn"], rec["isyn"][0, -1])
    assert torch.equal(state["spikes"], rec["spikes"][0, -1]), "state: batch row 0's last values"
    assert layer(x[0]).shape == (1, 20, 4), "(T, N*S) is batch 1"
    assert layer(torch.rand(2, 5, 1)).shape == (2, 5, 4), "a last dimension of 1 broadcasts"
    layer.reset_state()
    assert not layer.vmem.any() and not layer.isyn.any() and not layer.spikes.any()
