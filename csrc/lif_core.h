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
// Standard normals from Philox4x32-10 (the generator of ATen's at::Philox4_32 and of torch's CUDA
// kernels) keyed by (seed, offset). The counter follows the convention of torch's own Philox
// kernels (subsequence per thread, position advanced per call): the element (b, t, n) of a (B,T,N)
// call is lane t % 4 of the block with
//   key = seed, subsequence = b * N + n (the counter's high 64 bits),
//   position = offset + t / 4, modulo 2^64 (its low 64 bits),
// i.e. at::Philox4_32(seed, b * N + n, offset + t / 4)'s first four words. One block serves four
// consecutive steps of one neuron: a CUDA thread (one neuron) draws each block once and spends its
// words over four steps, and the CPU tile draws, every four steps, one block per neuron of the
// tile in a loop over the neurons that vectorises. A value depends only on (seed, offset, b*N+n,
// t): never on threads, tiling, T or device. Each block's words make two Box-Muller pairs: (w0, w1)
// -> steps 4q, 4q+1 and (w2, w3) -> steps 4q+2, 4q+3; the even step of a pair takes the cosine, the
// odd one the sine. Box-Muller is evaluated in float32 with +, -, *, / and sqrt only (IEEE
// correctly rounded on CPU and GPU alike, with contraction off): log and cos/sin are our own short
// series, so the CPU and CUDA kernels draw bit-identical noise. Error of a deviate ~1e-7 relative;
// |z| <= 5.77 (24-bit u). lif_cuda/noise.py writes the same stream out in NumPy.

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

// Box-Muller radius sqrt(-2 log u) from the pair's first word, u in (0, 1] exact.
LIF_HD float bm_radius(uint32_t w_u) {
  const float u = static_cast<float>((w_u >> 8) + 1u) * (1.0f / 16777216.0f);  // (0, 1], exact
  return sqrtf(-2.0f * det_log(u));
}

// Both steps of a Box-Muller pair: radius from w_u, angle theta = 2 pi k / 2^24 with k = w_a >> 8;
// the even step takes r cos(theta), the odd one r sin(theta) = r cos(theta - pi/2). Each cosine is
// evaluated in its octant: phi in [0, pi/4] reduced exactly in integers (odd octants mirrored),
// then +-cos(phi) or +-sin(phi) by octant: 0:+c 1:+s 2:-s 3:-c 4:-c 5:-s 6:+s 7:+c. The quarter
// turn back moves two octants and keeps phi, so one phi, one sine and one cosine serve both steps.
LIF_HD void box_muller_pair(uint32_t w_u, uint32_t w_a, float& z_even, float& z_odd) {
  const float r = bm_radius(w_u);
  const uint32_t k = w_a >> 8;            // [0, 2^24)
  const uint32_t octant = k >> 21;        // of theta; theta - pi/2 is in octant - 2 (mod 8)
  uint32_t f = k & 0x1fffffu;             // position inside the octant, in 2^-24 turns
  f = (octant & 1u) ? 0x200000u - f : f;  // mirror odd octants: exact in integers
  const float phi = static_cast<float>(f) * (6.28318531f / 16777216.0f);
  const float c = det_cos(phi);
  const float s = det_sin(phi);
  const float v_even = (((octant + 1u) & 2u) != 0u) ? s : c;
  const float v_odd = (((octant + 7u) & 2u) != 0u) ? s : c;
  z_even = r * ((((octant + 2u) & 4u) != 0u) ? -v_even : v_even);
  z_odd = r * (((octant & 4u) != 0u) ? -v_odd : v_odd);
}

// Philox4x32-10's constants (Salmon et al. 2011; at::Philox4_32's kPhiloxSA/SB, kPhilox10A/B).
constexpr uint32_t kPhiloxMulA = 0xD2511F53u;
constexpr uint32_t kPhiloxMulB = 0xCD9E8D57u;
constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;

