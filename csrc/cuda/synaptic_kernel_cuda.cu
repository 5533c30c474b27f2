// Fused synaptic LIF kernels for CUDA (SPEC §7): one thread per (batch row b, neuron n), the time
// loop and the neuron's S synapses inside the thread; what a thread does is synaptic_thread.h's
// (shared with the host test), the math lif_core.h's. Here: the grids, the compile-time variants
// and the launches. Compiled without fast-math and with -fmad=false (setup.py), as the LIF kernels.
//
// Parameter gradients: each backward thread accumulates its row's partial sums; the gradient-sum
// kernels add them over the batch in the order b = 0..B-1 (no atomics), then over the neurons of a
// (1,S) or () parameter in index order: the CPU kernels' order, so the same bits.

#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "synaptic_cuda.h"
#include "launch.h"

namespace lif {
namespace gpu {
namespace {

template <typename IT, typename T, int NOISE, int S_FIXED>
__global__ void __launch_bounds__(kBlock) syn_forward_kernel(const SynForwardArgs<IT, T> a) {
  const int64_t idx = thread_index();
  if (idx < a.B * a.N) syn_forward_thread<IT, T, NOISE, S_FIXED>(a, idx);
}

template <typename IT, typename T, int SURR, int S_FIXED>
__global__ void __launch_bounds__(kBlock) syn_backward_kernel(const SynBackwardArgs<IT, T> a) {
  const int64_t idx = thread_index();
  if (idx < a.B * a.N) syn_backward_thread<IT, T, SURR, S_FIXED>(a, idx);
}

template <typename T>
__global__ void __launch_bounds__(kBlock) syn_grad_batch_kernel(const SynGradSum<T> s, int64_t B) {
  const int64_t m = thread_index();
  if (m < s.M) syn_grad_sum_batch_thread(s, B, m);
}

template <typename T>
__global__ void __launch_bounds__(kBlock)
    syn_grad_collapse_kernel(const SynGradSum<T> s, int64_t outputs) {
  const int64_t k = thread_index();
  if (k < outputs) syn_grad_sum_collapse_thread(s, k);
}

}  // namespace

template <typename IT, typename T>
void syn_forward(const SynForwardArgs<IT, T>& a, cudaStream_t stream) {
  with_syn_forward_variant(a, [&](auto noise, auto s_fixed) {
    syn_forward_kernel<IT, T, decltype(noise)::value, decltype(s_fixed)::value>
        <<<grid_for(a.B * a.N), kBlock, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename IT, typename T>
void syn_backward(const SynBackwardArgs<IT, T>& a, cudaStream_t stream) {
  with_syn_backward_variant(a, [&](auto surr, auto s_fixed) {
    syn_backward_kernel<IT, T, decltype(surr)::value, decltype(s_fixed)::value>
        <<<grid_for(a.B * a.N), kBlock, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename T>
void syn_grad_sums(const std::vector<SynGradSum<T>>& sums, int64_t B, cudaStream_t stream) {
  for (const SynGradSum<T>& s : sums) {
    syn_grad_batch_kernel<T><<<grid_for(s.M), kBlock, 0, stream>>>(s, B);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (s.collapse != kCollapseNone) {
      const int64_t outputs = s.collapse == kCollapseNeurons ? s.S : 1;
      syn_grad_collapse_kernel<T><<<grid_for(outputs), kBlock, 0, stream>>>(s, outputs);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
}

#define SYN_INSTANTIATE(IT, T)                                                  \
  template void syn_forward<IT, T>(const SynForwardArgs<IT, T>&, cudaStream_t); \
  template void syn_backward<IT, T>(const SynBackwardArgs<IT, T>&, cudaStream_t);
SYN_INSTANTIATE(float, float)
SYN_INSTANTIATE(double, double)
SYN_INSTANTIATE(c10::Half, float)
SYN_INSTANTIATE(c10::BFloat16, float)
#undef SYN_INSTANTIATE
template void syn_grad_sums<float>(const std::vector<SynGradSum<float>>&, int64_t, cudaStream_t);
template void syn_grad_sums<double>(const std::vector<SynGradSum<double>>&, int64_t, cudaStream_t);

}  // namespace gpu
}  // namespace lif
