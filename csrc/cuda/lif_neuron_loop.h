// The work of one CUDA thread: one (batch row, neuron) over the whole time loop, forward and
// backward. Host+device, on raw pointers, so that tests/test_core_host.py runs this very code with
// g++ (no GPU needed) and checks it bit for bit against the reference. The math is lif_core.h's;
// this file only moves data: it loads kChunk time steps ahead (independent loads in flight while
// the recurrence runs) and stores what the step functions return.
//
// Pointers are already offset to (b, t=0, n); consecutive time steps are `stride_t` (= N)
// elements apart, so a warp of consecutive neurons reads and writes whole cache lines.
#pragma once

#include <cstdint>

#include "../lif_core.h"

#if defined(__CUDACC__)
#define LIF_UNROLL _Pragma("unroll")
#else
#define LIF_UNROLL _Pragma("GCC unroll 8")
#endif

namespace lif {
namespace gpu {

// Time steps loaded ahead of the recurrence. Results never depend on it.
constexpr int kChunk = 8;

// Forward (SPEC §1) for one neuron of one batch row. Writes s[t] (and u[t] when SAVE_U, w[t] when
// RECORD) for t = 0..steps-1; returns w[steps-1] (v0 when steps == 0).
template <typename T, bool NOISE, bool SAVE_U, bool RECORD>
LIF_HD T forward_neuron(const T* __restrict__ x, const T* __restrict__ z, T v0, T alpha, T thr,
                        T bias, T max_spikes, T* __restrict__ s_out, T* __restrict__ u_out,
                        T* __restrict__ w_rec, int64_t steps, int64_t stride_t) {
  T w = v0;
  int64_t t0 = 0;
  for (; t0 + kChunk <= steps; t0 += kChunk) {
    T xin[kChunk];
    T zin[kChunk];
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      const int64_t off = (t0 + k) * stride_t;
      xin[k] = x[off];
      zin[k] = NOISE ? z[off] : T(0);
    }
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      const int64_t off = (t0 + k) * stride_t;
      T u, wn, s;
      if constexpr (NOISE) {
        s = step_forward(alpha, w, xin[k], zin[k], bias, thr, max_spikes, u, wn);
      } else {
        s = step_forward(alpha, w, xin[k], bias, thr, max_spikes, u, wn);
      }
      s_out[off] = s;
      if constexpr (SAVE_U) u_out[off] = u;
      if constexpr (RECORD) w_rec[off] = wn;
      w = wn;
    }
  }
  for (; t0 < steps; ++t0) {
    const int64_t off = t0 * stride_t;
    T u, wn, s;
    if constexpr (NOISE) {
      s = step_forward(alpha, w, x[off], z[off], bias, thr, max_spikes, u, wn);
    } else {
      s = step_forward(alpha, w, x[off], bias, thr, max_spikes, u, wn);
    }
    s_out[off] = s;
    if constexpr (SAVE_U) u_out[off] = u;
    if constexpr (RECORD) w_rec[off] = wn;
    w = wn;
  }
  return w;
}

// Per-neuron results of the backward besides g_in: dL/dv0 and this row's parameter-gradient
// partials (summed over the batch afterwards, in batch order).
template <typename T>
struct NeuronGrads {
  T v0, alpha, thr, bias;
};

// Backward through time (SPEC §3) for one neuron of one batch row, t = steps-1 .. 0 (steps >= 1).
// W starts as the upstream gradient on the final state. w[t-1] is recomputed from the saved u[t-1]
// (v0 at t = 0); each u is loaded once and carried to the next (earlier) step.
template <typename T, int SURR, bool HAS_GW>
LIF_HD NeuronGrads<T> backward_neuron(const T* __restrict__ gs, const T* __restrict__ gw,
                                      T g_final, const T* __restrict__ u, T v0, T alpha, T thr,
                                      T window, T max_spikes, T* __restrict__ g_in, int64_t steps,
                                      int64_t stride_t) {
  T W = g_final, g_thr = T(0), g_alpha = T(0), g_bias = T(0);
  int64_t t = steps - 1;
  T u_cur = u[t * stride_t];
  // Steps t >= 1 in chunks: gs[t], gw[t] and u[t-1] loaded ahead.
  for (; t >= kChunk; t -= kChunk) {
    T gsv[kChunk];
    T gwv[kChunk];
    T uprev[kChunk];
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      const int64_t off = (t - k) * stride_t;
      gsv[k] = gs[off];
      gwv[k] = HAS_GW ? gw[off] : T(0);
      uprev[k] = u[off - stride_t];
    }
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      const T w_prev = recompute_w(uprev[k], thr, max_spikes);
      g_in[(t - k) * stride_t] = step_backward<SURR>(gsv[k], gwv[k], u_cur, w_prev, alpha, thr,
                                                     window, max_spikes, W, g_thr, g_alpha, g_bias);
      u_cur = uprev[k];
    }
  }
  for (; t >= 1; --t) {
    const int64_t off = t * stride_t;
    const T up = u[off - stride_t];
    const T w_prev = recompute_w(up, thr, max_spikes);
    g_in[off] = step_backward<SURR>(gs[off], HAS_GW ? gw[off] : T(0), u_cur, w_prev, alpha, thr,
                                    window, max_spikes, W, g_thr, g_alpha, g_bias);
    u_cur = up;
  }
  g_in[0] = step_backward<SURR>(gs[0], HAS_GW ? gw[0] : T(0), u_cur, v0, alpha, thr, window,
                                max_spikes, W, g_thr, g_alpha, g_bias);
  return NeuronGrads<T>{W, g_alpha, g_thr, g_bias};
}

}  // namespace gpu
}  // namespace lif
