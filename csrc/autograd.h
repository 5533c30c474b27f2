// The autograd skeleton every model's op shares (SPEC §3): the forward runs below the Autograd key
// and saves what its backward op needs; without a gradient to compute (inference, no_grad, nothing
// requiring grad) it goes straight to the device kernel, saving nothing. A backward op is not
// differentiable: its outputs carry a node that refuses a second backward with a clear message,
// even where nothing they were computed from requires grad (else a second backward would fail with
// a message that does not name the op, or silently give nothing).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace lif {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<Tensor>;

// The typed handle of the op named kName, looked up once.
template <typename Sig, const char* kName>
const c10::TypedOperatorHandle<Sig>& op_handle() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kName, "").typed<Sig>();
  return op;
}

// Calls an op below the Autograd key (its device kernel).
template <typename Sig, typename... Args>
auto call_below_autograd(const c10::TypedOperatorHandle<Sig>& op, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(std::forward<Args>(args)...);
}

template <typename... Ts>
variable_list as_list(const std::tuple<Ts...>& t) {
  return std::apply([](const auto&... x) { return variable_list{x...}; }, t);
}

inline bool requires_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool requires_grad(const OptTensor& t) { return t.has_value() && requires_grad(*t); }

template <typename... Ts>
bool any_requires_grad(const Ts&... ts) {
  return at::GradMode::is_enabled() && (requires_grad(ts) || ...);
}

// A backward op's outputs, computed by `compute`, tied to a node that refuses to be
// differentiated (`name` is the backward op's).
class NoDoubleBackward : public torch::autograd::Function<NoDoubleBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const char* name,
                               const std::function<variable_list()>& compute) {
    ctx->saved_data["name"] = std::string(name);
    at::AutoDispatchBelowADInplaceOrView guard;
    return compute();
  }

  static variable_list backward(AutogradContext* ctx, variable_list /*grads*/) {
    TORCH_CHECK(false, "lif_cuda: ", ctx->saved_data["name"].toStringRef(),
                " is not differentiable: second-order gradients (double backward, e.g. "
                "torch.autograd.grad(..., create_graph=True) followed by a backward through its "
                "result) are not supported");
    return {};
  }
};

// A backward op's Autograd kernel and the forward's backward both call the backward op through
// this: under grad mode (create_graph=True) its outputs are tied to a refusing node, `poison`
// making sure there is one even when no input requires grad.
template <typename Sig, typename... Args>
variable_list call_backward_op(const char* name, const c10::TypedOperatorHandle<Sig>& op,
                               bool poison, Args&&... args) {
  const auto compute = [&] { return as_list(op.call(args...)); };
  if (!at::GradMode::is_enabled()) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return compute();
  }
  std::vector<Tensor> inputs;
  const auto add = [&](const auto& a) {
    using A = std::decay_t<decltype(a)>;
    if constexpr (std::is_same_v<A, Tensor>) {
      if (a.defined()) inputs.push_back(a);
    } else if constexpr (std::is_same_v<A, OptTensor>) {
      if (a.has_value() && a->defined()) inputs.push_back(*a);
    }
  };
  (add(args), ...);
  if (poison) inputs.push_back(at::empty({0}, inputs.front().options()).requires_grad_(true));
  return NoDoubleBackward::apply(at::TensorList(inputs), name,
                                 std::function<variable_list()>(compute));
}

// The gradient on spikes as the backward ops take it: the upstream one, or a broadcast zero (read
// in place by the kernels) where the spikes got none.
inline Tensor grad_or_zeros(const Tensor& g, const at::TensorOptions& options,
                            c10::SymIntArrayRef sizes, at::ScalarType dtype) {
  return g.defined() ? g : at::zeros({}, options.dtype(dtype)).expand_symint(sizes);
}

inline Tensor grad_or_zeros(const Tensor& g, const Tensor& like, at::ScalarType dtype) {
  return grad_or_zeros(g, like.options(), like.sym_sizes(), dtype);
}

// The scalar settings a forward keeps for its backward (every model's), under these keys.
inline void save_settings(AutogradContext* ctx, double dt, double window, double max_spikes,
                          int64_t surrogate, bool record, bool has_noise, bool scalar_bias,
                          at::ScalarType input_dtype) {
  ctx->saved_data["dt"] = dt;
  ctx->saved_data["window"] = window;
  ctx->saved_data["max_spikes"] = max_spikes;
  ctx->saved_data["surrogate"] = surrogate;
  ctx->saved_data["record"] = record;
  ctx->saved_data["has_noise"] = has_noise;
  ctx->saved_data["scalar_bias"] = scalar_bias;
  ctx->saved_data["input_dtype"] = static_cast<int64_t>(input_dtype);
}

inline at::ScalarType saved_input_dtype(AutogradContext* ctx) {
  return static_cast<at::ScalarType>(ctx->saved_data["input_dtype"].toInt());
}

// The gradient on spikes for a backward op whose input gradient is also a noise tensor's
// (`noise_grad`): with half-precision input dL/du is then wanted in the state's dtype (gz = U),
// rounded once for the input.
// `state`: the state's options, `sizes`: the sequence's shape (a LIF's window mask is not u).
inline Tensor grad_spikes_for(const Tensor& g, const at::TensorOptions& state,
                              c10::SymIntArrayRef sizes, at::ScalarType input_dtype,
                              bool noise_grad) {
  Tensor gs = grad_or_zeros(g, state, sizes, input_dtype);
  const auto ct = c10::typeMetaToScalarType(state.dtype());
  return noise_grad && gs.scalar_type() != ct ? gs.to(ct) : gs;
}

inline Tensor grad_spikes_for(const Tensor& g, const Tensor& u, at::ScalarType input_dtype,
                              bool noise_grad) {
  return grad_spikes_for(g, u.options(), u.sym_sizes(), input_dtype, noise_grad);
}

// (dL/dinput in the input's dtype, dL/dnoise or undefined) from the backward op's dL/du.
inline std::pair<Tensor, Tensor> input_and_noise_grads(const Tensor& g_u, bool noise_grad,
                                                       at::ScalarType input_dtype) {
  Tensor g_noise;
  if (noise_grad) g_noise = g_u.scalar_type() != input_dtype ? g_u : g_u.clone();
  return {g_u.scalar_type() != input_dtype ? g_u.to(input_dtype) : g_u, g_noise};
}

inline OptTensor defined_or_none(const Tensor& t) {
  return t.defined() ? OptTensor(t) : std::nullopt;
}

}  // namespace lif
