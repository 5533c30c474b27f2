// The adaptive-threshold LIF ops (SPEC §10) on the ATen side: checks, outputs, the kernels'
// arguments, the gradient sums and the op functions, for a device's kernels (`Dev`, HostDevice in
// prepare.h), as host/lif_op.h does for the LIF ops.
#pragma once

#include <tuple>
#include <vector>

#include "prepare.h"

namespace lif {

// (spikes, vmem, adapt, v_final, b_final, u, b_saved, v0_saved, b0_saved)
using AdaptiveForwardOut =
    std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
// (g_input, g_v0, g_b0, g_tau_mem, g_threshold, g_bias, g_tau_adapt, g_beta_adapt)
using AdaptiveBackwardOut =
    std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

struct AdaptiveForwardOp {
  Tensor x, v0, b0, alpha, thr, bias, rho, beta, z, lengths;  // inputs, contiguous
  Tensor spikes, vmem, adapt, v_final, b_final, u, b_saved, v0_saved, b0_saved;  // outputs
  int64_t B = 0, T = 0, N = 0;
  bool run = false;
  NoiseSpec noise;
  double max_spikes = 0.0;

  AdaptiveForwardOut outputs() const {
    return {spikes, vmem, adapt, v_final, b_final, u, b_saved, v0_saved, b0_saved};
  }

  template <typename IT, typename CT>
  AdaptiveForwardArgs<IT, CT> args() const {
    AdaptiveForwardArgs<IT, CT> a{};
    a.x = x.const_data_ptr<IT>();
    a.noise = noise_args<CT>(noise, z);
    a.v0 = v0.const_data_ptr<CT>();
    a.b0 = b0.const_data_ptr<CT>();
    a.v0_stride_b = v0.dim() == 2 ? N : 0;
    a.b0_stride_b = b0.dim() == 2 ? N : 0;
    a.alpha = per_neuron<CT>(alpha);
    a.thr = per_neuron<CT>(thr);
    a.bias = per_neuron<CT>(bias);
    a.rho = per_neuron<CT>(rho);
    a.beta = per_neuron<CT>(beta);
    a.max_spikes = max_spikes;
    a.s_out = spikes.mutable_data_ptr<IT>();
    a.vmem_out = data_or_null<CT>(vmem);
    a.adapt_out = data_or_null<CT>(adapt);
    a.u_out = data_or_null<CT>(u);
    a.b_out = data_or_null<CT>(b_saved);
    a.v_final = v_final.mutable_data_ptr<CT>();
    a.b_final = b_final.mutable_data_ptr<CT>();
    a.lengths = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
    a.B = B;
    a.Tn = T;
    a.N = N;
    return a;
  }
};

inline AdaptiveForwardOp prepare_adaptive_forward(
    const Tensor& input, const Tensor& v0, const Tensor& b0, const Tensor& tau_mem,
    const Tensor& threshold, const Tensor& bias, const Tensor& tau_adapt, const Tensor& beta_adapt,
    const OptTensor& noise, const OptTensor& noise_key, double dt, double noise_scale,
    double window, double max_spikes, bool record, bool save, const OptTensor& lengths,
    bool host_key) {
  AdaptiveForwardOp op;
  std::tie(op.B, op.T, op.N) =
      check_adaptive_forward_args(input, v0, b0, tau_mem, threshold, bias, tau_adapt, beta_adapt,
                                  noise, noise_key, dt, noise_scale, window, max_spikes, lengths);
  const int64_t B = op.B, T = op.T, N = op.N;
  const auto state = v0.options();
  op.spikes = empty_output({B, T, N}, input.options());
  op.vmem = sequence_output(record, B, T, N, state);
  op.adapt = sequence_output(record, B, T, N, state);
  op.u = sequence_output(save, B, T, N, state);
  op.b_saved = sequence_output(save, B, T, N, state);
  op.v_final = at::empty({B, N}, state);
  op.b_final = at::empty({B, N}, state);
  op.v0_saved = saved_state(v0, save);
  op.b0_saved = saved_state(b0, save);
  op.noise = resolve_noise(noise, noise_key, noise_scale, host_key);
  op.run = B > 0 && N > 0 && T > 0;
  if (!op.run) {
    if (B > 0 && N > 0) {  // T == 0: the state is the initial one
      op.v_final.copy_(v0.expand({B, N}));
      op.b_final.copy_(b0.expand({B, N}));
    }
    return op;
  }
  op.x = input.contiguous();
  op.v0 = v0.contiguous();
  op.b0 = b0.contiguous();
  op.alpha = decay_of(tau_mem, dt);
  op.rho = decay_of(tau_adapt, dt);
  op.thr = threshold.contiguous();
  op.bias = bias.contiguous();
  op.beta = beta_adapt.contiguous();
  if (noise.has_value()) op.z = noise->contiguous();
  if (lengths.has_value()) op.lengths = lengths->contiguous();
  op.max_spikes = max_spikes;
  return op;
}

struct AdaptiveBackwardOp : BackwardSettings {
  Tensor gs, gw, gb, gvf, gbf, u, b, v0, b0, tau, alpha, thr, tau_adapt, rho, beta;  // inputs
  Tensor g_in, g_v0, g_b0, g_tau, g_thr, g_bias, g_tau_adapt, g_beta;  // outputs
  Tensor partial;  // (5 + 2 where a state is shared, B, N) float64 sums (core/args.h)
  int64_t B = 0, T = 0, N = 0;
  bool run = false;

