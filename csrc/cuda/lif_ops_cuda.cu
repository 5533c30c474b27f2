// CUDA implementations of the lif_cuda ops: argument checks, allocation on the input's device, and
// the launch of the raw-pointer kernels of lif_kernel_cuda.cu on the current stream. Same schemas
// (csrc/ops.cpp) and same semantics as csrc/cpu/lif_ops_cpu.cpp: empty outputs when B, T or N is 0
// (no launch), the final state is v0 when T is 0, and `record` / `save_u` off give (0,) tensors.
//
// Only c10/cuda and ATen core headers: no ATen/cuda/CUDAContext.h (it needs cuBLAS headers).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <type_traits>

#include "../lif_checks.h"
#include "lif_cuda.h"

namespace lif {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor, Tensor, Tensor> lif_forward_cuda(
    const Tensor& input, const Tensor& v0, const Tensor& alpha, const Tensor& threshold,
    const Tensor& bias, const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_key,
    double noise_scale, double /*window*/, double max_spikes, int64_t /*surrogate*/, bool record,
    bool save_u) {
  auto [B, T, N] = check_forward_args(input, v0, alpha, threshold, bias, noise, noise_key,
                                      noise_scale, max_spikes);
  const c10::cuda::CUDAGuard device_guard(input.device());
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
  // The key is a CPU tensor (checked): read on the host, passed to the kernel by value.
  const bool kernel_noise = noise_key.has_value() && noise_scale > 0.0;
  uint64_t seed = 0, offset = 0;
  if (kernel_noise) {
    const Tensor key = noise_key->contiguous();
    seed = static_cast<uint64_t>(key.const_data_ptr<int64_t>()[0]);
    offset = static_cast<uint64_t>(key.const_data_ptr<int64_t>()[1]);
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(input.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "lif_forward_cuda", [&] {
    using IT = scalar_t;
    using CT = std::conditional_t<std::is_same_v<IT, double>, double, float>;
    gpu::ForwardArgs<IT, CT> a{};
    a.x = x.const_data_ptr<IT>();
    a.noise = z.defined() ? z.const_data_ptr<CT>() : nullptr;
    a.kernel_noise = !z.defined() && kernel_noise;
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
    gpu::forward<IT, CT>(a, stream);
  });
  return {spikes, w_rec, v_final, u};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lif_backward_cuda(
    const Tensor& grad_spikes, const std::optional<Tensor>& grad_vmem,
    const std::optional<Tensor>& grad_vfinal, const Tensor& u, const Tensor& v0,
    const Tensor& alpha, const Tensor& threshold, double window, double max_spikes,
    int64_t surrogate) {
  auto [B, T, N] = check_backward_args(grad_spikes, grad_vmem, grad_vfinal, u, v0, alpha,
                                       threshold, window, max_spikes, surrogate);
  const c10::cuda::CUDAGuard device_guard(u.device());
  const Tensor gs = grad_spikes.contiguous();
  const Tensor gw = grad_vmem.has_value() ? grad_vmem->contiguous() : Tensor();
  const Tensor gvf = grad_vfinal.has_value() ? grad_vfinal->contiguous() : Tensor();
  const Tensor uc = u.contiguous(), v0c = v0.contiguous();
  const Tensor al = alpha.contiguous(), th = threshold.contiguous();
  const auto opts = uc.options();
  Tensor g_in = at::empty({B, T, N}, gs.options());
  Tensor g_v0 = at::empty({B, N}, opts);
  if (B == 0 || N == 0 || T == 0) {
    if (gvf.defined()) g_v0.copy_(gvf); else g_v0.zero_();
    return {g_in, g_v0, at::zeros({N}, opts), at::zeros({N}, opts), at::zeros({N}, opts)};
  }
  // Written in full by the reduction kernel.
  Tensor g_alpha = at::empty({N}, opts), g_thr = at::empty({N}, opts),
         g_bias = at::empty({N}, opts);
  // Per-(batch row, neuron) partial sums, reduced over the batch in a fixed order by the kernel.
  Tensor partial = at::empty({3, B, N}, opts);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(u.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gs.scalar_type(), "lif_backward_cuda", [&] {
    using IT = scalar_t;
    using CT = std::conditional_t<std::is_same_v<IT, double>, double, float>;
    gpu::BackwardArgs<IT, CT> a{};
    a.gs = gs.const_data_ptr<IT>();
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
    a.partial = partial.mutable_data_ptr<CT>();
    a.g_alpha = g_alpha.mutable_data_ptr<CT>();
    a.g_thr = g_thr.mutable_data_ptr<CT>();
    a.g_bias = g_bias.mutable_data_ptr<CT>();
    a.B = B;
    a.Tn = T;
    a.N = N;
    gpu::backward<IT, CT>(a, stream);
  });
  return {g_in, g_v0, g_alpha, g_thr, g_bias};
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CUDA, m) {
  m.impl("lif_forward", &lif::lif_forward_cuda);
  m.impl("lif_backward", &lif::lif_backward_cuda);
}
