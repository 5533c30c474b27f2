// The synaptic ops (SPEC §7) on the ATen side, as lif_op.h is for the LIF ops: checks, outputs,
// the kernels' arguments, the gradient sums, the time loop of the recurrent model, and the op
// functions for a device's kernels (`Dev`).
//
// Recurrent weights: the time loop runs here, in C++. Each step calls the very ATen function that
// Rockpool calls, r = at::linear(s_prev, w_rec.t()), on the same device and in the same dtype (so r
// has Rockpool's bits), then the fused step kernel. Its backward runs the reverse loop with one
// matrix product per step (dL/ds[t] = dL/dr[t+1] @ w_rec^T) and one fused kernel, and dL/dw_rec as
// one product over all steps at the end: s_prev^T (N, B*T) @ dL/dr (B*T, N*S).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/gt.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "prepare.h"

namespace lif {

using SynForwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                 Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using SynBackwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                  Tensor, Tensor, Tensor, Tensor, Tensor>;

struct SynForwardOp {
  // inputs (contiguous), s0/w_rec/z/lengths and the AHP's w_ahp/gamma/h0 maybe undefined
  Tensor x, v0, i0, s0, alpha, beta, thr, bias, w_rec, z, lengths, w_ahp, gamma, h0;
  // outputs ((0,) where not asked for, or without the AHP current)
  Tensor spikes, vmem, isyn, irec, v_final, i_final, s_final, u, i_pre, v0_saved, s0_saved;
  Tensor iahp, h_final, h_pre;
  Tensor counts;  // (B,T,N) uint8 spike counts kept with the mask, or (0,)
  SynShape sh{};
  bool run = false;  // false: the outputs are already final (an empty shape)
  bool ahp = false;  // with the AHP current (SPEC §9)
  NoiseSpec noise;
  double max_spikes = 0.0;
  double window = 0.0;  // the window mask's (u is the mask: an int32 tensor)

  SynForwardOut outputs() const {
    return {spikes, vmem,     isyn,     irec, v_final, i_final, s_final, u,
            i_pre,  v0_saved, s0_saved, iahp, h_final, h_pre,   counts};
  }

