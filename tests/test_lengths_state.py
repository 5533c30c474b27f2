"""SPEC §8: variable-length sequences (`lengths`) and per-sample state (`batch_state`), for every
model (the `model` fixture: LIF, synaptic feed-forward and recurrent), functional and module, on
both backends.

lengths:
- row b equals that row run alone on its first lengths[b] steps: forward bit for bit, gradients
  within SPEC §3's tolerances (the fused op's input and initial-state gradients bit for bit). With
  recurrent weights ATen's product over B rows and over one row may take different GEMM paths, so
  row b is compared with the SAME batch run on x[:, :lengths[b]];
- padding: no spikes, the recorded membrane (and currents) hold the row's last values (the initial
  state for length 0), a recorded recurrent current is 0, zero input (and noise) gradient, nothing
  added to any parameter gradient; gradients arriving on padding positions are ignored and NaN
  padding input changes nothing (no bit of any output or gradient);
- the fused backward equals autograd of the masked reference (float64 1e-10, float32 1e-5);
- lengths all == T equals no lengths bit for bit (list, int32, int64), and all lengths 0.
batch_state=True:
- chunks equal one run bit for bit (spikes, records, state), with and without lengths (then the
  kept state of row b is its state at its length); the gradient is cut between chunks, and a
  chunk's gradients equal those of a run started from the previous chunk's final state;
- another batch size raises a ValueError naming it and reset_state(), before any kernel, state
  untouched; after reset_state() any batch size works; default False keeps row 0's state;
- state_dict / load_state_dict, TorchScript, and (synaptic) torch.compile, bit for bit.
Bad lengths: tests/test_bad_input.py. The CUDA thread code: tests/test_*_host.py.
"""
import copy

import pytest
import torch

import lif_cuda
from conftest import (
    DTYPE_IDS,
    DTYPES,
    MODELS,
    assert_bitwise,
    assert_rel_close,
    make_synaptic_case,
    needs_fused_cpu,
)
from lif_cuda import PeriodicExponential, StepPWL

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

BACKENDS = ["fused", "reference"]
SURROGATES = pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential],
                                     ids=["StepPWL", "PeriodicExponential"])
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
# Lengths of the rows: T, empty, below and above the CUDA kernel's 8-step prefetch chunk, one step.
T = 20
LENGTHS = [T, 0, 7, 1, 13]
B = len(LENGTHS)
N = 5


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "fused" and not lif_cuda.fused_available("cpu"):
        pytest.skip("fused CPU kernels not built")
    return request.param


# ------------------------------------------------------------------ the functional form, any model


def run(model, backend, case, lengths=None, **kw):
    """The functional form's outputs by name."""
    return dict(zip(model.outputs, model.evolve_fn(**case, record=True, backend=backend, lengths=lengths, **kw)))


def noise_for(case, seed=3):
    Bc, Tc = case["input"].shape[:2]
    g = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(Bc, Tc, case["v0"].shape[-1], generator=g, dtype=torch.float64)).to(case["input"].dtype)


def upstream(out, seed=5):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for k, o in out.items()}


def grads(model, backend, case, ups, lengths=None, **kw):
    """Outputs and the gradients of sum(out * up) over the model's differentiable outputs, w.r.t.
    every argument given that the loss can reach (by name)."""
    names = model.grad_args(case)
    leaves = {k: case[k].detach().clone().requires_grad_(True) for k in names}
    out = run(model, backend, {**case, **leaves}, lengths, **kw)
    keys = model.grad_outputs
    g = torch.autograd.grad([out[k] for k in keys], list(leaves.values()), [ups[k] for k in keys], allow_unused=True)
    return out, dict(zip(names, g))


SHARED_DIM = {"v0": 1, "i0": 2, "s0": 1, "h0": 1, "b0": 1}  # an initial state with one more dimension is per row


def row_alone(case, b, L):
    """Row b's first L steps as a batch of one (per-row state sliced, a shared state kept)."""
    out = dict(case, input=case["input"][b:b + 1, :L])
    for k, shared_dim in SHARED_DIM.items():
        if case.get(k) is not None and case[k].dim() > shared_dim:
            out[k] = case[k][b:b + 1]
    if case.get("noise") is not None:
        out["noise"] = case["noise"][b:b + 1, :L]
    return out


