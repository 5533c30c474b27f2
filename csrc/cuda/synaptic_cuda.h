// Launchers of the synaptic LIF CUDA kernels (synaptic_kernel_cuda.cu), called by
// synaptic_ops_cuda.cu with contiguous tensors on the current device. The per-thread work is in
// synaptic_thread.h. The launches go on `stream` and are checked.
#pragma once

#include <cuda_runtime_api.h>

#include <vector>

#include "synaptic_thread.h"

namespace lif {
namespace gpu {

template <typename IT, typename T>
void syn_forward(const SynForwardArgs<IT, T>& a, cudaStream_t stream);
template <typename IT, typename T>
void syn_backward(const SynBackwardArgs<IT, T>& a, cudaStream_t stream);
template <typename T>
void syn_grad_sums(const std::vector<SynGradSum<T>>& sums, int64_t B, cudaStream_t stream);

}  // namespace gpu
}  // namespace lif
