// The autograd formula of lif_forward, in C++ (SPEC §3): registered for every device at the
// Autograd key, so a call never enters Python. Without a gradient to compute (inference, no_grad,
// nothing requiring grad) the op goes straight to the device kernel, saving nothing; otherwise
// the forward saves u (and v0, tau_mem, threshold) and the backward is lif_backward.
//
// lif_backward's own Autograd kernel refuses double backward: its outputs carry a node that raises
// when differentiated (e.g. torch.autograd.grad(..., create_graph=True) then a second backward).
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

using ForwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using BackwardOut = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;

ForwardOut forward_below_autograd(const Tensor& input, const Tensor& v0, const Tensor& tau_mem,
                                  const Tensor& threshold, const Tensor& bias,
                                  const std::optional<Tensor>& noise,
                                  const std::optional<Tensor>& noise_key, double dt,
                                  double noise_scale, double window, double max_spikes,
                                  int64_t surrogate, bool record, bool save_u,
                                  const std::optional<Tensor>& lengths) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("lif_cuda::lif_forward", "")
          .typed<ForwardOut(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                            const Tensor&, const std::optional<Tensor>&,
                            const std::optional<Tensor>&, double, double, double, double, int64_t,
                            bool, bool, const std::optional<Tensor>&)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(input, v0, tau_mem, threshold, bias, noise, noise_key, dt, noise_scale, window,
                 max_spikes, surrogate, record, save_u, lengths);
}

using BackwardSig = BackwardOut(const Tensor&, const std::optional<Tensor>&,
                                const std::optional<Tensor>&, const Tensor&, const Tensor&,
                                const Tensor&, const Tensor&, double, double, double, int64_t, bool,
                                const std::optional<Tensor>&);

const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("lif_cuda::lif_backward", "")
                             .typed<BackwardSig>();
  return op;
}

constexpr const char* kNoDoubleBackward =
    "lif_cuda: the LIF op's backward (lif_cuda::lif_backward) is not differentiable: second-order "
    "gradients (double backward, e.g. torch.autograd.grad(..., create_graph=True) followed by a "
    "backward through its result) are not supported";

// lif_backward differentiated: refused, with a clear message, when the second backward runs.
// `poison` (optional) only ties the outputs to a node; it takes no part in the values.
class LifBackward : public torch::autograd::Function<LifBackward> {
 public:
  static variable_list forward(AutogradContext* /*ctx*/, const std::optional<Tensor>& /*poison*/,
                               const Tensor& grad_spikes, const std::optional<Tensor>& grad_vmem,
                               const std::optional<Tensor>& grad_vfinal, const Tensor& u,
                               const Tensor& v0, const Tensor& tau_mem, const Tensor& threshold,
                               double dt, double window, double max_spikes, int64_t surrogate,
                               bool scalar_bias, const std::optional<Tensor>& lengths) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [a, b, c, d, e] =
        backward_op().call(grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem, threshold, dt,
                           window, max_spikes, surrogate, scalar_bias, lengths);
    return {a, b, c, d, e};
  }

  static variable_list backward(AutogradContext* /*ctx*/, variable_list /*grads*/) {
    TORCH_CHECK(false, kNoDoubleBackward);
    return {};
  }
};

