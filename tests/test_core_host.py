"""The CUDA kernels' per-thread code, run on the host: csrc/cuda/lif_thread.h compiled with g++.

The CUDA kernels (csrc/cuda/lif.cu) only compute a thread index and call `forward_thread` /
`backward_thread` of lif_thread.h, which call csrc/core/'s step functions, then the gradient sums of
csrc/core/grad_sums.h. This test compiles that very header with g++ (contraction off, no fast-math: the
flags of SPEC §1) into a small shared library, runs it thread by thread on raw arrays exactly as the
grid would (one (batch row, neuron) per thread, time loop inside, the same compile-time variants
picked from the same runtime flags), and checks it against the reference: forward bit for bit,
gradients to the tolerances of the gradient tests, and against the fused CPU op bit for bit. So the
GPU code path is exercised in every CI run, on a machine without a GPU.
"""
import ctypes
import hashlib
import inspect
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension

import lif_cuda
from lif_cuda.noise import kernel_noise
from lif_cuda.reference import PeriodicExponential, StepPWL, lif_evolve_reference, tau_to_decay

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
HEADERS = sorted((CSRC / "core").glob("*.h")) + [CSRC / "cuda" / "lif_thread.h", CSRC / "cpu" / "noise_x86.h"]

# The host harness: the grid as a loop over thread indices. Flat C arguments (no struct layout to
# mirror in ctypes); the argument structs are filled here exactly as csrc/host/lif_op.h fills them.
HARNESS = r"""
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <ATen/core/PhiloxRNGEngine.h>

#include "core/grad_sums.h"
#include "core/switch.h"
#include "cuda/lif_thread.h"
#include "cpu/noise_x86.h"

#include <vector>

using namespace lif::gpu;
using lif::LifBackwardArgs;
using lif::LifForwardArgs;

template <typename IT, typename T>
static void run_forward(const LifForwardArgs<IT, T>& a) {
  NOISE_SWITCH(a.noise.mode, NOISE, [&] {
    BOOL_SWITCH(a.u_out != nullptr, SAVE_U, [&] {
      BOOL_SWITCH(a.vmem_out != nullptr, RECORD, [&] {
        for (int64_t idx = 0; idx < a.B * a.N; ++idx)
          forward_thread<IT, T, NOISE, SAVE_U, RECORD>(a, idx);
      });
    });
  });
}

template <typename IT, typename T>
static void run_backward(const LifBackwardArgs<IT, T>& a) {
  SURROGATE_SWITCH(a.surrogate, SURR, [&] {
    BOOL_SWITCH(a.gw != nullptr, HAS_GW, [&] {
      for (int64_t idx = 0; idx < a.B * a.N; ++idx)
        backward_thread<IT, T, SURR, HAS_GW>(a, idx);
    });
  });
}

// The gradient sums of csrc/core/grad_sums.h, pass 1 then pass 2, as the CUDA kernels run them.
template <typename T>
static void run_grad_sum(const lif::GradSum<T>& s, int64_t B) {
  for (int64_t m = 0; m < s.count; ++m) lif::grad_sum_batch(s, B, m);
  for (int64_t k = 0; k < lif::grad_sum_outputs(s); ++k) lif::grad_sum_neurons(s, k);
}

// Parameters: (N,) rows, or one value each where the flag says () (stride 0, as csrc/host/ fills
// them).
template <typename IT, typename T>
static void forward_t(const void* x, const void* noise, int kernel_noise, uint64_t seed,
                      uint64_t offset, double noise_scale, const void* v0, int64_t v0_stride_b,
                      const void* alpha, const void* thr, const void* bias, int scalars,
                      double max_spikes, void* s_out, void* vmem_out, void* u_out, void* v_final,
                      const int64_t* lengths, int64_t B, int64_t Tn, int64_t N,
                      const int64_t* key_seed, const int64_t* key_offset,
                      uint64_t key_offset_intragraph) {
  LifForwardArgs<IT, T> a{};
  a.x = static_cast<const IT*>(x);
  a.noise.tensor = static_cast<const T*>(noise);
  a.noise.mode = noise ? lif::kNoiseTensor : (kernel_noise ? lif::kNoiseKernel : lif::kNoNoise);
  a.noise.key.seed = seed;
  a.noise.key.offset = offset;
  a.noise.key.device_seed = key_seed;  // as cuda/launch.h sets them under graph capture
  a.noise.key.device_offset = key_offset;
  a.noise.key.offset_intragraph = key_offset_intragraph;
  a.noise.scale = noise_scale;
  a.v0 = static_cast<const T*>(v0);
  a.v0_stride_b = v0_stride_b;
  a.alpha = {static_cast<const T*>(alpha), (scalars & 1) ? 0 : 1};
  a.thr = {static_cast<const T*>(thr), (scalars & 2) ? 0 : 1};
  a.bias = {static_cast<const T*>(bias), (scalars & 4) ? 0 : 1};
  a.max_spikes = max_spikes;
  a.s_out = static_cast<IT*>(s_out);
  a.vmem_out = static_cast<T*>(vmem_out);
  a.u_out = static_cast<T*>(u_out);
  a.v_final = static_cast<T*>(v_final);
  a.lengths = lengths;
  a.B = B;
  a.Tn = Tn;
  a.N = N;
  run_forward(a);
}

// g_v0 is (B,N) per-row: a shared v0's gradient is their sum over the batch, taken by the caller
// (as the op takes it, with ATen). partial (3,B,N) float64.
template <typename IT, typename T>
static void backward_t(const void* gs, int64_t gs_sb, int64_t gs_st, int64_t gs_sn,
                       const void* gw, const void* gvf, const void* u, const void* v0,
                       int64_t v0_stride_b, const void* alpha, const void* tau, const void* thr,
                       int scalars, double dt, double window, double max_spikes, int surrogate,
                       void* g_in, void* g_v0, void* partial, void* g_tau, void* g_thr,
                       void* g_bias, const int64_t* lengths, int64_t B, int64_t Tn, int64_t N) {
  LifBackwardArgs<IT, T> a{};
  a.gs = static_cast<const IT*>(gs);
  a.gs_stride_b = gs_sb;
  a.gs_stride_t = gs_st;
  a.gs_stride_n = gs_sn;
  a.gw = static_cast<const T*>(gw);
  a.gvf = static_cast<const T*>(gvf);
  a.u = static_cast<const T*>(u);
  a.v0 = static_cast<const T*>(v0);
  a.v0_stride_b = v0_stride_b;
  a.alpha = {static_cast<const T*>(alpha), (scalars & 1) ? 0 : 1};
  a.thr = {static_cast<const T*>(thr), (scalars & 2) ? 0 : 1};
  a.window = window;
  a.max_spikes = max_spikes;
  a.surrogate = surrogate;
  a.g_in = static_cast<IT*>(g_in);
  a.g_v0 = static_cast<T*>(g_v0);
  a.partial = static_cast<double*>(partial);
  a.lengths = lengths;
  a.B = B;
  a.Tn = Tn;
  a.N = N;
  run_backward(a);
  const auto coll = [&](int bit) { return (scalars & bit) ? lif::kSumAll : lif::kKeepAll; };
  double* p = a.partial;
  run_grad_sum(lif::GradSum<T>{p, N, 1, coll(1), static_cast<T*>(g_tau), a.alpha.data,
                               static_cast<const T*>(tau), dt}, B);
  run_grad_sum(lif::GradSum<T>{p + B * N, N, 1, coll(2), static_cast<T*>(g_thr), nullptr, nullptr,
                               dt}, B);
  run_grad_sum(lif::GradSum<T>{p + 2 * B * N, N, 1, coll(4), static_cast<T*>(g_bias), nullptr,
                               nullptr, dt}, B);
}

// io: 0 float32, 1 float64, 2 float16, 3 bfloat16 (state and math in float32 for the last two).
#define LIF_IO_SWITCH(io, F, ...)                                  \
  switch (io) {                                                    \
    case 0: F<float, float>(__VA_ARGS__); break;                   \
    case 1: F<double, double>(__VA_ARGS__); break;                 \
    case 2: F<c10::Half, float>(__VA_ARGS__); break;               \
    default: F<c10::BFloat16, float>(__VA_ARGS__); break;          \
  }

extern "C" {
void lif_host_forward(int io, const void* x, const void* noise, int kernel_noise, uint64_t seed,
                      uint64_t offset, double noise_scale, const void* v0, int64_t v0_stride_b,
                      const void* alpha, const void* thr, const void* bias, int scalars,
                      double max_spikes, void* s_out, void* w_rec, void* u_out, void* v_final,
                      const int64_t* lengths, int64_t B, int64_t Tn, int64_t N,
                      const int64_t* key_seed,
                      const int64_t* key_offset, uint64_t key_offset_intragraph) {
  LIF_IO_SWITCH(io, forward_t, x, noise, kernel_noise, seed, offset, noise_scale, v0, v0_stride_b,
                alpha, thr, bias, scalars, max_spikes, s_out, w_rec, u_out, v_final, lengths, B, Tn,
                N, key_seed, key_offset, key_offset_intragraph)
}

// The CPU kernel's noise rows (cpu/noise_x86.h) by one instruction set, named: 0 portable,
// 1 AVX2, 2 AVX-512; `rows` (4, len <= 64). Returns 0 where this build or CPU lacks it.
int lif_host_noise_isa(int isa, uint64_t seed, uint64_t offset, uint64_t sub0, uint64_t q,
                       int64_t len, float* rows) {
  constexpr int64_t kStride = 64;
  static uint32_t scratch[4][kStride];
  static float z[4][kStride];
  if (isa == 0) {
    lif::cpu::noise_rows_portable<kStride>(seed, offset, sub0, q, len, 1.0f, scratch, z);
  } else {
#if defined(LIF_NOISE_X86)
    __builtin_cpu_init();
    if (isa == 1 && __builtin_cpu_supports("avx2")) {
      lif::cpu::noise_rows_avx2<kStride>(seed, offset, sub0, q, len, 1.0f, scratch, z);
    } else if (isa == 2 && __builtin_cpu_supports("avx512f")) {
      lif::cpu::noise_rows_avx512<kStride>(seed, offset, sub0, q, len, 1.0f, scratch, z);
    } else {
      return 0;
    }
#else
    return 0;
#endif
  }
  for (int64_t n = 0; n < len; ++n)
    for (int k = 0; k < 4; ++k) rows[k * len + n] = z[k][n];
  return 1;
}

// The standard normals of Philox block q for `len` subsequences sub0, sub0 + 1, ..., drawn both
// ways: `rows` (4, len) by the CPU tile's vectorised noise_rows, `threads` (len, 4) by
// philox_normals4, one subsequence at a time (a CUDA thread's way); `words` (len, 4) are
// at::Philox4_32(seed, sub, offset + q)'s first four outputs, `ours` (len, 4) philox_rounds'.
void lif_host_noise(uint64_t seed, uint64_t offset, uint64_t sub0, uint64_t q, int64_t len,
                    float* rows, float* threads, uint32_t* words, uint32_t* ours) {
  constexpr int64_t kStride = 64;
  static uint32_t scratch[4][kStride];
  static float z[4][kStride];
  lif::noise_rows<kStride>(seed, offset, sub0, q, len, 1.0f, scratch, z);
  for (int64_t n = 0; n < len; ++n) {
    for (int k = 0; k < 4; ++k) rows[k * len + n] = z[k][n];
    const lif::Normals4 nz = lif::philox_normals4(seed, offset, sub0 + n, q);
    threads[4 * n + 0] = nz.z0;
    threads[4 * n + 1] = nz.z1;
    threads[4 * n + 2] = nz.z2;
    threads[4 * n + 3] = nz.z3;
    at::Philox4_32 engine(seed, sub0 + n, offset + q);
    for (int k = 0; k < 4; ++k) words[4 * n + k] = engine();
    uint32_t c0 = static_cast<uint32_t>(offset + q), c1 = static_cast<uint32_t>((offset + q) >> 32);
    uint32_t c2 = static_cast<uint32_t>(sub0 + n), c3 = static_cast<uint32_t>((sub0 + n) >> 32);
    lif::philox_rounds(c0, c1, c2, c3, static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
    ours[4 * n + 0] = c0;
    ours[4 * n + 1] = c1;
    ours[4 * n + 2] = c2;
    ours[4 * n + 3] = c3;
  }
}

void lif_host_backward(int io, const void* gs, int64_t gs_sb, int64_t gs_st, int64_t gs_sn,
                       const void* gw, const void* gvf, const void* u, const void* v0,
                       int64_t v0_stride_b, const void* alpha, const void* tau, const void* thr,
                       int scalars, double dt, double window, double max_spikes, int surrogate,
                       void* g_in, void* g_v0, void* partial, void* g_tau, void* g_thr,
                       void* g_bias, const int64_t* lengths, int64_t B, int64_t Tn, int64_t N) {
  LIF_IO_SWITCH(io, backward_t, gs, gs_sb, gs_st, gs_sn, gw, gvf, u, v0, v0_stride_b, alpha, tau,
                thr, scalars, dt, window, max_spikes, surrogate, g_in, g_v0, partial, g_tau, g_thr,
                g_bias, lengths, B, Tn, N)
}
}
"""

