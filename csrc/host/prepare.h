// What every op does on the ATen side before its kernels run, once for all models: the launch
// counter, the I/O dtype dispatch, the decays (exp(-dt/tau), as torch computes them), the noise
// key, the raw views of broadcast parameters and of grad_spikes, and the output shapes.
//
// Everything the ops compute (decays, the gradient of tau, the sums over the batch and the neurons)
// happens inside the ops, so that torch.compile, which sees an op as one opaque call, gets the very
// bits of eager mode.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>
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
#include <vector>

#include "../core/args.h"
#include "../core/grad_sums.h"
#include "checks.h"
#include "output_pool.h"

namespace lif {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// Kernel launches since the library was loaded (CPU and CUDA, forward and backward). The tests'
// tripwire: a rejected call must not move it (SPEC §6, "before any kernel runs").
inline std::atomic<int64_t> g_kernel_launches{0};
inline void count_launch() { g_kernel_launches.fetch_add(1, std::memory_order_relaxed); }

// Calls the body with IT = the I/O dtype `IO`'s type and CT = its compute type (float for
// float16/bfloat16 input).
#define LIF_DISPATCH_IO(IO, NAME, ...)                                        \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, IO, NAME, [&] {   \
    using IT = scalar_t;                                                      \
    using CT = std::conditional_t<std::is_same_v<IT, double>, double, float>; \
    __VA_ARGS__();                                                            \
  })

// (0,): an output not asked for.
inline at::IntArrayRef no_output() {
  static constexpr int64_t kShape[1] = {0};
  return at::IntArrayRef(kShape);
}

// A decay exp(-dt / tau), by the very ATen ops the Python expression `torch.exp(-dt / tau)` runs
// (Tensor.__rtruediv__ is `tau.reciprocal() * (-dt)`), so it has the reference's (and Rockpool's)
// bits on the same device.
inline Tensor compute_decay(const Tensor& tau, double dt) {
  return at::mul(at::reciprocal(tau), -dt).exp_();
}

// Whether the current stream of a device is being captured into a CUDA graph; set by the CUDA build
// (cuda/launch.h), null without it.
inline std::atomic<bool (*)()> g_stream_capturing{nullptr};

// On the CPU torch's float exp is MKL's, which wakes MKL's thread team on every call (microseconds
// on an idle machine, milliseconds on a busy one). So the CPU decays of the last few taus are
// remembered, keyed by tau's *values* (compared byte for byte, and dt, dtype, shape): a hit returns
// exactly what the ops would compute, however tau was changed in between. On a device the values
// cannot be read without a sync, and each decay costs three launches: the last few are kept by
// tau's identity (its TensorImpl, held weakly), version, dt, dtype and shape. An in-place write
// (an optimiser step) bumps the version and is seen; a write through `.data` is not. Under CUDA
// graph capture nothing is cached: the graph computes the decay on every replay.
class DecayCache {
 public:
  // Bounded: kEntries taus of at most kMaxNumel elements each (larger ones cost one exp per call,
  // small against a call's B*T*N work).
  static constexpr int kEntries = 8;
  static constexpr int64_t kMaxNumel = 16384;

