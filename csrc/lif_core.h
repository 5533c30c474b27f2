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

// PhiloxRNGEngine.h uses AT_ASSERT (in its host-only randn, parsed by nvcc's device pass too)
// without including its definition: include it first, so that nvcc compiles this header alone.
#include <c10/util/Exception.h>
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
// exp for the PeriodicExponential surrogate (a gradient: tolerance, not bits). On the host a
// short, branch-free float version the loops can vectorise (libm's expf is a call GCC will not
// vectorise without fast-math); on the GPU the CUDA math library's.
LIF_HD float host_expf(float x) {
  // exp(x) = 2^k * exp(r), k = round(x / ln 2), r = x - k ln 2 (two-part ln 2), |r| <= 0.35;
  // degree-7 Taylor polynomial for exp(r): relative error < 2e-7.
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float k = lif_floor(xc * 1.44269504f + 0.5f);
  float r = xc - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t ki = static_cast<int32_t>(k);
  float two_k;
  const uint32_t bits = static_cast<uint32_t>(ki + 127) << 23;
  std::memcpy(&two_k, &bits, sizeof two_k);
  const float y = p * two_k;
  return (x != x) ? x : (x < -87.0f ? 0.0f : (x > 88.0f ? INFINITY : y));
}

LIF_HD float lif_exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return host_expf(x);
#endif
}
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
// Per-neuron constants of the backward, computed once per neuron (not per step): the surrogates
// multiply by 1/thr instead of dividing (the backward is checked against tolerances, not bits; the
// spike count it recomputes still uses the true division of the forward).
template <typename T>
struct NeuronConsts {
  T alpha, thr, inv_thr, inv_thr2, pwl_lo, window, max_spikes;
};

template <typename T>
LIF_HD NeuronConsts<T> neuron_consts(T alpha, T thr, T window, T max_spikes) {
  NeuronConsts<T> c;
  c.alpha = alpha;
  c.thr = thr;
  c.inv_thr = T(1) / thr;
  c.inv_thr2 = T(1) / (thr * thr);
  c.pwl_lo = thr - window;  // rounded as the reference rounds `threshold - window`
  c.window = window;
  c.max_spikes = max_spikes;
  return c;
}

// Both give ds/du and ds/dthr for the upstream gradient a on s; the clamp to M is ignored except
// in PeriodicExponential's own definition of k.
template <int SURR, typename T>
struct SurrogateGrad;

// StepPWL: ds/du = m/thr, ds/dthr = -u*m/thr^2, m = (u >= thr - window). The mask multiplies (as
// the reference does) so that NaN/Inf propagate the same way.
template <typename T>
struct SurrogateGrad<kStepPWL, T> {
  LIF_HD static void apply(T a, T u, const NeuronConsts<T>& c, T& d_u, T& d_thr) {
    T m = (u >= c.pwl_lo) ? T(1) : T(0);
    d_u = (a * c.inv_thr) * m;
    d_thr = ((-u * a) * c.inv_thr2) * m;
  }
};

// PeriodicExponential: pdf(u) with vs = u - thr/2, k = min(floor(vs/thr), M-1), vp = vs - k*thr,
// vn = (u < thr) ? vs : vp, pdf = exp(-|vn - thr/2| / window) / thr.
template <typename T>
struct SurrogateGrad<kPeriodicExponential, T> {
  LIF_HD static void apply(T a, T u, const NeuronConsts<T>& c, T& d_u, T& d_thr) {
    T half = c.thr / T(2);
    T vs = u - half;
    T k = lif_floor(vs / c.thr);
    T kmax = c.max_spikes - T(1);
    k = (k > kmax) ? kmax : k;
    T vp = vs - k * c.thr;
    T vn = (u < c.thr) ? vs : vp;
    T pdf = lif_exp(-lif_abs(vn - half) / c.window) * c.inv_thr;
    d_u = a * pdf;
    d_thr = (-(a * pdf) * u) * c.inv_thr;
  }
};

