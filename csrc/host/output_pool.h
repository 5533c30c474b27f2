// Outputs of the ops (spikes, recorded membrane, saved u, input gradient) on the CPU come from a
// small pool of buffers that stay mapped between calls. A fresh large allocation is a fresh mmap
// (glibc maps every block above its threshold, at most 32 MiB), and each of its pages is faulted in
// and zeroed by the kernel on first touch, which can cost more than the kernels themselves
// (docs/performance.md).
// A buffer whose tensor dies goes back to the pool instead, and the next call of the same size
// reuses it, already mapped. Bounded (least recently returned buffers are freed first), switchable
// off, and it changes nothing outside lif_cuda's own tensors (no allocator or mallopt setting).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lif {

// An uninitialised contiguous tensor, like at::empty: from the pool when it is on the CPU and at
// least kPoolMinBytes large and the pool is on, else from at::empty.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

// Only buffers of at least this size are pooled (smaller ones are cheap for glibc to reuse).
constexpr int64_t kPoolMinBytes = int64_t(1) << 20;

struct OutputPoolStats {
  int64_t limit_bytes;  // most bytes held while unused (0: the pool is off)
  int64_t held_bytes;  // bytes held now, unused
  int64_t hits, misses;  // pooled allocations served from the pool / newly allocated
};

OutputPoolStats output_pool_stats();
// Sets the limit (0 turns the pool off and frees what it holds); returns the new stats.
OutputPoolStats set_output_pool_limit(int64_t limit_bytes);

}  // namespace lif
