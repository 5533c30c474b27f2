// The work of one CUDA thread, host+device and on raw pointers: one (batch row b, neuron n) over
// the whole time loop, forward and backward, and one parameter-gradient sum over the batch. The
// kernels in lif_kernel_cuda.cu only compute the thread's index and call these; and
// tests/test_core_host.py compiles this very file with g++ and runs it, thread by thread, against
// the reference (no GPU needed). The math is lif_core.h's; this file only moves data: it loads
// kChunk time steps ahead (independent loads in flight while the recurrence runs) and stores what
// the step functions return.
//
// Layout: (B,T,N) sequences, (B,N) per-row state (or one shared (N,) row), (N,) parameters, all
// contiguous but grad_spikes, which is read with its own strides (0 for a broadcast). Thread
// idx = b * N + n, so a warp is consecutive neurons of one row and every load and store of a time
// step is one contiguous run. Indices are 64-bit. IT is the input/spike/grad-input type (float,
// double, c10::Half, c10::BFloat16), T the compute and state type (float for the half types).
#pragma once

#include <cstdint>
#include <type_traits>

#include "../lif_args.h"
#include "../lif_core.h"
#include "../lif_lengths.h"

#if defined(__CUDACC__)
#define LIF_UNROLL _Pragma("unroll")
#else
#define LIF_UNROLL _Pragma("GCC unroll 8")
#endif

