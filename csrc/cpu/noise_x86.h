// The CPU tile's in-kernel noise draw (core/philox.h noise_rows: block q of Philox4x32-10 for each
// neuron of the tile, then Box-Muller), built for the best instruction set the CPU has, picked
// once at run time: AVX-512, AVX2, or the portable loops. The Philox rounds' 32x32->64-bit
// products are written out with intrinsics (each as two widening multiplies of the even and the
// odd lanes, then blends: no lane-crossing shuffle); GCC's own vectorisation of the portable loop
// widens through lane-crossing permutes, which are slow. Box-Muller is core/philox.h's loop,
// vectorised by GCC for each target. Integer arithmetic and IEEE operations without contraction:
// every variant gives the same bits, which tests/test_noise.py checks against lif_cuda/noise.py
// for each variant the CPU has (LIF_CPU_NOISE_ISA=portable|avx2|avx512 forces a lower one).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../core/args.h"
#include "../core/philox.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LIF_NO_CLONES)
#define LIF_NOISE_X86 1
#include <immintrin.h>
#endif

namespace lif {
namespace cpu {

template <int64_t kStride, typename T>
using NoiseRowsFn = void (*)(uint64_t, uint64_t, uint64_t, uint64_t, int64_t, T,
                             uint32_t (*)[kStride], T (*)[kStride]);

template <int64_t kStride, typename T>
void noise_rows_portable(uint64_t seed, uint64_t offset, uint64_t sub0, uint64_t q, int64_t len,
                         T noise_scale, uint32_t (*words)[kStride], T (*z)[kStride]) {
  noise_rows<kStride>(seed, offset, sub0, q, len, noise_scale, words, z);
}

#if defined(LIF_NOISE_X86)

// Whether sub0 + n (n < len) carries out of its low 32-bit word: then philox_tail, which carries
// it, draws the whole tile's words (only where B*N comes near 2^32).
inline bool subsequence_carries(uint64_t sub0, int64_t len) {
  return (sub0 & 0xffffffffull) + static_cast<uint64_t>(len) > 0xffffffffull;
}

// What the neurons of a tile share in block q: the key schedule, and -- the counter's position
// words and the subsequence's high word being the same for all of them (no carry) -- half of the
// first two rounds (philox_rounds' operations, regrouped: the same words). A vector loop then
// starts from the subsequence's low words c2:
//   round 0: c0 = hi(B*c2) ^ x0,  c1 = lo(B*c2)
//   round 1: c0' = c1 ^ x1,       c2 = hi(A*c0) ^ y1,  c3 = lo(A*c0)
//   round 2: c0 = hi(B*c2) ^ x2,  c1 = lo(B*c2),  c2 = hi(A*c0') ^ c3 ^ key1[2],  c3 = lo(A*c0')
//   rounds 3..9 as philox_rounds.
struct PhiloxShared {
  uint32_t x0, x1, y1, x2;
  uint32_t key0[10], key1[10];
};

inline PhiloxShared philox_shared(uint64_t seed, uint64_t position, uint64_t sub0) {
  PhiloxShared p;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int i = 0; i < 10; ++i, k0 += kPhiloxKeyA, k1 += kPhiloxKeyB) {
    p.key0[i] = k0;
    p.key1[i] = k1;
  }
  const uint32_t p0 = static_cast<uint32_t>(position), p1 = static_cast<uint32_t>(position >> 32);
  const uint32_t s1 = static_cast<uint32_t>(sub0 >> 32);
  // Round 0 on the shared words: c2 and c3 after it are shared.
  const uint32_t c2 = mulhi32(kPhiloxMulA, p0) ^ s1 ^ p.key1[0];
  const uint32_t c3 = kPhiloxMulA * p0;
  p.x0 = p1 ^ p.key0[0];
  // Round 1: the product of c2 is shared.
  p.x1 = mulhi32(kPhiloxMulB, c2) ^ p.key0[1];
  p.y1 = c3 ^ p.key1[1];
  // Round 2: c1 (round 1's lo(B*c2)) is shared.
  p.x2 = (kPhiloxMulB * c2) ^ p.key0[2];
  return p;
}

// The words of the last (< one vector) neurons, one at a time.
template <int64_t kStride>
LIF_HD void philox_tail(uint64_t seed, uint64_t position, uint64_t sub0, int64_t n, int64_t len,
                        uint32_t (*words)[kStride]) {
  for (; n < len; ++n) {
    uint32_t c0 = static_cast<uint32_t>(position), c1 = static_cast<uint32_t>(position >> 32);
    const uint64_t sub = sub0 + static_cast<uint64_t>(n);  // with its carry into the high word
    uint32_t c2 = static_cast<uint32_t>(sub), c3 = static_cast<uint32_t>(sub >> 32);
    philox_rounds(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    words[0][n] = c0;
    words[1][n] = c1;
    words[2][n] = c2;
    words[3][n] = c3;
  }
}

// hi and lo halves of m * x for each 32-bit lane (m broadcast).
__attribute__((target("avx2"), always_inline)) inline void mulhilo(__m256i m, __m256i x,
                                                                   __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(x, m);                        // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);  // lanes 1, 3, 5, 7
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xaa);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xaa);
}

