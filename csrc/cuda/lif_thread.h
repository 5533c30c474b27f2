// The work of one CUDA thread of the LIF kernels, host+device and on raw pointers: one (batch row
// b, neuron n) over the whole time loop, forward and backward. The
// kernels in lif.cu only compute the thread's index and call these; and the host tests compile
// this very file with g++ and run it, thread by thread, against the reference and the CPU op (no
// GPU needed). The math is core/lif.h's; this file only moves data: it loads time steps ahead
// (forward: the next kChunk while a chunk runs; backward: a ring of kRing), so independent loads
// are in flight while the recurrence runs, and stores what the step functions return.
//
// Layout: (B,T,N) sequences, (B,N) per-row state (or one shared (N,) row), (N,) parameters, all
// contiguous but grad_spikes, which is read with its own strides (0 for a broadcast). Thread
// idx = b * N + n, so a warp is consecutive neurons of one row and every load and store of a time
// step is one contiguous run. Indices are 64-bit. IT is the input/spike/grad-input type (float,
// double, c10::Half, c10::BFloat16), T the compute and state type (float for the half types).
#pragma once

#include <cstdint>

#include "../core/args.h"
#include "../core/grad_sums.h"
#include "../core/lengths.h"
#include "../core/lif.h"
#include "../core/mask.h"
#include "../core/philox.h"

#if defined(__CUDACC__)
#define LIF_UNROLL _Pragma("unroll")
#else
#define LIF_UNROLL _Pragma("GCC unroll 8")
#endif

namespace lif {
namespace gpu {

// Time steps loaded ahead of the recurrence. Results never depend on it. Whole Philox blocks (four
// steps each), so the in-kernel noise of a chunk is drawn with constant lane indices.
constexpr int kChunk = 8;
static_assert(kChunk % 4 == 0, "a chunk must be whole Philox blocks of four steps");

// One neuron's in-kernel noise: z[t] = scale * N(0,1), lane t % 4 of the Philox block
// (seed, subsequence, offset + t / 4) -- the CPU kernel's stream (core/philox.h).
template <typename T>
struct NeuronNoise {
  uint64_t seed, offset;
  T scale;
  uint64_t subsequence;  // b * N + n
};

// One neuron's noise of a call (the key read once per thread: on the device under capture).
template <int NOISE, typename T>
LIF_HD NeuronNoise<T> neuron_noise(const Noise<T>& noise, int64_t idx) {
  NeuronNoise<T> nn{0, 0, static_cast<T>(noise.scale), static_cast<uint64_t>(idx)};
  if constexpr (NOISE == kNoiseKernel) noise.key.get(nn.seed, nn.offset);
  return nn;
}

// Every model's forward time loop for one neuron of one batch row: pointers at (b, t=0, n), time
// steps stride_t apart; calls step(t, off, x[t], z[t]) for t = 0..steps-1, off = t * stride_t (z[t]
// is 0 unless NOISE != kNoNoise), loading CHUNK steps ahead (and their in-kernel noise, a Philox
// block at a time; CHUNK a multiple of 4). Results never depend on CHUNK.
template <typename IT, typename T, int NOISE, int CHUNK = kChunk, typename Step>
LIF_HD void forward_steps(const IT* __restrict__ x, const T* __restrict__ z, NeuronNoise<T> key,
                          int64_t steps, int64_t stride_t, const Step& step) {
  static_assert(CHUNK % 4 == 0, "a chunk must be whole Philox blocks of four steps");
  // The in-kernel noise of steps 4q .. 4q+3 (one Philox block, drawn once) into zq[0..3].
  auto draw4 = [&](int64_t q, T* zq) {
    const Normals4 nz =
        philox_normals4(key.seed, key.offset, key.subsequence, static_cast<uint64_t>(q));
    zq[0] = scale_noise(key.scale, nz.z0);
    zq[1] = scale_noise(key.scale, nz.z1);
    zq[2] = scale_noise(key.scale, nz.z2);
    zq[3] = scale_noise(key.scale, nz.z3);
  };
  // A chunk's inputs (and noise tensor) into registers.
  auto load = [&](int64_t t, T* xs, T* zs) {
    LIF_UNROLL
    for (int k = 0; k < CHUNK; ++k) {
      const int64_t off = (t + k) * stride_t;
      xs[k] = static_cast<T>(x[off]);
      zs[k] = NOISE == kNoiseTensor ? z[off] : T(0);
    }
  };
  // Software-pipelined: the next chunk's loads are issued before this chunk's steps, so they are in
  // flight while the recurrence runs (one memory latency per call, not one per chunk).
  int64_t t0 = 0;
  T xin[CHUNK];
  T zin[CHUNK];
  if (CHUNK <= steps) load(0, xin, zin);
  for (; t0 + CHUNK <= steps; t0 += CHUNK) {
    T xnext[CHUNK] = {};
    T znext[CHUNK] = {};
    const bool more = t0 + 2 * CHUNK <= steps;
    if (more) load(t0 + CHUNK, xnext, znext);
    if constexpr (NOISE == kNoiseKernel) {
      LIF_UNROLL
      for (int j = 0; j < CHUNK / 4; ++j) draw4((t0 >> 2) + j, zin + 4 * j);
    }
    LIF_UNROLL
    for (int k = 0; k < CHUNK; ++k) step(t0 + k, (t0 + k) * stride_t, xin[k], zin[k]);
    LIF_UNROLL
    for (int k = 0; k < CHUNK; ++k) {
      xin[k] = xnext[k];
      zin[k] = znext[k];
    }
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
          step(t0 + k, off, static_cast<T>(x[off]), zq[k]);
        }
      }
    }
  } else {
    for (; t0 < steps; ++t0) {
      const int64_t off = t0 * stride_t;
      step(t0, off, static_cast<T>(x[off]), NOISE == kNoiseTensor ? z[off] : T(0));
    }
  }
}

