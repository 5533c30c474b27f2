"""The fused ops on CUDA: the same bits as the reference and as the CPU kernel. The LIF op first,
then the synaptic op (SPEC §7: its own section below); the per-sample state for every model.

- Forward: spikes, recorded membrane and final state `torch.equal` to the pure-PyTorch reference run
  on the same CUDA device (float32 and float64), and to the fused CPU op (every I/O dtype, every
  noise source: the in-kernel Philox noise is the same on both devices) on every neuron whose
  alpha = torch.exp(-dt/tau) is the same on both devices: each device's exp is its own (MKL's on
  the CPU, CUDA's on the GPU), and neither is correctly rounded, so the two can differ in the last
  bit for some tau. The noise stream itself is compared on its own, through alpha = 0.
- Backward: gradients against the reference's autograd (float64 <= 1e-10, float32 <= 1e-5
  relative), and against the CPU kernel (same operations in the same order: equal bits for
  StepPWL on the neurons whose alpha agrees; PeriodicExponential's exp may differ by an ulp).
- In steady state a training step makes no host sync (torch.cuda.set_sync_debug_mode("error")).
- In-kernel noise under CUDA graphs (torch.cuda.graph, torch.compile "reduce-overhead"): fresh
  noise per replay, reproducible under torch.manual_seed, the documented stream.
- `torch.library.opcheck` on CUDA tensors, `torch.compile(fullgraph=True)` on CUDA, the module on
  CUDA (`.cuda()`, `.to("cuda")`, record buffers and state on the device, backend="auto" picks the
  CUDA kernel), non-contiguous inputs, the current stream, empty shapes, large N and B*N not a
  multiple of the block size, and (where the card has the memory) B*T*N beyond 2^31.

Skipped as a whole without a GPU. Where there is a GPU but the extension has no CUDA kernels,
`test_cuda_kernels_are_built` fails (and the rest skip) — build with LIF_FORCE_CUDA=1.
"""
import copy
import math
import warnings

import pytest
import torch

import lif_cuda
from conftest import SYNAPTIC_OUTPUTS, assert_bitwise, make_adaptive_case, make_case, rel_err, run_synaptic
from lif_cuda import synaptic_evolve
from lif_cuda.noise import kernel_noise
from lif_cuda.reference import PeriodicExponential, StepPWL, lif_evolve_reference, synaptic_evolve_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")
GRAD_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["f32", "f64"]
SURROGATES = {"StepPWL": StepPWL, "PeriodicExponential": PeriodicExponential}
BLOCK = 128  # threads per block in csrc/cuda/launch.h


def _fused_cuda():
    return torch.cuda.is_available() and lif_cuda.fused_available("cuda")


needs_kernels = pytest.mark.skipif(
    not _fused_cuda(),
    reason="no CUDA device" if not torch.cuda.is_available() else "the extension has no CUDA kernels",
)


def on(case, device):
    """The case with every tensor moved to `device`."""
    moved = {}
    for name in ("input", "v0", "tau_mem", "threshold", "bias", "noise"):
        t = getattr(case, name)
        moved[name] = None if t is None else t.to(device)
    return case.replace(**moved)


def fused(case, record=True, **kw):
    return lif_cuda.lif_evolve(**case.kwargs(**kw), record=record, backend="fused")


def reference(case, record=True, **kw):
    return lif_evolve_reference(**case.kwargs(**kw), record=record)


def same_alpha(case):
    """(N,) bool: the neurons whose alpha = torch.exp(-dt/tau) is the same on the CPU and CUDA."""
    tau = case.tau_mem.cpu().expand(case.input.shape[-1])
    here = torch.exp(-case.dt / tau)
    there = torch.exp(-case.dt / tau.to(CUDA)).cpu()
    same = here == there
    assert same.float().mean() >= 0.5, f"CPU and CUDA exp differ on {int((~same).sum())} of {same.numel()} taus"
    return same


def assert_same_outputs(got, want, what, record=True):
    assert_bitwise(got[0], want[0], f"{what}: spikes")
    if record:
        assert_bitwise(got[1], want[1], f"{what}: recorded membrane")
    assert_bitwise(got[2], want[2], f"{what}: final state")


def test_cuda_kernels_are_built():
    assert lif_cuda.extension_loaded(), "lif_cuda._C did not load"
    assert lif_cuda.fused_available("cuda"), (
        "a GPU is present but lif_cuda was built without CUDA kernels; rebuild with "
        "CUDA_HOME=/usr/local/cuda LIF_FORCE_CUDA=1 pip install --no-build-isolation -e ."
    )


# ------------------------------------------------------------------ forward: bit for bit

CASES = {
    # name: make_case arguments (seed, B, T, N and keywords)
    "T1": dict(seed=1, B=3, T=1, N=9, input_mean=1.0),
    "T_not_multiple_of_8": dict(seed=2, B=2, T=29, N=17),
    "T_multiple_of_8": dict(seed=3, B=2, T=32, N=16),
    "N1": dict(seed=4, B=5, T=30, N=1),
    "B1": dict(seed=5, B=1, T=40, N=33),
    "BN_not_multiple_of_block": dict(seed=6, B=3, T=9, N=BLOCK + 5),
    "scalar_params": dict(seed=7, B=3, T=20, N=11, params="scalar"),
    "mixed_params": dict(seed=8, B=3, T=20, N=11, params="mixed"),
    "v0_per_neuron": dict(seed=9, B=3, T=15, N=8, v0_shape="neuron"),
    "noise_tensor": dict(seed=10, B=3, T=20, N=19, noise=True),
    "strong_input_multi_spike": dict(seed=11, B=2, T=10, N=33, input_mean=2.5, input_scale=2.0),
    "clamp_M2": dict(seed=12, B=2, T=12, N=20, input_mean=3.0, max_spikes_per_dt=2.0),
    "max_spikes_inf": dict(seed=13, B=2, T=10, N=9, input_mean=2.0, max_spikes_per_dt=math.inf),
}


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(CASES))
def test_forward_equals_reference_on_cuda(name, dtype):
    case = on(make_case(dtype=dtype, **CASES[name]), CUDA)
    got = fused(case)
    assert got[0].device.type == "cuda" and got[1].device.type == "cuda" and got[2].device.type == "cuda"
    assert_same_outputs(got, reference(case), name)
    if got[0].numel() >= 20:
        assert (got[0] > 0).any() and (got[0] == 0).any()
    if name == "clamp_M2":
        assert (got[0] == 2).any()


@needs_kernels
def test_decay_follows_in_place_changes_of_tau_on_cuda():
    """On CUDA the op keeps the decays of recent taus by tensor identity and version (host/prepare.h
    DecayCache): an in-place change, as an optimiser step makes, is seen by the next call, forward
    and backward; a new tensor with the old values gives the old bits."""
    case = on(make_case(21, 2, 40, 24), CUDA)
    tau = case.tau_mem.clone().requires_grad_()
    for change in (None, 2.0, 0.5):
        if change is not None:
            with torch.no_grad():
                tau.mul_(change)
        got = fused(case.replace(tau_mem=tau))
        want = reference(case.replace(tau_mem=tau))
        assert_same_outputs(got, want, f"tau changed by {change}")
        g_got, = torch.autograd.grad(got[1].square().sum(), tau)
        g_want, = torch.autograd.grad(want[1].square().sum(), tau)
        assert rel_err(g_got, g_want) <= 1e-5, f"tau changed by {change}: grad"
    assert_same_outputs(fused(case.replace(tau_mem=tau.detach().clone())), want, "a copy of tau")