  Tensor decay(const Tensor& tau, double dt) {
    if (!tau.device().is_cpu()) return device_decay(tau, dt);
    if (tau.numel() > kMaxNumel) return compute_decay(tau, dt);
    const Tensor t = tau.contiguous();
    const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      for (const Entry& e : entries_) {
        if (e.decay.defined() && e.dt == dt && e.tau.scalar_type() == t.scalar_type() &&
            e.tau.sizes() == t.sizes() &&
            std::memcmp(e.tau.const_data_ptr(), t.const_data_ptr(), bytes) == 0) {
          return e.decay;
        }
      }
    }
    Entry fresh{t.clone(), dt, compute_decay(t, dt)};
    const std::lock_guard<std::mutex> lock(mutex_);
    entries_[next_] = fresh;
    next_ = (next_ + 1) % kEntries;
    return fresh.decay;
  }

  // Never destroyed: no tensor is freed during static destruction at exit.
  static DecayCache& instance() {
    static DecayCache* cache = new DecayCache();
    return *cache;
  }

 private:
  struct Entry {
    Tensor tau;  // a private copy of the values the decay was computed from
    double dt;
    Tensor decay;  // never written after it is computed: shared read-only by the callers
  };
  struct DeviceEntry {
    // Identity only (never upgraded to a strong pointer).
    c10::weak_intrusive_ptr<c10::TensorImpl> tau{c10::intrusive_ptr<c10::TensorImpl>()};
    int64_t version = -1;
    double dt = 0.0;
    Tensor decay;
  };

  Tensor device_decay(const Tensor& tau, double dt) {
    bool (*const capturing)() = g_stream_capturing.load();
    if (tau.is_inference() || (capturing && capturing())) return compute_decay(tau, dt);
    const c10::TensorImpl* impl = tau.unsafeGetTensorImpl();
    const int64_t version = tau._version();
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      for (const DeviceEntry& e : device_entries_) {
        if (e.decay.defined() && !e.tau.expired() && e.tau._unsafe_get_target() == impl &&
            e.version == version && e.dt == dt && e.decay.scalar_type() == tau.scalar_type() &&
            e.decay.sizes() == tau.sizes() && e.decay.device() == tau.device()) {
          return e.decay;
        }
      }
    }
    DeviceEntry fresh{c10::weak_intrusive_ptr<c10::TensorImpl>(tau.getIntrusivePtr()), version, dt,
                      compute_decay(tau, dt)};
    const std::lock_guard<std::mutex> lock(mutex_);
    device_entries_[device_next_] = fresh;
    device_next_ = (device_next_ + 1) % kEntries;
    return fresh.decay;
  }

  std::mutex mutex_;
  std::array<Entry, kEntries> entries_{};
  int next_ = 0;
  std::array<DeviceEntry, kEntries> device_entries_{};
  int device_next_ = 0;
};

inline Tensor decay_of(const Tensor& tau, double dt) {
  return DecayCache::instance().decay(tau, dt).contiguous();
}

// A leak argument as the kernels take it: the decay of a time constant, or, for an op given decays
// (`decays`: Rockpool's leak_mode "decays"), the argument itself, whose gradient is then galpha.
inline Tensor leak_decay(const Tensor& leak, double dt, bool decays) {
  return decays ? leak.contiguous() : decay_of(leak, dt);
}

// The noise of a forward (SPEC §4), as the kernels take it but for the tensor pointer: its mode
// and, for in-kernel noise, its Philox key: given (`noise_key`), or two draws from torch's default
// CPU generator made at run time (also when there is nothing to compute), exactly as
// lif_cuda.noise.draw_noise_key draws them for the reference, so torch.manual_seed reproduces a
// run, eager or compiled, on any device. Under CUDA graph capture the CUDA op replaces the key by
// one read on the device (cuda/launch.h): then nothing is drawn here (`host_key` false).
struct NoiseSpec {
  NoiseMode mode = kNoNoise;
  PhiloxKey key{};
  double scale = 0.0;
};

inline NoiseSpec resolve_noise(const OptTensor& noise, const OptTensor& noise_key,
                               double noise_scale, bool host_key) {
  NoiseSpec spec;
  spec.mode = noise.has_value() ? kNoiseTensor : (noise_scale > 0.0 ? kNoiseKernel : kNoNoise);
  spec.scale = noise_scale;
  if (spec.mode == kNoiseKernel && (noise_key.has_value() || host_key)) {
    const Tensor key =
        noise_key.has_value() ? noise_key->contiguous() : at::empty({2}, at::kLong).random_();
    spec.key.seed = static_cast<uint64_t>(key.const_data_ptr<int64_t>()[0]);
    spec.key.offset = static_cast<uint64_t>(key.const_data_ptr<int64_t>()[1]);
  }
  return spec;
}

template <typename T>
Noise<T> noise_args(const NoiseSpec& spec, const Tensor& tensor) {
  return Noise<T>{spec.mode, tensor.defined() ? tensor.const_data_ptr<T>() : nullptr, spec.key,
                  spec.scale};
}

// Broadcast parameters as the kernels read them (core/args.h): (N,) or ().
template <typename T>
PerNeuron<T> per_neuron(const Tensor& p) {
  return PerNeuron<T>{p.const_data_ptr<T>(), p.dim() == 0 ? 0 : 1};
}

