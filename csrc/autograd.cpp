// The Autograd kernels of the ops (SPEC §3, §7), in C++ so that a call never enters Python: each
// model's forward (what it saves, which gradients its backward returns) on the skeleton of
// autograd.h; each backward op refuses double backward.
#include <torch/library.h>

#include "autograd.h"
#include "core/surrogate.h"
#include "host/checks.h"

namespace lif {
namespace {

// ---------------------------------------------------------------- the LIF ops (SPEC §1-§3)

using LifForwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using LifBackwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using LifForwardSig = LifForwardOut(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const Tensor&, const OptTensor&, const OptTensor&, double,
                                    double, double, double, int64_t, bool, bool, const OptTensor&,
                                    bool, bool);
using LifBackwardSig = LifBackwardOut(const Tensor&, const OptTensor&, const OptTensor&,
                                      const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                      double, double, double, int64_t, bool, const OptTensor&,
                                      bool);

constexpr char kLifForward[] = "lif_cuda::lif_forward";
constexpr char kLifBackward[] = "lif_cuda::lif_backward";

const auto& lif_forward_op() { return op_handle<LifForwardSig, kLifForward>(); }
const auto& lif_backward_op() { return op_handle<LifBackwardSig, kLifBackward>(); }

class LifForward : public torch::autograd::Function<LifForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& v0,
                               const Tensor& tau_mem, const Tensor& threshold, const Tensor& bias,
                               const OptTensor& noise, const OptTensor& noise_key, double dt,
                               double noise_scale, double window, double max_spikes,
                               int64_t surrogate, bool record, const OptTensor& lengths,
                               bool decays) {
    // SPEC §11: with StepPWL and no gradient wanted through u (tau_mem, threshold), the backward
    // needs only the window mask, one bit per element, instead of u.
    const bool save_mask =
        surrogate == kStepPWL && !tau_mem.requires_grad() && !threshold.requires_grad();
    auto [spikes, vmem, v_final, u, v0_saved] = call_below_autograd(
        lif_forward_op(), input, v0, tau_mem, threshold, bias, noise, noise_key, dt, noise_scale,
        window, max_spikes, surrogate, record, true, lengths, decays, save_mask);
    // v0_saved, not v0: a module updates its state in place right after the forward, and the
    // backward needs the values the forward started from (a saved v0 would make it raise). With
    // the window mask the backward reads no v0 (no tau term): v0_saved is then (0,), no copy.
    ctx->save_for_backward({u, v0_saved, tau_mem, threshold, lengths.value_or(Tensor())});
    ctx->saved_data["v0_rows"] = v0.dim() == 2;
    save_settings(ctx, dt, window, max_spikes, surrogate, record, noise.has_value(),
                  bias.dim() == 0, input.scalar_type());
    // The sequence's shape: a window mask's is not u's.
    ctx->saved_data["shape"] = input.sym_sizes();  // symbolic under torch.export: no specialisation
    ctx->saved_data["decays"] = decays;
    // Unused outputs get undefined gradients, not (B,T,N) zeros; u (and an unrecorded, empty
    // vmem) are internal.
    ctx->set_materialize_grads(false);
    if (record) {
      ctx->mark_non_differentiable({u, v0_saved});
    } else {
      ctx->mark_non_differentiable({vmem, u, v0_saved});
    }
    return {spikes, vmem, v_final, u, v0_saved};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& u = saved[0];  // or the window mask
    const auto input_dtype = saved_input_dtype(ctx);
    const bool noise_grad = ctx->saved_data["has_noise"].toBool() && ctx->needs_input_grad(5);
    const auto shape = ctx->saved_data["shape"].toSymIntVector();
    // Beside a window mask, a v0 of the right shape whose values are never read (an allocation,
    // no kernel).
    const Tensor v0 = is_window_mask(u)
                          ? at::empty_symint(ctx->saved_data["v0_rows"].toBool()
                                                 ? std::vector<c10::SymInt>{shape[0], shape[2]}
                                                 : std::vector<c10::SymInt>{shape[2]},
                                             saved[1].options())
                          : saved[1];
    const Tensor gs = grad_spikes_for(grads[0], v0.options(), shape, input_dtype, noise_grad);
    const OptTensor gw =
        ctx->saved_data["record"].toBool() ? defined_or_none(grads[1]) : std::nullopt;
    const variable_list g = call_backward_op(
        kLifBackward, lif_backward_op(), true, gs, gw, defined_or_none(grads[2]), u, v0, saved[2],
        saved[3], ctx->saved_data["dt"].toDouble(), ctx->saved_data["window"].toDouble(),
        ctx->saved_data["max_spikes"].toDouble(), ctx->saved_data["surrogate"].toInt(),
        ctx->saved_data["scalar_bias"].toBool(), defined_or_none(saved[4]),
        ctx->saved_data["decays"].toBool());
    const auto [g_in, g_noise] = input_and_noise_grads(g[0], noise_grad, input_dtype);
    // One entry per forward argument (15): the last nine are not differentiable.
    return {g_in,     g[1],     g[2],     g[3],     g[4],     g_noise,  Tensor(), Tensor(),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

LifForwardOut lif_forward_autograd(const Tensor& input, const Tensor& v0, const Tensor& tau_mem,
                                   const Tensor& threshold, const Tensor& bias,
                                   const OptTensor& noise, const OptTensor& noise_key, double dt,
                                   double noise_scale, double window, double max_spikes,
                                   int64_t surrogate, bool record, bool save_u,
                                   const OptTensor& lengths, bool decays, bool save_mask) {
  if (!any_requires_grad(input, v0, tau_mem, threshold, bias, noise)) {
    return call_below_autograd(lif_forward_op(), input, v0, tau_mem, threshold, bias, noise,
                               noise_key, dt, noise_scale, window, max_spikes, surrogate, record,
                               save_u, lengths, decays, save_mask);
  }
  const variable_list out =
      LifForward::apply(input, v0, tau_mem, threshold, bias, noise, noise_key, dt, noise_scale,
                        window, max_spikes, surrogate, record, lengths, decays);
  return {out[0], out[1], out[2], out[3], out[4]};
}

LifBackwardOut lif_backward_autograd(const Tensor& grad_spikes, const OptTensor& grad_vmem,
                                     const OptTensor& grad_vfinal, const Tensor& u,
                                     const Tensor& v0, const Tensor& tau_mem,
                                     const Tensor& threshold, double dt, double window,
                                     double max_spikes, int64_t surrogate, bool scalar_bias,
                                     const OptTensor& lengths, bool decays) {
  const variable_list o = call_backward_op(
      kLifBackward, lif_backward_op(), false, grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem,
      threshold, dt, window, max_spikes, surrogate, scalar_bias, lengths, decays);
  return {o[0], o[1], o[2], o[3], o[4]};
}

// ---------------------------------------------------------------- the adaptive ops (SPEC §10)

using AdaptiveForwardOut =
    std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using AdaptiveBackwardOut =
    std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using AdaptiveForwardSig = AdaptiveForwardOut(const Tensor&, const Tensor&, const Tensor&,
                                              const Tensor&, const Tensor&, const Tensor&,
                                              const Tensor&, const Tensor&, const OptTensor&,
                                              const OptTensor&, double, double, double, double,
                                              int64_t, bool, bool, const OptTensor&);
using AdaptiveBackwardSig = AdaptiveBackwardOut(const Tensor&, const OptTensor&, const OptTensor&,
                                                const OptTensor&, const OptTensor&, const Tensor&,
                                                const Tensor&, const Tensor&, const Tensor&,
                                                const Tensor&, const Tensor&, const Tensor&,
                                                const Tensor&, double, double, double, int64_t,
                                                bool, const OptTensor&);

constexpr char kAdaptiveForward[] = "lif_cuda::adaptive_forward";
constexpr char kAdaptiveBackward[] = "lif_cuda::adaptive_backward";

const auto& adaptive_forward_op() { return op_handle<AdaptiveForwardSig, kAdaptiveForward>(); }
const auto& adaptive_backward_op() { return op_handle<AdaptiveBackwardSig, kAdaptiveBackward>(); }

class AdaptiveForward : public torch::autograd::Function<AdaptiveForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& v0,
                               const Tensor& b0, const Tensor& tau_mem, const Tensor& threshold,
                               const Tensor& bias, const Tensor& tau_adapt,
                               const Tensor& beta_adapt, const OptTensor& noise,
                               const OptTensor& noise_key, double dt, double noise_scale,
                               double window, double max_spikes, int64_t surrogate, bool record,
                               const OptTensor& lengths) {
    auto [spikes, vmem, adapt, v_final, b_final, u, b_saved, v0_saved, b0_saved] =
        call_below_autograd(adaptive_forward_op(), input, v0, b0, tau_mem, threshold, bias,
                            tau_adapt, beta_adapt, noise, noise_key, dt, noise_scale, window,
                            max_spikes, surrogate, record, true, lengths);
    // The copies of v0 and b0: a module updates its state in place right after the forward.
    ctx->save_for_backward({u, b_saved, v0_saved, b0_saved, tau_mem, threshold, tau_adapt,
                            beta_adapt, lengths.value_or(Tensor())});
    save_settings(ctx, dt, window, max_spikes, surrogate, record, noise.has_value(),
                  bias.dim() == 0, input.scalar_type());
    ctx->set_materialize_grads(false);
    std::vector<Tensor> internal{u, b_saved, v0_saved, b0_saved};
    if (!record) {
      internal.push_back(vmem);
      internal.push_back(adapt);
    }
    ctx->mark_non_differentiable(internal);
    return {spikes, vmem, adapt, v_final, b_final, u, b_saved, v0_saved, b0_saved};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& u = saved[0];
    const auto input_dtype = saved_input_dtype(ctx);
    const bool noise_grad = ctx->saved_data["has_noise"].toBool() && ctx->needs_input_grad(8);
    const bool record = ctx->saved_data["record"].toBool();
    const auto recorded = [&](int i) { return record ? defined_or_none(grads[i]) : std::nullopt; };
    const variable_list g = call_backward_op(
        kAdaptiveBackward, adaptive_backward_op(), true,
        grad_spikes_for(grads[0], u, input_dtype, noise_grad), recorded(1), recorded(2),
        defined_or_none(grads[3]), defined_or_none(grads[4]), u, saved[1], saved[2], saved[3],
        saved[4], saved[5], saved[6], saved[7], ctx->saved_data["dt"].toDouble(),
        ctx->saved_data["window"].toDouble(), ctx->saved_data["max_spikes"].toDouble(),
        ctx->saved_data["surrogate"].toInt(), ctx->saved_data["scalar_bias"].toBool(),
        defined_or_none(saved[8]));
    const auto [g_in, g_noise] = input_and_noise_grads(g[0], noise_grad, input_dtype);
    // One entry per forward argument (17): the last eight are not differentiable.
    variable_list out(17);
    out[0] = g_in;
    for (int i = 1; i < 8; ++i) out[i] = g[i];
    out[8] = g_noise;
    return out;
  }
};

AdaptiveForwardOut adaptive_forward_autograd(const Tensor& input, const Tensor& v0,
                                             const Tensor& b0, const Tensor& tau_mem,
                                             const Tensor& threshold, const Tensor& bias,
                                             const Tensor& tau_adapt, const Tensor& beta_adapt,
                                             const OptTensor& noise, const OptTensor& noise_key,
                                             double dt, double noise_scale, double window,
                                             double max_spikes, int64_t surrogate, bool record,
                                             bool save, const OptTensor& lengths) {
  if (!any_requires_grad(input, v0, b0, tau_mem, threshold, bias, tau_adapt, beta_adapt, noise)) {
    return call_below_autograd(adaptive_forward_op(), input, v0, b0, tau_mem, threshold, bias,
                               tau_adapt, beta_adapt, noise, noise_key, dt, noise_scale, window,
                               max_spikes, surrogate, record, save, lengths);
  }
  const variable_list o = AdaptiveForward::apply(input, v0, b0, tau_mem, threshold, bias, tau_adapt,
                                                 beta_adapt, noise, noise_key, dt, noise_scale,
                                                 window, max_spikes, surrogate, record, lengths);
  return {o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8]};
}