namespace lif {
namespace gpu {

// The argument structs (ForwardArgs, BackwardArgs) and NoiseMode are lif_args.h's, shared with
// the CPU kernels.

// Time steps loaded ahead of the recurrence. Results never depend on it. Whole Philox blocks (four
// steps each), so the in-kernel noise of a chunk is drawn with constant lane indices.
constexpr int kChunk = 8;
static_assert(kChunk % 4 == 0, "a chunk must be whole Philox blocks of four steps");

// The in-kernel noise key of one neuron: z[t] = scale * N(0,1), lane t % 4 of the Philox block
// (seed, subsequence, offset + t / 4) -- the CPU kernel's stream (lif_core.h).
template <typename T>
struct NoiseKey {
  uint64_t seed, offset;
  T scale;
  uint64_t subsequence;  // b * N + n
};

// The Philox key of a forward call: the arguments, or, under CUDA graph capture, the CUDA
// generator's state read at run time (as at::cuda::philox::unpack reads it) and converted from
// 32-bit words to blocks.
template <typename IT, typename T>
LIF_HD void noise_key_of(const ForwardArgs<IT, T>& a, uint64_t& seed, uint64_t& offset) {
  if (a.key_seed != nullptr) {
    seed = static_cast<uint64_t>(*a.key_seed);
    offset = (static_cast<uint64_t>(*a.key_offset) + a.key_offset_intragraph) / 4u;
  } else {
    seed = a.seed;
    offset = a.offset;
  }
}

// Forward (SPEC §1) for one neuron of one batch row; pointers at (b, t=0, n), time steps stride_t
// apart. Writes s[t] (and u[t] when SAVE_U, w[t] when RECORD) for t = 0..steps-1; returns
// w[steps-1] (v0 when steps == 0).
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
  // The in-kernel noise of steps 4q .. 4q+3 (one Philox block, drawn once) into zq[0..3].
  auto draw4 = [&](int64_t q, T* zq) {
    const Normals4 nz =
        philox_normals4(key.seed, key.offset, key.subsequence, static_cast<uint64_t>(q));
    zq[0] = scale_noise(key.scale, nz.z0);
    zq[1] = scale_noise(key.scale, nz.z1);
    zq[2] = scale_noise(key.scale, nz.z2);
    zq[3] = scale_noise(key.scale, nz.z3);
  };
  int64_t t0 = 0;
  for (; t0 + kChunk <= steps; t0 += kChunk) {
    T xin[kChunk];
    T zin[kChunk];
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      const int64_t off = (t0 + k) * stride_t;
      xin[k] = static_cast<T>(x[off]);
      zin[k] = NOISE == kNoiseTensor ? z[off] : T(0);
    }
    if constexpr (NOISE == kNoiseKernel) {
      LIF_UNROLL
      for (int j = 0; j < kChunk / 4; ++j) draw4((t0 >> 2) + j, zin + 4 * j);
    }
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) step((t0 + k) * stride_t, xin[k], zin[k]);
  }
  if constexpr (NOISE == kNoiseKernel) {
    // The last steps a block at a time (t0 is a multiple of 4), lanes by constant index.
    for (; t0 < steps; t0 += 4) {
      T zq[4];
      draw4(t0 >> 2, zq);
      LIF_UNROLL
      for (int k = 0; k < 4; ++k) {
        if (t0 + k < steps) {
          const int64_t off = (t0 + k) * stride_t;
          step(off, static_cast<T>(x[off]), zq[k]);
        }
      }
    }
  } else {
    for (; t0 < steps; ++t0) {
      const int64_t off = t0 * stride_t;
      step(off, static_cast<T>(x[off]), NOISE == kNoiseTensor ? z[off] : T(0));
    }
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
// gs[t] is at gs + t * gs_stride_t (its own strides: `spikes.sum()` hands a stride-0 tensor), the
// other sequences at t * stride_t. W starts as the upstream gradient on the final state. The
// per-neuron constants are computed once; s[t-1] and w[t-1] are recomputed from the saved u[t-1]
// (v0 at t = 0), and each u and its spike count are computed once and carried to the next (earlier)
// step: the CPU kernel's operations, in its order.
template <typename IT, typename T, int SURR, bool HAS_GW>
LIF_HD NeuronGrads<T> backward_neuron(const IT* __restrict__ gs, int64_t gs_stride_t,
                                      const T* __restrict__ gw, T g_final, const T* __restrict__ u,
                                      T v0, T alpha, T thr, T window, T max_spikes,
                                      IT* __restrict__ g_in, int64_t steps, int64_t stride_t) {
  const NeuronConsts<T> c = neuron_consts(alpha, thr, window, max_spikes);
  T W = g_final, g_thr = T(0), g_alpha = T(0), g_bias = T(0);
  auto step = [&](int64_t off, T gsv, T gwv, T u_t, T s_t, T w_prev) {
    g_in[off] = static_cast<IT>(
        step_backward<SURR>(gsv, gwv, u_t, s_t, w_prev, c, W, g_thr, g_alpha, g_bias));
  };
  int64_t t = steps - 1;
  T u_cur = u[t * stride_t];
  T s_cur = spikes(u_cur, thr, max_spikes);
  // One step t >= 1, given u[t-1]: recompute s[t-1] and w[t-1], step, move to t-1.
  auto step_back = [&](int64_t off, T gsv, T gwv, T u_prev) {
    const T s_prev = spikes(u_prev, thr, max_spikes);
    step(off, gsv, gwv, u_cur, s_cur, reset(u_prev, s_prev, thr));
    u_cur = u_prev;
    s_cur = s_prev;
  };
  // Steps t >= 1 in chunks, gs[t], gw[t] and u[t-1] loaded ahead.
  for (; t >= kChunk; t -= kChunk) {
    T gsv[kChunk];
    T gwv[kChunk];
    T uprev[kChunk];
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) {
      const int64_t off = (t - k) * stride_t;
      gsv[k] = static_cast<T>(gs[(t - k) * gs_stride_t]);
      gwv[k] = HAS_GW ? gw[off] : T(0);
      uprev[k] = u[off - stride_t];
    }
    LIF_UNROLL
    for (int k = 0; k < kChunk; ++k) step_back((t - k) * stride_t, gsv[k], gwv[k], uprev[k]);
  }
  for (; t >= 1; --t) {
    const int64_t off = t * stride_t;
    step_back(off, static_cast<T>(gs[t * gs_stride_t]), HAS_GW ? gw[off] : T(0), u[off - stride_t]);
  }
  step(0, static_cast<T>(gs[0]), HAS_GW ? gw[0] : T(0), u_cur, s_cur, v0);
  return NeuronGrads<T>{W, g_alpha, g_thr, g_bias};
}

