// The raw-pointer arguments of the kernels, one definition for the CPU and the CUDA kernels (no
// tensors, no device code: both compilers include it). Layout: (B,T,N) sequences, (B,N) per-row
// state, (N,) parameters, contiguous (grad_spikes may carry strides, see BackwardArgs). IT is the
// input/spike/grad-input type (float, double, c10::Half, c10::BFloat16); T the compute and state
// type (float for the half types). Filled from tensors by lif_op_glue.h.
#pragma once

#include <cstdint>

namespace lif {

// Where the noise term comes from (SPEC §4).
enum NoiseMode : int { kNoNoise = 0, kNoiseTensor = 1, kNoiseKernel = 2 };

template <typename IT, typename T>
struct ForwardArgs {
  const IT* x;            // (B,T,N) input current
  const T* noise;         // (B,T,N) noise tensor (kNoiseTensor) or nullptr
  NoiseMode noise_mode;
  uint64_t seed, offset;  // Philox key (kNoiseKernel)
  double noise_scale;     // noise_std * sqrt(dt) (kNoiseKernel)
  const T* v0;            // (B,N) initial membrane
  const T* alpha;         // (N,) decay exp(-dt/tau)
  const T* thr;           // (N,)
  const T* bias;          // (N,)
  double max_spikes;
  IT* s_out;              // (B,T,N) spikes
  T* w_rec;               // (B,T,N) recorded post-reset membrane, or nullptr
  T* u_out;               // (B,T,N) pre-spike membrane saved for backward, or nullptr
  T* v_final;             // (B,N) final state
  int64_t B, Tn, N;       // all > 0 when a kernel runs
};

template <typename IT, typename T>
struct BackwardArgs {
  const IT* gs;           // (B,T,N) upstream gradient on spikes, with the strides below
  int64_t gs_stride_b, gs_stride_t, gs_stride_n;  // gs_stride_n is 1, or 0 (broadcast; CPU only)
  const T* gw;            // (B,T,N) upstream gradient on the recorded membrane, or nullptr
  const T* gvf;           // (B,N) upstream gradient on the final state, or nullptr
  const T* u;             // (B,T,N) saved pre-spike membrane
  const T* v0;            // (B,N)
  const T* alpha;         // (N,)
  const T* thr;           // (N,)
  double window, max_spikes;
  int surrogate;          // lif::Surrogate
  IT* g_in;               // (B,T,N)
  T* g_v0;                // (B,N)
  T* partial;             // (3,B,N) scratch: per-row alpha, threshold, bias gradients
  T* g_alpha, *g_thr, *g_bias;  // (N,) sums of the partials over the batch, in batch order
  int64_t B, Tn, N;
};

}  // namespace lif
