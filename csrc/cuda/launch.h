// What every model's CUDA kernels share: the launch shape (one thread per (batch row, neuron),
// kBlock threads a block, 64-bit thread indices), the parameter-gradient sums' kernels
// (core/grad_sums.h) and the in-kernel noise's key under CUDA graph capture. nvcc only.
#pragma once

#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "../core/grad_sums.h"
#include "../host/prepare.h"

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

template <typename T>
__global__ void __launch_bounds__(kBlock) grad_sum_batch_kernel(const GradSum<T> s, int64_t B) {
  const int64_t m = thread_index();
  if (m < s.count) grad_sum_batch(s, B, m);
}

// Pass 2, one block per output: grad_sum_neurons's tree, the leaves in parallel, the levels in
// shared memory (the same additions in the same order).
template <typename T>
__global__ void __launch_bounds__(kGradTreeWidth) grad_sum_neurons_kernel(const GradSum<T> s) {
  __shared__ double v[kGradTreeWidth];
  const int64_t k = blockIdx.x;
  const int j = static_cast<int>(threadIdx.x);
  const int64_t leaves = grad_tree_leaves(grad_tree_values(s));
  if (j < leaves) v[j] = grad_tree_leaf_sum(s, k, j);
  __syncthreads();
  for (int64_t w = 1; w < leaves; w *= 2) {
    if (j % (2 * w) == 0 && j + w < leaves) v[j] += v[j + w];
    __syncthreads();
  }
  if (j == 0) s.dst[k] = grad_sum_out(s, leaves > 0 ? v[0] : 0.0, k);
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// The host code's view of capture (host/prepare.h g_stream_capturing, set where the CUDA ops are
// registered, lif.cu).
inline bool stream_capturing() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
}

// The parameter-gradient sums on the current stream: pass 1, then pass 2 where the parameter is
// shared.
template <typename T>
void run_grad_sums(const std::vector<GradSum<T>>& sums, int64_t B) {
  const cudaStream_t stream = current_stream();
  for (const GradSum<T>& s : sums) {
    grad_sum_batch_kernel<T><<<grid_for(s.count), kBlock, 0, stream>>>(s, B);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (grad_sum_outputs(s) > 0) {
      grad_sum_neurons_kernel<T>
          <<<static_cast<unsigned int>(grad_sum_outputs(s)), kGradTreeWidth, 0, stream>>>(s);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
}

// In-kernel noise under CUDA graph capture (torch.cuda.graph, torch.compile's "reduce-overhead"):
// a key drawn on the host at capture time would be baked into the graph, and every replay would
// add the same noise. So, as torch's own Philox kernels (dropout) do, the captured kernel reads its
// key on the device from the CUDA generator's graph-safe state, which each replay advances: fresh
// noise per replay, and torch.manual_seed(s) before the replays reproduces them. The stream is
// then (seed, offset / 4) of the CUDA generator, not the CPU generator's draw of an eager call.
// Outside capture nothing changes: one stream on CPU and CUDA under one seed.
inline bool noise_keyed_on_device(const OptTensor& noise, const OptTensor& noise_key,
                                  double noise_scale) {
  if (noise.has_value() || noise_key.has_value() || !(noise_scale > 0.0)) return false;
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
}

// The captured call's key: the generator's state, advanced by the 32-bit words the call spends per
// subsequence (ceil(T/4) blocks of 4), read by PhiloxKey::get on the device.
inline void key_noise_on_device(NoiseSpec& noise, int64_t T, c10::Device device) {
  auto* gen =
      at::cuda::detail::getDefaultCUDAGenerator(device.index()).get<at::CUDAGeneratorImpl>();
  at::PhiloxCudaState state;
  {
    const std::lock_guard<std::mutex> lock(gen->mutex_);
    state = gen->philox_cuda_state(4 * static_cast<uint64_t>((T + 3) / 4));
  }
  TORCH_INTERNAL_ASSERT(state.captured_, "lif_cuda: expected a captured Philox state");
  noise.key.device_seed = state.seed_.ptr;
  noise.key.device_offset = state.offset_.ptr;
  noise.key.offset_intragraph = state.offset_intragraph_;
}

// CUDA as the ops' device (HostDevice, host/prepare.h); each model adds its kernels, launched on
// the current stream.
struct CudaDevice {
  static bool noise_keyed_on_device(const OptTensor& noise, const OptTensor& noise_key,
                                    double noise_scale) {
    return gpu::noise_keyed_on_device(noise, noise_key, noise_scale);
  }
  static void key_noise_on_device(NoiseSpec& noise, int64_t T, c10::Device device) {
    gpu::key_noise_on_device(noise, T, device);
  }
  template <typename T>
  static void grad_sums(const std::vector<GradSum<T>>& sums, int64_t B) {
    run_grad_sums(sums, B);
  }
};

}  // namespace gpu
}  // namespace lif
