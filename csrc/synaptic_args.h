// The raw-pointer arguments of the synaptic LIF kernels (SPEC §7), one definition for the CPU and
// the CUDA kernels, as lif_args.h is for the LIF op. Filled from tensors by synaptic_op_glue.h.
//
// Layout: (B,T,N) sequences and (B,T,N,S) synaptic sequences (element n*S + k of a step: the input
// (B,T,N*S) read as (B,T,N,S)), contiguous; (B,N) / (B,N,S) per-row state, or one (N,) / (N,S) row
// shared by the whole batch (stride 0). IT is the input/spike/grad-input type, T the compute and
// state type (float for float16/bfloat16), as in lif_args.h.
//
// A kernel call covers the steps [t0, t0 + steps) of every (batch row, neuron). The feed-forward
// model runs in one call over all T steps. With recurrent weights the op's C++ time loop makes one
// call per step (steps == 1), with the recurrent current r of that step (forward) or the gradient
// dL/ds it brings back from step t+1 (backward), computed by ATen between the calls; the state
// (forward) or the carried gradients (backward) then live in the output buffers between calls.
// With per-row lengths a row runs those of a call's steps that lie before its length and pads the
// rest (synaptic_lengths.h): a call in its padding leaves its state (forward) or its carried
// gradients and partial sums (backward) as they are.
#pragma once

#include <cstdint>

#include "lif_args.h"

namespace lif {

// How a (N,S)-shaped parameter (tau_syn, hence beta) is stored: (N,S), (1,S) or ().
enum SynParamMode : int { kPerSynapse = 0, kPerSynapseIndex = 1, kSynScalar = 2 };

// Index of synapse (n, k) of a parameter stored as `mode`.
inline constexpr int64_t syn_param_index(int mode, int64_t n, int64_t k, int64_t S) {
  return mode == kPerSynapse ? n * S + k : (mode == kPerSynapseIndex ? k : 0);
}

template <typename IT, typename T>
struct SynForwardArgs {
  const IT* x;            // (B,T,N*S) input currents
  const T* noise;         // (B,T,N) noise tensor (kNoiseTensor) or nullptr
  NoiseMode noise_mode;
  uint64_t seed, offset;  // Philox key (kNoiseKernel): the flat (b,t,n) index, as the LIF op's
  double noise_scale;
  const T* v0;            // membrane at t0: row b at v0 + b * v0_stride_b (N, or 0)
  int64_t v0_stride_b;
  const T* i0;            // synaptic currents at t0: row b at i0 + b * i0_stride_b (N*S, or 0)
  int64_t i0_stride_b;
  const T* r;             // (B,N*S) recurrent current of step t0 (steps == 1), or nullptr
  const T* alpha;         // exp(-dt/tau_mem), (N,) or ()
  const T* beta;          // exp(-dt/tau_syn), stored as beta_mode
  const T* thr;
  const T* bias;
  bool alpha_scalar, thr_scalar, bias_scalar;
  int beta_mode;          // SynParamMode
  double max_spikes;
  IT* s_out;              // (B,T,N) spikes
  T* s_state;  // (B,N) spikes of the last step (the next recurrent product's input) or nullptr
  T* w_rec;  // (B,T,N) record of the membrane after reset, or nullptr
  T* i_rec;  // (B,T,N,S) record of the synaptic currents after decay, or nullptr
  T* r_rec;  // (B,T,N,S) record of the recurrent currents, or nullptr
  T* u_out;  // (B,T,N) membrane before the spike, saved for backward, or nullptr
  T* a_out;  // (B,T,N,S) currents before their decay, saved for backward, or nullptr
  T* v_final;  // (B,N) membrane after the last step
  T* i_final;  // (B,N,S) currents after the last step
  const int64_t* lengths;  // (B,) steps row b runs (SPEC §8), or nullptr: all Tn
  int64_t B, Tn, N, S;  // all > 0 when a kernel runs
  int64_t t0, steps;
};

template <typename IT, typename T>
struct SynBackwardArgs {
  const IT* gs;  // (B,T,N) upstream gradient on spikes, with the strides below
  int64_t gs_stride_b, gs_stride_t, gs_stride_n;  // any (0 = broadcast); gs_stride_n is 1 or 0
  const T* gs_rec;  // (B,N) dL/ds[t0] through r[t0+1] (steps == 1), or nullptr
  const T* gw;  // (B,T,N) upstream gradient on the membrane record, or nullptr
  const T* gi;  // (B,T,N,S) upstream gradient on the synaptic record, or nullptr
  const T* gr;  // (B,T,N,S) upstream gradient on the recurrent record, or nullptr
  const T* u;  // (B,T,N) saved membrane before the spike
  const T* a;  // (B,T,N,S) saved currents before their decay
  const T* v0;  // initial membrane, row b at v0 + b * v0_stride_b
  int64_t v0_stride_b;
  const T* s0;  // initial spikes (recurrent), row b at s0 + b * s0_stride_b, or nullptr (0)
  int64_t s0_stride_b;
  const T* alpha;
  const T* beta;
  const T* thr;
  bool alpha_scalar, thr_scalar;
  int beta_mode;
  double window, max_spikes;
  int surrogate;  // lif::Surrogate
  // Carried between calls (in and out): dL/dw and dL/di of the step before the first one done.
  // Start as the upstream gradients on the final state (or 0); end as dL/dv0, dL/di0 per row.
  T* W;  // (B,N)
  T* I;  // (B,N,S)
  IT* g_in;  // (B,T,N*S) dL/dx
  T* g_r;  // (B,T,N*S) dL/dr (with recurrent weights), or nullptr
  T* g_u;  // (B,T,N) dL/du, the noise tensor's gradient, or nullptr
  T* s_prev;  // (B,T,N) s[t-1] (s0 at t = 0), for dL/dw_rec, or nullptr
  // Per-row parameter-gradient sums, accumulated over the calls (in and out, zero at first):
  // alpha, threshold, bias (B,N) each, then beta (B,N,S). In float64 whatever T is: a parameter's
  // gradient adds B*T (and N) terms of either sign, whose cancellation float32 sums would show.
  double* partial;
  const int64_t* lengths;  // (B,) as in SynForwardArgs, or nullptr
  int64_t B, Tn, N, S;
  int64_t t0, steps;
};

// One parameter gradient: per-row float64 values (B, M) summed over the batch in batch order
// (b = 0..B-1, from 0), into row 0 in place; then, by `collapse`, into dst as they are (M,), per
// synapse index (summed over the neurons in index order: a (1,S) parameter) or all in index order
// (a () parameter); then, where `decay` is given, turned from dL/ddecay into dL/dtau (in float64);
// rounded to T once, at the end.
enum SynCollapse : int { kCollapseNone = 0, kCollapseNeurons = 1, kCollapseAll = 2 };

template <typename T>
struct SynGradSum {
  double* partial;  // (B, M), overwritten
  int64_t M;
  int64_t S;  // synapses per neuron (kCollapseNeurons: dst has S values)
  int collapse;  // SynCollapse
  T* dst;
  const T* decay;  // in dst's shape, or nullptr
  const T* tau;  // in dst's shape
  double dt;
};

}  // namespace lif
