// The kernels' raw-pointer arguments, one definition for the CPU tiles and the CUDA threads (no
// tensors: g++ and nvcc include it alike). Filled from tensors by csrc/host/.
//
// Layout: (B,T,N) sequences and (B,T,N,S) synaptic sequences (element n*S + k of a step: the input
// (B,T,N*S) read as (B,T,N,S)), contiguous, but grad_spikes, read with its own strides (0 =
// broadcast). (B,N) / (B,N,S) per-row state, or one (N,) / (N,S) row shared by the whole batch
// (stride_b = 0). IT is the input/spike/grad-input type (float, double, c10::Half,
// c10::BFloat16), T the compute and state type (float for the half types).
#pragma once

#include <cstdint>

#include "hd.h"

namespace lif {

// A parameter, broadcast by strides (one rule for every model: 0 = the same value along that
// axis). Per neuron: (N,) has stride 1, () stride 0.
template <typename T>
struct PerNeuron {
  const T* data;
  int64_t stride;
  LIF_HD T operator[](int64_t n) const { return data[n * stride]; }
};

// Per synapse: (N,S) has strides (S, 1), (1,S) (0, 1), () (0, 0).
template <typename T>
struct PerSynapse {
  const T* data;
  int64_t stride_n, stride_k;
  LIF_HD T operator()(int64_t n, int64_t k) const { return data[n * stride_n + k * stride_k]; }
};

// Where the noise term comes from (SPEC §4).
enum NoiseMode : int { kNoNoise = 0, kNoiseTensor = 1, kNoiseKernel = 2 };

// The in-kernel noise's Philox key (seed, offset in blocks of 4 words). Drawn on the host, or,
// under CUDA graph capture, read on the device from the CUDA generator's state, which every replay
// advances (device_seed != nullptr): offset = (*device_offset + offset_intragraph) / 4.
struct PhiloxKey {
  uint64_t seed, offset;
  const int64_t* device_seed;
  const int64_t* device_offset;
  uint64_t offset_intragraph;

