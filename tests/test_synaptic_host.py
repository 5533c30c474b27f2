"""The synaptic CUDA kernels' per-thread code, run on the host: csrc/cuda/synaptic_thread.h with g++.

As tests/test_core_host.py does for the LIF kernels: the CUDA kernels (csrc/cuda/synaptic_kernel_cuda.cu)
only compute a thread index and call `syn_forward_thread` / `syn_backward_thread` / the gradient-sum
threads of synaptic_thread.h, which call lif_core.h's step functions. This test compiles that header
with g++ (contraction off, no fast-math), runs it thread by thread on raw arrays as the grid would,
drives the recurrent time loop as csrc/synaptic_op_glue.h does (at::linear per step on the host, the
step kernel, the reverse loop with one product per step, dL/dw_rec at the end), and checks it:

- forward bit for bit against the reference computed with the CUDA reduction's order of the synapse
  sum (lif_core.h cuda_torch_sum; emulated here in torch ops), and, for S = 1 and 2 (where the CPU and
  CUDA orders agree), against the fused CPU op, forward and backward, bit for bit;
- backward against autograd of the reference (float64 and float32 tolerances of the gradient tests).

The CUDA order itself (Reduce.cuh's lanes and warp tree) is derived from the source: only a GPU run
(tests/test_cuda_synaptic.py) checks it against torch.sum on CUDA.
"""
import ctypes
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_core_host import IO_CODES, assert_equal, build_harness, rel_err

import lif_cuda
from lif_cuda.reference import PeriodicExponential, StepPWL, synaptic_evolve_reference, tau_to_decay

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
HEADERS = sorted((CSRC / "core").glob("*.h")) + [CSRC / "cuda" / "lif_thread.h", CSRC / "cuda" / "synaptic_thread.h"]