// (N,S), (1,S) or ().
template <typename T>
PerSynapse<T> per_synapse(const Tensor& p) {
  if (p.dim() == 0) return PerSynapse<T>{p.const_data_ptr<T>(), 0, 0};
  return PerSynapse<T>{p.const_data_ptr<T>(), p.size(0) == 1 ? 0 : p.size(1), 1};
}

// A pointer to a tensor's data, or nullptr for an undefined or empty (not asked for) one.
template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() && t.numel() ? t.mutable_data_ptr<T>() : nullptr;
}
template <typename T>
const T* const_data_or_null(const Tensor& t) {
  return t.defined() && t.numel() ? t.const_data_ptr<T>() : nullptr;
}

// What every model's backward op takes beside its tensors: the lengths and the scalar settings
// (the op structs derive from it); `set` stores them, `fill` copies them into kernel arguments.
struct BackwardSettings {
  Tensor lengths;  // (B,) int64, contiguous, or undefined (every row runs T)
  double dt = 0.0, window = 0.0, max_spikes = 0.0;
  int surrogate = 0;
  bool decays = false;  // the leak arguments are decays (leak_decay): their gradient is galpha

  void set(const OptTensor& lengths_, double dt_, double window_, double max_spikes_,
           int64_t surrogate_, bool decays_) {
    if (lengths_.has_value()) lengths = lengths_->contiguous();
    dt = dt_;
    window = window_;
    max_spikes = max_spikes_;
    surrogate = static_cast<int>(surrogate_);
    decays = decays_;
  }

  // A leak's decay for its gradient sum (grad_sum's `decay`): none where the leak argument is the
  // decay itself, so the sum is galpha, not yet turned into a time constant's gradient (SPEC §3).
  Tensor tau_chain(const Tensor& decay) const { return decays ? Tensor() : decay; }

  template <typename Args>
  void fill(Args& a) const {
    a.window = window;
    a.max_spikes = max_spikes;
    a.surrogate = surrogate;
    a.lengths = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
  }
};

// grad_spikes and its strides into a backward's arguments (the kernels' `gs` fields).
template <typename IT, typename Args>
void set_grad_spikes(Args& a, const Tensor& gs, int64_t N) {
  a.gs = gs.const_data_ptr<IT>();
  a.gs_stride_b = gs.stride(0);
  a.gs_stride_t = gs.stride(1);
  a.gs_stride_n = N <= 1 ? 1 : gs.stride(2);
}

// grad_spikes (B,T,N) as the backward kernels read it: in place, with its strides, when each row
// is contiguous or broadcast along the neurons (stride 0: the expanded ones of `spikes.sum()` cost
// no (B,T,N) copy); otherwise a contiguous copy.
inline Tensor grad_spikes_for_kernels(const Tensor& grad_spikes, int64_t N) {
  const bool rows_ok = N <= 1 || grad_spikes.stride(2) == 1 || grad_spikes.stride(2) == 0;
  return rows_ok ? grad_spikes : grad_spikes.contiguous();
}

// The gradient of a shared initial state (one (N,) or (N,S) row for the whole batch) where no
// kernel ran (an empty shape): its rows' gradients summed over the batch.
inline Tensor shared_state_grad(const Tensor& rows) { return rows.sum(0); }

// A forward's (B,T,N) output, or (0,) where it is not asked for.
inline Tensor sequence_output(bool wanted, int64_t B, int64_t T, int64_t N,
                              const at::TensorOptions& opts) {
  return empty_output(wanted ? at::IntArrayRef{B, T, N} : no_output(), opts);
}

// A copy of an initial state as the forward read it, for the backward (`save`), or (0,): a module
// updates its state in place right after the call (autograd would refuse a saved caller's tensor).
inline Tensor saved_state(const Tensor& state, bool save) {
  return save ? state.clone(at::MemoryFormat::Contiguous) : at::empty(no_output(), state.options());
}

// An initial state's gradient where no kernel ran (an empty shape): the gradient on the final
// state (summed over the batch for a shared state), or zero.
inline void state_grad_without_run(Tensor& g_state, const OptTensor& grad_final,
                                   const Tensor& state, int64_t B) {
  if (grad_final.has_value() && B > 0) {
    g_state.copy_(state.dim() == 2 ? *grad_final : shared_state_grad(*grad_final));
  } else {
    g_state.zero_();
  }
}

