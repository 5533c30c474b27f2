// The adaptive-threshold LIF's step functions (SPEC §10), on scalars: one source for the CPU tiles
// and the CUDA threads. The §1 neuron (integrate, spikes, reset of core/lif.h) with the threshold
// A = thr + beta * b, b the adaptation (b[-1] = b0), which each spike raises and which relaxes
// with rho = exp(-dt/tau_adapt), q = 1 - rho.
//
// Backward through time (hand-written; the reverse loop the kernels run, SPEC §3 extended). With
// upstream gs[t] on s[t], gw[t] on w[t] (the membrane record) and gb[t] on b[t] (the adaptation
// record), W = dL/dw[t] and Bc = dL/db[t] carried backwards (from the gradients on the final
// state), and A[t] = thr + beta * b[t-1]:
//
//   W  += gw[t] ;  Bc += gb[t]
//   a   = (gs[t] - W * A[t]) + Bc * q          dL/ds[t]: direct, the reset w = u - s*A, b += q*s
//   U   = W + a * dsdu(u[t]; A[t])             dL/du[t] (§2's surrogate with thr -> A[t])
//   GA  = -W * s[t] + a * dsdthr(u[t]; A[t])   dL/dA[t]
//   gI[t] = U ; gbias += U ; galpha += U * w[t-1]           (w[-1] = v0)
//   gthr += GA ; gbeta += GA * b[t-1] ; grho += Bc * (b[t-1] - s[t])   (b = rho*b + (1-rho)*s)
//   W   = alpha * U ;  Bc = rho * Bc + beta * GA                dL/dw[t-1], dL/db[t-1]
//   gv0 = W ; gb0 = Bc ; gtau_mem, gtau_adapt from galpha, grho (core/grad_sums.h tau_grad)
//
// Saved for the backward: u[t], and b. On CUDA every b[t] (the adaptation after each step); on
// the CPU checkpoints (adapt_checkpoint_rows): every kAdaptCheckpoint-th b, from which the backward
// rebuilds a segment of b, s and w forwards before running it in reverse. Either way s[t], A[t]
// and w[t-1] come from the forward's own operations, so the same bits (b cannot be rebuilt
// backwards from b[t] exactly).
#pragma once

#include "hd.h"
#include "lif.h"
#include "surrogate.h"

namespace lif {

// ---------------------------------------------------------------- forward (SPEC §10)

// A = thr + (beta * b), the effective threshold of a step whose adaptation before it is b.
template <typename T>
LIF_HD T adaptive_threshold(T thr, T beta, T b) {
  T bb = beta * b;
  return thr + bb;
}

// b = (rho * b) + (q * s).
template <typename T>
LIF_HD T adapt(T rho, T q, T b, T s) {
  T rb = rho * b;
  T qs = q * s;
  return rb + qs;
}

// One forward step after the integration (u given): returns s, writes w and the new b.
template <typename T>
LIF_HD T adaptive_fire(T u, T thr, T beta, T rho, T q, T max_spikes, T& w, T& b) {
  const T A = adaptive_threshold(thr, beta, b);
  const T s = spikes(u, A, max_spikes);
  w = reset(u, s, A);
  b = adapt(rho, q, b, s);
  return s;
}

// ---------------------------------------------------------------- what the CPU forward keeps of b

// Checkpoints kAdaptCheckpoint steps apart: entry 0 is b0's row; entry c >= 1 is b[c*K - 2] (the
// adaptation before step c*K - 1), kept when segment c (steps [c*K, c*K + K)) exists. From entry c
// the backward rebuilds step c*K - 1 (for w[c*K - 1]) and the segment. Entries past a row's last
// segment hold its final b, as padding does.
constexpr int64_t kAdaptCheckpoint = 32;

// Entries of a (B, rows, N) checkpoint tensor for T steps saved `every` steps apart (every = 1:
// every b[t], as CUDA keeps it).
LIF_HD int64_t adapt_checkpoint_rows(int64_t T, int64_t every) { return (T + every - 1) / every; }

// ---------------------------------------------------------------- backward (see the top)

// The per-neuron constants of the backward beside the surrogate's (which depend on A, per step).
template <typename T>
struct AdaptiveConsts {
  T alpha, thr, beta, rho, q, window, max_spikes;
};

// The running gradient terms of one neuron: carried state and parameter sums (in T, per block).
template <typename T>
struct AdaptiveGrads {
  T W, Bc;  // dL/dw, dL/db carried backwards
  T g_alpha, g_thr, g_bias, g_beta, g_rho;
};

// The threshold and the spike count of step t, recomputed from u[t] and b[t-1] as the forward
// computed them.
template <typename T>
LIF_HD T adaptive_spikes(T u, T thr, T beta, T b_prev, T max_spikes, T& A) {
  A = adaptive_threshold(thr, beta, b_prev);
  return spikes(u, A, max_spikes);
}

// One reverse step: u[t], its spike count s and threshold A, b_prev = b[t-1], w_prev = w[t-1];
// returns dL/du[t] (= dL/dI[t]).
template <int SURR, typename T>
LIF_HD T adaptive_step_backward(T gs, T gw, T gb, T u, T s, T A, T b_prev, T w_prev,
                                const AdaptiveConsts<T>& c, AdaptiveGrads<T>& g) {
  const T Wt = g.W + gw;
  const T Bt = g.Bc + gb;
  const T g_s = (gs - Wt * A) + Bt * c.q;  // dL/ds[t]
  const NeuronConsts<T> nc = neuron_consts(c.alpha, A, c.window, c.max_spikes);
  T d_u, d_A;
  SurrogateGrad<SURR, T>::apply(g_s, u, nc, d_u, d_A);
  const T U = Wt + d_u;  // dL/du[t]
  const T GA = -Wt * s + d_A;  // dL/dA[t]
  g.g_bias = g.g_bias + U;
  g.g_alpha = g.g_alpha + U * w_prev;
  g.g_thr = g.g_thr + GA;
  g.g_beta = g.g_beta + GA * b_prev;
  g.g_rho = g.g_rho + Bt * (b_prev - s);
  g.W = c.alpha * U;
  g.Bc = c.rho * Bt + c.beta * GA;
  return U;
}

}  // namespace lif