# SPEC §1: no contraction, no fast-math. -O2 so that the compiler is free to reorder what it may.
# The C++ standard torch's own extension builder uses (torch >= 2.14 needs C++20).
_STD = "-std=c++20" if "c++20" in inspect.getsource(cpp_extension) else "-std=c++17"
CXXFLAGS = ["-O2", _STD, "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math", "-w"]
IO_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _compiler():
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def build_harness(name, harness, headers):
    """A g++ harness as a shared library (ctypes.CDLL), built once per version of its source, the
    headers it includes, the compiler and torch (cached in the temp dir); skips without a compiler.
    Shared with tests/test_synaptic_host.py."""
    cxx = _compiler()
    if cxx is None:
        pytest.skip("no C++ compiler (set CXX)")
    includes = ["-I" + str(CSRC)] + ["-I" + p for p in cpp_extension.include_paths()]
    digest = hashlib.sha256()
    for part in [harness, cxx, torch.__version__, *CXXFLAGS, *includes]:
        digest.update(part.encode())
    for h in headers:
        digest.update(h.read_bytes())
    cache = Path(tempfile.gettempdir()) / f"lif_cuda_host_test_{os.getuid()}"
    cache.mkdir(exist_ok=True)
    so = cache / f"{name}_{digest.hexdigest()[:16]}.so"
    if not so.exists():
        src = cache / f"{so.stem}.{os.getpid()}.cpp"
        src.write_text(harness)
        tmp_so = cache / f"{so.stem}.{os.getpid()}.so"
        cmd = [cxx, *CXXFLAGS, *includes, str(src), "-o", str(tmp_so)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        src.unlink()
        assert proc.returncode == 0, f"compiling the host harness failed:\n{' '.join(cmd)}\n{proc.stderr}"
        os.replace(tmp_so, so)
    return ctypes.CDLL(str(so))


@pytest.fixture(scope="module")
def lib():
    """The harness as a shared library, built once per source version (cached in the temp dir)."""
    handle = build_harness("lif_thread", HARNESS, HEADERS)
    c_p, c_i, c_u64, c_d, c_i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_double, ctypes.c_int64
    handle.lif_host_forward.restype = None
    handle.lif_host_forward.argtypes = [c_i, c_p, c_p, c_i, c_u64, c_u64, c_d, c_p, c_i64, c_p, c_p, c_p, c_i,
                                        c_d, c_p, c_p, c_p, c_p, c_p, c_i64, c_i64, c_i64, c_p, c_p, c_u64]
    handle.lif_host_noise.restype = None
    handle.lif_host_noise_isa.restype = c_i
    handle.lif_host_noise_isa.argtypes = [c_i, c_u64, c_u64, c_u64, c_u64, c_i64, c_p]
    handle.lif_host_noise.argtypes = [c_u64, c_u64, c_u64, c_u64, c_i64, c_p, c_p, c_p, c_p]
    handle.lif_host_backward.restype = None
    handle.lif_host_backward.argtypes = [c_i, c_p, c_i64, c_i64, c_i64, c_p, c_p, c_p, c_p, c_i64, c_p, c_p, c_p,
                                         c_i, c_d, c_d, c_d, c_i, c_p, c_p, c_p, c_p, c_p, c_p, c_p, c_i64,
                                         c_i64, c_i64]
    return handle


def _ptr(t):
    return None if t is None else t.data_ptr()


def _scalars(alpha, thr, bias_scalar):
    return int(alpha.dim() == 0) | 2 * int(thr.dim() == 0) | 4 * int(bias_scalar)


def host_forward(lib, x, v0, tau, thr, bias, *, dt=1e-3, noise=None, key=None, noise_scale=0.0,
                 max_spikes=2.0**16, record=True, save_u=True, lengths=None, device_key=None):
    """What the CUDA forward op computes, run thread by thread on the host, with the arguments of
    torch.ops.lif_cuda.lif_forward (v0 (B,N) or (N,), parameters (N,) or (), lengths int64 (B,) or
    None) and its outputs: (spikes, vmem or (0,), final state, u or (0,)). `device_key` = (seed
    tensor, offset tensor, offset_intragraph): the key read through pointers, as a kernel captured in
    a CUDA graph reads the CUDA generator's state (`key` then only switches the noise on)."""
    lengths = None if lengths is None else lengths.to(torch.int64).contiguous()
    B, T, N = x.shape
    ct = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    alpha = tau_to_decay(dt, tau)  # torch's exp, as the op computes it
    args = [t.contiguous() for t in (x, v0, alpha, thr, bias)]
    z = None if noise is None else noise.to(ct).contiguous()
    s = torch.empty((B, T, N), dtype=x.dtype)
    w = torch.empty((B, T, N) if record else (0,), dtype=ct)
    u = torch.empty((B, T, N) if save_u else (0,), dtype=ct)
    vf = torch.empty((B, N), dtype=ct)
    seed, offset = (0, 0) if key is None else (int(k) & (2**64 - 1) for k in key.tolist())
    lib.lif_host_forward(
        IO_CODES[x.dtype], _ptr(args[0]), _ptr(z), int(key is not None and noise_scale > 0), seed, offset,
        noise_scale, _ptr(args[1]), N if v0.dim() == 2 else 0, *(_ptr(t) for t in args[2:]),
        _scalars(alpha, thr, bias.dim() == 0), max_spikes, _ptr(s), _ptr(w) if record else None,
        _ptr(u) if save_u else None, _ptr(vf), _ptr(lengths), B, T, N,
        *((None, None, 0) if device_key is None else (_ptr(device_key[0]), _ptr(device_key[1]), device_key[2])),
    )
    return s, w, vf, u


def host_backward(lib, gs, gw, gvf, u, v0, tau, thr, *, scalar_bias=False, dt=1e-3, window=0.5,
                  max_spikes=2.0**16, surrogate=0, lengths=None):
    """What the CUDA backward op computes, with torch.ops.lif_cuda.lif_backward's arguments and
    outputs (g_in, g_v0, g_tau, g_thr, g_bias, in the shapes of their forward arguments). gs keeps
    its strides (rows contiguous or broadcast, as the op hands them)."""
    lengths = None if lengths is None else lengths.to(torch.int64).contiguous()
    B, T, N = u.shape
    alpha = tau_to_decay(dt, tau)
    args = [None if t is None else t.contiguous() for t in (gw, gvf, u, v0, alpha, tau, thr)]
    g_in = torch.empty((B, T, N), dtype=gs.dtype)
    g_v0_rows = torch.empty((B, N), dtype=u.dtype)
    partial = torch.empty((3, B, N), dtype=torch.float64)
    g_tau, g_thr = torch.empty(tau.shape, dtype=u.dtype), torch.empty(thr.shape, dtype=u.dtype)
    g_bias = torch.empty(() if scalar_bias else (N,), dtype=u.dtype)
    sb, st, sn = gs.stride()
    lib.lif_host_backward(
        IO_CODES[gs.dtype], _ptr(gs), sb, st, sn if N > 1 else 1, *(_ptr(t) for t in args[:4]),
        N if v0.dim() == 2 else 0, *(_ptr(t) for t in args[4:]), _scalars(alpha, thr, scalar_bias), dt, window,
        max_spikes, surrogate, _ptr(g_in), _ptr(g_v0_rows), _ptr(partial), _ptr(g_tau), _ptr(g_thr), _ptr(g_bias),
        _ptr(lengths), B, T, N,
    )
    # A shared v0's gradient: its rows' summed over the batch (ATen's sum, as the op takes it).
    g_v0 = g_v0_rows if v0.dim() == 2 else g_v0_rows.sum(0)
    return g_in, g_v0, g_tau, g_thr, g_bias


def make_inputs(seed, B, T, N, dtype, input_mean=0.4):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    n = lambda *s: torch.randn(s, generator=g, dtype=torch.float64)  # noqa: E731
    tau = 5e-3 + 45e-3 * r(N)
    thr = 0.3 + 1.2 * r(N)
    bias = 0.1 * n(N)
    x = input_mean + n(B, T, N)
    v0 = 0.5 * n(B, N)
    return [t.to(dtype) for t in (x, v0, tau, thr, bias)]


def assert_equal(actual, expected, what):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
        f"{what}: {tuple(actual.shape)} {actual.dtype} vs {tuple(expected.shape)} {expected.dtype}"
    )
    if not torch.equal(actual, expected):
        bad = actual != expected
        i = bad.nonzero()[0].tolist()
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.numel()} differ; first at {i}: "
            f"{actual[tuple(i)].item()!r} vs {expected[tuple(i)].item()!r}"
        )


