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

inline OptTensor defined_or_none(const Tensor& t) {
  return t.defined() ? OptTensor(t) : std::nullopt;
}

}  // namespace lif
