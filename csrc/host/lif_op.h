// The LIF ops (SPEC §1-§3) on the ATen side: checks, outputs, the kernels' arguments, the gradient
// sums, and the op functions themselves, for a device's kernels (`Dev`, see HostDevice in
// prepare.h): the device files (cpu/lif.cpp, cuda/lif.cu) only hold kernels.
#pragma once

#include <tuple>
#include <vector>

#include "prepare.h"

namespace lif {

using LifForwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using LifBackwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;

struct LifForwardOp {
  Tensor x, v0, alpha, thr, bias, z, lengths;  // inputs, contiguous (z, lengths maybe undefined)
  Tensor spikes, vmem, v_final, u, v0_saved;   // outputs ((0,) where not asked for)
  int64_t B = 0, T = 0, N = 0;
  bool run = false;  // false: the outputs are already final (an empty shape)
  NoiseSpec noise;
  double max_spikes = 0.0, window = 0.0;

  LifForwardOut outputs() const { return {spikes, vmem, v_final, u, v0_saved}; }

  template <typename IT, typename CT>
  LifForwardArgs<IT, CT> args() const {
    LifForwardArgs<IT, CT> a{};
    a.x = x.const_data_ptr<IT>();
    a.noise = noise_args<CT>(noise, z);
    a.v0 = v0.const_data_ptr<CT>();
    a.v0_stride_b = v0.dim() == 2 ? N : 0;
    a.alpha = per_neuron<CT>(alpha);
    a.thr = per_neuron<CT>(thr);
    a.bias = per_neuron<CT>(bias);
    a.max_spikes = max_spikes;
    a.s_out = spikes.mutable_data_ptr<IT>();
    a.vmem_out = data_or_null<CT>(vmem);
    const bool mask = is_window_mask(u);
    a.u_out = mask ? nullptr : data_or_null<CT>(u);
    a.mask_out = mask ? reinterpret_cast<uint32_t*>(u.mutable_data_ptr<int32_t>()) : nullptr;
    a.window = window;
    a.v_final = v_final.mutable_data_ptr<CT>();
    a.lengths = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
    a.B = B;
    a.Tn = T;
    a.N = N;
    return a;
  }
};

// `host_key` false: in-kernel noise keyed on the device (the CUDA op under graph capture).
// `save_mask` (with save_u): the u output holds the window mask's words (core/mask.h, SPEC §11).
// `checked`: the arguments were checked by a model built on this one (host/adaptive_op.h).
inline LifForwardOp prepare_lif_forward(const Tensor& input, const Tensor& v0,
                                        const Tensor& tau_mem, const Tensor& threshold,
                                        const Tensor& bias, const OptTensor& noise,
                                        const OptTensor& noise_key, double dt, double noise_scale,
                                        double window, double max_spikes, bool record, bool save_u,
                                        const OptTensor& lengths, bool decays, bool save_mask,
                                        bool host_key = true, bool checked = false) {
  LifForwardOp op;
  std::tie(op.B, op.T, op.N) =
      checked ? std::make_tuple(input.size(0), input.size(1), input.size(2))
              : check_forward_args(input, v0, tau_mem, threshold, bias, noise, noise_key, dt,
                                   noise_scale, window, max_spikes, lengths, decays);
  const int64_t B = op.B, T = op.T, N = op.N;
  const auto state = v0.options();
  op.spikes = empty_output({B, T, N}, input.options());
  op.vmem = sequence_output(record, B, T, N, state);
  if (save_u && save_mask) {
    op.u = empty_output({B, mask_words(T), N}, state.dtype(at::kInt));
  } else {
    op.u = sequence_output(save_u, B, T, N, state);
  }
  op.v_final = at::empty({B, N}, state);
  // Not beside a window mask: its backward reads no v0 (no tau term).
  op.v0_saved = saved_state(v0, save_u && !save_mask);
  op.noise = resolve_noise(noise, noise_key, noise_scale, host_key);
  op.run = B > 0 && N > 0 && T > 0;
  if (!op.run) {
    if (B > 0 && N > 0) op.v_final.copy_(v0.expand({B, N}));  // T == 0: the state is v0
    return op;
  }
  op.x = input.contiguous();
  op.v0 = v0.contiguous();
  op.alpha = leak_decay(tau_mem, dt, decays);
  op.thr = threshold.contiguous();
  op.bias = bias.contiguous();
  if (noise.has_value()) op.z = noise->contiguous();
  if (lengths.has_value()) op.lengths = lengths->contiguous();
  op.max_spikes = max_spikes;
  op.window = window;
  return op;
}

struct LifBackwardOp : BackwardSettings {
  Tensor gs, gw, gvf, u, v0, tau, alpha, thr;  // inputs (gs possibly strided)
  Tensor g_in, g_v0, g_tau, g_thr, g_bias;  // outputs, in their forward arguments' shapes
  Tensor partial;  // (3 or 4, B, N) float64 sums (core/args.h)
  int64_t B = 0, T = 0, N = 0;
  bool run = false;

  LifBackwardOut outputs() const { return {g_in, g_v0, g_tau, g_thr, g_bias}; }

