// The adaptive-threshold LIF ops (SPEC §10) on the ATen side, built on the LIF ops
// (host/lif_op.h): the membrane part of the outputs, arguments and gradient sums is the LIF's;
// this adds the adaptation b's (its initial state, records, saved sequence, final state, and the
// parameters tau_adapt and beta_adapt).
#pragma once

#include <tuple>
#include <vector>

#include "../core/adaptive.h"
#include "lif_op.h"

namespace lif {

// (spikes, vmem, adapt, v_final, b_final, u, b_saved, v0_saved, b0_saved)
using AdaptiveForwardOut =
    std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
// (g_input, g_v0, g_b0, g_tau_mem, g_threshold, g_bias, g_tau_adapt, g_beta_adapt)
using AdaptiveBackwardOut =
    std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

struct AdaptiveForwardOp : LifForwardOp {
  Tensor b0, rho, beta;                        // inputs, contiguous
  Tensor adapt, b_final, b_saved, b0_saved;    // outputs ((0,) where not asked for)

  AdaptiveForwardOut outputs() const {
    return {spikes, vmem, adapt, v_final, b_final, u, b_saved, v0_saved, b0_saved};
  }

  template <typename IT, typename CT>
  AdaptiveForwardArgs<IT, CT> args() const {
    AdaptiveForwardArgs<IT, CT> a{};
    a.lif = LifForwardOp::args<IT, CT>();
    a.b0 = b0.const_data_ptr<CT>();
    a.b0_stride_b = b0.dim() == 2 ? N : 0;
    a.rho = per_neuron<CT>(rho);
    a.beta = per_neuron<CT>(beta);
    a.adapt_out = data_or_null<CT>(adapt);
    a.b_out = data_or_null<CT>(b_saved);
    a.b_final = b_final.mutable_data_ptr<CT>();
    return a;
  }
};

inline AdaptiveForwardOp prepare_adaptive_forward(
    const Tensor& input, const Tensor& v0, const Tensor& b0, const Tensor& tau_mem,
    const Tensor& threshold, const Tensor& bias, const Tensor& tau_adapt, const Tensor& beta_adapt,
    const OptTensor& noise, const OptTensor& noise_key, double dt, double noise_scale,
    double window, double max_spikes, bool record, bool save, const OptTensor& lengths,
    bool host_key, int64_t b_every) {
  // Every check before the LIF part draws a noise key or allocates.
  check_adaptive_forward_args(input, v0, b0, tau_mem, threshold, bias, tau_adapt, beta_adapt, noise,
                              noise_key, dt, noise_scale, window, max_spikes, lengths);
  AdaptiveForwardOp op;
  static_cast<LifForwardOp&>(op) =
      prepare_lif_forward(input, v0, tau_mem, threshold, bias, noise, noise_key, dt, noise_scale,
                          window, max_spikes, record, save, lengths, /*decays=*/false,
                          /*save_mask=*/false, host_key, true);
  const int64_t B = op.B, T = op.T, N = op.N;
  const auto state = v0.options();
  op.adapt = sequence_output(record, B, T, N, state);
  // b every b_every steps (the device's choice, core/adaptive.h: every b[t], or checkpoints).
  op.b_saved = empty_output(
      save ? at::IntArrayRef{B, adapt_checkpoint_rows(T, b_every), N} : no_output(), state);
  op.b_final = at::empty({B, N}, state);
  op.b0_saved = saved_state(b0, save);
  if (!op.run) {
    if (B > 0 && N > 0) op.b_final.copy_(b0.expand({B, N}));  // T == 0: the state is b0
    return op;
  }
  op.b0 = b0.contiguous();
  op.rho = decay_of(tau_adapt, dt);
  op.beta = beta_adapt.contiguous();
  return op;
}

struct AdaptiveBackwardOp : LifBackwardOp {
  Tensor gb, gbf, b, b0, tau_adapt, rho, beta;  // inputs
  Tensor g_b0, g_tau_adapt, g_beta;             // outputs, in their forward arguments' shapes

  AdaptiveBackwardOut outputs() const {
    return {g_in, g_v0, g_b0, g_tau, g_thr, g_bias, g_tau_adapt, g_beta};
  }

