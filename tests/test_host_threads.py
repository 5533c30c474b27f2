"""The CUDA kernels' per-thread code, run on the host: csrc/cuda/*_thread.h compiled with g++, for
every model (the LIF model first, then the synaptic model).

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
import torch.nn.functional as F
import torch.utils.cpp_extension as cpp_extension

import lif_cuda
from conftest import make_adaptive_case
from lif_cuda import ops
from lif_cuda.noise import kernel_noise
from lif_cuda.reference import (
    PeriodicExponential,
    StepPWL,
    lif_evolve_reference,
    synaptic_evolve_reference,
    tau_to_decay,
)

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
HEADERS = sorted((CSRC / "core").glob("*.h")) + [CSRC / "cuda" / "lif_thread.h", CSRC / "cpu" / "noise_x86.h"]

# What both harnesses start with: the element types, and the I/O dtype code -> template types.
HARNESS_COMMON = r"""
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "core/grad_sums.h"

#include <vector>

// The gradient sums of csrc/core/grad_sums.h, pass 1 then pass 2, as the CUDA kernels run them.
template <typename T>
static void run_grad_sum(const lif::GradSum<T>& s, int64_t B) {
  for (int64_t m = 0; m < s.count; ++m) lif::grad_sum_batch(s, B, m);
  for (int64_t k = 0; k < lif::grad_sum_outputs(s); ++k) lif::grad_sum_neurons(s, k);
}

// A backward kernel's grid as CUDA runs it when the kernel does the gradient sums itself
// (cuda/launch.h kernel_grad_sums): blocks of kGradTile threads (kBlock), each block's threads, then
// its arrival at its tiles' counters, pass 1 for the tiles it completes, pass 2 if it completes the
// last; the blocks in the order `order` (a permutation: any order a GPU may finish them in), or in
// index order (nullptr). Returns 0, or -1 where a tile or pass 2 did not run exactly once.
template <typename T, typename Thread>
static int run_blocks(int64_t B, int64_t N, const int64_t* order,
                      const std::vector<lif::GradSum<T>>& sums, const Thread& thread) {
  const int64_t BN = B * N, K = lif::kGradTile, blocks = (BN + K - 1) / K;
  const int64_t tiles = lif::grad_tiles(N);
  std::vector<int64_t> arrivals(tiles + 1, 0), completed(tiles, 0);
  int last = 0;
  for (int64_t q = 0; q < blocks; ++q) {
    const int64_t blk = order ? order[q] : q;
    const int64_t lo = blk * K, hi = lo + K < BN ? lo + K : BN;
    for (int64_t idx = lo; idx < hi; ++idx) thread(idx);
    const auto add = [&](int64_t c, int64_t n) {
      const int64_t before = arrivals[c];
      arrivals[c] += n;
      return before;
    };
    int64_t done[4];
    const int d = lif::grad_tiles_completed(lo, hi, B, N, add, done);
    for (int e = 0; e < d; ++e) {
      ++completed[done[e]];
      for (const auto& s : sums)
        for (int64_t w = 0; w < K; ++w) lif::grad_sum_batch_tile(s, B, N, done[e], w, K);
    }
    if (d > 0) {
      arrivals[tiles] += d;
      if (arrivals[tiles] == tiles) {
        ++last;
        for (const auto& s : sums)
          for (int64_t k = 0; k < lif::grad_sum_outputs(s); ++k) lif::grad_sum_neurons(s, k);
      }
    }
  }
  for (int64_t j = 0; j < tiles; ++j)
    if (completed[j] != 1) return -1;
  return last == 1 ? 0 : -1;
}

// io: 0 float32, 1 float64, 2 float16, 3 bfloat16 (state and math in float32 for the last two).
#define LIF_IO_SWITCH(io, F, ...)                         \
  switch (io) {                                           \
    case 0: F<float, float>(__VA_ARGS__); break;          \
    case 1: F<double, double>(__VA_ARGS__); break;        \
    case 2: F<c10::Half, float>(__VA_ARGS__); break;      \
    default: F<c10::BFloat16, float>(__VA_ARGS__); break; \
  }
"""

# The host harness: the grid as a loop over thread indices. Flat C arguments (no struct layout to
# mirror in ctypes); the argument structs are filled here exactly as csrc/host/lif_op.h fills them.
HARNESS = HARNESS_COMMON + r"""
#include <c10/util/Exception.h>
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
  const int save = a.mask_out ? lif::kSaveMask : a.u_out ? lif::kSaveU : lif::kSaveNone;
  NOISE_SWITCH(a.noise.mode, NOISE, [&] {
    SAVE_SWITCH(save, SAVE, [&] {
      BOOL_SWITCH(a.vmem_out != nullptr, RECORD, [&] {
        for (int64_t idx = 0; idx < a.B * a.N; ++idx)
          forward_thread<IT, T, NOISE, SAVE, RECORD>(a, idx);
      });
    });
  });
}

// The LIF backward kernel: its threads and, inside it, the parameter-gradient sums (run_blocks).
template <typename IT, typename T>
static int run_backward(const LifBackwardArgs<IT, T>& a, const int64_t* order,
                        const std::vector<lif::GradSum<T>>& sums) {
  int rc = 0;
  SURROGATE_SWITCH(a.surrogate, SURR, [&] {
    BOOL_SWITCH(a.gw != nullptr, HAS_GW, [&] {
      BOOL_SWITCH(a.mask != nullptr, MASK, [&] {
        rc = run_blocks(a.B, a.N, order, sums,
                        [&](int64_t idx) { backward_thread<IT, T, SURR, HAS_GW, MASK>(a, idx); });
      });
    });
  });
  return rc;
}

// Parameters: (N,) rows, or one value each where the flag says () (stride 0, as csrc/host/ fills
// them).
template <typename IT, typename T>
static void forward_t(const void* x, const void* noise, int kernel_noise, uint64_t seed,
                      uint64_t offset, double noise_scale, const void* v0, int64_t v0_stride_b,
                      const void* alpha, const void* thr, const void* bias, int scalars,
                      double max_spikes, void* s_out, void* vmem_out, void* u_out, void* mask_out,
                      double window, void* v_final, const int64_t* lengths, int64_t B, int64_t Tn,
                      int64_t N, const int64_t* key_seed, const int64_t* key_offset,
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
  a.mask_out = static_cast<uint32_t*>(mask_out);
  a.window = window;
  a.v_final = static_cast<T*>(v_final);
  a.lengths = lengths;
  a.B = B;
  a.Tn = Tn;
  a.N = N;
  run_forward(a);
}

// g_v0 in v0's shape; partial (3,B,N) float64, (4,B,N) for a shared v0 (its rows), as csrc/host/
// fills them.
template <typename IT, typename T>
static int backward_t(const int64_t* order, const void* gs, int64_t gs_sb, int64_t gs_st, int64_t gs_sn,
                       const void* gw, const void* gvf, const void* u, const void* mask,
                       const void* v0, int64_t v0_stride_b, const void* alpha, const void* tau,
                       const void* thr, int scalars, double dt, double window, double max_spikes,
                       int surrogate, void* g_in, void* g_v0, void* partial, void* g_tau,
                       void* g_thr, void* g_bias, const int64_t* lengths, int64_t B, int64_t Tn,
                       int64_t N) {
  LifBackwardArgs<IT, T> a{};
  a.gs = static_cast<const IT*>(gs);
  a.gs_stride_b = gs_sb;
  a.gs_stride_t = gs_st;
  a.gs_stride_n = gs_sn;
  a.gw = static_cast<const T*>(gw);
  a.gvf = static_cast<const T*>(gvf);
  a.u = static_cast<const T*>(u);
  a.mask = static_cast<const uint32_t*>(mask);
  a.v0 = static_cast<const T*>(v0);
  a.v0_stride_b = v0_stride_b;
  a.alpha = {static_cast<const T*>(alpha), (scalars & 1) ? 0 : 1};
  a.thr = {static_cast<const T*>(thr), (scalars & 2) ? 0 : 1};
  a.window = window;
  a.max_spikes = max_spikes;
  a.surrogate = surrogate;
  a.g_in = static_cast<IT*>(g_in);
  a.g_v0 = v0_stride_b ? static_cast<T*>(g_v0) : nullptr;
  a.partial = static_cast<double*>(partial);
  a.lengths = lengths;
  a.B = B;
  a.Tn = Tn;
  a.N = N;
  const auto coll = [&](int bit) { return (scalars & bit) ? lif::kSumAll : lif::kKeepAll; };
  double* p = a.partial;
  std::vector<lif::GradSum<T>> sums{
      {p, N, 1, coll(1), static_cast<T*>(g_tau), a.alpha.data, static_cast<const T*>(tau), dt},
      {p + B * N, N, 1, coll(2), static_cast<T*>(g_thr), nullptr, nullptr, dt},
      {p + 2 * B * N, N, 1, coll(4), static_cast<T*>(g_bias), nullptr, nullptr, dt}};
  if (!v0_stride_b) {
    sums.push_back({p + 3 * B * N, N, 1, lif::kKeepAll, static_cast<T*>(g_v0), nullptr, nullptr, dt});
  }
  return run_backward(a, order, sums);
}

