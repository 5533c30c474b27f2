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

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lif_forward_cuda(
    const Tensor& input, const Tensor& v0, const Tensor& tau_mem, const Tensor& threshold,
    const Tensor& bias, const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_key,
    double dt, double noise_scale, double window, double max_spikes, int64_t /*surrogate*/,
    bool record, bool save_u, const std::optional<Tensor>& lengths) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  const ForwardOp op = prepare_forward(input, v0, tau_mem, threshold, bias, noise, noise_key, dt,
                                       noise_scale, window, max_spikes, record, save_u, lengths);
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
    const Tensor& tau_mem, const Tensor& threshold, double dt, double window, double max_spikes,
    int64_t surrogate, bool scalar_bias, const std::optional<Tensor>& lengths) {
  const c10::cuda::CUDAGuard device_guard(u.device());
  // grad_spikes is read with its strides where a row is contiguous or broadcast (stride 0: the
  // expanded ones of `spikes.sum()` cost no (B,T,N) copy); anything else is copied first.
  const BackwardOp op =
      prepare_backward(grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem, threshold, dt, window,
                       max_spikes, surrogate, scalar_bias, lengths, /*gs_broadcast_ok=*/true);
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
