"""The synaptic LIF model (SPEC §7): the fused op against the reference, its backward, the native module.

- Forward: the fused CPU op (`lif_cuda::synaptic_forward`) gives the reference's bits (spikes, the
  records vmem/isyn/irec, the final state), feed-forward and recurrent, for every parameter shape.
- The synapse sum: torch.sum's order (SPEC §7 "establish it by test"), pinned for many S.
- Backward: the hand-written reverse loop against autograd of the reference in float64 (every
  input: x, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise).
- The module `SynapticLIF`: Rockpool's shape rule, state, records, backends, noise modes, half
  precision, torch.compile without graph breaks (bit for bit), TorchScript, opcheck.
Bad input lives in tests/test_synaptic_bad_input.py; Rockpool parity in tests/test_synaptic_rockpool.py.
"""
import copy
import math

import pytest
import torch

import lif_cuda
from conftest import assert_bitwise, rel_err
from lif_cuda import PeriodicExponential, StepPWL, SynapticLIF, synaptic_evolve, synaptic_evolve_reference

pytestmark = [
    pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="fused CPU kernels not built"),
    pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning"),  # PyTorch 2.13 says so
]

NAMES = ("spikes", "vmem", "isyn", "irec", "v_final", "i_final", "s_final")


def make_case(seed, B, T, N, S, dtype=torch.float32, *, tau_syn="full", params="neuron", rec=False, state="rows",
              input_mean=0.4):
    """A random case: tau_syn (N,S) "full", (1,S) "row" or () "scalar"; tau_mem, threshold, bias (N,)
    "neuron" or () "scalar"; state "rows" ((B,N), (B,N,S), (B,N)) or "shared" ((N,), (N,S), (N,))."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    n = lambda *s: torch.randn(s, generator=g, dtype=torch.float64)  # noqa: E731
    P = (N,) if params == "neuron" else ()
    rows = (B,) if state == "rows" else ()
    case = dict(
        input=input_mean + 0.8 * n(B, T, N * S),
        v0=0.5 * n(*rows, N),
        i0=0.3 * n(*rows, N, S),
        s0=(r(*rows, N) < 0.3).double(),
        tau_mem=5e-3 + 45e-3 * r(*P),
        tau_syn=2e-3 + 20e-3 * r(*{"full": (N, S), "row": (1, S), "scalar": ()}[tau_syn]),
        threshold=0.3 + 1.2 * r(*P),
        bias=0.1 * n(*P),
        w_rec=0.3 * n(N, N * S) if rec else None,
    )
    return {k: None if v is None else v.to(dtype) for k, v in case.items()}


def fused(case, record=True, **kw):
    c = dict(case)
    args = [c.pop(k) for k in ("input", "v0", "i0", "tau_mem", "tau_syn", "threshold", "bias")]
    return synaptic_evolve(*args, 1e-3, **c, record=record, backend="fused", **kw)


def reference(case, record=True, **kw):
    c = dict(case)
    args = [c.pop(k) for k in ("input", "v0", "i0", "tau_mem", "tau_syn", "threshold", "bias")]
    return synaptic_evolve_reference(*args, 1e-3, **c, record=record, **kw)


def assert_same(got, want, rec=True, record=True):
    for name, g, w in zip(NAMES, got, want):
        if not record and name in ("vmem", "isyn", "irec"):
            assert g is None and w is None, name
            continue
        assert_bitwise(g, w, name)


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S", [1, 2, 3, 8])
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("shapes", ["full-neuron-rows", "row-scalar-shared", "scalar-neuron-shared"])
def test_forward_equals_reference(dtype, S, rec, shapes):
    tau_syn, params, state = shapes.split("-")
    B, T, N = 3, 23, 7
    case = make_case(S + 10 * rec, B, T, N, S, dtype, tau_syn=tau_syn, params=params, rec=rec, state=state)
    got, want = fused(case), reference(case)
    assert_same(got, want)
    assert (got[0] > 0).any() and (got[0] == 0).any(), "the case should spike, and not everywhere"
    if not rec:
        assert torch.equal(got[3], torch.zeros_like(got[3])), "irec is zeros without recurrent weights"
    # Without record: the same spikes and state from the variant that records nothing.
    assert_same(fused(case, record=False), reference(case, record=False), record=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_synaptic_sum_order_is_torch_sum(dtype):
    """SPEC §7: sum_k i[k] in the order torch.sum(dim=-1) adds. Established by experiment and from
    ATen's SumKernel.cpp (lif_core.h cpu_torch_sum): rows shorter than 32 bytes of lanes are summed as
    4 interleaved running sums, longer ones over 8-float (4-double) vectors, with a cascade of partial
    sums from 64 vectors on. The membrane record pins it: u = w*alpha + sum + bias, bit for bit, for S
    across every regime; the currents are spread over 8 decades so that any other order shows."""
    B, T, N = 2, 3, 3
    for S in list(range(1, 41)) + [63, 64, 65, 127, 129, 255, 511, 512, 513, 600, 2100]:
        g = torch.Generator().manual_seed(S)
        case = make_case(S, B, T, N, S, dtype)
        case["input"] = (torch.randn(B, T, N * S, generator=g, dtype=torch.float64)
                         * torch.logspace(-4, 4, N * S, dtype=torch.float64)).to(dtype)
        case["threshold"] = torch.full((N,), 1e30, dtype=dtype)  # no spikes: the membrane is the sum's record
        got, want = fused(case), reference(case)
        assert_bitwise(got[1], want[1], f"membrane, S={S}")
    # The test can tell orders apart: a plain left-to-right sum differs from torch.sum here.
    x = torch.randn(64, 7, dtype=dtype) * torch.logspace(-4, 4, 7, dtype=dtype)
    seq = x[:, 0]
    for k in range(1, 7):
        seq = seq + x[:, k]
    assert not torch.equal(seq, x.sum(-1))


def test_max_spikes_clamp_and_multi_spikes():
    case = make_case(4, 2, 15, 5, 2, input_mean=3.0, rec=True)
    for M in (1.0, 3.0):
        got, want = fused(case, max_spikes_per_dt=M), reference(case, max_spikes_per_dt=M)
        assert_same(got, want)
        assert got[0].max() == M


@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_noise_tensor_and_in_kernel_noise(rec):
    B, T, N, S = 2, 13, 6, 2
    case = make_case(5, B, T, N, S, rec=rec)
    z = 0.3 * torch.randn(B, T, N, generator=torch.Generator().manual_seed(1))
    assert_same(fused(case, noise=z), reference(case, noise=z))
    # In-kernel noise: the fused and reference backends draw the same stream under one seed.
    outs = []
    for backend in ("fused", "reference"):
        torch.manual_seed(3)
        c = dict(case)
        args = [c.pop(k) for k in ("input", "v0", "i0", "tau_mem", "tau_syn", "threshold", "bias")]
        outs.append(synaptic_evolve(*args, 1e-3, **c, record=True, backend=backend, noise_std=0.5))
    assert_same(*outs)
    assert not torch.equal(outs[0][1], fused(case)[1]), "the noise changed the membrane"


def test_empty_shapes_and_zero_steps():
    for B, T, N in ((0, 4, 3), (2, 0, 3), (2, 4, 0)):
        case = make_case(1, max(B, 1), max(T, 1), max(N, 1), 2, state="shared")
        case["input"] = torch.zeros(B, T, N * 2)
        case = {k: (v[..., :N] if k in ("v0", "s0", "tau_mem", "threshold", "bias") else v) for k, v in case.items()}
        case["i0"], case["tau_syn"], case["w_rec"] = case["i0"][:N], case["tau_syn"][:N], torch.zeros(N, N * 2)
        before = lif_cuda.ops.kernel_launches()
        got = fused(case)
        assert lif_cuda.ops.kernel_launches() == before, "nothing to compute: no kernel"
        assert got[0].shape == (B, T, N) and got[2].shape == (B, T, N, 2)
        if B and N:  # T == 0: the final state is the initial one
            assert torch.equal(got[4], case["v0"].expand(B, N)) and torch.equal(got[5], case["i0"].expand(B, N, 2))
            assert torch.equal(got[6], case["s0"].expand(B, N))


def test_strided_input_gives_the_contiguous_result():
    case = make_case(6, 3, 11, 4, 2, rec=True)
    wide = torch.randn(3, 11, 16)
    wide[..., ::2] = case["input"]
    strided = dict(case, input=wide[..., ::2])
    assert not strided["input"].is_contiguous()
    assert_same(fused(strided), fused(case))


@pytest.mark.parametrize("io", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_precision_input(io):
    """float16/bfloat16 input: state and arithmetic in float32 (the reference's float32 run on the
    rounded input), spikes in the input's dtype."""
    case = make_case(7, 2, 17, 5, 2, rec=True)
    case["input"] = case["input"].to(io)
    got, want = fused(case), reference(case)
    assert got[0].dtype == io and got[4].dtype == torch.float32
    assert_same(got, want)