@needs_kernels
@pytest.mark.parametrize("io", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["f32", "f64", "f16", "bf16"])
@pytest.mark.parametrize("noise", ["none", "tensor", "kernel"])
def test_forward_equals_cpu_kernel(io, noise):
    """The raw op on CUDA and on CPU: the same bits, for every I/O dtype and noise source, on every
    neuron whose alpha is the same on both devices."""
    B, T, N = 3, 37, 150
    state = torch.float32 if io in (torch.float16, torch.bfloat16) else io
    case = make_case(21, B, T, N, state, noise=noise == "tensor")
    same = same_alpha(case)
    key = torch.tensor([987654321, 5], dtype=torch.int64) if noise == "kernel" else None
    scale = 0.05 if noise == "kernel" else 0.0
    args = lambda dev: (  # noqa: E731
        case.input.to(io).to(dev), case.v0.to(dev), case.tau_mem.to(dev), case.threshold.to(dev), case.bias.to(dev),
        None if case.noise is None else case.noise.to(dev), key, case.dt, scale, 0.5, 2.0**16, 0, True, True,
    )
    want = torch.ops.lif_cuda.lif_forward(*args("cpu"))
    got = torch.ops.lif_cuda.lif_forward(*args(CUDA))
    for what, g, w in zip(("spikes", "vmem", "final state", "u"), got, want):
        assert g.device.type == "cuda"
        assert_bitwise(g.cpu()[..., same], w[..., same], f"{io} noise={noise}: {what}")


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_kernel_noise_same_on_cpu_and_cuda_under_a_seed(dtype):
    """SPEC §4: a seeded run draws the same noise on both devices, and it is lif_cuda.noise's. Read
    back exactly through alpha = 0 (tau -> 0), zero input and bias, a threshold nothing reaches:
    the recorded membrane is the noise term itself, whatever each device's exp."""
    B, T, N = 3, 25, 40
    streams = []
    for dev in ("cpu", CUDA):
        torch.manual_seed(1234)
        _, w, _ = lif_cuda.lif_evolve(
            torch.zeros(B, T, N, dtype=dtype, device=dev), torch.zeros(N, dtype=dtype, device=dev),
            torch.full((N,), 1e-12, dtype=dtype, device=dev), torch.full((N,), 1e30, dtype=dtype, device=dev),
            torch.zeros(N, dtype=dtype, device=dev), 1.0, noise_std=1.5, record=True, backend="fused",
        )
        streams.append(w.cpu())
    assert_bitwise(streams[1], streams[0], "the noise stream, CUDA vs CPU, same seed")
    torch.manual_seed(1234)
    z = kernel_noise((B, T, N), 1.5, lif_cuda.noise.draw_noise_key(), dtype=dtype)
    assert_bitwise(streams[1], z, "the noise stream vs lif_cuda.noise")
    # And a real run on CUDA equals the reference given that noise.
    case = on(make_case(31, B, T, N, dtype), CUDA)
    torch.manual_seed(1234)
    run = lif_cuda.lif_evolve(**case.kwargs(), noise_std=1.5, record=True, backend="fused")
    torch.manual_seed(1234)
    zc = kernel_noise((B, T, N), 1.5 * math.sqrt(case.dt), lif_cuda.noise.draw_noise_key(), dtype=dtype, device=CUDA)
    assert_same_outputs(run, reference(case, noise=zc), "CUDA vs reference with the drawn noise")
    quiet = fused(case)
    assert not torch.equal(quiet[1], run[1]), "noise_std > 0 must add noise"


def _readback_inputs(B, T, N, dtype):
    """Inputs whose recorded membrane is the noise term itself (alpha = 0, zero input and bias, a
    threshold nothing reaches)."""
    mk = lambda *shape, value: torch.full(shape, value, dtype=dtype, device=CUDA)  # noqa: E731
    return mk(B, T, N, value=0.0), mk(N, value=0.0), mk(N, value=1e-12), mk(N, value=1e30), mk(N, value=0.0)