AdaptiveBackwardOut adaptive_backward_autograd(
    const Tensor& gs, const OptTensor& gw, const OptTensor& gb, const OptTensor& gvf,
    const OptTensor& gbf, const Tensor& u, const Tensor& b, const Tensor& v0, const Tensor& b0,
    const Tensor& tau_mem, const Tensor& threshold, const Tensor& tau_adapt,
    const Tensor& beta_adapt, double dt, double window, double max_spikes, int64_t surrogate,
    bool scalar_bias, const OptTensor& lengths) {
  const variable_list o = call_backward_op(
      kAdaptiveBackward, adaptive_backward_op(), false, gs, gw, gb, gvf, gbf, u, b, v0, b0, tau_mem,
      threshold, tau_adapt, beta_adapt, dt, window, max_spikes, surrogate, scalar_bias, lengths);
  return {o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]};
}

// ---------------------------------------------------------------- the synaptic ops (SPEC §7)

using SynForwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                 Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using SynBackwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                  Tensor, Tensor, Tensor, Tensor, Tensor>;
using SynForwardSig = SynForwardOut(const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                    const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    const OptTensor&, const OptTensor&, const OptTensor&, double,
                                    double, double, double, int64_t, bool, bool, const OptTensor&,
                                    const OptTensor&, const OptTensor&, const OptTensor&, bool,
                                    bool, bool, bool, bool);