  template <typename IT, typename CT>
  LifBackwardArgs<IT, CT> args() const {
    LifBackwardArgs<IT, CT> a{};
    set_grad_spikes<IT>(a, gs, N);
    a.gw = gw.defined() ? gw.const_data_ptr<CT>() : nullptr;
    a.gvf = gvf.defined() ? gvf.const_data_ptr<CT>() : nullptr;
    const bool mask = is_window_mask(u);
    a.u = mask ? nullptr : u.const_data_ptr<CT>();
    a.mask = mask ? reinterpret_cast<const uint32_t*>(u.const_data_ptr<int32_t>()) : nullptr;
    a.v0 = v0.const_data_ptr<CT>();
    a.v0_stride_b = v0.dim() == 2 ? N : 0;
    a.alpha = per_neuron<CT>(alpha);
    a.thr = per_neuron<CT>(thr);
    a.g_in = g_in.mutable_data_ptr<IT>();
    a.g_v0 = v0.dim() == 2 ? g_v0.mutable_data_ptr<CT>() : nullptr;
    a.partial = partial.mutable_data_ptr<double>();
    fill(a);
    a.B = B;
    a.Tn = T;
    a.N = N;
    return a;
  }

  // The parameters' gradients from the kernels' per-row sums: tau_mem (through alpha), threshold,
  // bias; and a shared v0's from its rows'.
  template <typename CT>
  std::vector<GradSum<CT>> grad_sums() const {
    double* p = partial.mutable_data_ptr<double>();
    const int64_t BN = B * N;
    std::vector<GradSum<CT>> sums{
        grad_sum<CT>(p, N, 1, collapse_of(g_tau), g_tau, tau_chain(alpha), tau, dt),
        grad_sum<CT>(p + BN, N, 1, collapse_of(g_thr), g_thr),
        grad_sum<CT>(p + 2 * BN, N, 1, collapse_of(g_bias), g_bias)};
    if (v0.dim() == 1) sums.push_back(grad_sum<CT>(p + 3 * BN, N, 1, kKeepAll, g_v0));
    return sums;
  }
};

// grad_spikes is read as grad_spikes_for_kernels says (in place where its rows allow).
// `partial_rows` > 0 and `checked`: for a model built on this one, which adds its own rows of
// per-row sums after the LIF's four and has checked the arguments (host/adaptive_op.h).
inline LifBackwardOp prepare_lif_backward(const Tensor& grad_spikes, const OptTensor& grad_vmem,
                                          const OptTensor& grad_vfinal, const Tensor& u,
                                          const Tensor& v0, const Tensor& tau_mem,
                                          const Tensor& threshold, double dt, double window,
                                          double max_spikes, int64_t surrogate, bool scalar_bias,
                                          const OptTensor& lengths, bool decays,
                                          int64_t partial_rows = 0, bool checked = false) {
  LifBackwardOp op;
  std::tie(op.B, op.T, op.N) =
      checked ? std::make_tuple(u.size(0), u.size(1), u.size(2))
              : check_backward_args(grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem, threshold,
                                    dt, window, max_spikes, surrogate, lengths, decays);
  const int64_t B = op.B, T = op.T, N = op.N;
  const auto opts = v0.options();
  op.g_in = empty_output({B, T, N}, grad_spikes.options().memory_format(std::nullopt));
  op.g_v0 = at::empty(v0.sizes(), opts);
  op.g_tau = at::empty(tau_mem.sizes(), opts);
  op.g_thr = at::empty(threshold.sizes(), opts);
  op.g_bias = at::empty(scalar_bias ? at::IntArrayRef{} : at::IntArrayRef{N}, opts);
  op.run = B > 0 && N > 0 && T > 0;
  if (!op.run) {
    // Nothing ran: dL/dv0 is the gradient on the final state (summed over the batch for a shared
    // v0); the parameters get none.
    state_grad_without_run(op.g_v0, grad_vfinal, v0, B);
    op.g_tau.zero_();
    op.g_thr.zero_();
    op.g_bias.zero_();
    return op;
  }
  op.gs = grad_spikes_for_kernels(grad_spikes, N);
  if (grad_vmem.has_value()) op.gw = grad_vmem->contiguous();
  if (grad_vfinal.has_value()) op.gvf = grad_vfinal->contiguous();
  op.u = u.contiguous();
  op.v0 = v0.contiguous();
  op.tau = tau_mem.contiguous();
  op.alpha = leak_decay(tau_mem, dt, decays);
  op.thr = threshold.contiguous();
  op.set(lengths, dt, window, max_spikes, surrogate, decays);
  // Written in full by the kernels.
  if (partial_rows == 0) partial_rows = v0.dim() == 2 ? 3 : 4;
  op.partial = empty_output({partial_rows, B, N}, opts.dtype(at::kDouble));
  return op;
}

template <typename Dev>
LifForwardOut lif_forward(const Tensor& input, const Tensor& v0, const Tensor& tau_mem,
                          const Tensor& threshold, const Tensor& bias, const OptTensor& noise,
                          const OptTensor& noise_key, double dt, double noise_scale, double window,
                          double max_spikes, int64_t surrogate, bool record, bool save_u,
                          const OptTensor& lengths, bool decays, bool save_mask) {
  check_save_flags(save_mask, surrogate, false, max_spikes);
  return run_forward_op<Dev>(input, noise, noise_key, noise_scale, [&](bool host_key) {
    return prepare_lif_forward(input, v0, tau_mem, threshold, bias, noise, noise_key, dt,
                               noise_scale, window, max_spikes, record, save_u, lengths, decays,
                               save_mask, host_key);
  });
}

template <typename Dev>
LifBackwardOut lif_backward(const Tensor& grad_spikes, const OptTensor& grad_vmem,
                            const OptTensor& grad_vfinal, const Tensor& u, const Tensor& v0,
                            const Tensor& tau_mem, const Tensor& threshold, double dt,
                            double window, double max_spikes, int64_t surrogate, bool scalar_bias,
                            const OptTensor& lengths, bool decays) {
  return run_backward_op<Dev>(u, [&] {
    return prepare_lif_backward(grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem, threshold, dt,
                                window, max_spikes, surrogate, scalar_bias, lengths, decays);
  });
}

}  // namespace lif