  LIF_HD void get(uint64_t& s, uint64_t& o) const {
    if (device_seed != nullptr) {
      s = static_cast<uint64_t>(*device_seed);
      o = (static_cast<uint64_t>(*device_offset) + offset_intragraph) / 4u;
    } else {
      s = seed;
      o = offset;
    }
  }
};

// The noise term of a forward: none, a (B,T,N) tensor, or scale * N(0,1) drawn in the kernel.
template <typename T>
struct Noise {
  NoiseMode mode;
  const T* tensor;  // kNoiseTensor
  PhiloxKey key;    // kNoiseKernel
  double scale;     // kNoiseKernel: noise_std * sqrt(dt)
};

// ---------------------------------------------------------------- the LIF model (SPEC §1-§3)

template <typename IT, typename T>
struct LifForwardArgs {
  const IT* x;  // (B,T,N) input current
  Noise<T> noise;
  const T* v0;  // initial membrane: row b at v0 + b * v0_stride_b
  int64_t v0_stride_b;
  PerNeuron<T> alpha, thr, bias;  // alpha = exp(-dt/tau_mem)
  double max_spikes;
  IT* s_out;     // (B,T,N) spikes
  T* vmem_out;   // (B,T,N) record of the membrane after reset, or nullptr
  T* u_out;      // (B,T,N) membrane before the spike, saved for the backward, or nullptr
  uint32_t*
      mask_out;  // (B, ceil(T/32), N) window mask saved instead of u (core/mask.h), or nullptr
  double window;       // the StepPWL window of the mask
  T* v_final;    // (B,N) final state
  const int64_t* lengths;  // (B,) steps row b runs (SPEC §8), or nullptr: all Tn
  int64_t B, Tn, N;        // all > 0 when a kernel runs
};

template <typename IT, typename T>
struct LifBackwardArgs {
  const IT* gs;  // (B,T,N) upstream gradient on spikes, with the strides below
  int64_t gs_stride_b, gs_stride_t, gs_stride_n;  // gs_stride_n is 1 or 0
  const T* gw;   // (B,T,N) upstream gradient on the membrane record, or nullptr
  const T* gvf;  // (B,N) upstream gradient on the final state, or nullptr
  const T* u;    // (B,T,N) saved membrane before the spike, or nullptr with a mask
  const uint32_t* mask;  // (B, ceil(T/32), N) saved window mask (core/mask.h), or nullptr: then the
                         // tau and threshold terms are not computed (their partials are 0)
  const T* v0;
  int64_t v0_stride_b;
  PerNeuron<T> alpha, thr;
  double window, max_spikes;
  int surrogate;  // Surrogate
  IT* g_in;  // (B,T,N) dL/dx (and dL/dz)
  T* g_v0;  // (B,N) dL/dv0, or nullptr for a shared (N,) v0: then its rows go to partial[3]
  // (3,B,N), or (4,B,N) for a shared v0: per-row float64 sums of the alpha, threshold and bias
  // gradient terms (and dL/dv0's rows), for GradSum.
  double* partial;
  const int64_t* lengths;
  int64_t B, Tn, N;
};

// ---------------------------------------------------------------- the adaptive LIF (SPEC §10)
// The LIF's arguments (the membrane part: input, noise, v0, alpha, threshold, bias, spikes, the
// membrane's records, lengths, sizes) plus the adaptation b's.

template <typename IT, typename T>
struct AdaptiveForwardArgs {
  LifForwardArgs<IT, T> lif;
  const T* b0;  // initial adaptation: row b at b0 + b * b0_stride_b
  int64_t b0_stride_b;
  PerNeuron<T> rho, beta;  // rho = exp(-dt/tau_adapt), beta_adapt; q = 1 - rho in the kernel
  T* adapt_out;  // (B,T,N) record of the adaptation after each step, or nullptr
  T* b_out;  // b saved for the backward (core/adaptive.h: every b[t] or checkpoints), or nullptr
  T* b_final;  // (B,N)
};

template <typename IT, typename T>
struct AdaptiveBackwardArgs {
  // lif.partial: (7, B, N) per-row float64 sums for GradSum: the LIF's four rows (alpha,
  // threshold, bias, a shared v0's rows), then beta_adapt, rho, a shared b0's rows.
  LifBackwardArgs<IT, T> lif;
  const T* gb;  // (B,T,N) upstream gradient on the adaptation record, or nullptr
  const T* gbf;  // (B,N) upstream gradient on the final adaptation, or nullptr
  const T* b;  // the saved adaptation, as the device's forward keeps it (core/adaptive.h)
  const T* b0;
  int64_t b0_stride_b;
  PerNeuron<T> rho, beta;
  T* g_b0;  // (B,N), or nullptr for a shared (N,) b0: its rows go to lif.partial's row 6
};

// ---------------------------------------------------------------- the synaptic model (SPEC §7)
// A call covers the steps [t0, t0 + steps): all of them in one call (feed-forward), or one step
// per call with the recurrent current r of that step (forward) or the gradient dL/ds it brings
// back from step t+1 (backward), computed by ATen between the calls; the state (forward) or the
// carried gradients (backward) live in the output buffers between calls.

template <typename IT, typename T>
struct SynForwardArgs {
  const IT* x;  // (B,T,N*S) input currents
  Noise<T> noise;
  const T* v0;  // membrane at t0: row b at v0 + b * v0_stride_b
  int64_t v0_stride_b;
  const T* i0;  // synaptic currents at t0: row b at i0 + b * i0_stride_b (N*S, or 0)
  int64_t i0_stride_b;
  const T* r;  // (B,N*S) recurrent current of step t0 (steps == 1), or nullptr
  PerNeuron<T> alpha, thr, bias;
  PerSynapse<T> beta;  // exp(-dt/tau_syn)
  double max_spikes;
  IT* s_out;  // (B,T,N) spikes
  T* s_last;  // (B,N) spikes of the call's last step (the next product's input), or nullptr
  T* vmem_out;  // (B,T,N) record of the membrane after reset, or nullptr
  T* isyn_out;  // (B,T,N,S) record of the synaptic currents after decay, or nullptr
  T* irec_out;  // (B,T,N,S) record of the recurrent currents, or nullptr
  T* u_out;  // (B,T,N) membrane before the spike, saved for the backward, or nullptr
  T* i_pre_out;  // (B,T,N,S) currents before their decay, saved for the backward, or nullptr
  // (B, ceil(T/32), N) window mask saved instead of u (core/mask.h), or nullptr; a call that starts
  // inside a word adds its bits to those already there (the recurrent model's per-step calls).
  uint32_t* mask_out;
  double window;  // the StepPWL window of the mask
  // (B,T,N) spike counts (max_spikes <= 255) kept with the mask for w_rec's and w_ahp's gradients,
  // or nullptr
  uint8_t* counts_out;
  T* v_final;  // (B,N) membrane after the last step
  T* i_final;  // (B,N,S) currents after the last step
  // The AHP current (SPEC §9), or h0 == nullptr (none). Its first step reads s[t0-1] from s_last,
  // which holds it on entry (s0 or zeros, then each call's last spikes).
  const T* h0;  // AHP current at t0: row b at h0 + b * h0_stride_b
  int64_t h0_stride_b;
  PerNeuron<T> w_ahp, gamma;  // gamma = exp(-dt/tau_ahp)
  T* iahp_out;  // (B,T,N) record of h after its decay, or nullptr
  T* h_pre_out;  // (B,T,N) h before its decay, saved for the backward, or nullptr
  T* h_final;  // (B,N) h after the last step
  const int64_t* lengths;
  int64_t B, Tn, N, S;
  int64_t t0, steps;
};

template <typename IT, typename T>
struct SynBackwardArgs {
  const IT* gs;  // (B,T,N) upstream gradient on spikes, with the strides below
  int64_t gs_stride_b, gs_stride_t, gs_stride_n;
  const T* gs_rec;  // (B,N) dL/ds[t0] through r[t0+1] (steps == 1), or nullptr
  const T* gw;  // (B,T,N) upstream gradient on the membrane record, or nullptr
  const T* gi;  // (B,T,N,S) upstream gradient on the synaptic record, or nullptr
  const T* gr;  // (B,T,N,S) upstream gradient on the recurrent record, or nullptr
  const T* u;  // (B,T,N) saved membrane before the spike, or nullptr (then mask)
  // (B, ceil(T/32), N) window mask saved instead of u (SPEC §11), or nullptr; then tau_mem's and
  // threshold's gradients are not computed, and the spikes come from `counts` (or are not read).
  const uint32_t* mask;
  // With the mask: (B,T,N) spike counts for s[t-1] (w_rec's and w_ahp's gradients), or nullptr
  const uint8_t* counts;
  const T* i_pre;  // (B,T,N,S) saved currents before their decay, or nullptr (tau_syn's gradient
                   // is not computed; its sums read zeros)
  const T* v0;
  int64_t v0_stride_b;
  const T* s0;  // initial spikes (recurrent), row b at s0 + b * s0_stride_b, or nullptr (0)
  int64_t s0_stride_b;
  PerNeuron<T> alpha, thr;
  PerSynapse<T> beta;
  double window, max_spikes;
  int surrogate;
  // Carried between calls (in and out): dL/dw and dL/di of the step before the first one done.
  // Start as the upstream gradients on the final state (or 0); end as dL/dv0, dL/di0 per row.
  T* W;  // (B,N)
  T* I;  // (B,N,S)
  IT* g_in;  // (B,T,N*S) dL/dx
  T* g_r;  // (B,T,N*S) dL/dr (with recurrent weights), or nullptr
  T* g_u;  // (B,T,N) dL/du, the noise tensor's gradient, or nullptr
  T* s_prev;  // (B,T,N) s[t-1] (s0 at t = 0), for dL/dw_rec, or nullptr
  // Per-row float64 sums of the gradient terms (GradSum), accumulated over the calls: alpha,
  // threshold, bias (B,N) each, then beta (B,N,S).
  // With the AHP current, then gamma and w_ahp (B,N) each.
  double* partial;
  T* beta_sums;  // (B,N,S) scratch of a CUDA thread whose S is not a compile-time constant, or
                 // nullptr
  // The AHP current (SPEC §9), or H == nullptr (none).
  const T* h_pre;  // (B,T,N) saved h before its decay, or nullptr where tau_ahp's gradient is
                   // not computed (its sums read zeros); AHP: w_ahp.data != nullptr
  const T* gh;  // (B,T,N) upstream gradient on the record of h, or nullptr
  PerNeuron<T> w_ahp, gamma;
  T* H;  // (B,N) carried: dL/dh of the step before the first one done (core/synaptic.h)
  const int64_t* lengths;
  int64_t B, Tn, N, S;
  int64_t t0, steps;
};

}  // namespace lif