using SynBackwardSig = SynBackwardOut(const Tensor&, const OptTensor&, const OptTensor&,
                                      const OptTensor&, const OptTensor&, const OptTensor&,
                                      const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                      const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                      double, double, double, int64_t, bool, bool, bool,
                                      const OptTensor&, const OptTensor&, const OptTensor&,
                                      const OptTensor&, const OptTensor&, const OptTensor&, bool,
                                      bool, const OptTensor&);

constexpr char kSynForward[] = "lif_cuda::synaptic_forward";
constexpr char kSynBackward[] = "lif_cuda::synaptic_backward";

const auto& syn_forward_op() { return op_handle<SynForwardSig, kSynForward>(); }
const auto& syn_backward_op() { return op_handle<SynBackwardSig, kSynBackward>(); }

class SynForward : public torch::autograd::Function<SynForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& v0,
                               const Tensor& i0, const OptTensor& s0, const Tensor& tau_mem,
                               const Tensor& tau_syn, const Tensor& threshold, const Tensor& bias,
                               const OptTensor& w_rec, const OptTensor& noise,
                               const OptTensor& noise_key, double dt, double noise_scale,
                               double window, double max_spikes, int64_t surrogate, bool record,
                               const OptTensor& lengths, const OptTensor& w_ahp,
                               const OptTensor& tau_ahp, const OptTensor& h0, bool decays) {
    // SPEC §11: the window mask instead of u where the StepPWL backward needs nothing else of u
    // (no gradient for tau_mem or threshold); the spikes that w_rec's and w_ahp's gradients read
    // as uint8 counts beside it (max_spikes a whole number <= 255, else u, from which they are
    // recomputed: a count of 2.5 is no uint8); the currents before their decay only for the
    // gradient of their time constant.
    const auto wants = [](const OptTensor& t) { return t.has_value() && t->requires_grad(); };
    const bool spikes_read = wants(w_rec) || wants(w_ahp);
    const bool uint8_counts = counts_fit_uint8(max_spikes);
    const bool save_mask = surrogate == kStepPWL && !tau_mem.requires_grad() &&
                           !threshold.requires_grad() && (!spikes_read || uint8_counts);
    const bool save_counts = save_mask && spikes_read;
    auto [spikes, vmem, isyn, irec, v_final, i_final, s_final, u, i_pre, v0_saved, s0_saved, iahp,
          h_final, h_pre, counts] =
        call_below_autograd(syn_forward_op(), input, v0, i0, s0, tau_mem, tau_syn, threshold, bias,
                            w_rec, noise, noise_key, dt, noise_scale, window, max_spikes, surrogate,
                            record, true, lengths, w_ahp, tau_ahp, h0, decays, save_mask,
                            tau_syn.requires_grad(), wants(tau_ahp), save_counts);
    const bool ahp = h0.has_value();
    // The copies of v0 and s0, not the tensors themselves: a module updates its state in place
    // right after the forward. h0 itself is not needed: h_pre[0] holds what the backward reads.
    ctx->save_for_backward(
        {u, i_pre, v0_saved, s0.has_value() ? s0_saved : Tensor(), tau_mem, tau_syn, threshold,
         w_rec.value_or(Tensor()), lengths.value_or(Tensor()), ahp ? h_pre : Tensor(),
         w_ahp.value_or(Tensor()), tau_ahp.value_or(Tensor()), counts.numel() ? counts : Tensor()});
    ctx->saved_data["h0_shared"] = ahp && h0->dim() == 1;
    ctx->saved_data["dt"] = dt;
    ctx->saved_data["window"] = window;
    ctx->saved_data["max_spikes"] = max_spikes;
    ctx->saved_data["surrogate"] = surrogate;
    ctx->saved_data["record"] = record;
    ctx->saved_data["has_noise"] = noise.has_value();
    // needs_input_grad counts only the tensors given (a None optional is no input of the node).
    ctx->saved_data["noise_index"] = static_cast<int64_t>(7 + s0.has_value() + w_rec.has_value());
    ctx->saved_data["scalar_bias"] = bias.dim() == 0;
    ctx->saved_data["i0_shared"] = i0.dim() == 2;
    ctx->saved_data["decays"] = decays;
    ctx->saved_data["input_dtype"] = static_cast<int64_t>(input.scalar_type());
    ctx->saved_data["shape"] = spikes.sym_sizes();  // (B,T,N): a window mask's is not u's
    ctx->set_materialize_grads(false);
    // The spike state s_final is batch row 0's last spikes for a module's state (spikes[:, -1]
    // carries the gradient); u, i_pre and the copies are internal; unrecorded records are empty.
    std::vector<Tensor> internal{s_final, u, i_pre, v0_saved, s0_saved, h_pre, counts};
    if (!record || !w_rec.has_value()) internal.push_back(irec);
    if (!record) {
      internal.push_back(vmem);
      internal.push_back(isyn);
    }
    if (!record || !ahp) internal.push_back(iahp);
    if (!ahp) internal.push_back(h_final);
    ctx->mark_non_differentiable(internal);
    return {spikes, vmem,     isyn,     irec, v_final, i_final, s_final, u,
            i_pre,  v0_saved, s0_saved, iahp, h_final, h_pre,   counts};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& u = saved[0];  // or the window mask
    const auto input_dtype = static_cast<at::ScalarType>(ctx->saved_data["input_dtype"].toInt());
    const bool record = ctx->saved_data["record"].toBool();
    const bool noise_grad =
        ctx->saved_data["has_noise"].toBool() &&
        ctx->needs_input_grad(static_cast<size_t>(ctx->saved_data["noise_index"].toInt()));
    const auto recorded = [&](int i) { return record ? defined_or_none(grads[i]) : std::nullopt; };
    const OptTensor s0 = defined_or_none(saved[3]);
    const OptTensor w_rec = defined_or_none(saved[7]);
    const OptTensor h_pre = defined_or_none(saved[9]);
    const bool ahp = h_pre.has_value();
    const variable_list g = call_backward_op(
        kSynBackward, syn_backward_op(), true,
        grad_or_zeros(grads[0], saved[2].options(), ctx->saved_data["shape"].toSymIntVector(),
                      input_dtype),
        recorded(1), recorded(2), recorded(3), defined_or_none(grads[4]), defined_or_none(grads[5]),
        u, saved[1], saved[2], s0, saved[4], saved[5], saved[6], w_rec,
        ctx->saved_data["dt"].toDouble(), ctx->saved_data["window"].toDouble(),
        ctx->saved_data["max_spikes"].toDouble(), ctx->saved_data["surrogate"].toInt(),
        ctx->saved_data["scalar_bias"].toBool(), ctx->saved_data["i0_shared"].toBool(), noise_grad,
        defined_or_none(saved[8]), ahp ? recorded(11) : std::nullopt,
        ahp ? defined_or_none(grads[12]) : std::nullopt, h_pre, defined_or_none(saved[10]),
        defined_or_none(saved[11]), ctx->saved_data["h0_shared"].toBool(),
        ctx->saved_data["decays"].toBool(), defined_or_none(saved[12]));
    Tensor g_in = g[0];
    if (g_in.scalar_type() != input_dtype) g_in = g_in.to(input_dtype);
    // One entry per forward argument (22): eight settings (10..17) and decays are not
    // differentiable.
    variable_list out(22);
    out[0] = g_in;
    out[1] = g[1];
    out[2] = g[2];
    if (s0.has_value()) out[3] = g[3];
    out[4] = g[4];
    out[5] = g[5];
    out[6] = g[6];
    out[7] = g[7];
    if (w_rec.has_value()) out[8] = g[8];
    if (noise_grad) out[9] = g[9];
    if (ahp) {
      out[18] = g[11];
      out[19] = g[12];
      out[20] = g[10];
    }
    return out;
  }
};