// ---------------------------------------------------------------- one thread of each kernel

// Forward kernel thread idx = b * N + n, 0 <= idx < B * N. The row's steps (T, or its length),
// then its padding (lif_lengths.h).
template <typename IT, typename T, int NOISE, bool SAVE_U, bool RECORD>
LIF_HD void forward_thread(const ForwardArgs<IT, T>& a, int64_t idx) {
  const int64_t b = idx / a.N;
  const int64_t n = idx - b * a.N;
  const int64_t row = b * a.Tn * a.N + n;  // (b, t=0, n)
  const int64_t steps = row_steps(a.lengths, b, a.Tn);
  NoiseKey<T> key{0, 0, static_cast<T>(a.noise_scale), static_cast<uint64_t>(idx)};
  if constexpr (NOISE == kNoiseKernel) noise_key_of(a, key.seed, key.offset);
  const T w = forward_neuron<IT, T, NOISE, SAVE_U, RECORD>(
      a.x + row, NOISE == kNoiseTensor ? a.noise + row : nullptr, key, a.v0[b * a.v0_stride_b + n],
      a.alpha[a.alpha_scalar ? 0 : n], a.thr[a.thr_scalar ? 0 : n], a.bias[a.bias_scalar ? 0 : n],
      static_cast<T>(a.max_spikes), a.s_out + row, SAVE_U ? a.u_out + row : nullptr,
      RECORD ? a.w_rec + row : nullptr, steps, a.N);
  a.v_final[idx] = w;
  if (steps < a.Tn) {
    pad_fill(a.s_out + row, static_cast<IT>(0), steps, a.Tn, a.N, 1);
    if constexpr (SAVE_U) pad_hold(a.u_out + row, &w, steps, a.Tn, a.N, 1);
    if constexpr (RECORD) pad_hold(a.w_rec + row, &w, steps, a.Tn, a.N, 1);
  }
}

// Backward kernel thread idx = b * N + n, 0 <= idx < B * N: g_in, g_v0 and the row's partials,
// from the row's last step (T-1, or its length - 1); zero g_in on its padding (lif_lengths.h).
template <typename IT, typename T, int SURR, bool HAS_GW>
LIF_HD void backward_thread(const BackwardArgs<IT, T>& a, int64_t idx) {
  const int64_t BN = a.B * a.N;
  const int64_t b = idx / a.N;
  const int64_t n = idx - b * a.N;
  const int64_t row = b * a.Tn * a.N + n;
  const int64_t steps = row_steps(a.lengths, b, a.Tn);
  const T g_final = a.gvf ? a.gvf[idx] : T(0);
  // A row of length 0: the final state is v0, nothing else gets a gradient.
  const NeuronGrads<T> g =
      steps == 0
          ? NeuronGrads<T>{g_final, T(0), T(0), T(0)}
          : backward_neuron<IT, T, SURR, HAS_GW>(
                a.gs + b * a.gs_stride_b + n * a.gs_stride_n, a.gs_stride_t,
                HAS_GW ? a.gw + row : nullptr, g_final, a.u + row, a.v0[b * a.v0_stride_b + n],
                a.alpha[a.alpha_scalar ? 0 : n], a.thr[a.thr_scalar ? 0 : n],
                static_cast<T>(a.window), static_cast<T>(a.max_spikes), a.g_in + row, steps, a.N);
  pad_fill(a.g_in + row, static_cast<IT>(0), steps, a.Tn, a.N, 1);
  a.g_v0[idx] = g.v0;
  a.partial[idx] = g.alpha;
  a.partial[BN + idx] = g.thr;
  a.partial[2 * BN + idx] = g.bias;
}

// The number of gradients summed over the batch: alpha, thr, bias, and a shared v0's.
template <typename IT, typename T>
LIF_HD int64_t batch_sums(const BackwardArgs<IT, T>& a) {
  return a.g_v0_sum ? 4 : 3;
}

