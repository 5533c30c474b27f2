// CUDA implementations of the lif_cuda ops: lif_op_glue.h prepares tensors and arguments exactly as
// for the CPU (same checks, same empty-shape rules), under a guard for the input's device; the
// kernels of lif_kernel_cuda.cu are launched on the current stream.
//
// Only c10/cuda and ATen core headers: no ATen/cuda/CUDAContext.h (it needs cuBLAS headers).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../lif_op_glue.h"
#include "lif_cuda.h"

namespace lif {
namespace {

std::tuple<Tensor, Tensor, Tensor, Tensor> lif_forward_cuda(
    const Tensor& input, const Tensor& v0, const Tensor& alpha, const Tensor& threshold,
    const Tensor& bias, const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_key,
    double noise_scale, double /*window*/, double max_spikes, int64_t /*surrogate*/, bool record,
    bool save_u) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  const ForwardOp op = prepare_forward(input, v0, alpha, threshold, bias, noise, noise_key,
                                       noise_scale, max_spikes, record, save_u);
  if (op.run) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(input.device().index()).stream();
    LIF_DISPATCH_IO(op.x.scalar_type(), "lif_forward_cuda",
                    [&] { gpu::forward(op.args<IT, CT>(), stream); });
  }
  return op.outputs();
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lif_backward_cuda(
    const Tensor& grad_spikes, const std::optional<Tensor>& grad_vmem,
    const std::optional<Tensor>& grad_vfinal, const Tensor& u, const Tensor& v0,
    const Tensor& alpha, const Tensor& threshold, double window, double max_spikes,
    int64_t surrogate) {
  const c10::cuda::CUDAGuard device_guard(u.device());
  // The CUDA kernels read grad_spikes contiguous (coalesced along the neurons).
  const BackwardOp op = prepare_backward(grad_spikes, grad_vmem, grad_vfinal, u, v0, alpha,
                                         threshold, window, max_spikes, surrogate,
                                         /*gs_broadcast_ok=*/false);
  if (op.run) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(u.device().index()).stream();
    LIF_DISPATCH_IO(op.gs.scalar_type(), "lif_backward_cuda",
                    [&] { gpu::backward(op.args<IT, CT>(), stream); });
  }
  return op.outputs();
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CUDA, m) {
  m.impl("lif_forward", &lif::lif_forward_cuda);
  m.impl("lif_backward", &lif::lif_backward_cuda);
}