SynForwardOut synaptic_forward_autograd(
    const Tensor& input, const Tensor& v0, const Tensor& i0, const OptTensor& s0,
    const Tensor& tau_mem, const Tensor& tau_syn, const Tensor& threshold, const Tensor& bias,
    const OptTensor& w_rec, const OptTensor& noise, const OptTensor& noise_key, double dt,
    double noise_scale, double window, double max_spikes, int64_t surrogate, bool record, bool save,
    const OptTensor& lengths, const OptTensor& w_ahp, const OptTensor& tau_ahp, const OptTensor& h0,
    bool decays, bool save_mask, bool save_i_pre, bool save_h_pre, bool save_counts) {
  if (!any_requires_grad(input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise, w_ahp,
                         tau_ahp, h0)) {
    return call_below_autograd(syn_forward_op(), input, v0, i0, s0, tau_mem, tau_syn, threshold,
                               bias, w_rec, noise, noise_key, dt, noise_scale, window, max_spikes,
                               surrogate, record, save, lengths, w_ahp, tau_ahp, h0, decays,
                               save_mask, save_i_pre, save_h_pre, save_counts);
  }
  const variable_list o = SynForward::apply(
      input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise, noise_key, dt,
      noise_scale, window, max_spikes, surrogate, record, lengths, w_ahp, tau_ahp, h0, decays);
  return {o[0], o[1], o[2],  o[3],  o[4],  o[5],  o[6], o[7],
          o[8], o[9], o[10], o[11], o[12], o[13], o[14]};
}

