// The window mask (SPEC §11): what a StepPWL backward needs of u[t] when neither the time constant
// nor the threshold needs a gradient, m[t] = (u[t] >= thr - window), kept as one bit per element
// instead of u. Layout: (B, ceil(T/32), N) 32-bit words; bit t % 32 of word (b, t / 32, n) is
// m[b, t, n]. A thread or tile builds a word over 32 steps in a register and stores it once: the
// stores of one word index are contiguous in n, as the sequences' are.
#pragma once

#include <cstdint>

#include "hd.h"

namespace lif {

constexpr int kMaskBits = 32;

// What a forward saves for its backward: nothing, u, or the window mask (SAVE_SWITCH, switch.h).
enum Save : int { kSaveNone = 0, kSaveU = 1, kSaveMask = 2 };

LIF_HD int64_t mask_words(int64_t steps) { return (steps + kMaskBits - 1) / kMaskBits; }

// m[t] in its place within step t's word. `pwl_lo` = thr - window, rounded as NeuronConsts does.
template <typename T>
LIF_HD uint32_t mask_bit(T u, T pwl_lo, int64_t t) {
  return static_cast<uint32_t>(u >= pwl_lo) << (t % kMaskBits);
}

// Whether step t's word is complete after step t (the last of its 32 steps, or the row's last).
LIF_HD bool mask_word_ends(int64_t t, int64_t steps) {
  return t % kMaskBits == kMaskBits - 1 || t == steps - 1;
}

LIF_HD bool mask_at(uint32_t word, int64_t t) { return (word >> (t % kMaskBits)) & 1u; }

// The mask bit at `shift` (t % 32) as 0 or 1 in T, through int32 (a conversion that vectorises).
template <typename T>
LIF_HD T mask_value(uint32_t word, int shift) {
  return static_cast<T>(static_cast<int32_t>((word >> shift) & 1u));
}

}  // namespace lif
