// Fused LIF kernels for CUDA: forward over the whole time loop and the hand-written BPTT backward
// (SPEC §1, §3). One thread per (batch row b, neuron n), the time loop inside the thread; what a
// thread does is lif_thread.h's (shared with the host test), what the math is lif_core.h's. Here:
// the grid, the compile-time variants, and the launches.
//
// Bit-exactness with the reference needs this file compiled without nvcc's fast-math switch and
// with -fmad=false (setup.py), so that no multiply-add is contracted and the division stays IEEE.
//
// Parameter gradients: each backward thread writes its row's partial sums; a second kernel adds
// them over the batch in the fixed order b = 0..B-1 (no atomics), so the bits do not depend on the
// launch shape and equal the CPU kernel's.

#include "lif_cuda.h"
#include "launch.h"

#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

namespace lif {
namespace gpu {
namespace {

template <typename IT, typename T, int NOISE, bool SAVE_U, bool RECORD>
__global__ void __launch_bounds__(kBlock) forward_kernel(const ForwardArgs<IT, T> a) {
  const int64_t idx = thread_index();
  if (idx < a.B * a.N) forward_thread<IT, T, NOISE, SAVE_U, RECORD>(a, idx);
}

template <typename IT, typename T, int SURR, bool HAS_GW>
__global__ void __launch_bounds__(kBlock) backward_kernel(const BackwardArgs<IT, T> a) {
  const int64_t idx = thread_index();
  if (idx < a.B * a.N) backward_thread<IT, T, SURR, HAS_GW>(a, idx);
}

template <typename IT, typename T>
__global__ void __launch_bounds__(kBlock) reduce_over_batch_kernel(const BackwardArgs<IT, T> a) {
  const int64_t idx = thread_index();
  if (idx < batch_sums(a) * a.N) reduce_thread(a, idx);
}

template <typename IT, typename T>
__global__ void scalar_sum_kernel(const BackwardArgs<IT, T> a) {
  if (threadIdx.x < 3) scalar_sum_thread(a, threadIdx.x);
}

}  // namespace

template <typename IT, typename T>
void forward(const ForwardArgs<IT, T>& a, cudaStream_t stream) {
  const unsigned int blocks = grid_for(a.B * a.N);
  with_forward_variant(a, [&](auto noise, auto save_u, auto record) {
    forward_kernel<IT, T, decltype(noise)::value, decltype(save_u)::value, decltype(record)::value>
        <<<blocks, kBlock, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename IT, typename T>
void backward(const BackwardArgs<IT, T>& a, cudaStream_t stream) {
  with_backward_variant(a, [&](auto surr, auto has_gw) {
    backward_kernel<IT, T, decltype(surr)::value, decltype(has_gw)::value>
        <<<grid_for(a.B * a.N), kBlock, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  reduce_over_batch_kernel<IT, T><<<grid_for(batch_sums(a) * a.N), kBlock, 0, stream>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (a.alpha_scalar || a.thr_scalar || a.bias_scalar) {
    scalar_sum_kernel<IT, T><<<1, 32, 0, stream>>>(a);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

#define LIF_INSTANTIATE(IT, T)                                           \
  template void forward<IT, T>(const ForwardArgs<IT, T>&, cudaStream_t); \
  template void backward<IT, T>(const BackwardArgs<IT, T>&, cudaStream_t);
LIF_INSTANTIATE(float, float)
LIF_INSTANTIATE(double, double)
LIF_INSTANTIATE(c10::Half, float)
LIF_INSTANTIATE(c10::BFloat16, float)
#undef LIF_INSTANTIATE

}  // namespace gpu
}  // namespace lif