def _captured_noise_replays(run):
    """`run` captured in a CUDA graph (after a warm-up outside it, where the parameter values are
    checked once, with a sync), then replayed: (first, second) after torch.manual_seed(7), checked to
    differ, and the first again after reseeding, checked equal. The capture must not touch the CPU
    generator (an eager call draws its key there)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    cpu_state = torch.get_rng_state()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    assert torch.equal(torch.get_rng_state(), cpu_state), "the capture drew from the CPU generator"
    torch.manual_seed(7)
    graph.replay()
    first = out.clone()
    graph.replay()
    second = out.clone()
    torch.manual_seed(7)
    graph.replay()
    again = out.clone()
    assert not torch.equal(first, second), "two replays added the same noise"
    assert_bitwise(again, first, "the first replay after torch.manual_seed(7), twice")
    return first, second


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_kernel_noise_under_cuda_graph_is_fresh_per_replay_and_seeded(dtype):
    """Captured in a CUDA graph, the kernel reads its key on the device from the
    CUDA generator's graph-safe state (as torch's dropout does), so every replay draws new noise and
    torch.manual_seed(s) before the replays reproduces them. The stream is the documented one:
    key (seed, offset / 4) of the CUDA generator, which a replay advances by 4 * ceil(T/4) words.
    The capture does not touch the CPU generator (an eager call draws its key there)."""
    B, T, N = 3, 13, 40
    x, v0, tau, thr, bias = _readback_inputs(B, T, N, dtype)

    def run():
        return lif_cuda.lif_evolve(x, v0, tau, thr, bias, 1.0, noise_std=1.5, record=True, backend="fused")[1]

    first, second = _captured_noise_replays(run)
    blocks = (T + 3) // 4
    for got, offset in ((first, 0), (second, blocks)):
        want = kernel_noise((B, T, N), 1.5, torch.tensor([7, offset], dtype=torch.int64), dtype=dtype)
        assert_bitwise(got.cpu(), want, f"replay with the CUDA generator at offset {4 * offset}")


@needs_kernels
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_synaptic_kernel_noise_under_cuda_graph_is_fresh_per_replay_and_seeded(rec):
    """The synaptic op keys its in-kernel noise as the LIF op does under capture (one key for the
    whole call, also for the recurrent model's per-step kernels): fresh per replay, seeded, the
    documented stream. Zero input, state and recurrent weights, alpha = 0 and an unreachable
    threshold make the recorded membrane the noise itself."""
    B, T, N, S = 3, 13, 40, 2
    x, v0, tau, thr, bias = _readback_inputs(B, T, N, torch.float32)
    x = torch.zeros(B, T, N * S, device=CUDA)
    i0 = torch.zeros(N, S, device=CUDA)
    tau_syn = torch.full((N, S), 0.01, device=CUDA)
    w_rec = torch.zeros(N, N * S, device=CUDA) if rec else None

    def run():
        return lif_cuda.synaptic_evolve(x, v0, i0, tau, tau_syn, thr, bias, 1.0, w_rec=w_rec, noise_std=1.5,
                                        record=True, backend="fused")[1]

    first, _ = _captured_noise_replays(run)
    want = kernel_noise((B, T, N), 1.5, torch.tensor([7, 0], dtype=torch.int64), dtype=torch.float32)
    assert_bitwise(first.cpu(), want, "replay with the CUDA generator at offset 0")


@needs_kernels
def test_kernel_noise_under_compile_reduce_overhead_is_fresh_per_call():
    """torch.compile(mode="reduce-overhead") replays CUDA graphs: each call still draws new noise."""
    torch._dynamo.reset()
    B, T, N = 2, 21, 64
    x, v0, tau, thr, bias = _readback_inputs(B, T, N, torch.float32)

    def noisy(inp):
        return lif_cuda.lif_evolve(inp, v0, tau, thr, bias, 1.0, noise_std=1.0, record=True, backend="fused")[1]

    compiled = torch.compile(noisy, mode="reduce-overhead")
    outs = []
    for _ in range(5):
        torch.compiler.cudagraph_mark_step_begin()
        outs.append(compiled(x).clone())
    for i in range(len(outs)):
        for j in range(i):
            assert not torch.equal(outs[i], outs[j]), f"calls {j} and {i} added the same noise"
    z = torch.stack(outs).double()
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1.0) < 0.05


@needs_kernels
def test_record_false_and_inference_variants():
    case = on(make_case(41, 3, 20, 12), CUDA)
    want = reference(case)
    spikes, vmem, final = fused(case, record=False)
    assert vmem is None
    assert_bitwise(spikes, want[0], "spikes")
    assert_bitwise(final, want[2], "final state")
    with torch.no_grad():
        assert_same_outputs(fused(case), want, "no_grad")


@needs_kernels
def test_non_contiguous_inputs_equal_contiguous():
    case = on(make_case(51, 4, 18, 10, noise=True), CUDA)
    want = fused(case)
    x_t = case.input.transpose(0, 1).contiguous().transpose(0, 1)  # (B,T,N) with strides of (T,B,N)
    wide = torch.zeros(4, 18, 20, device=CUDA)
    wide[..., ::2] = case.input  # every other column
    z_wide = torch.zeros(4, 18, 20, device=CUDA)
    z_wide[..., 1::2] = case.noise
    v0_t = case.v0.t().contiguous().t()
    params = {k: torch.stack([getattr(case, k), getattr(case, k)], 1)[:, 0] for k in ("tau_mem", "threshold", "bias")}
    for x in (x_t, wide[..., ::2]):
        assert not x.is_contiguous()
        got = fused(case.replace(input=x, v0=v0_t, noise=z_wide[..., 1::2], **params))
        assert_same_outputs(got, want, "non-contiguous")


@needs_kernels
@pytest.mark.parametrize("shape", [(0, 5, 4), (3, 0, 4), (3, 5, 0)], ids=["B0", "T0", "N0"])
def test_empty_shapes(shape):
    B, T, N = shape
    case = on(make_case(61, B, T, N), CUDA)
    spikes, vmem, final = fused(case)
    assert spikes.shape == (B, T, N) and vmem.shape == (B, T, N) and final.shape == (B, N)
    assert spikes.device.type == "cuda"
    if T == 0:
        assert torch.equal(final, case.v0)
    # The raw op's record / save_u empties are (0,), on the device.
    out = torch.ops.lif_cuda.lif_forward(
        case.input, case.v0, case.tau_mem, case.threshold, case.bias, None, None, case.dt, 0.0, 0.5, 2.0**16, 0,
        False, False,
    )
    assert out[1].shape == (0,) and out[3].shape == (0,) and out[4].shape == (0,) and out[1].device.type == "cuda"


@needs_kernels
def test_large_n_not_a_multiple_of_the_block():
    """Many blocks, a partial last block, rows that straddle blocks."""
    B, T, N = 3, 20, 70_001
    assert (B * N) % BLOCK != 0
    case = on(make_case(71, B, T, N), CUDA)
    assert_same_outputs(fused(case), reference(case), "large N")
    x = case.input.clone().requires_grad_(True)
    spikes, _, final = fused(case.replace(input=x))
    (spikes.sum() + final.sum()).backward()
    xr = case.input.clone().requires_grad_(True)
    rs, _, rf = reference(case.replace(input=xr))
    (rs.sum() + rf.sum()).backward()
    assert rel_err(x.grad, xr.grad) <= GRAD_TOL[torch.float32]


@needs_kernels
def test_runs_on_the_current_stream():
    case = on(make_case(81, 4, 30, 64), CUDA)
    want = fused(case)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = fused(case)
        sums = got[0].sum()  # queued behind the kernel on the same stream
    side.synchronize()
    assert_same_outputs(got, want, "side stream")
    assert sums.item() == want[0].sum().item()


@needs_kernels
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    dev = torch.device("cuda", 1)
    case = on(make_case(91, 3, 20, 50), dev)
    with torch.cuda.device(0):  # the op must switch to the input's device itself
        got = fused(case)
    assert got[0].device == dev
    assert_same_outputs(got, reference(case), "cuda:1")


@needs_kernels
def test_beyond_2_pow_31_elements():
    """64-bit indexing: B*T*N > 2^31; the last neurons of the last row checked against a slice."""
    B, T, N = 2, 16_384, 65_539
    assert B * T * N > 2**31
    free, _ = torch.cuda.mem_get_info()
    need = 3 * B * T * N * 4  # input, spikes, slack for the comparison
    if free < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    g = torch.Generator(device=CUDA).manual_seed(5)
    x = torch.empty((B, T, N), device=CUDA).normal_(0.4, 1.0, generator=g)
    small = make_case(101, B, 1, N)
    case = on(small, CUDA).replace(input=x)
    with torch.no_grad():
        spikes, _, final = fused(case, record=False)
    cols = torch.tensor([0, N // 2, N - 2, N - 1], device=CUDA)
    sub = case.replace(
        input=x[:, :, cols].contiguous(), v0=case.v0[:, cols], tau_mem=case.tau_mem[cols],
        threshold=case.threshold[cols], bias=case.bias[cols],
    )
    del x
    with torch.no_grad():
        s_sub, _, f_sub = fused(sub, record=False)
    assert_bitwise(spikes[:, :, cols], s_sub, "spikes beyond 2^31")
    assert_bitwise(final[:, cols], f_sub, "final state beyond 2^31")
    assert (s_sub[1, -100:] > 0).any()


# ------------------------------------------------------------------ backward

def _grads(run, case, surrogate, with_noise, upstream):
    leaves_case, leaves = case.leaves(with_noise=with_noise)
    spikes, vmem, final = run(leaves_case, spike_generation_fn=surrogate)
    gs, gw, gvf = upstream
    torch.autograd.backward([spikes, vmem, final], [gs, gw, gvf])
    return [t.grad for t in leaves]


def _upstream(case, seed=3):
    B, T, N = case.input.shape
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(case.input.dtype).to(case.input.device)  # noqa: E731
    return mk(B, T, N), mk(B, T, N), mk(B, N)


NAMES = ("input", "v0", "tau_mem", "threshold", "bias", "noise")


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("surrogate", list(SURROGATES))
@pytest.mark.parametrize("params", ["neuron", "scalar"])
def test_gradients_match_reference_autograd_on_cuda(dtype, surrogate, params):
    case = on(make_case(111, 3, 29, 13, dtype, params=params, noise=True), CUDA)
    up = _upstream(case)
    got = _grads(fused, case, SURROGATES[surrogate], True, up)
    want = _grads(reference, case, SURROGATES[surrogate], True, up)
    for name, g, w in zip(NAMES, got, want):
        assert g.device.type == "cuda", name
        err = rel_err(g, w)
        assert err <= GRAD_TOL[dtype], f"grad {name}: relative error {err:.2e} > {GRAD_TOL[dtype]:.0e}"


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("surrogate", [0, 1], ids=list(SURROGATES))
@pytest.mark.parametrize("gw", [False, True], ids=["gs", "gs+gw"])
def test_backward_equals_cpu_kernel(dtype, surrogate, gw):
    """The raw backward op on CUDA vs on CPU: same step functions, same order, same batch-order sum."""
    case = make_case(121, 4, 33, 70, dtype)
    same = same_alpha(case)
    fwd = torch.ops.lif_cuda.lif_forward(case.input, case.v0, case.tau_mem, case.threshold, case.bias, None, None,
                                         case.dt, 0.0, 0.5, 2.0**16, surrogate, True, True)
    gs, gwv, gvf = _upstream(case)
    args = lambda dev: (gs.to(dev), gwv.to(dev) if gw else None, gvf.to(dev), fwd[3].to(dev), case.v0.to(dev),  # noqa: E731
                        case.tau_mem.to(dev), case.threshold.to(dev), case.dt, 0.5, 2.0**16, surrogate, False)
    want = torch.ops.lif_cuda.lif_backward(*args("cpu"))
    got = torch.ops.lif_cuda.lif_backward(*args(CUDA))
    for name, g, w in zip(("g_in", "g_v0", "g_tau", "g_thr", "g_bias"), got, want):
        g = g.cpu()[..., same]
        w = w[..., same]
        if surrogate == 0:
            assert_bitwise(g, w, f"backward {name}")
        else:  # exp: CUDA's, and the host's (a float polynomial, libm for double) may differ
            assert rel_err(g, w) <= (1e-5 if dtype == torch.float32 else 1e-12), f"backward {name}"


@needs_kernels
@pytest.mark.parametrize("N", [20, 1000, 70001])
def test_scalar_parameter_gradients_equal_cpu_kernel(N):
    """A () parameter's gradient collapses all N neurons' float64 sums as core/grad_sums.h's tree:
    on CUDA a block adds the leaves in parallel and the levels in shared memory, on the CPU a loop
    does: the same bits (N = 20: one leaf; 1000: 32 leaves; 70001: 256 leaves of 274)."""
    case = make_case(123, 2, 17, N, torch.float32, params="scalar")
    dt = case.dt
    taus = [t for t in (0.02, 0.013, 0.031, 0.047, 0.0071)
            if torch.equal(torch.exp(-dt / torch.tensor(t)), torch.exp(-dt / torch.tensor(t, device=CUDA)).cpu())]
    assert taus, "CUDA's exp differs from the CPU's on every candidate tau"
    tau = torch.tensor(taus[0])
    fwd = torch.ops.lif_cuda.lif_forward(case.input, case.v0, tau, case.threshold, case.bias, None, None,
                                         dt, 0.0, 0.5, 2.0**16, 0, True, True)
    gs, _, gvf = _upstream(case)
    args = lambda dev: (gs.to(dev), None, gvf.to(dev), fwd[3].to(dev), case.v0.to(dev),  # noqa: E731
                        tau.to(dev), case.threshold.to(dev), dt, 0.5, 2.0**16, 0, True)
    want = torch.ops.lif_cuda.lif_backward(*args("cpu"))
    got = torch.ops.lif_cuda.lif_backward(*args(CUDA))
    for name, g, w in zip(("g_in", "g_v0", "g_tau", "g_thr", "g_bias"), got, want):
        assert_bitwise(g.cpu(), w, f"backward {name}, N={N}")


@needs_kernels
def test_parameter_gradients_are_deterministic():
    case = on(make_case(131, 64, 40, 300), CUDA)
    up = _upstream(case)
    first = _grads(fused, case, StepPWL, False, up)
    for _ in range(2):
        again = _grads(fused, case, StepPWL, False, up)
        for name, a, b in zip(NAMES, again, first):
            assert_bitwise(a, b, f"grad {name}, second run")


# ------------------------------------------------------------------ custom-op citizenship


def _op_args(dtype, noise, record, save_u, requires_grad, surrogate=0):
    case = make_case(141, 2, 9, 7, dtype, noise=noise == "tensor")
    ts = [t.to(CUDA) for t in (case.input, case.v0, case.tau_mem, case.threshold, case.bias)]
    z = case.noise.to(CUDA) if noise == "tensor" else None
    if requires_grad:
        for t in ts + ([z] if z is not None else []):
            t.requires_grad_(True)
    key = torch.tensor([7, 0], dtype=torch.int64) if noise == "kernel" else None
    return (*ts, z, key, case.dt, 0.05 if key is not None else 0.0, 0.5, 2.0**16, surrogate, record, save_u)


@needs_kernels
@pytest.mark.parametrize("combo", [
    (torch.float32, None, True, True, True, 0),
    (torch.float64, "tensor", True, True, True, 1),
    (torch.float32, "kernel", False, True, True, 0),
    (torch.float32, None, False, False, False, 0),
], ids=["f32_record_grad", "f64_noise_grad", "f32_kernel_noise_grad", "f32_inference"])
def test_opcheck_forward_on_cuda(combo):
    args = _op_args(*combo)
    torch.library.opcheck(torch.ops.lif_cuda.lif_forward.default, args)


@needs_kernels
@pytest.mark.parametrize("surrogate", [0, 1], ids=list(SURROGATES))
def test_opcheck_backward_on_cuda(surrogate):
    args = _op_args(torch.float64, None, True, True, False, surrogate)
    u = torch.ops.lif_cuda.lif_forward(*args)[3]
    B, T, N = u.shape
    g = torch.Generator().manual_seed(2)
    mk = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(CUDA)  # noqa: E731
    bargs = (mk(B, T, N), mk(B, T, N), mk(B, N), u, args[1], args[2], args[3], args[7], 0.5, 2.0**16, surrogate,
             False)
    torch.library.opcheck(torch.ops.lif_cuda.lif_backward.default, bargs)


class _Net(torch.nn.Module):
    """The LIF layer first, so that compiled and eager feed it the very same input (a Linear in
    front could round differently once compiled) and its spikes must be equal."""

    def __init__(self):
        super().__init__()
        self.lif = lif_cuda.LIFNeuron(32, tau_mem=torch.full((32,), 0.02), backend="fused")
        self.fc = torch.nn.Linear(32, 3)

    def forward(self, x):
        spikes = self.lif(x)
        return self.fc(spikes), spikes


@needs_kernels
def test_torch_compile_on_cuda_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = _Net().to(CUDA)
    compiled_net = copy.deepcopy(eager)
    compiled = torch.compile(compiled_net, fullgraph=True)
    g = torch.Generator().manual_seed(1)
    for step in range(2):
        x = (0.5 + 1.5 * torch.randn(4, 10, 32, generator=g)).to(CUDA)
        out_e, s_e = eager(x)
        out_c, s_c = compiled(x)
        assert torch.equal(s_c, s_e), f"step {step}: spikes differ"
        assert (s_e > 0).any()
        out_e.square().sum().backward()
        out_c.square().sum().backward()
        assert_bitwise(compiled_net.lif.vmem, eager.lif.vmem, f"step {step}: state")
        for (name, p_e), p_c in zip(eager.named_parameters(), compiled_net.parameters()):
            assert p_c.grad is not None and p_c.grad.device.type == "cuda", name
            if name.startswith("lif."):  # our op: the same bits (the Linear is Inductor's own code)
                assert_bitwise(p_c.grad, p_e.grad, f"step {step}: grad {name}")
            else:
                assert rel_err(p_c.grad, p_e.grad) <= 1e-5, f"step {step}: grad {name}"
        eager.zero_grad()
        compiled_net.zero_grad()


@needs_kernels
def test_training_step_makes_no_host_sync():
    """After a first call, forward+backward through a LIFNeuron whose parameters did not
    change never waits for the GPU (parameter values are checked once per change, not per call)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), _layer(32, noise_std=0.2), torch.nn.Linear(32, 4)).to(CUDA)
    x = torch.randn(4, 20, 8, device=CUDA)
    net(x).square().mean().backward()  # first call: checks the parameter values once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            net(x).square().mean().backward()
        with torch.no_grad():
            net(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # A parameter made bad after that is still refused, naming it, before any kernel runs.
    with torch.no_grad():
        net[1].threshold[3] = -1.0
    launches = lif_cuda.ops.kernel_launches()
    with pytest.raises(ValueError, match="threshold"):
        net(x)
    assert lif_cuda.ops.kernel_launches() == launches


def _train_net(model):
    torch.manual_seed(0)
    n = 24
    net = torch.nn.Sequential(torch.nn.Linear(8, model.n_in(n)), model.layer(n, backend="fused"),
                              torch.nn.Linear(n, 4)).to(CUDA)
    return net, torch.optim.Adam(net.parameters(), lr=1e-2, capturable=True)


def _train_step(net, opt, x, y, lengths):
    opt.zero_grad(set_to_none=False)
    loss = (net[2](net[1](net[0](x), lengths)) - y).square().mean()
    loss.backward()
    opt.step()
    return loss


@needs_kernels
def test_training_step_captured_in_a_cuda_graph_replays_like_eager(model):
    """A whole training step (forward, backward, a capturable Adam step) captured in one CUDA graph
    after warm-up steps, lengths on the device: the capture makes no host read (the parameter and
    lengths checks skip what capture forbids), and each replay moves the parameters as the same step
    run eagerly does."""
    x = torch.randn(5, 29, 8, device=CUDA)
    y = torch.randn(5, 29, 4, device=CUDA)
    lengths = torch.tensor(LENGTHS, device=CUDA)
    net, opt = _train_net(model)
    twin, twin_opt = _train_net(model)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            _train_step(net, opt, x, y, lengths)
            _train_step(twin, twin_opt, x, y, lengths)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = _train_step(net, opt, x, y, lengths)
    before = [p.detach().clone() for p in net.parameters()]
    for step in range(4):
        graph.replay()
        want = _train_step(twin, twin_opt, x, y, lengths)
        torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6, msg=f"replay {step}: loss")
        for (name, p), q in zip(net.named_parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"replay {step}: {name}")
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters())), "the replays trained nothing"
    # A bad value written between replays is refused by the next eager call, naming it.
    with torch.no_grad():
        net[1].threshold.fill_(-1.0)
    with pytest.raises(ValueError, match="threshold"):
        net(x)


