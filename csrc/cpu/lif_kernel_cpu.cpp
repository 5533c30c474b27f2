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
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>

#include "../lif_core.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LIF_NO_CLONES)
#define LIF_CLONES __attribute__((target_clones("avx2", "sse4.1", "default")))
#else
#define LIF_CLONES
#endif

namespace lif {
namespace cpu {
namespace {

constexpr int64_t kMaxTile = 1024;

// One tile: batch row b, neurons [n0, n0 + len), all T steps. Pointers are already offset to the
// row and the first neuron; `stride_t` is N (elements between consecutive time steps).
template <typename T, bool NOISE>
LIF_HD void forward_tile(const T* __restrict__ x, const T* __restrict__ z,
                         const T* __restrict__ v0, const T* __restrict__ alpha,
                         const T* __restrict__ thr, const T* __restrict__ bias, T max_spikes,
                         T* __restrict__ s_out, T* __restrict__ w_rec, T* __restrict__ u_out,
                         T* __restrict__ v_final, int64_t steps, int64_t stride_t, int64_t len) {
  T w[kMaxTile];
  T u_scratch[kMaxTile];
  for (int64_t n = 0; n < len; ++n) w[n] = v0[n];
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t off = t * stride_t;
    const T* __restrict__ xt = x + off;
    const T* __restrict__ zt = NOISE ? z + off : nullptr;
    T* __restrict__ st = s_out + off;
    // u goes straight to the saved tensor when backward needs it, else to a scratch row.
    T* __restrict__ ut = u_out ? u_out + off : u_scratch;
    for (int64_t n = 0; n < len; ++n) {
      T u, wn;
      T s;
      if constexpr (NOISE) {
        s = step_forward(alpha[n], w[n], xt[n], zt[n], bias[n], thr[n], max_spikes, u, wn);
      } else {
        s = step_forward(alpha[n], w[n], xt[n], bias[n], thr[n], max_spikes, u, wn);
      }
      st[n] = s;
      ut[n] = u;
      w[n] = wn;
    }
    if (w_rec) std::memcpy(w_rec + off, w, sizeof(T) * len);
  }
  std::memcpy(v_final, w, sizeof(T) * len);
}

// Reverse time loop for one tile. W (dL/dw) starts from the gradient on the final state.
template <typename T, int SURR, bool HAS_GW>
LIF_HD void backward_tile(const T* __restrict__ gs, const T* __restrict__ gw,
                          const T* __restrict__ gvf, const T* __restrict__ u,
                          const T* __restrict__ v0, const T* __restrict__ alpha,
                          const T* __restrict__ thr, T window, T max_spikes,
                          T* __restrict__ g_in, T* __restrict__ g_v0, T* __restrict__ g_alpha,
                          T* __restrict__ g_thr, T* __restrict__ g_bias, int64_t steps,
                          int64_t stride_t, int64_t len) {
  T W[kMaxTile], ga[kMaxTile], gt[kMaxTile], gb[kMaxTile];
  for (int64_t n = 0; n < len; ++n) {
    W[n] = gvf ? gvf[n] : T(0);
    ga[n] = T(0);
    gt[n] = T(0);
    gb[n] = T(0);
  }
  for (int64_t t = steps - 1; t >= 0; --t) {
    const int64_t off = t * stride_t;
    const T* __restrict__ gst = gs + off;
    const T* __restrict__ gwt = HAS_GW ? gw + off : nullptr;
    const T* __restrict__ ut = u + off;
    T* __restrict__ git = g_in + off;
    if (t > 0) {
      const T* __restrict__ up = ut - stride_t;
      for (int64_t n = 0; n < len; ++n) {
        const T w_prev = recompute_w(up[n], thr[n], max_spikes);
        git[n] = step_backward<SURR>(gst[n], HAS_GW ? gwt[n] : T(0), ut[n], w_prev, alpha[n],
                                     thr[n], window, max_spikes, W[n], gt[n], ga[n], gb[n]);
      }
    } else {
      for (int64_t n = 0; n < len; ++n) {
        git[n] = step_backward<SURR>(gst[n], HAS_GW ? gwt[n] : T(0), ut[n], v0[n], alpha[n],
                                     thr[n], window, max_spikes, W[n], gt[n], ga[n], gb[n]);
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

// Non-template entry points, one per (dtype, compile-time switch), each cloned per ISA level.
#define LIF_FWD_ENTRY(NAME, T, NOISE)                                                          \
  LIF_CLONES void NAME(const T* x, const T* z, const T* v0, const T* alpha, const T* thr,      \
                       const T* bias, T max_spikes, T* s_out, T* w_rec, T* u_out, T* v_final, \
                       int64_t steps, int64_t stride_t, int64_t len) {                         \
    forward_tile<T, NOISE>(x, z, v0, alpha, thr, bias, max_spikes, s_out, w_rec, u_out,       \
                           v_final, steps, stride_t, len);                                     \
  }
LIF_FWD_ENTRY(fwd_f32, float, false)
LIF_FWD_ENTRY(fwd_f32_noise, float, true)
LIF_FWD_ENTRY(fwd_f64, double, false)
LIF_FWD_ENTRY(fwd_f64_noise, double, true)
#undef LIF_FWD_ENTRY

#define LIF_BWD_ENTRY(NAME, T, SURR, HAS_GW)                                                    \
  LIF_CLONES void NAME(const T* gs, const T* gw, const T* gvf, const T* u, const T* v0,         \
                       const T* alpha, const T* thr, T window, T max_spikes, T* g_in, T* g_v0, \
                       T* g_alpha, T* g_thr, T* g_bias, int64_t steps, int64_t stride_t,        \
                       int64_t len) {                                                           \
    backward_tile<T, SURR, HAS_GW>(gs, gw, gvf, u, v0, alpha, thr, window, max_spikes, g_in,   \
                                   g_v0, g_alpha, g_thr, g_bias, steps, stride_t, len);         \
  }
LIF_BWD_ENTRY(bwd_f32_pwl, float, kStepPWL, false)
LIF_BWD_ENTRY(bwd_f32_pwl_gw, float, kStepPWL, true)
LIF_BWD_ENTRY(bwd_f32_pexp, float, kPeriodicExponential, false)
LIF_BWD_ENTRY(bwd_f32_pexp_gw, float, kPeriodicExponential, true)
LIF_BWD_ENTRY(bwd_f64_pwl, double, kStepPWL, false)
LIF_BWD_ENTRY(bwd_f64_pwl_gw, double, kStepPWL, true)
LIF_BWD_ENTRY(bwd_f64_pexp, double, kPeriodicExponential, false)
LIF_BWD_ENTRY(bwd_f64_pexp_gw, double, kPeriodicExponential, true)
#undef LIF_BWD_ENTRY

template <typename T>
struct Kernels;
template <>
struct Kernels<float> {
  static constexpr auto fwd = fwd_f32;
  static constexpr auto fwd_noise = fwd_f32_noise;
  static constexpr auto bwd_pwl = bwd_f32_pwl;
  static constexpr auto bwd_pwl_gw = bwd_f32_pwl_gw;
  static constexpr auto bwd_pexp = bwd_f32_pexp;
  static constexpr auto bwd_pexp_gw = bwd_f32_pexp_gw;
};
template <>
struct Kernels<double> {
  static constexpr auto fwd = fwd_f64;
  static constexpr auto fwd_noise = fwd_f64_noise;
  static constexpr auto bwd_pwl = bwd_f64_pwl;
  static constexpr auto bwd_pwl_gw = bwd_f64_pwl_gw;
  static constexpr auto bwd_pexp = bwd_f64_pexp;
  static constexpr auto bwd_pexp_gw = bwd_f64_pexp_gw;
};

// Tile width: up to kMaxTile neurons, narrowed (down to 64) until there are a few tiles per
// thread. Results never depend on it: neurons are independent and every parameter gradient is
// reduced per (batch row, neuron) first.
int64_t choose_tile(int64_t B, int64_t N) {
  int64_t tile = std::min<int64_t>(kMaxTile, ((N + 15) / 16) * 16);
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  while (tile > 64 && B * ((N + tile - 1) / tile) < want) tile /= 2;
  return tile;
}

}  // namespace

template <typename T>
void forward(const ForwardArgs<T>& a) {
  const int64_t B = a.B, Tn = a.Tn, N = a.N;
  const int64_t tile = choose_tile(B, N);
  const int64_t ntiles = (N + tile - 1) / tile;
  const T M = static_cast<T>(a.max_spikes);
  at::parallel_for(0, B * ntiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / ntiles;
      const int64_t n0 = (i % ntiles) * tile;
      const int64_t len = std::min(tile, N - n0);
      const int64_t row = b * Tn * N + n0;  // (b, t=0, n0)
      const T* z = a.noise ? a.noise + row : nullptr;
      T* w_rec = a.w_rec ? a.w_rec + row : nullptr;
      T* u_out = a.u_out ? a.u_out + row : nullptr;
      auto fn = a.noise ? Kernels<T>::fwd_noise : Kernels<T>::fwd;
      fn(a.x + row, z, a.v0 + b * N + n0, a.alpha + n0, a.thr + n0, a.bias + n0, M,
         a.s_out + row, w_rec, u_out, a.v_final + b * N + n0, Tn, N, len);
    }
  });
}

template <typename T>
void backward(const BackwardArgs<T>& a) {
  const int64_t B = a.B, Tn = a.Tn, N = a.N;
  const int64_t tile = choose_tile(B, N);
  const int64_t ntiles = (N + tile - 1) / tile;
  const T M = static_cast<T>(a.max_spikes);
  const T window = static_cast<T>(a.window);
  const bool pexp = a.surrogate == kPeriodicExponential;
  auto fn = pexp ? (a.gw ? Kernels<T>::bwd_pexp_gw : Kernels<T>::bwd_pexp)
                 : (a.gw ? Kernels<T>::bwd_pwl_gw : Kernels<T>::bwd_pwl);
  at::parallel_for(0, B * ntiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / ntiles;
      const int64_t n0 = (i % ntiles) * tile;
      const int64_t len = std::min(tile, N - n0);
      const int64_t row = b * Tn * N + n0;
      const int64_t bn = b * N + n0;
      fn(a.gs + row, a.gw ? a.gw + row : nullptr, a.gvf ? a.gvf + bn : nullptr, a.u + row,
         a.v0 + bn, a.alpha + n0, a.thr + n0, window, M, a.g_in + row, a.g_v0 + bn,
         a.g_alpha_partial + bn, a.g_thr_partial + bn, a.g_bias_partial + bn, Tn, N, len);
    }
  });
  // Parameter gradients: sum the per-row partials over the batch in a fixed order (b = 0..B-1),
  // so the bits do not depend on the thread count or the tiling.
  at::parallel_for(0, N, 256, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      T sa = 0, st = 0, sb = 0;
      for (int64_t b = 0; b < B; ++b) {
        sa += a.g_alpha_partial[b * N + n];
        st += a.g_thr_partial[b * N + n];
        sb += a.g_bias_partial[b * N + n];
      }
      a.g_alpha[n] = sa;
      a.g_thr[n] = st;
      a.g_bias[n] = sb;
    }
  });
}

template void forward<float>(const ForwardArgs<float>&);
template void forward<double>(const ForwardArgs<double>&);
template void backward<float>(const BackwardArgs<float>&);
template void backward<double>(const BackwardArgs<double>&);

}  // namespace cpu
}  // namespace lif
