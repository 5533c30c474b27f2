"""SPEC §8 (issue 15): variable-length sequences (`lengths`) and per-sample state (`batch_state`).

lengths, functional and module, on both backends:
- row b equals that row run alone on its first lengths[b] steps: forward bit for bit, gradients
  within SPEC §3's tolerances (and the fused op's input and v0 gradients bit for bit);
- padding: no spikes, the recorded membrane holds the row's last value (v0 for length 0), zero
  input gradient, nothing added to the parameter gradients; gradients arriving on padding
  positions are ignored (zeroing them changes no bit), and NaN padding input changes nothing;
- the fused backward equals autograd of the reference (which masks), float64 and float32;
- lengths all == T equals no lengths bit for bit, given as a list, an int32 or an int64 tensor.
batch_state=True, on both backends:
- chunks equal one run bit for bit (spikes, recorded membrane, state), with and without lengths
  (then the kept state of row b is its state at its length);
- the gradient is cut between chunks, and a chunk's gradients equal those of a run started from
  the previous chunk's final state;
- another batch size raises a ValueError naming it and reset_state(), before any kernel, state
  untouched; after reset_state() any batch size works;
- state_dict / load_state_dict and TorchScript. (torch.compile: tests/test_compile_exact.py.)
"""
import copy

import pytest
import torch

import lif_cuda
from conftest import DTYPE_IDS, DTYPES, assert_bitwise, assert_rel_close, make_case
from lif_cuda import LIFNeuron

BACKENDS = ["fused", "reference"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
NAMES = ("input", "v0", "tau_mem", "threshold", "bias")
# Lengths of the rows: T, empty, below and above the CUDA kernel's 8-step prefetch chunk, one step.
T = 20
LENGTHS = [T, 0, 7, 1, 13]
B = len(LENGTHS)


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "fused" and not lif_cuda.fused_available("cpu"):
        pytest.skip("fused CPU kernels not built")
    return request.param


def run(backend, case, lengths=None, record=True):
    return lif_cuda.lif_evolve(**case.kwargs(), record=record, backend=backend, lengths=lengths)


def row_alone(case, b, L):
    """Row b's first L steps as a batch of one."""
    v0 = case.v0[b:b + 1] if case.v0.dim() == 2 else case.v0
    noise = None if case.noise is None else case.noise[b:b + 1, :L]
    return case.replace(input=case.input[b:b + 1, :L], v0=v0, noise=noise)


def upstream(shape, dtype, seed=5):
    g = torch.Generator().manual_seed(seed)
    b, t, n = shape
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in ((b, t, n), (b, t, n), (b, n))]


def grads(backend, case, ups, lengths=None):
    """Outputs and the gradients of sum(out * up) w.r.t. input, v0, tau_mem, threshold, bias."""
    case, leaves = case.leaves()
    outs = run(backend, case, lengths)
    return outs, torch.autograd.grad(outs, leaves, ups)


