// The synaptic model's padding (SPEC §8, lif_lengths.h), shared by the CPU tiles (len neurons) and
// the CUDA threads (len = 1). A kernel call covers [t0, t0 + steps); a row runs the first `k` of
// them (call_steps), the rest is padding. Pointers are at the call's first step (b, t0, n0) of
// (B,T,N) sequences and (b, t0, n0 * S) of (B,T,N,S) ones; any of the records may be nullptr.
//
// What the padding holds (forward): spikes 0; the records of the membrane (vmem) and the synaptic
// currents (isyn) hold the row's state after its last step, and so do the saved u and a (never
// read by the backward there); the record of the recurrent current (irec) is 0 (no current
// reaches a row that has stopped, as without recurrent weights). Backward: dL/dx, dL/dr, dL/du
// (the noise's gradient) and s[t-1] (the factor of dL/dw_rec) are 0, so that nothing reaches
// w_rec either.
#pragma once

#include <cstdint>

#include "lif_lengths.h"

namespace lif {

template <typename IT, typename T>
LIF_HD void syn_pad_forward(IT* s_out, T* w_rec, T* u_out, T* i_rec, T* a_out, T* r_rec,
                            const T* v_last, const T* i_last, int64_t k, int64_t steps, int64_t N,
                            int64_t S, int64_t len) {
  pad_fill(s_out, static_cast<IT>(0), k, steps, N, len);
  if (w_rec) pad_hold(w_rec, v_last, k, steps, N, len);
  if (u_out) pad_hold(u_out, v_last, k, steps, N, len);
  if (i_rec) pad_hold(i_rec, i_last, k, steps, N * S, len * S);
  if (a_out) pad_hold(a_out, i_last, k, steps, N * S, len * S);
  if (r_rec) pad_fill(r_rec, T(0), k, steps, N * S, len * S);
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