# ------------------------------------------------------------------ the module on CUDA


def _layer(n=16, **kw):
    g = torch.Generator().manual_seed(0)
    kw.setdefault("tau_mem", 5e-3 + 45e-3 * torch.rand(n, generator=g))
    kw.setdefault("threshold", 0.3 + 1.2 * torch.rand(n, generator=g))
    kw.setdefault("bias", 0.1 * torch.randn(n, generator=g))
    return lif_cuda.LIFNeuron(n, **kw)


@needs_kernels
@pytest.mark.parametrize("move", ["cuda()", "to('cuda')"])
def test_module_on_cuda_uses_the_cuda_kernel(move, monkeypatch):
    layer = _layer()
    layer = layer.cuda() if move == "cuda()" else layer.to("cuda")
    assert all(p.device.type == "cuda" for p in layer.parameters())
    assert layer.vmem.device.type == "cuda"
    calls = []
    original = lif_cuda.functional.lif_forward_op
    monkeypatch.setattr(lif_cuda.functional, "lif_forward_op",
                        lambda *a, **k: calls.append(a[0].device) or original(*a, **k))
    x = (0.4 + torch.randn(3, 25, 16, generator=torch.Generator().manual_seed(1))).to(CUDA)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spikes, state, rec = layer.evolve(x, record=True)
    fallbacks = [str(w.message) for w in caught if "lif_cuda" in str(w.message)]
    assert not fallbacks, f"backend='auto' fell back on CUDA: {fallbacks}"
    assert calls and calls[0].type == "cuda", "backend='auto' did not run the fused op on CUDA"
    assert spikes.device.type == "cuda"
    assert rec["vmem"].device.type == "cuda" and rec["spikes"].device.type == "cuda"
    assert state["vmem"].device.type == "cuda" and layer.vmem.device.type == "cuda"
    ref = _layer().to(CUDA)
    with torch.no_grad():
        want = lif_evolve_reference(x, ref.vmem, ref.tau_mem, ref.threshold, ref.bias, ref.dt, record=True)
    assert_bitwise(spikes, want[0], "spikes")
    assert_bitwise(rec["vmem"], want[1], "vmem")
    assert_bitwise(layer.vmem, want[2][0], "state (batch row 0)")


