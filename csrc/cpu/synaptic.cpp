// The synaptic LIF ops on the CPU (SPEC §7): forward and hand-written backward
// over the steps [t0, t0 + steps) of tiles of (batch row, contiguous neurons), as the LIF kernels
// (lif.cpp) arrange them: at::parallel_for over tiles, the time loop outermost inside a
// tile, per step first a loop over the tile's synapses (neuron n's S synapses are contiguous, so
// this loop runs over len * S contiguous values and vectorises whatever S is), then a loop over its
// neurons. The per-element math is core/synaptic.h's; the synapse sum in torch's CPU order. Per-row
// lengths (SPEC §8): a tile runs the steps of the call its row runs (call_steps, once per tile) and
// pads the rest (core/lengths.h); the tile functions know nothing of lengths.
//
// Compile-time switches: noise mode, surrogate, S_FIXED (1, 2, or 0 for any S), so that the
// common one- and two-synapse layers have no inner loop over k, and AHP (SPEC §9's current), so
// that the model without it does no work for it.

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../core/grad_sums.h"
#include "../core/lengths.h"
#include "../core/mask.h"
#include "../core/switch.h"
#include "../core/synaptic.h"
#include "../host/synaptic_op.h"
#include "noise_x86.h"
#include "tiles.h"

namespace lif {
namespace cpu {
namespace {

// Neurons per tile: the LIF kernels' width, narrowed so that a tile's synapses (len * S values per
// state row) stay small in cache.
constexpr int64_t kMaxSynTile = 4096;

int64_t syn_tile(int64_t B, int64_t N, int64_t S) {
  const int64_t cap = std::max<int64_t>(16, std::min<int64_t>(kMaxTile, kMaxSynTile / S));
  return std::min(choose_tile(B, N, cap), cap);
}

// Scratch rows of one tile, allocated once per parallel chunk (len neurons, len * S synapses).
template <typename T>
struct TileScratch {
  std::vector<T> buf;
  // In-kernel noise: four steps of noise terms (one Philox block per neuron) and their words,
  // [4][kMaxTile] as draw_noise_rows writes them.
  std::vector<uint32_t> words;
  std::vector<T> z4;
  T *w, *u, *z, *alpha, *thr, *bias, *i, *a, *beta;
  // With the AHP current:
  T *h = nullptr, *s_prev = nullptr, *w_ahp = nullptr, *gamma = nullptr, *h_pre = nullptr;
  TileScratch(int64_t tile, int64_t S, bool noise, bool ahp) {
    const int64_t syn = tile * S;
    buf.resize(static_cast<size_t>((ahp ? 11 : 6) * tile + 3 * syn));
    T* p = buf.data();
    for (T** row : {&w, &u, &z, &alpha, &thr, &bias}) {
      *row = p;
      p += tile;
    }
    i = p;
    a = p + syn;
    beta = p + 2 * syn;
    p += 3 * syn;
    if (ahp) {
      for (T** row : {&h, &s_prev, &w_ahp, &gamma, &h_pre}) {
        *row = p;
        p += tile;
      }
    }
    if (noise) {
      words.resize(static_cast<size_t>(4 * kMaxTile));
      z4.resize(static_cast<size_t>(4 * kMaxTile));
    }
  }
};

// The AHP current's row loops (core/synaptic.h's functions over a tile's neurons), apart from the
// neuron loops and on restrict pointers, so that each of them vectorises.
template <typename T>
LIF_CLONES void ahp_rows_forward(int64_t len, T* __restrict__ h, const T* __restrict__ s_prev,
                                 const T* __restrict__ w_ahp, const T* __restrict__ gamma,
                                 T* __restrict__ h_pre) {
  for (int64_t n = 0; n < len; ++n) {
    const T hp = ahp_input(h[n], s_prev[n], w_ahp[n]);
    h_pre[n] = hp;
    h[n] = syn_decay(hp, gamma[n]);
  }
}

// dL/ds[t] += H * w_ahp (s[t] fed h_pre[t+1]).
template <typename T>
LIF_CLONES void ahp_rows_spike_grad(int64_t len, T* __restrict__ g, const T* __restrict__ H,
                                    const T* __restrict__ w_ahp) {
  for (int64_t n = 0; n < len; ++n) g[n] = g[n] + H[n] * w_ahp[n];
}

template <typename T>
LIF_CLONES void ahp_rows_backward(int64_t len, const T* __restrict__ U, const T* __restrict__ gh,
                                  const T* __restrict__ h_pre, const T* __restrict__ s_prev,
                                  const T* __restrict__ gamma, T* __restrict__ H,
                                  T* __restrict__ g_gamma, T* __restrict__ g_w_ahp) {
  for (int64_t n = 0; n < len; ++n) {
    ahp_step_backward(U[n], gh[n], h_pre[n], s_prev[n], gamma[n], H[n], g_gamma[n], g_w_ahp[n]);
  }
}

// Step t's bits of the window mask (SPEC §11) into its word row (len words, contiguous in n): a
// word's first step writes it, the others add their bit, so a call that starts inside a word (a
// recurrent model's per-step call) adds to the bits of the calls before it.
template <typename T>
LIF_CLONES void mask_row_forward(int64_t len, const T* __restrict__ u, const T* __restrict__ thr,
                                 T window, int64_t t, uint32_t* __restrict__ words) {
  if (t % kMaskBits == 0) {
    for (int64_t n = 0; n < len; ++n) words[n] = mask_bit(u[n], thr[n] - window, t);
  } else {
    for (int64_t n = 0; n < len; ++n) words[n] |= mask_bit(u[n], thr[n] - window, t);
  }
}

// A forward tile's AHP rows (SPEC §9): h0 and the parameter rows at the tile's first neuron, the
// sequences at (b, t0, n0) (nullptr: not asked for), the tile's h and s[t-1] as scratch rows.
template <typename T>
struct AhpForwardTile {
  const T *h0, *w_ahp, *gamma;
  T *iahp_out, *h_pre_out, *h_final;
  T *h, *s_prev, *h_pre_scratch;
};

// Forward over `steps` steps of one tile: batch row b, neurons [n0, n0 + len). Sequence pointers at
// (b, t0, n0) (stride N per step) or (b, t0, n0 * S) (stride N * S); state rows at n0 (v0, i0 may
// be the very v_final, i_final rows: read before they are written). The in-kernel noise of step t
// is lane t % 4 of the Philox block t / 4 of subsequence b * N + n (`subseq` is b * N + n0), as
// for the LIF kernels (core/philox.h).
template <typename IT, typename T, int NOISE, int S_FIXED, bool AHP>
LIF_CLONES void syn_forward_tile(
    const IT* __restrict__ x, const T* __restrict__ z, uint64_t seed, uint64_t offset,
    T noise_scale, uint64_t subseq, int64_t t0, const T* v0, const T* i0, const T* __restrict__ r,
    const T* __restrict__ alpha, const T* __restrict__ beta, const T* __restrict__ thr,
    const T* __restrict__ bias, T max_spikes, IT* __restrict__ s_out, T* s_last_out,
    T* __restrict__ vmem_out, T* __restrict__ isyn_out, T* __restrict__ irec_out,
    T* __restrict__ u_out, T* __restrict__ i_pre_out, uint32_t* __restrict__ mask_out, T window,
    uint8_t* __restrict__ counts_out, T* v_final, T* i_final, int64_t steps, int64_t N,
    int64_t S_dyn, int64_t len, T* __restrict__ w, T* __restrict__ i, T* __restrict__ a_scratch,
    T* __restrict__ u_scratch, T* __restrict__ z4_flat, uint32_t* words_flat,
    const AhpForwardTile<T>& ahp) {
  const int64_t S = S_FIXED ? S_FIXED : S_dyn;
  const int64_t syn = len * S;
  const int64_t NS = N * S;
  for (int64_t n = 0; n < len; ++n) w[n] = v0[n];
  for (int64_t j = 0; j < syn; ++j) i[j] = i0[j];
  if constexpr (AHP) {  // s_last_out holds s[t0-1] on entry (core/args.h)
    for (int64_t n = 0; n < len; ++n) {
      ahp.h[n] = ahp.h0[n];
      ahp.s_prev[n] = s_last_out[n];
    }
  }
  for (int64_t t = 0; t < steps; ++t) {
    const IT* __restrict__ xt = x + t * NS;
    // The synapses: i_pre = (i + x) [+ r]; i = i_pre * beta. i_pre goes straight to the saved
    // tensor when the backward needs it, else to a scratch row.
    T* __restrict__ ip = i_pre_out ? i_pre_out + t * NS : a_scratch;
    if (r) {
      for (int64_t j = 0; j < syn; ++j) {
        const T aj = syn_input(i[j], static_cast<T>(xt[j]), r[j]);
        ip[j] = aj;
        i[j] = syn_decay(aj, beta[j]);
      }
      if (irec_out) std::memcpy(irec_out + t * NS, r, sizeof(T) * syn);
    } else {
      for (int64_t j = 0; j < syn; ++j) {
        const T aj = syn_input(i[j], static_cast<T>(xt[j]));
        ip[j] = aj;
        i[j] = syn_decay(aj, beta[j]);
      }
    }
    if (isyn_out) std::memcpy(isyn_out + t * NS, i, sizeof(T) * syn);
    const T* __restrict__ zt = nullptr;
    if constexpr (NOISE == kNoiseTensor) zt = z + t * N;
    if constexpr (NOISE == kNoiseKernel) {
      // A block covers steps 4q..4q+3: drawn at its first step, or at the first of the call (a
      // recurrent call runs one step at a time, from t0).
      auto* z4 = reinterpret_cast<T(*)[kMaxTile]>(z4_flat);
      const int64_t ta = t0 + t;
      if (t == 0 || (ta & 3) == 0) {
        draw_noise_rows<kMaxTile>(seed, offset, subseq, static_cast<uint64_t>(ta >> 2), len,
                                  noise_scale, reinterpret_cast<uint32_t (*)[kMaxTile]>(words_flat),
                                  z4);
      }
      zt = z4[ta & 3];
    }
    // The AHP current before the neurons: h = (h + s[t-1] * w_ahp) * gamma (SPEC §9).
    if constexpr (AHP) {
      ahp_rows_forward(len, ahp.h, ahp.s_prev, ahp.w_ahp, ahp.gamma,
                       ahp.h_pre_out ? ahp.h_pre_out + t * N : ahp.h_pre_scratch);
      if (ahp.iahp_out) std::memcpy(ahp.iahp_out + t * N, ahp.h, sizeof(T) * len);
    }
    const T* __restrict__ h_row = AHP ? ahp.h : nullptr;
    T* __restrict__ s_prev_row = AHP ? ahp.s_prev : nullptr;
    // The neurons: u = (((alpha * w) + sum_k i) [+ z]) + bias, spikes, reset.
    IT* __restrict__ st = s_out + t * N;
    T* __restrict__ ut = u_out ? u_out + t * N : u_scratch;
    // The last step's spikes in the state type too (the next recurrent product's input).
    T* __restrict__ s_last = (s_last_out && t == steps - 1) ? s_last_out : nullptr;
    for (int64_t n = 0; n < len; ++n) {
      // The LIF step with the synapse sum as its input (SPEC §7), the AHP current its last lane
      // (SPEC §9).
      T isum;
      if constexpr (AHP) {
        isum = ahp_sum<kCpuSum, S_FIXED>(i + n * S, S, h_row[n], 0);
      } else {
        isum = synaptic_sum<kCpuSum, S_FIXED>(i + n * S, S, 0);
      }
      T u, s;
      if constexpr (NOISE == kNoNoise) {
        s = step_forward(alpha[n], w[n], isum, bias[n], thr[n], max_spikes, u, w[n]);
      } else {
        s = step_forward(alpha[n], w[n], isum, zt[n], bias[n], thr[n], max_spikes, u, w[n]);
      }
      st[n] = static_cast<IT>(s);
      if (s_last) s_last[n] = s;
      if constexpr (AHP) s_prev_row[n] = s;
      ut[n] = u;
    }
    if (vmem_out) std::memcpy(vmem_out + t * N, w, sizeof(T) * len);
    if (mask_out) {
      mask_row_forward(len, ut, thr, window, t0 + t, mask_out + ((t0 + t) / kMaskBits) * N);
    }
    if (counts_out) {  // the spikes as counts (max_spikes <= 255: exact in every IT)
      uint8_t* __restrict__ ct = counts_out + t * N;
      for (int64_t n = 0; n < len; ++n) ct[n] = static_cast<uint8_t>(static_cast<float>(st[n]));
    }
  }
  std::memcpy(v_final, w, sizeof(T) * len);
  std::memcpy(i_final, i, sizeof(T) * syn);
  if constexpr (AHP) std::memcpy(ahp.h_final, ahp.h, sizeof(T) * len);
}

// A backward tile's AHP rows (SPEC §9): the sequences at (b, t0, n0), H (the carried dL/dh) and the
// float64 partials at the tile's first neuron; `has_next`: the call's last step has a next step in
// its row (so that s[t] fed h there); scratch rows for H and the gradient terms' block sums.
template <typename T>
struct AhpBackwardTile {
  const T *h_pre, *gh, *w_ahp, *gamma;
  T* H_io;
  double *p_gamma, *p_w_ahp;
  bool has_next;
  T *H, *g_gamma, *g_w_ahp;
};

// Reverse loop over `steps` steps of one tile, t = t0 + steps - 1 .. t0 (pointers at t0 as in the
// forward; `t_abs0` is t0 itself: w[-1] = v0 and s[-1] = s0 at t = 0). W, I and the partial sums
// are read at the start and written back at the end (the per-step calls of the recurrent model
// carry them from call to call).
template <typename IT, typename T, int SURR, int S_FIXED, bool AHP>
LIF_CLONES void syn_backward_tile(
    const IT* __restrict__ gs, int64_t gs_stride_t, bool gs_bcast_n, const T* __restrict__ gs_rec,
    const T* __restrict__ gw, const T* __restrict__ gi, const T* __restrict__ gr,
    const T* __restrict__ u, const uint32_t* __restrict__ mask, const uint8_t* __restrict__ counts,
    const T* __restrict__ i_pre, const T* __restrict__ v0, const T* __restrict__ s0,
    const T* __restrict__ alpha, const T* __restrict__ beta, const T* __restrict__ thr, T window,
    T max_spikes, T* __restrict__ W_io, T* __restrict__ I_io, IT* __restrict__ g_in,
    T* __restrict__ g_r, T* __restrict__ g_u, T* __restrict__ s_prev_out,
    double* __restrict__ p_alpha, double* __restrict__ p_thr, double* __restrict__ p_bias,
    double* __restrict__ p_beta, int64_t t_abs0, int64_t steps, int64_t N, int64_t S_dyn,
    int64_t len, T* __restrict__ W, T* __restrict__ U_row, T* __restrict__ s_row,
    T* __restrict__ g_row, T* __restrict__ I, const T* __restrict__ zeros,
    const T* __restrict__ syn_zeros, T* __restrict__ sums, const AhpBackwardTile<T>& ahp) {
  const int64_t S = S_FIXED ? S_FIXED : S_dyn;
  const int64_t syn = len * S;
  const int64_t NS = N * S;
  const ConstRows<T, kMaxTile> consts(alpha, thr, window, max_spikes, len);
  // The parameter-gradient terms' block sums in T, flushed into the float64 partials at each
  // block's end (core/grad_sums.h).
  T* __restrict__ ga = sums;
  T* __restrict__ gt = sums + len;
  T* __restrict__ gb = sums + 2 * len;
  T* __restrict__ gbeta = sums + 3 * len;
  for (int64_t n = 0; n < len; ++n) {
    W[n] = W_io[n];
    s_row[n] = u ? spikes(u[(steps - 1) * N + n], thr[n], max_spikes) : T(0);
    ga[n] = T(0);
    gt[n] = T(0);
    gb[n] = T(0);
  }
  for (int64_t j = 0; j < syn; ++j) {
    I[j] = I_io[j];
    gbeta[j] = T(0);
  }
  if constexpr (AHP) {
    for (int64_t n = 0; n < len; ++n) {
      ahp.H[n] = ahp.H_io[n];
      ahp.g_gamma[n] = T(0);
      ahp.g_w_ahp[n] = T(0);
    }
  }
  for (int64_t t = steps - 1; t >= 0; --t) {
    const bool first = t_abs0 + t == 0;
    // dL/ds[t] from the loss (its own strides; a row broadcast over neurons spread out), plus the
    // recurrence's share: one row of T values.
    const IT* __restrict__ gst = gs + t * gs_stride_t;
    for (int64_t n = 0; n < len; ++n) g_row[n] = static_cast<T>(gst[gs_bcast_n ? 0 : n]);
    if (gs_rec) {
      for (int64_t n = 0; n < len; ++n) g_row[n] = g_row[n] + gs_rec[n];
    }
    if constexpr (AHP) {  // s[t] fed h_pre[t+1] (core/synaptic.h)
      if (t < steps - 1 || ahp.has_next) ahp_rows_spike_grad(len, g_row, ahp.H, ahp.w_ahp);
    }
    // The neurons: dL/du[t] (SPEC §3's step, the membrane part is the same), s[t-1], w[t-1]. Steps
    // t > 0 have their own loop (written out, no lambda: GCC then vectorises it for float and
    // double); dL/du and s[t-1] go to their outputs as whole rows afterwards.
    const T* __restrict__ gwr = gw ? gw + t * N : zeros;
    if (mask) {
      // From the window mask (SPEC §11): dL/du, dL/dbias and W with step_backward<kStepPWL>'s
      // operations; s[t-1] from the counts kept beside it (w_rec's and w_ahp's gradients), or 0
      // where nothing reads it.
      const int64_t ta = t_abs0 + t;
      const uint32_t* __restrict__ words = mask + (ta / kMaskBits) * N;
      const int shift = static_cast<int>(ta % kMaskBits);
      for (int64_t n = 0; n < len; ++n) {
        U_row[n] = step_backward_masked(g_row[n], gwr[n], mask_value<T>(words[n], shift), consts(n),
                                        W[n], gb[n]);
      }
      if (first) {
        for (int64_t n = 0; n < len; ++n) s_row[n] = s0 ? s0[n] : T(0);
      } else if (counts) {
        const uint8_t* __restrict__ cp =
            counts + (t - 1) * N;  // s[t-1]: t - 1 may be the call's -1
        for (int64_t n = 0; n < len; ++n) s_row[n] = static_cast<T>(static_cast<int32_t>(cp[n]));
      } else {
        for (int64_t n = 0; n < len; ++n) s_row[n] = T(0);
      }
    } else if (!first) {
      const T* __restrict__ ut = u + t * N;
      const T* __restrict__ up = ut - N;
      for (int64_t n = 0; n < len; ++n) {
        const T s_prev = spikes(up[n], thr[n], max_spikes);
        const T w_prev = reset(up[n], s_prev, thr[n]);
        const T U = step_backward<SURR>(g_row[n], gwr[n], ut[n], s_row[n], w_prev, consts(n), W[n],
                                        gt[n], ga[n], gb[n]);
        U_row[n] = U;
        s_row[n] = s_prev;
      }
    } else {  // once per call: w[-1] = v0, s[-1] = s0
      const T* __restrict__ ut = u + t * N;
      for (int64_t n = 0; n < len; ++n) {
        const T s_prev = s0 ? s0[n] : T(0);
        const T U = step_backward<SURR>(g_row[n], gwr[n], ut[n], s_row[n], v0[n], consts(n), W[n],
                                        gt[n], ga[n], gb[n]);
        U_row[n] = U;
        s_row[n] = s_prev;
      }
    }
    if constexpr (AHP) {  // dL/du[t] and s[t-1] (now in s_row) into the AHP current's gradients
      ahp_rows_backward(len, U_row, ahp.gh ? ahp.gh + t * N : zeros,
                        ahp.h_pre ? ahp.h_pre + t * N : zeros, s_row, ahp.gamma, ahp.H, ahp.g_gamma,
                        ahp.g_w_ahp);
    }
    if (g_u) std::memcpy(g_u + t * N, U_row, sizeof(T) * len);
    if (s_prev_out) std::memcpy(s_prev_out + t * N, s_row, sizeof(T) * len);
    // The synapses: dL/da[t] = (I + U) * beta; I carries it to i[t-1].
    const T* __restrict__ ip = i_pre ? i_pre + t * NS : syn_zeros;  // not kept: tau_syn frozen
    const T* __restrict__ git = gi ? gi + t * NS : nullptr;
    IT* __restrict__ gin = g_in + t * NS;
    for (int64_t n = 0; n < len; ++n) {
      const T U = U_row[n];
      for (int64_t k = 0; k < S; ++k) {
        const int64_t j = n * S + k;
        if (git) I[j] = I[j] + git[j];
        gin[j] = static_cast<IT>(syn_step_backward(U, ip[j], beta[j], I[j], gbeta[j]));
      }
    }
    if (g_r) {
      // dL/dr[t] = dL/da[t] (+ the gradient on the record of r), in the compute type.
      T* __restrict__ grt = g_r + t * NS;
      for (int64_t j = 0; j < syn; ++j) {
        const T gaj = I[j];  // dL/da[t][j], which the loop above has just carried into I
        grt[j] = gr ? gaj + gr[t * NS + j] : gaj;
      }
    }
    if (grad_block_ends(steps - 1, t, 0)) {
      for (int64_t n = 0; n < len; ++n) {
        flush_grad_block(ga[n], p_alpha[n]);
        flush_grad_block(gt[n], p_thr[n]);
        flush_grad_block(gb[n], p_bias[n]);
      }
      for (int64_t j = 0; j < syn; ++j) flush_grad_block(gbeta[j], p_beta[j]);
      if constexpr (AHP) {
        for (int64_t n = 0; n < len; ++n) {
          flush_grad_block(ahp.g_gamma[n], ahp.p_gamma[n]);
          flush_grad_block(ahp.g_w_ahp[n], ahp.p_w_ahp[n]);
        }
      }
    }
  }
  for (int64_t n = 0; n < len; ++n) W_io[n] = W[n];
  for (int64_t j = 0; j < syn; ++j) I_io[j] = I[j];
  if constexpr (AHP) {
    for (int64_t n = 0; n < len; ++n) ahp.H_io[n] = ahp.H[n];
  }
}

}  // namespace

// The model's kernels on the CPU (the device of the op functions in host/).
struct SynCpu : CpuDevice {
  template <typename IT, typename T>
  static void forward(const SynForwardArgs<IT, T>& a) {
    const int64_t B = a.B, Tn = a.Tn, N = a.N, S = a.S, NS = N * S;
    TORCH_CHECK(a.r == nullptr || a.steps == 1, "lif_cuda: a recurrent current is one step's");
    const int64_t tile = syn_tile(B, N, S);
    const int64_t ntiles = (N + tile - 1) / tile;
    const T M = static_cast<T>(a.max_spikes);
    const T scale = static_cast<T>(a.noise.scale);
    const bool with_ahp = a.h0 != nullptr;
    const auto fn = NOISE_SWITCH(a.noise.mode, NOISE, [&] {
      return SYNAPSES_SWITCH(S, S_FIXED, [&] {
        return BOOL_SWITCH(with_ahp, AHP,
                           [&] { return &syn_forward_tile<IT, T, NOISE, S_FIXED, AHP>; });
      });
    });
    uint64_t seed = 0, offset = 0;
    a.noise.key.get(seed, offset);
    const int64_t work = a.steps * B * NS;
    at::parallel_for(0, B * ntiles, grain_size(B * ntiles, work), [&](int64_t begin, int64_t end) {
      TileScratch<T> sc(tile, S, a.noise.mode == kNoiseKernel, with_ahp);
      for (int64_t it = begin; it < end; ++it) {
        const int64_t b = it / ntiles;
        const int64_t n0 = (it % ntiles) * tile;
        const int64_t len = std::min(tile, N - n0);
        const int64_t row = (b * Tn + a.t0) * N + n0;  // (b, t0, n0)
        const int64_t srow = (b * Tn + a.t0) * NS + n0 * S;  // (b, t0, n0 * S)
        const T* z = a.noise.tensor ? a.noise.tensor + row : nullptr;
        // The steps of this call row b runs (its state stays as it is on the others).
        const int64_t k = call_steps(row_steps(a.lengths, b, Tn), a.t0, a.steps);
        T* const vmem = a.vmem_out ? a.vmem_out + row : nullptr;
        T* const isyn = a.isyn_out ? a.isyn_out + srow : nullptr;
        T* const irec = a.irec_out ? a.irec_out + srow : nullptr;
        T* const u_out = a.u_out ? a.u_out + row : nullptr;
        T* const i_pre = a.i_pre_out ? a.i_pre_out + srow : nullptr;
        uint32_t* const mask = a.mask_out ? a.mask_out + b * mask_words(Tn) * N + n0 : nullptr;
        uint8_t* const counts = a.counts_out ? a.counts_out + row : nullptr;
        T* const v_final = a.v_final + b * N + n0;
        T* const i_final = a.i_final + b * NS + n0 * S;
        AhpForwardTile<T> ahp{};
        if (with_ahp) {
          const auto at_row = [&](T* p) { return p ? p + row : nullptr; };
          ahp = {a.h0 + b * a.h0_stride_b + n0,
                 param_row(a.w_ahp, n0, len, sc.w_ahp),
                 param_row(a.gamma, n0, len, sc.gamma),
                 at_row(a.iahp_out),
                 at_row(a.h_pre_out),
                 a.h_final + b * N + n0,
                 sc.h,
                 sc.s_prev,
                 sc.h_pre};
        }
        fn(a.x + srow, z, seed, offset, scale, static_cast<uint64_t>(b * N + n0), a.t0,
           a.v0 + b * a.v0_stride_b + n0, a.i0 + b * a.i0_stride_b + n0 * S,
           a.r ? a.r + b * NS + n0 * S : nullptr, param_row(a.alpha, n0, len, sc.alpha),
           param_row(a.beta, n0, len, S, sc.beta), param_row(a.thr, n0, len, sc.thr),
           param_row(a.bias, n0, len, sc.bias), M, a.s_out + row,
           a.s_last ? a.s_last + b * N + n0 : nullptr, vmem, isyn, irec, u_out, i_pre, mask,
           static_cast<T>(a.window), counts, v_final, i_final, k, N, S, len, sc.w, sc.i, sc.a, sc.u,
           sc.z4.data(), sc.words.data(), ahp);
        if (k < a.steps) {
          syn_pad_forward(a.s_out + row, vmem, u_out, isyn, i_pre, irec, v_final, i_final, k,
                          a.steps, N, S, len);
          if (counts) pad_fill(counts, uint8_t(0), k, a.steps, N, len);
          // The mask's words that start on padding: zeros (the others hold the row's bits).
          if (mask)
            pad_fill(mask, uint32_t(0), mask_words(a.t0 + k), mask_words(a.t0 + a.steps), N, len);
          if (with_ahp)
            ahp_pad_forward(ahp.iahp_out, ahp.h_pre_out, ahp.h_final, k, a.steps, N, len);
        }
      }
    });
  }

