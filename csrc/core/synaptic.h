// The synaptic LIF model's step functions (SPEC §7, Rockpool's LIFTorch "taus"): the synapse
// currents around the LIF step of lif.h.
#pragma once

#include "hd.h"
#include "lif.h"
#include "torch_sum.h"

namespace lif {

// S synapses per neuron, each with its own current i[k] and decay beta = exp(-dt/tau_syn). Per
// step, for neuron n (each operation rounded, in this order):
//   i_pre[k] = (i[k] + x[k]) [+ r[k]]   the current before its decay (what the backward needs)
//   i[k]     = i_pre[k] * beta[k]
//   u        = (((w * alpha) + sum_k i[k]) [+ z]) + bias
// then spikes() and reset() as for the LIF model. r is the recurrent current
// linear(s_prev, w_rec.T), computed by ATen outside these functions.

// i_pre = i + x: the synaptic current after its input, before the decay.
template <typename T>
LIF_HD T syn_input(T i, T x) {
  return i + x;
}

// i_pre = (i + x) + r, with the recurrent current r.
template <typename T>
LIF_HD T syn_input(T i, T x, T r) {
  T a = i + x;
  return a + r;
}

// i = i_pre * beta.
template <typename T>
LIF_HD T syn_decay(T i_pre, T beta) {
  return i_pre * beta;
}

// The membrane step is the LIF op's step_forward with the synapse sum as its input: Rockpool
// writes w * alpha, the same bits as alpha * w (IEEE multiplication commutes; alpha is finite).

// Backward of one synapse, reverse step t (SPEC §7). U = dL/du[t]; I (in: dL/di[t] from step t+1
// and the record, out: dL/di[t-1]); i_pre[t], saved by the forward. Accumulates dL/dbeta; returns
// dL/di_pre[t], which is dL/dx[t] and dL/dr[t].
template <typename T>
LIF_HD T syn_step_backward(T U, T i_pre, T beta, T& I, T& g_beta) {
  const T gi = I + U;  // dL/di[t]: through u[t] (the sum), and into i[t+1]
  const T ga = gi * beta;
  g_beta = g_beta + gi * i_pre;
  I = ga;  // i[t-1] enters i_pre[t] with weight 1
  return ga;
}

// ---------------------------------------------------------------- the AHP current (SPEC §9)
// Rockpool's aLIFTorch: one more current per neuron, h, fed by the neuron's own previous spikes.
// Per step, after the synapses and before the membrane (each operation rounded, in this order):
//   h_pre = h + (s_prev * w_ahp)     the current before its decay (what the backward needs)
//   h     = h_pre * gamma            gamma = exp(-dt/tau_ahp)
//   u     = (((w * alpha) + sum over [i[0..S-1], h]) [+ z]) + bias   (torch_sum.h's ahp_sum)
//
// Backward, reverse step t (derived from the above; checked against autograd of the reference in
// float64). H carries dL/dh[t] from the later steps: dL/dh_pre[t+1] (h[t] enters h_pre[t+1] with
// weight 1), or the gradient on the final state at the row's last step. Then, with U = dL/du[t]
// and gh the gradient on the record of h[t]:
//   dL/ds[t]      += H * w_ahp      (s[t] enters h_pre[t+1]; not at the row's last step)
//   dh             = (H + U) + gh    dL/dh[t]
//   P              = dh * gamma      dL/dh_pre[t]: dL/dh[t-1], and dL/ds[t-1] = P * w_ahp
//   dL/dgamma     += dh * h_pre[t]
//   dL/dw_ahp     += P * s[t-1]
//   H              = P
// At t = 0, H is dL/dh0, and P * w_ahp the AHP's share of dL/ds0.

// h_pre = h + s_prev * w_ahp.
template <typename T>
LIF_HD T ahp_input(T h, T s_prev, T w_ahp) {
  const T fed = s_prev * w_ahp;
  return h + fed;
}

// One reverse step of the AHP current (above): H in: dL/dh[t] from later steps, out: dL/dh_pre[t].
template <typename T>
LIF_HD void ahp_step_backward(T U, T gh, T h_pre, T s_prev, T gamma, T& H, T& g_gamma, T& g_w_ahp) {
  const T dh = (H + U) + gh;
  const T P = dh * gamma;
  g_gamma = g_gamma + dh * h_pre;
  g_w_ahp = g_w_ahp + P * s_prev;
  H = P;
}

}  // namespace lif
