// Argument checks of every op (SPEC §6), the one source of their error texts: run at the op
// boundary, before anything is allocated or launched, with the user's argument names;
// TORCH_CHECK_VALUE / TORCH_CHECK_TYPE surface in Python as ValueError / TypeError.
//
// Parameter *values* (finite, > 0) are read here only for CPU tensors (a loop over N). On CUDA
// that would cost a device-to-host copy and a stream sync per call, so the Python layer checks
// CUDA parameters itself, once per change.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "../core/adaptive.h"
#include "../core/counts.h"
#include "../core/mask.h"
#include "../core/surrogate.h"

namespace lif {

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

inline void check_dtype_device(const at::Tensor& t, at::ScalarType dtype, const at::Tensor& ref,
                               const char* name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on ", ref.device(),
                    " (the input's device), got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ",
                   t.scalar_type());
}

inline void check_state_like(const at::Tensor& t, at::ScalarType dtype, const at::Tensor& ref,
                             const char* name, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  check_dtype_device(t, dtype, ref, name);
}

// A per-neuron parameter: shape (N,) or () (one value for every neuron).
inline void check_param(const at::Tensor& t, at::ScalarType dtype, const at::Tensor& ref,
                        const char* name, int64_t N) {
  check_dtype_device(t, dtype, ref, name);
  TORCH_CHECK_VALUE(t.dim() == 0 || (t.dim() == 1 && t.size(0) == N), name, " must have shape (", N,
                    ",) or (), got ", t.sizes());
}

// A per-neuron initial state (v0, b0): (B,N), or (N,) for one state shared by every batch row.
inline void check_neuron_state(const at::Tensor& t, at::ScalarType dtype, const at::Tensor& ref,
                               const char* name, int64_t B, int64_t N) {
  check_dtype_device(t, dtype, ref, name);
  TORCH_CHECK_VALUE(
      (t.dim() == 2 && t.size(0) == B && t.size(1) == N) || (t.dim() == 1 && t.size(0) == N), name,
      " must have shape (", B, ", ", N, ") or (", N, ",), got ", t.sizes());
}

inline void check_v0(const at::Tensor& v0, at::ScalarType dtype, const at::Tensor& ref, int64_t B,
                     int64_t N) {
  check_neuron_state(v0, dtype, ref, "v0", B, N);
}

// Every value `ok`, for a CPU tensor (`what` says what ok means); no-op on other devices.
template <typename Ok>
void check_values(const at::Tensor& t, const char* name, Ok ok, const char* what) {
  if (!t.device().is_cpu() || t.numel() == 0) return;
  const at::Tensor c = t.contiguous();
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "lif_check_param_values", [&] {
    const scalar_t* p = c.const_data_ptr<scalar_t>();
    const int64_t n = c.numel();
    for (int64_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(p[i]);
      TORCH_CHECK_VALUE(ok(v), name, " must be ", what, " everywhere, got ", v,
                        c.dim() ? " at index " : "", c.dim() ? std::to_string(i) : std::string());
    }
  });
}

// Finite everywhere (and > 0 where `positive`), for a CPU tensor; no-op on other devices.
inline void check_param_values(const at::Tensor& t, const char* name, bool positive) {
  check_values(
      t, name, [positive](double v) { return std::isfinite(v) && (!positive || v > 0.0); },
      positive ? "finite and > 0" : "finite");
}

// A leak given as a decay (an op's `decays`): in [0, 1], what exp(-dt/tau) gives for tau > 0
// (0 where it underflows, Rockpool's bitshift 0); CPU tensors only, as check_param_values.
inline void check_decay_values(const at::Tensor& t, const char* name) {
  check_values(t, name, [](double v) { return v >= 0.0 && v <= 1.0; }, "in [0, 1]");
}

// The names of the leak arguments: time constants, or with `decays` the decays alpha =
// exp(-dt/tau_mem) and beta = exp(-dt/tau_syn) themselves (Rockpool's leak_mode "decays").
inline const char* mem_leak_name(bool decays) { return decays ? "alpha" : "tau_mem"; }
inline const char* syn_leak_name(bool decays) { return decays ? "beta" : "tau_syn"; }

