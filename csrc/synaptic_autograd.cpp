// The autograd formula of synaptic_forward (SPEC §7), in C++ at the Autograd key, as
// csrc/autograd.cpp is for lif_forward: without a gradient to compute the op goes straight to the
// device kernel, saving nothing; otherwise the forward saves u, a (the currents before their
// decay), copies of v0 and s0, and the parameters, and the backward is synaptic_backward (a
// hand-written reverse loop through the synapses, the reset and the recurrence).
// synaptic_backward's own Autograd kernel refuses double backward.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace lif {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<Tensor>;

using SynForwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                 Tensor, Tensor, Tensor>;
using SynBackwardOut =
    std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

using ForwardSig = SynForwardOut(const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                 const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const OptTensor&, const OptTensor&, const OptTensor&, double,
                                 double, double, double, int64_t, bool, bool, const OptTensor&);
using BackwardSig = SynBackwardOut(const Tensor&, const OptTensor&, const OptTensor&,
                                   const OptTensor&, const OptTensor&, const OptTensor&,
                                   const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                   const Tensor&, const Tensor&, const Tensor&, const OptTensor&,
                                   double, double, double, int64_t, bool, bool, bool,
                                   const OptTensor&);

const c10::TypedOperatorHandle<ForwardSig>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("lif_cuda::synaptic_forward", "")
                             .typed<ForwardSig>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("lif_cuda::synaptic_backward", "")
                             .typed<BackwardSig>();
  return op;
}

SynForwardOut forward_below_autograd(const Tensor& input, const Tensor& v0, const Tensor& i0,
                                     const OptTensor& s0, const Tensor& tau_mem,
                                     const Tensor& tau_syn, const Tensor& threshold,
                                     const Tensor& bias, const OptTensor& w_rec,
                                     const OptTensor& noise, const OptTensor& noise_key, double dt,
                                     double noise_scale, double window, double max_spikes,
                                     int64_t surrogate, bool record, bool save,
                                     const OptTensor& lengths) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return forward_op().call(input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise,
                           noise_key, dt, noise_scale, window, max_spikes, surrogate, record, save,
                           lengths);
}

constexpr const char* kNoDoubleBackward =
    "lif_cuda: the synaptic LIF op's backward (lif_cuda::synaptic_backward) is not "
    "differentiable: second-order gradients (double backward) are not supported";

variable_list as_list(const SynBackwardOut& g) {
  return {std::get<0>(g), std::get<1>(g), std::get<2>(g), std::get<3>(g), std::get<4>(g),
          std::get<5>(g), std::get<6>(g), std::get<7>(g), std::get<8>(g), std::get<9>(g)};
}

// synaptic_backward differentiated: refused when the second backward runs. `poison` only ties
// the outputs to this node.
class SynBackward : public torch::autograd::Function<SynBackward> {
 public:
  static variable_list forward(AutogradContext* /*ctx*/, const OptTensor& /*poison*/,
                               const Tensor& gs, const OptTensor& gw, const OptTensor& gi,
                               const OptTensor& gr, const OptTensor& gvf, const OptTensor& gif,
                               const Tensor& u, const Tensor& a, const Tensor& v0,
                               const OptTensor& s0, const Tensor& tau_mem, const Tensor& tau_syn,
                               const Tensor& threshold, const OptTensor& w_rec, double dt,
                               double window, double max_spikes, int64_t surrogate,
                               bool scalar_bias, bool i0_shared, bool noise_grad,
                               const OptTensor& lengths) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return as_list(backward_op().call(gs, gw, gi, gr, gvf, gif, u, a, v0, s0, tau_mem, tau_syn,
                                      threshold, w_rec, dt, window, max_spikes, surrogate,
                                      scalar_bias, i0_shared, noise_grad, lengths));
  }

  static variable_list backward(AutogradContext* /*ctx*/, variable_list /*grads*/) {
    TORCH_CHECK(false, kNoDoubleBackward);
    return {};
  }
};

