// The launch shape shared by the CUDA kernels (the LIF and the synaptic op): one thread per
// (batch row, neuron), kBlock threads a block, 64-bit thread indices. nvcc only (the .cu files).
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>

namespace lif {
namespace gpu {

constexpr int kBlock = 128;

// Blocks for `threads` threads (one grid's x dimension at most).
inline unsigned int grid_for(int64_t threads) {
  const int64_t blocks = (threads + kBlock - 1) / kBlock;
  TORCH_CHECK(blocks <= 0x7fffffff, "lif_cuda: ", threads, " threads exceed one CUDA grid");
  return static_cast<unsigned int>(blocks);
}

__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
}

}  // namespace gpu
}  // namespace lif