SynBackwardOut synaptic_backward_autograd(
    const Tensor& gs, const OptTensor& gw, const OptTensor& gi, const OptTensor& gr,
    const OptTensor& gvf, const OptTensor& gif, const Tensor& u, const Tensor& i_pre,
    const Tensor& v0, const OptTensor& s0, const Tensor& tau_mem, const Tensor& tau_syn,
    const Tensor& threshold, const OptTensor& w_rec, double dt, double window, double max_spikes,
    int64_t surrogate, bool scalar_bias, bool i0_shared, bool noise_grad, const OptTensor& lengths,
    const OptTensor& gh, const OptTensor& ghf, const OptTensor& h_pre, const OptTensor& w_ahp,
    const OptTensor& tau_ahp, bool h0_shared, bool decays, const OptTensor& spike_counts) {
  const variable_list o = call_backward_op(
      kSynBackward, syn_backward_op(), false, gs, gw, gi, gr, gvf, gif, u, i_pre, v0, s0, tau_mem,
      tau_syn, threshold, w_rec, dt, window, max_spikes, surrogate, scalar_bias, i0_shared,
      noise_grad, lengths, gh, ghf, h_pre, w_ahp, tau_ahp, h0_shared, decays, spike_counts);
  return {o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8], o[9], o[10], o[11], o[12]};
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, Autograd, m) {
  m.impl("lif_forward", &lif::lif_forward_autograd);
  m.impl("lif_backward", &lif::lif_backward_autograd);
  m.impl("adaptive_forward", &lif::adaptive_forward_autograd);
  m.impl("adaptive_backward", &lif::adaptive_backward_autograd);
  m.impl("synaptic_forward", &lif::synaptic_forward_autograd);
  m.impl("synaptic_backward", &lif::synaptic_backward_autograd);
}