def test_nan_input_propagates():
    case = make_case(8, 2, 9, 3, 2)
    case["input"][0, 4, 1] = math.nan
    got, want = fused(case), reference(case)
    assert torch.isnan(got[1][0, 4:, 0]).all(), "NaN stays in the membrane it entered"
    assert torch.equal(got[0][1], want[0][1]), "and nowhere else"


# ---------------------------------------------------------------- backward

GRAD_NAMES = ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec", "noise")


def _grads(run, case, z, ups, surrogate, rec):
    names = [k for k in GRAD_NAMES[:9] if case.get(k) is not None]
    leaves = {k: case[k].detach().clone().requires_grad_(True) for k in names}
    zl = z.detach().clone().requires_grad_(True)
    out = run({**case, **leaves}, noise=zl, spike_generation_fn=surrogate)
    outs = [out[0], out[1], out[2], out[4], out[5]] + ([out[3]] if rec else [])
    grads = torch.autograd.grad(outs, [*leaves.values(), zl], ups[: len(outs)], allow_unused=True)
    return dict(zip(names + ["noise"], grads))


@pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("S,rec,shapes", [(1, False, "full-neuron-rows"), (2, True, "full-neuron-rows"),
                                          (3, True, "row-scalar-shared"), (2, False, "scalar-neuron-shared"),
                                          (5, True, "full-scalar-rows")])
