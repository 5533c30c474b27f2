// The LIF ops on the CPU (SPEC §1-§3): tiles of (batch row, contiguous neurons) under
// at::parallel_for (tiles.h), the forward over the whole time loop and the hand-written BPTT
// backward. The per-element math is core/lif.h's; host/lif_op.h prepares tensors and arguments.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../core/grad_sums.h"
#include "../core/lengths.h"
#include "../core/lif.h"
#include "../core/mask.h"
#include "../core/switch.h"
#include "../host/lif_op.h"
#include "noise_x86.h"
#include "tiles.h"

namespace lif {
namespace cpu {
namespace {

#ifndef LIF_BWD_TILE
#define LIF_BWD_TILE 256
#endif

// One tile: batch row b, neurons [n0, n0 + len), the row's `steps` (T, or its length; the caller
// fills the padding, core/lengths.h). Pointers are already offset to the row and the first neuron;
// `stride_t` is N (elements between consecutive time steps); `subseq` is b * N + n0, the Philox
// subsequence of the tile's first neuron (the in-kernel noise's counter). With `mask_out`, the
// window mask's words (core/mask.h) from `pwl_lo` = thr - window.
template <typename IT, typename T, int NOISE>
LIF_CLONES void forward_tile(const IT* __restrict__ x, const T* __restrict__ z, uint64_t seed,
                             uint64_t offset, T noise_scale, uint64_t subseq,
                             const T* __restrict__ v0, const T* __restrict__ alpha,
                             const T* __restrict__ thr, const T* __restrict__ bias, T max_spikes,
                             IT* __restrict__ s_out, T* __restrict__ vmem_out,
                             T* __restrict__ u_out, uint32_t* __restrict__ mask_out,
                             const T* __restrict__ pwl_lo, T* __restrict__ v_final, int64_t steps,
                             int64_t stride_t, int64_t len) {
  T w[kMaxTile];
  T u_scratch[kMaxTile];
  uint32_t mask_word[kMaxTile];
  for (int64_t n = 0; n < len; ++n) mask_word[n] = 0;
  TileNoise<T, NOISE, kMaxTile> noise(z, seed, offset, subseq, noise_scale, len);
  for (int64_t n = 0; n < len; ++n) w[n] = v0[n];
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t off = t * stride_t;
    const IT* __restrict__ xt = x + off;
    const T* __restrict__ zt = noise.step(t, off);
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
    if (mask_out) {
      for (int64_t n = 0; n < len; ++n) mask_word[n] |= mask_bit(ut[n], pwl_lo[n], t);
      if (mask_word_ends(t, steps)) {
        std::memcpy(mask_out + (t / kMaskBits) * stride_t, mask_word, sizeof(uint32_t) * len);
        for (int64_t n = 0; n < len; ++n) mask_word[n] = 0;
      }
    }
    if (vmem_out) std::memcpy(vmem_out + off, w, sizeof(T) * len);
  }
  std::memcpy(v_final, w, sizeof(T) * len);
}

// Reverse time loop for one tile. W (dL/dw) starts from the gradient on the final state. The
// spike count of row t-1, computed to rebuild w[t-1], is kept for step t-1: one division per
// element. MASK: the forward kept the window mask instead of u (SPEC §11; StepPWL, no tau or
// threshold terms).
template <typename IT, typename T, int SURR, bool HAS_GW, bool MASK>
LIF_CLONES void backward_tile(const IT* __restrict__ gs, int64_t gs_stride_t, bool gs_bcast_n,
                              const T* __restrict__ gw, const T* __restrict__ gvf,
                              const T* __restrict__ u, const uint32_t* __restrict__ mask,
                              const T* __restrict__ v0, const T* __restrict__ alpha,
                              const T* __restrict__ thr, T window, T max_spikes,
                              IT* __restrict__ g_in, T* __restrict__ g_v0,
                              double* __restrict__ g_v0_rows, double* __restrict__ g_alpha,
                              double* __restrict__ g_thr, double* __restrict__ g_bias,
                              int64_t steps, int64_t stride_t, int64_t len) {
  // len <= LIF_BWD_TILE (choose_tile's cap for the backward).
  T W[LIF_BWD_TILE], s_row[LIF_BWD_TILE];
  // The parameter-gradient terms' block sums in T, flushed into g_alpha, g_thr, g_bias (float64)
  // at each block's end (core/grad_sums.h).
  T ga[LIF_BWD_TILE], gt[LIF_BWD_TILE], gb[LIF_BWD_TILE];
  const ConstRows<T, LIF_BWD_TILE> consts(alpha, thr, window, max_spikes, len);
  IT gs_row[LIF_BWD_TILE];  // a grad_spikes row broadcast over the neurons, spread out
  // steps == 0 (a row of length 0): nothing runs, s_row is never read.
  const T* __restrict__ u_last = MASK ? nullptr : u + (steps > 0 ? steps - 1 : 0) * stride_t;
  for (int64_t n = 0; n < len; ++n) {
    W[n] = gvf ? gvf[n] : T(0);
    ga[n] = T(0);
    gt[n] = T(0);
    gb[n] = T(0);
    g_alpha[n] = 0.0;
    g_thr[n] = 0.0;
    g_bias[n] = 0.0;
    if constexpr (!MASK) s_row[n] = spikes(u_last[n], thr[n], max_spikes);
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
    IT* __restrict__ git = g_in + off;
    if constexpr (MASK) {
      const uint32_t* __restrict__ words = mask + (t / kMaskBits) * stride_t;
      const int shift = static_cast<int>(t % kMaskBits);
      for (int64_t n = 0; n < len; ++n) {
        git[n] = static_cast<IT>(
            step_backward_masked(static_cast<T>(gst[n]), HAS_GW ? gwt[n] : T(0),
                                 mask_value<T>(words[n], shift), consts(n), W[n], gb[n]));
      }
    } else if (t > 0) {
      const T* __restrict__ ut = u + off;
      const T* __restrict__ up = ut - stride_t;
      for (int64_t n = 0; n < len; ++n) {
        const T s_prev = spikes(up[n], thr[n], max_spikes);
        const T w_prev = reset(up[n], s_prev, thr[n]);
        git[n] = static_cast<IT>(step_backward<SURR>(static_cast<T>(gst[n]), HAS_GW ? gwt[n] : T(0),
                                                     ut[n], s_row[n], w_prev, consts(n), W[n],
                                                     gt[n], ga[n], gb[n]));
        s_row[n] = s_prev;
      }
    } else {
      const T* __restrict__ ut = u + off;
      for (int64_t n = 0; n < len; ++n) {
        git[n] = static_cast<IT>(step_backward<SURR>(static_cast<T>(gst[n]), HAS_GW ? gwt[n] : T(0),
                                                     ut[n], s_row[n], v0[n], consts(n), W[n], gt[n],
                                                     ga[n], gb[n]));
      }
    }
    if (grad_block_ends(steps - 1, t, 0)) {
      for (int64_t n = 0; n < len; ++n) {
        flush_grad_block(ga[n], g_alpha[n]);
        flush_grad_block(gt[n], g_thr[n]);
        flush_grad_block(gb[n], g_bias[n]);
      }
    }
  }
  // dL/dv0: per row, or a shared v0's rows in float64 for its batch sum (core/grad_sums.h).
  for (int64_t n = 0; n < len; ++n) {
    if (g_v0) {
      g_v0[n] = W[n];
    } else {
      g_v0_rows[n] = static_cast<double>(W[n]);
    }
  }
}

}  // namespace

// The model's kernels on the CPU (the device of the op functions in host/).
struct LifCpu : CpuDevice {
  template <typename IT, typename T>
  static void forward(const LifForwardArgs<IT, T>& a) {
    const int64_t B = a.B, Tn = a.Tn, N = a.N;
    const T M = static_cast<T>(a.max_spikes);
    const T scale = static_cast<T>(a.noise.scale);
    const T window = static_cast<T>(a.window);
    const int64_t words = mask_words(Tn);
    uint64_t seed = 0, offset = 0;
    a.noise.key.get(seed, offset);
    const auto fn = NOISE_SWITCH(a.noise.mode, NOISE, [&] { return &forward_tile<IT, T, NOISE>; });
    for_each_tile(B, N, choose_tile(B, N, kMaxTile), Tn * N * B,
                  [&](int64_t b, int64_t n0, int64_t len) {
                    T alpha_buf[kMaxTile], thr_buf[kMaxTile], bias_buf[kMaxTile], lo_buf[kMaxTile];
                    const int64_t row = b * Tn * N + n0;  // (b, t=0, n0)
                    const T* z = a.noise.tensor ? a.noise.tensor + row : nullptr;
                    T* vmem = a.vmem_out ? a.vmem_out + row : nullptr;
                    T* u_out = a.u_out ? a.u_out + row : nullptr;
                    uint32_t* mask = a.mask_out ? a.mask_out + b * words * N + n0 : nullptr;
                    T* v_final = a.v_final + b * N + n0;
                    const int64_t steps = row_steps(a.lengths, b, Tn);
                    const T* thr_row = param_row(a.thr, n0, len, thr_buf);
                    if (mask) {
                      for (int64_t n = 0; n < len; ++n) lo_buf[n] = thr_row[n] - window;
                    }
                    fn(a.x + row, z, seed, offset, scale, static_cast<uint64_t>(b * N + n0),
                       a.v0 + b * a.v0_stride_b + n0, param_row(a.alpha, n0, len, alpha_buf),
                       thr_row, param_row(a.bias, n0, len, bias_buf), M, a.s_out + row, vmem, u_out,
                       mask, lo_buf, v_final, steps, N, len);
                    if (mask) pad_fill(mask, uint32_t(0), mask_words(steps), words, N, len);
                    if (steps < Tn) {
                      pad_fill(a.s_out + row, static_cast<IT>(0), steps, Tn, N, len);
                      if (vmem) pad_hold<T>(vmem, v_final, steps, Tn, N, len);
                      if (u_out) pad_hold<T>(u_out, v_final, steps, Tn, N, len);
                    }
                  });
  }