HARNESS = r"""
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "core/grad_sums.h"
#include "core/switch.h"
#include "cuda/synaptic_thread.h"

#include <vector>

using namespace lif;
using namespace lif::gpu;

// The harness's flags as csrc/host/ turns the parameters' shapes into strides: scalars bit 1/2/4
// for a () alpha/threshold/bias; beta_mode 0 (N,S), 1 (1,S), 2 ().
template <typename T>
static PerNeuron<T> neuron_param(const void* p, int scalars, int bit) {
  return PerNeuron<T>{static_cast<const T*>(p), (scalars & bit) ? 0 : 1};
}
template <typename T>
static PerSynapse<T> synapse_param(const void* p, int beta_mode, int64_t S) {
  return PerSynapse<T>{static_cast<const T*>(p), beta_mode == 0 ? S : 0, beta_mode == 2 ? 0 : 1};
}

template <typename IT, typename T>
static void fwd_t(const void* x, const void* noise, int kernel_noise, uint64_t seed, uint64_t offset,
                  double noise_scale, const void* v0, int64_t v0_sb, const void* i0, int64_t i0_sb,
                  const void* r, const void* alpha, const void* beta, const void* thr,
                  const void* bias, int scalars, int beta_mode, double max_spikes, void* s_out,
                  void* s_last, void* vmem_out, void* isyn_out, void* irec_out, void* u_out,
                  void* i_pre_out, void* v_final, void* i_final, const int64_t* lengths, int64_t B,
                  int64_t Tn, int64_t N, int64_t S, int64_t t0, int64_t steps) {
  SynForwardArgs<IT, T> a{};
  a.x = static_cast<const IT*>(x);
  a.noise.tensor = static_cast<const T*>(noise);
  a.noise.mode = noise ? kNoiseTensor : (kernel_noise ? kNoiseKernel : kNoNoise);
  a.noise.key.seed = seed;
  a.noise.key.offset = offset;
  a.noise.scale = noise_scale;
  a.v0 = static_cast<const T*>(v0);
  a.v0_stride_b = v0_sb;
  a.i0 = static_cast<const T*>(i0);
  a.i0_stride_b = i0_sb;
  a.r = static_cast<const T*>(r);
  a.alpha = neuron_param<T>(alpha, scalars, 1);
  a.thr = neuron_param<T>(thr, scalars, 2);
  a.bias = neuron_param<T>(bias, scalars, 4);
  a.beta = synapse_param<T>(beta, beta_mode, S);
  a.max_spikes = max_spikes;
  a.s_out = static_cast<IT*>(s_out);
  a.s_last = static_cast<T*>(s_last);
  a.vmem_out = static_cast<T*>(vmem_out);
  a.isyn_out = static_cast<T*>(isyn_out);
  a.irec_out = static_cast<T*>(irec_out);
  a.u_out = static_cast<T*>(u_out);
  a.i_pre_out = static_cast<T*>(i_pre_out);
  a.v_final = static_cast<T*>(v_final);
  a.i_final = static_cast<T*>(i_final);
  a.lengths = lengths;
  a.B = B;
  a.Tn = Tn;
  a.N = N;
  a.S = S;
  a.t0 = t0;
  a.steps = steps;
  NOISE_SWITCH(a.noise.mode, NOISE, [&] {
    SYNAPSES_SWITCH(S, S_FIXED, [&] {
      for (int64_t idx = 0; idx < B * N; ++idx) syn_forward_thread<IT, T, NOISE, S_FIXED>(a, idx);
    });
  });
}

template <typename IT, typename T>
static void bwd_t(const void* gs, int64_t sb, int64_t st, int64_t sn, const void* gs_rec,
                  const void* gw, const void* gi, const void* gr, const void* u, const void* aa,
                  const void* v0, int64_t v0_sb, const void* s0, int64_t s0_sb, const void* alpha,
                  const void* beta, const void* thr, int scalars, int beta_mode, double window,
                  double max_spikes, int surrogate, void* W, void* I, void* g_in, void* g_r,
                  void* g_u, void* s_prev, void* partial, const int64_t* lengths, int64_t B,
                  int64_t Tn, int64_t N, int64_t S, int64_t t0, int64_t steps) {
  SynBackwardArgs<IT, T> a{};
  a.gs = static_cast<const IT*>(gs);
  a.gs_stride_b = sb;
  a.gs_stride_t = st;
  a.gs_stride_n = sn;
  a.gs_rec = static_cast<const T*>(gs_rec);
  a.gw = static_cast<const T*>(gw);
  a.gi = static_cast<const T*>(gi);
  a.gr = static_cast<const T*>(gr);
  a.u = static_cast<const T*>(u);
  a.i_pre = static_cast<const T*>(aa);
  a.v0 = static_cast<const T*>(v0);
  a.v0_stride_b = v0_sb;
  a.s0 = static_cast<const T*>(s0);
  a.s0_stride_b = s0_sb;
  a.alpha = neuron_param<T>(alpha, scalars, 1);
  a.thr = neuron_param<T>(thr, scalars, 2);
  a.beta = synapse_param<T>(beta, beta_mode, S);
  a.window = window;
  a.max_spikes = max_spikes;
  a.surrogate = surrogate;
  a.W = static_cast<T*>(W);
  a.I = static_cast<T*>(I);
  a.g_in = static_cast<IT*>(g_in);
  a.g_r = static_cast<T*>(g_r);
  a.g_u = static_cast<T*>(g_u);
  a.s_prev = static_cast<T*>(s_prev);
  a.partial = static_cast<double*>(partial);
  std::vector<T> beta_sums(S > 2 ? B * N * S : 0);  // as csrc/host/synaptic_op.h allocates it
  a.beta_sums = S > 2 ? beta_sums.data() : nullptr;
  a.lengths = lengths;
  a.B = B;
  a.Tn = Tn;
  a.N = N;
  a.S = S;
  a.t0 = t0;
  a.steps = steps;
  SURROGATE_SWITCH(surrogate, SURR, [&] {
    SYNAPSES_SWITCH(S, S_FIXED, [&] {
      for (int64_t idx = 0; idx < B * N; ++idx) syn_backward_thread<IT, T, SURR, S_FIXED>(a, idx);
    });
  });
}

template <typename T>
static void sum_t(void* partial, int64_t M, int64_t S, int collapse, void* dst, const void* decay,
                  const void* tau, double dt, int64_t B) {
  GradSum<T> s{static_cast<double*>(partial), M, S, collapse, static_cast<T*>(dst),
               static_cast<const T*>(decay), static_cast<const T*>(tau), dt};
  for (int64_t m = 0; m < M; ++m) grad_sum_batch(s, B, m);
  for (int64_t k = 0; k < grad_sum_outputs(s); ++k) grad_sum_neurons(s, k);
}

#define LIF_IO_SWITCH(io, F, ...)                         \
  switch (io) {                                           \
    case 0: F<float, float>(__VA_ARGS__); break;          \
    case 1: F<double, double>(__VA_ARGS__); break;        \
    case 2: F<c10::Half, float>(__VA_ARGS__); break;      \
    default: F<c10::BFloat16, float>(__VA_ARGS__); break; \
  }

extern "C" {
void syn_host_forward(int io, const void* x, const void* noise, int kernel_noise, uint64_t seed,
                      uint64_t offset, double noise_scale, const void* v0, int64_t v0_sb,
                      const void* i0, int64_t i0_sb, const void* r, const void* alpha,
                      const void* beta, const void* thr, const void* bias, int scalars,
                      int beta_mode, double max_spikes, void* s_out, void* s_last, void* vmem_out,
                      void* isyn_out, void* irec_out, void* u_out, void* i_pre_out, void* v_final,
                      void* i_final, const int64_t* lengths, int64_t B, int64_t Tn, int64_t N,
                      int64_t S, int64_t t0, int64_t steps) {
  LIF_IO_SWITCH(io, fwd_t, x, noise, kernel_noise, seed, offset, noise_scale, v0, v0_sb, i0, i0_sb,
                r, alpha, beta, thr, bias, scalars, beta_mode, max_spikes, s_out, s_last, vmem_out,
                isyn_out, irec_out, u_out, i_pre_out, v_final, i_final, lengths, B, Tn, N, S, t0,
                steps)
}

void syn_host_backward(int io, const void* gs, int64_t sb, int64_t st, int64_t sn,
                       const void* gs_rec, const void* gw, const void* gi, const void* gr,
                       const void* u, const void* a, const void* v0, int64_t v0_sb,
                       const void* s0, int64_t s0_sb, const void* alpha, const void* beta,
                       const void* thr, int scalars, int beta_mode, double window,
                       double max_spikes, int surrogate, void* W, void* I, void* g_in, void* g_r,
                       void* g_u, void* s_prev, void* partial, const int64_t* lengths, int64_t B,
                       int64_t Tn, int64_t N, int64_t S, int64_t t0, int64_t steps) {
  LIF_IO_SWITCH(io, bwd_t, gs, sb, st, sn, gs_rec, gw, gi, gr, u, a, v0, v0_sb, s0, s0_sb, alpha,
                beta, thr, scalars, beta_mode, window, max_spikes, surrogate, W, I, g_in, g_r, g_u,
                s_prev, partial, lengths, B, Tn, N, S, t0, steps)
}

void syn_host_grad_sum(int f64, void* partial, int64_t M, int64_t S, int collapse, void* dst,
                       const void* decay, const void* tau, double dt, int64_t B) {
  if (f64) {
    sum_t<double>(partial, M, S, collapse, dst, decay, tau, dt, B);
  } else {
    sum_t<float>(partial, M, S, collapse, dst, decay, tau, dt, B);
  }
}

// The two orders of the synapse sum, row by row: sum over the last dimension of rows x (rows, S).
void syn_host_row_sums(int f64, int cuda_order, const void* x, int64_t rows, int64_t S, void* out) {
  for (int64_t j = 0; j < rows; ++j) {
    if (f64) {
      const double* p = static_cast<const double*>(x) + j * S;
      static_cast<double*>(out)[j] = cuda_order ? cuda_torch_sum(p, S) : cpu_torch_sum(p, S);
    } else {
      const float* p = static_cast<const float*>(x) + j * S;
      static_cast<float*>(out)[j] = cuda_order ? cuda_torch_sum(p, S) : cpu_torch_sum(p, S);
    }
  }
}
}
"""