  template <typename IT, typename T>
  static void backward(const SynBackwardArgs<IT, T>& a) {
    const int64_t B = a.B, Tn = a.Tn, N = a.N, S = a.S, NS = N * S, BN = B * N;
    TORCH_CHECK(a.gs_rec == nullptr || a.steps == 1,
                "lif_cuda: a recurrent gradient is one step's");
    const int64_t tile = syn_tile(B, N, S);
    const int64_t ntiles = (N + tile - 1) / tile;
    const T M = static_cast<T>(a.max_spikes);
    const T window = static_cast<T>(a.window);
    const bool with_ahp = a.H != nullptr;
    const auto fn = SURROGATE_SWITCH(a.surrogate, SURR, [&] {
      return SYNAPSES_SWITCH(S, S_FIXED, [&] {
        return BOOL_SWITCH(with_ahp, AHP,
                           [&] { return &syn_backward_tile<IT, T, SURR, S_FIXED, AHP>; });
      });
    });
    const int64_t work = a.steps * B * NS;
    double* const p_alpha = a.partial;
    double* const p_thr = a.partial + BN;
    double* const p_bias = a.partial + 2 * BN;
    double* const p_beta = a.partial + 3 * BN;
    double* const p_gamma = p_beta + BN * S;  // with the AHP current
    double* const p_w_ahp = p_gamma + BN;
    at::parallel_for(0, B * ntiles, grain_size(B * ntiles, work), [&](int64_t begin, int64_t end) {
      TileScratch<T> sc(tile, S, false, with_ahp);
      // W, U, s, zeros (value-initialised: stays 0), then the gradient sums (3 rows and tile * S),
      // then the AHP's H and its two gradient sums; then tile * S zeros (the currents not kept).
      std::vector<T> rows(static_cast<size_t>((with_ahp ? 10 : 7) * tile + 2 * tile * S));
      T* W = rows.data();
      T* U_row = W + tile;
      T* s_row = U_row + tile;
      const T* zeros = s_row + tile;
      T* sums = s_row + 2 * tile;
      for (int64_t it = begin; it < end; ++it) {
        const int64_t b = it / ntiles;
        const int64_t n0 = (it % ntiles) * tile;
        const int64_t len = std::min(tile, N - n0);
        const int64_t row = (b * Tn + a.t0) * N + n0;
        const int64_t srow = (b * Tn + a.t0) * NS + n0 * S;
        const int64_t bn = b * N + n0;
        const int64_t bns = b * NS + n0 * S;
        // The steps of this call row b runs; the recurrence's gradient only where the row runs the
        // step after the call (its last step has none).
        const int64_t L = row_steps(a.lengths, b, Tn);
        const int64_t k = call_steps(L, a.t0, a.steps);
        IT* const g_in = a.g_in + srow;
        T* const g_r = a.g_r ? a.g_r + srow : nullptr;
        T* const g_u = a.g_u ? a.g_u + row : nullptr;
        T* const s_prev = a.s_prev ? a.s_prev + row : nullptr;
        AhpBackwardTile<T> ahp{};
        if (with_ahp) {
          T* const ahp_rows = sums + 3 * tile + tile * S;
          ahp = {a.h_pre ? a.h_pre + row : nullptr,
                 a.gh ? a.gh + row : nullptr,
                 param_row(a.w_ahp, n0, len, sc.w_ahp),
                 param_row(a.gamma, n0, len, sc.gamma),
                 a.H + bn,
                 p_gamma + bn,
                 p_w_ahp + bn,
                 a.t0 + k < L,
                 ahp_rows,
                 ahp_rows + tile,
                 ahp_rows + 2 * tile};
        }
        if (k > 0) {
          fn(a.gs + b * a.gs_stride_b + a.t0 * a.gs_stride_t + n0 * a.gs_stride_n, a.gs_stride_t,
             a.gs_stride_n == 0 && len > 1,
             a.gs_rec && a.t0 + a.steps < L ? a.gs_rec + bn : nullptr, a.gw ? a.gw + row : nullptr,
             a.gi ? a.gi + srow : nullptr, a.gr ? a.gr + srow : nullptr, a.u ? a.u + row : nullptr,
             a.mask ? a.mask + b * mask_words(Tn) * N + n0 : nullptr,
             a.counts ? a.counts + row : nullptr, a.i_pre ? a.i_pre + srow : nullptr,
             a.v0 + b * a.v0_stride_b + n0, a.s0 ? a.s0 + b * a.s0_stride_b + n0 : nullptr,
             param_row(a.alpha, n0, len, sc.alpha), param_row(a.beta, n0, len, S, sc.beta),
             param_row(a.thr, n0, len, sc.thr), window, M, a.W + bn, a.I + bns, g_in, g_r, g_u,
             s_prev, p_alpha + bn, p_thr + bn, p_bias + bn, p_beta + bns, a.t0, k, N, S, len, W,
             U_row, s_row, sc.z, sc.i, zeros,
             sums + 3 * tile + tile * S + (with_ahp ? 3 * tile : 0), sums, ahp);
        }
        if (k < a.steps) syn_pad_backward(g_in, g_r, g_u, s_prev, k, a.steps, N, S, len);
      }
    });
  }
};

}  // namespace cpu
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CPU, m) {
  m.impl("synaptic_forward", &lif::synaptic_forward<lif::cpu::SynCpu>);
  m.impl("synaptic_backward", &lif::synaptic_backward<lif::cpu::SynCpu>);
}
