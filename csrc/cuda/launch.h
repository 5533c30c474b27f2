// What every model's CUDA kernels share: the launch shape (one thread per (batch row, neuron),
// kBlock threads a block, 64-bit thread indices), the parameter-gradient sums' kernels
// (core/grad_sums.h) and the in-kernel noise's key under CUDA graph capture. nvcc only.
#pragma once

#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/ops/empty.h>
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

// Pass 2 for output k by the threads of a block: grad_sum_neurons's tree, the leaves in parallel,
// the levels in shared memory `v` (kGradTreeWidth values; the same additions in the same order).
template <typename T>
__device__ void block_grad_tree(const GradSum<T>& s, int64_t k, double* v) {
  const int64_t leaves = grad_tree_leaves(grad_tree_values(s));
  const int64_t threads = blockDim.x;
  for (int64_t j = threadIdx.x; j < leaves; j += threads) v[j] = grad_tree_leaf_sum(s, k, j);
  __syncthreads();
  for (int64_t w = 1; w < leaves; w *= 2) {
    for (int64_t j = 2 * w * threadIdx.x; j + w < leaves; j += 2 * w * threads) v[j] += v[j + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) s.dst[k] = grad_sum_out(s, leaves > 0 ? v[0] : 0.0, k);
  __syncthreads();  // v is free again
}

// Pass 2, one block per output.
template <typename T>
__global__ void __launch_bounds__(kGradTreeWidth) grad_sum_neurons_kernel(const GradSum<T> s) {
  __shared__ double v[kGradTreeWidth];
  block_grad_tree(s, blockIdx.x, v);
}

// The end of a backward kernel that sums its parameters' gradients itself (core/grad_sums.h, "the
// sums inside a kernel"); every thread of the block calls it, after storing its row's partials.
// The fences and the barrier around each counter are those of a grid-wide barrier (cooperative
// groups' grid sync): what a block stored before it is counted is seen by the block that reads it.
static_assert(kBlock <= kGradTile, "a block must span at most two tiles per row");
template <typename T>
__device__ void kernel_grad_sums(const KernelGradSums<T>& g) {
  if (g.count == 0) return;
  __shared__ int64_t done[4];
  __shared__ int n_done;
  __shared__ bool last;
  __shared__ double v[kGradTreeWidth];
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const int64_t lo = static_cast<int64_t>(blockIdx.x) * kBlock;
    const int64_t hi = lo + kBlock < g.B * g.N ? lo + kBlock : g.B * g.N;
    unsigned long long* const arrivals = g.arrivals;
    const auto add = [arrivals](int64_t counter, int64_t n) {
      return static_cast<int64_t>(
          atomicAdd(arrivals + counter, static_cast<unsigned long long>(n)));
    };
    n_done = grad_tiles_completed(lo, hi, g.B, g.N, add, done);
    __threadfence();
  }
  __syncthreads();
  const int d = n_done;
  if (d == 0) return;
  for (int e = 0; e < d; ++e) {
#pragma unroll
    for (int i = 0; i < kMaxKernelSums; ++i) {  // constant indices: the sums stay kernel parameters
      if (i < g.count) grad_sum_batch_tile(g.sums[i], g.B, g.N, done[e], threadIdx.x, kBlock);
    }
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const int64_t tiles = grad_tiles(g.N);
    last = static_cast<int64_t>(atomicAdd(g.arrivals + tiles, static_cast<unsigned long long>(d))) +
               d ==
           tiles;
    __threadfence();
  }
  __syncthreads();
  if (!last) return;
#pragma unroll
  for (int i = 0; i < kMaxKernelSums; ++i) {
    if (i < g.count) {
      for (int64_t k = 0; k < grad_sum_outputs(g.sums[i]); ++k) block_grad_tree(g.sums[i], k, v);
    }
  }
}

// The sums as a kernel takes them, with their counters: fresh per call from the caching allocator
// (two streams never share them) and zeroed by a memset on the stream (a memset node of the graph
// under capture, so every replay starts from zero).
template <typename T>
KernelGradSums<T> kernel_grad_sums_of(const std::vector<GradSum<T>>& sums, int64_t B, int64_t N,
                                      at::Tensor& arrivals) {
  TORCH_CHECK(sums.size() <= static_cast<size_t>(kMaxKernelSums), "lif_cuda: ", sums.size(),
              " gradient sums exceed one kernel's");
  KernelGradSums<T> g{};
  if (sums.empty()) return g;
  for (size_t i = 0; i < sums.size(); ++i) g.sums[i] = sums[i];
  g.count = static_cast<int>(sums.size());
  arrivals = at::empty({grad_tiles(N) + 1},
                       at::TensorOptions(at::kLong).device(at::kCUDA, c10::cuda::current_device()));
  C10_CUDA_CHECK(cudaMemsetAsync(arrivals.mutable_data_ptr(), 0, arrivals.nbytes(),
                                 c10::cuda::getCurrentCUDAStream().stream()));
  g.arrivals = reinterpret_cast<unsigned long long*>(arrivals.mutable_data_ptr<int64_t>());
  g.B = B;
  g.N = N;
  return g;
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