// Per-row lengths (SPEC §8): int64 (B,) on `ref`'s device; for a CPU tensor also the values,
// 0 <= lengths[b] <= T (elsewhere reading them would cost a sync: lif_cuda's Python layer checks a
// CUDA tensor's values, and the kernels clamp what they read to [0, T]).
inline void check_lengths(const std::optional<at::Tensor>& lengths, const at::Tensor& ref,
                          int64_t B, int64_t T) {
  if (!lengths.has_value()) return;
  const at::Tensor& l = *lengths;
  TORCH_CHECK_TYPE(l.scalar_type() == at::kLong, "lengths must be an int64 tensor, got ",
                   l.scalar_type());
  TORCH_CHECK_VALUE(l.dim() == 1 && l.size(0) == B, "lengths must have shape (", B,
                    ",) (one length per batch row), got ", l.sizes());
  TORCH_CHECK_VALUE(l.device() == ref.device(), "lengths must be on ", ref.device(),
                    " (the input's device), got ", l.device());
  if (!l.device().is_cpu()) return;
  const at::Tensor c = l.contiguous();
  const int64_t* p = c.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(p[b] >= 0 && p[b] <= T, "lengths must be in [0, T] = [0, ", T,
                      "] (T the number of time steps), got ", p[b], " at index ", b);
  }
}

inline void check_scalar_args(double dt, double window, double max_spikes) {
  TORCH_CHECK_VALUE(std::isfinite(dt) && dt > 0.0, "dt must be finite and > 0, got ", dt);
  TORCH_CHECK_VALUE(std::isfinite(window) && window >= 0.0,
                    "learning_window must be finite and >= 0, got ", window);
  TORCH_CHECK_VALUE(max_spikes >= 1.0, "max_spikes_per_dt must be >= 1, got ", max_spikes);
}

// The noise arguments of a forward: a noise tensor (B,T,N) in the state's dtype, or in-kernel noise
// (noise_scale >= 0, with an optional key noise_key), not both.
inline void check_noise_args(const std::optional<at::Tensor>& noise,
                             const std::optional<at::Tensor>& noise_key, double noise_scale,
                             at::ScalarType dtype, const at::Tensor& ref, int64_t B, int64_t T,
                             int64_t N) {
  if (noise.has_value()) check_state_like(*noise, dtype, ref, "noise", {B, T, N});
  TORCH_CHECK_VALUE(std::isfinite(noise_scale) && noise_scale >= 0.0,
                    "noise_scale must be finite and >= 0, got ", noise_scale);
  TORCH_CHECK_VALUE(!(noise.has_value() && (noise_scale > 0.0 || noise_key.has_value())),
                    "give either a noise tensor or in-kernel noise (noise_scale > 0), not both");
  if (noise_key.has_value()) {
    TORCH_CHECK_VALUE(noise_key->numel() == 2 && noise_key->scalar_type() == at::kLong &&
                          noise_key->device().is_cpu(),
                      "noise_key must be a CPU int64 tensor (seed, offset), got ",
                      noise_key->sizes(), " ", noise_key->scalar_type(), " on ",
                      noise_key->device());
  }
}

// The per-row lengths and the scalar arguments, which every op takes.
inline void check_settings(const std::optional<at::Tensor>& lengths, const at::Tensor& ref,
                           int64_t B, int64_t T, double dt, double window, double max_spikes) {
  check_lengths(lengths, ref, B, T);
  check_scalar_args(dt, window, max_spikes);
}

// The parameters' values (CPU tensors only, see check_param_values); `tau_syn` only for the
// synaptic ops; with `decays` tau_mem and tau_syn are the decays alpha and beta.
inline void check_neuron_param_values(const at::Tensor& tau_mem, const at::Tensor& threshold,
                                      const at::Tensor& bias, const at::Tensor* tau_syn = nullptr,
                                      bool decays = false) {
  for (const auto& [leak, name] :
       {std::pair{&tau_mem, mem_leak_name(decays)}, std::pair{tau_syn, syn_leak_name(decays)}}) {
    if (leak == nullptr) continue;
    if (decays) {
      check_decay_values(*leak, name);
    } else {
      check_param_values(*leak, name, true);
    }
  }
  check_param_values(threshold, "threshold", true);
  check_param_values(bias, "bias", false);
}

// A backward's saved membrane input u: (B,T,N), float32 or float64 (the state's dtype).
inline void check_saved_u(const at::Tensor& u) {
  TORCH_CHECK_VALUE(u.dim() == 3, "u must be (B,T,N), got shape ", u.sizes());
  TORCH_CHECK_TYPE(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble,
                   "u must be float32 or float64, got ", u.scalar_type());
}