@needs_kernels
def test_module_trains_on_cuda_like_the_reference_backend():
    x = (0.4 + torch.randn(2, 30, 16, generator=torch.Generator().manual_seed(2))).to(CUDA)
    grads = {}
    for backend in ("fused", "reference"):
        layer = _layer(backend=backend).to(CUDA)
        layer(x).sum().backward()
        grads[backend] = {n: p.grad for n, p in layer.named_parameters()}
    for name, g in grads["fused"].items():
        assert g.device.type == "cuda"
        assert rel_err(g, grads["reference"][name]) <= 1e-5, name


@needs_kernels
def test_module_float64_on_cuda():
    layer = _layer().to(device=CUDA, dtype=torch.float64)
    x = (0.4 + torch.randn(2, 20, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)).to(CUDA)
    spikes, _, rec = layer.evolve(x, record=True)
    assert spikes.dtype == torch.float64 and rec["vmem"].dtype == torch.float64
    ref = _layer().to(device=CUDA, dtype=torch.float64)
    with torch.no_grad():
        want = lif_evolve_reference(x, ref.vmem, ref.tau_mem, ref.threshold, ref.bias, ref.dt, record=True)
    assert_bitwise(rec["vmem"], want[1], "vmem float64")


# ------------------------------------------------------------------ lengths and batch_state (SPEC §8)