  // The kernel arguments for the steps [t0, t0 + steps): the state comes from v0/i0 at t0 == 0,
  // from the final-state buffers (where the previous call left it) after; `r` is the step's
  // recurrent current (steps == 1) or undefined.
  template <typename IT, typename CT>
  SynForwardArgs<IT, CT> args(int64_t t0, int64_t steps, const Tensor& r) const {
    const int64_t N = sh.N, S = sh.S;
    SynForwardArgs<IT, CT> a{};
    a.x = x.const_data_ptr<IT>();
    a.noise = noise_args<CT>(noise, z);
    if (t0 == 0) {
      a.v0 = v0.const_data_ptr<CT>();
      a.v0_stride_b = v0.dim() == 2 ? N : 0;
      a.i0 = i0.const_data_ptr<CT>();
      a.i0_stride_b = i0.dim() == 3 ? N * S : 0;
    } else {
      a.v0 = v_final.const_data_ptr<CT>();
      a.v0_stride_b = N;
      a.i0 = i_final.const_data_ptr<CT>();
      a.i0_stride_b = N * S;
    }
    a.r = r.defined() ? r.const_data_ptr<CT>() : nullptr;
    a.alpha = per_neuron<CT>(alpha);
    a.thr = per_neuron<CT>(thr);
    a.bias = per_neuron<CT>(bias);
    a.beta = per_synapse<CT>(beta);
    a.max_spikes = max_spikes;
    a.s_out = spikes.mutable_data_ptr<IT>();
    a.s_last = s_final.mutable_data_ptr<CT>();
    a.vmem_out = data_or_null<CT>(vmem);
    a.isyn_out = data_or_null<CT>(isyn);
    a.irec_out = r.defined() ? data_or_null<CT>(irec) : nullptr;
    const bool mask = is_window_mask(u);
    a.u_out = mask ? nullptr : data_or_null<CT>(u);
    a.mask_out = mask ? reinterpret_cast<uint32_t*>(u.mutable_data_ptr<int32_t>()) : nullptr;
    a.window = window;
    a.counts_out = counts.numel() ? counts.mutable_data_ptr<uint8_t>() : nullptr;
    a.i_pre_out = i_pre.dim() == 4 ? data_or_null<CT>(i_pre) : nullptr;
    a.v_final = v_final.mutable_data_ptr<CT>();
    a.i_final = i_final.mutable_data_ptr<CT>();
    if (ahp) {
      a.h0 = t0 == 0 ? h0.const_data_ptr<CT>() : h_final.const_data_ptr<CT>();
      a.h0_stride_b = t0 == 0 && h0.dim() == 1 ? 0 : N;
      a.w_ahp = per_neuron<CT>(w_ahp);
      a.gamma = per_neuron<CT>(gamma);
      a.iahp_out = data_or_null<CT>(iahp);
      a.h_pre_out = data_or_null<CT>(h_pre);
      a.h_final = h_final.mutable_data_ptr<CT>();
    }
    a.lengths = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
    a.B = sh.B;
    a.Tn = sh.T;
    a.N = N;
    a.S = S;
    a.t0 = t0;
    a.steps = steps;
    return a;
  }
};

inline SynForwardOp prepare_syn_forward(
    const Tensor& input, const Tensor& v0, const Tensor& i0, const std::optional<Tensor>& s0,
    const Tensor& tau_mem, const Tensor& tau_syn, const Tensor& threshold, const Tensor& bias,
    const std::optional<Tensor>& w_rec, const std::optional<Tensor>& noise,
    const std::optional<Tensor>& noise_key, double dt, double noise_scale, double window,
    double max_spikes, bool record, bool save, const std::optional<Tensor>& lengths,
    const std::optional<Tensor>& w_ahp, const std::optional<Tensor>& tau_ahp,
    const std::optional<Tensor>& h0, bool decays, bool save_mask, bool save_i_pre, bool save_h_pre,
    bool save_counts, bool host_key = true) {
  SynForwardOp op;
  op.sh = check_syn_forward_args(input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise,
                                 noise_key, dt, noise_scale, window, max_spikes, lengths, decays);
  const int64_t B = op.sh.B, T = op.sh.T, N = op.sh.N, S = op.sh.S;
  op.ahp = check_ahp_args(w_ahp, tau_ahp, h0, v0.scalar_type(), input, B, N);
  const auto state = v0.options();
  const at::IntArrayRef empty = no_output();
  op.spikes = empty_output({B, T, N}, input.options());
  op.vmem = empty_output(record ? at::IntArrayRef{B, T, N} : empty, state);
  op.isyn = empty_output(record ? at::IntArrayRef{B, T, N, S} : empty, state);
  // The record of r: zeros without recurrent weights (Rockpool adds linear(s, 0) = 0).
  op.irec = empty_output(record ? at::IntArrayRef{B, T, N, S} : empty, state);
  if (record && !w_rec.has_value()) op.irec.zero_();
  // What the backward needs (SPEC §11, the autograd kernel decides): u, or the window mask's
  // words in its place; the currents before their decay only for tau_syn's gradient ((0,S)
  // otherwise: the backward reads S from it), h_pre only for tau_ahp's.
  if (save && save_mask) {
    op.u = empty_output({B, mask_words(T), N}, state.dtype(at::kInt));
  } else {
    op.u = empty_output(save ? at::IntArrayRef{B, T, N} : empty, state);
  }
  op.i_pre = save && !save_i_pre ? at::empty({0, S}, state)
                                 : empty_output(save ? at::IntArrayRef{B, T, N, S} : empty, state);
  op.v_final = at::empty({B, N}, state);
  op.i_final = at::empty({B, N, S}, state);
  op.s_final = at::empty({B, N}, state);
  // Copies: a module writes its state in place after the call (saving its tensors would make the
  // backward raise), and the backward reads v0 (tau_mem's gradient) and s0 (w_rec's, w_ahp's).
  op.v0_saved = save ? v0.clone(at::MemoryFormat::Contiguous) : at::empty(empty, state);
  op.s0_saved =
      save && s0.has_value() ? s0->clone(at::MemoryFormat::Contiguous) : at::empty(empty, state);
  // The AHP current: its record (B,T,N), final state (B,N), and h_pre (B,T,N) for the backward.
  op.iahp = empty_output(op.ahp && record ? at::IntArrayRef{B, T, N} : empty, state);
  op.h_final = op.ahp ? at::empty({B, N}, state) : at::empty(empty, state);
  op.h_pre = empty_output(op.ahp && save && save_h_pre ? at::IntArrayRef{B, T, N} : empty, state);
  // The spikes as counts in the smallest exact integer type (SPEC §11), beside the mask.
  const bool counts = save && save_mask && save_counts;  // check_save_flags checked the flags
  op.counts = counts ? empty_output({B, T, N}, state.dtype(at::kByte)) : at::empty(empty, state);
  op.noise = resolve_noise(noise, noise_key, noise_scale, host_key);
  // The spike state s[-1] (the recurrent product's first input): s0, or zeros.
  if (B > 0 && N > 0) {
    if (s0.has_value()) {
      op.s_final.copy_(s0->expand({B, N}));
    } else {
      op.s_final.zero_();
    }
  }
  op.run = B > 0 && N > 0 && T > 0;
  if (!op.run) {
    if (B > 0 && N > 0) {  // T == 0: the state is the initial state
      op.v_final.copy_(v0.expand({B, N}));
      op.i_final.copy_(i0.expand({B, N, S}));
      if (op.ahp) op.h_final.copy_(h0->expand({B, N}));
    }
    return op;
  }
  op.x = input.contiguous();
  op.v0 = v0.contiguous();
  op.i0 = i0.contiguous();
  op.alpha = leak_decay(tau_mem, dt, decays);
  op.beta = leak_decay(tau_syn, dt, decays);
  op.thr = threshold.contiguous();
  op.bias = bias.contiguous();
  if (w_rec.has_value()) op.w_rec = *w_rec;
  if (noise.has_value()) op.z = noise->contiguous();
  if (lengths.has_value()) op.lengths = lengths->contiguous();
  if (op.ahp) {
    op.w_ahp = w_ahp->contiguous();
    op.gamma = decay_of(*tau_ahp, dt);
    op.h0 = h0->contiguous();
  }
  op.max_spikes = max_spikes;
  op.window = window;
  return op;
}

// The forward: one kernel call over all steps, or, with recurrent weights, per step r = the ATen
// product Rockpool computes, then the step kernel (which leaves s[t] in s_final for the next one).
template <typename IT, typename CT, typename Launch>
void run_syn_forward(const SynForwardOp& op, Launch&& launch) {
  if (!op.w_rec.defined()) {
    count_launch();
    launch(op.args<IT, CT>(0, op.sh.T, Tensor()));
    return;
  }
  const Tensor w_t = op.w_rec.t();
  for (int64_t t = 0; t < op.sh.T; ++t) {
    const Tensor r = at::linear(op.s_final, w_t);
    count_launch();
    launch(op.args<IT, CT>(t, 1, r));
  }
}

struct SynBackwardOp : BackwardSettings {
  Tensor gs, gw, gi, gr, u, i_pre, v0, s0, tau_mem, tau_syn, alpha, beta, thr, w_rec;  // inputs
  Tensor counts;  // the spikes as uint8 counts, kept with the mask (or undefined)
  Tensor gh, h_pre, w_ahp, tau_ahp, gamma;  // the AHP current's inputs (SPEC §9)
  // outputs in their forward arguments' shapes ((0,) where there is none)
  Tensor g_in, g_v0, g_i0, g_s0, g_tau_mem, g_tau_syn, g_thr, g_bias, g_w_rec, g_noise;
  Tensor g_h0, g_w_ahp, g_tau_ahp;
  Tensor W, I, W64, I64, s0_rows, S064, partial, beta_sums, g_r, s_prev, gs_rec;  // scratch
  Tensor H, H64;  // the AHP's carried gradient (dL/dh0 at the end)
  SynShape sh{};
  bool run = false, scalar_bias = false, i0_shared = false, ahp = false;