// The high half of a 32x32-bit product: __umulhi on the GPU; on the host a 64-bit product, which
// GCC vectorises as widening multiplies (vpmuludq) in the CPU's loop over the neurons.
LIF_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// The ten rounds, in place on the counter words (c0..c3) under the key (k0, k1): plain integer
// operations, no array and no dynamic index, so a GPU thread keeps them in registers and the
// host's neuron loop vectorises.
LIF_HD void philox_rounds(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0,
                          uint32_t k1) {
#if defined(__CUDACC__)
#pragma unroll
#else
#pragma GCC unroll 10
#endif
  for (int i = 0; i < 10; ++i) {
    const uint32_t hi0 = mulhi32(kPhiloxMulA, c0);
    const uint32_t lo0 = kPhiloxMulA * c0;
    const uint32_t hi1 = mulhi32(kPhiloxMulB, c2);
    const uint32_t lo1 = kPhiloxMulB * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
}

// The standard normals of one block: steps 4q .. 4q+3 of one neuron (subsequence b*N + n).
struct Normals4 {
  float z0, z1, z2, z3;
};

// One neuron's block q (the CUDA thread's way: one call per four steps).
LIF_HD Normals4 philox_normals4(uint64_t seed, uint64_t offset, uint64_t subsequence, uint64_t q) {
  const uint64_t position = offset + q;  // modulo 2^64
  uint32_t c0 = static_cast<uint32_t>(position), c1 = static_cast<uint32_t>(position >> 32);
  uint32_t c2 = static_cast<uint32_t>(subsequence), c3 = static_cast<uint32_t>(subsequence >> 32);
  philox_rounds(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  Normals4 z;
  box_muller_pair(c0, c1, z.z0, z.z1);
  box_muller_pair(c2, c3, z.z2, z.z3);
  return z;
}

// The noise term z = noise_scale * N(0,1), in the compute type (noise_scale = noise_std*sqrt(dt)).
template <typename T>
LIF_HD T scale_noise(T noise_scale, float normal) {
  return noise_scale * static_cast<T>(normal);
}

// The CPU tile's draw, in two loops over `len` consecutive subsequences sub0, sub0 + 1, ... (the
// neurons of one batch row), each vectorised: philox_rows writes block q's words w_k of neuron n
// to words[k][n] (the 64-bit subsequence carried in 32-bit halves); box_muller_rows turns them
// into the scaled noise terms z[k][n] of steps 4q + k. The values are philox_normals4's.
// (csrc/cpu/noise_rows_x86.h builds them for AVX2 and AVX-512, with the Philox products written
// out: GCC's own vectorisation of the 32x32->64-bit products shuffles across lanes.)
template <int64_t kStride>
LIF_HD void philox_rows(uint64_t seed, uint64_t offset, uint64_t sub0, uint64_t q, int64_t len,
                        uint32_t (*__restrict__ words)[kStride]) {
  const uint64_t position = offset + q;
  const uint32_t p0 = static_cast<uint32_t>(position), p1 = static_cast<uint32_t>(position >> 32);
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const uint32_t s0 = static_cast<uint32_t>(sub0), s1 = static_cast<uint32_t>(sub0 >> 32);
  for (int64_t n = 0; n < len; ++n) {
    uint32_t c0 = p0, c1 = p1;
    uint32_t c2 = s0 + static_cast<uint32_t>(n);
    uint32_t c3 = s1 + (c2 < s0 ? 1u : 0u);  // the carry of sub0 + n (len < 2^32)
    philox_rounds(c0, c1, c2, c3, k0, k1);
    words[0][n] = c0;
    words[1][n] = c1;
    words[2][n] = c2;
    words[3][n] = c3;
  }
}

template <int64_t kStride, typename T>
LIF_HD void box_muller_rows(int64_t len, T noise_scale,
                            const uint32_t (*__restrict__ words)[kStride],
                            T (*__restrict__ z)[kStride]) {
  for (int64_t n = 0; n < len; ++n) {
    float a, b, c, d;
    box_muller_pair(words[0][n], words[1][n], a, b);
    box_muller_pair(words[2][n], words[3][n], c, d);
    z[0][n] = scale_noise(noise_scale, a);
    z[1][n] = scale_noise(noise_scale, b);
    z[2][n] = scale_noise(noise_scale, c);
    z[3][n] = scale_noise(noise_scale, d);
  }
}

template <int64_t kStride, typename T>
LIF_HD void noise_rows(uint64_t seed, uint64_t offset, uint64_t sub0, uint64_t q, int64_t len,
                       T noise_scale, uint32_t (*__restrict__ words)[kStride],
                       T (*__restrict__ z)[kStride]) {
  philox_rows<kStride>(seed, offset, sub0, q, len, words);
  box_muller_rows<kStride>(len, noise_scale, words, z);
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

// The membrane step is the LIF op's step_forward with the synapse sum as its input: Rockpool
// writes w * alpha, the same bits as alpha * w (IEEE multiplication commutes; alpha is finite).

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
