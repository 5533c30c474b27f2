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

#include <ATen/core/PhiloxRNGEngine.h>

#include <cmath>
#include <cstdint>
#include <cstring>

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

// ---------------------------------------------------------------- in-kernel noise (SPEC §4)
// One standard normal per (b,t,n) element, from ATen's Philox4x32-10 keyed by (seed, offset) with
// the flat element index as the subsequence: the value depends only on (seed, offset, index), never
// on threads, tiling or device. Box-Muller is evaluated with +,-,*,/ and sqrt only (IEEE correctly
// rounded on CPU and GPU alike, with contraction off): log and cos are our own short series, so the
// CPU and CUDA kernels draw bit-identical noise. Accuracy ~1e-13 relative, far below float32.

LIF_HD uint64_t double_bits(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
#endif
}

LIF_HD double bits_double(uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(b));
#else
  double x;
  std::memcpy(&x, &b, sizeof x);
  return x;
#endif
}

// log(x) for normal positive doubles: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
// log(m) = 2 atanh(r), r = (m-1)/(m+1), |r| < 0.172, by its odd series to r^19.
LIF_HD double det_log(double x) {
  const uint64_t b = double_bits(x);
  int64_t e = static_cast<int64_t>((b >> 52) & 0x7ff) - 1023;
  double m = bits_double((b & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);  // [1, 2)
  if (m > 1.4142135623730951) {
    m = m * 0.5;
    e = e + 1;
  }
  const double r = (m - 1.0) / (m + 1.0);
  const double r2 = r * r;
  double p = 1.0 / 19.0;
  p = p * r2 + 1.0 / 17.0;
  p = p * r2 + 1.0 / 15.0;
  p = p * r2 + 1.0 / 13.0;
  p = p * r2 + 1.0 / 11.0;
  p = p * r2 + 1.0 / 9.0;
  p = p * r2 + 1.0 / 7.0;
  p = p * r2 + 1.0 / 5.0;
  p = p * r2 + 1.0 / 3.0;
  p = p * r2 + 1.0;
  const double log_m = 2.0 * r * p;
  return log_m + static_cast<double>(e) * 0.6931471805599453;
}

// sin(x) and cos(x) for x in [0, pi/4], Taylor series to x^17 / x^16.
LIF_HD double det_sin(double x) {
  const double x2 = x * x;
  double p = 1.0 / 355687428096000.0;  // 1/17!
  p = p * x2 - 1.0 / 1307674368000.0;
  p = p * x2 + 1.0 / 6227020800.0;
  p = p * x2 - 1.0 / 39916800.0;
  p = p * x2 + 1.0 / 362880.0;
  p = p * x2 - 1.0 / 5040.0;
  p = p * x2 + 1.0 / 120.0;
  p = p * x2 - 1.0 / 6.0;
  p = p * x2 + 1.0;
  return x * p;
}

LIF_HD double det_cos(double x) {
  const double x2 = x * x;
  double p = 1.0 / 20922789888000.0;  // 1/16!
  p = p * x2 - 1.0 / 87178291200.0;
  p = p * x2 + 1.0 / 479001600.0;
  p = p * x2 - 1.0 / 3628800.0;
  p = p * x2 + 1.0 / 40320.0;
  p = p * x2 - 1.0 / 720.0;
  p = p * x2 + 1.0 / 24.0;
  p = p * x2 - 0.5;
  p = p * x2 + 1.0;
  return p;
}

// cos(2 pi k / 2^32) for a 32-bit k, reduced exactly in integers to an octant angle in [0, pi/4].
LIF_HD double det_cos_turns(uint32_t k) {
  const uint32_t octant = k >> 29;
  uint32_t f = k & 0x1fffffffu;              // position inside the octant, in units of 2^-32 turn
  if (octant & 1u) f = 0x20000000u - f;     // mirror odd octants: exact in integers
  const double phi = static_cast<double>(f) * (6.283185307179586 / 4294967296.0);
  // cos(2 pi k/2^32) by octant: 0:+c 1:+s 2:-s 3:-c 4:-c 5:-s 6:+s 7:+c  (c = cos phi, s = sin phi)
  const bool use_sin = ((octant + 1u) & 2u) != 0u;
  const bool negative = ((octant + 2u) & 4u) != 0u;
  const double v = use_sin ? det_sin(phi) : det_cos(phi);
  return negative ? -v : v;
}

// A standard normal for element `index` of the stream (seed, offset).
LIF_HD double philox_normal(uint64_t seed, uint64_t offset, uint64_t index) {
  at::Philox4_32 engine(seed, index, offset);
  const uint32_t r0 = engine();
  const uint32_t r1 = engine();
  // u1 in (0, 1]: never 0, so log is finite.
  const double u1 = (static_cast<double>(r0) + 1.0) * (1.0 / 4294967296.0);
  const double radius = sqrt(-2.0 * det_log(u1));
  return radius * det_cos_turns(r1);
}

// The noise term z[t] = noise_scale * N(0,1) in the compute type (noise_scale = noise_std*sqrt(dt)).
template <typename T>
LIF_HD T kernel_noise(T noise_scale, uint64_t seed, uint64_t offset, uint64_t index) {
  return noise_scale * static_cast<T>(philox_normal(seed, offset, index));
}

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