LENGTHS = [29, 0, 7, 1, 13]  # T, empty, below and above the 8-step prefetch chunk, one step


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_lengths_forward_on_cuda(dtype):
    """Rows of a padded batch equal the reference (which masks) on CUDA, and the raw op equals the
    CPU kernel with in-kernel noise, u and the padding included (neurons whose alpha agrees)."""
    B, T, N = len(LENGTHS), max(LENGTHS), 150
    case = make_case(151, B, T, N, dtype)
    lengths = torch.tensor(LENGTHS)
    got = fused(on(case, CUDA), lengths=lengths)
    assert_same_outputs(got, reference(on(case, CUDA), lengths=lengths.to(CUDA)), "lengths vs reference")
    assert not got[0][1].any() and (got[0][0] > 0).any()
    same = same_alpha(case)
    key = torch.tensor([11, 2], dtype=torch.int64)
    args = lambda dev: (case.input.to(dev), case.v0.to(dev), case.tau_mem.to(dev), case.threshold.to(dev),  # noqa: E731
                        case.bias.to(dev), None, key, case.dt, 0.05, 0.5, 2.0**16, 0, True, True, lengths.to(dev))
    want = torch.ops.lif_cuda.lif_forward(*args("cpu"))
    out = torch.ops.lif_cuda.lif_forward(*args(CUDA))
    for what, g, w in zip(("spikes", "vmem", "final state", "u"), out, want):
        assert_bitwise(g.cpu()[..., same], w[..., same], f"lengths, CUDA vs CPU: {what}")


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("surrogate", [0, 1], ids=list(SURROGATES))
def test_lengths_backward_on_cuda(dtype, surrogate):
    B, T, N = len(LENGTHS), max(LENGTHS), 70
    case = make_case(161, B, T, N, dtype)
    lengths = torch.tensor(LENGTHS)
    up = _upstream(case)
    surr = SURROGATES[list(SURROGATES)[surrogate]]
    got = _grads(lambda c, **kw: fused(c, lengths=lengths, **kw), on(case, CUDA), surr, False,
                 [u.to(CUDA) for u in up])
    want = _grads(lambda c, **kw: reference(c, lengths=lengths.to(CUDA), **kw), on(case, CUDA), surr, False,
                  [u.to(CUDA) for u in up])
    for name, g, w in zip(NAMES, got, want):
        assert rel_err(g, w) <= GRAD_TOL[dtype], f"grad {name} vs reference autograd"
    pad = (torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)).to(CUDA)
    assert not got[0][pad].any(), "padding input gradient must be zero"
    same = same_alpha(case)
    fwd = torch.ops.lif_cuda.lif_forward(case.input, case.v0, case.tau_mem, case.threshold, case.bias, None, None,
                                         case.dt, 0.0, 0.5, 2.0**16, surrogate, True, True, lengths)
    args = lambda dev: (up[0].to(dev), up[1].to(dev), up[2].to(dev), fwd[3].to(dev), case.v0.to(dev),  # noqa: E731
                        case.tau_mem.to(dev), case.threshold.to(dev), case.dt, 0.5, 2.0**16, surrogate, False,
                        lengths.to(dev))
    want = torch.ops.lif_cuda.lif_backward(*args("cpu"))
    out = torch.ops.lif_cuda.lif_backward(*args(CUDA))
    for name, g, w in zip(("g_in", "g_v0", "g_tau", "g_thr", "g_bias"), out, want):
        g, w = g.cpu()[..., same], w[..., same]
        if surrogate == 0:
            assert_bitwise(g, w, f"lengths backward {name}, CUDA vs CPU")
        else:
            assert rel_err(g, w) <= (1e-5 if dtype == torch.float32 else 1e-12), f"lengths backward {name}"


@needs_kernels
def test_lengths_forms_and_bad_values_on_cuda():
    """A list, a CPU int32 tensor and a CUDA int64 tensor give the same bits; a CUDA tensor with a
    value out of [0, T] is refused (one host sync) before any kernel runs."""
    B, T, N = len(LENGTHS), max(LENGTHS), 20
    case = on(make_case(171, B, T, N), CUDA)
    want = fused(case, lengths=LENGTHS)
    for form in (torch.tensor(LENGTHS, dtype=torch.int32), torch.tensor(LENGTHS, device=CUDA)):
        assert_same_outputs(fused(case, lengths=form), want, f"lengths as {form.dtype} on {form.device}")
    launches = lif_cuda.ops.kernel_launches()
    for bad in (torch.tensor([0, 1, 2, 3, T + 1], device=CUDA), torch.tensor([0, -1, 2, 3, 4], device=CUDA),
                [0, 1, 2, 3, T + 1]):
        with pytest.raises(ValueError, match=r"lengths must be in \[0, T\]"):
            fused(case, lengths=bad)
    with pytest.raises(ValueError, match="lengths"):
        lif_cuda.lif_evolve(**make_case(171, B, T, N).kwargs(), lengths=torch.tensor(LENGTHS, device=CUDA),
                            backend="fused")  # CPU input, CUDA lengths
    assert lif_cuda.ops.kernel_launches() == launches


@needs_kernels
def test_training_with_cpu_lengths_and_batch_state_makes_no_host_sync():
    """CPU lengths are checked on the CPU and copied to the device asynchronously; the per-row
    state is updated in place: a steady-state training step never waits for the GPU."""
    torch.manual_seed(0)
    fc = torch.nn.Linear(8, 32).to(CUDA)
    lif = _layer(32, batch_state=True).to(CUDA)
    x = torch.randn(5, 29, 8, device=CUDA)
    lengths = torch.tensor(LENGTHS)
    lif(fc(x), lengths).square().mean().backward()  # first call: checks, and the state becomes (B, N)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            lif(fc(x), lengths).square().mean().backward()
            lif(fc(x), LENGTHS).square().mean().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert lif.vmem.shape == (5, 32) and lif.vmem.device.type == "cuda"


@needs_kernels
def test_batch_state_chunks_equal_one_run_on_cuda(model):
    """Every model: chunks with lengths equal one run bit for bit (spikes, records, state); another
    batch size is refused."""
    x = model.input(3, 60, 16, seed=4).to(CUDA)
    lengths = torch.tensor([60, 25, 40])
    layer = model.layer(16, batch_state=True).to(CUDA)
    _, _, whole = layer.evolve(x, record=True, lengths=lengths)
    kept = model.state_of(layer)
    layer.reset_state()
    parts = [layer.evolve(x[:, a:b], record=True, lengths=(lengths - a).clamp(0, b - a))[2]
             for a, b in ((0, 17), (17, 40), (40, 60))]
    for k in model.records:
        assert_bitwise(torch.cat([p[k] for p in parts], 1), whole[k], k)
    for name, a, b in zip(model.states, model.state_of(layer), kept):
        assert_bitwise(a, b, f"state {name}")
    with pytest.raises(ValueError, match=r"batch size 3.*batch size 2.*reset_state\(\)"):
        layer(x[:2])


# ------------------------------------------------------------------ the synaptic op (SPEC §7)
# Forward: spikes, records and final state `torch.equal` to the pure-PyTorch reference run on the
# same CUDA device, whose synapse sum is torch.sum on CUDA (ATen's gpu reduce) and whose recurrent
# product is cuBLAS through F.linear: this is the check of the CUDA sum order the device probe chose
# (csrc/cuda/sum_order.h, core/torch_sum.h), which tests/test_host_threads.py can only check against
# its emulation of Reduce.cuh. S = 1..40 covers the lane counts P = 1, 2, 4, 8, 16, 32; fewer than
# 16 rows with S >= 64 the lanes past a warp (P = 64). Backward against the reference's
# autograd; lif_cuda.rockpool.LIFTorch against Rockpool's LIFTorch on CUDA; the CPU and CUDA
# kernels agree where the devices' exp and GEMM do (feed-forward, alpha and beta equal on both).


