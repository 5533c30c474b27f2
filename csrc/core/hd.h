// Host+device basics of the kernel math: the LIF_HD qualifier and the few math functions whose
// host and device versions differ. Header-only, no tensors: g++ and nvcc compile it alike.
//
// Bit-exactness (SPEC §1): the math is written as separate, explicitly ordered IEEE operations,
// compiled with -ffp-contract=off (g++) / -fmad=false (nvcc) and never with fast-math.
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

}  // namespace lif