def check_padding(model, out, case, b, L):
    """Row b's padding: no spikes (nor recurrent current), membrane (and currents) held at the state
    after its last step; a row of length 0 ends in its initial state."""
    pad = T - L
    for name, o in out.items():
        if name in model.finals:
            continue
        if name in model.held:
            want = out[model.held[name]][b].expand(pad, *o.shape[2:])
            assert_bitwise(o[b, L:], want, f"row {b}: padding {name} holds the last value")
        else:
            assert_bitwise(o[b, L:], torch.zeros(pad, *o.shape[2:], dtype=o.dtype), f"row {b}: padding {name} is 0")
    if L == 0:
        for final, k in model.finals.items():
            got = out[final][b]
            start = case[k][b] if case[k].dim() > SHARED_DIM[k] else case[k]
            assert_bitwise(got, start.expand_as(got).to(got.dtype), f"row {b} of length 0 keeps {k}")


@pytest.mark.parametrize("form", ["list", "int32", "int64"])
def test_lengths_all_T_equal_no_lengths(model, backend, form):
    case = model.case(47, 3, T, N)
    lengths = {"list": [T] * 3, "int32": torch.full((3,), T, dtype=torch.int32), "int64": torch.full((3,), T)}[form]
    ups = upstream(run(model, backend, case))
    want_out, want = grads(model, backend, case, ups)
    got_out, got = grads(model, backend, case, ups, lengths)
    for name in want_out:
        assert_bitwise(got_out[name], want_out[name], name)
    for name in want:
        assert_bitwise(got[name], want[name], f"grad {name}")


def test_all_lengths_zero(model, backend):
    case = model.case(48, 3, T, N, torch.float64)
    ups = upstream(run(model, backend, case))
    out, g = grads(model, backend, case, ups, [0, 0, 0])
    for b in range(3):
        check_padding(model, out, case, b, 0)
    starts = set()
    for final, k in model.finals.items():
        if k in g and final in model.grad_outputs:
            assert_bitwise(g[k], ups[final], f"grad {k} = grad on {final}")
            starts.add(k)
    for name, t in g.items():
        if name not in starts:
            assert not t.any(), f"grad {name} must be zero"


def test_padding_gradients_and_padding_input_are_ignored(model, backend):
    """Gradients on padding positions (on every per-step output) and NaN padding input and noise
    change no bit of any output or gradient; the padding's input and noise gradients are 0."""
    case = model.case(46, B, T, N, torch.float64)
    case["noise"] = noise_for(case)
    lengths = torch.tensor(LENGTHS)
    pad = torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)  # (B, T): True on padding
    ups = upstream(run(model, backend, case, lengths))
    clean = {k: u if k in model.finals else u.masked_fill(pad.reshape(B, T, *([1] * (u.dim() - 2))), 0.0)
             for k, u in ups.items()}
    nan_case = dict(case, input=case["input"].masked_fill(pad.unsqueeze(-1), float("nan")),
                    noise=case["noise"].masked_fill(pad.unsqueeze(-1), float("nan")))
    want_out, want = grads(model, backend, case, clean, lengths)
    for what, c, u in (("padding gradients", case, ups), ("NaN padding input", nan_case, clean)):
        out, g = grads(model, backend, c, u, lengths)
        for name in want_out:
            assert_bitwise(out[name].detach(), want_out[name].detach(), f"{what}: {name}")
        for name in want:
            assert_bitwise(g[name], want[name], f"{what}: grad {name}")
    for name in ("input", "noise"):
        assert not want[name][pad].any() and want[name][~pad].abs().sum() > 0, name
    if model.recurrent:
        assert want["w_rec"].abs().sum() > 0


# (model, case arguments): LIF with per-neuron parameters, or scalar ones and a shared v0; synaptic
# with per-row or shared state, one to three synapses.
GRAD_CASES = [
    ("lif", dict()),
    ("lif", dict(params="scalar", v0_shape="neuron")),
    ("synaptic-ff", dict(S=2, state="rows")),
    ("synaptic-ff", dict(S=1, state="shared")),
    ("synaptic-rec", dict(S=2, state="rows")),
    ("synaptic-rec", dict(S=3, state="shared")),
]