  SynBackwardOut outputs() const {
    return {g_in,   g_v0,    g_i0,    g_s0, g_tau_mem, g_tau_syn, g_thr,
            g_bias, g_w_rec, g_noise, g_h0, g_w_ahp,   g_tau_ahp};
  }

  template <typename IT, typename CT>
  SynBackwardArgs<IT, CT> args(int64_t t0, int64_t steps, bool with_gs_rec) const {
    const int64_t B = sh.B, N = sh.N;
    SynBackwardArgs<IT, CT> sa{};
    set_grad_spikes<IT>(sa, gs, N);
    sa.gs_rec = with_gs_rec ? gs_rec.const_data_ptr<CT>() : nullptr;
    sa.gw = gw.defined() ? gw.const_data_ptr<CT>() : nullptr;
    sa.gi = gi.defined() ? gi.const_data_ptr<CT>() : nullptr;
    sa.gr = gr.defined() ? gr.const_data_ptr<CT>() : nullptr;
    const bool mask = is_window_mask(u);
    sa.u = mask ? nullptr : u.const_data_ptr<CT>();
    sa.mask = mask ? reinterpret_cast<const uint32_t*>(u.const_data_ptr<int32_t>()) : nullptr;
    sa.counts = counts.defined() ? counts.const_data_ptr<uint8_t>() : nullptr;
    sa.i_pre = i_pre.dim() == 4 ? const_data_or_null<CT>(i_pre) : nullptr;
    sa.v0 = v0.const_data_ptr<CT>();
    sa.v0_stride_b = v0.dim() == 2 ? N : 0;
    sa.s0 = s0.defined() ? s0.const_data_ptr<CT>() : nullptr;
    sa.s0_stride_b = s0.defined() && s0.dim() == 2 ? N : 0;
    sa.alpha = per_neuron<CT>(alpha);
    sa.thr = per_neuron<CT>(thr);
    sa.beta = per_synapse<CT>(beta);
    sa.W = W.mutable_data_ptr<CT>();
    sa.I = I.mutable_data_ptr<CT>();
    sa.g_in = g_in.mutable_data_ptr<IT>();
    sa.g_r = g_r.defined() ? g_r.mutable_data_ptr<CT>() : nullptr;
    sa.g_u = g_noise.numel() ? g_noise.mutable_data_ptr<CT>() : nullptr;
    sa.s_prev = s_prev.defined() ? s_prev.mutable_data_ptr<CT>() : nullptr;
    sa.partial = partial.mutable_data_ptr<double>();
    sa.beta_sums = data_or_null<CT>(beta_sums);
    if (ahp) {
      sa.h_pre = const_data_or_null<CT>(h_pre);
      sa.gh = gh.defined() ? gh.const_data_ptr<CT>() : nullptr;
      sa.w_ahp = per_neuron<CT>(w_ahp);
      sa.gamma = per_neuron<CT>(gamma);
      sa.H = H.mutable_data_ptr<CT>();
    }
    fill(sa);
    sa.B = B;
    sa.Tn = sh.T;
    sa.N = N;
    sa.S = sh.S;
    sa.t0 = t0;
    sa.steps = steps;
    return sa;
  }