// ---------------------------------------------------------------- in-kernel noise (SPEC §4)
// Standard normals from Philox4x32-10 (ATen's at::Philox4_32) keyed by (seed, offset). Element
// `index` (the flat (b,t,n) index) takes lane index % 4 of the Philox block `index / 4`, so a value
// depends only on (seed, offset, index): never on threads, tiling or device. Each block's four
// 32-bit words make two Box-Muller pairs, (w0, w1) -> lanes 0, 1 and (w2, w3) -> lanes 2, 3.
// Box-Muller is evaluated in float32 with +, -, *, / and sqrt only (IEEE correctly rounded on CPU
// and GPU alike, with contraction off): log and cos/sin are our own short series, so the CPU and
// CUDA kernels draw bit-identical noise. Error of a deviate ~1e-7 relative; |z| <= 5.77 (24-bit u).

LIF_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint32_t>(__float_as_uint(x));
#else
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
#endif
}

LIF_HD float bits_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float x;
  std::memcpy(&x, &b, sizeof x);
  return x;
#endif
}

// log(x) for normal positive floats: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
// log(m) = 2 atanh(r), r = (m-1)/(m+1), |r| < 0.172, by its odd series to r^11.
LIF_HD float det_log(float x) {
  const uint32_t b = float_bits(x);
  int32_t e = static_cast<int32_t>((b >> 23) & 0xffu) - 127;
  float m = bits_float((b & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float r = (m - 1.0f) / (m + 1.0f);
  const float r2 = r * r;
  float p = 1.0f / 11.0f;
  p = p * r2 + 1.0f / 9.0f;
  p = p * r2 + 1.0f / 7.0f;
  p = p * r2 + 1.0f / 5.0f;
  p = p * r2 + 1.0f / 3.0f;
  p = p * r2 + 1.0f;
  const float log_m = (2.0f * r) * p;
  return log_m + static_cast<float>(e) * 0.693147182f;
}

// sin(x) and cos(x) for x in [0, pi/4]: Taylor series to x^11 / x^10.
LIF_HD float det_sin(float x) {
  const float x2 = x * x;
  float p = -1.0f / 39916800.0f;
  p = p * x2 + 1.0f / 362880.0f;
  p = p * x2 - 1.0f / 5040.0f;
  p = p * x2 + 1.0f / 120.0f;
  p = p * x2 - 1.0f / 6.0f;
  p = p * x2 + 1.0f;
  return x * p;
}

LIF_HD float det_cos(float x) {
  const float x2 = x * x;
  float p = -1.0f / 3628800.0f;
  p = p * x2 + 1.0f / 40320.0f;
  p = p * x2 - 1.0f / 720.0f;
  p = p * x2 + 1.0f / 24.0f;
  p = p * x2 - 0.5f;
  p = p * x2 + 1.0f;
  return p;
}

// cos(2 pi k / 2^24) for k in [0, 2^24), reduced exactly in integers to an octant angle in
// [0, pi/4]. (sin is the same with k shifted back a quarter turn.)
LIF_HD float det_cos_turns(uint32_t k) {
  const uint32_t octant = (k >> 21) & 7u;
  uint32_t f = k & 0x1fffffu;             // position inside the octant, in 2^-24 turns
  f = (octant & 1u) ? 0x200000u - f : f;  // mirror odd octants: exact in integers
  const float phi = static_cast<float>(f) * (6.28318531f / 16777216.0f);
  // By octant: 0:+c 1:+s 2:-s 3:-c 4:-c 5:-s 6:+s 7:+c  (c = cos phi, s = sin phi)
  const bool use_sin = ((octant + 1u) & 2u) != 0u;
  const bool negative = ((octant + 2u) & 4u) != 0u;
  const float v = use_sin ? det_sin(phi) : det_cos(phi);
  return negative ? -v : v;
}

// Box-Muller from a pair of 32-bit words: radius from w_u, angle from w_a; the even lane of the
// pair takes the cosine, the odd lane the sine (= cos(x - pi/2), a quarter turn back in integers).
LIF_HD float bm_radius(uint32_t w_u) {
  const float u = static_cast<float>((w_u >> 8) + 1u) * (1.0f / 16777216.0f);  // (0, 1], exact
  return sqrtf(-2.0f * det_log(u));
}

LIF_HD uint32_t bm_turns(uint32_t w_a, bool odd) {
  return ((w_a >> 8) - (odd ? 0x400000u : 0u)) & 0xffffffu;
}

LIF_HD float box_muller(uint32_t w_u, uint32_t w_a, bool odd) {
  return bm_radius(w_u) * det_cos_turns(bm_turns(w_a, odd));
}

// Both lanes of a pair at once (the CPU's vectorised loop); the same values as box_muller.
LIF_HD void box_muller_pair(uint32_t w_u, uint32_t w_a, float& z_even, float& z_odd) {
  const float r = bm_radius(w_u);
  z_even = r * det_cos_turns(bm_turns(w_a, false));
  z_odd = r * det_cos_turns(bm_turns(w_a, true));
}

// The four words of Philox block `block` of the stream (seed, offset).
LIF_HD void philox_block(uint64_t seed, uint64_t offset, uint64_t block, uint32_t w[4]) {
  at::Philox4_32 engine(seed, block, offset);
  w[0] = engine();
  w[1] = engine();
  w[2] = engine();
  w[3] = engine();
}

// The standard normal of element `index` (one thread, one element: the CUDA kernel's way).
LIF_HD float philox_normal(uint64_t seed, uint64_t offset, uint64_t index) {
  uint32_t w[4];
  philox_block(seed, offset, index >> 2, w);
  const uint32_t lane = static_cast<uint32_t>(index & 3u);
  return box_muller(w[lane & 2u], w[(lane & 2u) + 1u], (lane & 1u) != 0u);
}

// The noise term z = noise_scale * N(0,1), in the compute type (noise_scale = noise_std*sqrt(dt)).
template <typename T>
LIF_HD T scale_noise(T noise_scale, float normal) {
  return noise_scale * static_cast<T>(normal);
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
  T a = gs - Wt * c.thr;  // dL/ds[t]: direct, plus through the reset w = u - s*thr
  T d_u, d_thr;
  SurrogateGrad<SURR, T>::apply(a, u, c, d_u, d_thr);
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

// dL/dtau from dL/dalpha, alpha = exp(reciprocal(tau) * (-dt)) (as torch computes it): the chain
// rule in the order autograd of that expression takes, ((g * alpha) * (-dt)) * -(r * r), r = 1/tau.
template <typename T>
LIF_HD T tau_grad(T g_alpha, T alpha, T tau, T dt) {
  const T r = T(1) / tau;
  const T e = g_alpha * alpha;
  const T m = e * (-dt);
  return m * (-(r * r));
}

// w[t-1] from the saved u[t-1]: the backward recomputes it instead of saving it (SPEC §3).
template <typename T>
LIF_HD T recompute_w(T u, T thr, T max_spikes) {
  return reset(u, spikes(u, thr, max_spikes), thr);
}

// ---------------------------------------------------------------- synaptic currents (SPEC §7)
// Rockpool's LIFTorch, leak_mode "taus": S synapses per neuron, each with its own current i[k] and
// decay beta = exp(-dt/tau_syn). Per step, for neuron n (each operation rounded, in this order):
//   a[k] = (i[k] + x[k]) [+ r[k]]      the current before its decay ("a" is what backward needs)
//   i[k] = a[k] * beta[k]
//   u    = (((w * alpha) + sum_k i[k]) [+ z]) + bias
// then spikes() and reset() as above. r is the recurrent current linear(s_prev, w_rec.T), computed
// by ATen outside these functions.

// a = i + x: the synaptic current after its input, before the decay.
template <typename T>
LIF_HD T syn_input(T i, T x) {
  return i + x;
}

// a = (i + x) + r, with the recurrent current r.
template <typename T>
LIF_HD T syn_input(T i, T x, T r) {
  T a = i + x;
  return a + r;
}

// i = a * beta.
template <typename T>
LIF_HD T syn_decay(T a, T beta) {
  return a * beta;
}

// u = (((w * alpha) + isum) + z) + bias (Rockpool multiplies the state by its decay in place).
template <typename T>
LIF_HD T syn_membrane(T alpha, T w_prev, T isum, T noise, T bias) {
  T u = w_prev * alpha;
  u = u + isum;
  u = u + noise;
  return u + bias;
}

// The same without a noise term (equal up to the sign of a zero, as for SPEC §1).
template <typename T>
LIF_HD T syn_membrane(T alpha, T w_prev, T isum, T bias) {
  T u = w_prev * alpha;
  u = u + isum;
  return u + bias;
}

// sum_k i[k], k = 0..S-1, in the order in which torch.sum(dim=-1) adds one contiguous row of S
// values, so that u has Rockpool's bits. Two orders, pinned by tests/test_synaptic.py
// (test_synaptic_sum_order_*) against torch.sum for S = 1..40 and larger:
//
// On the CPU: ATen's cascade_sum (aten/src/ATen/native/cpu/SumKernel.cpp), whose build for 32-byte
// vectors runs on every x86 CPU (the sum kernels are not dispatched to AVX-512): W = 32 /
// sizeof(T) lanes (8 floats, 4 doubles). A row shorter than W is read as rows of 4 columns, 4
// running sums (one per column), the leftover values added to the first, then the 4 sums added in
// column order. A row of W or more is the same over W-lane vectors (nv = S / W of them), the
// values past the last whole vector summed first, then the W lanes of the vector sum in order.
// Runs of 16 rows are folded into up to 4 levels of partial sums (the cascade), which matters
// from S = 64 W on. Every sum starts from +0 and the result is added to a +0 output.
//
// On CUDA: ATen's gpu reduce (aten/src/ATen/native/cuda/Reduce.cuh) for a contiguous inner row
// of S <= 128 values: P = min(last_pow2(S), 32) lanes, lane l reading elements l, l+P, l+2P, ...
// into 4 accumulators in turn, added ((a0 + a1) + a2) + a3; then lane values combined by the warp
// shuffle tree, offsets 1, 2, 4, ... . Exact for S < 64 (beyond, P can exceed 32 when B*N < 16,
// and S > 128 vectorises the loads: then the sum is still a correct sum, its last bit may differ).
// Derived from the source and host-tested; not yet checked on a GPU.

// ATen's running sums over rows: `items` items of L lanes at x + item * L, read as rows of 4
// items; acc[c] (L lanes) sums column c, in levels of 16 rows (multi_row_sum), then the leftover
// items go to acc[0] and acc[0] += acc[1], acc[2], acc[3] (row_sum).
template <typename T, int L>
LIF_HD void aten_row_sum(const T* x, int64_t items, T out[L]) {
  constexpr int kLevels = 4;
  const int64_t rows = items / 4;
  // level_power = max(4, ceil(log2(rows)) / 4), as ATen's CeilLog2 (1 for rows <= 2).
  int64_t log2 = 1;
  while ((int64_t(1) << log2) < rows) ++log2;
  const int64_t power = log2 / kLevels > 4 ? log2 / kLevels : 4;
  const int64_t step = int64_t(1) << power;
  const int64_t mask = step - 1;
  T acc[kLevels][4][L];
  for (int j = 0; j < kLevels; ++j)
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < L; ++l) acc[j][c][l] = T(0);
  int64_t i = 0;
  while (i + step <= rows) {
    for (int64_t j = 0; j < step; ++j, ++i)
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < L; ++l) acc[0][c][l] = acc[0][c][l] + x[(i * 4 + c) * L + l];
    for (int j = 1; j < kLevels; ++j) {
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < L; ++l) {
          acc[j][c][l] = acc[j][c][l] + acc[j - 1][c][l];
          acc[j - 1][c][l] = T(0);
        }
      if ((i & (mask << (j * power))) != 0) break;
    }
  }
  for (; i < rows; ++i)
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < L; ++l) acc[0][c][l] = acc[0][c][l] + x[(i * 4 + c) * L + l];
  for (int j = 1; j < kLevels; ++j)
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < L; ++l) acc[0][c][l] = acc[0][c][l] + acc[j][c][l];
  for (int64_t it = rows * 4; it < items; ++it)
    for (int l = 0; l < L; ++l) acc[0][0][l] = acc[0][0][l] + x[it * L + l];
  for (int c = 1; c < 4; ++c)
    for (int l = 0; l < L; ++l) acc[0][0][l] = acc[0][0][l] + acc[0][c][l];
  for (int l = 0; l < L; ++l) out[l] = acc[0][0][l];
}

