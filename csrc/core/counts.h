// Spike counts kept for a backward as bits or bytes (SPEC §11, SpikeLinear): a float holding an
// integer count in [0, max_count] becomes 1 bit (max_count == 1; bit j of byte i is element
// 8i + j) or 1 byte, and back. The check that a value keeps that promise is made in the same pass
// as the packing, on the values the packing reads. Header-only: g++ and nvcc compile it alike.
#pragma once

#include <cstdint>
#include <type_traits>

#include "hd.h"

namespace lif {

constexpr int kMaxCount = 255;

// Bytes that hold `n` counts of at most `max_count`.
LIF_HD int64_t packed_bytes(int64_t n, int64_t max_count) {
  return max_count == 1 ? (n + 7) / 8 : n;
}

// The check's arithmetic for an input of type IT: exact for every count and every IT (a half
// value is a float exactly).
template <typename IT>
using CountMath = std::conditional_t<std::is_same_v<IT, double>, double, float>;

// x as a count (0 where x breaks the promise), and `bad` set where x is not an integer in
// [0, max_count] (NaN included: it fails both comparisons). F is float or double (a half value is
// read as float, exactly); branch-free, so that the CPU loops vectorise.
template <typename F>
LIF_HD uint32_t checked_count(F x, F max_count, uint32_t& bad) {
  const bool in = x >= F(0) && x <= max_count;
  const F kept = in ? x : F(0);
  const int32_t c = static_cast<int32_t>(kept);  // in range: truncation, never undefined
  bad |= static_cast<uint32_t>(!(in && static_cast<F>(c) == kept));
  return static_cast<uint32_t>(c);
}

// Byte i of the bits of `x` (its elements 8i .. 8i + count - 1, count <= 8), checked.
template <typename F, typename IT>
LIF_HD uint8_t pack_bits(const IT* x, int count, uint32_t& bad) {
  uint32_t byte = 0;
  for (int j = 0; j < count; ++j) {
    byte |= checked_count<F>(static_cast<F>(x[j]), F(1), bad) << j;
  }
  return static_cast<uint8_t>(byte);
}

// Element j of a packed byte, as 0 or 1 in OT (through int32: a conversion that vectorises).
template <typename OT>
LIF_HD OT unpack_bit(uint8_t byte, int j) {
  return static_cast<OT>(static_cast<float>(static_cast<int32_t>((byte >> j) & 1u)));
}

// A byte count in OT.
template <typename OT>
LIF_HD OT unpack_byte(uint8_t byte) {
  return static_cast<OT>(static_cast<float>(static_cast<int32_t>(byte)));
}

}  // namespace lif
