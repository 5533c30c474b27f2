// The LIF ops on CUDA (SPEC §1-§3): one thread per (batch row b, neuron n), the time loop inside
// the thread; what a thread does is lif_thread.h's (shared with the host tests), the math
// core/lif.h's. host/lif_op.h prepares tensors and arguments exactly as for the CPU (same checks,
// same empty-shape rules), under a guard for the input's device; the kernels go on the current
// stream. Compiled without fast-math and with -fmad=false (setup.py): no multiply-add is
// contracted and the division stays IEEE (SPEC §1).
//
// Only c10/cuda and ATen core headers, and the CUDA generator's: no ATen/cuda/CUDAContext.h (it
// needs cuBLAS headers).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "../core/switch.h"
#include "../host/lif_op.h"
#include "launch.h"
#include "lif_thread.h"

namespace lif {
namespace gpu {
namespace {

template <typename IT, typename T, int NOISE, int SAVE, bool RECORD>
__global__ void __launch_bounds__(kBlock) forward_kernel(const LifForwardArgs<IT, T> a) {
  const int64_t idx = thread_index();
  if (idx < a.B * a.N) forward_thread<IT, T, NOISE, SAVE, RECORD>(a, idx);
}

// The parameter-gradient sums at its end, by the blocks that complete them (launch.h). The launch
// bounds name a minimum of one block an SM: without it ptxas gives this kernel (with the sums'
// barriers) fewer registers than its loop holds, and spills.
template <typename IT, typename T, int SURR, bool HAS_GW, bool MASK>
__global__ void __launch_bounds__(kBlock, 1)
    backward_kernel(const LifBackwardArgs<IT, T> a, const KernelGradSums<T> g) {
  const int64_t idx = thread_index();
  if (idx < a.B * a.N) backward_thread<IT, T, SURR, HAS_GW, MASK>(a, idx);
  kernel_grad_sums(g);
}

}  // namespace

// The model's kernels on the CUDA (the device of the op functions in host/).
struct LifCuda : CudaDevice {
  template <typename IT, typename T>
  static void forward(const LifForwardArgs<IT, T>& a) {
    const cudaStream_t stream = current_stream();
    const int save = a.mask_out ? kSaveMask : a.u_out ? kSaveU : kSaveNone;
    NOISE_SWITCH(a.noise.mode, NOISE, [&] {
      SAVE_SWITCH(save, SAVE, [&] {
        BOOL_SWITCH(a.vmem_out != nullptr, RECORD, [&] {
          forward_kernel<IT, T, NOISE, SAVE, RECORD><<<grid_for(a.B * a.N), kBlock, 0, stream>>>(a);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    });
  }

  // The kernel also sums the parameters' gradients (`sums`): one launch, no grad-sum kernels.
  template <typename IT, typename T>
  static void backward(const LifBackwardArgs<IT, T>& a, const std::vector<GradSum<T>>& sums) {
    const cudaStream_t stream = current_stream();
    at::Tensor arrivals;
    const KernelGradSums<T> g = kernel_grad_sums_of(sums, a.B, a.N, arrivals);
    if (a.mask != nullptr) {  // a window mask serves StepPWL only (host/checks.h)
      BOOL_SWITCH(a.gw != nullptr, HAS_GW, [&] {
        backward_kernel<IT, T, kStepPWL, HAS_GW, true>
            <<<grid_for(a.B * a.N), kBlock, 0, stream>>>(a, g);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
      return;
    }
    SURROGATE_SWITCH(a.surrogate, SURR, [&] {
      BOOL_SWITCH(a.gw != nullptr, HAS_GW, [&] {
        backward_kernel<IT, T, SURR, HAS_GW, false>
            <<<grid_for(a.B * a.N), kBlock, 0, stream>>>(a, g);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
};

}  // namespace gpu
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CUDA, m) {
  lif::g_stream_capturing.store(&lif::gpu::stream_capturing);  // at load, before any op runs
  m.impl("lif_forward", &lif::lif_forward<lif::gpu::LifCuda>);
  m.impl("lif_backward", &lif::lif_backward<lif::gpu::LifCuda>);
}