  template <typename IT, typename T>
  static void backward(const LifBackwardArgs<IT, T>& a) {
    const int64_t B = a.B, Tn = a.Tn, N = a.N, BN = B * N;
    const T M = static_cast<T>(a.max_spikes);
    const T window = static_cast<T>(a.window);
    const auto fn = SURROGATE_SWITCH(a.surrogate, SURR, [&] {
      return BOOL_SWITCH(a.gw != nullptr, HAS_GW, [&] {
        return BOOL_SWITCH(a.mask != nullptr, MASK,
                           [&] { return &backward_tile<IT, T, SURR, HAS_GW, MASK>; });
      });
    });
    const int64_t words = mask_words(Tn);
    for_each_tile(B, N, choose_tile(B, N, LIF_BWD_TILE), Tn * BN,
                  [&](int64_t b, int64_t n0, int64_t len) {
                    T alpha_buf[LIF_BWD_TILE], thr_buf[LIF_BWD_TILE];
                    const int64_t row = b * Tn * N + n0;
                    const int64_t bn = b * N + n0;
                    const int64_t steps = row_steps(a.lengths, b, Tn);
                    fn(a.gs + b * a.gs_stride_b + n0 * a.gs_stride_n, a.gs_stride_t,
                       a.gs_stride_n == 0 && len > 1, a.gw ? a.gw + row : nullptr,
                       a.gvf ? a.gvf + bn : nullptr, a.u ? a.u + row : nullptr,
                       a.mask ? a.mask + b * words * N + n0 : nullptr,
                       a.v0 + b * a.v0_stride_b + n0, param_row(a.alpha, n0, len, alpha_buf),
                       param_row(a.thr, n0, len, thr_buf), window, M, a.g_in + row,
                       a.g_v0 ? a.g_v0 + bn : nullptr, a.g_v0 ? nullptr : a.partial + 3 * BN + bn,
                       a.partial + bn, a.partial + BN + bn, a.partial + 2 * BN + bn, steps, N, len);
                    pad_fill(a.g_in + row, static_cast<IT>(0), steps, Tn, N, len);
                  });
  }
};

}  // namespace cpu
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CPU, m) {
  m.impl("lif_forward", &lif::lif_forward<lif::cpu::LifCpu>);
  m.impl("lif_backward", &lif::lif_backward<lif::cpu::LifCpu>);
}