OptTensor defined_or_none(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

class SynForward : public torch::autograd::Function<SynForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& v0,
                               const Tensor& i0, const OptTensor& s0, const Tensor& tau_mem,
                               const Tensor& tau_syn, const Tensor& threshold, const Tensor& bias,
                               const OptTensor& w_rec, const OptTensor& noise,
                               const OptTensor& noise_key, double dt, double noise_scale,
                               double window, double max_spikes, int64_t surrogate, bool record,
                               const OptTensor& lengths) {
    auto [spikes, vmem, isyn, irec, v_final, i_final, s_final, u, a, v0_saved, s0_saved] =
        forward_below_autograd(input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise,
                               noise_key, dt, noise_scale, window, max_spikes, surrogate, record,
                               true, lengths);
    // The copies of v0 and s0, not the tensors themselves: a module updates its state in place
    // right after the forward.
    ctx->save_for_backward({u, a, v0_saved, s0.has_value() ? s0_saved : Tensor(), tau_mem, tau_syn,
                            threshold, w_rec.has_value() ? *w_rec : Tensor(),
                            lengths.value_or(Tensor())});
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
    ctx->saved_data["input_dtype"] = static_cast<int64_t>(input.scalar_type());
    ctx->set_materialize_grads(false);
    // The spike state s_final is batch row 0's last spikes for a module's state (spikes[:, -1]
    // carries the gradient); u, a and the copies are internal; unrecorded records are empty.
    std::vector<Tensor> internal{s_final, u, a, v0_saved, s0_saved};
    if (!record || !w_rec.has_value()) internal.push_back(irec);
    if (!record) {
      internal.push_back(vmem);
      internal.push_back(isyn);
    }
    ctx->mark_non_differentiable(internal);
    return {spikes, vmem, isyn, irec, v_final, i_final, s_final, u, a, v0_saved, s0_saved};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& u = saved[0];
    const auto input_dtype = static_cast<at::ScalarType>(ctx->saved_data["input_dtype"].toInt());
    const bool record = ctx->saved_data["record"].toBool();
    const bool noise_grad =
        ctx->saved_data["has_noise"].toBool() &&
        ctx->needs_input_grad(static_cast<size_t>(ctx->saved_data["noise_index"].toInt()));
    Tensor gs = grads[0];
    if (!gs.defined()) gs = at::zeros({}, u.options().dtype(input_dtype)).expand(u.sizes());
    const OptTensor gw = record ? defined_or_none(grads[1]) : std::nullopt;
    const OptTensor gi = record ? defined_or_none(grads[2]) : std::nullopt;
    const OptTensor gr = record ? defined_or_none(grads[3]) : std::nullopt;
    const OptTensor gvf = defined_or_none(grads[4]);
    const OptTensor gif = defined_or_none(grads[5]);
    const OptTensor s0 = defined_or_none(saved[3]);
    const OptTensor w_rec = defined_or_none(saved[7]);
    const OptTensor lengths = defined_or_none(saved[8]);
    const double dt = ctx->saved_data["dt"].toDouble(),
                 window = ctx->saved_data["window"].toDouble(),
                 max_spikes = ctx->saved_data["max_spikes"].toDouble();
    const int64_t surrogate = ctx->saved_data["surrogate"].toInt();
    const bool scalar_bias = ctx->saved_data["scalar_bias"].toBool();
    const bool i0_shared = ctx->saved_data["i0_shared"].toBool();
    variable_list g;
    if (at::GradMode::is_enabled()) {
      // create_graph=True: outputs tied to a node that refuses to be differentiated.
      const OptTensor poison = at::empty({0}, u.options()).requires_grad_(true);
      g = SynBackward::apply(poison, gs, gw, gi, gr, gvf, gif, u, saved[1], saved[2], s0, saved[4],
                             saved[5], saved[6], w_rec, dt, window, max_spikes, surrogate,
                             scalar_bias, i0_shared, noise_grad, lengths);
    } else {
      g = as_list(backward_op().call(gs, gw, gi, gr, gvf, gif, u, saved[1], saved[2], s0, saved[4],
                                     saved[5], saved[6], w_rec, dt, window, max_spikes, surrogate,
                                     scalar_bias, i0_shared, noise_grad, lengths));
    }
    Tensor g_in = g[0];
    if (g_in.scalar_type() != input_dtype) g_in = g_in.to(input_dtype);
    // One entry per forward argument (18): the last eight are not differentiable.
    return {g_in,
            g[1],
            g[2],
            s0.has_value() ? g[3] : Tensor(),
            g[4],
            g[5],
            g[6],
            g[7],
            w_rec.has_value() ? g[8] : Tensor(),
            noise_grad ? g[9] : Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor()};
  }
};

SynForwardOut synaptic_forward_autograd(const Tensor& input, const Tensor& v0, const Tensor& i0,
                                        const OptTensor& s0, const Tensor& tau_mem,
                                        const Tensor& tau_syn, const Tensor& threshold,
                                        const Tensor& bias, const OptTensor& w_rec,
                                        const OptTensor& noise, const OptTensor& noise_key,
                                        double dt, double noise_scale, double window,
                                        double max_spikes, int64_t surrogate, bool record,
                                        bool save, const OptTensor& lengths) {
  const auto rg = [](const OptTensor& t) { return t.has_value() && t->requires_grad(); };
  const bool needs_grad =
      at::GradMode::is_enabled() &&
      (input.requires_grad() || v0.requires_grad() || i0.requires_grad() || rg(s0) ||
       tau_mem.requires_grad() || tau_syn.requires_grad() || threshold.requires_grad() ||
       bias.requires_grad() || rg(w_rec) || rg(noise));
  if (!needs_grad) {
    return forward_below_autograd(input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec,
                                  noise, noise_key, dt, noise_scale, window, max_spikes, surrogate,
                                  record, save, lengths);
  }
  const variable_list o =
      SynForward::apply(input, v0, i0, s0, tau_mem, tau_syn, threshold, bias, w_rec, noise,
                        noise_key, dt, noise_scale, window, max_spikes, surrogate, record, lengths);
  return {o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8], o[9], o[10]};
}

SynBackwardOut synaptic_backward_autograd(
    const Tensor& gs, const OptTensor& gw, const OptTensor& gi, const OptTensor& gr,
    const OptTensor& gvf, const OptTensor& gif, const Tensor& u, const Tensor& a, const Tensor& v0,
    const OptTensor& s0, const Tensor& tau_mem, const Tensor& tau_syn, const Tensor& threshold,
    const OptTensor& w_rec, double dt, double window, double max_spikes, int64_t surrogate,
    bool scalar_bias, bool i0_shared, bool noise_grad, const OptTensor& lengths) {
  if (!at::GradMode::is_enabled()) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return backward_op().call(gs, gw, gi, gr, gvf, gif, u, a, v0, s0, tau_mem, tau_syn, threshold,
                              w_rec, dt, window, max_spikes, surrogate, scalar_bias, i0_shared,
                              noise_grad, lengths);
  }
  const variable_list o = SynBackward::apply(
      OptTensor(), gs, gw, gi, gr, gvf, gif, u, a, v0, s0, tau_mem, tau_syn, threshold, w_rec, dt,
      window, max_spikes, surrogate, scalar_bias, i0_shared, noise_grad, lengths);
  return {o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8], o[9]};
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, Autograd, m) {
  m.impl("synaptic_forward", &lif::synaptic_forward_autograd);
  m.impl("synaptic_backward", &lif::synaptic_backward_autograd);
}