// grad_spikes carries the input's dtype (float16/bfloat16 with float32 state), the state's
// (`ref`'s) compute dtype and device, the sequence's shape, any strides.
inline void check_grad_spikes(const at::Tensor& grad_spikes, const at::Tensor& ref,
                              at::IntArrayRef shape) {
  const auto ct = ref.scalar_type();
  check_io_dtype(grad_spikes, "grad_spikes");
  TORCH_CHECK_TYPE(compute_dtype(grad_spikes.scalar_type()) == ct, "grad_spikes has dtype ",
                   grad_spikes.scalar_type(), " but the state has ", ct);
  TORCH_CHECK_VALUE(grad_spikes.sizes() == shape, "grad_spikes must have shape ", shape, ", got ",
                    grad_spikes.sizes());
  TORCH_CHECK_VALUE(grad_spikes.device() == ref.device(), "grad_spikes must be on ", ref.device());
}

inline void check_grad_spikes(const at::Tensor& grad_spikes, const at::Tensor& u) {
  check_grad_spikes(grad_spikes, u, u.sizes());
}

// What a LIF forward saved for its backward: u, or (int32) the window mask's words (core/mask.h).
inline bool is_window_mask(const at::Tensor& u) { return u.scalar_type() == at::kInt; }

// What a backward reads in u's place (SPEC §11): u (B,T,N), or the window mask's (B, ceil(T/32), N)
// words, for the StepPWL surrogate; then the shapes come from grad_spikes, the compute dtype and
// device from v0. Returns the tensor that gives them (u or v0) and (B, T, N).
inline std::tuple<const at::Tensor&, int64_t, int64_t, int64_t> check_saved_sequence(
    const at::Tensor& u, const at::Tensor& grad_spikes, const at::Tensor& v0, int64_t surrogate) {
  if (!is_window_mask(u)) {
    check_saved_u(u);
    return {u, u.size(0), u.size(1), u.size(2)};
  }
  TORCH_CHECK_VALUE(grad_spikes.dim() == 3, "grad_spikes must be (B,T,N), got shape ",
                    grad_spikes.sizes());
  TORCH_CHECK_TYPE(v0.scalar_type() == at::kFloat || v0.scalar_type() == at::kDouble,
                   "v0 must be float32 or float64, got ", v0.scalar_type());
  const int64_t B = grad_spikes.size(0), T = grad_spikes.size(1), N = grad_spikes.size(2);
  TORCH_CHECK_VALUE(u.sizes() == at::IntArrayRef({B, mask_words(T), N}),
                    "u (a window mask) must have shape (", B, ", ", mask_words(T), ", ", N,
                    "), got ", u.sizes());
  TORCH_CHECK_VALUE(u.device() == v0.device(), "u must be on ", v0.device());
  TORCH_CHECK_VALUE(surrogate == kStepPWL,
                    "a window mask serves the StepPWL surrogate only, got surrogate ", surrogate);
  return {v0, B, T, N};
}

// A backward's lengths, scalar arguments and surrogate.
inline void check_backward_settings(const std::optional<at::Tensor>& lengths, const at::Tensor& ref,
                                    int64_t B, int64_t T, double dt, double window,
                                    double max_spikes, int64_t surrogate) {
  check_settings(lengths, ref, B, T, dt, window, max_spikes);
  TORCH_CHECK_VALUE(surrogate >= 0 && surrogate < kNumSurrogates, "surrogate must be in [0, ",
                    kNumSurrogates, ") (a lif_cuda surrogate's kernel id), got ", surrogate);
}

// ---------------------------------------------------------------- the LIF ops

// Checks the forward op's arguments; returns (B, T, N).
inline std::tuple<int64_t, int64_t, int64_t> check_forward_args(
    const at::Tensor& input, const at::Tensor& v0, const at::Tensor& tau_mem,
    const at::Tensor& threshold, const at::Tensor& bias, const std::optional<at::Tensor>& noise,
    const std::optional<at::Tensor>& noise_key, double dt, double noise_scale, double window,
    double max_spikes, const std::optional<at::Tensor>& lengths, bool decays = false) {
  TORCH_CHECK_VALUE(input.dim() == 3, "input must be (B,T,N), got shape ", input.sizes());
  check_io_dtype(input, "input");
  const auto ct = compute_dtype(input.scalar_type());
  const int64_t B = input.size(0), T = input.size(1), N = input.size(2);
  // Parameters before v0: a module moved to another device than its input names its parameter.
  check_param(tau_mem, ct, input, mem_leak_name(decays), N);
  check_param(threshold, ct, input, "threshold", N);
  check_param(bias, ct, input, "bias", N);
  check_v0(v0, ct, input, B, N);
  check_noise_args(noise, noise_key, noise_scale, ct, input, B, T, N);
  check_settings(lengths, input, B, T, dt, window, max_spikes);
  check_neuron_param_values(tau_mem, threshold, bias, nullptr, decays);
  return {B, T, N};
}

