// CUDA implementations of the synaptic ops (SPEC §7): synaptic_op_glue.h prepares tensors and
// arguments exactly as for the CPU (same checks, same empty-shape rules, the same C++ time loop of
// at::linear + step kernel with recurrent weights), under a guard for the input's device; the
// kernels of synaptic_kernel_cuda.cu are launched on the current stream.
//
// Only c10/cuda and ATen core headers: no ATen/cuda/CUDAContext.h (it needs cuBLAS headers).
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../synaptic_op_glue.h"
#include "synaptic_cuda.h"

namespace lif {
namespace {

SynForwardOut synaptic_forward_cuda(const Tensor& input, const Tensor& v0, const Tensor& i0,
                                    const std::optional<Tensor>& s0, const Tensor& tau_mem,
                                    const Tensor& tau_syn, const Tensor& threshold,
                                    const Tensor& bias, const std::optional<Tensor>& w_rec,
                                    const std::optional<Tensor>& noise,
                                    const std::optional<Tensor>& noise_key, double dt,
                                    double noise_scale, double window, double max_spikes,
                                    int64_t /*surrogate*/, bool record, bool save,
                                    const std::optional<Tensor>& lengths) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  // In-kernel noise keyed by the CPU generator would repeat on every replay of a CUDA graph (the
  // LIF op reads a graph-safe key on the device instead; this op does not yet): refused.
  TORCH_CHECK(
      noise.has_value() || noise_key.has_value() || !(noise_scale > 0.0) ||
          c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None,
      "lif_cuda: the synaptic op's in-kernel noise cannot be captured in a CUDA graph "
      "(every replay would draw the same noise); use noise='torch' or capture without noise");
  const SynForwardOp op =
      prepare_syn_forward(input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise,
                          noise_key, dt, noise_scale, window, max_spikes, record, save, lengths);
  if (op.run) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(input.device().index()).stream();
    LIF_DISPATCH_IO(op.x.scalar_type(), "synaptic_forward_cuda", [&] {
      run_syn_forward<IT, CT>(
          op, [&](const SynForwardArgs<IT, CT>& a) { gpu::syn_forward(a, stream); });
    });
  }
  return op.outputs();
}

SynBackwardOut synaptic_backward_cuda(
    const Tensor& grad_spikes, const std::optional<Tensor>& grad_vmem,
    const std::optional<Tensor>& grad_isyn, const std::optional<Tensor>& grad_irec,
    const std::optional<Tensor>& grad_vfinal, const std::optional<Tensor>& grad_ifinal,
    const Tensor& u, const Tensor& a, const Tensor& v0, const std::optional<Tensor>& s0,
    const Tensor& tau_mem, const Tensor& tau_syn, const Tensor& threshold,
    const std::optional<Tensor>& w_rec, double dt, double window, double max_spikes,
    int64_t surrogate, bool scalar_bias, bool i0_shared, bool noise_grad,
    const std::optional<Tensor>& lengths) {
  const c10::cuda::CUDAGuard device_guard(u.device());
  SynBackwardOp op =
      prepare_syn_backward(grad_spikes, grad_vmem, grad_isyn, grad_irec, grad_vfinal, grad_ifinal,
                           u, a, v0, s0, tau_mem, tau_syn, threshold, w_rec, dt, window, max_spikes,
                           surrogate, scalar_bias, i0_shared, noise_grad, lengths);
  if (op.run) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(u.device().index()).stream();
    LIF_DISPATCH_IO(op.gs.scalar_type(), "synaptic_backward_cuda", [&] {
      run_syn_backward<IT, CT>(
          op, [&](const SynBackwardArgs<IT, CT>& r) { gpu::syn_backward(r, stream); },
          [&](const std::vector<SynGradSum<CT>>& g, int64_t B) {
            gpu::syn_grad_sums(g, B, stream);
          });
    });
  }
  return op.outputs();
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CUDA, m) {
  m.impl("synaptic_forward", &lif::synaptic_forward_cuda);
  m.impl("synaptic_backward", &lif::synaptic_backward_cuda);
}
