// The device-independent half of the ops: argument checks, the decay alpha, contiguous views,
// output allocation, the empty-shape rules, the raw-pointer arguments, and the parameter-gradient
// epilogue. csrc/cpu/ and csrc/cuda/ only dispatch on the dtype and launch their kernels on what
// this prepares.
//
// Everything the op computes (alpha, the gradient of tau, the sums over the batch and over the
// neurons of a scalar parameter) happens inside the op, so that torch.compile, which sees the op as
// one opaque call, gets the very bits of eager mode.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/random.h>
#include <ATen/ops/reciprocal.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>

#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <type_traits>

#include "lif_args.h"
#include "lif_checks.h"
#include "lif_output_pool.h"

namespace lif {

using at::Tensor;

// Kernel launches since the library was loaded (CPU and CUDA, forward and backward). The tests'
// tripwire: a rejected call must not move it (SPEC §6, "before any kernel runs").
inline std::atomic<int64_t> g_kernel_launches{0};
inline void count_launch() { g_kernel_launches.fetch_add(1, std::memory_order_relaxed); }

// Calls f.template operator()<IT, CT>() for the I/O dtype `io`: CT is the compute type (float for
// float16/bfloat16 input).
#define LIF_DISPATCH_IO(IO, NAME, ...)                                        \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, IO, NAME, [&] {   \
    using IT = scalar_t;                                                      \
    using CT = std::conditional_t<std::is_same_v<IT, double>, double, float>; \
    __VA_ARGS__();                                                            \
  })

// alpha = exp(-dt / tau), by the very ATen ops the Python expression `torch.exp(-dt / tau)` runs
// (Tensor.__rtruediv__ is `tau.reciprocal() * (-dt)`), so alpha has the reference's (and
// Rockpool's) bits on the same device. On the CPU torch's float exp is MKL's, whose last bit can
// differ between CPUs (reproduced here by calling it), and which wakes MKL's thread team on every
// call: measured at 3-13 us for 128 elements on an idle 2-core machine and up to 8 ms when the
// other core is busy. So on the CPU the op remembers the alpha of the last few taus it saw, keyed
// by tau's *values* (compared byte for byte, and dt, dtype, shape): a hit returns exactly what the
// ops would compute, however tau was changed in between (in place, through .data, ...).
inline Tensor compute_decay(const Tensor& tau, double dt) {
  return at::mul(at::reciprocal(tau), -dt).exp_();
}

class DecayCache {
 public:
  // Bounded: kEntries taus of at most kMaxNumel elements each (larger ones cost one exp per call,
  // small against a call's B*T*N work).
  static constexpr int kEntries = 8;
  static constexpr int64_t kMaxNumel = 16384;

  Tensor alpha(const Tensor& tau, double dt) {
    if (!tau.device().is_cpu() || tau.numel() > kMaxNumel) return compute_decay(tau, dt);
    const Tensor t = tau.contiguous();
    const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      for (const Entry& e : entries_) {
        if (e.alpha.defined() && e.dt == dt && e.tau.scalar_type() == t.scalar_type() &&
            e.tau.sizes() == t.sizes() &&
            std::memcmp(e.tau.const_data_ptr(), t.const_data_ptr(), bytes) == 0) {
          return e.alpha;
        }
      }
    }
    Entry fresh{t.clone(), dt, compute_decay(t, dt)};
    const std::lock_guard<std::mutex> lock(mutex_);
    entries_[next_] = fresh;
    next_ = (next_ + 1) % kEntries;
    return fresh.alpha;
  }

  // Never destroyed: no tensor is freed during static destruction at exit.
  static DecayCache& instance() {
    static DecayCache* cache = new DecayCache();
    return *cache;
  }

 private:
  struct Entry {
    Tensor tau;  // a private copy of the values alpha was computed from
    double dt;
    Tensor alpha;  // never written after it is computed: shared read-only by the callers
  };
  std::mutex mutex_;
  std::array<Entry, kEntries> entries_{};
  int next_ = 0;
};