// torch.sum of a contiguous row on the CPU, any S >= 0.
template <typename T>
LIF_HD T cpu_torch_sum(const T* x, int64_t S) {
  constexpr int W = 32 / static_cast<int>(sizeof(T));
  T sum;
  if (S < W) {
    T one[1];
    aten_row_sum<T, 1>(x, S, one);
    sum = one[0];
  } else {
    const int64_t nv = S / W;
    T lanes[W];
    aten_row_sum<T, W>(x, nv, lanes);
    sum = T(0);
    for (int64_t k = nv * W; k < S; ++k) sum = sum + x[k];
    for (int l = 0; l < W; ++l) sum = sum + lanes[l];
  }
  return T(0) + sum;
}

// torch.sum of a contiguous row on CUDA (see above), any S >= 0.
template <typename T>
LIF_HD T cuda_torch_sum(const T* x, int64_t S) {
  if (S <= 0) return T(0);
  int P = 1;
  while (P * 2 <= S && P < 32) P *= 2;
  T lane[32];
  for (int l = 0; l < P; ++l) {
    T acc[4] = {T(0), T(0), T(0), T(0)};
    int j = 0;
    for (int64_t idx = l; idx < S; idx += P, ++j) acc[j & 3] = acc[j & 3] + x[idx];
    lane[l] = ((acc[0] + acc[1]) + acc[2]) + acc[3];
  }
  for (int off = 1; off < P; off <<= 1)
    for (int l = 0; l + off < P; ++l) lane[l] = lane[l] + lane[l + off];
  return lane[0];
}

