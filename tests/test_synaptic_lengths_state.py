"""SPEC §8 for the synaptic model (§7, issue 15): per-row `lengths` and `batch_state` on the synaptic
op (feed-forward and recurrent), synaptic_evolve and SynapticLIF.

lengths, on both backends:
- feed-forward: row b equals that row run alone on its first lengths[b] steps, forward bit for bit
  (spikes, the records vmem/isyn/irec, the final membrane, currents and last spikes), gradients within
  SPEC §3's tolerances (the fused op's input and initial-state gradients bit for bit);
- recurrent: ATen's product over B rows and over one row may take different GEMM paths, so row b is
  compared with the SAME batch run on x[:, :lengths[b]]: forward bit for bit, its gradients within
  §3's tolerances;
- padding: no spikes, the recorded membrane and currents hold the row's last values (v0, i0 for length
  0), the recorded recurrent current is 0, zero input (and noise) gradient, nothing added to any
  parameter gradient (w_rec's included); gradients arriving on padding positions are ignored and NaN
  padding input changes nothing (no bit of any output or gradient);
- the fused backward equals autograd of the masked reference (float64 1e-10, float32 1e-5);
- lengths all == T equals no lengths bit for bit (list, int32, int64), and all lengths 0.
batch_state=True, on both backends, feed-forward and recurrent:
- chunks equal one run bit for bit (spikes, records, state vmem (B,N), isyn (B,N,S), spikes (B,N)),
  with and without lengths; the gradient is cut between chunks;
- another batch size raises a ValueError naming it and reset_state(), before any kernel, state
  untouched; after reset_state() any batch size works; default False keeps row 0's state;
- state_dict / load_state_dict, TorchScript, and torch.compile (bit for bit, no graph break).
Bad lengths: tests/test_synaptic_bad_input.py. The CUDA thread code: tests/test_synaptic_host.py.
"""
import copy

import pytest
import torch
from test_synaptic import NAMES, make_case

import lif_cuda
from conftest import DTYPE_IDS, DTYPES, assert_bitwise, assert_rel_close
from lif_cuda import PeriodicExponential, StepPWL, SynapticLIF, synaptic_evolve

pytestmark = [
    pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built"),
    pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning"),
]

BACKENDS = ["fused", "reference"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
T = 20
LENGTHS = [T, 0, 7, 1, 13]  # T, empty, a part, one step
B = len(LENGTHS)
N = 5
SEQ = ("spikes", "vmem", "isyn", "irec")  # per-step outputs; the rest is the final state
GRAD_NAMES = ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec", "noise")


def run(backend, case, lengths=None, record=True, **kw):
    c = dict(case)
    args = [c.pop(k) for k in ("input", "v0", "i0", "tau_mem", "tau_syn", "threshold", "bias")]
    return synaptic_evolve(*args, 1e-3, **c, record=record, backend=backend, lengths=lengths, **kw)


def noise_for(case, seed=3):
    Bc, Tc = case["input"].shape[:2]
    N_ = case["i0"].shape[-2]
    g = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(Bc, Tc, N_, generator=g, dtype=torch.float64)).to(case["input"].dtype)


def row_alone(case, b, L):
    """Row b's first L steps as a batch of one (per-row state sliced, a shared state kept)."""
    out = dict(case, input=case["input"][b:b + 1, :L])
    for k, shared_dim in (("v0", 1), ("i0", 2), ("s0", 1)):
        if case[k] is not None and case[k].dim() > shared_dim:
            out[k] = case[k][b:b + 1]
    return out


def initial(case, k, b):
    t = case[k]
    return t[b] if t.dim() == {"v0": 2, "i0": 3, "s0": 2}[k] else t


