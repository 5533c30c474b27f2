// CPU implementations of the lif_cuda ops: argument checks, allocation, and the call into the
// raw-pointer kernels of lif_kernel_cpu.cpp.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../lif_checks.h"
#include "lif_cpu.h"

namespace lif {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor, Tensor, Tensor> lif_forward_cpu(
    const Tensor& input, const Tensor& v0, const Tensor& alpha, const Tensor& threshold,
    const Tensor& bias, const std::optional<Tensor>& noise, double /*window*/, double max_spikes,
    int64_t /*surrogate*/, bool record, bool save_u) {
  auto [B, T, N] = check_forward_args(input, v0, alpha, threshold, bias, noise, max_spikes);
  // Contiguous views (no copy when already contiguous, the usual case).
  const Tensor x = input.contiguous();
  const Tensor v0c = v0.contiguous();
  const Tensor al = alpha.contiguous(), th = threshold.contiguous(), bi = bias.contiguous();
  const Tensor z = noise.has_value() ? noise->contiguous() : Tensor();
  Tensor spikes = at::empty({B, T, N}, x.options());
  Tensor w_rec = record ? at::empty({B, T, N}, x.options()) : at::empty({0}, x.options());
  Tensor u = save_u ? at::empty({B, T, N}, x.options()) : at::empty({0}, x.options());
  Tensor v_final = at::empty({B, N}, x.options());
  if (B == 0 || N == 0) return {spikes, w_rec, v_final, u};
  if (T == 0) {
    v_final.copy_(v0c);
    return {spikes, w_rec, v_final, u};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_forward_cpu", [&] {
    cpu::ForwardArgs<scalar_t> a{};
    a.x = x.const_data_ptr<scalar_t>();
    a.noise = z.defined() ? z.const_data_ptr<scalar_t>() : nullptr;
    a.v0 = v0c.const_data_ptr<scalar_t>();
    a.alpha = al.const_data_ptr<scalar_t>();
    a.thr = th.const_data_ptr<scalar_t>();
    a.bias = bi.const_data_ptr<scalar_t>();
    a.max_spikes = max_spikes;
    a.s_out = spikes.mutable_data_ptr<scalar_t>();
    a.w_rec = record ? w_rec.mutable_data_ptr<scalar_t>() : nullptr;
    a.u_out = save_u ? u.mutable_data_ptr<scalar_t>() : nullptr;
    a.v_final = v_final.mutable_data_ptr<scalar_t>();
    a.B = B;
    a.Tn = T;
    a.N = N;
    cpu::forward<scalar_t>(a);
  });
  return {spikes, w_rec, v_final, u};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lif_backward_cpu(
    const Tensor& grad_spikes, const std::optional<Tensor>& grad_vmem,
    const std::optional<Tensor>& grad_vfinal, const Tensor& u, const Tensor& v0,
    const Tensor& alpha, const Tensor& threshold, double window, double max_spikes,
    int64_t surrogate) {
  auto [B, T, N] = check_backward_args(grad_spikes, grad_vmem, grad_vfinal, u, v0, alpha,
                                       threshold, window, max_spikes, surrogate);
  const Tensor gs = grad_spikes.contiguous();
  const Tensor gw = grad_vmem.has_value() ? grad_vmem->contiguous() : Tensor();
  const Tensor gvf = grad_vfinal.has_value() ? grad_vfinal->contiguous() : Tensor();
  const Tensor uc = u.contiguous(), v0c = v0.contiguous();
  const Tensor al = alpha.contiguous(), th = threshold.contiguous();
  const auto opts = uc.options();
  Tensor g_in = at::empty({B, T, N}, opts);
  Tensor g_v0 = at::empty({B, N}, opts);
  Tensor g_alpha = at::zeros({N}, opts), g_thr = at::zeros({N}, opts),
         g_bias = at::zeros({N}, opts);
  if (B == 0 || N == 0 || T == 0) {
    if (gvf.defined()) g_v0.copy_(gvf); else g_v0.zero_();
  } else {
    // Per-(batch row, neuron) partial sums, reduced over the batch in a fixed order by the kernel.
    Tensor partial = at::empty({3, B, N}, opts);
    AT_DISPATCH_FLOATING_TYPES(uc.scalar_type(), "lif_backward_cpu", [&] {
      cpu::BackwardArgs<scalar_t> a{};
      a.gs = gs.const_data_ptr<scalar_t>();
      a.gw = gw.defined() ? gw.const_data_ptr<scalar_t>() : nullptr;
      a.gvf = gvf.defined() ? gvf.const_data_ptr<scalar_t>() : nullptr;
      a.u = uc.const_data_ptr<scalar_t>();
      a.v0 = v0c.const_data_ptr<scalar_t>();
      a.alpha = al.const_data_ptr<scalar_t>();
      a.thr = th.const_data_ptr<scalar_t>();
      a.window = window;
      a.max_spikes = max_spikes;
      a.surrogate = static_cast<int>(surrogate);
      a.g_in = g_in.mutable_data_ptr<scalar_t>();
      a.g_v0 = g_v0.mutable_data_ptr<scalar_t>();
      scalar_t* p = partial.mutable_data_ptr<scalar_t>();
      a.g_alpha_partial = p;
      a.g_thr_partial = p + B * N;
      a.g_bias_partial = p + 2 * B * N;
      a.g_alpha = g_alpha.mutable_data_ptr<scalar_t>();
      a.g_thr = g_thr.mutable_data_ptr<scalar_t>();
      a.g_bias = g_bias.mutable_data_ptr<scalar_t>();
      a.B = B;
      a.Tn = T;
      a.N = N;
      cpu::backward<scalar_t>(a);
    });
  }
  return {g_in, g_v0, g_alpha, g_thr, g_bias};
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CPU, m) {
  m.impl("lif_forward", &lif::lif_forward_cpu);
  m.impl("lif_backward", &lif::lif_backward_cpu);
}