  AdaptiveBackwardOut outputs() const {
    return {g_in, g_v0, g_b0, g_tau, g_thr, g_bias, g_tau_adapt, g_beta};
  }

  template <typename IT, typename CT>
  AdaptiveBackwardArgs<IT, CT> args() const {
    AdaptiveBackwardArgs<IT, CT> a{};
    set_grad_spikes<IT>(a, gs, N);
    a.gw = const_data_or_null<CT>(gw);
    a.gb = const_data_or_null<CT>(gb);
    a.gvf = const_data_or_null<CT>(gvf);
    a.gbf = const_data_or_null<CT>(gbf);
    a.u = u.const_data_ptr<CT>();
    a.b = b.const_data_ptr<CT>();
    a.v0 = v0.const_data_ptr<CT>();
    a.b0 = b0.const_data_ptr<CT>();
    a.v0_stride_b = v0.dim() == 2 ? N : 0;
    a.b0_stride_b = b0.dim() == 2 ? N : 0;
    a.alpha = per_neuron<CT>(alpha);
    a.thr = per_neuron<CT>(thr);
    a.rho = per_neuron<CT>(rho);
    a.beta = per_neuron<CT>(beta);
    a.g_in = g_in.mutable_data_ptr<IT>();
    a.g_v0 = v0.dim() == 2 ? g_v0.mutable_data_ptr<CT>() : nullptr;
    a.g_b0 = b0.dim() == 2 ? g_b0.mutable_data_ptr<CT>() : nullptr;
    a.partial = partial.mutable_data_ptr<double>();
    fill(a);
    a.B = B;
    a.Tn = T;
    a.N = N;
    return a;
  }

