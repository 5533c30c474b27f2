// Argument checks shared by the CPU and CUDA implementations of the ops (no math here).
// The Python layer checks user-facing arguments first, with the user's names; these guard the raw
// ops against direct calls. TORCH_CHECK_VALUE / TORCH_CHECK_TYPE surface as ValueError / TypeError.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace lif {

inline void check_float_dtype(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                   " must be float32 or float64, got ", t.scalar_type());
}

inline void check_like(const at::Tensor& t, const at::Tensor& ref, const char* name,
                       at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " must have dtype ",
                   ref.scalar_type(), " (the input's), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on ", ref.device(),
                    " (the input's device), got ", t.device());
}

// Checks the forward op's arguments; returns (B, T, N).
inline std::tuple<int64_t, int64_t, int64_t> check_forward_args(
    const at::Tensor& input, const at::Tensor& v0, const at::Tensor& alpha,
    const at::Tensor& threshold, const at::Tensor& bias, const std::optional<at::Tensor>& noise,
    double max_spikes) {
  TORCH_CHECK_VALUE(input.dim() == 3, "input must be (B,T,N), got shape ", input.sizes());
  check_float_dtype(input, "input");
  const int64_t B = input.size(0), T = input.size(1), N = input.size(2);
  check_like(v0, input, "v0", {B, N});
  check_like(alpha, input, "alpha", {N});
  check_like(threshold, input, "threshold", {N});
  check_like(bias, input, "bias", {N});
  if (noise.has_value()) check_like(*noise, input, "noise", {B, T, N});
  TORCH_CHECK_VALUE(max_spikes >= 1.0, "max_spikes_per_dt must be >= 1, got ", max_spikes);
  return {B, T, N};
}

inline std::tuple<int64_t, int64_t, int64_t> check_backward_args(
    const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_vmem,
    const std::optional<at::Tensor>& grad_vfinal, const at::Tensor& u, const at::Tensor& v0,
    const at::Tensor& alpha, const at::Tensor& threshold, double window, double max_spikes,
    int64_t surrogate) {
  TORCH_CHECK_VALUE(u.dim() == 3, "u must be (B,T,N), got shape ", u.sizes());
  check_float_dtype(u, "u");
  const int64_t B = u.size(0), T = u.size(1), N = u.size(2);
  check_like(grad_spikes, u, "grad_spikes", {B, T, N});
  if (grad_vmem.has_value()) check_like(*grad_vmem, u, "grad_vmem", {B, T, N});
  if (grad_vfinal.has_value()) check_like(*grad_vfinal, u, "grad_vfinal", {B, N});
  check_like(v0, u, "v0", {B, N});
  check_like(alpha, u, "alpha", {N});
  check_like(threshold, u, "threshold", {N});
  TORCH_CHECK_VALUE(window >= 0.0, "learning_window must be >= 0, got ", window);
  TORCH_CHECK_VALUE(max_spikes >= 1.0, "max_spikes_per_dt must be >= 1, got ", max_spikes);
  TORCH_CHECK_VALUE(surrogate == 0 || surrogate == 1,
                    "surrogate must be 0 (StepPWL) or 1 (PeriodicExponential), got ", surrogate);
  return {B, T, N};
}

}  // namespace lif
