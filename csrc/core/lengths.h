// Per-row sequence lengths (SPEC §8), for every model's (B,T,...) time loop: row b runs its
// first lengths[b] steps, the later steps are padding. A kernel (a CPU tile, a CUDA thread)
// computes its row's step count once with row_steps, runs its time loop on exactly that many steps
// (the same operations as for a sequence of that length: the same bits), and fills the padding
// with pad_fill / pad_hold. No step function knows about lengths.
//
// What the padding holds:
// - forward: spikes (any per-step event output) 0; a recorded state, and a saved per-step state
//   the backward never reads there, hold the state after the row's last step (v0 for length 0);
// - backward: the reverse loop starts at t = steps - 1 from the gradient on the final state, never
//   reads the upstream gradients at padding positions (they are ignored), and writes a zero input
//   gradient there; the row's parameter-gradient partials cover its steps only.
#pragma once

#include <cstdint>

#include "hd.h"

namespace lif {

// The steps row b runs: lengths[b], or Tn without lengths. Clamped to [0, Tn], so that a value the
// op could not check (a CUDA tensor under torch.compile) never indexes outside the row.
LIF_HD int64_t row_steps(const int64_t* lengths, int64_t b, int64_t Tn) {
  if (lengths == nullptr) return Tn;
  const int64_t steps = lengths[b];
  return steps < 0 ? 0 : (steps > Tn ? Tn : steps);
}

// The steps of a call over [t0, t0 + steps) (the recurrent model's per-step calls) that a row of
// `row_steps` steps runs: all of them, none (the call lies in its padding) or the first few. For a
// call over the whole sequence (t0 = 0, steps = Tn) this is row_steps itself.
LIF_HD int64_t call_steps(int64_t row_steps, int64_t t0, int64_t steps) {
  const int64_t left = row_steps - t0;
  return left < 0 ? 0 : (left > steps ? steps : left);
}

// Padding t = steps..Tn-1 of a row of `len` consecutive elements per step, steps stride_t apart
// (a CPU tile: len neurons; a CUDA thread: len = 1): every element set to `value`.
template <typename V>
LIF_HD void pad_fill(V* out, V value, int64_t steps, int64_t Tn, int64_t stride_t, int64_t len) {
  for (int64_t t = steps; t < Tn; ++t) {
    V* row = out + t * stride_t;
    for (int64_t n = 0; n < len; ++n) row[n] = value;
  }
}

// The same, element n holding last[n] (the row's state after its last step).
template <typename V>
LIF_HD void pad_hold(V* out, const V* last, int64_t steps, int64_t Tn, int64_t stride_t,
                     int64_t len) {
  for (int64_t t = steps; t < Tn; ++t) {
    V* row = out + t * stride_t;
    for (int64_t n = 0; n < len; ++n) row[n] = last[n];
  }
}

// The synaptic model's padding, for the CPU tiles (len neurons) and the CUDA threads (len = 1). A
// kernel call covers [t0, t0 + steps); a row runs the first `k` of them (call_steps), the rest is
// padding. Pointers are at the call's first step (b, t0, n0) of (B,T,N) sequences and (b, t0, n0 *
// S) of (B,T,N,S) ones; any of the records may be nullptr.
//
// What the padding holds (forward): spikes 0; the records of the membrane (vmem) and the synaptic
// currents (isyn) hold the row's state after its last step, and so do the saved u and i_pre (never
// read by the backward there); the record of the recurrent current (irec) is 0 (no current
// reaches a row that has stopped, as without recurrent weights). Backward: dL/dx, dL/dr, dL/du
// (the noise's gradient) and s[t-1] (the factor of dL/dw_rec) are 0, so that nothing reaches
// w_rec either.
template <typename IT, typename T>
LIF_HD void syn_pad_forward(IT* s_out, T* vmem_out, T* u_out, T* isyn_out, T* i_pre_out,
                            T* irec_out, const T* v_last, const T* i_last, int64_t k, int64_t steps,
                            int64_t N, int64_t S, int64_t len) {
  pad_fill(s_out, static_cast<IT>(0), k, steps, N, len);
  if (vmem_out) pad_hold(vmem_out, v_last, k, steps, N, len);
  if (u_out) pad_hold(u_out, v_last, k, steps, N, len);
  if (isyn_out) pad_hold(isyn_out, i_last, k, steps, N * S, len * S);
  if (i_pre_out) pad_hold(i_pre_out, i_last, k, steps, N * S, len * S);
  if (irec_out) pad_fill(irec_out, T(0), k, steps, N * S, len * S);
}

// The AHP current's padding (SPEC §9): its record and the saved h_pre hold h after the row's last
// step, as the synaptic currents' do.
template <typename T>
LIF_HD void ahp_pad_forward(T* iahp_out, T* h_pre_out, const T* h_last, int64_t k, int64_t steps,
                            int64_t N, int64_t len) {
  if (iahp_out) pad_hold(iahp_out, h_last, k, steps, N, len);
  if (h_pre_out) pad_hold(h_pre_out, h_last, k, steps, N, len);
}

template <typename IT, typename T>
LIF_HD void syn_pad_backward(IT* g_in, T* g_r, T* g_u, T* s_prev, int64_t k, int64_t steps,
                             int64_t N, int64_t S, int64_t len) {
  pad_fill(g_in, static_cast<IT>(0), k, steps, N * S, len * S);
  if (g_r) pad_fill(g_r, T(0), k, steps, N * S, len * S);
  if (g_u) pad_fill(g_u, T(0), k, steps, N, len);
  if (s_prev) pad_fill(s_prev, T(0), k, steps, N, len);
}

}  // namespace lif
