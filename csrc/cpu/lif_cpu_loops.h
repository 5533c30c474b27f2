// What the CPU kernels of both models (lif_kernel_cpu.cpp: SPEC §1-§3, synaptic_kernel_cpu.cpp:
// SPEC §7) share in how they arrange the work: the per-ISA clones of the inner loops, the tile
// width and grain of at::parallel_for, and a tile's row of a per-neuron parameter (their in-kernel
// noise rows are noise_rows_x86.h's). No math here (that is lif_core.h's).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "../lif_core.h"

// The inner loops are built once per instruction-set level (GCC target_clones: AVX2, SSE4.1,
// baseline) and picked at load time, so a default build runs on any x86-64 CPU and is still fast
// (floor needs SSE4.1 to vectorise).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LIF_NO_CLONES)
#define LIF_CLONES __attribute__((target_clones("avx2", "sse4.1", "default")))
#else
#define LIF_CLONES
#endif

namespace lif {
namespace cpu {

constexpr int64_t kMaxTile = 1024;

// Small calls run on the calling thread: below ~64K elements, waking the thread pool costs more
// than the work (parallel_for runs inline when one grain covers the whole range).
inline int64_t grain_size(int64_t items, int64_t elements) {
  return elements < (int64_t(1) << 16) ? std::max<int64_t>(items, 1) : 1;
}

// Tile width: up to max_tile neurons, narrowed (down to 64) until there are a few tiles per
// thread. Results never depend on it: neurons are independent and every parameter gradient is
// reduced per (batch row, neuron) first.
inline int64_t choose_tile(int64_t B, int64_t N, int64_t max_tile) {
  int64_t tile = std::min<int64_t>(max_tile, ((N + 15) / 16) * 16);
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  while (tile > 64 && B * ((N + tile - 1) / tile) < want) tile /= 2;
  return tile;
}

// The tile's row of a per-neuron parameter: the row itself, or a () parameter's one value spread
// into `buf` (len <= the tile width), so the inner loops always read a contiguous row.
template <typename T>
const T* param_row(const T* p, bool scalar, int64_t n0, int64_t len, T* buf) {
  if (!scalar) return p + n0;
  std::fill(buf, buf + len, p[0]);
  return buf;
}

}  // namespace cpu
}  // namespace lif