def test_backward_equals_reference_autograd_float64(surrogate, S, rec, shapes):
    """SPEC §7: the hand-written backward through the synapses, the reset and the recurrence (dL/dw_rec
    one product over all steps) against autograd of the reference, in float64."""
    tau_syn, params, state = shapes.split("-")
    B, T, N = 3, 19, 5
    case = make_case(20 + S, B, T, N, S, torch.float64, tau_syn=tau_syn, params=params, rec=rec, state=state)
    g = torch.Generator().manual_seed(5)
    rn = lambda *s: torch.randn(s, generator=g, dtype=torch.float64)  # noqa: E731
    z = 0.1 * rn(B, T, N)
    ups = [rn(B, T, N), rn(B, T, N), rn(B, T, N, S), rn(B, N), rn(B, N, S), rn(B, T, N, S)]
    got = _grads(fused, case, z, ups, surrogate, rec)
    want = _grads(reference, case, z, ups, surrogate, rec)
    for name in got:
        if name == "s0" and not rec:
            assert want[name] is None and torch.equal(got[name], torch.zeros_like(case["s0"]))
            continue
        assert got[name].shape == want[name].shape, name
        assert want[name].abs().sum() > 0, f"{name}: no gradient reached it"
        err = rel_err(got[name], want[name])
        assert err <= 1e-10, f"grad {name}: relative error {err:.2e}"


@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_backward_float32_within_tolerance(rec):
    B, T, N, S = 4, 30, 8, 2
    case = make_case(31, B, T, N, S, rec=rec)
    g = torch.Generator().manual_seed(6)
    rn = lambda *s: torch.randn(s, generator=g)  # noqa: E731
    z = 0.1 * rn(B, T, N)
    ups = [rn(B, T, N), rn(B, T, N), rn(B, T, N, S), rn(B, N), rn(B, N, S), rn(B, T, N, S)]
    got = _grads(fused, case, z, ups, StepPWL, rec)
    want = _grads(reference, case, z, ups, StepPWL, rec)
    for name in got:
        if name == "s0" and not rec:
            continue
        assert rel_err(got[name], want[name]) <= 1e-5, name