class LifForward : public torch::autograd::Function<LifForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& v0,
                               const Tensor& tau_mem, const Tensor& threshold, const Tensor& bias,
                               const std::optional<Tensor>& noise,
                               const std::optional<Tensor>& noise_key, double dt,
                               double noise_scale, double window, double max_spikes,
                               int64_t surrogate, bool record,
                               const std::optional<Tensor>& lengths) {
    auto [spikes, vmem, v_final, u, v0_saved] =
        forward_below_autograd(input, v0, tau_mem, threshold, bias, noise, noise_key, dt,
                               noise_scale, window, max_spikes, surrogate, record, true, lengths);
    // v0_saved, not v0: a module updates its state in place right after the forward, and the
    // backward needs the values the forward started from. lengths: undefined when not given.
    ctx->save_for_backward({u, v0_saved, tau_mem, threshold, lengths.value_or(Tensor())});
    ctx->saved_data["dt"] = dt;
    ctx->saved_data["window"] = window;
    ctx->saved_data["max_spikes"] = max_spikes;
    ctx->saved_data["surrogate"] = surrogate;
    ctx->saved_data["record"] = record;
    ctx->saved_data["has_noise"] = noise.has_value();
    ctx->saved_data["scalar_bias"] = bias.dim() == 0;
    ctx->saved_data["input_dtype"] = static_cast<int64_t>(input.scalar_type());
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
    const Tensor& u = saved[0];
    const auto input_dtype = static_cast<at::ScalarType>(ctx->saved_data["input_dtype"].toInt());
    const bool noise_grad = ctx->saved_data["has_noise"].toBool() && ctx->needs_input_grad(5);
    Tensor gs = grads[0];
    if (!gs.defined()) {
      // No gradient on the spikes: a broadcast zero, read in place by the kernels.
      gs = at::zeros({}, u.options().dtype(input_dtype)).expand(u.sizes());
    }
    if (noise_grad && gs.scalar_type() != u.scalar_type()) {
      // Half-precision input with a noise tensor that needs its gradient: dL/du is wanted in
      // float32 for the noise (gz = U), rounded once for the input.
      gs = gs.to(u.scalar_type());
    }
    std::optional<Tensor> gw, gvf;
    if (ctx->saved_data["record"].toBool() && grads[1].defined()) gw = grads[1];
    if (grads[2].defined()) gvf = grads[2];
    std::optional<Tensor> lengths;
    if (saved[4].defined()) lengths = saved[4];
    const double dt = ctx->saved_data["dt"].toDouble(),
                 window = ctx->saved_data["window"].toDouble(),
                 max_spikes = ctx->saved_data["max_spikes"].toDouble();
    const int64_t surrogate = ctx->saved_data["surrogate"].toInt();
    const bool scalar_bias = ctx->saved_data["scalar_bias"].toBool();
    Tensor g_in, g_v0, g_tau, g_thr, g_bias;
    if (at::GradMode::is_enabled()) {
      // create_graph=True: the gradients get a node that refuses to be differentiated, even where
      // nothing they were computed from requires grad (else a second backward would fail with a
      // message that does not name this op, or silently give nothing).
      const std::optional<Tensor> poison = at::empty({0}, u.options()).requires_grad_(true);
      const variable_list g =
          LifBackward::apply(poison, gs, gw, gvf, u, saved[1], saved[2], saved[3], dt, window,
                             max_spikes, surrogate, scalar_bias, lengths);
      std::tie(g_in, g_v0, g_tau, g_thr, g_bias) = std::make_tuple(g[0], g[1], g[2], g[3], g[4]);
    } else {
      std::tie(g_in, g_v0, g_tau, g_thr, g_bias) =
          backward_op().call(gs, gw, gvf, u, saved[1], saved[2], saved[3], dt, window, max_spikes,
                             surrogate, scalar_bias, lengths);
    }
    Tensor g_noise;
    if (noise_grad) g_noise = g_in.scalar_type() != input_dtype ? g_in : g_in.clone();
    if (g_in.scalar_type() != input_dtype) g_in = g_in.to(input_dtype);
    // One entry per forward argument (14): the last eight are not differentiable.
    return {g_in,     g_v0,     g_tau,    g_thr,    g_bias,   g_noise,  Tensor(),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

ForwardOut lif_forward_autograd(const Tensor& input, const Tensor& v0, const Tensor& tau_mem,
                                const Tensor& threshold, const Tensor& bias,
                                const std::optional<Tensor>& noise,
                                const std::optional<Tensor>& noise_key, double dt,
                                double noise_scale, double window, double max_spikes,
                                int64_t surrogate, bool record, bool save_u,
                                const std::optional<Tensor>& lengths) {
  const bool needs_grad = at::GradMode::is_enabled() &&
                          (input.requires_grad() || v0.requires_grad() || tau_mem.requires_grad() ||
                           threshold.requires_grad() || bias.requires_grad() ||
                           (noise.has_value() && noise->requires_grad()));
  if (!needs_grad) {
    return forward_below_autograd(input, v0, tau_mem, threshold, bias, noise, noise_key, dt,
                                  noise_scale, window, max_spikes, surrogate, record, save_u,
                                  lengths);
  }
  const variable_list out =
      LifForward::apply(input, v0, tau_mem, threshold, bias, noise, noise_key, dt, noise_scale,
                        window, max_spikes, surrogate, record, lengths);
  return {out[0], out[1], out[2], out[3], out[4]};
}

BackwardOut lif_backward_autograd(const Tensor& grad_spikes, const std::optional<Tensor>& grad_vmem,
                                  const std::optional<Tensor>& grad_vfinal, const Tensor& u,
                                  const Tensor& v0, const Tensor& tau_mem, const Tensor& threshold,
                                  double dt, double window, double max_spikes, int64_t surrogate,
                                  bool scalar_bias, const std::optional<Tensor>& lengths) {
  if (!at::GradMode::is_enabled()) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return backward_op().call(grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem, threshold, dt,
                              window, max_spikes, surrogate, scalar_bias, lengths);
  }
  const variable_list out = LifBackward::apply(std::optional<Tensor>(), grad_spikes, grad_vmem,
                                               grad_vfinal, u, v0, tau_mem, threshold, dt, window,
                                               max_spikes, surrogate, scalar_bias, lengths);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, Autograd, m) {
  m.impl("lif_forward", &lif::lif_forward_autograd);
  m.impl("lif_backward", &lif::lif_backward_autograd);
}
