// The adaptive-threshold LIF ops on CUDA (SPEC §10): one thread per (batch row b, neuron n), the
// time loop inside the thread; what a thread does is adaptive_thread.h's (shared with the host
// tests), the math core/adaptive.h's; host/adaptive_op.h prepares tensors and arguments as for the
// CPU. Compiled without fast-math and with -fmad=false (setup.py), as lif.cu.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "../core/switch.h"
#include "../host/adaptive_op.h"
#include "adaptive_thread.h"
#include "launch.h"

namespace lif {
namespace gpu {
namespace {

template <typename IT, typename T, int NOISE, bool SAVE, bool RECORD>
__global__ void __launch_bounds__(kBlock)
    adaptive_forward_kernel(const AdaptiveForwardArgs<IT, T> a) {
  const int64_t idx = thread_index();
  if (idx < a.lif.B * a.lif.N) adaptive_forward_thread<IT, T, NOISE, SAVE, RECORD>(a, idx);
}

template <typename IT, typename T, int SURR, bool HAS_GW, bool HAS_GB>
__global__ void __launch_bounds__(kBlock)
    adaptive_backward_kernel(const AdaptiveBackwardArgs<IT, T> a) {
  const int64_t idx = thread_index();
  if (idx < a.lif.B * a.lif.N) adaptive_backward_thread<IT, T, SURR, HAS_GW, HAS_GB>(a, idx);
}

}  // namespace

// The model's kernels on CUDA (the device of the op functions in host/adaptive_op.h).
struct AdaptiveCuda : CudaDevice {
  static constexpr int64_t kEvery = 1;  // the saved b: every b[t] (core/adaptive.h)

  template <typename IT, typename T>
  static void forward(const AdaptiveForwardArgs<IT, T>& a) {
    const cudaStream_t stream = current_stream();
    NOISE_SWITCH(a.lif.noise.mode, NOISE, [&] {
      BOOL_SWITCH(a.lif.u_out != nullptr, SAVE, [&] {
        BOOL_SWITCH(a.lif.vmem_out != nullptr, RECORD, [&] {
          adaptive_forward_kernel<IT, T, NOISE, SAVE, RECORD>
              <<<grid_for(a.lif.B * a.lif.N), kBlock, 0, stream>>>(a);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    });
  }

  template <typename IT, typename T>
  static void backward(const AdaptiveBackwardArgs<IT, T>& a) {
    const cudaStream_t stream = current_stream();
    SURROGATE_SWITCH(a.lif.surrogate, SURR, [&] {
      BOOL_SWITCH(a.lif.gw != nullptr, HAS_GW, [&] {
        BOOL_SWITCH(a.gb != nullptr, HAS_GB, [&] {
          adaptive_backward_kernel<IT, T, SURR, HAS_GW, HAS_GB>
              <<<grid_for(a.lif.B * a.lif.N), kBlock, 0, stream>>>(a);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    });
  }
};

}  // namespace gpu
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CUDA, m) {
  m.impl("adaptive_forward", &lif::adaptive_forward<lif::gpu::AdaptiveCuda>);
  m.impl("adaptive_backward", &lif::adaptive_backward<lif::gpu::AdaptiveCuda>);
}