@pytest.fixture(scope="module")
def lib():
    h = build_harness("synaptic_thread", HARNESS, HEADERS)
    p, i, u64, d, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_double, ctypes.c_int64
    h.syn_host_forward.restype = None
    h.syn_host_forward.argtypes = [i, p, p, i, u64, u64, d, p, i64, p, i64, p, p, p, p, p, i, i, d, p, p, p, p, p,
                                   p, p, p, p, p, i64, i64, i64, i64, i64, i64]
    h.syn_host_backward.restype = None
    h.syn_host_backward.argtypes = [i, p, i64, i64, i64, p, p, p, p, p, p, p, i64, p, i64, p, p, p, i, i, d, d, i,
                                    p, p, p, p, p, p, p, p, i64, i64, i64, i64, i64, i64]
    h.syn_host_grad_sum.restype = None
    h.syn_host_grad_sum.argtypes = [i, p, i64, i64, i, p, p, p, d, i64]
    h.syn_host_row_sums.restype = None
    h.syn_host_row_sums.argtypes = [i, i, p, i64, i64, p]
    return h


def _ptr(t):
    return None if t is None else t.data_ptr()


def _beta_mode(tau_syn):
    if tau_syn.dim() == 0:
        return 2
    return 1 if tau_syn.shape[0] == 1 else 0


def _scalars(alpha, thr, bias):
    return int(alpha.dim() == 0) | 2 * int(thr.dim() == 0) | 4 * int(bias is not None and bias.dim() == 0)