  template <typename IT, typename CT>
  AdaptiveBackwardArgs<IT, CT> args() const {
    AdaptiveBackwardArgs<IT, CT> a{};
    a.lif = LifBackwardOp::args<IT, CT>();
    a.gb = const_data_or_null<CT>(gb);
    a.gbf = const_data_or_null<CT>(gbf);
    a.b = b.const_data_ptr<CT>();
    a.b0 = b0.const_data_ptr<CT>();
    a.b0_stride_b = b0.dim() == 2 ? N : 0;
    a.rho = per_neuron<CT>(rho);
    a.beta = per_neuron<CT>(beta);
    a.g_b0 = b0.dim() == 2 ? g_b0.mutable_data_ptr<CT>() : nullptr;
    return a;
  }

  // The LIF's sums, then beta_adapt, tau_adapt (through rho) and a shared b0's from its rows'.
  template <typename CT>
  std::vector<GradSum<CT>> grad_sums() const {
    std::vector<GradSum<CT>> sums = LifBackwardOp::grad_sums<CT>();
    double* p = partial.mutable_data_ptr<double>();
    const int64_t BN = B * N;
    sums.push_back(grad_sum<CT>(p + 4 * BN, N, 1, collapse_of(g_beta), g_beta));
    sums.push_back(
        grad_sum<CT>(p + 5 * BN, N, 1, collapse_of(g_tau_adapt), g_tau_adapt, rho, tau_adapt, dt));
    if (b0.dim() == 1) sums.push_back(grad_sum<CT>(p + 6 * BN, N, 1, kKeepAll, g_b0));
    return sums;
  }
};

inline AdaptiveBackwardOp prepare_adaptive_backward(
    const Tensor& grad_spikes, const OptTensor& grad_vmem, const OptTensor& grad_adapt,
    const OptTensor& grad_vfinal, const OptTensor& grad_bfinal, const Tensor& u, const Tensor& b,
    const Tensor& v0, const Tensor& b0, const Tensor& tau_mem, const Tensor& threshold,
    const Tensor& tau_adapt, const Tensor& beta_adapt, double dt, double window, double max_spikes,
    int64_t surrogate, bool scalar_bias, const OptTensor& lengths, int64_t b_every) {
  check_adaptive_backward_args(grad_spikes, grad_vmem, grad_adapt, grad_vfinal, grad_bfinal, u, b,
                               v0, b0, tau_mem, threshold, tau_adapt, beta_adapt, dt, window,
                               max_spikes, surrogate, lengths, b_every);
  AdaptiveBackwardOp op;
  static_cast<LifBackwardOp&>(op) = prepare_lif_backward(
      grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem, threshold, dt, window, max_spikes,
      surrogate, scalar_bias, lengths, /*decays=*/false, b0.dim() == 1 ? 7 : 6, true);
  const auto opts = u.options();
  op.g_b0 = at::empty(b0.sizes(), opts);
  op.g_tau_adapt = at::empty(tau_adapt.sizes(), opts);
  op.g_beta = at::empty(beta_adapt.sizes(), opts);
  if (!op.run) {
    state_grad_without_run(op.g_b0, grad_bfinal, b0, op.B);
    op.g_tau_adapt.zero_();
    op.g_beta.zero_();
    return op;
  }
  if (grad_adapt.has_value()) op.gb = grad_adapt->contiguous();
  if (grad_bfinal.has_value()) op.gbf = grad_bfinal->contiguous();
  op.b = b.contiguous();
  op.b0 = b0.contiguous();
  op.tau_adapt = tau_adapt.contiguous();
  op.rho = decay_of(tau_adapt, dt);
  op.beta = beta_adapt.contiguous();
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
  return run_forward_op<Dev>(input, noise, noise_key, noise_scale, [&](bool host_key) {
    return prepare_adaptive_forward(input, v0, b0, tau_mem, threshold, bias, tau_adapt, beta_adapt,
                                    noise, noise_key, dt, noise_scale, window, max_spikes, record,
                                    save, lengths, host_key, Dev::kEvery);
  });
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
  return run_backward_op<Dev>(u, [&] {
    return prepare_adaptive_backward(grad_spikes, grad_vmem, grad_adapt, grad_vfinal, grad_bfinal,
                                     u, b, v0, b0, tau_mem, threshold, tau_adapt, beta_adapt, dt,
                                     window, max_spikes, surrogate, scalar_bias, lengths,
                                     Dev::kEvery);
  });
}

}  // namespace lif