  // The parameters' gradients from the kernels' per-row sums: tau_mem (through alpha), threshold,
  // bias, tau_syn (through beta), and with the AHP current tau_ahp (through gamma) and w_ahp.
  // What the forward did not keep (SPEC §11) gives no gradient: its sum is not formed, and its
  // output keeps its zeros (not the sum of the terms the kernels formed without it).
  template <typename CT>
  std::vector<GradSum<CT>> param_sums() {
    const int64_t B = sh.B, N = sh.N, S = sh.S, BN = B * N;
    double* p = partial.mutable_data_ptr<double>();
    std::vector<GradSum<CT>> sums{
        grad_sum<CT>(p, N, S, collapse_of(tau_mem), g_tau_mem, tau_chain(alpha), tau_mem, dt),
        grad_sum<CT>(p + BN, N, S, collapse_of(thr), g_thr),
        grad_sum<CT>(p + 2 * BN, N, S, scalar_bias ? kSumAll : kKeepAll, g_bias)};
    if (i_pre.dim() == 4) {
      const int beta_collapse =
          tau_syn.dim() == 0 ? kSumAll : (tau_syn.size(0) == 1 ? kSumNeurons : kKeepAll);
      sums.push_back(grad_sum<CT>(p + 3 * BN, N * S, S, beta_collapse, g_tau_syn, tau_chain(beta),
                                  tau_syn, dt));
    }
    if (ahp) {  // gamma (into tau_ahp, always a time constant) and w_ahp, after beta's (B,N,S)
      double* pa = p + 3 * BN + BN * S;
      if (h_pre.numel() != 0) {
        sums.push_back(grad_sum<CT>(pa, N, S, collapse_of(tau_ahp), g_tau_ahp, gamma, tau_ahp, dt));
      }
      if (!is_window_mask(u) || counts.defined()) {
        sums.push_back(grad_sum<CT>(pa + BN, N, S, collapse_of(w_ahp), g_w_ahp));
      }
    }
    return sums;
  }