// Whether gradient j (alpha/tau, thr, bias) belongs to a () parameter.
template <typename IT, typename T>
LIF_HD bool scalar_grad(const BackwardArgs<IT, T>& a, int64_t j) {
  return j == 0 ? a.alpha_scalar : (j == 1 ? a.thr_scalar : (j == 2 ? a.bias_scalar : false));
}

// Reduction kernel thread idx = j * N + n, 0 <= idx < batch_sums(a) * N: gradient j (alpha, thr,
// bias, shared v0) of neuron n, summed over b = 0..B-1 in that order, from 0 (the CPU kernel's
// order: the same bits). Written to the output (alpha's as tau's gradient), or for a () parameter
// to row j's b = 0 slot, which only this thread reads or writes.
template <typename IT, typename T>
LIF_HD void reduce_thread(const BackwardArgs<IT, T>& a, int64_t idx) {
  const int64_t j = idx / a.N;
  const int64_t n = idx - j * a.N;
  T* const p = a.partial + j * a.B * a.N + n;
  T sum = T(0);
  for (int64_t b = 0; b < a.B; ++b) sum += p[b * a.N];
  if (scalar_grad(a, j)) {
    p[0] = sum;
  } else if (j == 0) {
    a.g_tau[n] = tau_grad(sum, a.alpha[n], a.tau[n], static_cast<T>(a.dt));
  } else {
    T* out = j == 1 ? a.g_thr : (j == 2 ? a.g_bias : a.g_v0_sum);
    out[n] = sum;
  }
}

// After the reduction, thread j < 3 of a () parameter: its per-neuron sums added in index order
// (the CPU kernel's order). One thread per parameter: N sequential additions.
template <typename IT, typename T>
LIF_HD void scalar_sum_thread(const BackwardArgs<IT, T>& a, int64_t j) {
  if (!scalar_grad(a, j)) return;
  const T* p = a.partial + j * a.B * a.N;
  T sum = T(0);
  for (int64_t n = 0; n < a.N; ++n) sum += p[n];
  if (j == 0) {
    a.g_tau[0] = tau_grad(sum, a.alpha[0], a.tau[0], static_cast<T>(a.dt));
  } else {
    (j == 1 ? a.g_thr : a.g_bias)[0] = sum;
  }
}

// ---------------------------------------------------------------- runtime flags -> template

// Calls f(noise, save_u, record) with std::integral_constant copies of the forward's runtime
// switches, so that each variant is its own kernel and the hot loop never branches on them.
template <typename IT, typename T, typename F>
void with_forward_variant(const ForwardArgs<IT, T>& a, F&& f) {
  auto rec = [&](auto noise, auto save_u) {
    if (a.w_rec) {
      f(noise, save_u, std::true_type{});
    } else {
      f(noise, save_u, std::false_type{});
    }
  };
  auto save = [&](auto noise) {
    if (a.u_out) {
      rec(noise, std::true_type{});
    } else {
      rec(noise, std::false_type{});
    }
  };
  if (a.noise) {
    save(std::integral_constant<int, kNoiseTensor>{});
  } else if (a.noise_mode == kNoiseKernel) {
    save(std::integral_constant<int, kNoiseKernel>{});
  } else {
    save(std::integral_constant<int, kNoNoise>{});
  }
}

// Calls f(surrogate, has_gw) likewise for the backward.
template <typename IT, typename T, typename F>
void with_backward_variant(const BackwardArgs<IT, T>& a, F&& f) {
  auto gw = [&](auto surr) {
    if (a.gw) {
      f(surr, std::true_type{});
    } else {
      f(surr, std::false_type{});
    }
  };
  if (a.surrogate == kPeriodicExponential) {
    gw(std::integral_constant<int, kPeriodicExponential>{});
  } else {
    gw(std::integral_constant<int, kStepPWL>{});
  }
}

}  // namespace gpu
}  // namespace lif