// The noise mode of a forward and, for in-kernel noise, its Philox key (seed, offset): given, or
// two draws from torch's default CPU generator, made at run time (also when there is nothing to
// compute), exactly as lif_cuda.noise.draw_noise_key draws them for the reference; so
// torch.manual_seed reproduces a run, eager or compiled, on any device. `host_key` false: the CUDA
// LIF op under graph capture, which keys the kernel itself (seed and offset stay 0 unless given).
struct NoiseKey {
  NoiseMode mode;
  uint64_t seed = 0, offset = 0;
};

inline NoiseKey resolve_noise(const std::optional<Tensor>& noise,
                              const std::optional<Tensor>& noise_key, double noise_scale,
                              bool host_key = true) {
  NoiseKey nk{noise.has_value() ? kNoiseTensor : (noise_scale > 0.0 ? kNoiseKernel : kNoNoise)};
  if (nk.mode == kNoiseKernel && (noise_key.has_value() || host_key)) {
    const Tensor key =
        noise_key.has_value() ? noise_key->contiguous() : at::empty({2}, at::kLong).random_();
    nk.seed = static_cast<uint64_t>(key.const_data_ptr<int64_t>()[0]);
    nk.offset = static_cast<uint64_t>(key.const_data_ptr<int64_t>()[1]);
  }
  return nk;
}

// grad_spikes (B,T,N) as the backward kernels read it: in place, with its strides, when each row
// is contiguous or broadcast along the neurons (stride 0: the expanded ones of `spikes.sum()` cost
// no (B,T,N) copy); otherwise a contiguous copy.
inline Tensor grad_spikes_for_kernels(const Tensor& grad_spikes, int64_t N) {
  const bool rows_ok = N <= 1 || grad_spikes.stride(2) == 1 || grad_spikes.stride(2) == 0;
  return rows_ok ? grad_spikes : grad_spikes.contiguous();
}

struct ForwardOp {
  Tensor x, v0, alpha, thr, bias, z;  // inputs, contiguous; alpha, thr, bias (N,) or ()
  Tensor lengths;  // (B,) int64, contiguous, or undefined (every row runs T)
  Tensor spikes, w_rec, v_final, u, v0_saved;  // outputs ((0,) when not asked for)
  int64_t B, T, N;
  bool run;  // false: the outputs are already final (empty shapes)
  NoiseMode noise_mode;
  uint64_t seed, offset;
  // Under CUDA graph capture: the key read on the device (ForwardArgs::key_seed), else nullptr.
  const int64_t* key_seed;
  const int64_t* key_offset;
  uint64_t key_offset_intragraph;
  double noise_scale, max_spikes;

  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> outputs() const {
    return {spikes, w_rec, v_final, u, v0_saved};
  }

  template <typename IT, typename CT>
  ForwardArgs<IT, CT> args() const {
    count_launch();
    ForwardArgs<IT, CT> a{};
    a.x = x.const_data_ptr<IT>();
    a.noise = z.defined() ? z.const_data_ptr<CT>() : nullptr;
    a.noise_mode = noise_mode;
    a.seed = seed;
    a.offset = offset;
    a.key_seed = key_seed;
    a.key_offset = key_offset;
    a.key_offset_intragraph = key_offset_intragraph;
    a.noise_scale = noise_scale;
    a.v0 = v0.const_data_ptr<CT>();
    a.v0_stride_b = v0.dim() == 2 ? N : 0;
    a.alpha = alpha.const_data_ptr<CT>();
    a.thr = thr.const_data_ptr<CT>();
    a.bias = bias.const_data_ptr<CT>();
    a.alpha_scalar = alpha.dim() == 0;
    a.thr_scalar = thr.dim() == 0;
    a.bias_scalar = bias.dim() == 0;
    a.max_spikes = max_spikes;
    a.s_out = spikes.mutable_data_ptr<IT>();
    a.w_rec = w_rec.numel() ? w_rec.mutable_data_ptr<CT>() : nullptr;
    a.u_out = u.numel() ? u.mutable_data_ptr<CT>() : nullptr;
    a.v_final = v_final.mutable_data_ptr<CT>();
    a.lengths = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
    a.B = B;
    a.Tn = T;
    a.N = N;
    return a;
  }
};