def make_synaptic_cuda_case(seed, B, T, N, S, dtype=torch.float32, rec=False, device=CUDA):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    n = lambda *s: torch.randn(s, generator=g, dtype=torch.float64)  # noqa: E731
    case = dict(
        input=0.4 + 0.8 * n(B, T, N * S), v0=0.5 * n(B, N), i0=0.3 * n(N, S), s0=(r(N) < 0.3).double(),
        tau_mem=5e-3 + 45e-3 * r(N), tau_syn=2e-3 + 20e-3 * r(N, S), threshold=0.3 + 1.2 * r(N), bias=0.1 * n(N),
        w_rec=0.3 * n(N, N * S) if rec else None,
    )
    return {k: None if v is None else v.to(dtype=dtype, device=device) for k, v in case.items()}


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_synaptic_forward_equals_reference_on_cuda(dtype, rec):
    for B, N, S in [(3, 7, S) for S in list(range(1, 41)) + [63]] + [(1, 3, 64), (2, 5, 100), (1, 1, 127)]:
        case = make_synaptic_cuda_case(S, B, 12, N, S, dtype, rec=rec)
        got = run_synaptic(synaptic_evolve, case, backend="fused")
        want = run_synaptic(synaptic_evolve_reference, case)
        for name, g, w in zip(SYNAPTIC_OUTPUTS, got, want):
            assert_bitwise(g, w, f"{name}, S={S}")


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S,rec", [(1, True), (2, False), (3, True)])
def test_synaptic_backward_equals_reference_autograd_on_cuda(dtype, S, rec):
    B, T, N = 3, 17, 6
    case = make_synaptic_cuda_case(7, B, T, N, S, dtype, rec=rec)
    names = [k for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec") if
             case[k] is not None]
    g = torch.Generator(device=CUDA).manual_seed(1)
    ups = [torch.randn(s, generator=g, device=CUDA, dtype=dtype) for s in
           ((B, T, N), (B, T, N), (B, T, N, S), (B, N), (B, N, S))]
    grads = []
    for fn, kw in ((synaptic_evolve, dict(backend="fused")), (synaptic_evolve_reference, {})):
        leaves = {k: case[k].clone().requires_grad_(True) for k in names}
        out = run_synaptic(fn, {**case, **leaves}, spike_generation_fn=StepPWL, **kw)
        outs = [out[0], out[1], out[2], out[4], out[5]]
        grads.append(torch.autograd.grad(outs, list(leaves.values()), ups, allow_unused=True))
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    for name, a, b in zip(names, *grads):
        if b is None:
            continue
        assert rel_err(a, b) <= tol, name


@needs_kernels
def test_synaptic_cpu_and_cuda_kernels_agree_where_the_devices_do():
    """Feed-forward, S <= 2 (the CPU and CUDA sum orders agree), on the neurons whose decays are the
    same on both devices: the same bits from the two kernels."""
    for S in (1, 2):
        case = make_synaptic_cuda_case(3, 2, 20, 64, S)
        cpu = {k: None if v is None else v.cpu() for k, v in case.items()}
        a = run_synaptic(synaptic_evolve, case, backend="fused")
        b = run_synaptic(synaptic_evolve, cpu, backend="fused")
        same = (torch.exp(-1e-3 / case["tau_mem"]).cpu() == torch.exp(-1e-3 / cpu["tau_mem"]))
        same &= (torch.exp(-1e-3 / case["tau_syn"]).cpu() == torch.exp(-1e-3 / cpu["tau_syn"])).all(-1)
        assert same.sum() > 0
        assert torch.equal(a[0].cpu()[..., same], b[0][..., same])
        assert torch.equal(a[1].cpu()[..., same], b[1][..., same])


@needs_kernels
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_synaptic_rockpool_drop_in_on_cuda(rec):
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


# lengths (SPEC §8)
SYN_LENGTHS = [17, 0, 9, 1]


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S,rec", [(1, True), (2, False), (3, True)])
@pytest.mark.parametrize("where", ["cuda", "cpu"], ids=["lengths-on-cuda", "lengths-on-cpu"])
def test_synaptic_lengths_equal_reference_on_cuda(dtype, S, rec, where):
    """With per-row lengths (a CUDA tensor, or a CPU one as a data loader gives it): forward bit for bit
    against the masked reference on the device (padding included), backward against its autograd, with
    gradients arriving on the padding; the padding's input gradient is 0."""
    B, T, N = len(SYN_LENGTHS), 17, 6
    case = make_synaptic_cuda_case(8, B, T, N, S, dtype, rec=rec)
    lengths = torch.tensor(SYN_LENGTHS, device=where)
    names = [k for k in ("input", "v0", "i0", "s0", "tau_mem", "tau_syn", "threshold", "bias", "w_rec") if
             case[k] is not None and (rec or k != "s0")]
    g = torch.Generator(device=CUDA).manual_seed(2)
    ups = [torch.randn(s, generator=g, device=CUDA, dtype=dtype) for s in
           ((B, T, N), (B, T, N), (B, T, N, S), (B, N), (B, N, S))]
    results = []
    for fn, kw in ((synaptic_evolve, dict(backend="fused")), (synaptic_evolve_reference, {})):
        leaves = {k: case[k].clone().requires_grad_(True) for k in names}
        ln = lengths.to(CUDA) if fn is synaptic_evolve_reference else lengths
        out = run_synaptic(fn, {**case, **leaves}, lengths=ln, **kw)
        outs = [out[0], out[1], out[2], out[4], out[5]]
        results.append((out, dict(zip(names, torch.autograd.grad(outs, list(leaves.values()), ups)))))
    (got, g_got), (want, g_want) = results
    for name, a, b in zip(SYNAPTIC_OUTPUTS, got, want):
        assert_bitwise(a.detach(), b.detach(), name)
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    for name in names:
        assert g_want[name].abs().sum() > 0, name
        assert rel_err(g_got[name], g_want[name]) <= tol, f"grad {name}"
    for b, L in enumerate(SYN_LENGTHS):
        assert not got[0][b, L:].any() and not g_got["input"][b, L:].any(), f"row {b}: padding"


# ------------------------------------------------------------------ the AHP current (SPEC §9)
# The synaptic op with the AHP current: the S + 1 lanes [i..., h] summed in torch.sum's CUDA order,
# checked against the reference on the same device (whose sum is torch.sum on CUDA); backward
# against its autograd; lif_cuda.rockpool.aLIFTorch against Rockpool's aLIFTorch on CUDA.


def make_ahp_cuda_case(seed, B, T, N, S, dtype=torch.float32, rec=False):
    case = make_synaptic_cuda_case(seed, B, T, N, S, dtype, rec=rec)
    g = torch.Generator().manual_seed(seed + 500)
    r = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    ahp = dict(h0=-0.3 * r(B, N), w_ahp=-0.2 - 0.6 * r(N), tau_ahp=5e-3 + 30e-3 * r(N))
    return {**case, **{k: v.to(dtype=dtype, device=CUDA) for k, v in ahp.items()}}


AHP_ARGS = ("input", "v0", "i0", "h0", "tau_mem", "tau_syn", "threshold", "bias", "w_ahp", "tau_ahp")