def check_padding(out, case, b, L):
    """Row b's padding: spikes 0, membrane and currents held at the state after its last step, irec 0."""
    spikes, vmem, isyn, irec, vf, i_f, sf = out
    n, s = isyn.shape[2], isyn.shape[3]
    pad = T - L
    assert_bitwise(spikes[b, L:], torch.zeros(pad, n, dtype=spikes.dtype), f"row {b}: padding spikes")
    assert_bitwise(vmem[b, L:], vf[b].expand(pad, n), f"row {b}: padding membrane holds the last value")
    assert_bitwise(isyn[b, L:], i_f[b].expand(pad, n, s), f"row {b}: padding currents hold the last value")
    assert_bitwise(irec[b, L:], torch.zeros(pad, n, s, dtype=irec.dtype), f"row {b}: padding irec is 0")
    if L == 0:
        for k, got in (("v0", vf[b]), ("i0", i_f[b]), ("s0", sf[b])):
            assert_bitwise(got, initial(case, k, b).to(got.dtype), f"row {b} of length 0 keeps {k}")


def upstream(out, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in out]


def grads(backend, case, ups, lengths=None, noise=None, **kw):
    """Outputs and the gradients of sum(out * up) over spikes, vmem, isyn, irec (recurrent only), the
    final membrane and currents, w.r.t. every input given."""
    rec = case["w_rec"] is not None
    names = [k for k in GRAD_NAMES[:9] if case.get(k) is not None and (rec or k != "s0")]  # s0: recurrent only
    leaves = {k: case[k].detach().clone().requires_grad_(True) for k in names}
    zl = None if noise is None else noise.detach().clone().requires_grad_(True)
    out = run(backend, {**case, **leaves}, lengths, noise=zl, **kw)
    idx = [0, 1, 2, 4, 5] + ([3] if rec else [])
    inputs = [*leaves.values()] + ([zl] if zl is not None else [])
    g = torch.autograd.grad([out[i] for i in idx], inputs, [ups[i] for i in idx], allow_unused=True)
    return out, dict(zip(names + (["noise"] if zl is not None else []), g))


# ------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["rows-S2", "shared-S1", "shared-S3-noise"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_feedforward_rows_equal_rows_run_alone(backend, dtype, variant):
    state, s, noise = variant.split("-")[0], int(variant.split("-")[1][1:]), variant.endswith("noise")
    case = make_case(41, B, T, N, s, dtype, state=state)
    z = noise_for(case) if noise else None
    out = run(backend, case, torch.tensor(LENGTHS), noise=z)
    assert (out[0] > 0).any() and (out[0] == 0).any()
    for b, L in enumerate(LENGTHS):
        alone = run(backend, row_alone(case, b, L), noise=None if z is None else z[b:b + 1, :L])
        for name, o, a in zip(NAMES, out, alone):
            assert_bitwise(o[b:b + 1, :L] if name in SEQ else o[b:b + 1], a, f"row {b} (length {L}): {name}")
        check_padding(out, case, b, L)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("S,state", [(1, "rows"), (2, "shared"), (3, "rows")])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_recurrent_rows_equal_the_batch_run_on_their_length(backend, dtype, S, state):
    case = make_case(42 + S, B, T, N, S, dtype, rec=True, state=state)
    z = noise_for(case)
    out = run(backend, case, torch.tensor(LENGTHS), noise=z)
    assert (out[0] > 0).any() and (out[0] == 0).any()
    assert out[3].abs().sum() > 0, "the recurrent current should not vanish"
    for b, L in enumerate(LENGTHS):
        check_padding(out, case, b, L)
        if L == 0:
            continue
        same_batch = run(backend, dict(case, input=case["input"][:, :L]), noise=z[:, :L])
        for name, o, a in zip(NAMES, out, same_batch):
            assert_bitwise(o[b, :L] if name in SEQ else o[b], a[b], f"row {b} (length {L}): {name}")


# ------------------------------------------------------------------------------ backward


@pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("S,rec,state", [(2, False, "rows"), (1, False, "shared"), (2, True, "rows"),
                                         (3, True, "shared")])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fused_gradients_match_reference_autograd(dtype, S, rec, state, surrogate):
    """SPEC §3/§7 with lengths: the fused backward against autograd of the masked reference, with
    gradients arriving on every output, padding positions included."""
    case = make_case(44 + S, B, T, N, S, dtype, rec=rec, state=state)
    z = noise_for(case)
    lengths = torch.tensor(LENGTHS)
    f_out, f_g = grads("fused", case, upstream(run("fused", case, lengths)), lengths, z, spike_generation_fn=surrogate)
    r_out, r_g = grads("reference", case, upstream(f_out), lengths, z, spike_generation_fn=surrogate)
    for name, a, b in zip(NAMES, f_out, r_out):
        assert_bitwise(a.detach(), b.detach(), name)
    for name, want in r_g.items():
        assert want.abs().sum() > 0, f"grad {name} is zero: the case does not test it"
        assert_rel_close(f_g[name], want, TOL[dtype], f"grad {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_gradients_equal_rows_run_alone(backend, dtype, rec):
    """Row b's input and initial-state gradients are those of the row run alone (feed-forward; the fused
    op: bit for bit) or of the same batch run on its length (recurrent); the parameter gradients are the
    sums over rows alone (feed-forward)."""
    S = 2
    case = make_case(45, B, T, N, S, dtype, rec=rec, state="rows")
    lengths = torch.tensor(LENGTHS)
    ups = upstream(run(backend, case, lengths))
    _, got = grads(backend, case, ups, lengths)
    param_sums = {k: torch.zeros_like(case[k]) for k in ("tau_mem", "tau_syn", "threshold", "bias")}
    for b, L in enumerate(LENGTHS):
        assert_bitwise(got["input"][b, L:], torch.zeros(T - L, N * S, dtype=dtype), f"row {b}: padding grad input")
        if L == 0:  # the final state is the initial state; nothing else is touched
            assert_bitwise(got["v0"][b], ups[4][b], "row of length 0: grad v0 = grad on the final membrane")
            assert_bitwise(got["i0"][b], ups[5][b], "row of length 0: grad i0 = grad on the final currents")
            continue
        if rec:
            c = dict(case, input=case["input"][:, :L])
            sl = [u[:, :L] if i in (0, 1, 2, 3) else u for i, u in enumerate(ups)]
            rows = slice(b, b + 1)
        else:
            c = row_alone(case, b, L)
            sl = [u[b:b + 1, :L] if i in (0, 1, 2, 3) else u[b:b + 1] for i, u in enumerate(ups)]
            rows = slice(0, 1)
        _, alone = grads(backend, c, sl)
        for name, want in (("input", alone["input"][rows]), ("v0", alone["v0"][rows]), ("i0", alone["i0"][rows])):
            g = got[name][b:b + 1, :L] if name == "input" else got[name][b:b + 1]
            assert_rel_close(g, want, TOL[dtype], f"row {b}: grad {name}")
            if backend == "fused" and not rec:  # the same operations in the same order
                assert_bitwise(g, want, f"row {b}: grad {name}")
        if not rec:
            for k in param_sums:
                param_sums[k] += alone[k]
    if not rec:
        for k, want in param_sums.items():
            assert want.abs().sum() > 0, f"grad {k} is zero: the case does not test it"
            assert_rel_close(got[k], want, TOL[dtype], f"grad {k}: the sum of the rows run alone")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_padding_gradients_and_padding_input_are_ignored(backend, rec):
    """Gradients on padding positions (spikes, vmem, isyn, irec) and NaN padding input (and noise)
    change no bit of any output or gradient; the padding's input and noise gradients are 0."""
    dtype, S = torch.float64, 2
    case = make_case(46, B, T, N, S, dtype, rec=rec)
    z = noise_for(case)
    lengths = torch.tensor(LENGTHS)
    pad = torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)  # (B, T): True on padding
    ups = upstream(run(backend, case, lengths))
    clean = [u.masked_fill(pad.reshape(B, T, *([1] * (u.dim() - 2))), 0.0) if i < 4 else u
             for i, u in enumerate(ups)]
    nan_case = dict(case, input=case["input"].masked_fill(pad.unsqueeze(-1), float("nan")))
    nan_z = z.masked_fill(pad.unsqueeze(-1), float("nan"))
    want_out, want = grads(backend, case, clean, lengths, z)
    for what, c, u, zz in (("padding gradients", case, ups, z), ("NaN padding input", nan_case, clean, nan_z)):
        out, g = grads(backend, c, u, lengths, zz)
        for name, a, b in zip(NAMES, out, want_out):
            assert_bitwise(a.detach(), b.detach(), f"{what}: {name}")
        for name in want:
            assert_bitwise(g[name], want[name], f"{what}: grad {name}")
    for name in ("input", "noise"):
        assert not want[name][pad].any() and want[name][~pad].abs().sum() > 0, name
    if rec:
        assert want["w_rec"].abs().sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("form", ["list", "int32", "int64"])