def test_gradient_flows_only_where_asked_and_double_backward_is_refused():
    case = make_case(9, 2, 7, 3, 2, rec=True)
    x = case["input"].clone().requires_grad_(True)
    out = fused(dict(case, input=x))
    (g,) = torch.autograd.grad(out[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        g.sum().backward()


# ---------------------------------------------------------------- the module


def make_layer(S=2, N=6, rec=True, **kw):
    g = torch.Generator().manual_seed(0)
    return SynapticLIF(
        (N * S, N), tau_mem=5e-3 + 30e-3 * torch.rand(N, generator=g),
        tau_syn=2e-3 + 10e-3 * torch.rand(N, S, generator=g), threshold=0.5 + torch.rand(N, generator=g),
        bias=0.05 * torch.randn(N, generator=g), has_rec=rec,
        w_rec=0.4 * torch.randn(N, N * S, generator=g) if rec else None, **kw,
    )


def test_module_shapes_parameters_state_and_records():
    layer = make_layer(S=3, N=4)
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


@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_module_backends_agree_over_calls_and_train(rec):
    fused_layer = make_layer(rec=rec)
    ref_layer = make_layer(rec=rec, backend="reference")
    x = 0.6 + torch.rand(3, 25, 12, generator=torch.Generator().manual_seed(2))
    for _ in range(2):  # the second call starts from the state the first one left
        a, sa, ra = fused_layer.evolve(x, record=True)
        b, sb, rb = ref_layer.evolve(x, record=True)
        assert torch.equal(a, b)
        for k in ra:
            assert_bitwise(ra[k], rb[k], k)
        for k in sa:
            assert_bitwise(sa[k], sb[k], k)
    for layer in (fused_layer, ref_layer):
        layer.reset_state()
        layer(x).sum().backward()
    for (name, p), q in zip(fused_layer.named_parameters(), ref_layer.parameters()):
        assert rel_err(p.grad, q.grad) <= 1e-5, name


def test_module_noise_modes():
    layer = make_layer(noise_std=0.3)
    x = 0.5 + torch.rand(2, 15, 12)
    torch.manual_seed(1)
    a = layer(x)
    layer.reset_state()
    torch.manual_seed(1)
    assert torch.equal(layer(x), a), "in-kernel noise: reproducible under one seed"
    ref = make_layer(noise_std=0.3, backend="reference")
    torch.manual_seed(1)
    assert torch.equal(ref(x), a), "the reference backend draws the kernel's stream"
    torch_noise = make_layer(noise_std=0.3, noise="torch")
    torch_ref = make_layer(noise_std=0.3, noise="torch", backend="reference")
    torch.manual_seed(2)
    b = torch_noise(x)
    torch.manual_seed(2)
    assert torch.equal(torch_ref(x), b)


def test_module_half_precision_io():
    layer = make_layer().to(torch.bfloat16)
    assert layer.tau_mem.dtype == torch.float32 and layer.isyn.dtype == torch.float32
    x = (0.5 + torch.rand(2, 10, 12)).to(torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    ref = make_layer(backend="reference")
    assert torch.equal(out, ref(x.float()).to(torch.bfloat16))


def test_fallback_without_the_fused_surrogate_is_the_reference():
    class MySpike(StepPWL):
        pass

    layer = make_layer(spike_generation_fn=MySpike)
    with pytest.warns(RuntimeWarning, match="no fused kernel"):
        out = layer(0.5 + torch.rand(1, 5, 12))
    assert out.shape == (1, 5, 6)
    with pytest.raises(ValueError, match="no fused kernel"):
        make_layer(spike_generation_fn=MySpike, backend="fused")(torch.rand(1, 5, 12))


def test_opcheck():
    case = make_case(11, 2, 5, 3, 2, rec=True)
    for record, grad in ((True, True), (False, False)):
        args = [case[k].clone().requires_grad_(grad) for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn",
                                                                "threshold", "bias", "w_rec")]
        torch.library.opcheck(torch.ops.lif_cuda.synaptic_forward,
                              (*args, None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, record, grad))


@pytest.fixture
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_module_is_bit_identical_and_has_no_graph_break(_fresh_dynamo):
    """torch.compile(fullgraph=True) of a training step: the op is one opaque call, so spikes, state
    and every gradient are eager's bits."""
    eager = make_layer()
    compiled_layer = copy.deepcopy(eager)
    x = 0.6 + torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(3))

    def step(layer, x):
        out, state, rec = layer.evolve(x, record=True)
        return out, rec["vmem"], rec["isyn"]

    compiled = torch.compile(step, fullgraph=True)
    for _ in range(2):
        a = step(eager, x)
        b = compiled(compiled_layer, x)
        for u, v in zip(a, b):
            assert_bitwise(v, u, "compiled output")
        sum(o.sum() for o in a).backward()
        sum(o.sum() for o in b).backward()
    for (name, p), q in zip(eager.named_parameters(), compiled_layer.parameters()):
        assert_bitwise(q.grad, p.grad, f"grad {name}")
    assert_bitwise(compiled_layer.vmem, eager.vmem, "state")


@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_torchscript_inference_equals_eager(rec):
    eager = make_layer(rec=rec)
    scripted = torch.jit.script(copy.deepcopy(eager))
    g = torch.Generator().manual_seed(4)
    for shape in ((2, 20, 12), (15, 12)):
        x = 0.5 + torch.rand(shape, generator=g)
        with torch.no_grad():
            assert torch.equal(scripted(x), eager(x))
        assert torch.equal(scripted.vmem, eager.vmem) and torch.equal(scripted.isyn, eager.isyn)
        assert torch.equal(scripted.spikes, eager.spikes)
