// CPU implementations of the synaptic ops (SPEC §7): synaptic_op_glue.h prepares the tensors and
// runs the time loop (recurrent weights), the kernels of synaptic_kernel_cpu.cpp do the steps.
#include <torch/library.h>

#include "../synaptic_op_glue.h"
#include "synaptic_cpu.h"

namespace lif {
namespace {

SynForwardOut synaptic_forward_cpu(const Tensor& input, const Tensor& v0, const Tensor& i0,
                                   const std::optional<Tensor>& s0, const Tensor& tau_mem,
                                   const Tensor& tau_syn, const Tensor& threshold,
                                   const Tensor& bias, const std::optional<Tensor>& w_rec,
                                   const std::optional<Tensor>& noise,
                                   const std::optional<Tensor>& noise_key, double dt,
                                   double noise_scale, double window, double max_spikes,
                                   int64_t /*surrogate*/, bool record, bool save,
                                   const std::optional<Tensor>& lengths) {
  const SynForwardOp op =
      prepare_syn_forward(input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise,
                          noise_key, dt, noise_scale, window, max_spikes, record, save, lengths);
  if (op.run) {
    LIF_DISPATCH_IO(op.x.scalar_type(), "synaptic_forward_cpu", [&] {
      run_syn_forward<IT, CT>(op, [](const SynForwardArgs<IT, CT>& a) { cpu::syn_forward(a); });
    });
  }
  return op.outputs();
}

SynBackwardOut synaptic_backward_cpu(
    const Tensor& grad_spikes, const std::optional<Tensor>& grad_vmem,
    const std::optional<Tensor>& grad_isyn, const std::optional<Tensor>& grad_irec,
    const std::optional<Tensor>& grad_vfinal, const std::optional<Tensor>& grad_ifinal,
    const Tensor& u, const Tensor& a, const Tensor& v0, const std::optional<Tensor>& s0,
    const Tensor& tau_mem, const Tensor& tau_syn, const Tensor& threshold,
    const std::optional<Tensor>& w_rec, double dt, double window, double max_spikes,
    int64_t surrogate, bool scalar_bias, bool i0_shared, bool noise_grad,
    const std::optional<Tensor>& lengths) {
  SynBackwardOp op =
      prepare_syn_backward(grad_spikes, grad_vmem, grad_isyn, grad_irec, grad_vfinal, grad_ifinal,
                           u, a, v0, s0, tau_mem, tau_syn, threshold, w_rec, dt, window, max_spikes,
                           surrogate, scalar_bias, i0_shared, noise_grad, lengths);
  if (op.run) {
    LIF_DISPATCH_IO(op.gs.scalar_type(), "synaptic_backward_cpu", [&] {
      run_syn_backward<IT, CT>(
          op, [](const SynBackwardArgs<IT, CT>& r) { cpu::syn_backward(r); },
          [](const std::vector<SynGradSum<CT>>& g, int64_t B) {
            cpu::syn_grad_sums(g.data(), static_cast<int>(g.size()), B);
          });
    });
  }
  return op.outputs();
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CPU, m) {
  m.impl("synaptic_forward", &lif::synaptic_forward_cpu);
  m.impl("synaptic_backward", &lif::synaptic_backward_cpu);
}