extern "C" {
void lif_host_forward(int io, const void* x, const void* noise, int kernel_noise, uint64_t seed,
                      uint64_t offset, double noise_scale, const void* v0, int64_t v0_stride_b,
                      const void* alpha, const void* thr, const void* bias, int scalars,
                      double max_spikes, void* s_out, void* w_rec, void* u_out, void* mask_out,
                      double window, void* v_final, const int64_t* lengths, int64_t B, int64_t Tn,
                      int64_t N, const int64_t* key_seed, const int64_t* key_offset,
                      uint64_t key_offset_intragraph) {
  LIF_IO_SWITCH(io, forward_t, x, noise, kernel_noise, seed, offset, noise_scale, v0, v0_stride_b,
                alpha, thr, bias, scalars, max_spikes, s_out, w_rec, u_out, mask_out, window,
                v_final, lengths, B, Tn, N, key_seed, key_offset, key_offset_intragraph)
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

int lif_host_backward(int io, const int64_t* order, const void* gs, int64_t gs_sb, int64_t gs_st,
                      int64_t gs_sn,
                       const void* gw, const void* gvf, const void* u, const void* mask,
                       const void* v0, int64_t v0_stride_b, const void* alpha, const void* tau,
                       const void* thr, int scalars, double dt, double window, double max_spikes,
                       int surrogate, void* g_in, void* g_v0, void* partial, void* g_tau,
                       void* g_thr, void* g_bias, const int64_t* lengths, int64_t B, int64_t Tn,
                       int64_t N) {
  int rc = -1;
  LIF_IO_SWITCH(io, rc = backward_t, order, gs, gs_sb, gs_st, gs_sn, gw, gvf, u, mask, v0, v0_stride_b, alpha,
                tau, thr, scalars, dt, window, max_spikes, surrogate, g_in, g_v0, partial, g_tau,
                g_thr, g_bias, lengths, B, Tn, N)
  return rc;
}
}
"""

# SPEC §1: no contraction, no fast-math. -O2 so that the compiler is free to reorder what it may.
# The C++ standard torch's own extension builder uses (torch >= 2.14 needs C++20).
_STD = "-std=c++20" if "c++20" in inspect.getsource(cpp_extension) else "-std=c++17"
CXXFLAGS = ["-O2", _STD, "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math", "-w"]
# Threads per block of the CUDA kernels (cuda/launch.h kBlock, core/grad_sums.h kGradTile).
KERNEL_BLOCK = 128
IO_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _compiler():
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def build_harness(name, harness, headers):
    """A g++ harness as a shared library (ctypes.CDLL), built once per version of its source, the
    headers it includes, the compiler and torch (cached in the temp dir); skips without a compiler.
    One per model below."""
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
    # ..., s_out, vmem, u, mask, window, v_final, lengths, B, T, N, key_seed, key_offset, intragraph
    handle.lif_host_forward.argtypes = [c_i, c_p, c_p, c_i, c_u64, c_u64, c_d, c_p, c_i64, c_p, c_p, c_p, c_i,
                                        c_d, c_p, c_p, c_p, c_p, c_d, c_p, c_p, c_i64, c_i64, c_i64, c_p, c_p,
                                        c_u64]
    handle.lif_host_noise.restype = None
    handle.lif_host_noise_isa.restype = c_i
    handle.lif_host_noise_isa.argtypes = [c_i, c_u64, c_u64, c_u64, c_u64, c_i64, c_p]
    handle.lif_host_noise.argtypes = [c_u64, c_u64, c_u64, c_u64, c_i64, c_p, c_p, c_p, c_p]
    handle.lif_host_backward.restype = c_i
    # io, block order, gs + strides, gw, gvf, u, mask, v0, v0_stride_b, alpha, tau, thr, ...
    handle.lif_host_backward.argtypes = [c_i, c_p, c_p, c_i64, c_i64, c_i64, c_p, c_p, c_p, c_p, c_p, c_i64, c_p, c_p,
                                         c_p, c_i, c_d, c_d, c_d, c_i, c_p, c_p, c_p, c_p, c_p, c_p, c_p, c_i64,
                                         c_i64, c_i64]
    return handle


def _ptr(t):
    return None if t is None else t.data_ptr()


def _scalars(alpha, thr, bias_scalar):
    return int(alpha.dim() == 0) | 2 * int(thr.dim() == 0) | 4 * int(bias_scalar)


def host_forward(lib, x, v0, tau, thr, bias, *, dt=1e-3, noise=None, key=None, noise_scale=0.0,
                 max_spikes=2.0**16, record=True, save_u=True, lengths=None, device_key=None, save_mask=False,
                 window=0.5):
    """What the CUDA forward op computes, run thread by thread on the host, with the arguments of
    torch.ops.lif_cuda.lif_forward (v0 (B,N) or (N,), parameters (N,) or (), lengths int64 (B,) or
    None) and its outputs: (spikes, vmem or (0,), final state, u or (0,), or with save_mask the window
    mask's int32 words (B, ceil(T/32), N) in u's place). `device_key` = (seed
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
    mask = save_u and save_mask
    u = torch.empty((B, (T + 31) // 32, N) if mask else (B, T, N) if save_u else (0,),
                    dtype=torch.int32 if mask else ct)
    vf = torch.empty((B, N), dtype=ct)
    seed, offset = (0, 0) if key is None else (int(k) & (2**64 - 1) for k in key.tolist())
    lib.lif_host_forward(
        IO_CODES[x.dtype], _ptr(args[0]), _ptr(z), int(key is not None and noise_scale > 0), seed, offset,
        noise_scale, _ptr(args[1]), N if v0.dim() == 2 else 0, *(_ptr(t) for t in args[2:]),
        _scalars(alpha, thr, bias.dim() == 0), max_spikes, _ptr(s), _ptr(w) if record else None,
        _ptr(u) if save_u and not mask else None, _ptr(u) if mask else None, window, _ptr(vf), _ptr(lengths),
        B, T, N,
        *((None, None, 0) if device_key is None else (_ptr(device_key[0]), _ptr(device_key[1]), device_key[2])),
    )
    return s, w, vf, u


def host_backward(lib, gs, gw, gvf, u, v0, tau, thr, *, scalar_bias=False, dt=1e-3, window=0.5,
                  max_spikes=2.0**16, surrogate=0, lengths=None, block_order=None):
    """What the CUDA backward op computes, with torch.ops.lif_cuda.lif_backward's arguments and
    outputs (g_in, g_v0, g_tau, g_thr, g_bias, in the shapes of their forward arguments). gs keeps
    its strides (rows contiguous or broadcast, as the op hands them). u may be the window mask's words.
    The kernel's blocks finish in `block_order` (a permutation of them; None: in index order)."""
    lengths = None if lengths is None else lengths.to(torch.int64).contiguous()
    B, T, N = gs.shape
    mask = u.dtype == torch.int32
    ct = v0.dtype
    alpha = tau_to_decay(dt, tau)
    args = [None if t is None else t.contiguous() for t in (gw, gvf, u, v0, alpha, tau, thr)]
    g_in = torch.empty((B, T, N), dtype=gs.dtype)
    g_v0 = torch.empty(v0.shape, dtype=ct)
    partial = torch.empty((3 if v0.dim() == 2 else 4, B, N), dtype=torch.float64)
    g_tau, g_thr = torch.empty(tau.shape, dtype=ct), torch.empty(thr.shape, dtype=ct)
    g_bias = torch.empty(() if scalar_bias else (N,), dtype=ct)
    sb, st, sn = gs.stride()
    order = None if block_order is None else block_order.to(torch.int64).contiguous()
    assert order is None or sorted(order.tolist()) == list(range(-(-B * N // KERNEL_BLOCK)))
    rc = lib.lif_host_backward(
        IO_CODES[gs.dtype], _ptr(order), _ptr(gs), sb, st, sn if N > 1 else 1, _ptr(args[0]), _ptr(args[1]),
        None if mask else _ptr(args[2]), _ptr(args[2]) if mask else None, _ptr(args[3]),
        N if v0.dim() == 2 else 0, *(_ptr(t) for t in args[4:]), _scalars(alpha, thr, scalar_bias), dt, window,
        max_spikes, surrogate, _ptr(g_in), _ptr(g_v0), _ptr(partial), _ptr(g_tau), _ptr(g_thr), _ptr(g_bias),
        _ptr(lengths), B, T, N,
    )
    assert rc == 0, "a tile's batch sums or the sums over the neurons did not run exactly once"
    return g_in, g_v0, g_tau, g_thr, g_bias


def batch_sum(rows):
    """A shared initial state's gradient from its rows', as csrc/core/grad_sums.h sums them: in float64,
    0 + row 0, then rows 1.. in order, rounded once."""
    acc = torch.zeros(rows.shape[1:], dtype=torch.float64) + rows[0].double()
    for b in range(1, rows.shape[0]):
        acc = acc + rows[b].double()
    return acc.to(rows.dtype)


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


@pytest.mark.parametrize("B,N", [(1, 1), (300, 1), (5, 40), (3, 128), (2, 129), (7, 300), (2, 1000)])
@pytest.mark.parametrize("params,v0_shared", [("neuron", False), ("scalar", True)], ids=["neuron", "scalar-shared"])
def test_sums_inside_the_backward_kernel_equal_cpu_op_in_any_block_order(lib, B, N, params, v0_shared):
    """The CUDA backward kernel sums the parameters' gradients itself: each block, when its threads
    are done, counts them into tiles of 128 neurons; the block completing a tile sums its values over
    the batch, the block completing the last tile sums over the neurons. Whatever order the blocks
    finish in (shapes whose blocks hold many rows, a row and a bit, rows across two or three tiles),
    each tile and the last pass run exactly once and every gradient has the CPU op's bits."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    T = 3
    x, v0, tau, thr, bias = _shaped(params, v0_shared, *make_inputs(8, B, T, N, torch.float32))
    op = torch.ops.lif_cuda
    u = op.lif_forward(x, v0, tau, thr, bias, None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, False, True, None)[3]
    g = torch.Generator().manual_seed(3)
    gs, gvf = torch.randn((B, T, N), generator=g), torch.randn((B, N), generator=g)
    scalar_bias = bias.dim() == 0
    want = op.lif_backward(gs, None, gvf, u, v0, tau, thr, 1e-3, 0.5, 2.0**16, 0, scalar_bias, None)
    blocks = -(-B * N // KERNEL_BLOCK)
    orders = [None, torch.arange(blocks - 1, -1, -1)] + [torch.randperm(blocks, generator=g) for _ in range(3)]
    for order in orders:
        got = host_backward(lib, gs, None, gvf, u, v0, tau, thr, scalar_bias=scalar_bias, block_order=order)
        for name, a, b in zip(("g_in", "g_v0", "g_tau", "g_thr", "g_bias"), got, want):
            assert_equal(a, b, f"{name} (blocks in order {None if order is None else order.tolist()[:8]})")


@pytest.mark.parametrize("io", [torch.float32, torch.float64, torch.bfloat16], ids=["f32", "f64", "bf16"])
@pytest.mark.parametrize("params,v0_shared", [("neuron", False), ("scalar", True)], ids=["neuron", "scalar-shared"])
@pytest.mark.parametrize("T,lengths", [(1, None), (31, None), (32, [32, 0, 31]), (33, None), (70, [70, 33, 64])],
                         ids=lambda v: "x" if v is None else str(v))
def test_threads_window_mask_equal_fused_cpu_op(lib, io, params, v0_shared, T, lengths):
    """SPEC §11: the window mask's words, thread by thread and tile by tile, the same bits; and the
    backward from the mask gives the input, v0 and bias gradients of the backward from u, bit for
    bit (tau and threshold get zeros: the mask cannot give them)."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    B, N = 3, 17
    lengths = None if lengths is None else torch.tensor(lengths)
    ct = torch.float32 if io in (torch.float16, torch.bfloat16) else io
    x, v0, tau, thr, bias = _shaped(params, v0_shared, *make_inputs(8 + T, B, T, N, ct, input_mean=0.6))
    x = x.to(io)
    op = torch.ops.lif_cuda
    window = 0.3
    want = op.lif_forward(x, v0, tau, thr, bias, None, None, 1e-3, 0.0, window, 2.0**16, 0, True, True, lengths,
                          save_mask=True)
    got = host_forward(lib, x, v0, tau, thr, bias, lengths=lengths, save_mask=True, window=window)
    for name, a, b in zip(("spikes", "vmem", "final", "mask"), got, want):
        assert_equal(a, b, f"forward {name}")
    mask = got[3]
    assert mask.shape == (B, (T + 31) // 32, N) and mask.dtype == torch.int32
    u = op.lif_forward(x, v0, tau, thr, bias, None, None, 1e-3, 0.0, window, 2.0**16, 0, True, True, lengths)[3]
    # The mask is m = (u >= thr - window), bit by bit, on each row's steps.
    bits = (mask.unsqueeze(2) >> torch.arange(32, dtype=torch.int32).view(1, 1, 32, 1)) & 1
    bits = bits.reshape(B, -1, N)[:, :T].bool()
    m = u >= (thr - torch.tensor(window, dtype=ct))
    steps = torch.full((B,), T) if lengths is None else lengths
    live = torch.arange(T).view(1, T, 1) < steps.view(B, 1, 1)
    assert torch.equal(bits & live, m & live)
    assert bits.any() and not bits.all(), "a case where the mask holds both values"
    g = torch.Generator().manual_seed(3)
    gs = torch.randn((B, T, N), generator=g).to(io)
    gw = torch.randn((B, T, N), generator=g).to(ct)
    gvf = torch.randn((B, N), generator=g).to(ct)
    scalar_bias = bias.dim() == 0
    for gw_ in (None, gw):
        from_u = op.lif_backward(gs, gw_, gvf, u, v0, tau, thr, 1e-3, window, 2.0**16, 0, scalar_bias, lengths)
        from_mask = op.lif_backward(gs, gw_, gvf, mask, v0, tau, thr, 1e-3, window, 2.0**16, 0, scalar_bias,
                                    lengths)
        host = host_backward(lib, gs, gw_, gvf, mask, v0, tau, thr, scalar_bias=scalar_bias, window=window,
                             lengths=lengths)
        for name, a, b, c in zip(("g_in", "g_v0", "g_tau", "g_thr", "g_bias"), host, from_mask, from_u):
            assert_equal(a, b, f"backward {name}, threads vs CPU op (gw={gw_ is not None})")
            if name in ("g_tau", "g_thr"):
                assert not b.any(), f"{name} from a mask must be zeros"
            else:
                assert_equal(b, c, f"backward {name}, from the mask vs from u (gw={gw_ is not None})")


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


# ---------------------------------------------------------------- the synaptic model (SPEC §7)
# The synaptic CUDA kernels' per-thread code, run on the host: csrc/cuda/synaptic_thread.h with g++.
#
# As for the LIF kernels: the CUDA kernels (csrc/cuda/synaptic.cu) only compute a thread index and
# call `syn_forward_thread` / `syn_backward_thread` / the gradient-sum
# threads of synaptic_thread.h, which call csrc/core/'s step functions. This test compiles that header
# with g++ (contraction off, no fast-math), runs it thread by thread on raw arrays as the grid would,
# drives the recurrent time loop as csrc/host/synaptic_op.h does (at::linear per step on the host, the
# step kernel, the reverse loop with one product per step, dL/dw_rec at the end), and checks it:
#
# - forward bit for bit against the reference computed with each of the CUDA reduction's orders of
#   the synapse sum (reduce_cuh_sum below, an emulation of Reduce.cuh written from its source), and,
#   for S = 1 and 2 (where the CPU and CUDA orders agree), against the fused CPU op, forward and
#   backward, bit for bit;
# - backward against autograd of the reference (float64 and float32 tolerances of the gradient tests).
#
# Which order a GPU's torch uses is measured there once (csrc/cuda/sum_order.h); only a GPU run
# (tests/test_cuda.py) checks the chosen order against torch.sum on CUDA.

SYN_HEADERS = sorted((CSRC / "core").glob("*.h")) + [CSRC / "cuda" / n for n in ("lif_thread.h", "synaptic_thread.h")]

SYN_HARNESS = HARNESS_COMMON + r"""

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

// The synapse sum in `order` (kCpuSum, kCudaSumDown, kCudaSumUp), row by row: sum over the last
// dimension of rows x (rows, S), `outputs` rows summed together (the CUDA lane count's input).
template <typename T>
static void row_sums_t(int order, const void* x, int64_t rows, int64_t S, int64_t outputs,
                       void* out) {
  for (int64_t j = 0; j < rows; ++j) {
    const T* p = static_cast<const T*>(x) + j * S;
    T& o = static_cast<T*>(out)[j];
    if (order == kCpuSum) {
      o = synaptic_sum<kCpuSum, 0>(p, S, outputs);
    } else if (order == kCudaSumDown) {
      o = synaptic_sum<kCudaSumDown, 0>(p, S, outputs);
    } else {
      o = synaptic_sum<kCudaSumUp, 0>(p, S, outputs);
    }
  }
}
// ahp_sum (the S synapse currents and the AHP lane h, SPEC §9) in `order`, row by row, with S known
// at compile time (S_FIXED) or not: rows x (rows, S), h (rows).
template <typename T, int S_FIXED>
static void ahp_sums_t(int order, const void* x, const void* h, int64_t rows, int64_t S,
                       int64_t outputs, void* out) {
  for (int64_t j = 0; j < rows; ++j) {
    const T* p = static_cast<const T*>(x) + j * S;
    const T hj = static_cast<const T*>(h)[j];
    T& o = static_cast<T*>(out)[j];
    if (order == kCpuSum) {
      o = ahp_sum<kCpuSum, S_FIXED>(p, S, hj, outputs);
    } else if (order == kCudaSumDown) {
      o = ahp_sum<kCudaSumDown, S_FIXED>(p, S, hj, outputs);
    } else {
      o = ahp_sum<kCudaSumUp, S_FIXED>(p, S, hj, outputs);
    }
  }
}
template <typename T>
static void ahp_sums_s(int order, int fixed, const void* x, const void* h, int64_t rows, int64_t S,
                       int64_t outputs, void* out) {
  if (fixed && S == 1) {
    ahp_sums_t<T, 1>(order, x, h, rows, S, outputs, out);
  } else if (fixed && S == 2) {
    ahp_sums_t<T, 2>(order, x, h, rows, S, outputs, out);
  } else {
    ahp_sums_t<T, 0>(order, x, h, rows, S, outputs, out);
  }
}
// The CUDA sum order the forward threads use (the device probe's answer on a GPU).
static int g_sum_order = kCudaSumDown;

template <typename IT, typename T>
static void fwd_t(const void* x, const void* noise, int kernel_noise, uint64_t seed, uint64_t offset,
                  double noise_scale, const void* v0, int64_t v0_sb, const void* i0, int64_t i0_sb,
                  const void* r, const void* alpha, const void* beta, const void* thr,
                  const void* bias, int scalars, int beta_mode, double max_spikes, void* s_out,
                  void* s_last, void* vmem_out, void* isyn_out, void* irec_out, void* u_out,
                  void* i_pre_out, void* v_final, void* i_final, const int64_t* lengths, int64_t B,
                  int64_t Tn, int64_t N, int64_t S, int64_t t0, int64_t steps, const void* h0,
                  int64_t h0_sb, const void* w_ahp, const void* gamma, int ahp_scalars,
                  void* iahp_out, void* h_pre_out, void* h_final, void* mask_out, double window,
                  void* counts_out) {
  SynForwardArgs<IT, T> a{};
  a.mask_out = static_cast<uint32_t*>(mask_out);  // the window mask in u's place (SPEC §11)
  a.counts_out = static_cast<uint8_t*>(counts_out);  // the spikes as counts beside it
  a.window = window;
  // The AHP current (SPEC §9), when h0 is given: ahp_scalars bit 1/2 for a () w_ahp/gamma.
  a.h0 = static_cast<const T*>(h0);
  a.h0_stride_b = h0_sb;
  a.w_ahp = neuron_param<T>(w_ahp, ahp_scalars, 1);
  a.gamma = neuron_param<T>(gamma, ahp_scalars, 2);
  a.iahp_out = static_cast<T*>(iahp_out);
  a.h_pre_out = static_cast<T*>(h_pre_out);
  a.h_final = static_cast<T*>(h_final);
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
      BOOL_SWITCH(h0 != nullptr, AHP, [&] {
        for (int64_t idx = 0; idx < B * N; ++idx) {
          if (g_sum_order == kCudaSumUp) {
            syn_forward_thread<IT, T, NOISE, S_FIXED, AHP, kCudaSumUp>(a, idx);
          } else {
            syn_forward_thread<IT, T, NOISE, S_FIXED, AHP, kCudaSumDown>(a, idx);
          }
        }
      });
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
                  int64_t Tn, int64_t N, int64_t S, int64_t t0, int64_t steps, const void* h_pre,
                  const void* gh, const void* w_ahp, const void* gamma, int ahp_scalars, void* H,
                  const void* mask, const void* counts) {
  SynBackwardArgs<IT, T> a{};
  a.mask = static_cast<const uint32_t*>(mask);
  a.counts = static_cast<const uint8_t*>(counts);
  a.h_pre = static_cast<const T*>(h_pre);
  a.gh = static_cast<const T*>(gh);
  a.w_ahp = neuron_param<T>(w_ahp, ahp_scalars, 1);
  a.gamma = neuron_param<T>(gamma, ahp_scalars, 2);
  a.H = static_cast<T*>(H);
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
      BOOL_SWITCH(H != nullptr, AHP, [&] {
        for (int64_t idx = 0; idx < B * N; ++idx) syn_backward_thread<IT, T, SURR, S_FIXED, AHP>(a, idx);
      });
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

extern "C" {
void syn_host_forward(int io, const void* x, const void* noise, int kernel_noise, uint64_t seed,
                      uint64_t offset, double noise_scale, const void* v0, int64_t v0_sb,
                      const void* i0, int64_t i0_sb, const void* r, const void* alpha,
                      const void* beta, const void* thr, const void* bias, int scalars,
                      int beta_mode, double max_spikes, void* s_out, void* s_last, void* vmem_out,
                      void* isyn_out, void* irec_out, void* u_out, void* i_pre_out, void* v_final,
                      void* i_final, const int64_t* lengths, int64_t B, int64_t Tn, int64_t N,
                      int64_t S, int64_t t0, int64_t steps, const void* h0, int64_t h0_sb,
                      const void* w_ahp, const void* gamma, int ahp_scalars, void* iahp_out,
                      void* h_pre_out, void* h_final, void* mask_out, double window,
                      void* counts_out) {
  LIF_IO_SWITCH(io, fwd_t, x, noise, kernel_noise, seed, offset, noise_scale, v0, v0_sb, i0, i0_sb,
                r, alpha, beta, thr, bias, scalars, beta_mode, max_spikes, s_out, s_last, vmem_out,
                isyn_out, irec_out, u_out, i_pre_out, v_final, i_final, lengths, B, Tn, N, S, t0,
                steps, h0, h0_sb, w_ahp, gamma, ahp_scalars, iahp_out, h_pre_out, h_final, mask_out,
                window, counts_out)
}

void syn_host_backward(int io, const void* gs, int64_t sb, int64_t st, int64_t sn,
                       const void* gs_rec, const void* gw, const void* gi, const void* gr,
                       const void* u, const void* a, const void* v0, int64_t v0_sb,
                       const void* s0, int64_t s0_sb, const void* alpha, const void* beta,
                       const void* thr, int scalars, int beta_mode, double window,
                       double max_spikes, int surrogate, void* W, void* I, void* g_in, void* g_r,
                       void* g_u, void* s_prev, void* partial, const int64_t* lengths, int64_t B,
                       int64_t Tn, int64_t N, int64_t S, int64_t t0, int64_t steps,
                       const void* h_pre, const void* gh, const void* w_ahp, const void* gamma,
                       int ahp_scalars, void* H, const void* mask, const void* counts) {
  LIF_IO_SWITCH(io, bwd_t, gs, sb, st, sn, gs_rec, gw, gi, gr, u, a, v0, v0_sb, s0, s0_sb, alpha,
                beta, thr, scalars, beta_mode, window, max_spikes, surrogate, W, I, g_in, g_r, g_u,
                s_prev, partial, lengths, B, Tn, N, S, t0, steps, h_pre, gh, w_ahp, gamma,
                ahp_scalars, H, mask, counts)
}

void syn_host_grad_sum(int f64, void* partial, int64_t M, int64_t S, int collapse, void* dst,
                       const void* decay, const void* tau, double dt, int64_t B) {
  if (f64) {
    sum_t<double>(partial, M, S, collapse, dst, decay, tau, dt, B);
  } else {
    sum_t<float>(partial, M, S, collapse, dst, decay, tau, dt, B);
  }
}

// The parameter-gradient sums inside a synaptic backward kernel (run_blocks), in
// csrc/host/synaptic_op.h's layout: sum i has counts[i] values a row (N, or N*S for the synapses'),
// collapse collapses[i], its (B, counts[i]) rows one after the other in `partial`; thread
// idx = b * N + n stores its values (from `src`, laid out alike) just before its block arrives.
int syn_host_kernel_sums(const int64_t* order, const double* src, double* partial, int64_t B,
                         int64_t N, int64_t S, int nsums, const int64_t* counts,
                         const int* collapses, double* const* dsts) {
  std::vector<GradSum<double>> sums;
  int64_t off = 0;
  for (int i = 0; i < nsums; ++i) {
    sums.push_back({partial + off, counts[i], S, collapses[i], dsts[i], nullptr, nullptr, 0.0});
    off += B * counts[i];
  }
  return run_blocks(B, N, order, sums, [&](int64_t idx) {
    const int64_t b = idx / N, n = idx - b * N;
    int64_t base = 0;
    for (int i = 0; i < nsums; ++i) {
      const int64_t per = counts[i] / N;
      for (int64_t k = 0; k < per; ++k) {
        const int64_t at = base + b * counts[i] + n * per + k;
        partial[at] = src[at];
      }
      base += B * counts[i];
    }
  });
}

void syn_host_set_sum_order(int order) { g_sum_order = order; }

void syn_host_row_sums(int f64, int order, const void* x, int64_t rows, int64_t S, int64_t outputs,
                       void* out) {
  if (f64) {
    row_sums_t<double>(order, x, rows, S, outputs, out);
  } else {
    row_sums_t<float>(order, x, rows, S, outputs, out);
  }
}

void syn_host_ahp_sums(int f64, int order, int fixed, const void* x, const void* h, int64_t rows,
                       int64_t S, int64_t outputs, void* out) {
  if (f64) {
    ahp_sums_s<double>(order, fixed, x, h, rows, S, outputs, out);
  } else {
    ahp_sums_s<float>(order, fixed, x, h, rows, S, outputs, out);
  }
}

// The device probe's rows (core/torch_sum.h): shape p's (outputs, S) and value k.
void syn_host_probe_shape(int p, int64_t* outputs_and_S) {
  const SumProbeShape shape = sum_probe_shape(p);
  outputs_and_S[0] = shape.outputs;
  outputs_and_S[1] = shape.S;
}
int syn_host_probe_shapes() { return kSumProbeShapes; }
float syn_host_probe_value(int64_t k) { return sum_probe_value<float>(k); }
}
"""


@pytest.fixture(scope="module")
def syn_lib():
    h = build_harness("synaptic_thread", SYN_HARNESS, SYN_HEADERS)
    p, i, u64, d, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_double, ctypes.c_int64
    h.syn_host_forward.restype = None
    h.syn_host_forward.argtypes = [i, p, p, i, u64, u64, d, p, i64, p, i64, p, p, p, p, p, i, i, d, p, p, p, p, p,
                                   p, p, p, p, p, i64, i64, i64, i64, i64, i64, p, i64, p, p, i, p, p, p, p, d, p]
    h.syn_host_backward.restype = None
    h.syn_host_backward.argtypes = [i, p, i64, i64, i64, p, p, p, p, p, p, p, i64, p, i64, p, p, p, i, i, d, d, i,
                                    p, p, p, p, p, p, p, p, i64, i64, i64, i64, i64, i64, p, p, p, p, i, p, p, p]
    h.syn_host_kernel_sums.restype = i
    h.syn_host_kernel_sums.argtypes = [p, p, p, i64, i64, i64, i, p, p, p]
    h.syn_host_grad_sum.restype = None
    h.syn_host_grad_sum.argtypes = [i, p, i64, i64, i, p, p, p, d, i64]
    h.syn_host_row_sums.restype = None
    h.syn_host_row_sums.argtypes = [i, i, p, i64, i64, i64, p]
    h.syn_host_ahp_sums.restype = None
    h.syn_host_ahp_sums.argtypes = [i, i, i, p, p, i64, i64, i64, p]
    h.syn_host_set_sum_order.restype = None
    h.syn_host_set_sum_order.argtypes = [i]
    h.syn_host_probe_shape.restype = None
    h.syn_host_probe_shape.argtypes = [i, p]
    h.syn_host_probe_shapes.restype = i
    h.syn_host_probe_value.restype = ctypes.c_float
    h.syn_host_probe_value.argtypes = [i64]
    return h


def _beta_mode(tau_syn):
    if tau_syn.dim() == 0:
        return 2
    return 1 if tau_syn.shape[0] == 1 else 0


def _syn_scalars(alpha, thr, bias):
    return int(alpha.dim() == 0) | 2 * int(thr.dim() == 0) | 4 * int(bias is not None and bias.dim() == 0)


def syn_forward_on_host(syn_lib, x, v0, i0, s0, tau_mem, tau_syn, thr, bias, *, w_rec=None, noise=None, key=None,
                 noise_scale=0.0, dt=1e-3, max_spikes=2.0**16, record=True, save=True, lengths=None, ahp=None,
                 save_mask=False, save_i_pre=True, save_h_pre=True, window=0.5, counts=None):
    """What the CUDA forward op computes (host/synaptic_op.h's loop around the CUDA threads), on the
    host: the outputs of torch.ops.lif_cuda.synaptic_forward (lengths: int64 (B,) or None). `ahp`:
    the AHP current's h0, w_ahp, tau_ahp (SPEC §9), or None; then (iahp, h_final, h_pre) follow."""
    lengths = None if lengths is None else lengths.to(torch.int64).contiguous()
    B, T, _ = x.shape
    N, S = i0.shape[-2:]
    ct = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    alpha, beta = tau_to_decay(dt, tau_mem), tau_to_decay(dt, tau_syn)
    x, v0, i0, alpha, beta, thr, bias = (t.contiguous() for t in (x, v0, i0, alpha, beta, thr, bias))
    z = None if noise is None else noise.to(ct).contiguous()
    spikes = torch.empty((B, T, N), dtype=x.dtype)
    vmem, u = torch.empty((B, T, N), dtype=ct), torch.empty((B, T, N), dtype=ct)
    if save_mask:  # the window mask's words in u's place, as host/synaptic_op.h allocates them
        u = torch.empty((B, (T + 31) // 32, N), dtype=torch.int32)
    isyn, irec, a = (torch.zeros((B, T, N, S), dtype=ct) for _ in range(3))
    if not save_i_pre:
        a = torch.empty((0, S), dtype=ct)
    v_final, i_final = torch.empty((B, N), dtype=ct), torch.empty((B, N, S), dtype=ct)
    s_final = (s0.expand(B, N) if s0 is not None else torch.zeros(B, N, dtype=ct)).contiguous().clone()
    seed, offset = (0, 0) if key is None else (int(k) & (2**64 - 1) for k in key.tolist())
    steps = [(0, T, None)] if w_rec is None else [(t, 1, "r") for t in range(T)]
    h0 = w_ahp = gamma = iahp = h_final = h_pre = None
    ahp_scalars = 0
    if ahp is not None:
        h0, w_ahp = ahp["h0"].contiguous(), ahp["w_ahp"].contiguous()
        gamma = tau_to_decay(dt, ahp["tau_ahp"]).contiguous()
        ahp_scalars = int(w_ahp.dim() == 0) | 2 * int(gamma.dim() == 0)
        iahp, h_pre = torch.empty((B, T, N), dtype=ct), torch.empty((B, T, N), dtype=ct)
        h_final = torch.empty((B, N), dtype=ct)
    for t0, n_steps, rec in steps:
        r = F.linear(s_final, w_rec.t()).contiguous() if rec else None
        first = t0 == 0
        syn_lib.syn_host_forward(
            IO_CODES[x.dtype], _ptr(x), _ptr(z), int(key is not None and noise_scale > 0), seed, offset, noise_scale,
            _ptr(v0 if first else v_final), (N if v0.dim() == 2 else 0) if first else N,
            _ptr(i0 if first else i_final), (N * S if i0.dim() == 3 else 0) if first else N * S, _ptr(r),
            _ptr(alpha), _ptr(beta), _ptr(thr), _ptr(bias), _syn_scalars(alpha, thr, bias), _beta_mode(tau_syn),
            max_spikes,
            _ptr(spikes), _ptr(s_final), _ptr(vmem) if record else None, _ptr(isyn) if record else None,
            _ptr(irec) if record and r is not None else None, _ptr(u) if save and not save_mask else None,
            _ptr(a) if save and save_i_pre else None,
            _ptr(v_final), _ptr(i_final), _ptr(lengths), B, T, N, S, t0, n_steps,
            _ptr(h0 if first else h_final), (N if h0 is not None and h0.dim() == 2 else 0) if first else N,
            _ptr(w_ahp), _ptr(gamma), ahp_scalars, _ptr(iahp) if record else None,
            _ptr(h_pre) if save and save_h_pre else None, _ptr(h_final), _ptr(u) if save and save_mask else None,
            window, _ptr(counts),
        )
    if ahp is not None and not save_h_pre:
        h_pre = torch.empty((0,), dtype=ct)
    if ahp is not None:
        return spikes, vmem, isyn, irec, v_final, i_final, s_final, u, a, iahp, h_final, h_pre
    return spikes, vmem, isyn, irec, v_final, i_final, s_final, u, a


def syn_backward_on_host(syn_lib, gs, gw, gi, gr, gvf, gif, u, a, v0, s0, tau_mem, tau_syn, thr, *, w_rec=None, dt=1e-3,
                  window=0.5, max_spikes=2.0**16, surrogate=0, scalar_bias=False, i0_shared=True, lengths=None,
                  ahp=None, counts=None):
    """What the CUDA backward op computes, on the host: torch.ops.lif_cuda.synaptic_backward's outputs
    (g_in, g_v0, g_i0, g_s0, g_tau_mem, g_tau_syn, g_thr, g_bias, g_w_rec, g_noise). `ahp`: the AHP
    current's h_pre, w_ahp, tau_ahp, gh, ghf (upstream on iahp, h_final) and h0_shared, or None; then
    (g_h0, g_w_ahp, g_tau_ahp) follow."""
    lengths = None if lengths is None else lengths.to(torch.int64).contiguous()
    B, T, N = gs.shape  # u may be the window mask, a (i_pre) (0, S), h_pre empty (SPEC §11)
    S = a.shape[-1]
    ct = v0.dtype
    mask = u if u.dtype == torch.int32 else None
    alpha, beta = tau_to_decay(dt, tau_mem), tau_to_decay(dt, tau_syn)
    u, a, v0, alpha, beta, thr = (t.contiguous() for t in (u, a, v0, alpha, beta, thr))
    gw, gi, gr = (None if t is None else t.contiguous() for t in (gw, gi, gr))
    s0c = None if s0 is None else s0.contiguous()
    W = (gvf.clone() if gvf is not None else torch.zeros(B, N, dtype=ct)).contiguous()
    I_ = (gif.clone() if gif is not None else torch.zeros(B, N, S, dtype=ct)).contiguous()
    g_in = torch.empty((B, T, N * S), dtype=gs.dtype)
    g_u = torch.empty((B, T, N), dtype=ct)
    partial = torch.zeros((5 if ahp else 3) * B * N + B * N * S, dtype=torch.float64)  # float64 sums, as the op's
    h_pre = gh = w_ahp = gamma = H = None
    ahp_scalars = 0
    if ahp is not None:
        h_pre, w_ahp = ahp["h_pre"].contiguous(), ahp["w_ahp"].contiguous()
        gh = None if ahp.get("gh") is None else ahp["gh"].contiguous()
        gamma = tau_to_decay(dt, ahp["tau_ahp"]).contiguous()
        ahp_scalars = int(w_ahp.dim() == 0) | 2 * int(gamma.dim() == 0)
        H = (ahp["ghf"].clone() if ahp.get("ghf") is not None else torch.zeros(B, N, dtype=ct)).contiguous()
    g_r = torch.empty((B, T, N * S), dtype=ct) if w_rec is not None else None
    s_prev = torch.empty((B, T, N), dtype=ct) if w_rec is not None and (mask is None or counts is not None) else None
    sb, st, sn = gs.stride()
    steps = [(0, T, False)] if w_rec is None else [(t, 1, t < T - 1) for t in range(T - 1, -1, -1)]
    for t0, n_steps, with_rec in steps:
        gs_rec = (g_r[:, t0 + 1] @ w_rec.t()).contiguous() if with_rec else None
        syn_lib.syn_host_backward(
            IO_CODES[gs.dtype], _ptr(gs), sb, st, sn if N > 1 else 1, _ptr(gs_rec), _ptr(gw), _ptr(gi),
            _ptr(gr) if w_rec is not None else None, None if mask is not None else _ptr(u),
            _ptr(a) if a.dim() == 4 else None, _ptr(v0), N if v0.dim() == 2 else 0,
            _ptr(s0c), (N if s0c.dim() == 2 else 0) if s0c is not None else 0, _ptr(alpha), _ptr(beta), _ptr(thr),
            _syn_scalars(alpha, thr, None), _beta_mode(tau_syn), window, max_spikes, surrogate, _ptr(W), _ptr(I_),
            _ptr(g_in), _ptr(g_r), _ptr(g_u), _ptr(s_prev), _ptr(partial), _ptr(lengths), B, T, N, S, t0, n_steps,
            _ptr(h_pre) if h_pre is not None and h_pre.numel() else None, _ptr(gh), _ptr(w_ahp), _ptr(gamma),
            ahp_scalars, _ptr(H), _ptr(mask), _ptr(counts),
        )
    f64 = int(ct == torch.float64)
    BN = B * N

    def grad_sum(rows, M, collapse, shape, decay=None, tau=None):
        dst = torch.empty(shape, dtype=ct)
        syn_lib.syn_host_grad_sum(f64, _ptr(rows), M, S, collapse, _ptr(dst), _ptr(decay), _ptr(tau), dt, B)
        return dst

    coll = lambda t: 2 if t.dim() == 0 else 0  # noqa: E731
    g_tau_mem = grad_sum(partial[:BN], N, coll(tau_mem), tau_mem.shape, alpha, tau_mem.contiguous())
    g_thr = grad_sum(partial[BN:2 * BN], N, coll(thr), thr.shape)
    g_bias = grad_sum(partial[2 * BN:3 * BN], N, 2 if scalar_bias else 0, () if scalar_bias else (N,))
    beta_coll = {0: 0, 1: 1, 2: 2}[_beta_mode(tau_syn)]
    g_tau_syn = grad_sum(partial[3 * BN:3 * BN + BN * S], N * S, beta_coll, tau_syn.shape, beta, tau_syn.contiguous())
    if a.dim() != 4:  # no i_pre: no tau_syn gradient (zeros, as the op returns)
        g_tau_syn = torch.zeros_like(g_tau_syn)
    g_v0 = W if v0.dim() == 2 else batch_sum(W)
    g_i0 = batch_sum(I_) if i0_shared else I_
    g_w_rec = g_s0 = rows = None
    if w_rec is not None:
        g_w_rec = (torch.zeros_like(w_rec) if s_prev is None
                   else s_prev.reshape(B * T, N).t() @ g_r.reshape(B * T, N * S))
        rows = (g_r[:, 0] @ w_rec.t()).contiguous()
    if ahp is not None:  # s0 fed h_pre[0] where the row ran a step (as host/synaptic_op.h)
        fed = H * w_ahp * (lengths.gt(0).unsqueeze(1).to(ct) if lengths is not None else 1)
        rows = fed if rows is None else rows + fed
    if s0 is not None and rows is not None:
        g_s0 = rows if s0.dim() == 2 else rows.sum(0)
    out = (g_in, g_v0, g_i0, g_s0, g_tau_mem, g_tau_syn, g_thr, g_bias, g_w_rec, g_u)
    if ahp is None:
        return out
    pa = partial[3 * BN + BN * S:]
    g_tau_ahp = grad_sum(pa[:BN], N, coll(ahp["tau_ahp"]), ahp["tau_ahp"].shape, gamma, ahp["tau_ahp"].contiguous())
    g_w_ahp = grad_sum(pa[BN:], N, coll(w_ahp), w_ahp.shape)
    if mask is not None and counts is None:  # the mask alone: no w_ahp gradient; no h_pre, no tau_ahp one
        g_w_ahp = torch.zeros_like(g_w_ahp)
    if h_pre.numel() == 0:
        g_tau_ahp = torch.zeros_like(g_tau_ahp)
    return (*out, batch_sum(H) if ahp.get("h0_shared") else H, g_w_ahp, g_tau_ahp)


# torch.sum on CUDA, emulated in torch ops from ATen's source (torch 2.13,
# aten/src/ATen/native/cuda/Reduce.cuh) for a contiguous (outputs, S) input summed over its last
# dimension, S < 128 (from 128 on torch vectorises the loads). Written independently of
# csrc/core/torch_sum.h, statement by statement after: setReduceConfig and
# ReduceConfig::set_block_dimension (512 threads, input split over block.x), thread_reduce_impl
# (vt0 = 4 accumulators: the main loop, then the tail), block_x_reduce (the shared-memory stage for
# block.x > 32, then the warp shuffles, offsets decreasing on CUDA in torch 2.13, "down", increasing
# in earlier releases and on ROCm, "up").
SUM_ORDERS = {"cpu": 0, "down": 1, "up": 2}  # core/torch_sum.h SumOrder


def _last_pow2(n):
    return 1 << (int(n).bit_length() - 1)


def reduce_cuh_sum(x, warp="down", outputs=None):
    S = x.shape[-1]
    outputs = x[..., 0].numel() if outputs is None else outputs
    assert 0 < S < 128, "the vectorised path (S >= 128) is not emulated"
    max_threads, warp_size, vt0 = 512, 32, 4
    dim0_pow2 = _last_pow2(S) if S < max_threads else max_threads
    dim1_pow2 = _last_pow2(outputs) if outputs < max_threads else max_threads
    block_width = min(dim0_pow2, warp_size)
    block_height = min(dim1_pow2, max_threads // block_width)
    block_width = min(dim0_pow2, max_threads // block_height)
    # No split across warps (values_per_thread < warp_split_threshold) and none across blocks.
    assert -(-S // block_width) < min(block_height * 16, 256)
    stride = block_width
    zero = torch.zeros_like(x[..., 0])
    value = []
    for lane in range(block_width):
        acc = [zero] * vt0
        idx = lane
        while idx + (vt0 - 1) * stride < S:
            for i in range(vt0):
                acc[i] = acc[i] + x[..., idx + i * stride]
            idx += stride * vt0
        for i in range(vt0):
            if idx >= S:
                break
            acc[i] = acc[i] + x[..., idx]
            idx += stride
        v = acc[0]
        for i in range(1, vt0):
            v = v + acc[i]
        value.append(v)
    dim_x = block_width
    if dim_x > warp_size:
        offset = dim_x // 2
        while offset >= warp_size:
            for lane in range(offset):
                value[lane] = value[lane] + value[lane + offset]
            offset //= 2
        dim_x = warp_size
    if warp == "down":
        offsets = [dim_x >> k for k in range(1, dim_x.bit_length()) if dim_x >> k > 0]
    else:
        offsets = [1 << k for k in range(dim_x.bit_length()) if 1 << k < dim_x]
    for offset in offsets:
        # WARP_SHFL_DOWN: every lane reads lane + offset before any lane writes; lanes past dim_x
        # (another row's) never reach lane 0.
        value = [value[lane] + value[lane + offset] if lane + offset < dim_x else value[lane]
                 for lane in range(dim_x)]
    return value[0]


def syn_make_case(seed, B, T, N, S, dtype, *, tau_syn_shape="full", scalars=False, rec=False, s0=True, i0_rows=False):
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


def syn_reference(case, *, noise=None, window=0.5, surrogate=StepPWL, max_spikes=2.0**16, order="down",
                  lengths=None):
    return synaptic_evolve_reference(
        case["x"], case["v0"], case["i0"], case["tau_mem"], case["tau_syn"], case["thr"], case["bias"], 1e-3,
        w_rec=case["w_rec"], s0=case["s0"], noise=noise, learning_window=window, max_spikes_per_dt=max_spikes,
        spike_generation_fn=surrogate, record=True, lengths=lengths,
        synapse_sum=None if order == "cpu" else lambda i: reduce_cuh_sum(i, order),
    )


def _syn_host_fwd(syn_lib, case, order="down", **kw):
    syn_lib.syn_host_set_sum_order(SUM_ORDERS[order])
    return syn_forward_on_host(syn_lib, case["x"], case["v0"], case["i0"], case["s0"], case["tau_mem"], case["tau_syn"],
                        case["thr"], case["bias"], w_rec=case["w_rec"], **kw)


SYN_NAMES = ("spikes", "vmem", "isyn", "irec", "v_final", "i_final", "s_final")


def _row_sums(syn_lib, x, order, outputs):
    got = torch.empty(x.shape[0], dtype=x.dtype)
    syn_lib.syn_host_row_sums(int(x.dtype == torch.float64), SUM_ORDERS[order], _ptr(x), x.shape[0], x.shape[1],
                              outputs, _ptr(got))
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S", [1, 2, 3, 4, 5, 7, 8, 13, 31, 33, 40, 63, 64, 65, 100, 127])
def test_synaptic_row_sums_follow_their_orders(syn_lib, dtype, S):
    """cpu_torch_sum is torch.sum on the CPU; each CUDA order is the emulation of Reduce.cuh above,
    also with fewer than 16 rows, where torch widens block.x past a warp (S >= 64)."""
    x = (torch.randn(64, S, dtype=dtype) * torch.logspace(-4, 4, S, dtype=dtype)).contiguous()
    assert_equal(_row_sums(syn_lib, x, "cpu", 64), x.sum(-1), f"cpu order, S={S}")
    for order in ("down", "up"):
        for outputs in (1, 3, 8, 16, 64, 100000):
            want = reduce_cuh_sum(x, order, outputs)
            assert_equal(_row_sums(syn_lib, x, order, outputs), want, f"{order} order, S={S}, outputs={outputs}")
    if S >= 3:  # the orders differ: the tests above can tell them apart
        assert not torch.equal(x.sum(-1), reduce_cuh_sum(x, "down"))
    if S >= 4:
        assert not torch.equal(reduce_cuh_sum(x, "down"), reduce_cuh_sum(x, "up"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S", [1, 2, 3, 4, 7, 8, 31, 63, 64, 100, 126])
def test_ahp_row_sums_follow_their_orders(syn_lib, dtype, S):
    """ahp_sum over the S + 1 lanes [i, h] (SPEC §9) is torch.sum over torch.cat((i, h)) on the CPU and
    the emulation of Reduce.cuh in each CUDA order; the written-out small-S cases (S known at compile
    time) give the same bits as the general code, in every order."""
    x = (torch.randn(64, S, dtype=dtype) * torch.logspace(-4, 4, S, dtype=dtype)).contiguous()
    h = -torch.rand(64, dtype=dtype) * 10.0 ** torch.randint(-3, 4, (64,), dtype=dtype)
    lanes = torch.cat((x, h[:, None]), 1)

    def got(order, outputs, fixed=False):
        out = torch.empty(64, dtype=dtype)
        syn_lib.syn_host_ahp_sums(int(dtype == torch.float64), SUM_ORDERS[order], int(fixed), _ptr(x), _ptr(h), 64, S,
                                  outputs, _ptr(out))
        return out

    fixed = (False, True) if S <= 2 else (False,)
    for f in fixed:
        assert_equal(got("cpu", 64, f), lanes.sum(-1), f"cpu order, S={S}, fixed={f}")
        for order in ("down", "up"):
            for outputs in (1, 3, 16, 64, 100000):
                want = reduce_cuh_sum(lanes, order, outputs)
                assert_equal(got(order, outputs, f), want, f"{order} order, S={S}, outputs={outputs}, fixed={f}")
    if S >= 2:  # three lanes or more: the CPU's order is not CUDA's
        assert not torch.equal(lanes.sum(-1), reduce_cuh_sum(lanes, "down"))
    if S >= 3:
        assert not torch.equal(reduce_cuh_sum(lanes, "down"), reduce_cuh_sum(lanes, "up"))


def grad_tree_sum(values, width=256, leaf=32):
    """csrc/core/grad_sums.h's pass-2 tree over float64 values, in Python floats: leaves of
    max(leaf, ceil(n / width)) consecutive values summed in order from 0, then added pairwise."""
    n = len(values)
    L = max(leaf, -(-n // width))
    v = []
    for j in range(0, n, L):
        acc = 0.0
        for x in values[j:j + L]:
            acc += x
        v.append(acc)
    w = 1
    while w < len(v):
        for j in range(0, len(v) - w, 2 * w):
            v[j] += v[j + w]
        w *= 2
    return v[0] if v else 0.0


@pytest.mark.parametrize("n", [1, 31, 32, 33, 100, 1000, 8192, 16385, 70001])
def test_gradient_sums_collapse_as_a_fixed_tree(syn_lib, n):
    """Pass 2 of the gradient sums (a scalar parameter: all N values; (1,S): each synapse's N values)
    as grad_tree_sum says, the tree the CUDA block computes; up to 32 values the sum in index order."""
    rows = torch.randn(n * 3, dtype=torch.float64) * torch.logspace(-6, 6, n * 3, dtype=torch.float64)
    for collapse, S in ((2, 1), (1, 3)):
        M = n * 3 if collapse == 2 else n * S
        got = torch.empty(() if collapse == 2 else (S,), dtype=torch.float64)
        partial = rows.clone()  # overwritten by the passes
        syn_lib.syn_host_grad_sum(1, _ptr(partial), M, S, collapse, _ptr(got), None, None, 1e-3, 1)
        values = rows.tolist()
        want = [grad_tree_sum(values)] if collapse == 2 else [grad_tree_sum(values[k::S]) for k in range(S)]
        assert got.reshape(-1).tolist() == want
    if n <= 32:  # one leaf: the additions in index order
        acc = 0.0
        for x in values[0::S]:
            acc += x
        assert want[0] == acc


@pytest.mark.parametrize("B,N,S", [(1, 1, 3), (40, 5, 2), (1, 129, 1), (3, 200, 3), (2, 300, 4)])
def test_synaptic_sums_inside_the_kernel_equal_the_two_passes(syn_lib, B, N, S):
    """The synaptic backward kernel's own gradient sums (the last call's blocks count their threads
    into tiles of 128 neurons, as the LIF kernel's) over the synaptic op's layout: per-neuron and
    per-synapse (N*S values a row) sums, kept, summed per synapse index or altogether. In any order
    of the blocks: the bits of pass 1 then pass 2 run after every thread."""
    g = torch.Generator().manual_seed(B * 1000 + N + S)
    counts = [N, N, N * S, N * S, N * S]
    collapses = [0, 2, 0, 1, 2]
    src = torch.randn(sum(B * c for c in counts), generator=g, dtype=torch.float64)
    src *= torch.logspace(-4, 4, src.numel(), dtype=torch.float64)
    shapes = [(c,) if k == 0 else ((S,) if k == 1 else ()) for c, k in zip(counts, collapses)]
    want, off = [], 0
    for c, k, shape in zip(counts, collapses, shapes):
        dst = torch.empty(shape, dtype=torch.float64)
        rows = src[off:off + B * c].clone()
        syn_lib.syn_host_grad_sum(1, _ptr(rows), c, S, k, _ptr(dst), None, None, 1e-3, B)
        want.append(dst)
        off += B * c
    blocks = -(-B * N // KERNEL_BLOCK)
    counts_t, collapses_t = torch.tensor(counts, dtype=torch.int64), torch.tensor(collapses, dtype=torch.int32)
    for order in (None, torch.arange(blocks - 1, -1, -1), torch.randperm(blocks, generator=g)):
        got = [torch.full(shape, float("nan"), dtype=torch.float64) for shape in shapes]
        partial = torch.full_like(src, float("nan"))  # a row read before its thread stored it shows
        dsts = (ctypes.c_void_p * len(got))(*[t.data_ptr() for t in got])
        order = None if order is None else order.to(torch.int64).contiguous()
        rc = syn_lib.syn_host_kernel_sums(_ptr(order), _ptr(src), _ptr(partial), B, N, S, len(counts),
                                          _ptr(counts_t), _ptr(collapses_t), dsts)
        assert rc == 0, "a tile's batch sums or the sums over the neurons did not run exactly once"
        for i, (a, b) in enumerate(zip(got, want)):
            assert_equal(a, b, f"sum {i} (counts {counts[i]}, collapse {collapses[i]})")


def test_sum_probe_tells_the_cuda_orders_apart(syn_lib):
    """The device probe (csrc/cuda/sum_order.h) sums these rows with torch.sum on CUDA and keeps the
    order whose emulation matches every row: each shape's rows must tell the two orders apart, and
    the emulations must be Reduce.cuh's."""
    shape = (ctypes.c_int64 * 2)()
    for p in range(syn_lib.syn_host_probe_shapes()):
        syn_lib.syn_host_probe_shape(p, shape)
        outputs, S = shape[0], shape[1]
        x = torch.tensor([syn_lib.syn_host_probe_value(k) for k in range(outputs * S)],
                         dtype=torch.float32).reshape(outputs, S)
        assert torch.isfinite(x).all()
        down, up = _row_sums(syn_lib, x, "down", outputs), _row_sums(syn_lib, x, "up", outputs)
        assert_equal(down, reduce_cuh_sum(x, "down"), f"probe {p} down")
        assert_equal(up, reduce_cuh_sum(x, "up"), f"probe {p} up")
        assert not torch.equal(down, up), f"probe shape {(outputs, S)} cannot tell the orders apart"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("shapes", ["full", "row-scalar"])
@pytest.mark.parametrize("order", ["down", "up"])
def test_synaptic_forward_threads_equal_reference(syn_lib, dtype, S, rec, shapes, order):
    B, T, N = 3, 19, 6
    case = syn_make_case(1 + S, B, T, N, S, dtype, rec=rec, tau_syn_shape="full" if shapes == "full" else "row",
                     scalars=shapes != "full", i0_rows=shapes == "full")
    got = _syn_host_fwd(syn_lib, case, order)
    want = syn_reference(case, order=order)
    for name, g_, w_ in zip(SYN_NAMES, got, want):
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
def test_synaptic_forward_threads_noise(syn_lib, dtype):
    """A noise tensor, and the in-kernel Philox stream (the same as the LIF kernels', lif_cuda.noise)."""
    B, T, N, S = 2, 11, 5, 2
    case = syn_make_case(3, B, T, N, S, dtype, rec=True)
    z = 0.2 * torch.randn(B, T, N, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(dtype)
    got = _syn_host_fwd(syn_lib, case, noise=z)
    want = syn_reference(case, noise=z)
    for name, g_, w_ in zip(SYN_NAMES, got, want):
        assert_equal(g_, w_, f"{name} (noise tensor)")
    key = torch.tensor([1234, 5], dtype=torch.int64)
    scale = 0.5 * (1e-3**0.5)
    got = _syn_host_fwd(syn_lib, case, key=key, noise_scale=scale)
    want = syn_reference(case, noise=lif_cuda.noise.kernel_noise((B, T, N), scale, key, dtype=dtype))
    for name, g_, w_ in zip(SYN_NAMES, got, want):
        assert_equal(g_, w_, f"{name} (in-kernel noise)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("surrogate", [StepPWL, PeriodicExponential], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("S,rec,shapes", [(1, False, "full"), (2, True, "full"), (3, True, "row-scalar"),
                                          (4, False, "scalar-syn")])
def test_synaptic_backward_threads_match_reference_autograd(syn_lib, dtype, surrogate, S, rec, shapes):
    B, T, N = 2, 15, 4
    ts = {"full": "full", "row-scalar": "row", "scalar-syn": "scalar"}[shapes]
    case = syn_make_case(7 + S, B, T, N, S, dtype, rec=rec, tau_syn_shape=ts, scalars=shapes == "row-scalar",
                     i0_rows=shapes == "full")
    g = torch.Generator().manual_seed(99)
    rn = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    z = 0.1 * rn(B, T, N)
    gs, gw, gi, gr, gvf, gif = rn(B, T, N), rn(B, T, N), rn(B, T, N, S), rn(B, T, N, S), rn(B, N), rn(B, N, S)
    names = ["x", "v0", "i0", "s0", "tau_mem", "tau_syn", "thr", "bias"] + (["w_rec"] if rec else [])
    leaves = {k: case[k].clone().requires_grad_(True) for k in names}
    zl = z.clone().requires_grad_(True)
    out = syn_reference({**case, **leaves}, noise=zl, surrogate=surrogate)
    outs = [out[0], out[1], out[2], out[4], out[5]] + ([out[3]] if rec else [])
    ups = [gs, gw, gi, gvf, gif] + ([gr] if rec else [])
    want = dict(zip(names + ["noise"], torch.autograd.grad(outs, [*leaves.values(), zl], ups, allow_unused=True)))

    fwd = _syn_host_fwd(syn_lib, case, noise=z)
    surr = lif_cuda.ops.SURROGATE_IDS[surrogate.__name__]
    got = syn_backward_on_host(syn_lib, gs, gw, gi, gr if rec else None, gvf, gif, fwd[7], fwd[8], case["v0"],
                               case["s0"],
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
def test_synaptic_threads_equal_fused_cpu_op(syn_lib, io, S, rec, surrogate):
    """Thread by thread (the CUDA way) and tile by tile (the CPU kernels) give the same bits, forward
    and backward with every parameter-gradient sum, where the two sum orders agree (S <= 2)."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    B, T, N = 3, 17, 9
    ct = torch.float32 if io in (torch.float16, torch.bfloat16) else io
    case = syn_make_case(5, B, T, N, S, ct, rec=rec)
    case["x"] = case["x"].to(io)
    op = torch.ops.lif_cuda
    key = torch.tensor([42, 3], dtype=torch.int64)
    for kw in (dict(key=None, noise_scale=0.0), dict(key=key, noise_scale=0.05)):
        want = op.synaptic_forward(case["x"], case["v0"], case["i0"], case["s0"], case["tau_mem"], case["tau_syn"],
                                   case["thr"], case["bias"], case["w_rec"], None, kw["key"], 1e-3, kw["noise_scale"],
                                   0.5, 2.0**16, surrogate, True, True)
        got = _syn_host_fwd(syn_lib, case, **kw)
        for name, a_, b_ in zip(SYN_NAMES + ("u", "a"), got, (*want[:7], want[7], want[8])):
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
    got = syn_backward_on_host(syn_lib, gs, ups["gw"], ups["gi"], ups["gr"], ups["gvf"], ups["gif"], u, a, case["v0"],
                               case["s0"],
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


@pytest.mark.parametrize("io", [torch.float32, torch.float64, torch.float16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("S,rec", [(1, True), (2, False), (3, False), (2, True)])
@pytest.mark.parametrize("lengths", [None, [40, 0, 9, 33]], ids=["full", "lengths"])
def test_synaptic_compact_threads_equal_fused_cpu_op(syn_lib, io, S, rec, lengths):
    """The compact save (SPEC §11: the window mask in u's place, no i_pre): the CUDA threads write the
    CPU tiles' mask words (the recurrent model's one-step calls adding to a word, padding included)
    and, from them, give the CPU op's gradients bit for bit; and those are the gradients the full
    save gives for the input, the state and bias."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    B, T, N = 4, 40, 9
    ct = torch.float32 if io == torch.float16 else io
    case = syn_make_case(6, B, T, N, S, ct, rec=rec)
    case["x"] = case["x"].to(io)
    lens = None if lengths is None else torch.tensor(lengths)
    op = torch.ops.lif_cuda
    args = (case["x"], case["v0"], case["i0"], case["s0"], case["tau_mem"], case["tau_syn"], case["thr"], case["bias"],
            case["w_rec"], None, None, 1e-3, 0.0, 0.4, 3.0, 0, True, True, lens)
    full = op.synaptic_forward(*args)
    # Recurrent: w_rec's gradient reads the spikes, kept as uint8 counts beside the mask.
    want = op.synaptic_forward(*args, save_mask=True, save_i_pre=False, save_counts=rec)
    assert want[7].dtype == torch.int32 and want[8].shape == (0, S)
    assert want[14].shape == ((B, T, N) if rec else (0,))
    order = "down" if S <= 2 else "cpu"  # S <= 2: one order everywhere; else the CPU's, as the op
    counts = torch.full((B, T, N), 77, dtype=torch.uint8) if rec else None
    got = _syn_host_fwd(syn_lib, case, order=order, max_spikes=3.0, lengths=lens, save_mask=True, save_i_pre=False,
                        window=0.4, counts=counts)
    if rec:
        assert torch.equal(want[14].float(), want[0].float()), "counts are the spikes"
    if S <= 2:
        assert_equal(got[7], want[7], "mask words")
        assert_equal(got[0], want[0], "spikes")
        if rec:
            assert torch.equal(counts, want[14]), "counts (padding included)"
    g = torch.Generator().manual_seed(1)
    rn = lambda *s: torch.randn(s, generator=g).to(ct)  # noqa: E731
    gs = rn(B, T, N).to(io)
    ups = dict(gw=rn(B, T, N), gi=rn(B, T, N, S), gr=rn(B, T, N, S) if rec else None, gvf=rn(B, N), gif=rn(B, N, S))
    bargs = (gs, ups["gw"], ups["gi"], ups["gr"], ups["gvf"], ups["gif"])
    rest = (case["v0"], case["s0"], case["tau_mem"], case["tau_syn"], case["thr"], case["w_rec"], 1e-3, 0.4, 3.0, 0,
            False, True, True, lens)
    plain = op.synaptic_backward(*bargs, full[7], full[8], *rest)
    kept = want[14] if rec else None
    compact = op.synaptic_backward(*bargs, want[7], want[8], *rest, spike_counts=kept)
    host = syn_backward_on_host(syn_lib, *bargs, want[7], want[8], case["v0"], case["s0"], case["tau_mem"],
                                case["tau_syn"], case["thr"], w_rec=case["w_rec"], window=0.4, max_spikes=3.0,
                                lengths=lens, counts=kept)
    names = ("g_in", "g_v0", "g_i0", "g_s0", "g_tau_mem", "g_tau_syn", "g_thr", "g_bias", "g_w_rec", "g_noise")
    for k, name in enumerate(names):
        if name in ("g_in", "g_v0", "g_i0", "g_bias", "g_noise") or (name in ("g_s0", "g_w_rec") and rec):
            assert_equal(compact[k], plain[k], f"compact {name} against the full save")
        if name in ("g_tau_mem", "g_thr", "g_tau_syn") and compact[k].numel():
            assert not compact[k].any(), f"{name}: what was not kept gives zeros"
        if S <= 2 and host[k] is not None and name not in ("g_s0", "g_w_rec"):
            assert_equal(host[k], compact[k], f"threads {name}")
        if host[k] is not None and name in ("g_s0", "g_w_rec") and rec:  # mm by ATen, from the counts
            assert rel_err(host[k], compact[k]) <= {torch.float64: 1e-14}.get(ct, 1e-6), f"threads {name}"


# ------------------------------------------------------------------ lengths (SPEC §8)
# Row lengths: T, 0, a part, one step (the recurrent time loop: calls before, at and after a row's end).
SYN_LENGTHS = [17, 0, 9, 1]


@pytest.mark.parametrize("io", [torch.float32, torch.float64, torch.float16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("S,rec", [(1, True), (2, False), (2, True)])
def test_synaptic_threads_with_lengths_equal_fused_cpu_op(syn_lib, io, S, rec):
    """With per-row lengths, thread by thread and tile by tile give the same bits, forward (the padding
    too, u and a included) and backward with every parameter-gradient sum (S <= 2)."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    B, T, N = len(SYN_LENGTHS), 17, 7
    ct = torch.float32 if io == torch.float16 else io
    case = syn_make_case(11, B, T, N, S, ct, rec=rec, i0_rows=True)
    case["x"] = case["x"].to(io)
    lengths = torch.tensor(SYN_LENGTHS)
    op = torch.ops.lif_cuda
    want = op.synaptic_forward(case["x"], case["v0"], case["i0"], case["s0"], case["tau_mem"], case["tau_syn"],
                               case["thr"], case["bias"], case["w_rec"], None, None, 1e-3, 0.0, 0.5, 2.0**16, 0,
                               True, True, lengths)
    got = _syn_host_fwd(syn_lib, case, lengths=lengths)
    for name, a_, b_ in zip(SYN_NAMES + ("u", "a"), got, (*want[:7], want[7], want[8])):
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
    got = syn_backward_on_host(syn_lib, gs, ups["gw"], ups["gi"], ups["gr"], ups["gvf"], ups["gif"], u, a, case["v0"],
                               case["s0"],
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
    for b, L in enumerate(SYN_LENGTHS):
        assert not got[0][b, L:].any() and not got[9][b, L:].any(), f"row {b}: padding input/noise gradient"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("S,rec", [(3, False), (3, True), (5, True)])
def test_synaptic_threads_with_lengths_match_reference(syn_lib, dtype, S, rec):
    """With lengths and the CUDA order of the synapse sum (S > 2): forward bit for bit against the masked
    reference, backward against its autograd, gradients arriving on the padding included."""
    B, T, N = len(SYN_LENGTHS), 17, 4
    case = syn_make_case(12 + S, B, T, N, S, dtype, rec=rec, i0_rows=True)
    lengths = torch.tensor(SYN_LENGTHS)
    g = torch.Generator().manual_seed(98)
    rn = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    z = 0.1 * rn(B, T, N)
    got_fwd = _syn_host_fwd(syn_lib, case, noise=z, lengths=lengths)
    want = syn_reference(case, noise=z, lengths=lengths)
    for name, g_, w_ in zip(SYN_NAMES, got_fwd, want):
        if name == "irec" and not rec:
            continue
        assert_equal(g_, w_, name)
    gs, gw, gi, gr, gvf, gif = rn(B, T, N), rn(B, T, N), rn(B, T, N, S), rn(B, T, N, S), rn(B, N), rn(B, N, S)
    names = ["x", "v0", "i0", "tau_mem", "tau_syn", "thr", "bias"] + (["s0", "w_rec"] if rec else [])
    leaves = {k: case[k].clone().requires_grad_(True) for k in names}
    zl = z.clone().requires_grad_(True)
    out = syn_reference({**case, **leaves}, noise=zl, lengths=lengths)
    outs = [out[0], out[1], out[2], out[4], out[5]] + ([out[3]] if rec else [])
    ups = [gs, gw, gi, gvf, gif] + ([gr] if rec else [])
    want = dict(zip(names + ["noise"], torch.autograd.grad(outs, [*leaves.values(), zl], ups)))
    got = syn_backward_on_host(syn_lib, gs, gw, gi, gr if rec else None, gvf, gif, got_fwd[7], got_fwd[8], case["v0"],
                        case["s0"], case["tau_mem"], case["tau_syn"], case["thr"], w_rec=case["w_rec"],
                        i0_shared=False, lengths=lengths)
    got = dict(zip(["x", "v0", "i0", "s0", "tau_mem", "tau_syn", "thr", "bias", "w_rec", "noise"], got))
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    for name in want:
        assert want[name].abs().sum() > 0, f"{name}: no gradient reached it"
        err = rel_err(got[name], want[name])
        assert err <= tol, f"grad {name}: relative error {err:.2e} > {tol:.0e}"


# ------------------------------------------------------------------ the AHP current (SPEC §9)
# The same threads with the AHP current: its lane is the last of the S + 1 summed, so the CPU and
# CUDA orders agree for S = 1 only (two lanes): there, thread by thread equals the fused CPU op bit
# for bit; for any S, the threads equal the reference with each CUDA order of the S + 1 lanes.

AHP_NAMES = ("spikes", "vmem", "isyn", "irec", "iahp", "v_final", "i_final", "s_final", "h_final")


def ahp_make_case(seed, B, N, dtype, *, scalars=False, h0_rows=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(s, generator=g, dtype=torch.float64)  # noqa: E731
    P = () if scalars else (N,)
    ahp = dict(h0=-0.3 * (r(B, N) if h0_rows else r(N)), w_ahp=-0.2 - 0.6 * r(*P), tau_ahp=5e-3 + 30e-3 * r(*P))
    return {k: v.to(dtype) for k, v in ahp.items()}


def ahp_host_fwd(syn_lib, case, ahp, **kw):
    """The threads' forward outputs by name (AHP_NAMES, then u, a and h_pre)."""
    o = _syn_host_fwd(syn_lib, case, ahp=ahp, **kw)
    return dict(zip(AHP_NAMES + ("u", "a", "h_pre"), (*o[:4], o[9], *o[4:7], o[10], o[7], o[8], o[11])))


def ahp_reference(case, ahp, *, noise=None, surrogate=StepPWL, lengths=None, order="down"):
    out = synaptic_evolve_reference(
        case["x"], case["v0"], case["i0"], case["tau_mem"], case["tau_syn"], case["thr"], case["bias"], 1e-3,
        w_rec=case["w_rec"], s0=case["s0"], noise=noise, spike_generation_fn=surrogate, record=True,
        synapse_sum=lambda i: reduce_cuh_sum(i, order), lengths=lengths, w_ahp=ahp["w_ahp"], tau_ahp=ahp["tau_ahp"],
        h0=ahp["h0"],
    )
    return dict(zip(AHP_NAMES, out))


# float32 with per-neuron parameters only: a () parameter's gradient sums B*N*T float32 terms that
# can cancel beyond 1e-5 in the reference itself (docs/guarantees.md); float64 covers those shapes.
AHP_THREAD_CASES = [(torch.float64, 1, False, "full"), (torch.float64, 2, True, "full"),
                    (torch.float64, 3, True, "row-scalar"), (torch.float64, 5, False, "row-scalar"),
                    (torch.float32, 1, False, "full"), (torch.float32, 2, True, "full"),
                    (torch.float32, 3, True, "full")]


@pytest.mark.parametrize("dtype,S,rec,shapes", AHP_THREAD_CASES,
                         ids=[f"{str(d)[6:]}-{S}-{r}-{sh}" for d, S, r, sh in AHP_THREAD_CASES])
@pytest.mark.parametrize("lengths", [None, SYN_LENGTHS], ids=["all", "lengths"])
@pytest.mark.parametrize("order", ["down", "up"])
def test_ahp_threads_match_reference(syn_lib, dtype, S, rec, shapes, lengths, order):
    """The AHP threads: forward bit for bit against the reference (each CUDA order of the S + 1
    lanes), backward against its autograd (h0, w_ahp, tau_ahp, s0 and every other argument)."""
    B, T, N = len(SYN_LENGTHS), 17, 4
    full = shapes == "full"
    case = syn_make_case(21 + S, B, T, N, S, dtype, rec=rec, tau_syn_shape="full" if full else "row",
                         scalars=not full, i0_rows=full)
    ahp = ahp_make_case(22 + S, B, N, dtype, scalars=not full, h0_rows=full)
    lengths = None if lengths is None else torch.tensor(lengths)
    g = torch.Generator().manual_seed(97)
    rn = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    z = 0.1 * rn(B, T, N)
    fwd = ahp_host_fwd(syn_lib, case, ahp, noise=z, lengths=lengths, order=order)
    want = ahp_reference(case, ahp, noise=z, lengths=lengths, order=order)
    for name in AHP_NAMES:
        if name == "irec" and not rec:
            continue
        assert_equal(fwd[name], want[name], name)
    assert (fwd["spikes"] > 0).any() and (fwd["iahp"] < 0).any()
    ups = dict(spikes=rn(B, T, N), vmem=rn(B, T, N), isyn=rn(B, T, N, S), irec=rn(B, T, N, S), iahp=rn(B, T, N),
               v_final=rn(B, N), i_final=rn(B, N, S), h_final=rn(B, N))
    keys = [k for k in ups if k != "irec" or rec]
    names = ["x", "v0", "i0", "s0", "tau_mem", "tau_syn", "thr", "bias"] + (["w_rec"] if rec else [])
    leaves = {k: case[k].clone().requires_grad_(True) for k in names}
    ahp_leaves = {k: v.clone().requires_grad_(True) for k, v in ahp.items()}
    zl = z.clone().requires_grad_(True)
    out = ahp_reference({**case, **leaves}, ahp_leaves, noise=zl, lengths=lengths, order=order)
    every = [*leaves.values(), *ahp_leaves.values(), zl]
    grads = torch.autograd.grad([out[k] for k in keys], every, [ups[k] for k in keys])
    want = dict(zip(names + list(ahp) + ["noise"], grads))
    got = syn_backward_on_host(
        syn_lib, ups["spikes"], ups["vmem"], ups["isyn"], ups["irec"] if rec else None, ups["v_final"],
        ups["i_final"], fwd["u"], fwd["a"], case["v0"], case["s0"], case["tau_mem"], case["tau_syn"], case["thr"],
        w_rec=case["w_rec"], scalar_bias=case["bias"].dim() == 0, i0_shared=case["i0"].dim() == 2, lengths=lengths,
        ahp=dict(h_pre=fwd["h_pre"], w_ahp=ahp["w_ahp"], tau_ahp=ahp["tau_ahp"], gh=ups["iahp"], ghf=ups["h_final"],
                 h0_shared=ahp["h0"].dim() == 1),
    )
    got = dict(zip(["x", "v0", "i0", "s0", "tau_mem", "tau_syn", "thr", "bias", "w_rec", "noise", "h0", "w_ahp",
                    "tau_ahp"], got))
    tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert want[name].abs().sum() > 0, f"{name}: no gradient reached it"
        err = rel_err(got[name], want[name])
        assert err <= tol, f"grad {name}: relative error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("io", [torch.float32, torch.float64, torch.float16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("lengths", [None, SYN_LENGTHS], ids=["all", "lengths"])
def test_ahp_threads_equal_fused_cpu_op(syn_lib, io, rec, lengths):
    """S = 1 (two lanes, one order): thread by thread and tile by tile give the same bits with the
    AHP current, forward (h_pre, the record and the final h included) and backward with every
    parameter-gradient sum (w_ahp's and tau_ahp's included)."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    B, T, N, S = len(SYN_LENGTHS), 17, 9, 1
    ct = torch.float32 if io == torch.float16 else io
    case = syn_make_case(15, B, T, N, S, ct, rec=rec, i0_rows=True)
    case["x"] = case["x"].to(io)
    ahp = ahp_make_case(16, B, N, ct)
    lengths = None if lengths is None else torch.tensor(lengths)
    op = torch.ops.lif_cuda
    o = op.synaptic_forward(case["x"], case["v0"], case["i0"], case["s0"], case["tau_mem"], case["tau_syn"],
                            case["thr"], case["bias"], case["w_rec"], None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, True,
                            True, lengths, ahp["w_ahp"], ahp["tau_ahp"], ahp["h0"])
    want = dict(zip(AHP_NAMES + ("u", "a", "h_pre"), (*o[:4], o[11], *o[4:7], o[12], o[7], o[8], o[13])))
    got = ahp_host_fwd(syn_lib, case, ahp, lengths=lengths)
    for name in want:
        if name == "irec" and not rec:
            continue
        assert_equal(got[name], want[name], f"forward {name}")
    g = torch.Generator().manual_seed(3)
    rn = lambda *s: torch.randn(s, generator=g).to(ct)  # noqa: E731
    gs = rn(B, T, N).to(io)
    ups = dict(gw=rn(B, T, N), gi=rn(B, T, N, S), gr=rn(B, T, N, S) if rec else None, gvf=rn(B, N), gif=rn(B, N, S),
               gh=rn(B, T, N), ghf=rn(B, N))
    want = op.synaptic_backward(gs, ups["gw"], ups["gi"], ups["gr"], ups["gvf"], ups["gif"], got["u"], got["a"],
                                case["v0"], case["s0"], case["tau_mem"], case["tau_syn"], case["thr"], case["w_rec"],
                                1e-3, 0.5, 2.0**16, 0, False, False, False, lengths, ups["gh"], ups["ghf"],
                                got["h_pre"], ahp["w_ahp"], ahp["tau_ahp"], False)
    got = syn_backward_on_host(syn_lib, gs, ups["gw"], ups["gi"], ups["gr"], ups["gvf"], ups["gif"], got["u"],
                               got["a"], case["v0"], case["s0"], case["tau_mem"], case["tau_syn"], case["thr"],
                               w_rec=case["w_rec"], i0_shared=False, lengths=lengths,
                               ahp=dict(h_pre=got["h_pre"], w_ahp=ahp["w_ahp"], tau_ahp=ahp["tau_ahp"], gh=ups["gh"],
                                        ghf=ups["ghf"], h0_shared=False))
    names = ("g_in", "g_v0", "g_i0", "g_s0", "g_tau_mem", "g_tau_syn", "g_thr", "g_bias", "g_w_rec", "g_noise",
             "g_h0", "g_w_ahp", "g_tau_ahp")
    for name, a_, b_ in zip(names, got, want):
        if name in ("g_w_rec", "g_noise") and (a_ is None or not b_.numel()):
            continue
        if name in ("g_w_rec", "g_s0"):  # products by ATen (mm) from bit-identical operands
            assert rel_err(a_, b_) <= {torch.float64: 1e-14}.get(ct, 1e-6), name
            continue
        assert_equal(a_, b_, f"backward {name}")


@pytest.mark.parametrize("io", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("rec", [False, True], ids=["ff", "rec"])
@pytest.mark.parametrize("lengths", [None, [40, 0, 9, 33]], ids=["all", "lengths"])
def test_ahp_compact_threads_equal_fused_cpu_op(syn_lib, io, rec, lengths):
    """The compact save with the AHP current and w_ahp trained (SPEC §11: the mask, the spikes as uint8
    counts, no i_pre, no h_pre): the threads write the CPU op's mask and counts and give its gradients
    from them, w_ahp's included; and those equal the full save's."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    B, T, N, S = 4, 40, 9, 1
    case = syn_make_case(17, B, T, N, S, io, rec=rec, i0_rows=True)
    ahp = ahp_make_case(18, B, N, io)
    lens = None if lengths is None else torch.tensor(lengths)
    op = torch.ops.lif_cuda
    args = (case["x"], case["v0"], case["i0"], case["s0"], case["tau_mem"], case["tau_syn"], case["thr"], case["bias"],
            case["w_rec"], None, None, 1e-3, 0.0, 0.4, 3.0, 0, True, True, lens, ahp["w_ahp"], ahp["tau_ahp"],
            ahp["h0"])
    full = op.synaptic_forward(*args)
    o = op.synaptic_forward(*args, save_mask=True, save_i_pre=False, save_h_pre=False, save_counts=True)
    assert o[7].dtype == torch.int32 and o[13].numel() == 0 and o[14].dtype == torch.uint8
    counts = torch.full((B, T, N), 77, dtype=torch.uint8)
    got = ahp_host_fwd(syn_lib, case, ahp, lengths=lens, max_spikes=3.0, window=0.4, save_mask=True,
                       save_i_pre=False, save_h_pre=False, counts=counts)
    assert_equal(got["u"], o[7], "mask words")
    assert torch.equal(counts, o[14]), "counts (padding included)"
    g = torch.Generator().manual_seed(4)
    rn = lambda *s: torch.randn(s, generator=g).to(io)  # noqa: E731
    ups = [rn(B, T, N), rn(B, T, N), rn(B, T, N, S), rn(B, T, N, S) if rec else None, rn(B, N), rn(B, N, S)]
    gh, ghf = rn(B, T, N), rn(B, N)
    rest = (case["v0"], case["s0"], case["tau_mem"], case["tau_syn"], case["thr"], case["w_rec"], 1e-3, 0.4, 3.0, 0,
            False, False, False, lens, gh, ghf)
    plain = op.synaptic_backward(*ups, full[7], full[8], *rest, full[13], ahp["w_ahp"], ahp["tau_ahp"], False)
    compact = op.synaptic_backward(*ups, o[7], o[8], *rest, o[13], ahp["w_ahp"], ahp["tau_ahp"], False,
                                   spike_counts=o[14])
    host = syn_backward_on_host(syn_lib, *ups, o[7], o[8], case["v0"], case["s0"], case["tau_mem"], case["tau_syn"],
                                case["thr"], w_rec=case["w_rec"], window=0.4, max_spikes=3.0, i0_shared=False,
                                lengths=lens, counts=o[14],
                                ahp=dict(h_pre=o[13], w_ahp=ahp["w_ahp"], tau_ahp=ahp["tau_ahp"], gh=gh, ghf=ghf,
                                         h0_shared=False))
    names = ("g_in", "g_v0", "g_i0", "g_s0", "g_tau_mem", "g_tau_syn", "g_thr", "g_bias", "g_w_rec", "g_noise",
             "g_h0", "g_w_ahp", "g_tau_ahp")
    for k, name in enumerate(names):
        if name in ("g_in", "g_v0", "g_i0", "g_s0", "g_bias", "g_w_rec", "g_h0", "g_w_ahp"):
            assert_equal(compact[k], plain[k], f"compact {name} against the full save")
        if name in ("g_tau_mem", "g_thr", "g_tau_syn", "g_tau_ahp"):
            assert not compact[k].any(), f"{name}: what was not kept gives zeros"
        if host[k] is not None and compact[k].numel() and name not in ("g_s0", "g_w_rec"):
            assert_equal(host[k], compact[k], f"threads {name}")
        if host[k] is not None and compact[k].numel() and name in ("g_s0", "g_w_rec"):  # mm by ATen
            assert rel_err(host[k], compact[k]) <= {torch.float64: 1e-14}.get(io, 1e-6), f"threads {name}"



@pytest.mark.parametrize("io", [torch.float32, torch.float64, torch.float16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("S", [1, 2, 3])
@pytest.mark.parametrize("save", ["u", "mask"])
@pytest.mark.parametrize("ahp", [False, True], ids=["plain", "ahp"])
def test_synaptic_backward_ring_every_length(syn_lib, io, S, save, ahp):
    """The feed-forward backward runs its steps through a ring of loaded steps (reverse_steps): for
    T = 1..11 (around the ring's size and twice it) and every row length 0..T, the threads give the
    CPU op's gradients bit for bit, from u or the window mask (with the counts under AHP), with
    and without the AHP current."""
    if not lif_cuda.fused_available("cpu"):
        pytest.skip("the fused CPU op is not built")
    ct = torch.float32 if io == torch.float16 else io
    op = torch.ops.lif_cuda
    mask = save == "mask"
    names = ("g_in", "g_v0", "g_i0", "g_s0", "g_tau_mem", "g_tau_syn", "g_thr", "g_bias", "g_w_rec", "g_noise",
             "g_h0", "g_w_ahp", "g_tau_ahp")
    for T in range(1, 12):
        B, N = T + 1, 5
        lens = torch.arange(B)  # row b runs b steps: 0 .. T
        case = syn_make_case(30 + T, B, T, N, S, ct, i0_rows=True)
        case["x"] = case["x"].to(io)
        extra = ahp_make_case(31 + T, B, N, ct) if ahp else None
        args = (case["x"], case["v0"], case["i0"], case["s0"], case["tau_mem"], case["tau_syn"], case["thr"],
                case["bias"], None, None, None, 1e-3, 0.0, 0.4, 3.0, 0, True, True, lens)
        if ahp:
            args += (extra["w_ahp"], extra["tau_ahp"], extra["h0"])
        o = op.synaptic_forward(*args, save_mask=mask, save_i_pre=not mask, save_h_pre=not mask,
                                save_counts=mask and ahp)
        counts = o[14] if mask and ahp else None
        g = torch.Generator().manual_seed(T)
        ups = [torch.randn(shape, generator=g).to(ct) if shape else None
               for shape in ((B, T, N), (B, T, N), (B, T, N, S), None, (B, N), (B, N, S), (B, T, N), (B, N))]
        ups[0] = ups[0].to(io)
        ghf, gh = ups.pop(), ups.pop()
        rest = (case["v0"], case["s0"], case["tau_mem"], case["tau_syn"], case["thr"], None, 1e-3, 0.4, 3.0, 0,
                False, False, True, lens)
        if ahp:
            rest += (gh, ghf, o[13], extra["w_ahp"], extra["tau_ahp"], False)
        want = op.synaptic_backward(*ups, o[7], o[8], *rest, spike_counts=counts)
        got = syn_backward_on_host(
            syn_lib, *ups, o[7], o[8], case["v0"], case["s0"], case["tau_mem"], case["tau_syn"], case["thr"],
            window=0.4, max_spikes=3.0, i0_shared=False, lengths=lens, counts=counts,
            ahp=dict(h_pre=o[13], w_ahp=extra["w_ahp"], tau_ahp=extra["tau_ahp"], gh=gh, ghf=ghf,
                     h0_shared=False) if ahp else None)
        for name, a_, b_ in zip(names, got, want):
            if a_ is None or not b_.numel() or name == "g_s0":  # no w_rec: s0 gets no gradient
                continue
            assert_equal(a_, b_, f"T={T} backward {name}")

# ====================================================================== the adaptive LIF (SPEC §10)
# cuda/adaptive_thread.h run thread by thread on the host, against the fused CPU op, bit for bit:
# forward outputs, the saved sequences, every gradient (the partial sums by core/grad_sums.h's
# rule). Arguments travel as arrays of pointers, integers and reals, in the orders below.

ADAPTIVE_HEADERS = HEADERS + [CSRC / "cuda" / "adaptive_thread.h"]

ADAPTIVE_HARNESS = HARNESS_COMMON + r"""
#include "core/switch.h"
#include "cuda/adaptive_thread.h"

using namespace lif::gpu;

template <typename T>
static lif::PerNeuron<T> per_neuron(const void* p, int64_t scalars, int bit) {
  return {static_cast<const T*>(p), (scalars & bit) ? 0 : 1};
}

// ptrs: x, noise, v0, b0, alpha, thr, bias, rho, beta, s, vmem, adapt, u, b, v_final, b_final,
// lengths; ints: kernel_noise, seed, offset, v0_stride_b, b0_stride_b, scalars (alpha 1, thr 2,
// bias 4, rho 8, beta 16), B, Tn, N; reals: noise_scale, max_spikes.
template <typename IT, typename T>
static void forward_t(const void* const* p, const int64_t* in, const double* re) {
  lif::AdaptiveForwardArgs<IT, T> a{};
  lif::LifForwardArgs<IT, T>& m = a.lif;
  m.x = static_cast<const IT*>(p[0]);
  m.noise.tensor = static_cast<const T*>(p[1]);
  m.noise.mode = p[1] ? lif::kNoiseTensor : (in[0] ? lif::kNoiseKernel : lif::kNoNoise);
  m.noise.key.seed = static_cast<uint64_t>(in[1]);
  m.noise.key.offset = static_cast<uint64_t>(in[2]);
  m.noise.scale = re[0];
  m.v0 = static_cast<const T*>(p[2]);
  a.b0 = static_cast<const T*>(p[3]);
  m.v0_stride_b = in[3];
  a.b0_stride_b = in[4];
  m.alpha = per_neuron<T>(p[4], in[5], 1);
  m.thr = per_neuron<T>(p[5], in[5], 2);
  m.bias = per_neuron<T>(p[6], in[5], 4);
  a.rho = per_neuron<T>(p[7], in[5], 8);
  a.beta = per_neuron<T>(p[8], in[5], 16);
  m.max_spikes = re[1];
  m.s_out = static_cast<IT*>(const_cast<void*>(p[9]));
  m.vmem_out = static_cast<T*>(const_cast<void*>(p[10]));
  a.adapt_out = static_cast<T*>(const_cast<void*>(p[11]));
  m.u_out = static_cast<T*>(const_cast<void*>(p[12]));
  a.b_out = static_cast<T*>(const_cast<void*>(p[13]));
  m.v_final = static_cast<T*>(const_cast<void*>(p[14]));
  a.b_final = static_cast<T*>(const_cast<void*>(p[15]));
  m.lengths = static_cast<const int64_t*>(p[16]);
  m.B = in[6];
  m.Tn = in[7];
  m.N = in[8];
  NOISE_SWITCH(m.noise.mode, NOISE, [&] {
    BOOL_SWITCH(m.u_out != nullptr, SAVE, [&] {
      BOOL_SWITCH(m.vmem_out != nullptr, RECORD, [&] {
        for (int64_t idx = 0; idx < m.B * m.N; ++idx)
          adaptive_forward_thread<IT, T, NOISE, SAVE, RECORD>(a, idx);
      });
    });
  });
}

// ptrs: gs, gw, gb, gvf, gbf, u, b, v0, b0, alpha, tau_mem, thr, rho, tau_adapt, beta, g_in, g_v0,
// g_b0, partial (7,B,N), g_tau_mem, g_thr, g_bias, g_tau_adapt, g_beta, lengths; ints: gs strides
// (3), v0_stride_b, b0_stride_b, scalars (as forward_t's, bias 4 meaning a () bias), surrogate, B,
// Tn, N; reals: dt, window, max_spikes.
template <typename IT, typename T>
static void backward_t(const void* const* p, const int64_t* in, const double* re) {
  lif::AdaptiveBackwardArgs<IT, T> a{};
  lif::LifBackwardArgs<IT, T>& m = a.lif;
  m.gs = static_cast<const IT*>(p[0]);
  m.gs_stride_b = in[0];
  m.gs_stride_t = in[1];
  m.gs_stride_n = in[2];
  m.gw = static_cast<const T*>(p[1]);
  a.gb = static_cast<const T*>(p[2]);
  m.gvf = static_cast<const T*>(p[3]);
  a.gbf = static_cast<const T*>(p[4]);
  m.u = static_cast<const T*>(p[5]);
  a.b = static_cast<const T*>(p[6]);
  m.v0 = static_cast<const T*>(p[7]);
  a.b0 = static_cast<const T*>(p[8]);
  m.v0_stride_b = in[3];
  a.b0_stride_b = in[4];
  const int64_t scalars = in[5];
  m.alpha = per_neuron<T>(p[9], scalars, 1);
  m.thr = per_neuron<T>(p[11], scalars, 2);
  a.rho = per_neuron<T>(p[12], scalars, 8);
  a.beta = per_neuron<T>(p[14], scalars, 16);
  m.window = re[1];
  m.max_spikes = re[2];
  m.surrogate = static_cast<int>(in[6]);
  m.g_in = static_cast<IT*>(const_cast<void*>(p[15]));
  m.g_v0 = in[3] ? static_cast<T*>(const_cast<void*>(p[16])) : nullptr;
  a.g_b0 = in[4] ? static_cast<T*>(const_cast<void*>(p[17])) : nullptr;
  m.partial = static_cast<double*>(const_cast<void*>(p[18]));
  m.lengths = static_cast<const int64_t*>(p[24]);
  const int64_t B = in[7], N = in[9];
  m.B = B;
  m.Tn = in[8];
  m.N = N;
  SURROGATE_SWITCH(m.surrogate, SURR, [&] {
    BOOL_SWITCH(m.gw != nullptr, HAS_GW, [&] {
      BOOL_SWITCH(a.gb != nullptr, HAS_GB, [&] {
        for (int64_t idx = 0; idx < B * N; ++idx)
          adaptive_backward_thread<IT, T, SURR, HAS_GW, HAS_GB>(a, idx);
      });
    });
  });
  const auto coll = [&](int bit) { return (scalars & bit) ? lif::kSumAll : lif::kKeepAll; };
  const auto out = [&](int i) { return static_cast<T*>(const_cast<void*>(p[i])); };
  const auto in_t = [&](int i) { return static_cast<const T*>(p[i]); };
  double* part = m.partial;
  const double dt = re[0];
  run_grad_sum(lif::GradSum<T>{part, N, 1, coll(1), out(19), in_t(9), in_t(10), dt}, B);
  run_grad_sum(lif::GradSum<T>{part + B * N, N, 1, coll(2), out(20), nullptr, nullptr, dt}, B);
  run_grad_sum(lif::GradSum<T>{part + 2 * B * N, N, 1, coll(4), out(21), nullptr, nullptr, dt}, B);
  if (!in[3]) {
    run_grad_sum(lif::GradSum<T>{part + 3 * B * N, N, 1, lif::kKeepAll, out(16), nullptr, nullptr,
                                 dt}, B);
  }
  run_grad_sum(lif::GradSum<T>{part + 4 * B * N, N, 1, coll(16), out(23), nullptr, nullptr, dt}, B);
  run_grad_sum(lif::GradSum<T>{part + 5 * B * N, N, 1, coll(8), out(22), in_t(12), in_t(13), dt}, B);
  if (!in[4]) {
    run_grad_sum(lif::GradSum<T>{part + 6 * B * N, N, 1, lif::kKeepAll, out(17), nullptr, nullptr,
                                 dt}, B);
  }
}

extern "C" {
void adaptive_host_forward(int io, const void* const* p, const int64_t* in, const double* re) {
  LIF_IO_SWITCH(io, forward_t, p, in, re)
}
void adaptive_host_backward(int io, const void* const* p, const int64_t* in, const double* re) {
  LIF_IO_SWITCH(io, backward_t, p, in, re)
}
}
"""


@pytest.fixture(scope="module")
def adaptive_lib():
    handle = build_harness("adaptive_thread", ADAPTIVE_HARNESS, ADAPTIVE_HEADERS)
    for fn in (handle.adaptive_host_forward, handle.adaptive_host_backward):
        fn.restype = None
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return handle


def _call(fn, io, ptrs, ints, reals):
    p = (ctypes.c_void_p * len(ptrs))(*[_ptr(t) if t is not None else None for t in ptrs])
    i = (ctypes.c_int64 * len(ints))(*ints)
    r = (ctypes.c_double * len(reals))(*reals)
    fn(io, p, i, r)


def _adaptive_scalars(alpha, thr, bias_scalar, rho, beta):
    return int(alpha.dim() == 0) | 2 * int(thr.dim() == 0) | 4 * int(bias_scalar) | 8 * int(rho.dim() == 0) | 16 * int(
        beta.dim() == 0)


def adaptive_forward_on_host(lib, x, v0, b0, tau, thr, bias, tau_adapt, beta, *, dt=1e-3, noise=None, key=None,
                             noise_scale=0.0, max_spikes=2.0**16, lengths=None):
    """torch.ops.lif_cuda.adaptive_forward's outputs (record and save on), thread by thread."""
    B, T, N = x.shape
    ct = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    alpha, rho = tau_to_decay(dt, tau), tau_to_decay(dt, tau_adapt)
    ins = [t.contiguous() for t in (x, v0, b0, alpha, thr, bias, rho, beta)]
    z = None if noise is None else noise.to(ct).contiguous()
    lengths = None if lengths is None else lengths.to(torch.int64).contiguous()
    s = torch.empty((B, T, N), dtype=x.dtype)
    vmem, adapt, u, b = (torch.empty((B, T, N), dtype=ct) for _ in range(4))
    vf, bf = torch.empty((B, N), dtype=ct), torch.empty((B, N), dtype=ct)
    seed, offset = (0, 0) if key is None else (int(k) & (2**64 - 1) for k in key.tolist())
    seed, offset = (v - 2**64 if v >= 2**63 else v for v in (seed, offset))
    _call(lib.adaptive_host_forward, IO_CODES[x.dtype],
          [ins[0], z, *ins[1:], s, vmem, adapt, u, b, vf, bf, lengths],
          [int(key is not None and noise_scale > 0), seed, offset, N if v0.dim() == 2 else 0,
           N if b0.dim() == 2 else 0, _adaptive_scalars(alpha, thr, bias.dim() == 0, rho, beta), B, T, N],
          [noise_scale, max_spikes])
    return s, vmem, adapt, vf, bf, u, b


def adaptive_backward_on_host(lib, gs, gw, gb, gvf, gbf, u, b, v0, b0, tau, thr, tau_adapt, beta, *, scalar_bias,
                              dt=1e-3, window=0.5, max_spikes=2.0**16, surrogate=0, lengths=None):
    """torch.ops.lif_cuda.adaptive_backward's outputs, thread by thread, then the gradient sums."""
    B, T, N = u.shape
    alpha, rho = tau_to_decay(dt, tau), tau_to_decay(dt, tau_adapt)
    ins = [None if t is None else t.contiguous() for t in (gw, gb, gvf, gbf, u, b, v0, b0, alpha, tau, thr, rho,
                                                           tau_adapt, beta)]
    lengths = None if lengths is None else lengths.to(torch.int64).contiguous()
    g_in = torch.empty((B, T, N), dtype=gs.dtype)
    outs = [torch.empty(v0.shape, dtype=u.dtype), torch.empty(b0.shape, dtype=u.dtype),
            torch.empty((7, B, N), dtype=torch.float64), torch.empty(tau.shape, dtype=u.dtype),
            torch.empty(thr.shape, dtype=u.dtype), torch.empty(() if scalar_bias else (N,), dtype=u.dtype),
            torch.empty(tau_adapt.shape, dtype=u.dtype), torch.empty(beta.shape, dtype=u.dtype)]
    sb, st, sn = gs.stride()
    _call(lib.adaptive_host_backward, IO_CODES[gs.dtype], [gs, *ins, g_in, *outs, lengths],
          [sb, st, sn if N > 1 else 1, N if v0.dim() == 2 else 0, N if b0.dim() == 2 else 0,
           _adaptive_scalars(alpha, thr, scalar_bias, rho, beta), surrogate, B, T, N],
          [dt, window, max_spikes])
    g_v0, g_b0, _, g_tau, g_thr, g_bias, g_tau_adapt, g_beta = outs
    return g_in, g_v0, g_b0, g_tau, g_thr, g_bias, g_tau_adapt, g_beta


def adapt_checkpoints(b, b0, b_final, lengths=None):
    """The CPU forward's saved b (core/adaptive.h) from every b[t] (CUDA's): entry 0 b0's row, entry
    c >= 1 b[c*K - 2] while c*K is within the row's length, then the final b."""
    B, T, N = b.shape
    K = ops.ADAPT_CHECKPOINT
    out = torch.empty((B, -(-T // K), N), dtype=b.dtype)
    for r in range(B):
        steps = T if lengths is None else int(lengths[r])
        for c in range(out.shape[1]):
            if c == 0 and steps > 0:
                out[r, 0] = b0 if b0.dim() == 1 else b0[r]
            else:
                out[r, c] = b[r, c * K - 2] if c * K < steps else b_final[r]
    return out


@pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="compares with the fused CPU op")
@pytest.mark.parametrize("io", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["f32", "f64", "f16", "bf16"])
@pytest.mark.parametrize("surrogate", [0, 1], ids=["StepPWL", "PeriodicExponential"])
@pytest.mark.parametrize("params,state", [("neuron", "rows"), ("scalar", "shared")], ids=["neuron", "scalar-shared"])
@pytest.mark.parametrize("noise", ["none", "tensor", "kernel"])
@pytest.mark.parametrize("T,lengths", [(23, None), (23, [23, 0, 9]), (97, None), (97, [65, 0, 64])],
                         ids=["T23", "T23-lengths", "T97", "T97-lengths"])
def test_adaptive_threads_equal_fused_cpu_op(adaptive_lib, io, surrogate, params, state, noise, T, lengths):
    """The CUDA adaptive threads, run on the host, give the fused CPU op's bits: spikes, records, final
    state, the saved u, and every gradient (gradients arriving on every output). The threads keep every
    b[t], the CPU op checkpoints (core/adaptive.h): its backward rebuilds b from them, to the same bits.
    T = 97 spans four checkpoint segments and ends inside one; lengths 65 and 64 end one past and at a
    segment's start (0: no step)."""
    ct = torch.float64 if io == torch.float64 else torch.float32
    case = make_adaptive_case(91, 3, T, 10, ct, params=params, state=state)
    x = case["input"].to(io)
    names = ("v0", "b0", "tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt")
    v0, b0, tau, thr, bias, tau_adapt, beta = (case[k] for k in names)
    g = torch.Generator().manual_seed(92)
    rn = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(ct)  # noqa: E731
    z = 0.2 * rn(3, T, 10) if noise == "tensor" else None
    key = torch.tensor([-(2**62) + 5, 7]) if noise == "kernel" else None  # a seed above 2^63 as uint64
    scale = 0.3 if noise == "kernel" else 0.0
    lens = None if lengths is None else torch.tensor(lengths)
    op = torch.ops.lif_cuda.adaptive_forward(x, v0, b0, tau, thr, bias, tau_adapt, beta, z, key, 1e-3, scale, 0.5,
                                             2.0**16, surrogate, True, True, lens)
    host = adaptive_forward_on_host(adaptive_lib, x, v0, b0, tau, thr, bias, tau_adapt, beta, noise=z, key=key,
                                    noise_scale=scale, lengths=lens)
    for name, got, want in zip(("spikes", "vmem", "adapt", "v_final", "b_final", "u"), host, op[:6]):
        assert_equal(got, want, name)
    assert_equal(adapt_checkpoints(host[6], b0, host[4], lens), op[6], "saved b")
    assert (op[0].float() >= 2).any()
    gs = rn(3, T, 10).to(io)
    ups = (rn(3, T, 10), rn(3, T, 10), rn(3, 10), rn(3, 10))
    scalar_bias = bias.dim() == 0
    want = torch.ops.lif_cuda.adaptive_backward(gs, *ups, op[5], op[6], op[7], op[8], tau, thr, tau_adapt, beta,
                                                1e-3, 0.5, 2.0**16, surrogate, scalar_bias, lens)
    got = adaptive_backward_on_host(adaptive_lib, gs, *ups, host[5], host[6], op[7], op[8], tau, thr, tau_adapt,
                                    beta, scalar_bias=scalar_bias, surrogate=surrogate, lengths=lens)
    for name, a, b in zip(("input", "v0", "b0", "tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt"), got,
                          want):
        assert b.abs().sum() > 0, name
        assert_equal(a, b, f"grad {name}")


@pytest.mark.skipif(not lif_cuda.fused_available("cpu"), reason="compares with the fused CPU op")
@pytest.mark.parametrize("which", ["spikes", "vmem", "adapt"])
def test_adaptive_threads_backward_variants(adaptive_lib, which):
    """The backward threads without the record gradients (HAS_GW / HAS_GB false), and a grad_spikes
    broadcast over the neurons (stride 0), equal the fused CPU op."""
    case = make_adaptive_case(93, 2, 17, 6)
    args = [case[k] for k in ("input", "v0", "b0", "tau_mem", "threshold", "bias", "tau_adapt", "beta_adapt")]
    op = torch.ops.lif_cuda.adaptive_forward(*args, None, None, 1e-3, 0.0, 0.5, 2.0**16, 0, False, True, None)
    host = adaptive_forward_on_host(adaptive_lib, *args)
    g = torch.Generator().manual_seed(94)
    gs = torch.randn(2, 17, 1, generator=g).expand(2, 17, 6)
    gw = torch.randn(2, 17, 6, generator=g) if which == "vmem" else None
    gb = torch.randn(2, 17, 6, generator=g) if which == "adapt" else None
    tail = (op[5], op[6], op[7], op[8], case["tau_mem"], case["threshold"], case["tau_adapt"], case["beta_adapt"])
    want = torch.ops.lif_cuda.adaptive_backward(gs, gw, gb, None, None, *tail, 1e-3, 0.5, 2.0**16, 1, False, None)
    got = adaptive_backward_on_host(adaptive_lib, gs, gw, gb, None, None, host[5], host[6], *tail[2:],
                                    scalar_bias=False, surrogate=1)
    for i, (a, b) in enumerate(zip(got, want)):
        assert_equal(a, b, f"grad {i}")