// Forward (SPEC §1) for one neuron of one batch row; pointers at (b, t=0, n), time steps stride_t
// apart (mask words too). Writes s[t] (and u[t] or the mask words as SAVE says, w[t] when RECORD)
// for t = 0..steps-1; returns w[steps-1] (v0 when steps == 0).
template <typename IT, typename T, int NOISE, int SAVE, bool RECORD>
LIF_HD T forward_neuron(const IT* __restrict__ x, const T* __restrict__ z, NeuronNoise<T> key, T v0,
                        T alpha, T thr, T bias, T max_spikes, IT* __restrict__ s_out,
                        T* __restrict__ u_out, uint32_t* __restrict__ mask_out, T pwl_lo,
                        T* __restrict__ vmem_out, int64_t steps, int64_t stride_t) {
  T w = v0;
  uint32_t word = 0;  // the window mask's word being built
  forward_steps<IT, T, NOISE>(
      x, z, key, steps, stride_t, [&](int64_t t, int64_t off, T xin, T zin) {
        T u, wn, s;
        if constexpr (NOISE == kNoNoise) {
          s = step_forward(alpha, w, xin, bias, thr, max_spikes, u, wn);
        } else {
          s = step_forward(alpha, w, xin, zin, bias, thr, max_spikes, u, wn);
        }
        s_out[off] = static_cast<IT>(s);
        if constexpr (SAVE == kSaveU) u_out[off] = u;
        if constexpr (SAVE == kSaveMask) {
          word |= mask_bit(u, pwl_lo, t);
          if (mask_word_ends(t, steps)) {
            mask_out[(t / kMaskBits) * stride_t] = word;
            word = 0;
          }
        }
        if constexpr (RECORD) vmem_out[off] = wn;
        w = wn;
      });
  return w;
}

// Steps whose loads a reverse time loop keeps in flight (reverse_steps). Results never depend on
// it.
constexpr int kRing = 4;

// Every model's reverse time loop over the steps t = t_last..1 of one neuron: step(t, load(t)),
// software-pipelined over a ring of RING loaded steps: as a step takes its values from the ring,
// the load of the step RING earlier goes into its place, so RING steps' loads are in flight while
// the recurrence runs, in the registers of RING steps. The steps run in the same order whatever
// the ring. Step 0 is the caller's (it reads the initial state instead of a saved step).
template <int RING = kRing, typename Load, typename Step>
LIF_HD void reverse_steps(int64_t t_last, const Load& load, const Step& step) {
  int64_t t = t_last;
  if (t >= RING) {
    decltype(load(t)) v[RING];
    LIF_UNROLL
    for (int k = 0; k < RING; ++k) v[k] = load(t - k);
    // The ring holds steps t .. t-RING+1; while the RING steps before them are all >= 1, each
    // slot takes its step RING earlier once its own step has read it.
    for (; t >= 2 * RING; t -= RING) {
      LIF_UNROLL
      for (int k = 0; k < RING; ++k) {
        const auto cur = v[k];
        v[k] = load(t - RING - k);
        step(t - k, cur);
      }
    }
    LIF_UNROLL
    for (int k = 0; k < RING; ++k) step(t - k, v[k]);
    t -= RING;
  }
  for (; t >= 1; --t) step(t, load(t));
}