inline ForwardOp prepare_forward(const Tensor& input, const Tensor& v0, const Tensor& tau_mem,
                                 const Tensor& threshold, const Tensor& bias,
                                 const std::optional<Tensor>& noise,
                                 const std::optional<Tensor>& noise_key, double dt,
                                 double noise_scale, double window, double max_spikes, bool record,
                                 bool save_u, const std::optional<Tensor>& lengths,
                                 bool host_key = true) {
  ForwardOp op{};
  std::tie(op.B, op.T, op.N) =
      check_forward_args(input, v0, tau_mem, threshold, bias, noise, noise_key, dt, noise_scale,
                         window, max_spikes, lengths);
  const int64_t B = op.B, T = op.T, N = op.N;
  const auto state = v0.options();
  op.spikes = empty_output({B, T, N}, input.options());
  op.w_rec = empty_output(record ? at::IntArrayRef{B, T, N} : at::IntArrayRef{0}, state);
  op.u = empty_output(save_u ? at::IntArrayRef{B, T, N} : at::IntArrayRef{0}, state);
  op.v_final = at::empty({B, N}, state);
  op.v0_saved = save_u ? v0.clone(at::MemoryFormat::Contiguous) : at::empty({0}, state);
  const NoiseKey nk = resolve_noise(noise, noise_key, noise_scale, host_key);
  op.noise_mode = nk.mode;
  op.seed = nk.seed;
  op.offset = nk.offset;
  op.run = B > 0 && N > 0 && T > 0;
  if (!op.run) {
    if (B > 0 && N > 0) op.v_final.copy_(v0.expand({B, N}));  // T == 0: the state is v0
    return op;
  }
  // Contiguous views (no copy when already contiguous, the usual case).
  op.x = input.contiguous();
  op.v0 = v0.contiguous();
  op.alpha = DecayCache::instance().alpha(tau_mem, dt).contiguous();
  op.thr = threshold.contiguous();
  op.bias = bias.contiguous();
  if (noise.has_value()) op.z = noise->contiguous();
  if (lengths.has_value()) op.lengths = lengths->contiguous();
  op.max_spikes = max_spikes;
  op.noise_scale = noise_scale;
  return op;
}

struct BackwardOp {
  Tensor gs, gw, gvf, u, v0, tau, alpha, thr;  // inputs (gs possibly strided), contiguous
  Tensor lengths;  // (B,) int64, contiguous, or undefined
  Tensor g_in, g_v0, g_tau, g_thr, g_bias, partial;  // outputs in their inputs' shapes; scratch
  int64_t B, T, N;
  bool run, scalar_bias;
  double dt, window, max_spikes;
  int surrogate;

  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> outputs() const {
    return {g_in, g_v0, g_tau, g_thr, g_bias};
  }