def host_forward(lib, x, v0, i0, s0, tau_mem, tau_syn, thr, bias, *, w_rec=None, noise=None, key=None,
                 noise_scale=0.0, dt=1e-3, max_spikes=2.0**16, record=True, save=True, lengths=None):
    """What the CUDA forward op computes (synaptic_op_glue.h's loop around the CUDA threads), on the
    host: the outputs of torch.ops.lif_cuda.synaptic_forward (lengths: int64 (B,) or None)."""
    lengths = None if lengths is None else lengths.to(torch.int64).contiguous()
    B, T, _ = x.shape
    N, S = i0.shape[-2:]
    ct = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    alpha, beta = tau_to_decay(dt, tau_mem), tau_to_decay(dt, tau_syn)
    x, v0, i0, alpha, beta, thr, bias = (t.contiguous() for t in (x, v0, i0, alpha, beta, thr, bias))
    z = None if noise is None else noise.to(ct).contiguous()
    spikes = torch.empty((B, T, N), dtype=x.dtype)
    vmem, u = torch.empty((B, T, N), dtype=ct), torch.empty((B, T, N), dtype=ct)
    isyn, irec, a = (torch.zeros((B, T, N, S), dtype=ct) for _ in range(3))
    v_final, i_final = torch.empty((B, N), dtype=ct), torch.empty((B, N, S), dtype=ct)
    s_final = (s0.expand(B, N) if s0 is not None else torch.zeros(B, N, dtype=ct)).contiguous().clone()
    seed, offset = (0, 0) if key is None else (int(k) & (2**64 - 1) for k in key.tolist())
    steps = [(0, T, None)] if w_rec is None else [(t, 1, "r") for t in range(T)]
    for t0, n_steps, rec in steps:
        r = F.linear(s_final, w_rec.t()).contiguous() if rec else None
        first = t0 == 0
        lib.syn_host_forward(
            IO_CODES[x.dtype], _ptr(x), _ptr(z), int(key is not None and noise_scale > 0), seed, offset, noise_scale,
            _ptr(v0 if first else v_final), (N if v0.dim() == 2 else 0) if first else N,
            _ptr(i0 if first else i_final), (N * S if i0.dim() == 3 else 0) if first else N * S, _ptr(r),
            _ptr(alpha), _ptr(beta), _ptr(thr), _ptr(bias), _scalars(alpha, thr, bias), _beta_mode(tau_syn), max_spikes,
            _ptr(spikes), _ptr(s_final), _ptr(vmem) if record else None, _ptr(isyn) if record else None,
            _ptr(irec) if record and r is not None else None, _ptr(u) if save else None, _ptr(a) if save else None,
            _ptr(v_final), _ptr(i_final), _ptr(lengths), B, T, N, S, t0, n_steps,
        )
    return spikes, vmem, isyn, irec, v_final, i_final, s_final, u, a


def host_backward(lib, gs, gw, gi, gr, gvf, gif, u, a, v0, s0, tau_mem, tau_syn, thr, *, w_rec=None, dt=1e-3,
                  window=0.5, max_spikes=2.0**16, surrogate=0, scalar_bias=False, i0_shared=True, lengths=None):
    """What the CUDA backward op computes, on the host: torch.ops.lif_cuda.synaptic_backward's outputs
    (g_in, g_v0, g_i0, g_s0, g_tau_mem, g_tau_syn, g_thr, g_bias, g_w_rec, g_noise)."""
    lengths = None if lengths is None else lengths.to(torch.int64).contiguous()
    B, T, N, S = a.shape
    ct = u.dtype
    alpha, beta = tau_to_decay(dt, tau_mem), tau_to_decay(dt, tau_syn)
    u, a, v0, alpha, beta, thr = (t.contiguous() for t in (u, a, v0, alpha, beta, thr))
    gw, gi, gr = (None if t is None else t.contiguous() for t in (gw, gi, gr))
    s0c = None if s0 is None else s0.contiguous()
    W = (gvf.clone() if gvf is not None else torch.zeros(B, N, dtype=ct)).contiguous()
    I_ = (gif.clone() if gif is not None else torch.zeros(B, N, S, dtype=ct)).contiguous()
    g_in = torch.empty((B, T, N * S), dtype=gs.dtype)
    g_u = torch.empty((B, T, N), dtype=ct)
    partial = torch.zeros(3 * B * N + B * N * S, dtype=torch.float64)  # float64 sums, as the op's
    g_r = torch.empty((B, T, N * S), dtype=ct) if w_rec is not None else None
    s_prev = torch.empty((B, T, N), dtype=ct) if w_rec is not None else None
    sb, st, sn = gs.stride()
    steps = [(0, T, False)] if w_rec is None else [(t, 1, t < T - 1) for t in range(T - 1, -1, -1)]
    for t0, n_steps, with_rec in steps:
        gs_rec = (g_r[:, t0 + 1] @ w_rec.t()).contiguous() if with_rec else None
        lib.syn_host_backward(
            IO_CODES[gs.dtype], _ptr(gs), sb, st, sn if N > 1 else 1, _ptr(gs_rec), _ptr(gw), _ptr(gi),
            _ptr(gr) if w_rec is not None else None, _ptr(u), _ptr(a), _ptr(v0), N if v0.dim() == 2 else 0,
            _ptr(s0c), (N if s0c.dim() == 2 else 0) if s0c is not None else 0, _ptr(alpha), _ptr(beta), _ptr(thr),
            _scalars(alpha, thr, None), _beta_mode(tau_syn), window, max_spikes, surrogate, _ptr(W), _ptr(I_),
            _ptr(g_in), _ptr(g_r), _ptr(g_u), _ptr(s_prev), _ptr(partial), _ptr(lengths), B, T, N, S, t0, n_steps,
        )
    f64 = int(ct == torch.float64)
    BN = B * N

    def grad_sum(rows, M, collapse, shape, decay=None, tau=None):
        dst = torch.empty(shape, dtype=ct)
        lib.syn_host_grad_sum(f64, _ptr(rows), M, S, collapse, _ptr(dst), _ptr(decay), _ptr(tau), dt, B)
        return dst

    coll = lambda t: 2 if t.dim() == 0 else 0  # noqa: E731
    g_tau_mem = grad_sum(partial[:BN], N, coll(tau_mem), tau_mem.shape, alpha, tau_mem.contiguous())
    g_thr = grad_sum(partial[BN:2 * BN], N, coll(thr), thr.shape)
    g_bias = grad_sum(partial[2 * BN:3 * BN], N, 2 if scalar_bias else 0, () if scalar_bias else (N,))
    beta_coll = {0: 0, 1: 1, 2: 2}[_beta_mode(tau_syn)]
    g_tau_syn = grad_sum(partial[3 * BN:], N * S, beta_coll, tau_syn.shape, beta, tau_syn.contiguous())
    g_v0 = W if v0.dim() == 2 else W.sum(0)  # a shared state's rows: summed by ATen, as the op does
    g_i0 = I_.sum(0) if i0_shared else I_
    g_w_rec = g_s0 = None
    if w_rec is not None:
        g_w_rec = s_prev.reshape(B * T, N).t() @ g_r.reshape(B * T, N * S)
        if s0 is not None:
            rows = (g_r[:, 0] @ w_rec.t()).contiguous()
            g_s0 = rows if s0.dim() == 2 else rows.sum(0)
    return g_in, g_v0, g_i0, g_s0, g_tau_mem, g_tau_syn, g_thr, g_bias, g_w_rec, g_u


