// The raw-pointer arguments of the kernels, one definition for the CPU and the CUDA kernels (no
// tensors, no device code: both compilers include it). Layout: (B,T,N) sequences, contiguous;
// (B,N) per-row state, or one (N,) row shared by the whole batch (v0_stride_b = 0); (N,)
// parameters, contiguous; grad_spikes may carry strides (see BackwardArgs). IT is the
// input/spike/grad-input type (float, double, c10::Half, c10::BFloat16); T the compute and state
// type (float for the half types). Filled from tensors by lif_op_glue.h.
#pragma once

#include <cstdint>

namespace lif {

// Where the noise term comes from (SPEC §4).
enum NoiseMode : int { kNoNoise = 0, kNoiseTensor = 1, kNoiseKernel = 2 };

// A per-neuron parameter is an (N,) row, or one value shared by every neuron (`*_scalar`, a ()
// tensor): read as p[scalar ? 0 : n].

template <typename IT, typename T>
struct ForwardArgs {
  const IT* x;            // (B,T,N) input current
  const T* noise;         // (B,T,N) noise tensor (kNoiseTensor) or nullptr
  NoiseMode noise_mode;
  uint64_t seed, offset;  // Philox key (kNoiseKernel); offset counts Philox blocks
  double noise_scale;     // noise_std * sqrt(dt) (kNoiseKernel)
  const T* v0;            // initial membrane: row b at v0 + b * v0_stride_b
  int64_t v0_stride_b;    // N, or 0 when one (N,) state starts every row
  const T* alpha;         // decay exp(-dt/tau), in tau's shape
  const T* thr;
  const T* bias;
  bool alpha_scalar, thr_scalar, bias_scalar;
  double max_spikes;
  IT* s_out;              // (B,T,N) spikes
  T* w_rec;               // (B,T,N) recorded post-reset membrane, or nullptr
  T* u_out;               // (B,T,N) pre-spike membrane saved for backward, or nullptr
  T* v_final;             // (B,N) final state
  const int64_t* lengths;  // (B,) steps row b runs (SPEC §8, lif_lengths.h), or nullptr: all Tn
  int64_t B, Tn, N;       // all > 0 when a kernel runs
  // Under CUDA graph capture (else key_seed is nullptr) the kernel reads its key on the device,
  // from the CUDA generator's state, which each replay advances: seed = *key_seed, offset =
  // (*key_offset + key_offset_intragraph) / 4 (the generator counts 32-bit words, 4 a block).
  const int64_t* key_seed;
  const int64_t* key_offset;
  uint64_t key_offset_intragraph;
};

template <typename IT, typename T>
struct BackwardArgs {
  const IT* gs;           // (B,T,N) upstream gradient on spikes, with the strides below
  int64_t gs_stride_b, gs_stride_t, gs_stride_n;  // any (0 = broadcast); gs_stride_n is 1 or 0
  const T* gw;            // (B,T,N) upstream gradient on the recorded membrane, or nullptr
  const T* gvf;           // (B,N) upstream gradient on the final state, or nullptr
  const T* u;             // (B,T,N) saved pre-spike membrane
  const T* v0;            // row b at v0 + b * v0_stride_b
  int64_t v0_stride_b;    // N, or 0
  const T* alpha;         // in tau's shape
  const T* tau;           // for dL/dtau from dL/dalpha
  const T* thr;
  bool alpha_scalar, thr_scalar, bias_scalar;
  double dt, window, max_spikes;
  int surrogate;          // lif::Surrogate
  IT* g_in;               // (B,T,N)
  T* g_v0;                // (B,N) per-row dL/dv0 (partial row 3 when v0 is shared)
  // (3 or 4, B, N) scratch: per-row alpha, threshold, bias (and shared v0) gradients. Summed over
  // the batch in batch order into the outputs; for a () parameter into row j's b = 0 slot first,
  // then over the neurons in index order.
  T* partial;
  T *g_tau, *g_thr, *g_bias;  // in the parameters' shapes: N values, or one
  T* g_v0_sum;  // (N,) for a shared v0 (v0_stride_b == 0), else nullptr
  const int64_t* lengths;  // (B,) as in ForwardArgs, or nullptr
  int64_t B, Tn, N;
};

}  // namespace lif
