// The work of one CUDA thread of the adaptive-threshold LIF kernels (SPEC §10), host+device and on
// raw pointers: one (batch row b, neuron n) over the whole time loop, forward and backward, on the
// LIF threads' time loops (lif_thread.h: forward_steps, reverse_steps, the noise key) with
// core/adaptive.h's steps. The host tests compile it with g++ and run it against the CPU op. Layout
// and thread index as lif_thread.h's.
#pragma once

#include <cstdint>

#include "../core/adaptive.h"
#include "lif_thread.h"

namespace lif {
namespace gpu {

// Forward for one neuron of one batch row: writes s[t] (u[t] and b[t] when SAVE, w[t] and b[t] when
// RECORD) for t = 0..steps-1; w and b start as v0 and b0 and end as the final state.
template <typename IT, typename T, int NOISE, bool SAVE, bool RECORD>
LIF_HD void adaptive_forward_neuron(const IT* __restrict__ x, const T* __restrict__ z,
                                    NeuronNoise<T> key, T alpha, T thr, T bias, T rho, T beta,
                                    T max_spikes, IT* __restrict__ s_out, T* __restrict__ u_out,
                                    T* __restrict__ b_out, T* __restrict__ vmem_out,
                                    T* __restrict__ adapt_out, int64_t steps, int64_t stride_t,
                                    T& w, T& b) {
  const T q = T(1) - rho;
  // Half the chunk for double: its registers (no stack frame on sm_80 with the chunk ahead).
  constexpr int kAhead = sizeof(T) > 4 ? kChunk / 2 : kChunk;
  forward_steps<IT, T, NOISE, kAhead>(
      x, z, key, steps, stride_t, [&](int64_t, int64_t off, T xin, T zin) {
        T u;
        if constexpr (NOISE == kNoNoise) {
          u = integrate(alpha, w, xin, bias);
        } else {
          u = integrate(alpha, w, xin, zin, bias);
        }
        const T s = adaptive_fire(u, thr, beta, rho, q, max_spikes, w, b);
        s_out[off] = static_cast<IT>(s);
        if constexpr (SAVE) {
          u_out[off] = u;
          b_out[off] = b;
        }
        if constexpr (RECORD) {
          vmem_out[off] = w;
          adapt_out[off] = b;
        }
      });
}

// Per-neuron results of the backward besides g_in: the initial states' gradients and the float64
// sums of this row's parameter-gradient terms (core/grad_sums.h).
struct AdaptiveNeuronSums {
  double alpha, thr, bias, beta, rho;
};

// Backward through time (core/adaptive.h) for one neuron of one batch row, t = steps-1 .. 0
// (steps >= 1); g carries dL/dw, dL/db in (from the final state) and out (dL/dv0, dL/db0). s[t-1],
// A[t-1] and w[t-1] are recomputed from the saved u[t-1] and b[t-2] (b0 at t = 1) and carried to
// the next (earlier) step: the CPU tile's operations, in its order.
template <typename IT, typename T, int SURR, bool HAS_GW, bool HAS_GB>
LIF_HD AdaptiveNeuronSums adaptive_backward_neuron(
    const IT* __restrict__ gs, int64_t gs_stride_t, const T* __restrict__ gw,
    const T* __restrict__ gb, const T* __restrict__ u, const T* __restrict__ b_seq, T v0, T b0,
    const AdaptiveConsts<T>& c, IT* __restrict__ g_in, int64_t steps, int64_t stride_t,
    AdaptiveGrads<T>& g) {
  const int64_t t_last = steps - 1;
  AdaptiveNeuronSums sums{0.0, 0.0, 0.0, 0.0, 0.0};
  auto step = [&](int64_t t_step, T gsv, T gwv, T gbv, T u_t, T s_t, T A_t, T b_prev, T w_prev) {
    g_in[t_step * stride_t] = static_cast<IT>(
        adaptive_step_backward<SURR>(gsv, gwv, gbv, u_t, s_t, A_t, b_prev, w_prev, c, g));
    if (grad_block_ends(t_last, t_step, 0)) {
      flush_grad_block(g.g_alpha, sums.alpha);
      flush_grad_block(g.g_thr, sums.thr);
      flush_grad_block(g.g_bias, sums.bias);
      flush_grad_block(g.g_beta, sums.beta);
      flush_grad_block(g.g_rho, sums.rho);
    }
  };
  T u_cur = u[t_last * stride_t];
  T b_cur = t_last > 0 ? b_seq[(t_last - 1) * stride_t] : b0;  // b[t-1] of the current step
  T A_cur;
  T s_cur = adaptive_spikes(u_cur, c.thr, c.beta, b_cur, c.max_spikes, A_cur);
  struct Loaded {
    T gs, gw, gb, u_prev, b_prev2;
  };
  reverse_steps(
      t_last,
      [&](int64_t ts) {
        const int64_t off = ts * stride_t;
        return Loaded{static_cast<T>(gs[ts * gs_stride_t]), HAS_GW ? gw[off] : T(0),
                      HAS_GB ? gb[off] : T(0), u[off - stride_t],
                      ts > 1 ? b_seq[off - 2 * stride_t] : b0};
      },
      [&](int64_t ts, const Loaded& v) {
        T A_prev;
        const T s_prev = adaptive_spikes(v.u_prev, c.thr, c.beta, v.b_prev2, c.max_spikes, A_prev);
        step(ts, v.gs, v.gw, v.gb, u_cur, s_cur, A_cur, b_cur, reset(v.u_prev, s_prev, A_prev));
        u_cur = v.u_prev;
        s_cur = s_prev;
        A_cur = A_prev;
        b_cur = v.b_prev2;
      });
  step(0, static_cast<T>(gs[0]), HAS_GW ? gw[0] : T(0), HAS_GB ? gb[0] : T(0), u_cur, s_cur, A_cur,
       b0, v0);
  return sums;
}

// ---------------------------------------------------------------- one thread of each kernel

// Forward kernel thread idx = b * N + n, 0 <= idx < B * N: the row's steps, then its padding.
template <typename IT, typename T, int NOISE, bool SAVE, bool RECORD>
LIF_HD void adaptive_forward_thread(const AdaptiveForwardArgs<IT, T>& a, int64_t idx) {
  const LifForwardArgs<IT, T>& m = a.lif;
  const int64_t b = idx / m.N;
  const int64_t n = idx - b * m.N;
  const int64_t row = b * m.Tn * m.N + n;  // (b, t=0, n)
  const int64_t steps = row_steps(m.lengths, b, m.Tn);
  T w = m.v0[b * m.v0_stride_b + n];
  T bn = a.b0[b * a.b0_stride_b + n];
  adaptive_forward_neuron<IT, T, NOISE, SAVE, RECORD>(
      m.x + row, NOISE == kNoiseTensor ? m.noise.tensor + row : nullptr,
      neuron_noise<NOISE>(m.noise, idx), m.alpha[n], m.thr[n], m.bias[n], a.rho[n], a.beta[n],
      static_cast<T>(m.max_spikes), m.s_out + row, SAVE ? m.u_out + row : nullptr,
      SAVE ? a.b_out + row : nullptr, RECORD ? m.vmem_out + row : nullptr,
      RECORD ? a.adapt_out + row : nullptr, steps, m.N, w, bn);
  m.v_final[idx] = w;
  a.b_final[idx] = bn;
  if (steps < m.Tn) {
    pad_fill(m.s_out + row, static_cast<IT>(0), steps, m.Tn, m.N, 1);
    if constexpr (SAVE) {
      pad_hold(m.u_out + row, &w, steps, m.Tn, m.N, 1);
      pad_hold(a.b_out + row, &bn, steps, m.Tn, m.N, 1);
    }
    if constexpr (RECORD) {
      pad_hold(m.vmem_out + row, &w, steps, m.Tn, m.N, 1);
      pad_hold(a.adapt_out + row, &bn, steps, m.Tn, m.N, 1);
    }
  }
}

// Backward kernel thread idx = b * N + n: g_in, the initial states' gradients and the row's
// partials (rows as core/args.h's AdaptiveBackwardArgs says), from the row's last step; zero g_in
// on its padding.
template <typename IT, typename T, int SURR, bool HAS_GW, bool HAS_GB>
LIF_HD void adaptive_backward_thread(const AdaptiveBackwardArgs<IT, T>& a, int64_t idx) {
  const LifBackwardArgs<IT, T>& m = a.lif;
  const int64_t BN = m.B * m.N;
  const int64_t b = idx / m.N;
  const int64_t n = idx - b * m.N;
  const int64_t row = b * m.Tn * m.N + n;
  const int64_t steps = row_steps(m.lengths, b, m.Tn);
  const T rho = a.rho[n];
  const AdaptiveConsts<T> c{m.alpha[n],
                            m.thr[n],
                            a.beta[n],
                            rho,
                            T(1) - rho,
                            static_cast<T>(m.window),
                            static_cast<T>(m.max_spikes)};
  AdaptiveGrads<T> g{
      m.gvf ? m.gvf[idx] : T(0), a.gbf ? a.gbf[idx] : T(0), T(0), T(0), T(0), T(0), T(0)};
  // A row of length 0: the final state is the initial one, nothing else gets a gradient.
  const AdaptiveNeuronSums sums =
      steps == 0 ? AdaptiveNeuronSums{0.0, 0.0, 0.0, 0.0, 0.0}
                 : adaptive_backward_neuron<IT, T, SURR, HAS_GW, HAS_GB>(
                       m.gs + b * m.gs_stride_b + n * m.gs_stride_n, m.gs_stride_t,
                       HAS_GW ? m.gw + row : nullptr, HAS_GB ? a.gb + row : nullptr, m.u + row,
                       a.b + row, m.v0[b * m.v0_stride_b + n], a.b0[b * a.b0_stride_b + n], c,
                       m.g_in + row, steps, m.N, g);
  pad_fill(m.g_in + row, static_cast<IT>(0), steps, m.Tn, m.N, 1);
  if (m.g_v0) {
    m.g_v0[idx] = g.W;
  } else {  // a shared v0 or b0: its rows in float64 for the batch sum (core/grad_sums.h)
    m.partial[3 * BN + idx] = static_cast<double>(g.W);
  }
  if (a.g_b0) {
    a.g_b0[idx] = g.Bc;
  } else {
    m.partial[6 * BN + idx] = static_cast<double>(g.Bc);
  }
  m.partial[idx] = sums.alpha;
  m.partial[BN + idx] = sums.thr;
  m.partial[2 * BN + idx] = sums.bias;
  m.partial[4 * BN + idx] = sums.beta;
  m.partial[5 * BN + idx] = sums.rho;
}

}  // namespace gpu
}  // namespace lif