// A parameter's gradient from its per-row float64 sums (GradSum, core/grad_sums.h): kept in its
// shape, summed over the neurons per synapse index ((1,S)) or altogether (()).
template <typename T>
GradSum<T> grad_sum(double* partial, int64_t count, int64_t S, int collapse, const Tensor& dst,
                    const Tensor& decay = Tensor(), const Tensor& tau = Tensor(), double dt = 0.0) {
  return GradSum<T>{partial,
                    count,
                    S,
                    collapse,
                    dst.mutable_data_ptr<T>(),
                    decay.defined() ? decay.const_data_ptr<T>() : nullptr,
                    tau.defined() ? tau.const_data_ptr<T>() : nullptr,
                    dt};
}

inline int collapse_of(const Tensor& param) { return param.dim() == 0 ? kSumAll : kKeepAll; }

// A shared initial state's gradient after the kernels: its (B, ...) rows summed over the batch by
// the same rule as the parameters (float64, batch order, rounded once; `rows64` keeps the float64
// copy alive until the sums have run).
template <typename T>
GradSum<T> shared_state_sum(const Tensor& rows, Tensor& rows64, const Tensor& dst) {
  rows64 = rows.to(at::kDouble);
  return grad_sum<T>(rows64.mutable_data_ptr<double>(), rows.numel() / rows.size(0), 1, kKeepAll,
                     dst);
}

// An op function's frame, the same for every model: under a guard for the device,
// `prepare(host_key)` checks the arguments and builds the op struct (outputs, inputs; host_key
// false: the device keys the in-kernel noise, as the CUDA op does under graph capture), then,
// unless the shape is empty, the device's kernels run on the struct's arguments for the I/O dtype
// (and, backward, its gradient sums).
template <typename Dev, typename Prepare>
auto run_forward_op(const Tensor& input, const OptTensor& noise, const OptTensor& noise_key,
                    double noise_scale, const Prepare& prepare) {
  const c10::DeviceGuard guard(input.device());
  const bool device_key = Dev::noise_keyed_on_device(noise, noise_key, noise_scale);
  auto op = prepare(!device_key);
  if (op.run) {
    if (device_key) Dev::key_noise_on_device(op.noise, op.T, input.device());
    // (the dispatch's name only shows in its error for a dtype the checks already refused)
    LIF_DISPATCH_IO(op.x.scalar_type(), "lif_cuda forward", [&] {
      count_launch();
      Dev::forward(op.template args<IT, CT>());
    });
  }
  return op.outputs();
}

// A backward kernel and its parameter-gradient sums: one kernel where the device's backward takes
// the sums (CUDA, LIF and synaptic), else the kernel, then the device's sums.
template <typename Dev, typename Args, typename T>
void backward_with_sums(const Args& a, const std::vector<GradSum<T>>& sums, int64_t B) {
  if constexpr (requires { Dev::backward(a, sums); }) {
    Dev::backward(a, sums);
  } else {
    Dev::backward(a);
    Dev::grad_sums(sums, B);
  }
}

template <typename Dev, typename Prepare>
auto run_backward_op(const Tensor& u, const Prepare& prepare) {
  const c10::DeviceGuard guard(u.device());
  auto op = prepare();
  if (op.run) {
    LIF_DISPATCH_IO(op.gs.scalar_type(), "lif_cuda backward", [&] {
      count_launch();
      backward_with_sums<Dev>(op.template args<IT, CT>(), op.template grad_sums<CT>(), op.B);
    });
  }
  return op.outputs();
}

// What a device file gives the ops (host/lif_op.h, host/synaptic_op.h run them, under a guard
// for the input's device): its kernels (static forward/backward on the argument structs), its
// gradient-sum runner, and, where the device has one, the in-kernel noise key read on the device
// under graph capture. The CPU's defaults:
struct HostDevice {
  static bool noise_keyed_on_device(const OptTensor& /*noise*/, const OptTensor& /*noise_key*/,
                                    double /*noise_scale*/) {
    return false;
  }
  static void key_noise_on_device(NoiseSpec& /*noise*/, int64_t /*T*/, c10::Device /*device*/) {}
};

}  // namespace lif