  template <typename IT, typename CT>
  BackwardArgs<IT, CT> args() const {
    count_launch();
    BackwardArgs<IT, CT> a{};
    a.gs = gs.const_data_ptr<IT>();
    a.gs_stride_b = gs.stride(0);
    a.gs_stride_t = gs.stride(1);
    a.gs_stride_n = N <= 1 ? 1 : gs.stride(2);
    a.gw = gw.defined() ? gw.const_data_ptr<CT>() : nullptr;
    a.gvf = gvf.defined() ? gvf.const_data_ptr<CT>() : nullptr;
    a.u = u.const_data_ptr<CT>();
    a.v0 = v0.const_data_ptr<CT>();
    a.v0_stride_b = v0.dim() == 2 ? N : 0;
    a.alpha = alpha.const_data_ptr<CT>();
    a.tau = tau.const_data_ptr<CT>();
    a.thr = thr.const_data_ptr<CT>();
    a.alpha_scalar = alpha.dim() == 0;
    a.thr_scalar = thr.dim() == 0;
    a.bias_scalar = scalar_bias;
    a.dt = dt;
    a.window = window;
    a.max_spikes = max_spikes;
    a.surrogate = surrogate;
    a.g_in = g_in.mutable_data_ptr<IT>();
    CT* const part = partial.mutable_data_ptr<CT>();
    a.partial = part;
    // A shared v0's per-row gradients are the fourth partial, summed over the batch like the rest.
    a.g_v0 = v0.dim() == 2 ? g_v0.mutable_data_ptr<CT>() : part + 3 * B * N;
    a.g_v0_sum = v0.dim() == 2 ? nullptr : g_v0.mutable_data_ptr<CT>();
    a.g_tau = g_tau.mutable_data_ptr<CT>();
    a.g_thr = g_thr.mutable_data_ptr<CT>();
    a.g_bias = g_bias.mutable_data_ptr<CT>();
    a.lengths = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
    a.B = B;
    a.Tn = T;
    a.N = N;
    return a;
  }
};

// grad_spikes is read as grad_spikes_for_kernels says (in place where its rows allow).
inline BackwardOp prepare_backward(const Tensor& grad_spikes,
                                   const std::optional<Tensor>& grad_vmem,
                                   const std::optional<Tensor>& grad_vfinal, const Tensor& u,
                                   const Tensor& v0, const Tensor& tau_mem, const Tensor& threshold,
                                   double dt, double window, double max_spikes, int64_t surrogate,
                                   bool scalar_bias, const std::optional<Tensor>& lengths) {
  BackwardOp op{};
  std::tie(op.B, op.T, op.N) =
      check_backward_args(grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem, threshold, dt,
                          window, max_spikes, surrogate, lengths);
  const int64_t B = op.B, T = op.T, N = op.N;
  const auto opts = u.options();
  op.g_in = empty_output({B, T, N}, grad_spikes.options().memory_format(std::nullopt));
  op.g_v0 = at::empty(v0.sizes(), opts);
  op.run = B > 0 && N > 0 && T > 0;
  if (!op.run) {
    // Nothing ran: dL/dv0 is the gradient on the final state (summed over the batch for a shared
    // v0); the parameters get none.
    if (grad_vfinal.has_value() && B > 0) {
      op.g_v0.copy_(v0.dim() == 2 ? *grad_vfinal : grad_vfinal->sum(0));
    } else {
      op.g_v0.zero_();
    }
    op.g_tau = at::zeros(tau_mem.sizes(), opts);
    op.g_thr = at::zeros(threshold.sizes(), opts);
    op.g_bias = at::zeros(scalar_bias ? at::IntArrayRef{} : at::IntArrayRef{N}, opts);
    return op;
  }
  op.gs = grad_spikes_for_kernels(grad_spikes, N);
  if (grad_vmem.has_value()) op.gw = grad_vmem->contiguous();
  if (grad_vfinal.has_value()) op.gvf = grad_vfinal->contiguous();
  op.u = u.contiguous();
  op.v0 = v0.contiguous();
  op.tau = tau_mem.contiguous();
  op.alpha = DecayCache::instance().alpha(tau_mem, dt).contiguous();
  op.thr = threshold.contiguous();
  if (lengths.has_value()) op.lengths = lengths->contiguous();
  op.dt = dt;
  op.window = window;
  op.max_spikes = max_spikes;
  op.surrogate = static_cast<int>(surrogate);
  op.scalar_bias = scalar_bias;
  // Written in full by the kernels: per-(batch row, neuron) partials, then their sums over the
  // batch in a fixed order (deterministic, no atomics).
  op.partial = empty_output({v0.dim() == 2 ? 3 : 4, B, N}, opts);
  op.g_tau = at::empty(tau_mem.sizes(), opts);
  op.g_thr = at::empty(threshold.sizes(), opts);
  op.g_bias = at::empty(scalar_bias ? at::IntArrayRef{} : at::IntArrayRef{N}, opts);
  return op;
}

}  // namespace lif