// The same sums for small S known at compile time, without the additions of +0 the general code
// makes: those change at most the sign of a zero, which the final +0 then makes +0 as torch's is.
// SUM_ORDER selects the device's order; S_FIXED == 0 means S is only known at run time.
enum SumOrder : int { kCpuSum = 0, kCudaSum = 1 };

template <int SUM_ORDER, int S_FIXED, typename T>
LIF_HD T synaptic_sum(const T* i, int64_t S) {
  if constexpr (S_FIXED == 1) {
    return T(0) + i[0];
  } else if constexpr (S_FIXED == 2) {
    return T(0) + (i[0] + i[1]);
  } else if constexpr (S_FIXED == 4 && SUM_ORDER == kCpuSum) {
    return T(0) + (((i[0] + i[1]) + i[2]) + i[3]);
  } else if constexpr (S_FIXED == 4 && SUM_ORDER == kCudaSum) {
    return T(0) + ((i[0] + i[1]) + (i[2] + i[3]));
  } else if constexpr (SUM_ORDER == kCpuSum) {
    return cpu_torch_sum(i, S_FIXED ? S_FIXED : S);
  } else {
    return cuda_torch_sum(i, S_FIXED ? S_FIXED : S);
  }
}

// Backward of one synapse, reverse step t (SPEC §7). U = dL/du[t]; I (in: dL/di[t] from step t+1
// and the record, out: dL/di[t-1]); a = i[t-1] + x[t] (+ r[t]), saved by the forward. Accumulates
// dL/dbeta; returns dL/da[t], which is dL/dx[t] and dL/dr[t].
template <typename T>
LIF_HD T syn_step_backward(T U, T a, T beta, T& I, T& g_beta) {
  const T gi = I + U;  // dL/di[t]: through u[t] (the sum), and into i[t+1]
  const T ga = gi * beta;
  g_beta = g_beta + gi * a;
  I = ga;  // i[t-1] enters a[t] with weight 1
  return ga;
}

}  // namespace lif
