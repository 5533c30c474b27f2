// The work of one CUDA thread: one (batch row, neuron) over the whole time loop, forward and
// backward. Host+device, on raw pointers, so that tests/test_core_host.py runs this very code with
// g++ (no GPU needed) and checks it bit for bit against the reference. The math is lif_core.h's;
// this file only moves data: it loads kChunk time steps ahead (independent loads in flight while
// the recurrence runs) and stores what the step functions return.
//
// Pointers are already offset to (b, t=0, n); consecutive time steps are `stride_t` (= N)
// elements apart, so a warp of consecutive neurons reads and writes whole cache lines.
// IT is the input/spike/grad-input type (float, double, c10::Half, c10::BFloat16), T the compute
// and state type (float for the half types).
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

// Where the noise term comes from (SPEC §4); the same values as lif::cpu::NoiseMode.
enum NoiseMode : int { kNoNoise = 0, kNoiseTensor = 1, kNoiseKernel = 2 };

// Time steps loaded ahead of the recurrence. Results never depend on it.
constexpr int kChunk = 8;

// The in-kernel noise key: z = scale * N(0,1) drawn for flat element index0 + t * stride_t.
template <typename T>
struct NoiseKey {
  uint64_t seed, offset;
  T scale;
  uint64_t index0;  // flat index of (b, t=0, n), as the CPU kernel keys it
};

// Forward (SPEC §1) for one neuron of one batch row. Writes s[t] (and u[t] when SAVE_U, w[t] when
// RECORD) for t = 0..steps-1; returns w[steps-1] (v0 when steps == 0).
template <typename IT, typename T, int NOISE, bool SAVE_U, bool RECORD>
LIF_HD T forward_neuron(const IT* __restrict__ x, const T* __restrict__ z, NoiseKey<T> key, T v0,
                        T alpha, T thr, T bias, T max_spikes, IT* __restrict__ s_out,
                        T* __restrict__ u_out, T* __restrict__ w_rec, int64_t steps,
                        int64_t stride_t) {
  T w = v0;
  // One step, given its input and noise (the noise is ignored unless NOISE != kNoNoise).
  auto step = [&](int64_t off, T xin, T zin) {
    T u, wn, s;
    if constexpr (NOISE == kNoNoise) {
      s = step_forward(alpha, w, xin, bias, thr, max_spikes, u, wn);
    } else {
      s = step_forward(alpha, w, xin, zin, bias, thr, max_spikes, u, wn);
    }
    s_out[off] = static_cast<IT>(s);
    if constexpr (SAVE_U) u_out[off] = u;
    if constexpr (RECORD) w_rec[off] = wn;
    w = wn;
  };
  // The noise of the step at `off`: read, drawn, or none. Independent of the recurrence.
  auto noise_at = [&](int64_t off) -> T {
    if constexpr (NOISE == kNoiseTensor) return z[off];
    if constexpr (NOISE == kNoiseKernel)
      return scale_noise(key.scale, philox_normal(key.seed, key.offset,
                                                  key.index0 + static_cast<uint64_t>(off)));
    return T(0);
  };
  int64_t t0 = 0;
  for (; t0 + kChunk <= steps; t0 += kChunk) {
    T xin[kChunk];
    T zin[kChunk];
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      const int64_t off = (t0 + k) * stride_t;
      xin[k] = static_cast<T>(x[off]);
      zin[k] = noise_at(off);
    }
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) step((t0 + k) * stride_t, xin[k], zin[k]);
  }
  for (; t0 < steps; ++t0) {
    const int64_t off = t0 * stride_t;
    step(off, static_cast<T>(x[off]), noise_at(off));
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
template <typename IT, typename T, int SURR, bool HAS_GW>
LIF_HD NeuronGrads<T> backward_neuron(const IT* __restrict__ gs, const T* __restrict__ gw,
                                      T g_final, const T* __restrict__ u, T v0, T alpha, T thr,
                                      T window, T max_spikes, IT* __restrict__ g_in,
                                      int64_t steps, int64_t stride_t) {
  T W = g_final, g_thr = T(0), g_alpha = T(0), g_bias = T(0);
  auto step = [&](int64_t off, T gsv, T gwv, T u_t, T w_prev) {
    g_in[off] = static_cast<IT>(step_backward<SURR>(gsv, gwv, u_t, w_prev, alpha, thr, window,
                                                    max_spikes, W, g_thr, g_alpha, g_bias));
  };
  int64_t t = steps - 1;
  T u_cur = u[t * stride_t];
  // Steps t >= 1 in chunks, gs[t], gw[t] and u[t-1] loaded ahead.
  for (; t >= kChunk; t -= kChunk) {
    T gsv[kChunk];
    T gwv[kChunk];
    T uprev[kChunk];
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      const int64_t off = (t - k) * stride_t;
      gsv[k] = static_cast<T>(gs[off]);
      gwv[k] = HAS_GW ? gw[off] : T(0);
      uprev[k] = u[off - stride_t];
    }
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      step((t - k) * stride_t, gsv[k], gwv[k], u_cur, recompute_w(uprev[k], thr, max_spikes));
      u_cur = uprev[k];
    }
  }
  for (; t >= 1; --t) {
    const int64_t off = t * stride_t;
    const T up = u[off - stride_t];
    step(off, static_cast<T>(gs[off]), HAS_GW ? gw[off] : T(0), u_cur,
         recompute_w(up, thr, max_spikes));
    u_cur = up;
  }
  step(0, static_cast<T>(gs[0]), HAS_GW ? gw[0] : T(0), u_cur, v0);
  return NeuronGrads<T>{W, g_alpha, g_thr, g_bias};
}

}  // namespace gpu
}  // namespace lif
