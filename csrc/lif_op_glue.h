// The device-independent half of the ops: argument checks, contiguous views, output allocation,
// the empty-shape rules and the raw-pointer arguments. csrc/cpu/ and csrc/cuda/ only dispatch on
// the dtype and launch their kernels on what this prepares.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <optional>
#include <type_traits>

#include "lif_args.h"
#include "lif_checks.h"

namespace lif {

using at::Tensor;

// Calls f.template operator()<IT, CT>() for the I/O dtype `io`: CT is the compute type (float for
// float16/bfloat16 input).
#define LIF_DISPATCH_IO(IO, NAME, ...)                                                      \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, IO, NAME, [&] {                 \
    using IT = scalar_t;                                                                    \
    using CT = std::conditional_t<std::is_same_v<IT, double>, double, float>;               \
    __VA_ARGS__();                                                                          \
  })

struct ForwardOp {
  Tensor x, v0, alpha, thr, bias, z;      // inputs, contiguous
  Tensor spikes, w_rec, v_final, u;       // outputs (w_rec, u of shape (0,) when not asked for)
  int64_t B, T, N;
  bool run;                               // false: the outputs are already final (empty shapes)
  NoiseMode noise_mode;
  uint64_t seed, offset;
  double noise_scale, max_spikes;

  std::tuple<Tensor, Tensor, Tensor, Tensor> outputs() const { return {spikes, w_rec, v_final, u}; }

  template <typename IT, typename CT>
  ForwardArgs<IT, CT> args() const {
    ForwardArgs<IT, CT> a{};
    a.x = x.const_data_ptr<IT>();
    a.noise = z.defined() ? z.const_data_ptr<CT>() : nullptr;
    a.noise_mode = noise_mode;
    a.seed = seed;
    a.offset = offset;
    a.noise_scale = noise_scale;
    a.v0 = v0.const_data_ptr<CT>();
    a.alpha = alpha.const_data_ptr<CT>();
    a.thr = thr.const_data_ptr<CT>();
    a.bias = bias.const_data_ptr<CT>();
    a.max_spikes = max_spikes;
    a.s_out = spikes.mutable_data_ptr<IT>();
    a.w_rec = w_rec.numel() ? w_rec.mutable_data_ptr<CT>() : nullptr;
    a.u_out = u.numel() ? u.mutable_data_ptr<CT>() : nullptr;
    a.v_final = v_final.mutable_data_ptr<CT>();
    a.B = B;
    a.Tn = T;
    a.N = N;
    return a;
  }
};

inline ForwardOp prepare_forward(const Tensor& input, const Tensor& v0, const Tensor& alpha,
                                 const Tensor& threshold, const Tensor& bias,
                                 const std::optional<Tensor>& noise,
                                 const std::optional<Tensor>& noise_key, double noise_scale,
                                 double max_spikes, bool record, bool save_u) {
  ForwardOp op{};
  std::tie(op.B, op.T, op.N) = check_forward_args(input, v0, alpha, threshold, bias, noise,
                                                  noise_key, noise_scale, max_spikes);
  const int64_t B = op.B, T = op.T, N = op.N;
  // Contiguous views (no copy when already contiguous, the usual case).
  op.x = input.contiguous();
  op.v0 = v0.contiguous();
  op.alpha = alpha.contiguous();
  op.thr = threshold.contiguous();
  op.bias = bias.contiguous();
  if (noise.has_value()) op.z = noise->contiguous();
  const auto state = op.v0.options();
  op.spikes = at::empty({B, T, N}, op.x.options());
  op.w_rec = at::empty(record ? at::IntArrayRef{B, T, N} : at::IntArrayRef{0}, state);
  op.u = at::empty(save_u ? at::IntArrayRef{B, T, N} : at::IntArrayRef{0}, state);
  op.v_final = at::empty({B, N}, state);
  op.max_spikes = max_spikes;
  op.noise_scale = noise_scale;
  op.noise_mode = op.z.defined() ? kNoiseTensor
                                 : (noise_key.has_value() && noise_scale > 0.0 ? kNoiseKernel
                                                                               : kNoNoise);
  if (op.noise_mode == kNoiseKernel) {
    // The key is a CPU tensor (checked): read on the host, handed to the kernels by value.
    const Tensor key = noise_key->contiguous();
    op.seed = static_cast<uint64_t>(key.const_data_ptr<int64_t>()[0]);
    op.offset = static_cast<uint64_t>(key.const_data_ptr<int64_t>()[1]);
  }
  op.run = B > 0 && N > 0 && T > 0;
  if (B > 0 && N > 0 && T == 0) op.v_final.copy_(op.v0);
  return op;
}

