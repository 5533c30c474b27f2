// The synaptic LIF ops on CUDA (SPEC §7): one thread per (batch row b, neuron n), the time loop
// and the neuron's S synapses inside the thread; what a thread does is synaptic_thread.h's (shared
// with the host tests), the math core/synaptic.h's. host/synaptic_op.h prepares tensors and
// arguments exactly as for the CPU (same checks, same empty-shape rules, the same C++ time loop of
// at::linear + step kernel with recurrent weights), under a guard for the input's device; the
// kernels go on the current stream. Compiled without fast-math and with -fmad=false, as lif.cu.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <type_traits>

#include "../core/switch.h"
#include "../host/synaptic_op.h"
#include "launch.h"
#include "sum_order.h"
#include "synaptic_thread.h"

namespace lif {
namespace gpu {
namespace {

template <typename IT, typename T, int NOISE, int S_FIXED, bool AHP, int SUM>
__global__ void __launch_bounds__(kBlock) forward_kernel(const SynForwardArgs<IT, T> a) {
  const int64_t idx = thread_index();
  if (idx < a.B * a.N) syn_forward_thread<IT, T, NOISE, S_FIXED, AHP, SUM>(a, idx);
}

// With `g` (the call's last kernel), the parameter-gradient sums at its end (launch.h), with
// the LIF backward's launch bounds.
template <typename IT, typename T, int SURR, int S_FIXED, bool AHP>
__global__ void __launch_bounds__(kBlock, 1)
    backward_kernel(const SynBackwardArgs<IT, T> a, const KernelGradSums<T> g) {
  const int64_t idx = thread_index();
  if (idx < a.B * a.N) syn_backward_thread<IT, T, SURR, S_FIXED, AHP>(a, idx);
  kernel_grad_sums(g);
}

}  // namespace

// The model's kernels on the CUDA (the device of the op functions in host/).
struct SynCuda : CudaDevice {
  template <typename IT, typename T>
  static void forward(const SynForwardArgs<IT, T>& a) {
    const cudaStream_t stream = current_stream();
    NOISE_SWITCH(a.noise.mode, NOISE, [&] {
      SYNAPSES_SWITCH(a.S, S_FIXED, [&] {
        BOOL_SWITCH(a.h0 != nullptr, AHP, [&] {
          const auto launch = [&](auto sum) {
            forward_kernel<IT, T, NOISE, S_FIXED, AHP, decltype(sum)::value>
                <<<grid_for(a.B * a.N), kBlock, 0, stream>>>(a);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          };
          // Up to 3 lanes (S <= 2, with or without the AHP lane) add in one order everywhere;
          // from 3 synapses on, torch's order, measured.
          if constexpr (S_FIXED != 0) {
            launch(std::integral_constant<int, kCudaSumDown>{});
          } else if (cuda_sum_order(c10::cuda::current_device()) == kCudaSumUp) {
            launch(std::integral_constant<int, kCudaSumUp>{});
          } else {
            launch(std::integral_constant<int, kCudaSumDown>{});
          }
        });
      });
    });
  }

  // A call's kernel; its last also sums the parameters' gradients (`sums`).
  template <typename IT, typename T>
  static void backward(const SynBackwardArgs<IT, T>& a, const std::vector<GradSum<T>>& sums = {}) {
    const cudaStream_t stream = current_stream();
    at::Tensor arrivals;
    const KernelGradSums<T> g = kernel_grad_sums_of(sums, a.B, a.N, arrivals);
    SURROGATE_SWITCH(a.surrogate, SURR, [&] {
      SYNAPSES_SWITCH(a.S, S_FIXED, [&] {
        BOOL_SWITCH(a.H != nullptr, AHP, [&] {
          backward_kernel<IT, T, SURR, S_FIXED, AHP>
              <<<grid_for(a.B * a.N), kBlock, 0, stream>>>(a, g);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    });
  }
};

}  // namespace gpu
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CUDA, m) {
  m.impl("synaptic_forward", &lif::synaptic_forward<lif::gpu::SynCuda>);
  m.impl("synaptic_backward", &lif::synaptic_backward<lif::gpu::SynCuda>);
}