  // A shared initial state's gradient: its rows' (W, I, H carry dL/dv0, dL/di0, dL/dh0 per row;
  // s0_rows dL/ds0's), once the kernels have run.
  template <typename CT>
  std::vector<GradSum<CT>> state_sums() {
    std::vector<GradSum<CT>> sums;
    if (ahp && g_h0.dim() == 1) sums.push_back(shared_state_sum<CT>(H, H64, g_h0));
    if (v0.dim() == 1) sums.push_back(shared_state_sum<CT>(W, W64, g_v0));
    if (i0_shared) sums.push_back(shared_state_sum<CT>(I, I64, g_i0));
    if (s0_rows.defined()) sums.push_back(shared_state_sum<CT>(s0_rows, S064, g_s0));
    return sums;
  }
};

// grad_spikes is read as grad_spikes_for_kernels says (in place where its rows allow), as the LIF
// op's.
inline SynBackwardOp prepare_syn_backward(
    const Tensor& grad_spikes, const std::optional<Tensor>& grad_vmem,
    const std::optional<Tensor>& grad_isyn, const std::optional<Tensor>& grad_irec,
    const std::optional<Tensor>& grad_vfinal, const std::optional<Tensor>& grad_ifinal,
    const Tensor& u, const Tensor& i_pre, const Tensor& v0, const std::optional<Tensor>& s0,
    const Tensor& tau_mem, const Tensor& tau_syn, const Tensor& threshold,
    const std::optional<Tensor>& w_rec, double dt, double window, double max_spikes,
    int64_t surrogate, bool scalar_bias, bool i0_shared, bool noise_grad,
    const std::optional<Tensor>& lengths, const std::optional<Tensor>& grad_iahp,
    const std::optional<Tensor>& grad_hfinal, const std::optional<Tensor>& h_pre,
    const std::optional<Tensor>& w_ahp, const std::optional<Tensor>& tau_ahp, bool h0_shared,
    bool decays, const std::optional<Tensor>& spike_counts) {
  SynBackwardOp op;
  op.sh = check_syn_backward_args(grad_spikes, grad_vmem, grad_isyn, grad_irec, grad_vfinal,
                                  grad_ifinal, u, i_pre, v0, s0, tau_mem, tau_syn, threshold, w_rec,
                                  dt, window, max_spikes, surrogate, lengths, decays);
  const int64_t B = op.sh.B, T = op.sh.T, N = op.sh.N, S = op.sh.S;
  const bool mask = is_window_mask(u);
  const Tensor& ref = mask ? v0 : u;  // the compute dtype and device
  op.ahp = check_ahp_backward_args(grad_iahp, grad_hfinal, h_pre, w_ahp, tau_ahp, ref, op.sh);
  if (spike_counts.has_value()) {
    TORCH_CHECK_VALUE(mask, "spike_counts go with a window mask in u's place");
    check_state_like(*spike_counts, at::kByte, ref, "spike_counts", {B, T, N});
  }
  const auto opts = ref.options();
  const at::IntArrayRef empty = no_output();
  op.g_in = empty_output({B, T, N * S}, grad_spikes.options().memory_format(std::nullopt));
  op.g_v0 = at::empty(v0.sizes(), opts);
  op.g_i0 = at::empty(i0_shared ? at::IntArrayRef{N, S} : at::IntArrayRef{B, N, S}, opts);
  op.g_s0 = s0.has_value() ? at::zeros(s0->sizes(), opts) : at::empty(empty, opts);
  op.g_tau_mem = at::zeros(tau_mem.sizes(), opts);
  op.g_tau_syn = at::zeros(tau_syn.sizes(), opts);
  op.g_thr = at::zeros(threshold.sizes(), opts);
  op.g_bias = at::zeros(scalar_bias ? at::IntArrayRef{} : at::IntArrayRef{N}, opts);
  op.g_w_rec = w_rec.has_value() ? at::zeros(w_rec->sizes(), opts) : at::empty(empty, opts);
  op.g_noise = empty_output(noise_grad ? at::IntArrayRef{B, T, N} : empty, opts);
  op.g_h0 = op.ahp ? at::empty(h0_shared ? at::IntArrayRef{N} : at::IntArrayRef{B, N}, opts)
                   : at::empty(empty, opts);
  op.g_w_ahp = op.ahp ? at::zeros(w_ahp->sizes(), opts) : at::empty(empty, opts);
  op.g_tau_ahp = op.ahp ? at::zeros(tau_ahp->sizes(), opts) : at::empty(empty, opts);
  op.i0_shared = i0_shared;
  op.run = B > 0 && N > 0 && T > 0;
  if (!op.run) {
    // Nothing ran: the initial state's gradient is the final state's (summed over the batch for a
    // shared one); the parameters get none.
    if (B > 0 && grad_vfinal.has_value()) {
      op.g_v0.copy_(v0.dim() == 2 ? *grad_vfinal : shared_state_grad(*grad_vfinal));
    } else {
      op.g_v0.zero_();
    }
    if (B > 0 && grad_ifinal.has_value()) {
      op.g_i0.copy_(i0_shared ? shared_state_grad(*grad_ifinal) : *grad_ifinal);
    } else {
      op.g_i0.zero_();
    }
    if (op.ahp && B > 0 && grad_hfinal.has_value()) {
      op.g_h0.copy_(h0_shared ? shared_state_grad(*grad_hfinal) : *grad_hfinal);
    } else if (op.ahp) {
      op.g_h0.zero_();
    }
    return op;
  }
  op.gs = grad_spikes_for_kernels(grad_spikes, N);
  if (grad_vmem.has_value()) op.gw = grad_vmem->contiguous();
  if (grad_isyn.has_value()) op.gi = grad_isyn->contiguous();
  if (grad_irec.has_value() && w_rec.has_value()) op.gr = grad_irec->contiguous();
  op.u = u.contiguous();
  op.i_pre = i_pre.contiguous();
  op.v0 = v0.contiguous();
  if (s0.has_value()) op.s0 = s0->contiguous();
  op.tau_mem = tau_mem.contiguous();
  op.tau_syn = tau_syn.contiguous();
  op.alpha = leak_decay(tau_mem, dt, decays);
  op.beta = leak_decay(tau_syn, dt, decays);
  op.thr = threshold.contiguous();
  op.set(lengths, dt, window, max_spikes, surrogate, decays);
  op.scalar_bias = scalar_bias;
  // Carried gradients: from the final state's, or zero. W is dL/dv0 itself for (B,N) v0.
  op.W = v0.dim() == 2 ? op.g_v0 : at::empty({B, N}, opts);
  if (grad_vfinal.has_value()) {
    op.W.copy_(*grad_vfinal);
  } else {
    op.W.zero_();
  }
  op.I = i0_shared ? at::empty({B, N, S}, opts) : op.g_i0;
  if (grad_ifinal.has_value()) {
    op.I.copy_(*grad_ifinal);
  } else {
    op.I.zero_();
  }
  if (spike_counts.has_value()) op.counts = spike_counts->contiguous();
  op.partial = at::zeros({(op.ahp ? 5 : 3) * B * N + B * N * S}, opts.dtype(at::kDouble));
  if (op.ahp) {
    if (grad_iahp.has_value()) op.gh = grad_iahp->contiguous();
    op.h_pre = h_pre->contiguous();
    op.w_ahp = w_ahp->contiguous();
    op.tau_ahp = tau_ahp->contiguous();
    op.gamma = decay_of(op.tau_ahp, dt);
    // H carries dL/dh from the final state's gradient; it is dL/dh0 itself for a (B,N) h0.
    op.H = h0_shared ? at::empty({B, N}, opts) : op.g_h0;
    if (grad_hfinal.has_value()) {
      op.H.copy_(*grad_hfinal);
    } else {
      op.H.zero_();
    }
  }
  // A CUDA thread's per-call beta sums where S is not 1 or 2 (SYNAPSES_SWITCH): no registers.
  if (S > 2 && ref.is_cuda()) op.beta_sums = at::empty({B, N, S}, opts);
  if (w_rec.has_value()) {
    op.w_rec = *w_rec;
    op.g_r = empty_output({B, T, N * S}, opts);
    // s[t-1] for w_rec's gradient: from u, or the counts kept with the mask (without them, w_rec
    // is frozen).
    if (!mask || spike_counts.has_value()) op.s_prev = empty_output({B, T, N}, opts);
    op.gs_rec = at::empty({B, N}, opts);
  }
  return op;
}

// The backward: one kernel call over all steps, or, with recurrent weights, the reverse loop (per
// step dL/ds[t] = dL/dr[t+1] @ w_rec^T, then the step kernel); the parameters' gradient sums with
// the last kernel (backward_with_sums: inside it on CUDA); then dL/dw_rec and dL/ds0 as matrix
// products, and a shared initial state's sums.
template <typename Dev, typename IT, typename CT>
void run_syn_backward(SynBackwardOp& op) {
  const int64_t B = op.sh.B, T = op.sh.T, N = op.sh.N, S = op.sh.S;
  const std::vector<GradSum<CT>> params = op.template param_sums<CT>();
  const auto kernel = [&](int64_t t0, int64_t steps, bool with_gs_rec) {
    count_launch();
    const SynBackwardArgs<IT, CT> a = op.template args<IT, CT>(t0, steps, with_gs_rec);
    if (t0 == 0) {
      backward_with_sums<Dev>(a, params, B);
    } else {
      Dev::backward(a);
    }
  };
  if (!op.w_rec.defined()) {
    kernel(0, T, false);
  } else {
    const Tensor w_t = op.w_rec.t();
    for (int64_t t = T - 1; t >= 0; --t) {
      if (t < T - 1) at::mm_out(op.gs_rec, op.g_r.select(1, t + 1), w_t);
      kernel(t, 1, t < T - 1);
    }
    if (op.s_prev.defined()) {
      at::mm_out(op.g_w_rec, op.s_prev.view({B * T, N}).t(), op.g_r.view({B * T, N * S}));
    }
  }
  if (op.s0.defined() && (op.w_rec.defined() || op.ahp)) {
    // dL/ds0 through r[0] and through h_pre[0] (SPEC §9: dL/dh_pre[0] * w_ahp, where the row ran
    // a step at all).
    Tensor rows = op.w_rec.defined() ? at::mm(op.g_r.select(1, 0), op.w_rec.t()) : Tensor();
    if (op.ahp) {
      Tensor fed = at::mul(op.H, op.w_ahp);
      if (op.lengths.defined()) {
        fed = at::mul(fed, at::gt(op.lengths, 0).unsqueeze(1).to(fed.scalar_type()));
      }
      rows = rows.defined() ? at::add(rows, fed) : fed;
    }
    if (op.s0.dim() == 2) {
      op.g_s0.copy_(rows);
    } else {
      op.s0_rows = rows;  // a shared s0: summed over the batch as the parameters (state_sums)
    }
  }
  const std::vector<GradSum<CT>> states = op.template state_sums<CT>();
  if (!states.empty()) Dev::grad_sums(states, B);
}

template <typename Dev>
SynForwardOut synaptic_forward(const Tensor& input, const Tensor& v0, const Tensor& i0,
                               const OptTensor& s0, const Tensor& tau_mem, const Tensor& tau_syn,
                               const Tensor& threshold, const Tensor& bias, const OptTensor& w_rec,
                               const OptTensor& noise, const OptTensor& noise_key, double dt,
                               double noise_scale, double window, double max_spikes,
                               int64_t surrogate, bool record, bool save, const OptTensor& lengths,
                               const OptTensor& w_ahp, const OptTensor& tau_ahp,
                               const OptTensor& h0, bool decays, bool save_mask, bool save_i_pre,
                               bool save_h_pre, bool save_counts) {
  check_save_flags(save_mask, surrogate, save_counts, max_spikes);
  const c10::DeviceGuard guard(input.device());
  const bool device_key = Dev::noise_keyed_on_device(noise, noise_key, noise_scale);
  SynForwardOp op = prepare_syn_forward(
      input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise, noise_key, dt,
      noise_scale, window, max_spikes, record, save, lengths, w_ahp, tau_ahp, h0, decays, save_mask,
      save_i_pre, save_h_pre, save_counts, !device_key);
  if (op.run) {
    // One key for the whole call: the recurrent model's per-step kernels read the same one.
    if (device_key) Dev::key_noise_on_device(op.noise, op.sh.T, input.device());
    LIF_DISPATCH_IO(op.x.scalar_type(), "synaptic_forward", [&] {
      run_syn_forward<IT, CT>(op, [](const SynForwardArgs<IT, CT>& a) { Dev::forward(a); });
    });
  }
  return op.outputs();
}

template <typename Dev>
SynBackwardOut synaptic_backward(
    const Tensor& grad_spikes, const OptTensor& grad_vmem, const OptTensor& grad_isyn,
    const OptTensor& grad_irec, const OptTensor& grad_vfinal, const OptTensor& grad_ifinal,
    const Tensor& u, const Tensor& i_pre, const Tensor& v0, const OptTensor& s0,
    const Tensor& tau_mem, const Tensor& tau_syn, const Tensor& threshold, const OptTensor& w_rec,
    double dt, double window, double max_spikes, int64_t surrogate, bool scalar_bias,
    bool i0_shared, bool noise_grad, const OptTensor& lengths, const OptTensor& grad_iahp,
    const OptTensor& grad_hfinal, const OptTensor& h_pre, const OptTensor& w_ahp,
    const OptTensor& tau_ahp, bool h0_shared, bool decays, const OptTensor& spike_counts) {
  const c10::DeviceGuard guard(u.device());
  SynBackwardOp op = prepare_syn_backward(
      grad_spikes, grad_vmem, grad_isyn, grad_irec, grad_vfinal, grad_ifinal, u, i_pre, v0, s0,
      tau_mem, tau_syn, threshold, w_rec, dt, window, max_spikes, surrogate, scalar_bias, i0_shared,
      noise_grad, lengths, grad_iahp, grad_hfinal, h_pre, w_ahp, tau_ahp, h0_shared, decays,
      spike_counts);
  if (op.run) {
    LIF_DISPATCH_IO(op.gs.scalar_type(), "synaptic_backward",
                    [&] { run_syn_backward<Dev, IT, CT>(op); });
  }
  return op.outputs();
}

}  // namespace lif
