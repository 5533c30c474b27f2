// CPU implementations of the lif_cuda ops: lif_op_glue.h prepares the tensors and arguments, the
// raw-pointer kernels of lif_kernel_cpu.cpp run on them.
#include <torch/library.h>

#include "../lif_op_glue.h"
#include "lif_cpu.h"

namespace lif {
namespace {

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lif_forward_cpu(
    const Tensor& input, const Tensor& v0, const Tensor& tau_mem, const Tensor& threshold,
    const Tensor& bias, const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_key,
    double dt, double noise_scale, double window, double max_spikes, int64_t /*surrogate*/,
    bool record, bool save_u, const std::optional<Tensor>& lengths) {
  const ForwardOp op = prepare_forward(input, v0, tau_mem, threshold, bias, noise, noise_key, dt,
                                       noise_scale, window, max_spikes, record, save_u, lengths);
  if (op.run) {
    LIF_DISPATCH_IO(op.x.scalar_type(), "lif_forward_cpu",
                    [&] { cpu::forward(op.args<IT, CT>()); });
  }
  return op.outputs();
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lif_backward_cpu(
    const Tensor& grad_spikes, const std::optional<Tensor>& grad_vmem,
    const std::optional<Tensor>& grad_vfinal, const Tensor& u, const Tensor& v0,
    const Tensor& tau_mem, const Tensor& threshold, double dt, double window, double max_spikes,
    int64_t surrogate, bool scalar_bias, const std::optional<Tensor>& lengths) {
  const BackwardOp op =
      prepare_backward(grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem, threshold, dt, window,
                       max_spikes, surrogate, scalar_bias, lengths);
  if (op.run) {
    LIF_DISPATCH_IO(op.gs.scalar_type(), "lif_backward_cpu",
                    [&] { cpu::backward(op.args<IT, CT>()); });
  }
  return op.outputs();
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CPU, m) {
  m.impl("lif_forward", &lif::lif_forward_cpu);
  m.impl("lif_backward", &lif::lif_backward_cpu);
}
