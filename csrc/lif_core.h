// lif_core.h -- the LIF model's math, one source of truth for the CPU and CUDA kernels.
//
// Everything here works on scalars only (no tensors, no devices), so g++ and nvcc compile the
// very same functions. Names map to ../shared/SPEC.md:
//   u  membrane after integration, before the spike/reset   (SPEC u[t])
//   w  membrane after the subtractive reset                  (SPEC w[t]; w[-1] = v0)
//   s  number of spikes emitted in the step                  (SPEC s[t])
//
// Bit-exactness (SPEC §1): the forward is written as separate, explicitly ordered IEEE operations.
// It must be compiled with -ffp-contract=off (g++) / -fmad=false (nvcc) so that no multiply-add is
// fused, and never with fast-math: then the result equals torch's elementwise ops exactly.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define LIF_HD __host__ __device__ __forceinline__
#else
#define LIF_HD inline __attribute__((always_inline))
#endif

namespace lif {

// Which surrogate the backward uses (SPEC §2). A template parameter of the kernels, so the hot
// loop never branches on it.
enum Surrogate : int { kStepPWL = 0, kPeriodicExponential = 1 };

LIF_HD float lif_floor(float x) { return floorf(x); }
LIF_HD double lif_floor(double x) { return floor(x); }
LIF_HD float lif_exp(float x) { return expf(x); }
LIF_HD double lif_exp(double x) { return exp(x); }
LIF_HD float lif_abs(float x) { return fabsf(x); }
LIF_HD double lif_abs(double x) { return fabs(x); }

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

// ---------------------------------------------------------------- surrogates (SPEC §2)
// Both give ds/du and ds/dthr for the upstream gradient a on s; the clamp to M is ignored except
// in PeriodicExponential's own definition of k.

template <int SURR, typename T>
struct SurrogateGrad;

// StepPWL: ds/du = m/thr, ds/dthr = -u*m/thr^2, m = (u >= thr - window). The mask multiplies (as the
// reference does) so that NaN/Inf propagate the same way.
template <typename T>
struct SurrogateGrad<kStepPWL, T> {
  LIF_HD static void apply(T a, T u, T thr, T window, T /*max_spikes*/, T& d_u, T& d_thr) {
    T m = (u >= thr - window) ? T(1) : T(0);
    d_u = (a / thr) * m;
    d_thr = ((-u * a) / (thr * thr)) * m;
  }
};

// PeriodicExponential: pdf(u) with vs = u - thr/2, k = min(floor(vs/thr), M-1), vp = vs - k*thr,
// vn = (u < thr) ? vs : vp, pdf = exp(-|vn - thr/2| / window) / thr.
template <typename T>
struct SurrogateGrad<kPeriodicExponential, T> {
  LIF_HD static void apply(T a, T u, T thr, T window, T max_spikes, T& d_u, T& d_thr) {
    T half = thr / T(2);
    T vs = u - half;
    T k = lif_floor(vs / thr);
    T kmax = max_spikes - T(1);
    k = (k > kmax) ? kmax : k;
    T vp = vs - k * thr;
    T vn = (u < thr) ? vs : vp;
    T pdf = lif_exp(-lif_abs(vn - half) / window) / thr;
    d_u = a * pdf;
    d_thr = -(a * pdf) * u / thr;
  }
};

// ---------------------------------------------------------------- backward (SPEC §3)
// One reverse step for one neuron. Inputs: upstream gs (on s[t]) and gw (on w[t]); u[t]; w[t-1]
// (recomputed by the caller, v0 at t = 0). State: W = dL/dw[t] carried backwards (in: from step
// t+1, out: dL/dw[t-1]). Accumulates the parameter gradients; returns dL/du[t] (= dL/dI[t]).
template <int SURR, typename T>
LIF_HD T step_backward(T gs, T gw, T u, T w_prev, T alpha, T thr, T window, T max_spikes, T& W,
                       T& g_thr, T& g_alpha, T& g_bias) {
  T Wt = W + gw;
  T s = spikes(u, thr, max_spikes);
  T a = gs - Wt * thr;  // dL/ds[t]: direct, plus through the reset w = u - s*thr
  T d_u, d_thr;
  SurrogateGrad<SURR, T>::apply(a, u, thr, window, max_spikes, d_u, d_thr);
  T U = Wt + d_u;  // dL/du[t]
  g_bias = g_bias + U;
  g_thr = g_thr + (-Wt * s + d_thr);
  g_alpha = g_alpha + U * w_prev;
  W = alpha * U;  // dL/dw[t-1]
  return U;
}

// w[t-1] from the saved u[t-1]: the backward recomputes it instead of saving it (SPEC §3).
template <typename T>
LIF_HD T recompute_w(T u, T thr, T max_spikes) {
  return reset(u, spikes(u, thr, max_spikes), thr);
}

}  // namespace lif