def test_lengths_all_T_equal_no_lengths(backend, rec, form):
    case = make_case(47, 3, T, N, 2, rec=rec)
    lengths = {"list": [T] * 3, "int32": torch.full((3,), T, dtype=torch.int32), "int64": torch.full((3,), T)}[form]
    ups = upstream(run(backend, case))
    want_out, want = grads(backend, case, ups)
    got_out, got = grads(backend, case, ups, lengths)
    for name, a, b in zip(NAMES, got_out, want_out):
        assert_bitwise(a, b, name)
    for name in want:
        assert_bitwise(got[name], want[name], f"grad {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_all_lengths_zero(backend, rec):
    case = make_case(48, 3, T, N, 2, torch.float64, rec=rec)
    ups = upstream(run(backend, case))
    out, g = grads(backend, case, ups, [0, 0, 0])
    for b in range(3):
        check_padding(out, case, b, 0)
    assert_bitwise(g["v0"], ups[4], "grad v0 = grad on the final membrane")
    assert_bitwise(g["i0"], ups[5], "grad i0 = grad on the final currents")
    for name in ("input", "tau_mem", "tau_syn", "threshold", "bias") + (("w_rec", "s0") if rec else ()):
        assert not g[name].any(), f"grad {name} must be zero"


# ------------------------------------------------------------------------------ the module


def make_layer(backend, rec, batch_state=True, S=2, n=N):
    g = torch.Generator().manual_seed(0)
    return SynapticLIF(
        (n * S, n), tau_mem=5e-3 + 30e-3 * torch.rand(n, generator=g),
        tau_syn=2e-3 + 10e-3 * torch.rand(n, S, generator=g), threshold=0.5 + torch.rand(n, generator=g),
        bias=0.05 * torch.randn(n, generator=g), has_rec=rec,
        w_rec=0.4 * torch.randn(n, n * S, generator=g) if rec else None, backend=backend, batch_state=batch_state,
    )


def long_input(Bx=3, Tx=60, S=2, n=N):
    return 0.3 + 0.8 * torch.randn(Bx, Tx, n * S, generator=torch.Generator().manual_seed(8))


def state_of(m):
    return m.vmem.clone(), m.isyn.clone(), m.spikes.clone()


CHUNKS = [(0, 17), (17, 40), (40, 60)]
RECORDS = ("spikes", "vmem", "isyn", "irec")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_chunks_equal_one_run(backend, rec, with_lengths):
    x = long_input()
    lengths = torch.tensor([60, 25, 40]) if with_lengths else None
    m = make_layer(backend, rec)
    _, state, whole = m.evolve(x, record=True, lengths=lengths)
    kept = state_of(m)
    assert [tuple(t.shape) for t in kept] == [(3, N), (3, N, 2), (3, N)]
    assert not any(t.requires_grad for t in kept)
    assert (whole["spikes"] > 0).any() and (whole["spikes"][:, 30:] > 0).any()
    m.reset_state()
    parts = []
    for a, b in CHUNKS:
        ln = None if lengths is None else (lengths - a).clamp(0, b - a)
        parts.append(m.evolve(x[:, a:b], record=True, lengths=ln)[2])
    for k in RECORDS:
        assert_bitwise(torch.cat([p[k] for p in parts], 1), whole[k], k)
    for name, a, b in zip(("vmem", "isyn", "spikes"), state_of(m), kept):
        assert_bitwise(a, b, f"state {name}")
    if with_lengths:  # the state kept for row b is its state at its length
        for b, L in enumerate(lengths.tolist()):
            assert_bitwise(m.vmem[b], whole["vmem"][b, L - 1], f"row {b}: membrane at its length")
            assert_bitwise(m.isyn[b], whole["isyn"][b, L - 1], f"row {b}: currents at its length")
            assert_bitwise(m.spikes[b], whole["spikes"][b, L - 1], f"row {b}: last spikes at its length")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_truncated_bptt_cuts_the_gradient(backend, rec):
    """Chunk 2's gradients are those of a run started from chunk 1's final state, detached."""
    x = long_input()
    m = make_layer(backend, rec)
    x1, x2 = x[:, :30].clone().requires_grad_(True), x[:, 30:].clone().requires_grad_(True)
    m(x1)
    v, i, s = state_of(m)
    w = torch.randn(3, 30, N, generator=torch.Generator().manual_seed(2))
    (m(x2) * w).sum().backward()
    assert x1.grad is None, "the gradient must not reach the previous chunk"
    params = [p for p in (m.tau_mem, m.tau_syn, m.threshold, m.bias, m.w_rec) if p is not None]
    got = [x2.grad] + [p.grad.clone() for p in params]
    leaves = [x[:, 30:].clone().requires_grad_(True)] + [p.detach().clone().requires_grad_(True) for p in params]
    out = synaptic_evolve(leaves[0], v, i, *leaves[1:5], m.dt, w_rec=leaves[5] if rec else None, s0=s,
                          backend=backend)
    want = torch.autograd.grad((out[0] * w).sum(), leaves)
    for k, (a, b) in enumerate(zip(got, want)):
        assert b.abs().sum() > 0
        assert_bitwise(a, b, f"grad {k}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["forward", "evolve"])
def test_another_batch_size_raises_until_reset(backend, method):
    m = make_layer(backend, rec=True)
    m(long_input(3, 10))
    kept = state_of(m)
    launches = lif_cuda.ops.kernel_launches()
    call = m if method == "forward" else m.evolve
    with pytest.raises(ValueError, match=r"batch size 3.*batch size 2.*reset_state\(\)"):
        call(long_input(2, 10))
    with pytest.raises(ValueError, match=r"batch size 1.*reset_state\(\)"):
        call(long_input(1, 10)[0])  # (T, N*S) input is batch 1
    assert lif_cuda.ops.kernel_launches() == launches, "a kernel ran before the error"
    for name, a, b in zip(("vmem", "isyn", "spikes"), state_of(m), kept):
        assert_bitwise(a, b, f"{name} untouched")
    m.reset_state()
    for name, t, shape in (("vmem", m.vmem, (N,)), ("isyn", m.isyn, (N, 2)), ("spikes", m.spikes, (N,))):
        assert_bitwise(t, torch.zeros(shape), f"reset: a zero {name} row")
    for b in (2, 5):
        m.reset_state()
        x = long_input(b, 10)
        s = m(x)
        assert m.vmem.shape == (b, N) and m.isyn.shape == (b, N, 2) and m.spikes.shape == (b, N)
        assert_bitwise(s, make_layer(backend, rec=True, batch_state=False)(x), f"batch {b} from a zero state")


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_state_false_keeps_the_seeds_behaviour(backend):
    m = make_layer(backend, rec=True, batch_state=False)
    assert "batch_state=False" in repr(m)
    x = long_input(3, 20)
    lengths = [9, 20, 0]
    spikes, state, rec = m.evolve(x, record=True, lengths=lengths)
    assert m.vmem.shape == (N,) and m.isyn.shape == (N, 2) and m.spikes.shape == (N,)
    assert_bitwise(m.vmem, rec["vmem"][0, 8], "row 0's membrane at its length")
    assert_bitwise(m.isyn, rec["isyn"][0, 8], "row 0's currents at its length")
    assert_bitwise(m.spikes, spikes[0, 8], "row 0's last spikes at its length")
    out = synaptic_evolve(x, torch.zeros(N), torch.zeros(N, 2), m.tau_mem, m.tau_syn, m.threshold, m.bias, m.dt,
                          w_rec=m.w_rec, s0=torch.zeros(N), backend=backend, lengths=torch.tensor(lengths))
    assert_bitwise(spikes, out[0].detach(), "module spikes = synaptic_evolve's")
    m(long_input(2, 10))  # any batch size
    with pytest.raises(TypeError, match="batch_state"):
        SynapticLIF(4, batch_state=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_state_state_dict(backend):
    x = long_input(3, 40)
    m = make_layer(backend, rec=True)
    m(x[:, :20])
    sd = copy.deepcopy(m.state_dict())
    assert sd["vmem"].shape == (3, N) and sd["isyn"].shape == (3, N, 2) and sd["spikes"].shape == (3, N)
    m2 = make_layer(backend, rec=True)
    m2.load_state_dict(sd)
    assert_bitwise(m2(x[:, 20:]), m(x[:, 20:]), "continued from the loaded state")
    for name, a, b in zip(("vmem", "isyn", "spikes"), state_of(m2), state_of(m)):
        assert_bitwise(a, b, f"{name} after the next chunk")
    with pytest.raises(RuntimeError, match="batch_state"):
        make_layer(backend, rec=True, batch_state=False).load_state_dict(sd)
    m2.load_state_dict(make_layer(backend, rec=True).state_dict())  # one row into a per-row module
    assert m2.vmem.shape == (N,) and m2.isyn.shape == (N, 2) and m2.spikes.shape == (N,)
    m2(long_input(4, 5))
    assert m2.vmem.shape == (4, N)


@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_batch_state_and_lengths_under_torchscript(rec):
    x = long_input(3, 40)
    eager = make_layer("fused", rec)
    scripted = torch.jit.script(copy.deepcopy(eager))
    for (a, b), ln in zip(((0, 15), (15, 40)), (None, torch.tensor([25, 0, 10]))):
        with torch.no_grad():
            assert_bitwise(scripted(x[:, a:b], ln), eager(x[:, a:b], ln), f"chunk {a}:{b}")
        for name, p, q in zip(("vmem", "isyn", "spikes"), state_of(scripted), state_of(eager)):
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


@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_compiled_module_with_lengths_and_batch_state_is_bit_identical(_fresh_dynamo, rec):
    """torch.compile(fullgraph=True) of a training step with lengths and batch_state=True: spikes,
    records, state and every gradient are eager's bits, over two chunks."""
    eager = make_layer("fused", rec)
    compiled_layer = copy.deepcopy(eager)
    x = long_input(3, 24)
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
        for name, p, q in zip(("vmem", "isyn", "spikes"), state_of(compiled_layer), state_of(eager)):
            assert_bitwise(p, q, f"chunk {c}: {name}")
    for (name, p), q in zip(eager.named_parameters(), compiled_layer.parameters()):
        assert p.grad.abs().sum() > 0
        assert_bitwise(q.grad, p.grad, f"grad {name}")


@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_opcheck_with_lengths(rec):
    """The fake kernels take lengths: torch.library.opcheck (schema, fake tensor, autograd registration,
    AOT dispatch) of synaptic_forward with lengths, with and without a gradient."""
    case = make_case(49, 3, 6, 3, 2, rec=rec)
    lengths = torch.tensor([6, 0, 4])
    for record, grad in ((True, True), (False, False)):
        args = [None if case[k] is None else case[k].clone().requires_grad_(grad)
                for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec")]
        torch.library.opcheck(torch.ops.lif_cuda.synaptic_forward,
                              (*args, None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, record, grad, lengths))
