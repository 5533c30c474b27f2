// CPU implementations of the lif_cuda ops: argument checks, allocation, and the call into the
// raw-pointer kernels of lif_kernel_cpu.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../lif_checks.h"
#include "lif_cpu.h"

namespace lif {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor, Tensor, Tensor> lif_forward_cpu(
    const Tensor& input, const Tensor& v0, const Tensor& alpha, const Tensor& threshold,
    const Tensor& bias, const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_key,
    double noise_scale, double /*window*/, double max_spikes, int64_t /*surrogate*/, bool record,
    bool save_u) {
  auto [B, T, N] = check_forward_args(input, v0, alpha, threshold, bias, noise, noise_key,
                                      noise_scale, max_spikes);
  // Contiguous views (no copy when already contiguous, the usual case).
  const Tensor x = input.contiguous();
  const Tensor v0c = v0.contiguous();
  const Tensor al = alpha.contiguous(), th = threshold.contiguous(), bi = bias.contiguous();
  const Tensor z = noise.has_value() ? noise->contiguous() : Tensor();
  const auto state_opts = v0c.options();
  Tensor spikes = at::empty({B, T, N}, x.options());
  Tensor w_rec = at::empty(record ? at::IntArrayRef{B, T, N} : at::IntArrayRef{0}, state_opts);
  Tensor u = at::empty(save_u ? at::IntArrayRef{B, T, N} : at::IntArrayRef{0}, state_opts);
  Tensor v_final = at::empty({B, N}, state_opts);
  if (B == 0 || N == 0) return {spikes, w_rec, v_final, u};
  if (T == 0) {
    v_final.copy_(v0c);
    return {spikes, w_rec, v_final, u};
  }
  const bool kernel_noise = noise_key.has_value() && noise_scale > 0.0;
  uint64_t seed = 0, offset = 0;
  if (kernel_noise) {
    const Tensor key = noise_key->contiguous();
    seed = static_cast<uint64_t>(key.const_data_ptr<int64_t>()[0]);
    offset = static_cast<uint64_t>(key.const_data_ptr<int64_t>()[1]);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lif_forward_cpu", [&] {
    using IT = scalar_t;
    using CT = std::conditional_t<std::is_same_v<IT, double>, double, float>;
    cpu::ForwardArgs<IT, CT> a{};
    a.x = x.const_data_ptr<IT>();
    a.noise = z.defined() ? z.const_data_ptr<CT>() : nullptr;
    a.noise_mode = z.defined() ? cpu::kNoiseTensor : (kernel_noise ? cpu::kNoiseKernel : cpu::kNoNoise);
    a.seed = seed;
    a.offset = offset;
    a.noise_scale = noise_scale;
    a.v0 = v0c.const_data_ptr<CT>();
    a.alpha = al.const_data_ptr<CT>();
    a.thr = th.const_data_ptr<CT>();
    a.bias = bi.const_data_ptr<CT>();
    a.max_spikes = max_spikes;
    a.s_out = spikes.mutable_data_ptr<IT>();
    a.w_rec = record ? w_rec.mutable_data_ptr<CT>() : nullptr;
    a.u_out = save_u ? u.mutable_data_ptr<CT>() : nullptr;
    a.v_final = v_final.mutable_data_ptr<CT>();
    a.B = B;
    a.Tn = T;
    a.N = N;
    cpu::forward<IT, CT>(a);
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
  // grad_spikes is read with its strides when each row is contiguous or broadcast along the
  // neurons (e.g. the expanded ones of `spikes.sum()`); anything else is copied first.
  const bool gs_rows_ok = N <= 1 || grad_spikes.stride(2) == 1 || grad_spikes.stride(2) == 0;
  const Tensor gs = gs_rows_ok ? grad_spikes : grad_spikes.contiguous();
  const Tensor gw = grad_vmem.has_value() ? grad_vmem->contiguous() : Tensor();
  const Tensor gvf = grad_vfinal.has_value() ? grad_vfinal->contiguous() : Tensor();
  const Tensor uc = u.contiguous(), v0c = v0.contiguous();
  const Tensor al = alpha.contiguous(), th = threshold.contiguous();
  const auto opts = uc.options();
  Tensor g_in = at::empty({B, T, N}, gs.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor g_v0 = at::empty({B, N}, opts);
  Tensor g_alpha = at::zeros({N}, opts), g_thr = at::zeros({N}, opts),
         g_bias = at::zeros({N}, opts);
  if (B == 0 || N == 0 || T == 0) {
    if (gvf.defined()) g_v0.copy_(gvf); else g_v0.zero_();
    return {g_in, g_v0, g_alpha, g_thr, g_bias};
  }
  // Per-(batch row, neuron) partial sums, reduced over the batch in a fixed order by the kernel.
  Tensor partial = at::empty({3, B, N}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gs.scalar_type(), "lif_backward_cpu", [&] {
    using IT = scalar_t;
    using CT = std::conditional_t<std::is_same_v<IT, double>, double, float>;
    cpu::BackwardArgs<IT, CT> a{};
    a.gs = gs.const_data_ptr<IT>();
    a.gs_stride_b = gs.stride(0);
    a.gs_stride_t = gs.stride(1);
    a.gs_stride_n = N <= 1 ? 1 : gs.stride(2);
    a.gw = gw.defined() ? gw.const_data_ptr<CT>() : nullptr;
    a.gvf = gvf.defined() ? gvf.const_data_ptr<CT>() : nullptr;
    a.u = uc.const_data_ptr<CT>();
    a.v0 = v0c.const_data_ptr<CT>();
    a.alpha = al.const_data_ptr<CT>();
    a.thr = th.const_data_ptr<CT>();
    a.window = window;
    a.max_spikes = max_spikes;
    a.surrogate = static_cast<int>(surrogate);
    a.g_in = g_in.mutable_data_ptr<IT>();
    a.g_v0 = g_v0.mutable_data_ptr<CT>();
    CT* p = partial.mutable_data_ptr<CT>();
    a.g_alpha_partial = p;
    a.g_thr_partial = p + B * N;
    a.g_bias_partial = p + 2 * B * N;
    a.g_alpha = g_alpha.mutable_data_ptr<CT>();
    a.g_thr = g_thr.mutable_data_ptr<CT>();
    a.g_bias = g_bias.mutable_data_ptr<CT>();
    a.B = B;
    a.Tn = T;
    a.N = N;
    cpu::backward<IT, CT>(a);
  });
  return {g_in, g_v0, g_alpha, g_thr, g_bias};
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CPU, m) {
  m.impl("lif_forward", &lif::lif_forward_cpu);
  m.impl("lif_backward", &lif::lif_backward_cpu);
}