__attribute__((target("avx512f"), always_inline)) inline void mulhilo(__m512i m, __m512i x,
                                                                      __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(x, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
  lo = _mm512_mask_blend_epi32(0xaaaa, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(0xaaaa, _mm512_srli_epi64(even, 32), odd);
}

__attribute__((target("avx2"), always_inline)) inline __m256i splat(__m256i, uint32_t x) {
  return _mm256_set1_epi32(static_cast<int32_t>(x));
}
__attribute__((target("avx512f"), always_inline)) inline __m512i splat(__m512i, uint32_t x) {
  return _mm512_set1_epi32(static_cast<int32_t>(x));
}
__attribute__((target("avx2"), always_inline)) inline __m256i xor3(__m256i a, __m256i b,
                                                                   __m256i c) {
  return _mm256_xor_si256(_mm256_xor_si256(a, b), c);
}
__attribute__((target("avx512f"), always_inline)) inline __m512i xor3(__m512i a, __m512i b,
                                                                      __m512i c) {
  return _mm512_ternarylogic_epi32(a, b, c, 0x96);
}

// Eight neurons a vector, from their counters' low subsequence words c2.
template <int64_t kStride, typename T>
__attribute__((target("avx2"))) void noise_rows_avx2(uint64_t seed, uint64_t offset, uint64_t sub0,
                                                     uint64_t q, int64_t len, T noise_scale,
                                                     uint32_t (*words)[kStride], T (*z)[kStride]) {
  int64_t n = 0;
  const uint64_t position = offset + q;
  if (!subsequence_carries(sub0, len)) {
    const PhiloxShared sh = philox_shared(seed, position, sub0);
    const __m256i v{};  // the vector type, for the overloads
    const __m256i mul_a = splat(v, kPhiloxMulA), mul_b = splat(v, kPhiloxMulB);
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (; n + 8 <= len; n += 8) {
      __m256i c0, c1, c2, c3, hi0, lo0, hi1, lo1;
      c2 = _mm256_add_epi32(splat(v, static_cast<uint32_t>(sub0 + n)), iota);
      mulhilo(mul_b, c2, hi1, c1);
      c0 = _mm256_xor_si256(hi1, splat(v, sh.x0));
      mulhilo(mul_a, c0, hi0, c3);
      c0 = _mm256_xor_si256(c1, splat(v, sh.x1));
      c2 = _mm256_xor_si256(hi0, splat(v, sh.y1));
      mulhilo(mul_a, c0, hi0, lo0);
      mulhilo(mul_b, c2, hi1, c1);
      c0 = _mm256_xor_si256(hi1, splat(v, sh.x2));
      c2 = xor3(hi0, c3, splat(v, sh.key1[2]));
      c3 = lo0;
#pragma GCC unroll 7
      for (int i = 3; i < 10; ++i) {
        mulhilo(mul_a, c0, hi0, lo0);
        mulhilo(mul_b, c2, hi1, lo1);
        c0 = xor3(hi1, c1, splat(v, sh.key0[i]));
        c2 = xor3(hi0, c3, splat(v, sh.key1[i]));
        c1 = lo1;
        c3 = lo0;
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words[0] + n), c0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words[1] + n), c1);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words[2] + n), c2);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words[3] + n), c3);
    }
  }
  philox_tail<kStride>(seed, position, sub0, n, len, words);
  box_muller_rows<kStride>(len, noise_scale, words, z);
}