def rel_err(a, e):
    a, e = a.double(), e.double()
    den = torch.linalg.vector_norm(e).item()
    num = torch.linalg.vector_norm(a - e).item()
    return num / den if den > 0 else num


DTYPES = [torch.float32, torch.float64]
# T below, at and above the 8-step prefetch chunk, and not a multiple of it.
SHAPES = [(1, 1, 1), (2, 7, 5), (3, 8, 4), (2, 19, 33), (4, 40, 3)]
GRAD_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _shaped(params, v0_shared, x, v0, tau, thr, bias):
    """The same case with () parameters (their first value) and/or one (N,) v0 for every row."""
    if params == "scalar":
        tau, thr, bias = tau[0].clone(), thr[0].clone(), bias[0].clone()
    if v0_shared:
        v0 = v0[0].clone()
    return x, v0, tau, thr, bias


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("noise", ["none", "tensor"])
def test_forward_threads_equal_reference(lib, shape, dtype, noise):
    B, T, N = shape
    x, v0, tau, thr, bias = make_inputs(1 + B * T * N, B, T, N, dtype)
    dt = 1e-3
    z = None
    if noise == "tensor":
        z = 0.3 * torch.randn((B, T, N), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        z = z.to(dtype)
    s, w, vf, u = host_forward(lib, x, v0, tau, thr, bias, noise=z)
    rs, rw, rvf = lif_evolve_reference(x, v0, tau, thr, bias, dt, noise=z, record=True)
    assert_equal(s, rs, "spikes")
    assert_equal(w, rw, "recorded membrane")
    assert_equal(vf, rvf, "final state")
    if x.numel() >= 20:
        assert (s > 0).any() and (s == 0).any()
    # The saved u is the pre-spike membrane: w = u - s*thr, bit for bit.
    assert_equal(u - s * thr, w, "u - s*thr")
    # Without record / save_u: other kernel variants, same spikes and state.
    s2, w2, vf2, u2 = host_forward(lib, x, v0, tau, thr, bias, noise=z, record=False, save_u=False)
    assert w2.shape == (0,) and u2.shape == (0,)
    assert_equal(s2, rs, "spikes (record=False, save_u=False)")
    assert_equal(vf2, rvf, "final state (record=False, save_u=False)")


@pytest.mark.parametrize("params", ["neuron", "scalar"])
@pytest.mark.parametrize("v0_shared", [False, True], ids=["v0-rows", "v0-shared"])
def test_forward_threads_scalar_params_and_shared_state(lib, params, v0_shared):
    B, T, N = 3, 11, 6
    case = _shaped(params, v0_shared, *make_inputs(21, B, T, N, torch.float32))
    s, w, vf, _ = host_forward(lib, *case)
    rs, rw, rvf = lif_evolve_reference(*case, 1e-3, record=True)
    assert_equal(s, rs, "spikes")
    assert_equal(w, rw, "recorded membrane")
    assert_equal(vf, rvf, "final state")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_forward_threads_kernel_noise(lib, dtype):
    """The in-kernel Philox noise, drawn per thread, is the stream lif_cuda.noise writes out."""
    B, T, N = 3, 21, 10
    x, v0, tau, thr, bias = make_inputs(7, B, T, N, dtype)
    dt, noise_std = 1e-3, 2.0
    scale = noise_std * math.sqrt(dt)
    key = torch.tensor([0x1234_5678_9ABC_DEF, 77], dtype=torch.int64)
    s, w, vf, _ = host_forward(lib, x, v0, tau, thr, bias, key=key, noise_scale=scale)
    z = kernel_noise((B, T, N), scale, key, dtype=dtype)
    rs, rw, rvf = lif_evolve_reference(x, v0, tau, thr, bias, dt, noise=z, record=True)
    assert_equal(s, rs, "spikes")
    assert_equal(w, rw, "recorded membrane")
    assert_equal(vf, rvf, "final state")
    # The noise changed something.
    s0, *_ = host_forward(lib, x, v0, tau, thr, bias)
    assert not torch.equal(s, s0)


@pytest.mark.parametrize("shape", [(2, 1, 5), (1, 3, 7), (3, 5, 4), (2, 8, 3), (2, 11, 6)],
                         ids=lambda s: "x".join(map(str, s)))
def test_forward_threads_kernel_noise_any_length(lib, shape):
    """T = 1, T < 4, T not a multiple of the 4-step block or of the 8-step chunk: the thread's
    block-at-a-time tail draws noise.py's stream and leaves nothing out."""
    B, T, N = shape
    x, v0, tau, thr, bias = make_inputs(17, B, T, N, torch.float32)
    key = torch.tensor([-77, 2**32 - 1], dtype=torch.int64)
    s, w, vf, _ = host_forward(lib, x, v0, tau, thr, bias, key=key, noise_scale=0.1)
    rs, rw, rvf = lif_evolve_reference(x, v0, tau, thr, bias, 1e-3, noise=kernel_noise((B, T, N), 0.1, key),
                                       record=True)
    assert_equal(s, rs, "spikes")
    assert_equal(w, rw, "recorded membrane")
    assert_equal(vf, rvf, "final state")


@pytest.mark.parametrize("sub0,offset,q", [(0, 0, 0), (2**32 - 3, 5, 1), (2**64 - 4, 2**64 - 1, 3),
                                           (123456789, 2**32 - 2, 2)],
                         ids=["zero", "subsequence-carry", "subsequence-and-position-wrap", "position-carry"])
def test_noise_rows_and_thread_blocks_equal_noise_py(lib, sub0, offset, q):
    """64-bit counters: the CPU tile's vectorised draw (noise_rows, the subsequence carried in 32-bit
    halves) and a CUDA thread's (philox_normals4) give noise.py's normals, also where the
    subsequence crosses 2^32 or 2^64 and the position wraps; and the rounds are at::Philox4_32's."""
    import numpy as np

    from lif_cuda.noise import philox_normals

    seed, n = 0xDEADBEEF12345678, 9
    rows = torch.empty(4, n)
    threads = torch.empty(n, 4)
    words = torch.empty(n, 4, dtype=torch.int32)
    ours = torch.empty(n, 4, dtype=torch.int32)
    lib.lif_host_noise(seed, offset, sub0, q, n, _ptr(rows), _ptr(threads), _ptr(words), _ptr(ours))
    assert torch.equal(ours, words), "philox_rounds differ from at::Philox4_32"
    sub = (np.uint64(sub0) + np.arange(n, dtype=np.uint64))[:, None]  # wraps modulo 2^64
    steps = (4 * q + np.arange(4, dtype=np.uint64))[None, :]
    want = torch.from_numpy(philox_normals(seed, offset, sub, steps))
    assert_equal(threads, want, "philox_normals4")
    assert_equal(rows.t(), want, "noise_rows")


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
@pytest.mark.parametrize("sub0", [5, 2**32 - 3, 2**33 - 20], ids=["no-carry", "carry-in-tail", "carry-in-vectors"])
def test_cpu_noise_rows_every_isa_carry_the_subsequence(lib, isa, sub0):
    """The CPU kernel's vectorised noise rows (AVX2, AVX-512; the scalar tail after the last whole
    vector, and the whole tile where its subsequences cross 2^32) give noise.py's normals: the
    subsequence's carry into its high word included (lost there once)."""
    import numpy as np

    from lif_cuda.noise import philox_normals

    seed, offset, q, n = 0x0123456789ABCDEF, 7, 2, 43  # 43: whole vectors of 8 and 16, and a tail
    rows = torch.empty(4, n)
    if not lib.lif_host_noise_isa(["portable", "avx2", "avx512"].index(isa), seed, offset, sub0, q, n, _ptr(rows)):
        pytest.skip(f"no {isa} on this CPU or build")
    sub = (np.uint64(sub0) + np.arange(n, dtype=np.uint64))[:, None]
    steps = (4 * q + np.arange(4, dtype=np.uint64))[None, :]
    want = torch.from_numpy(philox_normals(seed, offset, sub, steps))
    assert_equal(rows.t(), want, f"noise rows ({isa})")


def test_forward_threads_device_key(lib):
    """Under CUDA graph capture the kernel reads its key through pointers to the CUDA generator's
    state: seed = *seed_ptr, offset = (*offset_ptr + offset_intragraph) / 4 blocks (torch counts
    32-bit words). The same bits as the key passed by value; the by-value arguments are ignored."""
    B, T, N = 2, 13, 5
    x, v0, tau, thr, bias = make_inputs(23, B, T, N, torch.float32)
    seed_t = torch.tensor([-4242], dtype=torch.int64)
    offset_t = torch.tensor([40], dtype=torch.int64)
    by_value = torch.tensor([-4242, (40 + 16) // 4], dtype=torch.int64)
    got = host_forward(lib, x, v0, tau, thr, bias, key=torch.tensor([1, 2]), noise_scale=0.2,
                       device_key=(seed_t, offset_t, 16))
    want = host_forward(lib, x, v0, tau, thr, bias, key=by_value, noise_scale=0.2)
    for name, a, b in zip(("spikes", "vmem", "final", "u"), got, want):
        assert_equal(a, b, f"{name} (device key)")
    other = host_forward(lib, x, v0, tau, thr, bias, key=torch.tensor([1, 2]), noise_scale=0.2)
    assert not torch.equal(other[1], want[1])
    # The next replay: the generator moved on by the call's 4 * ceil(T/4) words, the noise is new.
    offset_t += 4 * ((T + 3) // 4)
    later = host_forward(lib, x, v0, tau, thr, bias, key=torch.tensor([1, 2]), noise_scale=0.2,
                         device_key=(seed_t, offset_t, 16))
    assert not torch.equal(later[1], want[1])
    nxt = host_forward(lib, x, v0, tau, thr, bias, key=torch.tensor([-4242, (40 + 16) // 4 + 4]), noise_scale=0.2)
    assert_equal(later[1], nxt[1], "vmem (next replay)")


def test_forward_threads_max_spikes_clamp(lib):
    B, T, N = 2, 12, 6
    x, v0, tau, thr, bias = make_inputs(3, B, T, N, torch.float32, input_mean=3.0)
    s, w, vf, _ = host_forward(lib, x, v0, tau, thr, bias, max_spikes=2.0)
    rs, rw, rvf = lif_evolve_reference(x, v0, tau, thr, bias, 1e-3, max_spikes_per_dt=2.0, record=True)
    assert (rs == 2.0).any()
    assert_equal(s, rs, "spikes")
    assert_equal(w, rw, "recorded membrane")
    assert_equal(vf, rvf, "final state")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("shape", [(2, 7, 5), (3, 19, 6), (2, 40, 4)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("params,v0_shared", [("neuron", False), ("scalar", True)], ids=["neuron", "scalar-shared"])
def test_backward_threads_match_reference_autograd(lib, shape, dtype, surrogate, params, v0_shared):
    B, T, N = shape
    case = _shaped(params, v0_shared, *make_inputs(11 + T, B, T, N, dtype))
    x, v0, tau, thr, bias = case
    dt, window, M = 1e-3, 0.5, 2.0**16
    g = torch.Generator().manual_seed(99)
    gs, gw, gvf = (torch.randn(sh, generator=g, dtype=torch.float64).to(dtype) for sh in ((B, T, N), (B, T, N), (B, N)))

    leaves = [t.clone().requires_grad_(True) for t in case]
    rs, rw, rvf = lif_evolve_reference(*leaves, dt, learning_window=window, spike_generation_fn=surrogate, record=True)
    want = torch.autograd.grad((rs, rw, rvf), leaves, (gs, gw, gvf))

    _, _, _, u = host_forward(lib, *case)
    surr_id = lif_cuda.ops.SURROGATE_IDS[surrogate.__name__]
    got = host_backward(lib, gs, gw, gvf, u, v0, tau, thr, scalar_bias=bias.dim() == 0, window=window,
                        max_spikes=M, surrogate=surr_id)
    tol = GRAD_TOL[dtype]
    truth = None
    for i, (name, g_, ref) in enumerate(zip(("input", "v0", "tau", "threshold", "bias"), got, want)):
        assert g_.shape == ref.shape, f"grad {name}: shape {tuple(g_.shape)} != {tuple(ref.shape)}"
        err = rel_err(g_, ref)
        if err <= tol:
            continue
        # A sum that cancels (a () parameter's gradient adds B*T*N terms of either sign): then the
        # float32 reference is itself that far from the exact value. The flash-attention rule
        # (STYLE.md): the fused result's error against float64 is at most twice the float32
        # reference's. Only for those sums; every per-element gradient keeps the tolerance.
        assert dtype == torch.float32 and params == "scalar" and name in ("tau", "threshold", "bias"), (
            f"grad {name}: relative error {err:.2e} > {tol:.0e}"
        )
        if truth is None:
            leaves64 = [t.double().requires_grad_(True) for t in case]
            outs64 = lif_evolve_reference(*leaves64, dt, learning_window=window, spike_generation_fn=surrogate,
                                          record=True)
            truth = torch.autograd.grad(outs64, leaves64, (gs.double(), gw.double(), gvf.double()))
        err_fused, err_ref = rel_err(g_, truth[i]), rel_err(ref, truth[i])
        assert err_fused <= 2 * err_ref, (
            f"grad {name}: relative error {err_fused:.2e} vs float64, the float32 reference's {err_ref:.2e}"
        )


def test_backward_threads_read_broadcast_grad_spikes(lib):
    """grad_spikes as `spikes.sum()` hands it (stride 0 everywhere) and broadcast over the neurons
    only: read in place, the same result as the materialised tensor."""
    B, T, N = 3, 13, 7
    x, v0, tau, thr, bias = make_inputs(4, B, T, N, torch.float32)
    _, _, _, u = host_forward(lib, x, v0, tau, thr, bias)
    g = torch.Generator().manual_seed(2)
    for gs in (torch.ones(()).expand(B, T, N), torch.randn(B, T, 1, generator=g).expand(B, T, N)):
        assert 0 in gs.stride()
        got = host_backward(lib, gs, None, None, u, v0, tau, thr)
        want = host_backward(lib, gs.contiguous(), None, None, u, v0, tau, thr)
        for name, a, b in zip(("g_in", "g_v0", "g_tau", "g_thr", "g_bias"), got, want):
            assert_equal(a, b, f"{name} (strides {gs.stride()})")


@pytest.mark.parametrize("io", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["f32", "f64", "f16", "bf16"])
@pytest.mark.parametrize("surrogate", [0, 1], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("params,v0_shared", [("neuron", False), ("scalar", True)], ids=["neuron", "scalar-shared"])
@pytest.mark.parametrize("lengths", [None, [23, 0, 9]], ids=["all-T", "lengths"])
def test_threads_equal_fused_cpu_op(lib, io, surrogate, params, v0_shared, lengths):
    """Thread by thread (the CUDA way) and tile by tile (the CPU kernel) give the same bits,
    forward and backward, incl. the batch-order parameter sums, for every I/O dtype; also with
    per-row lengths (SPEC §8: the padding too)."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    B, T, N = 3, 23, 17
    lengths = None if lengths is None else torch.tensor(lengths)
    ct = torch.float32 if io in (torch.float16, torch.bfloat16) else io
    x, v0, tau, thr, bias = _shaped(params, v0_shared, *make_inputs(5, B, T, N, ct))
    x = x.to(io)
    key = torch.tensor([42, 3], dtype=torch.int64)
    op = torch.ops.lif_cuda
    for kw in (dict(noise=None, key=None, scale=0.0), dict(noise=None, key=key, scale=0.05)):
        want = op.lif_forward(x, v0, tau, thr, bias, kw["noise"], kw["key"], 1e-3, kw["scale"], 0.5, 2.0**16,
                              surrogate, True, True, lengths)
        got = host_forward(lib, x, v0, tau, thr, bias, key=kw["key"], noise_scale=kw["scale"], lengths=lengths)
        for name, a, b in zip(("spikes", "vmem", "final", "u"), got, want):
            assert_equal(a, b, f"forward {name} (key={kw['key'] is not None})")
    u = got[3]
    g = torch.Generator().manual_seed(1)
    gs = torch.randn((B, T, N), generator=g).to(io)
    gw = torch.randn((B, T, N), generator=g).to(ct)
    gvf = torch.randn((B, N), generator=g).to(ct)
    scalar_bias = bias.dim() == 0
    for gw_ in (None, gw):
        want = op.lif_backward(gs, gw_, gvf, u, v0, tau, thr, 1e-3, 0.5, 2.0**16, surrogate, scalar_bias, lengths)
        got = host_backward(lib, gs, gw_, gvf, u, v0, tau, thr, scalar_bias=scalar_bias, surrogate=surrogate,
                            lengths=lengths)
        for name, a, b in zip(("g_in", "g_v0", "g_tau", "g_thr", "g_bias"), got, want):
            assert_equal(a, b, f"backward {name} (gw={gw_ is not None})")


# ------------------------------------------------------------------ lengths (SPEC §8)
# Row lengths: T, 0, below, at and above the 8-step prefetch chunk, one step.
LENGTHS = [21, 0, 8, 1, 13]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("surrogate", [0, 1], ids=["StepPWL", "PeriodicExponential"])
def test_threads_with_lengths_equal_rows_run_alone(lib, dtype, surrogate):
    """Thread by thread with lengths: row b is that row run alone on its first lengths[b] steps, bit
    for bit, forward and backward (g_in, g_v0); padding: no spikes, membrane and u held, zero g_in."""
    B, T, N = len(LENGTHS), max(LENGTHS), 9
    lengths = torch.tensor(LENGTHS)
    x, v0, tau, thr, bias = make_inputs(31, B, T, N, dtype)
    s, w, vf, u = host_forward(lib, x, v0, tau, thr, bias, lengths=lengths)
    g = torch.Generator().manual_seed(8)
    gs, gw = (torch.randn((B, T, N), generator=g, dtype=torch.float64).to(dtype) for _ in range(2))
    gvf = torch.randn((B, N), generator=g, dtype=torch.float64).to(dtype)
    got = host_backward(lib, gs, gw, gvf, u, v0, tau, thr, surrogate=surrogate, lengths=lengths)
    assert (s > 0).any() and (s == 0).any()
    for b, L in enumerate(LENGTHS):
        rs, rw, rvf, ru = host_forward(lib, x[b:b + 1, :L], v0[b:b + 1], tau, thr, bias)
        assert_equal(s[b:b + 1, :L], rs, f"row {b} spikes")
        assert_equal(w[b:b + 1, :L], rw, f"row {b} recorded membrane")
        assert_equal(u[b:b + 1, :L], ru, f"row {b} u")
        assert_equal(vf[b:b + 1], rvf, f"row {b} final state")
        assert_equal(vf[b], v0[b] if L == 0 else rw[0, -1], f"row {b} final state = its state at its length")
        pad = T - L
        assert_equal(s[b, L:], torch.zeros(pad, N, dtype=dtype), f"row {b} padding spikes")
        assert_equal(w[b, L:], vf[b].expand(pad, N), f"row {b} padding membrane")
        assert_equal(u[b, L:], vf[b].expand(pad, N), f"row {b} padding u")
        assert_equal(got[0][b, L:], torch.zeros(pad, N, dtype=dtype), f"row {b} padding g_in")
        if L == 0:
            assert_equal(got[1][b], gvf[b], f"row {b}: g_v0 of an empty row is the final state's")
            continue
        alone = host_backward(lib, gs[b:b + 1, :L], gw[b:b + 1, :L], gvf[b:b + 1], ru, v0[b:b + 1], tau, thr,
                              surrogate=surrogate)
        assert_equal(got[0][b:b + 1, :L], alone[0], f"row {b} g_in")
        assert_equal(got[1][b:b + 1], alone[1], f"row {b} g_v0")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