inline std::tuple<int64_t, int64_t, int64_t> check_backward_args(
    const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_vmem,
    const std::optional<at::Tensor>& grad_vfinal, const at::Tensor& u, const at::Tensor& v0,
    const at::Tensor& tau_mem, const at::Tensor& threshold, double dt, double window,
    double max_spikes, int64_t surrogate, const std::optional<at::Tensor>& lengths,
    bool decays = false) {
  const auto [ref, B, T, N] = check_saved_sequence(u, grad_spikes, v0, surrogate);
  const auto ct = ref.scalar_type();
  check_grad_spikes(grad_spikes, ref, {B, T, N});
  if (grad_vmem.has_value()) check_state_like(*grad_vmem, ct, ref, "grad_vmem", {B, T, N});
  if (grad_vfinal.has_value()) check_state_like(*grad_vfinal, ct, ref, "grad_vfinal", {B, N});
  check_v0(v0, ct, ref, B, N);
  check_param(tau_mem, ct, ref, mem_leak_name(decays), N);
  check_param(threshold, ct, ref, "threshold", N);
  check_backward_settings(lengths, ref, B, T, dt, window, max_spikes, surrogate);
  return {B, T, N};
}

// ---------------------------------------------------------------- the adaptive ops (SPEC §10)
// The LIF ops' checks, then the adaptation's own arguments.

inline std::tuple<int64_t, int64_t, int64_t> check_adaptive_forward_args(
    const at::Tensor& input, const at::Tensor& v0, const at::Tensor& b0, const at::Tensor& tau_mem,
    const at::Tensor& threshold, const at::Tensor& bias, const at::Tensor& tau_adapt,
    const at::Tensor& beta_adapt, const std::optional<at::Tensor>& noise,
    const std::optional<at::Tensor>& noise_key, double dt, double noise_scale, double window,
    double max_spikes, const std::optional<at::Tensor>& lengths) {
  const auto shape = check_forward_args(input, v0, tau_mem, threshold, bias, noise, noise_key, dt,
                                        noise_scale, window, max_spikes, lengths);
  const auto ct = compute_dtype(input.scalar_type());
  const int64_t N = input.size(2);
  check_neuron_state(b0, ct, input, "b0", input.size(0), N);
  check_param(tau_adapt, ct, input, "tau_adapt", N);
  check_param(beta_adapt, ct, input, "beta_adapt", N);
  check_param_values(tau_adapt, "tau_adapt", true);
  check_param_values(beta_adapt, "beta_adapt", false);
  return shape;
}

inline std::tuple<int64_t, int64_t, int64_t> check_adaptive_backward_args(
    const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_vmem,
    const std::optional<at::Tensor>& grad_adapt, const std::optional<at::Tensor>& grad_vfinal,
    const std::optional<at::Tensor>& grad_bfinal, const at::Tensor& u, const at::Tensor& b,
    const at::Tensor& v0, const at::Tensor& b0, const at::Tensor& tau_mem,
    const at::Tensor& threshold, const at::Tensor& tau_adapt, const at::Tensor& beta_adapt,
    double dt, double window, double max_spikes, int64_t surrogate,
    const std::optional<at::Tensor>& lengths, int64_t b_every) {
  check_saved_u(u);  // u itself: this model keeps no window mask (SPEC §11 is the LIF op's)
  const auto shape = check_backward_args(grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem,
                                         threshold, dt, window, max_spikes, surrogate, lengths);
  const auto [B, T, N] = shape;
  const auto ct = u.scalar_type();
  // b as the device's forward keeps it: every b_every-th (core/adaptive.h).
  check_state_like(b, ct, u, "b", {B, adapt_checkpoint_rows(T, b_every), N});
  if (grad_adapt.has_value()) check_state_like(*grad_adapt, ct, u, "grad_adapt", {B, T, N});
  if (grad_bfinal.has_value()) check_state_like(*grad_bfinal, ct, u, "grad_bfinal", {B, N});
  check_neuron_state(b0, ct, u, "b0", B, N);
  check_param(tau_adapt, ct, u, "tau_adapt", N);
  check_param(beta_adapt, ct, u, "beta_adapt", N);
  return shape;
}