// Sixteen neurons a vector: the same operations as noise_rows_avx2's.
template <int64_t kStride, typename T>
__attribute__((target("avx512f"))) void noise_rows_avx512(uint64_t seed, uint64_t offset,
                                                          uint64_t sub0, uint64_t q, int64_t len,
                                                          T noise_scale, uint32_t (*words)[kStride],
                                                          T (*z)[kStride]) {
  int64_t n = 0;
  const uint64_t position = offset + q;
  if (!subsequence_carries(sub0, len)) {
    const PhiloxShared sh = philox_shared(seed, position, sub0);
    const __m512i v{};
    const __m512i mul_a = splat(v, kPhiloxMulA), mul_b = splat(v, kPhiloxMulB);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; n + 16 <= len; n += 16) {
      __m512i c0, c1, c2, c3, hi0, lo0, hi1, lo1;
      c2 = _mm512_add_epi32(splat(v, static_cast<uint32_t>(sub0 + n)), iota);
      mulhilo(mul_b, c2, hi1, c1);
      c0 = _mm512_xor_si512(hi1, splat(v, sh.x0));
      mulhilo(mul_a, c0, hi0, c3);
      c0 = _mm512_xor_si512(c1, splat(v, sh.x1));
      c2 = _mm512_xor_si512(hi0, splat(v, sh.y1));
      mulhilo(mul_a, c0, hi0, lo0);
      mulhilo(mul_b, c2, hi1, c1);
      c0 = _mm512_xor_si512(hi1, splat(v, sh.x2));
      c2 = xor3(hi0, c3, splat(v, sh.key1[2]));
      c3 = lo0;
#pragma GCC unroll 7
      for (int i = 3; i < 10; ++i) {
        mulhilo(mul_a, c0, hi0, lo0);
        mulhilo(mul_b, c2, hi1, lo1);
        c0 = xor3(hi1, c1, splat(v, sh.key0[i]));
        c2 = xor3(hi0, c3, splat(v, sh.key1[i]));
        c1 = lo1;
        c3 = lo0;
      }
      _mm512_storeu_si512(words[0] + n, c0);
      _mm512_storeu_si512(words[1] + n, c1);
      _mm512_storeu_si512(words[2] + n, c2);
      _mm512_storeu_si512(words[3] + n, c3);
    }
  }
  philox_tail<kStride>(seed, position, sub0, n, len, words);
  box_muller_rows<kStride>(len, noise_scale, words, z);
}

#endif  // LIF_NOISE_X86

// The instruction set the noise rows use: the best the CPU has, or a lower one named by
// LIF_CPU_NOISE_ISA (portable, avx2, avx512; tests use it to check every variant's bits).
inline const char* noise_rows_isa() {
  static const char* isa = [] {
    const char* best = "portable";
#if defined(LIF_NOISE_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) best = "avx2";
    if (__builtin_cpu_supports("avx512f")) best = "avx512";
#endif
    const char* want = std::getenv("LIF_CPU_NOISE_ISA");
    if (want == nullptr || std::strcmp(want, best) == 0) return best;
    if (std::strcmp(want, "portable") == 0) return "portable";
    if (std::strcmp(want, "avx2") == 0 && std::strcmp(best, "avx512") == 0) return "avx2";
    return best;  // a level the CPU lacks (or an unknown name): the best it has
  }();
  return isa;
}

// Block q's noise terms for the tile's neurons (core/philox.h noise_rows), by noise_rows_isa().
template <int64_t kStride, typename T>
inline void draw_noise_rows(uint64_t seed, uint64_t offset, uint64_t sub0, uint64_t q, int64_t len,
                            T noise_scale, uint32_t (*words)[kStride], T (*z)[kStride]) {
  static const NoiseRowsFn<kStride, T> fn = [] {
#if defined(LIF_NOISE_X86)
    const char* isa = noise_rows_isa();
    if (std::strcmp(isa, "avx512") == 0) return &noise_rows_avx512<kStride, T>;
    if (std::strcmp(isa, "avx2") == 0) return &noise_rows_avx2<kStride, T>;
#endif
    return &noise_rows_portable<kStride, T>;
  }();
  fn(seed, offset, sub0, q, len, noise_scale, words, z);
}

// A forward tile's noise terms, step by step (SPEC §4), for every model's tile: the noise tensor's
// row, or the in-kernel stream, one Philox block per neuron every four steps (vectorised over the
// neurons) giving this step's terms and the next three's; nullptr without noise. The tile's
// neurons are consecutive, its first one's Philox subsequence `subseq` (b * N + n0).
template <typename T, int NOISE, int64_t kMaxLen>
struct TileNoise {
  static constexpr int64_t kRows = NOISE == kNoiseKernel ? kMaxLen : 1;
  const T* tensor;  // the row (b, t=0, n0) of the noise tensor, or nullptr
  uint64_t seed, offset, subseq;
  T scale;
  int64_t len;
  T z_rows[4][kRows];
  uint32_t words[4][kRows];

  // The rows are left uninitialised: step() draws them before they are read.
  TileNoise(const T* tensor_, uint64_t seed_, uint64_t offset_, uint64_t subseq_, T scale_,
            int64_t len_)
      : tensor(tensor_), seed(seed_), offset(offset_), subseq(subseq_), scale(scale_), len(len_) {}

  // Step t's terms; `off` its offset from the row's start.
  const T* step(int64_t t, int64_t off) {
    if constexpr (NOISE == kNoiseTensor) return tensor + off;
    if constexpr (NOISE == kNoiseKernel) {
      if ((t & 3) == 0) {
        draw_noise_rows<kRows>(seed, offset, subseq, static_cast<uint64_t>(t >> 2), len, scale,
                               words, z_rows);
      }
      return z_rows[t & 3];
    }
    return nullptr;
  }
};

}  // namespace cpu
}  // namespace lif
