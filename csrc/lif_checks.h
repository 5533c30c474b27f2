// Argument checks shared by the CPU and CUDA implementations of the ops (no math here).
// The Python layer checks user-facing arguments first, with the user's names; these guard the raw
// ops against direct calls. TORCH_CHECK_VALUE / TORCH_CHECK_TYPE surface as ValueError / TypeError.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

namespace lif {

inline void check_float_dtype(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                   " must be float32 or float64, got ", t.scalar_type());
}

inline bool is_half_type(at::ScalarType st) { return st == at::kHalf || st == at::kBFloat16; }

// Input/spike dtypes: float32, float64, or float16/bfloat16 (then state and math are float32).
inline void check_io_dtype(const at::Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || is_half_type(st), name,
                   " must be float32, float64, float16 or bfloat16, got ", st);
}

// The dtype of the membrane state and the arithmetic for an input of dtype `io`.
inline at::ScalarType compute_dtype(at::ScalarType io) {
  return is_half_type(io) ? at::kFloat : io;
}

inline void check_state_like(const at::Tensor& t, at::ScalarType dtype, const at::Tensor& ref,
                             const char* name, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on ", ref.device(),
                    " (the input's device), got ", t.device());
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
    const std::optional<at::Tensor>& noise_key, double noise_scale, double max_spikes) {
  TORCH_CHECK_VALUE(input.dim() == 3, "input must be (B,T,N), got shape ", input.sizes());
  check_io_dtype(input, "input");
  const auto ct = compute_dtype(input.scalar_type());
  const int64_t B = input.size(0), T = input.size(1), N = input.size(2);
  check_state_like(v0, ct, input, "v0", {B, N});
  check_state_like(alpha, ct, input, "alpha", {N});
  check_state_like(threshold, ct, input, "threshold", {N});
  check_state_like(bias, ct, input, "bias", {N});
  if (noise.has_value()) check_state_like(*noise, ct, input, "noise", {B, T, N});
  if (noise_key.has_value()) {
    TORCH_CHECK_VALUE(!noise.has_value(), "give either a noise tensor or a noise_key, not both");
    TORCH_CHECK_VALUE(noise_key->numel() == 2 && noise_key->scalar_type() == at::kLong &&
                          noise_key->device().is_cpu(),
                      "noise_key must be a CPU int64 tensor (seed, offset), got ",
                      noise_key->sizes(), " ", noise_key->scalar_type(), " on ",
                      noise_key->device());
    TORCH_CHECK_VALUE(std::isfinite(noise_scale) && noise_scale >= 0.0,
                      "noise_scale must be finite and >= 0, got ", noise_scale);
  }
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
  // grad_spikes carries the input's dtype (float16/bfloat16 with float32 state).
  check_io_dtype(grad_spikes, "grad_spikes");
  TORCH_CHECK_TYPE(compute_dtype(grad_spikes.scalar_type()) == u.scalar_type(),
                   "grad_spikes has dtype ", grad_spikes.scalar_type(), " but u has ",
                   u.scalar_type());
  TORCH_CHECK_VALUE(grad_spikes.sizes() == u.sizes(), "grad_spikes must have shape ", u.sizes(),
                    ", got ", grad_spikes.sizes());
  TORCH_CHECK_VALUE(grad_spikes.device() == u.device(), "grad_spikes must be on ", u.device());
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