// Whether a forward's spike counts fit uint8 exactly (max_spikes a whole number <= 255): only then
// are they kept beside the window mask (SPEC §11).
inline bool counts_fit_uint8(double max_spikes) {
  return max_spikes <= kMaxCount && max_spikes == std::floor(max_spikes);
}

// The saving flags of a forward op (SPEC §11; the autograd kernels set them, the ops are public):
// the window mask stands for u only under StepPWL, and spike counts only beside it, as uint8 (whole
// counts up to 255).
inline void check_save_flags(bool save_mask, int64_t surrogate, bool save_counts,
                             double max_spikes) {
  TORCH_CHECK_VALUE(!save_mask || surrogate == kStepPWL,
                    "save_mask: the window mask serves the StepPWL surrogate only, got surrogate ",
                    surrogate);
  TORCH_CHECK_VALUE(!save_counts || save_mask,
                    "save_counts: the spike counts are kept beside the window mask, so save_mask "
                    "must be set too");
  TORCH_CHECK_VALUE(
      !save_counts || counts_fit_uint8(max_spikes),
      "save_counts keeps spike counts as uint8: max_spikes_per_dt must be a whole number <= 255, "
      "got ",
      max_spikes);
}

// ---------------------------------------------------------------- the synaptic ops (SPEC §7)

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

// The AHP current's forward arguments (SPEC §9), all three or none: w_ahp and tau_ahp (N,) or (),
// h0 (B,N) or (N,); their values on the CPU. Returns whether they are given.
inline bool check_ahp_args(const std::optional<at::Tensor>& w_ahp,
                           const std::optional<at::Tensor>& tau_ahp,
                           const std::optional<at::Tensor>& h0, at::ScalarType dtype,
                           const at::Tensor& ref, int64_t B, int64_t N) {
  const bool given = w_ahp.has_value() || tau_ahp.has_value() || h0.has_value();
  if (!given) return false;
  TORCH_CHECK_VALUE(w_ahp.has_value() && tau_ahp.has_value() && h0.has_value(),
                    "w_ahp, tau_ahp and h0 (the AHP current) go together: give all three or none");
  check_param(*w_ahp, dtype, ref, "w_ahp", N);
  check_param(*tau_ahp, dtype, ref, "tau_ahp", N);
  check_syn_state(*h0, dtype, ref, "h0", B, {N});
  check_param_values(*w_ahp, "w_ahp", false);
  check_param_values(*tau_ahp, "tau_ahp", true);
  return true;
}

// The AHP current's backward arguments: h_pre (B,T,N) with w_ahp and tau_ahp, or none of them.
inline bool check_ahp_backward_args(const std::optional<at::Tensor>& grad_iahp,
                                    const std::optional<at::Tensor>& grad_hfinal,
                                    const std::optional<at::Tensor>& h_pre,
                                    const std::optional<at::Tensor>& w_ahp,
                                    const std::optional<at::Tensor>& tau_ahp, const at::Tensor& ref,
                                    const SynShape& sh) {
  const bool given = h_pre.has_value() || w_ahp.has_value() || tau_ahp.has_value();
  if (!given) return false;
  TORCH_CHECK_VALUE(
      h_pre.has_value() && w_ahp.has_value() && tau_ahp.has_value(),
      "h_pre, w_ahp and tau_ahp (the AHP current) go together: give all three or none");
  const auto ct = ref.scalar_type();
  const int64_t B = sh.B, T = sh.T, N = sh.N;
  // h_pre: (B,T,N), or (0,) where tau_ahp needs no gradient (the forward kept none).
  if (h_pre->numel() == 0 && h_pre->dim() == 1) {
    check_dtype_device(*h_pre, ct, ref, "h_pre");
  } else {
    check_state_like(*h_pre, ct, ref, "h_pre", {B, T, N});
  }
  if (grad_iahp.has_value()) check_state_like(*grad_iahp, ct, ref, "grad_iahp", {B, T, N});
  if (grad_hfinal.has_value()) check_state_like(*grad_hfinal, ct, ref, "grad_hfinal", {B, N});
  check_param(*w_ahp, ct, ref, "w_ahp", N);
  check_param(*tau_ahp, ct, ref, "tau_ahp", N);
  return true;
}