def run_ahp(case, backend, **kw):
    args = [case[k] for k in AHP_ARGS]
    if backend == "reference":
        return synaptic_evolve_reference(
            *(case[k] for k in ("input", "v0", "i0", "tau_mem", "tau_syn", "threshold", "bias")), 1e-3,
            w_rec=case["w_rec"], s0=case["s0"], record=True, w_ahp=case["w_ahp"], tau_ahp=case["tau_ahp"],
            h0=case["h0"], **kw)
    return lif_cuda.ahp_synaptic_evolve(*args, 1e-3, w_rec=case["w_rec"], s0=case["s0"], record=True,
                                        backend=backend, **kw)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_ahp_forward_equals_reference_on_cuda(dtype, rec):
    for S in list(range(1, 41)) + [62]:
        case = make_ahp_cuda_case(S, 3, 12, 7, S, dtype, rec=rec)
        got, want = run_ahp(case, "fused"), run_ahp(case, "reference")
        for name, g, w in zip(("spikes", "vmem", "isyn", "irec", "iahp", "v_final", "i_final", "s_final",
                               "h_final"), got, want):
            assert_bitwise(g, w, f"{name}, S={S}")


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S,rec", [(1, True), (2, False), (3, True)])
def test_ahp_backward_equals_reference_autograd_on_cuda(dtype, S, rec):
    B, T, N = 3, 17, 6
    case = make_ahp_cuda_case(9, B, T, N, S, dtype, rec=rec)
    names = [k for k in AHP_ARGS + ("s0", "w_rec") if case[k] is not None]
    g = torch.Generator(device=CUDA).manual_seed(2)
    ups = [torch.randn(s, generator=g, device=CUDA, dtype=dtype) for s in
           ((B, T, N), (B, T, N), (B, T, N, S), (B, T, N), (B, N), (B, N, S), (B, N))]
    grads = []
    for backend in ("fused", "reference"):
        leaves = {k: case[k].clone().requires_grad_(True) for k in names}
        out = run_ahp({**case, **leaves}, backend)
        outs = [out[0], out[1], out[2], out[4], out[5], out[6], out[8]]
        grads.append(torch.autograd.grad(outs, list(leaves.values()), ups))
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    for name, a, b in zip(names, *grads):
        assert rel_err(a, b) <= tol, name


@needs_kernels
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
def test_ahp_rockpool_drop_in_on_cuda(rec):
    pytest.importorskip("rockpool")
    from rockpool.nn.modules.torch.ahp_lif_torch import aLIFTorch

    import lif_cuda.rockpool

    g = torch.Generator().manual_seed(0)
    N, S = 16, 2
    kw = dict(tau_mem=5e-3 + 30e-3 * torch.rand(N, generator=g), tau_syn=2e-3 + 10e-3 * torch.rand(N, S, generator=g),
              threshold=0.5 + torch.rand(N, generator=g), has_rec=rec,
              w_rec=0.3 * torch.randn(N, N * S, generator=g) if rec else None,
              w_ahp=-0.2 - 0.6 * torch.rand(N, generator=g), tau_ahp=5e-3 + 30e-3 * torch.rand(N, generator=g))
    theirs, ours = aLIFTorch((N * S, N), **kw).to(CUDA), lif_cuda.rockpool.aLIFTorch((N * S, N), **kw).to(CUDA)
    x = (torch.rand(4, 40, N * S, generator=g) < 0.3).float().mul(2).to(CUDA)
    outs = []
    for net in (theirs, ours):
        xx = x.clone().requires_grad_(True)
        out, state, record = net(xx, record=True)
        (out.sum() + 0.1 * record["vmem"].pow(2).sum() + 0.1 * record["iahp"].sum()).backward()
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


# ------------------------------------------------------------------ the adaptive LIF (SPEC §10)

ADAPTIVE_NAMES = ("input", "v0", "b0", "tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt")


def _adaptive_on(case, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in case.items()}


def _same_decays(case):
    """(N,) bool: the neurons whose alpha and rho are the same on the CPU and CUDA (torch's exp may
    differ in the last bit between the devices; the kernels take the decays as torch computes them;
    neurons are independent, so the others can be compared)."""
    n = case["input"].shape[-1]
    same = torch.ones(n, dtype=torch.bool)
    for k in ("tau_mem", "tau_adapt"):
        tau = case[k].expand(n)
        same &= torch.exp(-case["dt"] / tau) == torch.exp(-case["dt"] / tau.to(CUDA)).cpu()
    return same


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("params,state", [("neuron", "rows"), ("scalar", "shared")])
def test_adaptive_forward_equals_reference_and_cpu_kernel_on_cuda(dtype, params, state):
    """SPEC §10 on CUDA: the fused op's outputs equal the reference's on the GPU and the CPU kernel's,
    bit for bit (a noise tensor; and in-kernel noise under one seed, the same on both devices)."""
    case = make_adaptive_case(101, 3, 45, 300, dtype, params=params, state=state)
    z = (0.2 * torch.randn(case["input"].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)).to(
        dtype)
    gpu = _adaptive_on(case, CUDA)
    got = lif_cuda.adaptive_evolve(**gpu, noise=z.to(CUDA), record=True, backend="fused")
    want = lif_cuda.adaptive_evolve_reference(**gpu, noise=z.to(CUDA), record=True)
    cpu = lif_cuda.adaptive_evolve(**case, noise=z, record=True, backend="fused")
    same = _same_decays(case)
    assert params == "scalar" or same.float().mean() >= 0.25, "CPU and CUDA exp differ on most neurons"
    for name, g, w, c in zip(("spikes", "vmem", "adapt", "v_final", "b_final"), got, want, cpu):
        assert_bitwise(g, w, name)
        assert_bitwise(g.cpu()[..., same], c[..., same], f"{name} (CPU kernel)")
    torch.manual_seed(3)
    k_gpu = lif_cuda.adaptive_evolve(**gpu, noise_std=0.5, record=True, backend="fused")
    torch.manual_seed(3)
    k_cpu = lif_cuda.adaptive_evolve(**case, noise_std=0.5, record=True, backend="fused")
    for g, c in zip(k_gpu, k_cpu):
        assert_bitwise(g.cpu()[..., same], c[..., same], "in-kernel noise, CUDA vs CPU")


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("surrogate", list(SURROGATES.values()), ids=list(SURROGATES))
@pytest.mark.parametrize("lengths", [None, [45, 0, 17]], ids=["all-T", "lengths"])
def test_adaptive_backward_on_cuda(dtype, surrogate, lengths):
    """The CUDA backward against autograd of the reference (SPEC §3's tolerances) and against the CPU
    kernel (the same float64 sums, the same bits), every argument."""
    case = make_adaptive_case(103, 3, 45, 200, dtype)
    g = torch.Generator().manual_seed(2)
    ups = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in [(3, 45, 200)] * 3 + [(3, 200)] * 2]

    def grads(fn, device, **kw):
        c = _adaptive_on(case, device)
        leaves = [c[k].detach().clone().requires_grad_(True) for k in ADAPTIVE_NAMES]
        lens = None if lengths is None else torch.tensor(lengths, device=device)
        out = fn(*leaves[:7], leaves[7], c["dt"], record=True, spike_generation_fn=surrogate, lengths=lens, **kw)
        return torch.autograd.grad(out, leaves, [u.to(device) for u in ups])

    got = grads(lif_cuda.adaptive_evolve, CUDA, backend="fused")
    want = grads(lif_cuda.adaptive_evolve_reference, CUDA)
    cpu = grads(lif_cuda.adaptive_evolve, torch.device("cpu"), backend="fused")
    same = _same_decays(case)
    for name, a, b, c in zip(ADAPTIVE_NAMES, got, want, cpu):
        assert rel_err(a, b) <= GRAD_TOL[dtype], name
        if surrogate is StepPWL:  # the other surrogate's exp differs between the devices
            assert_bitwise(a.cpu()[..., same], c[..., same], f"grad {name} (CPU kernel)")
