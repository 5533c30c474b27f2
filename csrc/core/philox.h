// In-kernel noise (SPEC §4): Philox4x32-10 and Box-Muller on +, -, *, /, sqrt only, so that the
// CPU, CUDA and NumPy (lif_cuda/noise.py) streams are bit-identical.
#pragma once

#include "hd.h"

namespace lif {

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

}  // namespace lif
