// The LIF model's step functions (SPEC §1, §3), on scalars: one source for the CPU tiles and the
// CUDA threads. Names as in SPEC.md:
//   u  membrane after integration, before the spike/reset   (SPEC u[t])
//   w  membrane after the subtractive reset                  (SPEC w[t]; w[-1] = v0)
//   s  number of spikes emitted in the step                  (SPEC s[t])
#pragma once

#include "hd.h"
#include "surrogate.h"

namespace lif {

// ---------------------------------------------------------------- forward (SPEC §1)

// u[t] = (((alpha * w[t-1]) + I[t]) + z[t]) + bias, each operation rounded in this order.
template <typename T>
LIF_HD T integrate(T alpha, T w_prev, T input, T noise, T bias) {
  T u = alpha * w_prev;
  u = u + input;
  u = u + noise;
  return u + bias;
}

// The same without a noise term (SPEC §1: equal up to the sign of a zero).
template <typename T>
LIF_HD T integrate(T alpha, T w_prev, T input, T bias) {
  T u = alpha * w_prev;
  u = u + input;
  return u + bias;
}

// s[t] = min((u >= thr) ? floor(u / thr) : 0, M). True division, a select (not a multiply by the
// comparison: 0 * floor(-inf) would be NaN), then the clamp.
template <typename T>
LIF_HD T spikes(T u, T thr, T max_spikes) {
  T q = lif_floor(u / thr);
  T s = (u >= thr) ? q : T(0);
  return (s > max_spikes) ? max_spikes : s;
}

// w[t] = u[t] - s[t] * thr (subtractive reset).
template <typename T>
LIF_HD T reset(T u, T s, T thr) {
  T st = s * thr;
  return u - st;
}

// One whole forward step: returns s, writes u and w.
template <typename T>
LIF_HD T step_forward(T alpha, T w_prev, T input, T bias, T thr, T max_spikes, T& u, T& w) {
  u = integrate(alpha, w_prev, input, bias);
  T s = spikes(u, thr, max_spikes);
  w = reset(u, s, thr);
  return s;
}

template <typename T>
LIF_HD T step_forward(T alpha, T w_prev, T input, T noise, T bias, T thr, T max_spikes, T& u,
                      T& w) {
  u = integrate(alpha, w_prev, input, noise, bias);
  T s = spikes(u, thr, max_spikes);
  w = reset(u, s, thr);
  return s;
}

// ---------------------------------------------------------------- backward (SPEC §3)
// One reverse step for one neuron. Inputs: upstream gs (on s[t]) and gw (on w[t]); u[t] and its
// spike count s[t]; w[t-1] (recomputed by the caller from u[t-1], v0 at t = 0). State: W = dL/dw[t]
// carried backwards (in: from step t+1, out: dL/dw[t-1]). Accumulates the parameter gradients;
// returns dL/du[t] (= dL/dI[t]).
template <int SURR, typename T>
LIF_HD T step_backward(T gs, T gw, T u, T s, T w_prev, const NeuronConsts<T>& c, T& W, T& g_thr,
                       T& g_alpha, T& g_bias) {
  T Wt = W + gw;
  T g_s = gs - Wt * c.thr;  // dL/ds[t]: direct, plus through the reset w = u - s*thr
  T d_u, d_thr;
  SurrogateGrad<SURR, T>::apply(g_s, u, c, d_u, d_thr);
  T U = Wt + d_u;  // dL/du[t]
  g_bias = g_bias + U;
  g_thr = g_thr + (-Wt * s + d_thr);
  g_alpha = g_alpha + U * w_prev;
  W = c.alpha * U;  // dL/dw[t-1]
  return U;
}

// The same, recomputing s[t] from u[t] itself (for callers that do not carry it).
template <int SURR, typename T>
LIF_HD T step_backward(T gs, T gw, T u, T w_prev, T alpha, T thr, T window, T max_spikes, T& W,
                       T& g_thr, T& g_alpha, T& g_bias) {
  const NeuronConsts<T> c = neuron_consts(alpha, thr, window, max_spikes);
  return step_backward<SURR>(gs, gw, u, spikes(u, thr, max_spikes), w_prev, c, W, g_thr, g_alpha,
                             g_bias);
}

// The StepPWL step of a backward that needs no tau or threshold gradient (SPEC §11): only the
// window mask m = (u[t] >= thr - window) is known. The same operations as step_backward<kStepPWL>
// for dL/du, dL/dbias and W, so the same bits.
template <typename T>
LIF_HD T step_backward_masked(T gs, T gw, T m, const NeuronConsts<T>& c, T& W, T& g_bias) {
  T Wt = W + gw;
  T g_s = gs - Wt * c.thr;
  T d_u = (g_s * c.inv_thr) * m;  // m is 0 or 1, as StepPWL's mask
  T U = Wt + d_u;
  g_bias = g_bias + U;
  W = c.alpha * U;
  return U;
}

// w[t-1] from the saved u[t-1]: the backward recomputes it instead of saving it (SPEC §3).
template <typename T>
LIF_HD T recompute_w(T u, T thr, T max_spikes) {
  return reset(u, spikes(u, thr, max_spikes), thr);
}

}  // namespace lif