VARIANTS = {
    "neuron": dict(),
    "scalar-params-shared-v0": dict(params="scalar", v0_shape="neuron"),
    "noise-tensor": dict(noise=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_rows_equal_rows_run_alone(backend, dtype, variant):
    case = make_case(41, B, T, 9, dtype, **VARIANTS[variant])
    s, w, vf = run(backend, case, torch.tensor(LENGTHS))
    assert (s > 0).any() and (s == 0).any()
    for b, L in enumerate(LENGTHS):
        rs, rw, rvf = run(backend, row_alone(case, b, L))
        assert_bitwise(s[b:b + 1, :L], rs, f"row {b} (length {L}): spikes")
        assert_bitwise(w[b:b + 1, :L], rw, f"row {b}: recorded membrane")
        assert_bitwise(vf[b:b + 1], rvf, f"row {b}: final state")
        assert_bitwise(s[b, L:], torch.zeros(T - L, 9, dtype=dtype), f"row {b}: padding spikes")
        assert_bitwise(w[b, L:], vf[b].expand(T - L, 9), f"row {b}: padding membrane holds the last value")
    v0_row1 = case.v0[1] if case.v0.dim() == 2 else case.v0
    assert_bitwise(vf[1], v0_row1, "a row of length 0 keeps v0")


@pytest.mark.parametrize("surrogate", [lif_cuda.StepPWL, lif_cuda.PeriodicExponential],
                         ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_gradients_equal_rows_run_alone(backend, dtype, surrogate):
    case = make_case(42, B, T, 9, dtype).replace()
    ups = upstream((B, T, 9), dtype)
    lengths = torch.tensor(LENGTHS)
    kw = dict(spike_generation_fn=surrogate)

    def grads_of(c, u, ln=None):
        c, leaves = c.leaves()
        outs = lif_cuda.lif_evolve(**c.kwargs(), record=True, backend=backend, lengths=ln, **kw)
        return torch.autograd.grad(outs, leaves, u)

    got = grads_of(case, ups, lengths)
    param_sums = [torch.zeros_like(g) for g in got[2:]]
    for b, L in enumerate(LENGTHS):
        assert_bitwise(got[0][b, L:], torch.zeros(T - L, 9, dtype=dtype), f"row {b}: padding input gradient")
        if L == 0:  # the final state is v0; nothing else is touched
            assert_bitwise(got[1][b], ups[2][b], "row of length 0: grad v0 = grad on the final state")
            continue
        alone = grads_of(row_alone(case, b, L), [ups[0][b:b + 1, :L], ups[1][b:b + 1, :L], ups[2][b:b + 1]])
        assert_rel_close(got[0][b:b + 1, :L], alone[0], TOL[dtype], f"row {b}: grad input")
        assert_rel_close(got[1][b:b + 1], alone[1], TOL[dtype], f"row {b}: grad v0")
        if backend == "fused":  # the same operations in the same order
            assert_bitwise(got[0][b:b + 1, :L], alone[0], f"row {b}: grad input")
            assert_bitwise(got[1][b:b + 1], alone[1], f"row {b}: grad v0")
        for acc, g in zip(param_sums, alone[2:]):
            acc += g
    for name, g, want in zip(NAMES[2:], got[2:], param_sums):
        assert want.abs().sum() > 0, f"grad {name} is zero: the case does not test it"
        assert_rel_close(g, want, TOL[dtype], f"grad {name}: the sum of the rows run alone")


def test_padding_gradients_and_padding_input_are_ignored(backend):
    """Gradients on padding positions (spikes, recorded membrane) and NaN padding input change no
    bit of any output or gradient."""
    dtype = torch.float64
    case = make_case(43, B, T, 9, dtype)
    lengths = torch.tensor(LENGTHS)
    pad = torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)  # (B, T) True on padding
    pad3 = pad.unsqueeze(-1).expand(B, T, 9)
    ups = upstream((B, T, 9), dtype)
    clean = [ups[0].masked_fill(pad3, 0.0), ups[1].masked_fill(pad3, 0.0), ups[2]]
    nan_pad = case.replace(input=case.input.masked_fill(pad3, float("nan")))
    outs, want = grads(backend, case, clean, lengths)
    for name, c, u in (("padding gradients", case, ups), ("NaN padding input", nan_pad, clean)):
        o, g = grads(backend, c, u, lengths)
        for what, a, b in zip(("spikes", "vmem", "final state"), o, outs):
            assert_bitwise(a, b, f"{name}: {what}")
        for what, a, b in zip(NAMES, g, want):
            assert_bitwise(a, b, f"{name}: grad {what}")
    assert want[0][pad3].abs().sum() == 0 and want[0][~pad3].abs().sum() > 0


@pytest.mark.parametrize("surrogate", [lif_cuda.StepPWL, lif_cuda.PeriodicExponential],
                         ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("variant", ["neuron", "scalar-params-shared-v0"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fused_gradients_match_reference_autograd(dtype, variant, surrogate):
    """SPEC §3 with lengths: the fused backward against autograd of the masked reference, with
    gradients on spikes, recorded membrane and final state (float64 <= 1e-10, float32 <= 1e-5)."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("fused CPU kernels not built")
    case = make_case(44, B, T, 9, dtype, **VARIANTS[variant]).replace()
    ups = upstream((B, T, 9), dtype)
    kw = dict(spike_generation_fn=surrogate, record=True, lengths=torch.tensor(LENGTHS))
    results = []
    for backend in BACKENDS:
        c, leaves = case.leaves()
        outs = lif_cuda.lif_evolve(**c.kwargs(), backend=backend, **kw)
        results.append((outs, torch.autograd.grad(outs, leaves, ups)))
    (f_outs, f_grads), (r_outs, r_grads) = results
    for what, a, b in zip(("spikes", "vmem", "final state"), f_outs, r_outs):
        assert_bitwise(a, b, what)
    for name, fg, rg in zip(NAMES, f_grads, r_grads):
        assert rg.abs().sum() > 0, f"grad {name} is zero: the case does not test it"
        assert_rel_close(fg, rg, TOL[dtype], f"grad {name}")


@pytest.mark.parametrize("form", ["list", "int32", "int64"])
def test_lengths_all_T_equal_no_lengths(backend, form):
    case = make_case(45, 3, T, 6, torch.float32)
    lengths = {"list": [T] * 3, "int32": torch.full((3,), T, dtype=torch.int32),
               "int64": torch.full((3,), T)}[form]
    ups = upstream((3, T, 6), torch.float32)
    want_outs, want = grads(backend, case, ups)
    got_outs, got = grads(backend, case, ups, lengths)
    for what, a, b in zip(("spikes", "vmem", "final state"), got_outs, want_outs):
        assert_bitwise(a, b, what)
    for name, a, b in zip(NAMES, got, want):
        assert_bitwise(a, b, f"grad {name}")


def test_all_lengths_zero(backend):
    case = make_case(46, 3, T, 6, torch.float64)
    ups = upstream((3, T, 6), torch.float64)
    (s, w, vf), g = grads(backend, case, ups, [0, 0, 0])
    assert not s.any()
    assert_bitwise(w, case.v0.unsqueeze(1).expand(3, T, 6), "membrane holds v0")
    assert_bitwise(vf, case.v0, "final state is v0")
    assert_bitwise(g[1], ups[2], "grad v0 = grad on the final state")
    for name, t in zip(("input", "tau_mem", "threshold", "bias"), (g[0], g[2], g[3], g[4])):
        assert not t.any(), f"grad {name} must be zero"


def test_module_lengths(backend):
    """forward/evolve take lengths as lif_evolve does; with the default batch_state=False the state
    kept is row 0's at its length."""
    x = 0.5 + torch.randn(3, T, 6, generator=torch.Generator().manual_seed(7))
    lengths = [9, T, 0]
    m = LIFNeuron(6, tau_mem=torch.linspace(0.01, 0.04, 6), backend=backend)
    spikes, state, rec = m.evolve(x, record=True, lengths=lengths)
    s, w, vf = lif_cuda.lif_evolve(x, torch.zeros(6), m.tau_mem, m.threshold, m.bias, m.dt, record=True,
                                   backend=backend, lengths=torch.tensor(lengths))
    assert_bitwise(spikes, s.detach(), "spikes")
    assert_bitwise(rec["vmem"], w.detach(), "recorded membrane")
    assert_bitwise(state["vmem"], vf[0].detach(), "state: row 0 at its length")
    assert_bitwise(m.vmem, w[0, lengths[0] - 1].detach(), "state: row 0 at its length")
    m.reset_state()
    assert_bitwise(m(x, lengths), s.detach(), "forward")


# ------------------------------------------------------------------------------ batch_state


def _module(backend, batch_state=True, dtype=torch.float32):
    return LIFNeuron(6, tau_mem=torch.linspace(0.01, 0.04, 6), threshold=torch.linspace(0.6, 1.2, 6), bias=0.02,
                     backend=backend, batch_state=batch_state).to(dtype)


def _long_input(dtype=torch.float32, B=3, T=60):
    return (0.5 + torch.randn(B, T, 6, generator=torch.Generator().manual_seed(8), dtype=torch.float64)).to(dtype)


CHUNKS = [(0, 17), (17, 40), (40, 60)]  # uneven, one of them not a multiple of 8


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_chunks_equal_one_run(backend, dtype, with_lengths):
    x = _long_input(dtype)
    lengths = torch.tensor([60, 25, 40]) if with_lengths else None
    m = _module(backend, dtype=dtype)
    spikes, _, rec = m.evolve(x, record=True, lengths=lengths)
    whole = (spikes, rec["vmem"], m.vmem.clone())
    assert m.vmem.shape == (3, 6)
    m.reset_state()
    parts = []
    for a, b in CHUNKS:
        ln = None if lengths is None else (lengths - a).clamp(0, b - a)
        s, _, r = m.evolve(x[:, a:b], record=True, lengths=ln)
        parts.append((s, r["vmem"]))
    assert_bitwise(torch.cat([p[0] for p in parts], 1), whole[0], "spikes")
    assert_bitwise(torch.cat([p[1] for p in parts], 1), whole[1], "recorded membrane")
    assert_bitwise(m.vmem, whole[2], "state")
    assert (whole[0] > 0).any()
    if with_lengths:  # the kept state of row b is its state at its length
        for b, L in enumerate(lengths.tolist()):
            assert_bitwise(m.vmem[b], whole[1][b, L - 1], f"row {b}: state at its length")


def test_truncated_bptt_cuts_the_gradient(backend):
    """Chunk 2's gradients are those of a run started from chunk 1's final state, detached."""
    x = _long_input()
    m = _module(backend)
    x1, x2 = x[:, :30].clone().requires_grad_(True), x[:, 30:].clone().requires_grad_(True)
    m(x1)
    state = m.vmem.clone()
    assert not m.vmem.requires_grad
    w = torch.randn(3, 30, 6, generator=torch.Generator().manual_seed(2))
    (m(x2) * w).sum().backward()
    assert x1.grad is None, "the gradient must not reach the previous chunk"
    got = [x2.grad] + [p.grad.clone() for p in (m.tau_mem, m.threshold, m.bias)]
    leaves = [x[:, 30:].clone().requires_grad_(True)] + [p.detach().clone().requires_grad_(True)
                                                         for p in (m.tau_mem, m.threshold, m.bias)]
    s, _, _ = lif_cuda.lif_evolve(leaves[0], state, *leaves[1:], m.dt, backend=backend)
    want = torch.autograd.grad((s * w).sum(), leaves)
    for name, a, b in zip(("input", "tau_mem", "threshold", "bias"), got, want):
        assert b.abs().sum() > 0
        assert_bitwise(a, b, f"grad {name}")


@pytest.mark.parametrize("method", ["forward", "evolve"])
def test_another_batch_size_raises_until_reset(backend, method):
    m = _module(backend)
    m(_long_input(B=3, T=10))
    state = m.vmem.clone()
    launches = lif_cuda.ops.kernel_launches()
    call = m if method == "forward" else m.evolve
    with pytest.raises(ValueError, match=r"batch size 3.*batch size 2.*reset_state\(\)"):
        call(_long_input(B=2, T=10))
    with pytest.raises(ValueError, match=r"batch size 1.*reset_state\(\)"):
        call(_long_input(B=1, T=10)[0])  # (T, N) input is batch 1
    assert lif_cuda.ops.kernel_launches() == launches, "a kernel ran before the error"
    assert_bitwise(m.vmem, state, "state untouched")
    m.reset_state()
    assert_bitwise(m.vmem, torch.zeros(6), "reset: an (N,) zero state")
    for b in (2, 5):
        m.reset_state()
        x = _long_input(B=b, T=10)
        s = m(x)
        assert m.vmem.shape == (b, 6)
        assert_bitwise(s, _module(backend, batch_state=False)(x), f"batch {b} from a zero state")


def test_batch_state_false_keeps_the_seeds_behaviour(backend):
    m = _module(backend, batch_state=False)
    x = _long_input(B=3, T=10)
    _, _, rec = m.evolve(x, record=True)
    assert m.vmem.shape == (6,)
    assert_bitwise(m.vmem, rec["vmem"][0, -1], "row 0's final state")
    m(_long_input(B=2, T=10))  # any batch size


def test_batch_state_edge_cases(backend):
    with pytest.raises(TypeError, match="batch_state"):
        LIFNeuron(6, batch_state="yes")
    m = _module(backend)
    m(_long_input(B=3, T=10))
    state = m.vmem.clone()
    m(torch.zeros(3, 0, 6))  # zero steps change nothing
    with pytest.raises(ValueError, match=r"batch size 0"):  # an empty batch is another batch size
        m(torch.zeros(0, 10, 6))
    assert_bitwise(m.vmem, state, "state after empty calls")
    m.batch_state = False
    with pytest.raises(ValueError, match=r"batch_state.*reset_state\(\)"):
        m(_long_input(B=3, T=10))
    m.reset_state()
    m(_long_input(B=2, T=10))
    assert m.vmem.shape == (6,)


def test_batch_state_state_dict(backend):
    """state_dict holds vmem in its current shape; load_state_dict takes an (N,) state, or a (B, N)
    one with batch_state=True (and the module continues from it bit for bit)."""
    x = _long_input(B=3, T=40)
    m = _module(backend)
    m(x[:, :20])
    sd = copy.deepcopy(m.state_dict())
    assert sd["vmem"].shape == (3, 6)
    m2 = _module(backend)
    m2.load_state_dict(sd)
    assert_bitwise(m2.vmem, m.vmem, "loaded state")
    assert_bitwise(m2(x[:, 20:]), m(x[:, 20:]), "continued from the loaded state")
    assert_bitwise(m2.vmem, m.vmem, "state after the next chunk")
    with pytest.raises(RuntimeError, match="batch_state"):
        _module(backend, batch_state=False).load_state_dict(sd)
    fresh = _module(backend).state_dict()
    m2.load_state_dict(fresh)  # an (N,) state into a module holding a (B, N) one
    assert_bitwise(m2.vmem, torch.zeros(6), "(N,) state loaded")
    m2(_long_input(B=4, T=5))
    assert m2.vmem.shape == (4, 6)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_batch_state_and_lengths_under_torchscript():
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("fused CPU kernels not built")
    x = _long_input(B=3, T=40)
    eager = _module("fused")
    scripted = torch.jit.script(copy.deepcopy(eager))
    for (a, b), ln in zip(((0, 15), (15, 40)), (None, torch.tensor([25, 0, 10]))):
        assert_bitwise(scripted(x[:, a:b], ln), eager(x[:, a:b], ln), f"chunk {a}:{b}")
        assert_bitwise(scripted.vmem, eager.vmem, f"state after chunk {a}:{b}")
    with pytest.raises(Exception, match=r"batch size 3.*reset_state\(\)"):
        scripted(x[:2])
    with pytest.raises(Exception, match="lengths"):
        scripted(x, torch.tensor([1.0, 2.0, 3.0]))