// Per-neuron results of the backward besides g_in: dL/dv0 and the float64 sums of this row's
// parameter-gradient terms (core/grad_sums.h).
template <typename T>
struct NeuronGrads {
  T v0;
  double alpha, thr, bias;
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
  // The terms' block sums in T, flushed into float64 where core/grad_sums.h's blocks end (as the
  // CPU tile does).
  const int64_t t_last = steps - 1;
  T W = g_final, g_thr = T(0), g_alpha = T(0), g_bias = T(0);
  double sum_thr = 0.0, sum_alpha = 0.0, sum_bias = 0.0;
  auto step = [&](int64_t t_step, T gsv, T gwv, T u_t, T s_t, T w_prev) {
    g_in[t_step * stride_t] = static_cast<IT>(
        step_backward<SURR>(gsv, gwv, u_t, s_t, w_prev, c, W, g_thr, g_alpha, g_bias));
    if (grad_block_ends(t_last, t_step, 0)) {
      flush_grad_block(g_thr, sum_thr);
      flush_grad_block(g_alpha, sum_alpha);
      flush_grad_block(g_bias, sum_bias);
    }
  };
  T u_cur = u[t_last * stride_t];
  T s_cur = spikes(u_cur, thr, max_spikes);
  // Step t >= 1, given gs[t], gw[t] and u[t-1]: recompute s[t-1] and w[t-1], step, move to t-1.
  struct Loaded {
    T gs, gw, u_prev;
  };
  reverse_steps(
      t_last,
      [&](int64_t ts) {
        const int64_t off = ts * stride_t;
        return Loaded{static_cast<T>(gs[ts * gs_stride_t]), HAS_GW ? gw[off] : T(0),
                      u[off - stride_t]};
      },
      [&](int64_t ts, const Loaded& v) {
        const T s_prev = spikes(v.u_prev, thr, max_spikes);
        step(ts, v.gs, v.gw, u_cur, s_cur, reset(v.u_prev, s_prev, thr));
        u_cur = v.u_prev;
        s_cur = s_prev;
      });
  step(0, static_cast<T>(gs[0]), HAS_GW ? gw[0] : T(0), u_cur, s_cur, v0);
  return NeuronGrads<T>{W, sum_alpha, sum_thr, sum_bias};
}

// The same from the window mask (SPEC §11; StepPWL, no tau or threshold terms): the mask's word of
// each 32 steps (at mask + (t / 32) * stride_t) instead of u; gs and gw loaded ahead as for u.
template <typename IT, typename T, bool HAS_GW>
LIF_HD NeuronGrads<T> backward_neuron_masked(const IT* __restrict__ gs, int64_t gs_stride_t,
                                             const T* __restrict__ gw, T g_final,
                                             const uint32_t* __restrict__ mask, T alpha, T thr,
                                             T window, T max_spikes, IT* __restrict__ g_in,
                                             int64_t steps, int64_t stride_t) {
  const NeuronConsts<T> c = neuron_consts(alpha, thr, window, max_spikes);
  const int64_t t_last = steps - 1;
  T W = g_final, g_bias = T(0);
  double sum_bias = 0.0;
  uint32_t word = 0;
  auto step = [&](int64_t t, T gsv, T gwv) {
    if (mask_word_ends(t, t_last + 1)) word = mask[(t / kMaskBits) * stride_t];  // as stored
    g_in[t * stride_t] = static_cast<IT>(step_backward_masked(
        gsv, gwv, mask_value<T>(word, static_cast<int>(t % kMaskBits)), c, W, g_bias));
    if (grad_block_ends(t_last, t, 0)) flush_grad_block(g_bias, sum_bias);
  };
  struct Loaded {
    T gs, gw;
  };
  reverse_steps(
      t_last,
      [&](int64_t ts) {
        return Loaded{static_cast<T>(gs[ts * gs_stride_t]), HAS_GW ? gw[ts * stride_t] : T(0)};
      },
      [&](int64_t ts, const Loaded& v) { step(ts, v.gs, v.gw); });
  step(0, static_cast<T>(gs[0]), HAS_GW ? gw[0] : T(0));
  return NeuronGrads<T>{W, 0.0, 0.0, sum_bias};
}

// ---------------------------------------------------------------- one thread of each kernel