// The forward's arguments (synaptic_forward in ops.cpp); N and S come from i0.
inline SynShape check_syn_forward_args(
    const at::Tensor& input, const at::Tensor& v0, const at::Tensor& i0,
    const std::optional<at::Tensor>& s0, const at::Tensor& tau_mem, const at::Tensor& tau_syn,
    const at::Tensor& threshold, const at::Tensor& bias, const std::optional<at::Tensor>& w_rec,
    const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& noise_key, double dt,
    double noise_scale, double window, double max_spikes, const std::optional<at::Tensor>& lengths,
    bool decays = false) {
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
  check_param(tau_mem, ct, input, mem_leak_name(decays), N);
  check_syn_param(tau_syn, ct, input, syn_leak_name(decays), N, S);
  check_param(threshold, ct, input, "threshold", N);
  check_param(bias, ct, input, "bias", N);
  check_w_rec(w_rec, ct, input, N, S);
  check_v0(v0, ct, input, B, N);
  check_syn_state(i0, ct, input, "i0", B, {N, S});
  if (s0.has_value()) check_syn_state(*s0, ct, input, "s0", B, {N});
  check_noise_args(noise, noise_key, noise_scale, ct, input, B, T, N);
  check_settings(lengths, input, B, T, dt, window, max_spikes);
  check_neuron_param_values(tau_mem, threshold, bias, &tau_syn, decays);
  return {B, T, N, S};
}

inline SynShape check_syn_backward_args(
    const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_vmem,
    const std::optional<at::Tensor>& grad_isyn, const std::optional<at::Tensor>& grad_irec,
    const std::optional<at::Tensor>& grad_vfinal, const std::optional<at::Tensor>& grad_ifinal,
    const at::Tensor& u, const at::Tensor& i_pre, const at::Tensor& v0,
    const std::optional<at::Tensor>& s0, const at::Tensor& tau_mem, const at::Tensor& tau_syn,
    const at::Tensor& threshold, const std::optional<at::Tensor>& w_rec, double dt, double window,
    double max_spikes, int64_t surrogate, const std::optional<at::Tensor>& lengths,
    bool decays = false) {
  const auto [ref, B, T, N] = check_saved_sequence(u, grad_spikes, v0, surrogate);
  const auto ct = ref.scalar_type();
  // i_pre: (B,T,N,S), or (0,S) where tau_syn needs no gradient (the forward kept no currents).
  TORCH_CHECK_VALUE(
      (i_pre.dim() == 4 && i_pre.size(0) == B && i_pre.size(1) == T && i_pre.size(2) == N) ||
          (i_pre.dim() == 2 && i_pre.size(0) == 0),
      "i_pre must be (B,T,N,S) = (", B, ", ", T, ", ", N, ", S) or (0, S), got ", i_pre.sizes());
  const int64_t S = i_pre.size(-1);
  TORCH_CHECK_VALUE(S >= 1 || N == 0,
                    "i_pre must have at least one synapse per neuron (S >= 1), got ",
                    i_pre.sizes());
  check_dtype_device(i_pre, ct, ref, "i_pre");
  check_grad_spikes(grad_spikes, ref, {B, T, N});
  if (grad_vmem.has_value()) check_state_like(*grad_vmem, ct, ref, "grad_vmem", {B, T, N});
  if (grad_isyn.has_value()) check_state_like(*grad_isyn, ct, ref, "grad_isyn", {B, T, N, S});
  if (grad_irec.has_value()) check_state_like(*grad_irec, ct, ref, "grad_irec", {B, T, N, S});
  if (grad_vfinal.has_value()) check_state_like(*grad_vfinal, ct, ref, "grad_vfinal", {B, N});
  if (grad_ifinal.has_value()) check_state_like(*grad_ifinal, ct, ref, "grad_ifinal", {B, N, S});
  check_v0(v0, ct, ref, B, N);
  if (s0.has_value()) check_syn_state(*s0, ct, ref, "s0", B, {N});
  check_param(tau_mem, ct, ref, mem_leak_name(decays), N);
  check_syn_param(tau_syn, ct, ref, syn_leak_name(decays), N, S);
  check_param(threshold, ct, ref, "threshold", N);
  check_w_rec(w_rec, ct, ref, N, S);
  check_backward_settings(lengths, ref, B, T, dt, window, max_spikes, surrogate);
  return {B, T, N, S};
}

}  // namespace lif