struct BackwardOp {
  Tensor gs, gw, gvf, u, v0, alpha, thr;  // inputs (gs possibly strided, see prepare_backward)
  Tensor g_in, g_v0, g_alpha, g_thr, g_bias, partial;
  int64_t B, T, N;
  bool run;
  double window, max_spikes;
  int surrogate;

  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> outputs() const {
    return {g_in, g_v0, g_alpha, g_thr, g_bias};
  }

  template <typename IT, typename CT>
  BackwardArgs<IT, CT> args() const {
    BackwardArgs<IT, CT> a{};
    a.gs = gs.const_data_ptr<IT>();
    a.gs_stride_b = gs.stride(0);
    a.gs_stride_t = gs.stride(1);
    a.gs_stride_n = N <= 1 ? 1 : gs.stride(2);
    a.gw = gw.defined() ? gw.const_data_ptr<CT>() : nullptr;
    a.gvf = gvf.defined() ? gvf.const_data_ptr<CT>() : nullptr;
    a.u = u.const_data_ptr<CT>();
    a.v0 = v0.const_data_ptr<CT>();
    a.alpha = alpha.const_data_ptr<CT>();
    a.thr = thr.const_data_ptr<CT>();
    a.window = window;
    a.max_spikes = max_spikes;
    a.surrogate = surrogate;
    a.g_in = g_in.mutable_data_ptr<IT>();
    a.g_v0 = g_v0.mutable_data_ptr<CT>();
    a.partial = partial.mutable_data_ptr<CT>();
    a.g_alpha = g_alpha.mutable_data_ptr<CT>();
    a.g_thr = g_thr.mutable_data_ptr<CT>();
    a.g_bias = g_bias.mutable_data_ptr<CT>();
    a.B = B;
    a.Tn = T;
    a.N = N;
    return a;
  }
};

// `gs_broadcast_ok`: the kernel reads grad_spikes in place when each row is contiguous or
// broadcast along the neurons (the expanded ones of `spikes.sum()`); otherwise, or when the kernel
// wants it contiguous, it is copied first.
inline BackwardOp prepare_backward(const Tensor& grad_spikes,
                                   const std::optional<Tensor>& grad_vmem,
                                   const std::optional<Tensor>& grad_vfinal, const Tensor& u,
                                   const Tensor& v0, const Tensor& alpha, const Tensor& threshold,
                                   double window, double max_spikes, int64_t surrogate,
                                   bool gs_broadcast_ok) {
  BackwardOp op{};
  std::tie(op.B, op.T, op.N) = check_backward_args(grad_spikes, grad_vmem, grad_vfinal, u, v0,
                                                   alpha, threshold, window, max_spikes, surrogate);
  const int64_t B = op.B, T = op.T, N = op.N;
  const bool rows_ok = N <= 1 || grad_spikes.stride(2) == 1 ||
                       (gs_broadcast_ok && grad_spikes.stride(2) == 0);
  op.gs = gs_broadcast_ok && rows_ok ? grad_spikes : grad_spikes.contiguous();
  if (grad_vmem.has_value()) op.gw = grad_vmem->contiguous();
  if (grad_vfinal.has_value()) op.gvf = grad_vfinal->contiguous();
  op.u = u.contiguous();
  op.v0 = v0.contiguous();
  op.alpha = alpha.contiguous();
  op.thr = threshold.contiguous();
  op.window = window;
  op.max_spikes = max_spikes;
  op.surrogate = static_cast<int>(surrogate);
  const auto opts = op.u.options();
  op.g_in = at::empty({B, T, N}, op.gs.options().memory_format(at::MemoryFormat::Contiguous));
  op.g_v0 = at::empty({B, N}, opts);
  op.run = B > 0 && N > 0 && T > 0;
  if (!op.run) {
    if (op.gvf.defined()) op.g_v0.copy_(op.gvf); else op.g_v0.zero_();
    op.g_alpha = at::zeros({N}, opts);
    op.g_thr = at::zeros({N}, opts);
    op.g_bias = at::zeros({N}, opts);
    return op;
  }
  // Written in full by the kernels: per-(batch row, neuron) partials, then their sums over the
  // batch in a fixed order (deterministic, no atomics).
  op.partial = at::empty({3, B, N}, opts);
  op.g_alpha = at::empty({N}, opts);
  op.g_thr = at::empty({N}, opts);
  op.g_bias = at::empty({N}, opts);
  return op;
}

}  // namespace lif