def cuda_order_sum(i):
    """The synapse sum in the CUDA reduction's order (lif_core.h cuda_torch_sum), in torch ops."""
    S = i.shape[-1]
    P = 1
    while P * 2 <= S and P < 32:
        P *= 2
    zero = torch.zeros_like(i[..., 0])
    lanes = []
    for lane in range(P):
        acc = [zero] * 4
        for j, idx in enumerate(range(lane, S, P)):
            acc[j % 4] = acc[j % 4] + i[..., idx]
        lanes.append(((acc[0] + acc[1]) + acc[2]) + acc[3])
    off = 1
    while off < P:
        for lane in range(P - off):
            lanes[lane] = lanes[lane] + lanes[lane + off]
        off *= 2
    return lanes[0]


def make_case(seed, B, T, N, S, dtype, *, tau_syn_shape="full", scalars=False, rec=False, s0=True, i0_rows=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    n = lambda *s: torch.randn(s, generator=g, dtype=torch.float64)  # noqa: E731
    ts_shape = {"full": (N, S), "row": (1, S), "scalar": ()}[tau_syn_shape]
    p_shape = () if scalars else (N,)
    case = dict(
        x=0.4 + 0.8 * n(B, T, N * S),
        v0=0.5 * n(B, N),
        i0=0.3 * n(B, N, S) if i0_rows else 0.3 * n(N, S),
        s0=(r(N) < 0.3).double() if s0 else None,
        tau_mem=5e-3 + 45e-3 * r(*p_shape),
        tau_syn=2e-3 + 20e-3 * r(*ts_shape),
        thr=0.3 + 1.2 * r(*p_shape),
        bias=0.1 * n(*p_shape),
        w_rec=0.3 * n(N, N * S) if rec else None,
    )
    return {k: None if v is None else v.to(dtype) for k, v in case.items()}


def reference(case, *, noise=None, window=0.5, surrogate=StepPWL, max_spikes=2.0**16, cuda_order=True, lengths=None):
    return synaptic_evolve_reference(
        case["x"], case["v0"], case["i0"], case["tau_mem"], case["tau_syn"], case["thr"], case["bias"], 1e-3,
        w_rec=case["w_rec"], s0=case["s0"], noise=noise, learning_window=window, max_spikes_per_dt=max_spikes,
        spike_generation_fn=surrogate, record=True, synapse_sum=cuda_order_sum if cuda_order else None,
        lengths=lengths,
    )


def _host_fwd(lib, case, **kw):
    return host_forward(lib, case["x"], case["v0"], case["i0"], case["s0"], case["tau_mem"], case["tau_syn"],
                        case["thr"], case["bias"], w_rec=case["w_rec"], **kw)


NAMES = ("spikes", "vmem", "isyn", "irec", "v_final", "i_final", "s_final")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S", [1, 2, 3, 4, 5, 7, 8, 13, 33])
def test_row_sums_follow_their_orders(lib, dtype, S):
    """cpu_torch_sum is torch.sum on the CPU; cuda_torch_sum is the CUDA order's emulation above."""
    x = torch.randn(64, S, dtype=dtype) * torch.logspace(-4, 4, S, dtype=dtype)
    for cuda_order, want in ((0, x.sum(-1)), (1, cuda_order_sum(x))):
        got = torch.empty(64, dtype=dtype)
        lib.syn_host_row_sums(int(dtype == torch.float64), cuda_order, _ptr(x), 64, S, _ptr(got))
        assert_equal(got, want, f"{'cuda' if cuda_order else 'cpu'} order, S={S}")
    if S >= 3:  # the two orders differ: the test above can tell them apart
        assert not torch.equal(x.sum(-1), cuda_order_sum(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S", [1, 2, 3, 5])
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("shapes", ["full", "row-scalar"])
def test_forward_threads_equal_reference(lib, dtype, S, rec, shapes):
    B, T, N = 3, 19, 6
    case = make_case(1 + S, B, T, N, S, dtype, rec=rec, tau_syn_shape="full" if shapes == "full" else "row",
                     scalars=shapes != "full", i0_rows=shapes == "full")
    got = _host_fwd(lib, case)
    want = reference(case)
    for name, g_, w_ in zip(NAMES, got, want):
        if name == "irec" and not rec:
            continue
        assert_equal(g_, w_, name)
    assert (got[0] > 0).any() and (got[0] == 0).any()
    # The saved pre-spike membrane and pre-decay currents rebuild the records exactly.
    u, a = got[7], got[8]
    thr = case["thr"]
    assert_equal(u - got[0] * thr, got[1], "u - s*thr")
    assert_equal(a * tau_to_decay(1e-3, case["tau_syn"]), got[2], "a * beta")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_forward_threads_noise(lib, dtype):
    """A noise tensor, and the in-kernel Philox stream (the same as the LIF kernels', lif_cuda.noise)."""
    B, T, N, S = 2, 11, 5, 2
    case = make_case(3, B, T, N, S, dtype, rec=True)
    z = 0.2 * torch.randn(B, T, N, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(dtype)
    got = _host_fwd(lib, case, noise=z)
    want = reference(case, noise=z)
    for name, g_, w_ in zip(NAMES, got, want):
        assert_equal(g_, w_, f"{name} (noise tensor)")
    key = torch.tensor([1234, 5], dtype=torch.int64)
    scale = 0.5 * (1e-3**0.5)
    got = _host_fwd(lib, case, key=key, noise_scale=scale)
    want = reference(case, noise=lif_cuda.noise.kernel_noise((B, T, N), scale, key, dtype=dtype))
    for name, g_, w_ in zip(NAMES, got, want):
        assert_equal(g_, w_, f"{name} (in-kernel noise)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("S,rec,shapes", [(1, False, "full"), (2, True, "full"), (3, True, "row-scalar"),
                                          (4, False, "scalar-syn")])
def test_backward_threads_match_reference_autograd(lib, dtype, surrogate, S, rec, shapes):
    B, T, N = 2, 15, 4
    ts = {"full": "full", "row-scalar": "row", "scalar-syn": "scalar"}[shapes]
    case = make_case(7 + S, B, T, N, S, dtype, rec=rec, tau_syn_shape=ts, scalars=shapes == "row-scalar",
                     i0_rows=shapes == "full")
    g = torch.Generator().manual_seed(99)
    rn = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    z = 0.1 * rn(B, T, N)
    gs, gw, gi, gr, gvf, gif = rn(B, T, N), rn(B, T, N), rn(B, T, N, S), rn(B, T, N, S), rn(B, N), rn(B, N, S)
    names = ["x", "v0", "i0", "s0", "tau_mem", "tau_syn", "thr", "bias"] + (["w_rec"] if rec else [])
    leaves = {k: case[k].clone().requires_grad_(True) for k in names}
    zl = z.clone().requires_grad_(True)
    out = reference({**case, **leaves}, noise=zl, surrogate=surrogate)
    outs = [out[0], out[1], out[2], out[4], out[5]] + ([out[3]] if rec else [])
    ups = [gs, gw, gi, gvf, gif] + ([gr] if rec else [])
    want = dict(zip(names + ["noise"], torch.autograd.grad(outs, [*leaves.values(), zl], ups, allow_unused=True)))

    fwd = _host_fwd(lib, case, noise=z)
    surr = lif_cuda.ops.SURROGATE_IDS[surrogate.__name__]
    got = host_backward(lib, gs, gw, gi, gr if rec else None, gvf, gif, fwd[7], fwd[8], case["v0"], case["s0"],
                        case["tau_mem"], case["tau_syn"], case["thr"], w_rec=case["w_rec"], surrogate=surr,
                        scalar_bias=case["bias"].dim() == 0, i0_shared=case["i0"].dim() == 2)
    got = dict(zip(["x", "v0", "i0", "s0", "tau_mem", "tau_syn", "thr", "bias", "w_rec", "noise"], got))
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    for name in names + ["noise"]:
        if name == "s0" and not rec:
            continue
        assert got[name].shape == want[name].shape, name
        assert want[name].abs().sum() > 0, f"{name}: no gradient reached it"
        err = rel_err(got[name], want[name])
        assert err <= tol, f"grad {name}: relative error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("io", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["f32", "f64", "f16", "bf16"])
@pytest.mark.parametrize("S,rec", [(1, True), (2, False), (2, True)])
@pytest.mark.parametrize("surrogate", [0, 1], ids=["StepPWL", "PeriodicExponential"])
def test_threads_equal_fused_cpu_op(lib, io, S, rec, surrogate):
    """Thread by thread (the CUDA way) and tile by tile (the CPU kernels) give the same bits, forward
    and backward with every parameter-gradient sum, where the two sum orders agree (S <= 2)."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    B, T, N = 3, 17, 9
    ct = torch.float32 if io in (torch.float16, torch.bfloat16) else io
    case = make_case(5, B, T, N, S, ct, rec=rec)
    case["x"] = case["x"].to(io)
    op = torch.ops.lif_cuda
    key = torch.tensor([42, 3], dtype=torch.int64)
    for kw in (dict(key=None, noise_scale=0.0), dict(key=key, noise_scale=0.05)):
        want = op.synaptic_forward(case["x"], case["v0"], case["i0"], case["s0"], case["tau_mem"], case["tau_syn"],
                                   case["thr"], case["bias"], case["w_rec"], None, kw["key"], 1e-3, kw["noise_scale"],
                                   0.5, 2.0**16, surrogate, True, True)
        got = _host_fwd(lib, case, **kw)
        for name, a_, b_ in zip(NAMES + ("u", "a"), got, (*want[:7], want[7], want[8])):
            if name == "irec" and not rec:
                continue
            assert_equal(a_, b_, f"forward {name} (key={kw['key'] is not None})")
    u, a = got[7], got[8]
    g = torch.Generator().manual_seed(1)
    rn = lambda *s: torch.randn(s, generator=g).to(ct)  # noqa: E731
    gs = rn(B, T, N).to(io)
    ups = dict(gw=rn(B, T, N), gi=rn(B, T, N, S), gr=rn(B, T, N, S) if rec else None, gvf=rn(B, N), gif=rn(B, N, S))
    want = op.synaptic_backward(gs, ups["gw"], ups["gi"], ups["gr"], ups["gvf"], ups["gif"], u, a, case["v0"],
                                case["s0"], case["tau_mem"], case["tau_syn"], case["thr"], case["w_rec"], 1e-3, 0.5,
                                2.0**16, surrogate, False, True, True)
    got = host_backward(lib, gs, ups["gw"], ups["gi"], ups["gr"], ups["gvf"], ups["gif"], u, a, case["v0"], case["s0"],
                        case["tau_mem"], case["tau_syn"], case["thr"], w_rec=case["w_rec"], surrogate=surrogate)
    names = ("g_in", "g_v0", "g_i0", "g_s0", "g_tau_mem", "g_tau_syn", "g_thr", "g_bias", "g_w_rec", "g_noise")
    for name, a_, b_ in zip(names, got, want):
        if a_ is None:
            assert b_.numel() == 0 or not rec or name == "g_s0", name
            continue
        if name in ("g_w_rec", "g_s0"):
            # Products by ATen (mm) from bit-identical operands: compare to float rounding of the product.
            assert rel_err(a_, b_) <= {torch.float64: 1e-14}.get(ct, 1e-6), name
            continue
        assert_equal(a_, b_, f"backward {name}")


# ------------------------------------------------------------------ lengths (SPEC §8)
# Row lengths: T, 0, a part, one step (the recurrent time loop: calls before, at and after a row's end).
LENGTHS = [17, 0, 9, 1]


@pytest.mark.parametrize("io", [torch.float32, torch.float64, torch.float16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("S,rec", [(1, True), (2, False), (2, True)])
def test_threads_with_lengths_equal_fused_cpu_op(lib, io, S, rec):
    """With per-row lengths, thread by thread and tile by tile give the same bits, forward (the padding
    too, u and a included) and backward with every parameter-gradient sum (S <= 2)."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    B, T, N = len(LENGTHS), 17, 7
    ct = torch.float32 if io == torch.float16 else io
    case = make_case(11, B, T, N, S, ct, rec=rec, i0_rows=True)
    case["x"] = case["x"].to(io)
    lengths = torch.tensor(LENGTHS)
    op = torch.ops.lif_cuda
    want = op.synaptic_forward(case["x"], case["v0"], case["i0"], case["s0"], case["tau_mem"], case["tau_syn"],
                               case["thr"], case["bias"], case["w_rec"], None, None, 1e-3, 0.0, 0.5, 2.0**16, 0,
                               True, True, lengths)
    got = _host_fwd(lib, case, lengths=lengths)
    for name, a_, b_ in zip(NAMES + ("u", "a"), got, (*want[:7], want[7], want[8])):
        if name == "irec" and not rec:
            continue
        assert_equal(a_, b_, f"forward {name}")
    assert (got[0][0] > 0).any() and not got[0][1].any()
    u, a = got[7], got[8]
    g = torch.Generator().manual_seed(2)
    rn = lambda *s: torch.randn(s, generator=g).to(ct)  # noqa: E731
    gs = rn(B, T, N).to(io)
    ups = dict(gw=rn(B, T, N), gi=rn(B, T, N, S), gr=rn(B, T, N, S) if rec else None, gvf=rn(B, N), gif=rn(B, N, S))
    want = op.synaptic_backward(gs, ups["gw"], ups["gi"], ups["gr"], ups["gvf"], ups["gif"], u, a, case["v0"],
                                case["s0"], case["tau_mem"], case["tau_syn"], case["thr"], case["w_rec"], 1e-3, 0.5,
                                2.0**16, 0, False, False, True, lengths)
    got = host_backward(lib, gs, ups["gw"], ups["gi"], ups["gr"], ups["gvf"], ups["gif"], u, a, case["v0"], case["s0"],
                        case["tau_mem"], case["tau_syn"], case["thr"], w_rec=case["w_rec"], i0_shared=False,
                        lengths=lengths)
    names = ("g_in", "g_v0", "g_i0", "g_s0", "g_tau_mem", "g_tau_syn", "g_thr", "g_bias", "g_w_rec", "g_noise")
    for name, a_, b_ in zip(names, got, want):
        if a_ is None:
            continue
        if name in ("g_w_rec", "g_s0"):  # products by ATen (mm) from bit-identical operands
            assert rel_err(a_, b_) <= {torch.float64: 1e-14}.get(ct, 1e-6), name
            continue
        assert_equal(a_, b_, f"backward {name}")
    for b, L in enumerate(LENGTHS):
        assert not got[0][b, L:].any() and not got[9][b, L:].any(), f"row {b}: padding input/noise gradient"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S,rec", [(3, False), (3, True), (5, True)])
def test_threads_with_lengths_match_reference(lib, dtype, S, rec):
    """With lengths and the CUDA order of the synapse sum (S > 2): forward bit for bit against the masked
    reference, backward against its autograd, gradients arriving on the padding included."""
    B, T, N = len(LENGTHS), 17, 4
    case = make_case(12 + S, B, T, N, S, dtype, rec=rec, i0_rows=True)
    lengths = torch.tensor(LENGTHS)
    g = torch.Generator().manual_seed(98)
    rn = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    z = 0.1 * rn(B, T, N)
    got_fwd = _host_fwd(lib, case, noise=z, lengths=lengths)
    want = reference(case, noise=z, lengths=lengths)
    for name, g_, w_ in zip(NAMES, got_fwd, want):
        if name == "irec" and not rec:
            continue
        assert_equal(g_, w_, name)
    gs, gw, gi, gr, gvf, gif = rn(B, T, N), rn(B, T, N), rn(B, T, N, S), rn(B, T, N, S), rn(B, N), rn(B, N, S)
    names = ["x", "v0", "i0", "tau_mem", "tau_syn", "thr", "bias"] + (["s0", "w_rec"] if rec else [])
    leaves = {k: case[k].clone().requires_grad_(True) for k in names}
    zl = z.clone().requires_grad_(True)
    out = reference({**case, **leaves}, noise=zl, lengths=lengths)
    outs = [out[0], out[1], out[2], out[4], out[5]] + ([out[3]] if rec else [])
    ups = [gs, gw, gi, gvf, gif] + ([gr] if rec else [])
    want = dict(zip(names + ["noise"], torch.autograd.grad(outs, [*leaves.values(), zl], ups)))
    got = host_backward(lib, gs, gw, gi, gr if rec else None, gvf, gif, got_fwd[7], got_fwd[8], case["v0"],
                        case["s0"], case["tau_mem"], case["tau_syn"], case["thr"], w_rec=case["w_rec"],
                        i0_shared=False, lengths=lengths)
    got = dict(zip(["x", "v0", "i0", "s0", "tau_mem", "tau_syn", "thr", "bias", "w_rec", "noise"], got))
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    for name in want:
        assert want[name].abs().sum() > 0, f"{name}: no gradient reached it"
        err = rel_err(got[name], want[name])
        assert err <= tol, f"grad {name}: relative error {err:.2e} > {tol:.0e}"
