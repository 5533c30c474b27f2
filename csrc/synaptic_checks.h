// Argument checks of the synaptic ops (SPEC §6, §7), on the boundary, before anything is allocated
// or launched, with the user's argument names (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE surface in
// Python as ValueError / TypeError). The per-tensor checks are lif_checks.h's.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>
#include <vector>

#include "lif_checks.h"

namespace lif {

// Shapes of one forward call: batch, steps, neurons, synapses per neuron.
struct SynShape {
  int64_t B, T, N, S;
};

// A per-synapse parameter (tau_syn): (N,S), (1,S) or ().
inline void check_syn_param(const at::Tensor& t, at::ScalarType dtype, const at::Tensor& ref,
                            const char* name, int64_t N, int64_t S) {
  check_dtype_device(t, dtype, ref, name);
  const bool ok =
      t.dim() == 0 || (t.dim() == 2 && (t.size(0) == N || t.size(0) == 1) && t.size(1) == S);
  TORCH_CHECK_VALUE(ok, name, " must have shape (", N, ", ", S, "), (1, ", S, ") or (), got ",
                    t.sizes());
}

// A per-row state: (B, rest...) or the shared (rest...).
inline void check_syn_state(const at::Tensor& t, at::ScalarType dtype, const at::Tensor& ref,
                            const char* name, int64_t B, at::IntArrayRef rest) {
  check_dtype_device(t, dtype, ref, name);
  std::vector<int64_t> rows{B};
  rows.insert(rows.end(), rest.begin(), rest.end());
  TORCH_CHECK_VALUE(t.sizes() == rest || t.sizes() == at::IntArrayRef(rows), name,
                    " must have shape ", at::IntArrayRef(rows), " or ", rest, ", got ", t.sizes());
}

// The recurrent weights, if given: (N, N*S), the state's dtype, on the input's device.
inline void check_w_rec(const std::optional<at::Tensor>& w_rec, at::ScalarType dtype,
                        const at::Tensor& ref, int64_t N, int64_t S) {
  if (!w_rec.has_value()) return;
  check_dtype_device(*w_rec, dtype, ref, "w_rec");
  TORCH_CHECK_VALUE(w_rec->dim() == 2 && w_rec->size(0) == N && w_rec->size(1) == N * S,
                    "w_rec must have shape (N, N*S) = (", N, ", ", N * S, "), got ",
                    w_rec->sizes());
}

// The forward's arguments (synaptic_forward in ops.cpp); N and S come from i0.
inline SynShape check_syn_forward_args(const at::Tensor& input, const at::Tensor& v0,
                                       const at::Tensor& i0, const std::optional<at::Tensor>& s0,
                                       const at::Tensor& tau_mem, const at::Tensor& tau_syn,
                                       const at::Tensor& threshold, const at::Tensor& bias,
                                       const std::optional<at::Tensor>& w_rec,
                                       const std::optional<at::Tensor>& noise,
                                       const std::optional<at::Tensor>& noise_key, double dt,
                                       double noise_scale, double window, double max_spikes,
                                       const std::optional<at::Tensor>& lengths) {
  TORCH_CHECK_VALUE(input.dim() == 3, "input must be (B,T,N*S), got shape ", input.sizes());
  check_io_dtype(input, "input");
  const auto ct = compute_dtype(input.scalar_type());
  const int64_t B = input.size(0), T = input.size(1);
  TORCH_CHECK_VALUE(i0.dim() == 2 || (i0.dim() == 3 && i0.size(0) == B),
                    "i0 (the synaptic currents) must have shape (", B, ", N, S) or (N, S), got ",
                    i0.sizes());
  const int64_t N = i0.size(-2), S = i0.size(-1);
  TORCH_CHECK_VALUE(S >= 1 || N == 0,
                    "i0 must have at least one synapse per neuron (N, S >= 1), got ", i0.sizes());
  TORCH_CHECK_VALUE(input.size(2) == N * S, "input's last dimension must be N*S = ", N, "*", S,
                    " = ", N * S, ", got shape ", input.sizes());
  // Parameters before the state: a module moved to another device than its input names its
  // parameter.
  check_param(tau_mem, ct, input, "tau_mem", N);
  check_syn_param(tau_syn, ct, input, "tau_syn", N, S);
  check_param(threshold, ct, input, "threshold", N);
  check_param(bias, ct, input, "bias", N);
  check_w_rec(w_rec, ct, input, N, S);
  check_v0(v0, ct, input, B, N);
  check_syn_state(i0, ct, input, "i0", B, {N, S});
  if (s0.has_value()) check_syn_state(*s0, ct, input, "s0", B, {N});
  check_noise_args(noise, noise_key, noise_scale, ct, input, B, T, N);
  check_settings(lengths, input, B, T, dt, window, max_spikes);
  check_neuron_param_values(tau_mem, threshold, bias, &tau_syn);
  return {B, T, N, S};
}

inline SynShape check_syn_backward_args(
    const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_vmem,
    const std::optional<at::Tensor>& grad_isyn, const std::optional<at::Tensor>& grad_irec,
    const std::optional<at::Tensor>& grad_vfinal, const std::optional<at::Tensor>& grad_ifinal,
    const at::Tensor& u, const at::Tensor& a, const at::Tensor& v0,
    const std::optional<at::Tensor>& s0, const at::Tensor& tau_mem, const at::Tensor& tau_syn,
    const at::Tensor& threshold, const std::optional<at::Tensor>& w_rec, double dt, double window,
    double max_spikes, int64_t surrogate, const std::optional<at::Tensor>& lengths) {
  check_saved_u(u);
  const auto ct = u.scalar_type();
  const int64_t B = u.size(0), T = u.size(1), N = u.size(2);
  TORCH_CHECK_VALUE(a.dim() == 4 && a.size(0) == B && a.size(1) == T && a.size(2) == N,
                    "a must be (B,T,N,S) = (", B, ", ", T, ", ", N, ", S), got ", a.sizes());
  const int64_t S = a.size(3);
  TORCH_CHECK_VALUE(S >= 1 || N == 0, "a must have at least one synapse per neuron (S >= 1), got ",
                    a.sizes());
  check_dtype_device(a, ct, u, "a");
  check_grad_spikes(grad_spikes, u);
  if (grad_vmem.has_value()) check_state_like(*grad_vmem, ct, u, "grad_vmem", {B, T, N});
  if (grad_isyn.has_value()) check_state_like(*grad_isyn, ct, u, "grad_isyn", {B, T, N, S});
  if (grad_irec.has_value()) check_state_like(*grad_irec, ct, u, "grad_irec", {B, T, N, S});
  if (grad_vfinal.has_value()) check_state_like(*grad_vfinal, ct, u, "grad_vfinal", {B, N});
  if (grad_ifinal.has_value()) check_state_like(*grad_ifinal, ct, u, "grad_ifinal", {B, N, S});
  check_v0(v0, ct, u, B, N);
  if (s0.has_value()) check_syn_state(*s0, ct, u, "s0", B, {N});
  check_param(tau_mem, ct, u, "tau_mem", N);
  check_syn_param(tau_syn, ct, u, "tau_syn", N, S);
  check_param(threshold, ct, u, "threshold", N);
  check_w_rec(w_rec, ct, u, N, S);
  check_backward_settings(lengths, u, B, T, dt, window, max_spikes, surrogate);
  return {B, T, N, S};
}

}  // namespace lif