// Forward kernel thread idx = b * N + n, 0 <= idx < B * N. The row's steps (T, or its length),
// then its padding (core/lengths.h).
template <typename IT, typename T, int NOISE, int SAVE, bool RECORD>
LIF_HD void forward_thread(const LifForwardArgs<IT, T>& a, int64_t idx) {
  const int64_t b = idx / a.N;
  const int64_t n = idx - b * a.N;
  const int64_t row = b * a.Tn * a.N + n;  // (b, t=0, n)
  const int64_t steps = row_steps(a.lengths, b, a.Tn);
  uint32_t* mask = nullptr;
  T pwl_lo = T(0);
  if constexpr (SAVE == kSaveMask) {
    mask = a.mask_out + b * mask_words(a.Tn) * a.N + n;
    pwl_lo = a.thr[n] - static_cast<T>(a.window);
  }
  const T w = forward_neuron<IT, T, NOISE, SAVE, RECORD>(
      a.x + row, NOISE == kNoiseTensor ? a.noise.tensor + row : nullptr,
      neuron_noise<NOISE>(a.noise, idx), a.v0[b * a.v0_stride_b + n], a.alpha[n], a.thr[n],
      a.bias[n], static_cast<T>(a.max_spikes), a.s_out + row,
      SAVE == kSaveU ? a.u_out + row : nullptr, mask, pwl_lo, RECORD ? a.vmem_out + row : nullptr,
      steps, a.N);
  a.v_final[idx] = w;
  if (steps < a.Tn) {
    pad_fill(a.s_out + row, static_cast<IT>(0), steps, a.Tn, a.N, 1);
    if constexpr (SAVE == kSaveU) pad_hold(a.u_out + row, &w, steps, a.Tn, a.N, 1);
    if constexpr (RECORD) pad_hold(a.vmem_out + row, &w, steps, a.Tn, a.N, 1);
  }
  if constexpr (SAVE == kSaveMask) {
    pad_fill(mask, uint32_t(0), mask_words(steps), mask_words(a.Tn), a.N, 1);
  }
}

// Backward kernel thread idx = b * N + n, 0 <= idx < B * N: g_in, g_v0 and the row's partials,
// from the row's last step (T-1, or its length - 1); zero g_in on its padding (core/lengths.h).
template <typename IT, typename T, int SURR, bool HAS_GW, bool MASK>
LIF_HD void backward_thread(const LifBackwardArgs<IT, T>& a, int64_t idx) {
  const int64_t BN = a.B * a.N;
  const int64_t b = idx / a.N;
  const int64_t n = idx - b * a.N;
  const int64_t row = b * a.Tn * a.N + n;
  const int64_t steps = row_steps(a.lengths, b, a.Tn);
  const T g_final = a.gvf ? a.gvf[idx] : T(0);
  // A row of length 0: the final state is v0, nothing else gets a gradient.
  const NeuronGrads<T> none{g_final, 0.0, 0.0, 0.0};
  NeuronGrads<T> g;
  if constexpr (MASK) {
    g = steps == 0
            ? none
            : backward_neuron_masked<IT, T, HAS_GW>(
                  a.gs + b * a.gs_stride_b + n * a.gs_stride_n, a.gs_stride_t,
                  HAS_GW ? a.gw + row : nullptr, g_final, a.mask + b * mask_words(a.Tn) * a.N + n,
                  a.alpha[n], a.thr[n], static_cast<T>(a.window), static_cast<T>(a.max_spikes),
                  a.g_in + row, steps, a.N);
  } else {
    g = steps == 0
            ? none
            : backward_neuron<IT, T, SURR, HAS_GW>(
                  a.gs + b * a.gs_stride_b + n * a.gs_stride_n, a.gs_stride_t,
                  HAS_GW ? a.gw + row : nullptr, g_final, a.u + row, a.v0[b * a.v0_stride_b + n],
                  a.alpha[n], a.thr[n], static_cast<T>(a.window), static_cast<T>(a.max_spikes),
                  a.g_in + row, steps, a.N);
  }
  pad_fill(a.g_in + row, static_cast<IT>(0), steps, a.Tn, a.N, 1);
  if (a.g_v0) {
    a.g_v0[idx] = g.v0;
  } else {  // a shared v0: its rows in float64 for the batch sum (core/grad_sums.h)
    a.partial[3 * BN + idx] = static_cast<double>(g.v0);
  }
  a.partial[idx] = g.alpha;
  a.partial[BN + idx] = g.thr;
  a.partial[2 * BN + idx] = g.bias;
}

}  // namespace gpu
}  // namespace lif
