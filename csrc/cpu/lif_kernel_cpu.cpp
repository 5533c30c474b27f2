// Fused LIF kernels for the CPU: forward over the whole time loop and the hand-written BPTT
// backward (SPEC §1, §3). Parallel over tiles of (batch row, contiguous neurons) with
// at::parallel_for; inside a tile the time loop runs outermost and the neuron loop innermost, so
// every row access is contiguous in the native (B,T,N) layout and the inner loop vectorises.
//
// The per-element math is lif_core.h's, nothing else. The inner loops are built once per
// instruction-set level (GCC target_clones: AVX2, SSE4.1, baseline) and picked at load time, so a
// default build runs on any x86-64 CPU and is still fast (floor needs SSE4.1 to vectorise).

#include "lif_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>

#include "../lif_core.h"
#include "../lif_lengths.h"
#include "lif_cpu_loops.h"  // LIF_CLONES, kMaxTile, grain_size, choose_tile, param_row
#include "noise_rows_x86.h"

namespace lif {
namespace cpu {
namespace {

#ifndef LIF_BWD_TILE
#define LIF_BWD_TILE 256
#endif

// One tile: batch row b, neurons [n0, n0 + len), the row's `steps` (T, or its length; the caller
// fills the padding, lif_lengths.h). Pointers are already offset to the row and the first neuron;
// `stride_t` is N (elements between consecutive time steps); `subseq` is b * N + n0, the Philox
// subsequence of the tile's first neuron (the in-kernel noise's counter).
template <typename IT, typename T, int NOISE>
LIF_HD void forward_tile(const IT* __restrict__ x, const T* __restrict__ z, uint64_t seed,
                         uint64_t offset, T noise_scale, uint64_t subseq, const T* __restrict__ v0,
                         const T* __restrict__ alpha, const T* __restrict__ thr,
                         const T* __restrict__ bias, T max_spikes, IT* __restrict__ s_out,
                         T* __restrict__ w_rec, T* __restrict__ u_out, T* __restrict__ v_final,
                         int64_t steps, int64_t stride_t, int64_t len) {
  T w[kMaxTile];
  T u_scratch[kMaxTile];
  // In-kernel noise: the noise terms of four steps (one Philox block per neuron) and its words.
  constexpr int64_t kNoiseRows = NOISE == kNoiseKernel ? kMaxTile : 1;
  T z_rows[4][kNoiseRows];
  uint32_t words[4][kNoiseRows];
  for (int64_t n = 0; n < len; ++n) w[n] = v0[n];
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t off = t * stride_t;
    const IT* __restrict__ xt = x + off;
    const T* __restrict__ zt = nullptr;
    if constexpr (NOISE == kNoiseTensor) zt = z + off;
    if constexpr (NOISE == kNoiseKernel) {
      // Every four steps, one Philox block per neuron of the tile (vectorised over the neurons)
      // gives the noise of this step and the next three; the step loop below stays vectorised.
      if ((t & 3) == 0) {
        draw_noise_rows<kNoiseRows>(seed, offset, subseq, static_cast<uint64_t>(t >> 2), len,
                                    noise_scale, words, z_rows);
      }
      zt = z_rows[t & 3];
    }
    IT* __restrict__ st = s_out + off;
    // u goes straight to the saved tensor when backward needs it, else to a scratch row.
    T* __restrict__ ut = u_out ? u_out + off : u_scratch;
    for (int64_t n = 0; n < len; ++n) {
      T u, wn, s;
      if constexpr (NOISE == kNoNoise) {
        s = step_forward(alpha[n], w[n], static_cast<T>(xt[n]), bias[n], thr[n], max_spikes, u, wn);
      } else {
        s = step_forward(alpha[n], w[n], static_cast<T>(xt[n]), zt[n], bias[n], thr[n], max_spikes,
                         u, wn);
      }
      st[n] = static_cast<IT>(s);
      ut[n] = u;
      w[n] = wn;
    }
    if (w_rec) std::memcpy(w_rec + off, w, sizeof(T) * len);
  }
  std::memcpy(v_final, w, sizeof(T) * len);
}

// Reverse time loop for one tile. W (dL/dw) starts from the gradient on the final state. The
// spike count of row t-1, computed to rebuild w[t-1], is kept for step t-1: one division per
// element.
template <typename IT, typename T, int SURR, bool HAS_GW>
LIF_HD void backward_tile(const IT* __restrict__ gs, int64_t gs_stride_t, bool gs_bcast_n,
                          const T* __restrict__ gw, const T* __restrict__ gvf,
                          const T* __restrict__ u, const T* __restrict__ v0,
                          const T* __restrict__ alpha, const T* __restrict__ thr, T window,
                          T max_spikes, IT* __restrict__ g_in, T* __restrict__ g_v0,
                          T* __restrict__ g_alpha, T* __restrict__ g_thr, T* __restrict__ g_bias,
                          int64_t steps, int64_t stride_t, int64_t len) {
  // len <= LIF_BWD_TILE (choose_tile's cap for the backward).
  T W[LIF_BWD_TILE], ga[LIF_BWD_TILE], gt[LIF_BWD_TILE], gb[LIF_BWD_TILE], S[LIF_BWD_TILE];
  // The per-neuron constants, held as separate rows so the loops below stay vectorised.
  T inv_thr[LIF_BWD_TILE], inv_thr2[LIF_BWD_TILE], pwl_lo[LIF_BWD_TILE];
  IT gs_row[LIF_BWD_TILE];  // a grad_spikes row broadcast over the neurons, spread out
  const auto consts = [&](int64_t n) {
    NeuronConsts<T> c;
    c.alpha = alpha[n];
    c.thr = thr[n];
    c.inv_thr = inv_thr[n];
    c.inv_thr2 = inv_thr2[n];
    c.pwl_lo = pwl_lo[n];
    c.window = window;
    c.max_spikes = max_spikes;
    return c;
  };
  // steps == 0 (a row of length 0): nothing runs, S is never read.
  const T* __restrict__ u_last = u + (steps > 0 ? steps - 1 : 0) * stride_t;
  for (int64_t n = 0; n < len; ++n) {
    const NeuronConsts<T> c = neuron_consts(alpha[n], thr[n], window, max_spikes);
    inv_thr[n] = c.inv_thr;
    inv_thr2[n] = c.inv_thr2;
    pwl_lo[n] = c.pwl_lo;
    W[n] = gvf ? gvf[n] : T(0);
    ga[n] = T(0);
    gt[n] = T(0);
    gb[n] = T(0);
    S[n] = spikes(u_last[n], thr[n], max_spikes);
  }
  for (int64_t t = steps - 1; t >= 0; --t) {
    const int64_t off = t * stride_t;
    // grad_spikes keeps its own strides: `loss = spikes.sum()` hands an expanded (stride-0)
    // tensor, which is read in place rather than copied to (B,T,N).
    const IT* __restrict__ gst = gs + t * gs_stride_t;
    if (gs_bcast_n) {
      for (int64_t n = 0; n < len; ++n) gs_row[n] = gst[0];
      gst = gs_row;
    }
    const T* __restrict__ gwt = HAS_GW ? gw + off : nullptr;
    const T* __restrict__ ut = u + off;
    IT* __restrict__ git = g_in + off;
    if (t > 0) {
      const T* __restrict__ up = ut - stride_t;
      for (int64_t n = 0; n < len; ++n) {
        const T s_prev = spikes(up[n], thr[n], max_spikes);
        const T w_prev = reset(up[n], s_prev, thr[n]);
        git[n] = static_cast<IT>(step_backward<SURR>(static_cast<T>(gst[n]), HAS_GW ? gwt[n] : T(0),
                                                     ut[n], S[n], w_prev, consts(n), W[n], gt[n],
                                                     ga[n], gb[n]));
        S[n] = s_prev;
      }
    } else {
      for (int64_t n = 0; n < len; ++n) {
        git[n] = static_cast<IT>(step_backward<SURR>(static_cast<T>(gst[n]), HAS_GW ? gwt[n] : T(0),
                                                     ut[n], S[n], v0[n], consts(n), W[n], gt[n],
                                                     ga[n], gb[n]));
      }
    }
  }
  for (int64_t n = 0; n < len; ++n) {
    g_v0[n] = W[n];
    g_alpha[n] = ga[n];
    g_thr[n] = gt[n];
    g_bias[n] = gb[n];
  }
}

// Non-template entry points, one per (types, compile-time switch), each cloned per ISA level.
#define LIF_FWD_ENTRY(NAME, IT, T, NOISE)                                                         \
  LIF_CLONES void NAME(const IT* x, const T* z, uint64_t seed, uint64_t offset, T noise_scale,    \
                       uint64_t subseq, const T* v0, const T* alpha, const T* thr, const T* bias, \
                       T max_spikes, IT* s_out, T* w_rec, T* u_out, T* v_final, int64_t steps,    \
                       int64_t stride_t, int64_t len) {                                           \
    forward_tile<IT, T, NOISE>(x, z, seed, offset, noise_scale, subseq, v0, alpha, thr, bias,     \
                               max_spikes, s_out, w_rec, u_out, v_final, steps, stride_t, len);   \
  }
#define LIF_FWD_ENTRIES(PFX, IT, T)              \
  LIF_FWD_ENTRY(PFX##_fwd0, IT, T, kNoNoise)     \
  LIF_FWD_ENTRY(PFX##_fwd1, IT, T, kNoiseTensor) \
  LIF_FWD_ENTRY(PFX##_fwd2, IT, T, kNoiseKernel)

#define LIF_BWD_ENTRY(NAME, IT, T, SURR, HAS_GW)                                                   \
  LIF_CLONES void NAME(const IT* gs, int64_t gs_stride_t, bool gs_bcast_n, const T* gw,            \
                       const T* gvf, const T* u, const T* v0, const T* alpha, const T* thr,        \
                       T window, T max_spikes, IT* g_in, T* g_v0, T* g_alpha, T* g_thr, T* g_bias, \
                       int64_t steps, int64_t stride_t, int64_t len) {                             \
    backward_tile<IT, T, SURR, HAS_GW>(gs, gs_stride_t, gs_bcast_n, gw, gvf, u, v0, alpha, thr,    \
                                       window, max_spikes, g_in, g_v0, g_alpha, g_thr, g_bias,     \
                                       steps, stride_t, len);                                      \
  }
#define LIF_BWD_ENTRIES(PFX, IT, T)                                 \
  LIF_BWD_ENTRY(PFX##_bwd_pwl, IT, T, kStepPWL, false)              \
  LIF_BWD_ENTRY(PFX##_bwd_pwl_gw, IT, T, kStepPWL, true)            \
  LIF_BWD_ENTRY(PFX##_bwd_pexp, IT, T, kPeriodicExponential, false) \
  LIF_BWD_ENTRY(PFX##_bwd_pexp_gw, IT, T, kPeriodicExponential, true)

#define LIF_ENTRIES(PFX, IT, T) LIF_FWD_ENTRIES(PFX, IT, T) LIF_BWD_ENTRIES(PFX, IT, T)
LIF_ENTRIES(f32, float, float)
LIF_ENTRIES(f64, double, double)
LIF_ENTRIES(f16, c10::Half, float)
LIF_ENTRIES(bf16, c10::BFloat16, float)

template <typename IT>
struct Kernels;
#define LIF_KERNEL_TABLE(PFX, IT)                                                                \
  template <>                                                                                    \
  struct Kernels<IT> {                                                                           \
    static constexpr decltype(&PFX##_fwd0) fwd[3] = {PFX##_fwd0, PFX##_fwd1, PFX##_fwd2};        \
    /* [surrogate][has grad on the recorded membrane] */                                         \
    static constexpr decltype(&PFX##_bwd_pwl) bwd[2][2] = {{PFX##_bwd_pwl, PFX##_bwd_pwl_gw},    \
                                                           {PFX##_bwd_pexp, PFX##_bwd_pexp_gw}}; \
  };
LIF_KERNEL_TABLE(f32, float)
LIF_KERNEL_TABLE(f64, double)
LIF_KERNEL_TABLE(f16, c10::Half)
LIF_KERNEL_TABLE(bf16, c10::BFloat16)

}  // namespace

template <typename IT, typename T>
void forward(const ForwardArgs<IT, T>& a) {
  const int64_t B = a.B, Tn = a.Tn, N = a.N;
  const int64_t tile = choose_tile(B, N, kMaxTile);
  const int64_t ntiles = (N + tile - 1) / tile;
  const T M = static_cast<T>(a.max_spikes);
  const T scale = static_cast<T>(a.noise_scale);
  const auto fn = Kernels<IT>::fwd[a.noise_mode];
  at::parallel_for(
      0, B * ntiles, grain_size(B * ntiles, Tn * N * B), [&](int64_t begin, int64_t end) {
        T alpha_buf[kMaxTile], thr_buf[kMaxTile], bias_buf[kMaxTile];
        for (int64_t i = begin; i < end; ++i) {
          const int64_t b = i / ntiles;
          const int64_t n0 = (i % ntiles) * tile;
          const int64_t len = std::min(tile, N - n0);
          const int64_t row = b * Tn * N + n0;  // (b, t=0, n0)
          const T* z = a.noise ? a.noise + row : nullptr;
          T* w_rec = a.w_rec ? a.w_rec + row : nullptr;
          T* u_out = a.u_out ? a.u_out + row : nullptr;
          T* v_final = a.v_final + b * N + n0;
          const int64_t steps = row_steps(a.lengths, b, Tn);
          fn(a.x + row, z, a.seed, a.offset, scale, static_cast<uint64_t>(b * N + n0),
             a.v0 + b * a.v0_stride_b + n0, param_row(a.alpha, a.alpha_scalar, n0, len, alpha_buf),
             param_row(a.thr, a.thr_scalar, n0, len, thr_buf),
             param_row(a.bias, a.bias_scalar, n0, len, bias_buf), M, a.s_out + row, w_rec, u_out,
             v_final, steps, N, len);
          if (steps < Tn) {
            pad_fill(a.s_out + row, static_cast<IT>(0), steps, Tn, N, len);
            if (w_rec) pad_hold<T>(w_rec, v_final, steps, Tn, N, len);
            if (u_out) pad_hold<T>(u_out, v_final, steps, Tn, N, len);
          }
        }
      });
}

template <typename IT, typename T>
void backward(const BackwardArgs<IT, T>& a) {
  const int64_t B = a.B, Tn = a.Tn, N = a.N;
  const int64_t tile = choose_tile(B, N, LIF_BWD_TILE);
  const int64_t ntiles = (N + tile - 1) / tile;
  const T M = static_cast<T>(a.max_spikes);
  const T window = static_cast<T>(a.window);
  const auto fn = Kernels<IT>::bwd[a.surrogate == kPeriodicExponential ? 1 : 0][a.gw ? 1 : 0];
  const int64_t BN = B * N;
  at::parallel_for(0, B * ntiles, grain_size(B * ntiles, Tn * BN), [&](int64_t begin, int64_t end) {
    T alpha_buf[LIF_BWD_TILE], thr_buf[LIF_BWD_TILE];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / ntiles;
      const int64_t n0 = (i % ntiles) * tile;
      const int64_t len = std::min(tile, N - n0);
      const int64_t row = b * Tn * N + n0;
      const int64_t bn = b * N + n0;
      const int64_t steps = row_steps(a.lengths, b, Tn);
      fn(a.gs + b * a.gs_stride_b + n0 * a.gs_stride_n, a.gs_stride_t,
         a.gs_stride_n == 0 && len > 1, a.gw ? a.gw + row : nullptr, a.gvf ? a.gvf + bn : nullptr,
         a.u + row, a.v0 + b * a.v0_stride_b + n0,
         param_row(a.alpha, a.alpha_scalar, n0, len, alpha_buf),
         param_row(a.thr, a.thr_scalar, n0, len, thr_buf), window, M, a.g_in + row, a.g_v0 + bn,
         a.partial + bn, a.partial + BN + bn, a.partial + 2 * BN + bn, steps, N, len);
      pad_fill(a.g_in + row, static_cast<IT>(0), steps, Tn, N, len);
    }
  });
  // The per-row partials (alpha, threshold, bias, a shared v0), summed over the batch in a fixed
  // order (b = 0..B-1, from 0), so the bits depend neither on the thread count nor on the tiling:
  // into the outputs, or, for alpha (then turned into tau's gradient) and a () parameter, into
  // row j's b = 0 slot.
  const bool scalar[4] = {a.alpha_scalar, a.thr_scalar, a.bias_scalar, false};
  T* const outs[4] = {a.g_tau, a.g_thr, a.g_bias, a.g_v0_sum};
  const int64_t nsums = a.g_v0_sum ? 4 : 3;
  const T dt = static_cast<T>(a.dt);
  at::parallel_for(0, N, grain_size(N, BN), [&](int64_t begin, int64_t end) {
    for (int64_t j = 0; j < nsums; ++j) {
      const T* p = a.partial + j * BN;
      T* acc = (scalar[j] || j == 0) ? a.partial + j * BN : outs[j];
      for (int64_t n = begin; n < end; ++n) acc[n] = T(0) + p[n];
      for (int64_t b = 1; b < B; ++b) {
        const T* pb = p + b * N;
        for (int64_t n = begin; n < end; ++n) acc[n] += pb[n];
      }
      if (j == 0 && !scalar[0]) {
        for (int64_t n = begin; n < end; ++n)
          a.g_tau[n] = tau_grad(acc[n], a.alpha[n], a.tau[n], dt);
      }
    }
  });
  // A () parameter: its per-neuron sums added in index order.
  for (int64_t j = 0; j < 3; ++j) {
    if (!scalar[j]) continue;
    const T* acc = a.partial + j * BN;
    T sum = T(0);
    for (int64_t n = 0; n < N; ++n) sum += acc[n];
    outs[j][0] = j == 0 ? tau_grad(sum, a.alpha[0], a.tau[0], dt) : sum;
  }
}

template void forward<float, float>(const ForwardArgs<float, float>&);
template void forward<double, double>(const ForwardArgs<double, double>&);
template void forward<c10::Half, float>(const ForwardArgs<c10::Half, float>&);
template void forward<c10::BFloat16, float>(const ForwardArgs<c10::BFloat16, float>&);
template void backward<float, float>(const BackwardArgs<float, float>&);
template void backward<double, double>(const BackwardArgs<double, double>&);
template void backward<c10::Half, float>(const BackwardArgs<c10::Half, float>&);
template void backward<c10::BFloat16, float>(const BackwardArgs<c10::BFloat16, float>&);

}  // namespace cpu
}  // namespace lif