  // tau_mem (through alpha), threshold, bias, beta_adapt, tau_adapt (through rho); a shared v0's
  // and b0's from their rows'.
  template <typename CT>
  std::vector<GradSum<CT>> grad_sums() const {
    double* p = partial.mutable_data_ptr<double>();
    const int64_t BN = B * N;
    std::vector<GradSum<CT>> sums{
        grad_sum<CT>(p, N, 1, collapse_of(g_tau), g_tau, alpha, tau, dt),
        grad_sum<CT>(p + BN, N, 1, collapse_of(g_thr), g_thr),
        grad_sum<CT>(p + 2 * BN, N, 1, collapse_of(g_bias), g_bias),
        grad_sum<CT>(p + 3 * BN, N, 1, collapse_of(g_beta), g_beta),
        grad_sum<CT>(p + 4 * BN, N, 1, collapse_of(g_tau_adapt), g_tau_adapt, rho, tau_adapt, dt)};
    if (v0.dim() == 1) sums.push_back(grad_sum<CT>(p + 5 * BN, N, 1, kKeepAll, g_v0));
    if (b0.dim() == 1) sums.push_back(grad_sum<CT>(p + 6 * BN, N, 1, kKeepAll, g_b0));
    return sums;
  }
};

inline AdaptiveBackwardOp prepare_adaptive_backward(
    const Tensor& grad_spikes, const OptTensor& grad_vmem, const OptTensor& grad_adapt,
    const OptTensor& grad_vfinal, const OptTensor& grad_bfinal, const Tensor& u, const Tensor& b,
    const Tensor& v0, const Tensor& b0, const Tensor& tau_mem, const Tensor& threshold,
    const Tensor& tau_adapt, const Tensor& beta_adapt, double dt, double window, double max_spikes,
    int64_t surrogate, bool scalar_bias, const OptTensor& lengths) {
  AdaptiveBackwardOp op;
  std::tie(op.B, op.T, op.N) = check_adaptive_backward_args(
      grad_spikes, grad_vmem, grad_adapt, grad_vfinal, grad_bfinal, u, b, v0, b0, tau_mem,
      threshold, tau_adapt, beta_adapt, dt, window, max_spikes, surrogate, lengths);
  const int64_t B = op.B, T = op.T, N = op.N;
  const auto opts = u.options();
  op.g_in = empty_output({B, T, N}, grad_spikes.options().memory_format(std::nullopt));
  op.g_v0 = at::empty(v0.sizes(), opts);
  op.g_b0 = at::empty(b0.sizes(), opts);
  op.g_tau = at::empty(tau_mem.sizes(), opts);
  op.g_thr = at::empty(threshold.sizes(), opts);
  op.g_bias = at::empty(scalar_bias ? at::IntArrayRef{} : at::IntArrayRef{N}, opts);
  op.g_tau_adapt = at::empty(tau_adapt.sizes(), opts);
  op.g_beta = at::empty(beta_adapt.sizes(), opts);
  op.run = B > 0 && N > 0 && T > 0;
  if (!op.run) {
    state_grad_without_run(op.g_v0, grad_vfinal, v0, B);
    state_grad_without_run(op.g_b0, grad_bfinal, b0, B);
    for (Tensor* g : {&op.g_tau, &op.g_thr, &op.g_bias, &op.g_tau_adapt, &op.g_beta}) g->zero_();
    return op;
  }
  op.gs = grad_spikes_for_kernels(grad_spikes, N);
  if (grad_vmem.has_value()) op.gw = grad_vmem->contiguous();
  if (grad_adapt.has_value()) op.gb = grad_adapt->contiguous();
  if (grad_vfinal.has_value()) op.gvf = grad_vfinal->contiguous();
  if (grad_bfinal.has_value()) op.gbf = grad_bfinal->contiguous();
  op.u = u.contiguous();
  op.b = b.contiguous();
  op.v0 = v0.contiguous();
  op.b0 = b0.contiguous();
  op.tau = tau_mem.contiguous();
  op.alpha = decay_of(tau_mem, dt);
  op.thr = threshold.contiguous();
  op.tau_adapt = tau_adapt.contiguous();
  op.rho = decay_of(tau_adapt, dt);
  op.beta = beta_adapt.contiguous();
  op.set(lengths, dt, window, max_spikes, surrogate);
  const int64_t rows = (v0.dim() == 1 || b0.dim() == 1) ? 7 : 5;
  // Written in full by the kernels (the rows of a state that is not shared stay unused).
  op.partial = empty_output({rows, B, N}, opts.dtype(at::kDouble));
  return op;
}

template <typename Dev>
AdaptiveForwardOut adaptive_forward(const Tensor& input, const Tensor& v0, const Tensor& b0,
                                    const Tensor& tau_mem, const Tensor& threshold,
                                    const Tensor& bias, const Tensor& tau_adapt,
                                    const Tensor& beta_adapt, const OptTensor& noise,
                                    const OptTensor& noise_key, double dt, double noise_scale,
                                    double window, double max_spikes, int64_t /*surrogate*/,
                                    bool record, bool save, const OptTensor& lengths) {
  const c10::DeviceGuard guard(input.device());
  const bool device_key = Dev::noise_keyed_on_device(noise, noise_key, noise_scale);
  AdaptiveForwardOp op = prepare_adaptive_forward(
      input, v0, b0, tau_mem, threshold, bias, tau_adapt, beta_adapt, noise, noise_key, dt,
      noise_scale, window, max_spikes, record, save, lengths, !device_key);
  if (op.run) {
    if (device_key) Dev::key_noise_on_device(op.noise, op.T, input.device());
    LIF_DISPATCH_IO(op.x.scalar_type(), "adaptive_forward", [&] {
      count_launch();
      Dev::forward(op.args<IT, CT>());
    });
  }
  return op.outputs();
}

template <typename Dev>
AdaptiveBackwardOut adaptive_backward(const Tensor& grad_spikes, const OptTensor& grad_vmem,
                                      const OptTensor& grad_adapt, const OptTensor& grad_vfinal,
                                      const OptTensor& grad_bfinal, const Tensor& u,
                                      const Tensor& b, const Tensor& v0, const Tensor& b0,
                                      const Tensor& tau_mem, const Tensor& threshold,
                                      const Tensor& tau_adapt, const Tensor& beta_adapt, double dt,
                                      double window, double max_spikes, int64_t surrogate,
                                      bool scalar_bias, const OptTensor& lengths) {
  const c10::DeviceGuard guard(u.device());
  AdaptiveBackwardOp op = prepare_adaptive_backward(
      grad_spikes, grad_vmem, grad_adapt, grad_vfinal, grad_bfinal, u, b, v0, b0, tau_mem,
      threshold, tau_adapt, beta_adapt, dt, window, max_spikes, surrogate, scalar_bias, lengths);
  if (op.run) {
    LIF_DISPATCH_IO(op.gs.scalar_type(), "adaptive_backward", [&] {
      count_launch();
      Dev::backward(op.args<IT, CT>());
      Dev::grad_sums(op.template grad_sums<CT>(), op.B);
    });
  }
  return op.outputs();
}

}  // namespace lif
