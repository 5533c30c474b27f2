// Launchers of the CUDA kernels (lif_kernel_cuda.cu), called by lif_ops_cuda.cu with contiguous
// tensors on the current device. The argument structs and the per-thread work are in lif_thread.h.
// The launches go on `stream` and are checked.
#pragma once

#include <cuda_runtime_api.h>

#include "lif_thread.h"

namespace lif {
namespace gpu {

template <typename IT, typename T>
void forward(const ForwardArgs<IT, T>& a, cudaStream_t stream);
template <typename IT, typename T>
void backward(const BackwardArgs<IT, T>& a, cudaStream_t stream);

}  // namespace gpu
}  // namespace lif