@needs_fused_cpu
@SURROGATES
@pytest.mark.parametrize("model,variant", GRAD_CASES, indirect=["model"],
                         ids=[f"{m}-{'-'.join(map(str, v.values())) or 'neuron'}" for m, v in GRAD_CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fused_gradients_match_reference_autograd(dtype, model, variant, surrogate):
    """SPEC §3/§7 with lengths: the fused backward against autograd of the masked reference, with
    gradients arriving on every output, padding positions included."""
    case = model.case(44 + variant.get("S", 0), B, T, N, dtype, **variant)
    case["noise"] = noise_for(case)
    lengths = torch.tensor(LENGTHS)
    kw = dict(spike_generation_fn=surrogate)
    f_out, f_g = grads(model, "fused", case, upstream(run(model, "fused", case, lengths)), lengths, **kw)
    r_out, r_g = grads(model, "reference", case, upstream(f_out), lengths, **kw)
    for name in f_out:
        assert_bitwise(f_out[name].detach(), r_out[name].detach(), name)
    for name, want in r_g.items():
        assert want.abs().sum() > 0, f"grad {name} is zero: the case does not test it"
        assert_rel_close(f_g[name], want, TOL[dtype], f"grad {name}")


# (model, case arguments): LIF with per-neuron parameters, scalar ones and a shared v0, a noise
# tensor; synaptic with per-row or shared state, one to three synapses, a noise tensor.
ROW_CASES = [
    ("lif", dict()),
    ("lif", dict(params="scalar", v0_shape="neuron")),
    ("lif", dict(noise=True)),
    ("synaptic-ff", dict(S=2, state="rows")),
    ("synaptic-ff", dict(S=1, state="shared")),
    ("synaptic-ff", dict(S=3, state="shared", noise=True)),
    ("synaptic-rec", dict(S=1, state="rows", noise=True)),
    ("synaptic-rec", dict(S=2, state="shared", noise=True)),
    ("synaptic-rec", dict(S=3, state="rows", noise=True)),
]


@pytest.mark.parametrize("model,variant", ROW_CASES, indirect=["model"],
                         ids=[f"{m}-{'-'.join(map(str, v.values())) or 'neuron'}" for m, v in ROW_CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_rows_equal_rows_run_alone(backend, dtype, model, variant):
    """Forward, bit for bit: row b equals that row run alone on its first lengths[b] steps; with
    recurrent weights, row b of the same batch run on its first lengths[b] steps."""
    variant = dict(variant)
    noise = variant.pop("noise", False)
    case = model.case(41 + model.recurrent * (1 + variant.get("S", 0)), B, T, N, dtype, **variant)
    if noise:
        case["noise"] = noise_for(case)
    out = run(model, backend, case, torch.tensor(LENGTHS))
    assert (out["spikes"] > 0).any() and (out["spikes"] == 0).any()
    if model.recurrent:
        assert out["irec"].abs().sum() > 0, "the recurrent current should not vanish"
    for b, L in enumerate(LENGTHS):
        check_padding(model, out, case, b, L)
        if model.recurrent:
            if L == 0:
                continue
            noise_L = None if case.get("noise") is None else case["noise"][:, :L]
            same_batch = run(model, backend, dict(case, input=case["input"][:, :L], noise=noise_L))
            for name, o in out.items():
                assert_bitwise(o[b, :L] if name not in model.finals else o[b], same_batch[name][b],
                               f"row {b} (length {L}): {name}")
        else:
            alone = run(model, backend, row_alone(case, b, L))
            for name, o in out.items():
                assert_bitwise(o[b:b + 1, :L] if name not in model.finals else o[b:b + 1], alone[name],
                               f"row {b} (length {L}): {name}")


@SURROGATES
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_gradients_equal_rows_run_alone(model, backend, dtype, surrogate):
    """Row b's input and initial-state gradients are those of the row run alone (the fused op: bit
    for bit), or with recurrent weights of the same batch run on its length; the parameter gradients
    are the sums over the rows alone (without recurrence)."""
    case = model.case(45, B, T, N, dtype)
    lengths = torch.tensor(LENGTHS)
    kw = dict(spike_generation_fn=surrogate)
    ups = upstream(run(model, backend, case, lengths))
    _, got = grads(model, backend, case, ups, lengths, **kw)
    starts = [k for final, k in model.finals.items() if final in model.grad_outputs]  # v0 (and i0)
    param_sums = {k: torch.zeros_like(case[k]) for k in ("tau_mem", "tau_syn", "threshold", "bias") if k in got}
    for b, L in enumerate(LENGTHS):
        n_in = case["input"].shape[-1]
        assert_bitwise(got["input"][b, L:], torch.zeros(T - L, n_in, dtype=dtype), f"row {b}: padding grad input")
        if L == 0:  # the final state is the initial state; nothing else is touched
            for final, k in model.finals.items():
                if k in starts:
                    assert_bitwise(got[k][b], ups[final][b], f"row of length 0: grad {k} = grad on {final}")
            continue
        if model.recurrent:
            c = dict(case, input=case["input"][:, :L])
            sl = {k: u if k in model.finals else u[:, :L] for k, u in ups.items()}
            rows = slice(b, b + 1)
        else:
            c = row_alone(case, b, L)
            sl = {k: u[b:b + 1] if k in model.finals else u[b:b + 1, :L] for k, u in ups.items()}
            rows = slice(0, 1)
        _, alone = grads(model, backend, c, sl, **kw)
        for name in ["input"] + starts:
            g = got[name][b:b + 1, :L] if name == "input" else got[name][b:b + 1]
            assert_rel_close(g, alone[name][rows], TOL[dtype], f"row {b}: grad {name}")
            if backend == "fused" and not model.recurrent:  # the same operations in the same order
                assert_bitwise(g, alone[name][rows], f"row {b}: grad {name}")
        if not model.recurrent:
            for k in param_sums:
                param_sums[k] += alone[k]
    if not model.recurrent:
        for k, want in param_sums.items():
            assert want.abs().sum() > 0, f"grad {k} is zero: the case does not test it"
            assert_rel_close(got[k], want, TOL[dtype], f"grad {k}: the sum of the rows run alone")


# ------------------------------------------------------------------ the module


CHUNKS = [(0, 17), (17, 40), (40, 60)]  # uneven, one of them not a multiple of 8


def zero_state(model, n=N):
    return tuple(torch.zeros(shape) for shape in model.state_shapes(n).values())


def test_module_lengths(model, backend):
    """forward/evolve take lengths as the functional form does; with the default batch_state=False
    the state kept is row 0's at its length."""
    x = model.input(3, T, seed=7)
    lengths = [9, T, 0]
    m = model.layer(backend=backend)
    assert "batch_state=False" in repr(m)
    spikes, state, rec = m.evolve(x, record=True, lengths=lengths)
    out = dict(zip(model.outputs, model.evolve_from(m, x, zero_state(model), model.params(m), record=True,
                                                    backend=backend, lengths=torch.tensor(lengths))))
    assert_bitwise(spikes, out["spikes"].detach(), "spikes")
    for k in model.records:
        assert_bitwise(rec[k], out[k].detach(), f"record {k}")
    assert m.vmem.shape == (N,)
    for k in model.states:
        assert_bitwise(state[k], getattr(m, k), f"state {k}")
        assert_bitwise(getattr(m, k), rec[k][0, lengths[0] - 1], f"state {k}: row 0 at its length")
    assert_bitwise(m.vmem, out["v_final"][0].detach(), "state: row 0 at its length")
    m.reset_state()
    assert_bitwise(m(x, lengths), out["spikes"].detach(), "forward")


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_chunks_equal_one_run(model, backend, dtype, with_lengths):
    x = model.input(dtype=dtype)
    lengths = torch.tensor([60, 25, 40]) if with_lengths else None
    m = model.layer(backend=backend, batch_state=True, dtype=dtype)
    _, state, whole = m.evolve(x, record=True, lengths=lengths)
    kept = model.state_of(m)
    assert {k: tuple(t.shape) for k, t in zip(model.states, kept)} == model.state_shapes(N, B=3)
    assert not any(t.requires_grad for t in kept)
    assert (whole["spikes"] > 0).any() and (whole["spikes"][:, 30:] > 0).any()
    m.reset_state()
    parts = []
    for a, b in CHUNKS:
        ln = None if lengths is None else (lengths - a).clamp(0, b - a)
        parts.append(m.evolve(x[:, a:b], record=True, lengths=ln)[2])
    for k in model.records:
        assert_bitwise(torch.cat([p[k] for p in parts], 1), whole[k], k)
    for name, a, b in zip(model.states, model.state_of(m), kept):
        assert_bitwise(a, b, f"state {name}")
    if with_lengths:  # the state kept for row b is its state at its length
        for b, L in enumerate(lengths.tolist()):
            for k in model.states:
                assert_bitwise(getattr(m, k)[b], whole[k][b, L - 1], f"row {b}: {k} at its length")


def test_truncated_bptt_cuts_the_gradient(model, backend):
    """Chunk 2's gradients are those of a run started from chunk 1's final state, detached."""
    x = model.input()
    m = model.layer(backend=backend, batch_state=True)
    x1, x2 = x[:, :30].clone().requires_grad_(True), x[:, 30:].clone().requires_grad_(True)
    m(x1)
    state = model.state_of(m)
    assert not any(t.requires_grad for t in state)
    w = torch.randn(3, 30, N, generator=torch.Generator().manual_seed(2))
    (m(x2) * w).sum().backward()
    assert x1.grad is None, "the gradient must not reach the previous chunk"
    params = model.params(m)
    got = [x2.grad] + [p.grad.clone() for p in params]
    leaves = [x[:, 30:].clone().requires_grad_(True)] + [p.detach().clone().requires_grad_(True) for p in params]
    out = model.evolve_from(m, leaves[0], state, leaves[1:], backend=backend)
    want = torch.autograd.grad((out[0] * w).sum(), leaves)
    for name, a, b in zip(["input"] + [n for n, _ in m.named_parameters()], got, want):
        assert b.abs().sum() > 0
        assert_bitwise(a, b, f"grad {name}")


@pytest.mark.parametrize("method", ["forward", "evolve"])
def test_another_batch_size_raises_until_reset(model, backend, method):
    m = model.layer(backend=backend, batch_state=True)
    m(model.input(3, 10))
    kept = model.state_of(m)
    launches = lif_cuda.ops.kernel_launches()
    call = m if method == "forward" else m.evolve
    with pytest.raises(ValueError, match=r"batch size 3.*batch size 2.*reset_state\(\)"):
        call(model.input(2, 10))
    with pytest.raises(ValueError, match=r"batch size 1.*reset_state\(\)"):
        call(model.input(1, 10)[0])  # (T, N) input is batch 1
    assert lif_cuda.ops.kernel_launches() == launches, "a kernel ran before the error"
    for name, a, b in zip(model.states, model.state_of(m), kept):
        assert_bitwise(a, b, f"{name} untouched")
    m.reset_state()
    for name, shape in model.state_shapes(N).items():
        assert_bitwise(getattr(m, name), torch.zeros(shape), f"reset: a zero {name} row")
    for b in (2, 5):
        m.reset_state()
        x = model.input(b, 10)
        s = m(x)
        assert {k: tuple(t.shape) for k, t in zip(model.states, model.state_of(m))} == model.state_shapes(N, B=b)
        assert_bitwise(s, model.layer(backend=backend)(x), f"batch {b} from a zero state")


def test_batch_state_false_keeps_the_seeds_behaviour(model, backend):
    m = model.layer(backend=backend)
    _, _, rec = m.evolve(model.input(3, 10), record=True)
    assert {k: tuple(t.shape) for k, t in zip(model.states, model.state_of(m))} == model.state_shapes(N)
    for k in model.states:
        assert_bitwise(getattr(m, k), rec[k][0, -1], f"row 0's final {k}")
    m(model.input(2, 10))  # any batch size


def test_batch_state_edge_cases(model, backend):
    with pytest.raises(TypeError, match="batch_state"):
        model.layer(batch_state="yes")
    with pytest.raises(TypeError, match="batch_state"):
        model.layer(batch_state=1)
    m = model.layer(backend=backend, batch_state=True)
    m(model.input(3, 10))
    state = model.state_of(m)
    m(torch.zeros(3, 0, model.n_in(N)))  # zero steps change nothing
    with pytest.raises(ValueError, match=r"batch size 0"):  # an empty batch is another batch size
        m(torch.zeros(0, 10, model.n_in(N)))
    for name, a, b in zip(model.states, model.state_of(m), state):
        assert_bitwise(a, b, f"{name} after empty calls")
    m.batch_state = False
    with pytest.raises(ValueError, match=r"batch_state.*reset_state\(\)"):
        m(model.input(3, 10))
    m.reset_state()
    m(model.input(2, 10))
    assert m.vmem.shape == (N,)


def test_batch_state_state_dict(model, backend):
    """state_dict holds the state in its current shape; load_state_dict takes a one-row state, or a
    per-row one with batch_state=True (and the module continues from it bit for bit)."""
    x = model.input(3, 40)
    m = model.layer(backend=backend, batch_state=True)
    m(x[:, :20])
    sd = copy.deepcopy(m.state_dict())
    assert {k: tuple(sd[k].shape) for k in model.states} == model.state_shapes(N, B=3)
    m2 = model.layer(backend=backend, batch_state=True)
    m2.load_state_dict(sd)
    for name, a, b in zip(model.states, model.state_of(m2), model.state_of(m)):
        assert_bitwise(a, b, f"loaded {name}")
    assert_bitwise(m2(x[:, 20:]), m(x[:, 20:]), "continued from the loaded state")
    for name, a, b in zip(model.states, model.state_of(m2), model.state_of(m)):
        assert_bitwise(a, b, f"{name} after the next chunk")
    with pytest.raises(RuntimeError, match="batch_state"):
        model.layer(backend=backend).load_state_dict(sd)
    m2.load_state_dict(model.layer(backend=backend, batch_state=True).state_dict())  # one row into a per-row module
    for name, shape in model.state_shapes(N).items():
        assert_bitwise(getattr(m2, name), torch.zeros(shape), f"(N,) {name} loaded")
    m2(model.input(4, 5))
    assert m2.vmem.shape == (4, N)


@needs_fused_cpu
def test_batch_state_and_lengths_under_torchscript(model):
    x = model.input(3, 40)
    eager = model.layer(backend="fused", batch_state=True)
    scripted = torch.jit.script(copy.deepcopy(eager))
    for (a, b), ln in zip(((0, 15), (15, 40)), (None, torch.tensor([25, 0, 10]))):
        assert_bitwise(scripted(x[:, a:b], ln), eager(x[:, a:b], ln), f"chunk {a}:{b}")
        for name, p, q in zip(model.states, model.state_of(scripted), model.state_of(eager)):
            assert_bitwise(p, q, f"{name} after chunk {a}:{b}")
    with pytest.raises(Exception, match=r"batch size 3.*reset_state\(\)"):
        scripted(x[:2])
    with pytest.raises(Exception, match="lengths"):
        scripted(x, torch.tensor([1.0, 2.0, 3.0]))


@pytest.fixture
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@needs_fused_cpu
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_compiled_synaptic_module_with_lengths_and_batch_state_is_bit_identical(_fresh_dynamo, rec):
    """torch.compile(fullgraph=True) of a training step with lengths and batch_state=True: spikes,
    records, state and every gradient are eager's bits, over two chunks. (The LIF module's:
    tests/test_compile_exact.py.)"""
    model = MODELS["synaptic-rec" if rec else "synaptic-ff"]
    eager = model.layer(backend="fused", batch_state=True)
    compiled_layer = copy.deepcopy(eager)
    x = model.input(3, 24)
    lengths = [torch.tensor([12, 0, 5]), torch.tensor([12, 3, 0])]

    def step(layer, x, lengths):
        out, state, rec = layer.evolve(x, record=True, lengths=lengths)
        return out, rec["vmem"], rec["isyn"], rec["irec"]

    compiled = torch.compile(step, fullgraph=True)
    for c, ln in enumerate(lengths):
        xc = x[:, 12 * c:12 * (c + 1)]
        a = step(eager, xc, ln)
        b = compiled(compiled_layer, xc, ln)
        for k, (u, v) in enumerate(zip(a, b)):
            assert_bitwise(v, u, f"chunk {c}: compiled output {k}")
        sum(o.sum() for o in a[:3]).backward()
        sum(o.sum() for o in b[:3]).backward()
        for name, p, q in zip(model.states, model.state_of(compiled_layer), model.state_of(eager)):
            assert_bitwise(p, q, f"chunk {c}: {name}")
    for (name, p), q in zip(eager.named_parameters(), compiled_layer.parameters()):
        assert p.grad.abs().sum() > 0
        assert_bitwise(q.grad, p.grad, f"grad {name}")


@needs_fused_cpu
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_synaptic_opcheck_with_lengths(rec):
    """The fake kernels take lengths: torch.library.opcheck (schema, fake tensor, autograd registration,
    AOT dispatch) of synaptic_forward with lengths, with and without a gradient."""
    case = make_synaptic_case(49, 3, 6, 3, 2, rec=rec)
    lengths = torch.tensor([6, 0, 4])
    for record, grad in ((True, True), (False, False)):
        args = [None if case[k] is None else case[k].clone().requires_grad_(grad)
                for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec")]
        torch.library.opcheck(torch.ops.lif_cuda.synaptic_forward,
                              (*args, None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, record, grad, lengths))
