// The work of one CUDA thread of the synaptic LIF kernels (SPEC §7), host+device and on raw
// pointers, as lif_thread.h is for the LIF kernels: one (batch row b, neuron n) over the steps
// [t0, t0 + steps), its S synapses inside the thread, forward and backward. The kernels in
// synaptic.cu only compute the thread index and call these; the host tests compile this file with
// g++ and run it thread by thread against the reference and the CPU op (no GPU needed). The math
// is core/synaptic.h's, the synapse sum in torch's CUDA order (SUM: kCudaSumDown or kCudaSumUp,
// the one the running torch uses, core/torch_sum.h).
//
// AHP: with SPEC §9's AHP current h (a register), fed by the thread's own previous spikes.
// S_FIXED (1, 2, or 0 for any S): with S known at compile time the synaptic state lives in
// registers; otherwise in the (B,N,S) final-state buffer (forward) or the carried-gradient buffer
// (backward), read and written in place. Thread idx = b * N + n, indices 64-bit. Per-row lengths
// (SPEC §8): a thread runs the steps of the call its row runs (call_steps, once per thread) and
// pads the rest (core/lengths.h).
#pragma once

#include <cstdint>

#include "../core/args.h"
#include "../core/grad_sums.h"
#include "../core/lengths.h"
#include "../core/mask.h"
#include "../core/synaptic.h"
#include "lif_thread.h"  // NeuronNoise

namespace lif {
namespace gpu {

// Steps whose inputs a synaptic forward thread loads ahead (S known at compile time). Results never
// depend on it.
constexpr int kSynChunk = 4;

// Forward thread idx = b * N + n, 0 <= idx < B * N.
template <typename IT, typename T, int NOISE, int S_FIXED, bool AHP, int SUM>
LIF_HD void syn_forward_thread(const SynForwardArgs<IT, T>& a, int64_t idx) {
  const int64_t N = a.N, S = S_FIXED ? S_FIXED : a.S, NS = N * S;
  const int64_t b = idx / N;
  const int64_t n = idx - b * N;
  T ireg[S_FIXED ? S_FIXED : 1];
  T* const ist = S_FIXED ? ireg : a.i_final + idx * S;
  const T* const i0 = a.i0 + b * a.i0_stride_b + n * S;
  for (int64_t k = 0; k < S; ++k) ist[k] = i0[k];  // may be the same address (recurrent steps)
  T w = a.v0[b * a.v0_stride_b + n];
  const T alpha = a.alpha[n];
  const T thr = a.thr[n];
  const T bias = a.bias[n];
  const T M = static_cast<T>(a.max_spikes);
  const T* const r = a.r ? a.r + b * NS + n * S : nullptr;
  // The AHP current and s[t-1], which s_last holds on entry (core/args.h).
  T h = T(0), s_prev = T(0), w_ahp = T(0), gamma = T(0);
  if constexpr (AHP) {
    h = a.h0[b * a.h0_stride_b + n];
    s_prev = a.s_last[idx];
    w_ahp = a.w_ahp[n];
    gamma = a.gamma[n];
  }
  const NeuronNoise<T> key = neuron_noise<NOISE>(a.noise, idx);
  Normals4 nz{};  // the in-kernel noise of the current 4-step block (core/philox.h's layout)
  const int64_t k_run = call_steps(row_steps(a.lengths, b, a.Tn), a.t0, a.steps);
  const int64_t t_end = a.t0 + k_run;
  // The window mask (SPEC §11) instead of u: the word being built, stored at its last step or the
  // call's; a call that starts inside a word (a recurrent per-step call) adds to its bits.
  uint32_t* const mask = a.mask_out ? a.mask_out + b * mask_words(a.Tn) * N + n : nullptr;
  const T pwl_lo = thr - static_cast<T>(a.window);  // as NeuronConsts rounds it
  uint32_t word = mask && k_run > 0 && a.t0 % kMaskBits != 0 ? mask[(a.t0 / kMaskBits) * N] : 0u;
  // With S known at compile time the decays (and recurrent input) sit in registers and the inputs
  // of the next kSynChunk steps are loaded before this chunk's steps run (in flight during the
  // recurrence); xs holds a step's S inputs. Otherwise (any S) each step reads them as it goes (xs
  // null).
  constexpr int SR = S_FIXED ? S_FIXED : 1;
  T breg[SR];
  T rreg[SR];  // the call's recurrent input, the same at each of its steps
  if constexpr (S_FIXED != 0) {
    for (int k = 0; k < S_FIXED; ++k) {
      breg[k] = a.beta(n, k);
      rreg[k] = r ? r[k] : T(0);
    }
  }
  const auto step = [&](int64_t t, const T* xs) {
    const int64_t row = (b * a.Tn + t) * N + n;  // (b, t, n)
    const int64_t srow = row * S;  // (b, t, n, 0)
    for (int64_t k = 0; k < S; ++k) {
      const T xk = S_FIXED ? xs[k] : static_cast<T>(a.x[srow + k]);
      const T rk = r ? (S_FIXED ? rreg[k] : r[k]) : T(0);
      const T ak = r ? syn_input(ist[k], xk, rk) : syn_input(ist[k], xk);
      if (a.i_pre_out) a.i_pre_out[srow + k] = ak;
      ist[k] = syn_decay(ak, S_FIXED ? breg[k] : a.beta(n, k));
      if (a.isyn_out) a.isyn_out[srow + k] = ist[k];
      if (a.irec_out) a.irec_out[srow + k] = rk;
    }
    // The LIF step with the synapse sum as its input (SPEC §7), the AHP current its last lane
    // (SPEC §9).
    T isum;
    if constexpr (AHP) {
      const T hp = ahp_input(h, s_prev, w_ahp);
      h = syn_decay(hp, gamma);
      if (a.h_pre_out) a.h_pre_out[row] = hp;
      if (a.iahp_out) a.iahp_out[row] = h;
      isum = ahp_sum<SUM, S_FIXED>(ist, S, h, a.B * N);
    } else {
      isum = synaptic_sum<SUM, S_FIXED>(ist, S, a.B * N);
    }
    T u, s;
    if constexpr (NOISE == kNoNoise) {
      s = step_forward(alpha, w, isum, bias, thr, M, u, w);
    } else if constexpr (NOISE == kNoiseTensor) {
      s = step_forward(alpha, w, isum, a.noise.tensor[row], bias, thr, M, u, w);
    } else {
      // Step t: lane t % 4 of Philox block t / 4 of subsequence b * N + n, drawn once per block
      // (or at the call's first step), the lane picked by selects (no local-memory index).
      if (t == a.t0 || (t & 3) == 0) {
        nz = philox_normals4(key.seed, key.offset, key.subsequence, static_cast<uint64_t>(t >> 2));
      }
      const int64_t lane = t & 3;
      const float zn = lane == 0 ? nz.z0 : (lane == 1 ? nz.z1 : (lane == 2 ? nz.z2 : nz.z3));
      s = step_forward(alpha, w, isum, scale_noise(key.scale, zn), bias, thr, M, u, w);
    }
    a.s_out[row] = static_cast<IT>(s);
    if (a.u_out) a.u_out[row] = u;
    if (a.counts_out) a.counts_out[row] = static_cast<uint8_t>(s);  // max_spikes <= 255
    if (mask) {
      word = (t % kMaskBits == 0 ? 0u : word) | mask_bit(u, pwl_lo, t);
      if (mask_word_ends(t, t_end)) mask[(t / kMaskBits) * N] = word;
    }
    if (a.vmem_out) a.vmem_out[row] = w;
    if (a.s_last && t == t_end - 1) a.s_last[idx] = s;
    if constexpr (AHP) s_prev = s;
  };
  int64_t t = a.t0;
  if constexpr (S_FIXED != 0) {
    const auto load = [&](int64_t t1, T(*xs)[SR]) {
      LIF_UNROLL
      for (int c = 0; c < kSynChunk; ++c) {
        const int64_t srow = ((b * a.Tn + t1 + c) * N + n) * S;
        for (int k = 0; k < S_FIXED; ++k) xs[c][k] = static_cast<T>(a.x[srow + k]);
      }
    };
    T xcur[kSynChunk][SR];
    if (t + kSynChunk <= t_end) load(t, xcur);
    for (; t + kSynChunk <= t_end; t += kSynChunk) {
      T xnext[kSynChunk][SR] = {};
      const bool more = t + 2 * kSynChunk <= t_end;
      if (more) load(t + kSynChunk, xnext);
      LIF_UNROLL
      for (int c = 0; c < kSynChunk; ++c) step(t + c, xcur[c]);
      LIF_UNROLL
      for (int c = 0; c < kSynChunk; ++c)
        for (int k = 0; k < S_FIXED; ++k) xcur[c][k] = xnext[c][k];
    }
    for (; t < t_end; ++t) {
      T xs[SR];
      const int64_t srow = ((b * a.Tn + t) * N + n) * S;
      for (int k = 0; k < S_FIXED; ++k) xs[k] = static_cast<T>(a.x[srow + k]);
      step(t, xs);
    }
  } else {
    for (; t < t_end; ++t) step(t, nullptr);
  }
  a.v_final[idx] = w;
  if constexpr (AHP) a.h_final[idx] = h;
  if (S_FIXED) {
    for (int64_t k = 0; k < S; ++k) a.i_final[idx * S + k] = ist[k];
  }
  if (k_run < a.steps) {
    const int64_t row = (b * a.Tn + a.t0) * N + n;  // (b, t0, n)
    const auto opt = [&](T* p, int64_t off) { return p ? p + off : nullptr; };
    syn_pad_forward(a.s_out + row, opt(a.vmem_out, row), opt(a.u_out, row),
                    opt(a.isyn_out, row * S), opt(a.i_pre_out, row * S), opt(a.irec_out, row * S),
                    a.v_final + idx, a.i_final + idx * S, k_run, a.steps, N, S, int64_t{1});
    if constexpr (AHP) {
      ahp_pad_forward(opt(a.iahp_out, row), opt(a.h_pre_out, row), a.h_final + idx, k_run, a.steps,
                      N, int64_t{1});
    }
    if (a.counts_out) pad_fill(a.counts_out + row, uint8_t(0), k_run, a.steps, N, int64_t{1});
    // The mask's words that start on padding: zeros (the others hold the row's bits).
    if (mask) {
      pad_fill(mask, 0u, mask_words(a.t0 + k_run), mask_words(a.t0 + a.steps), N, int64_t{1});
    }
  }
}

// Steps whose loads the synaptic backward keeps in flight (reverse_steps' ring; 0: none, each step
// loads as it runs). A slot holds a whole step's loads (up to 5 + 3 S values), so the ring is kept
// only where its registers still fit and pay (docs/gpu.md): not for float64 S = 2 with the AHP
// current, nor float64 with S known only at run time (its synapses' loads are not in the ring).
template <typename T, int S_FIXED, bool AHP>
constexpr int syn_backward_ring() {
  return sizeof(T) == 8 && (S_FIXED == 0 || (S_FIXED == 2 && AHP)) ? 0 : kRing;
}

// Backward thread idx = b * N + n: the reverse loop over [t0, t0 + steps), W, I and the row's
// partial sums read at the start and written back at the end (carried between per-step calls).
template <typename IT, typename T, int SURR, int S_FIXED, bool AHP>
LIF_HD void syn_backward_thread(const SynBackwardArgs<IT, T>& a, int64_t idx) {
  const int64_t N = a.N, S = S_FIXED ? S_FIXED : a.S, BN = a.B * N;
  const int64_t b = idx / N;
  const int64_t n = idx - b * N;
  // The steps of this call the row runs; on the others (its padding) W, I and the partial sums
  // stay as they are. The recurrence's gradient only where the row runs the step after the call.
  const int64_t L = row_steps(a.lengths, b, a.Tn);
  const int64_t k_run = call_steps(L, a.t0, a.steps);
  if (k_run < a.steps) {
    const int64_t row = (b * a.Tn + a.t0) * N + n;  // (b, t0, n)
    const auto opt = [&](T* p, int64_t off) { return p ? p + off : nullptr; };
    syn_pad_backward(a.g_in + row * S, opt(a.g_r, row * S), opt(a.g_u, row), opt(a.s_prev, row),
                     k_run, a.steps, N, S, int64_t{1});
  }
  if (k_run == 0) return;
  const T* const gs_rec = a.gs_rec && a.t0 + a.steps < L ? a.gs_rec : nullptr;
  const T alpha = a.alpha[n];
  const T thr = a.thr[n];
  const T M = static_cast<T>(a.max_spikes);
  const NeuronConsts<T> c = neuron_consts(alpha, thr, static_cast<T>(a.window), M);
  // The parameter-gradient terms' block sums in T, flushed into the row's float64 partials at each
  // block's end (core/grad_sums.h). With S known at compile time the synapses' state and sums, and
  // their decays, live in registers; otherwise in the carried-gradient buffer and the beta_sums
  // scratch.
  constexpr int SR = S_FIXED ? S_FIXED : 1;
  T ireg[SR];
  T gbreg[SR];
  T beta[SR];
  T* const I = S_FIXED ? ireg : a.I + idx * S;
  T* const gbeta = S_FIXED ? gbreg : a.beta_sums + idx * S;
  for (int64_t k = 0; k < S; ++k) {
    if constexpr (S_FIXED != 0) {
      I[k] = a.I[idx * S + k];
      beta[k] = a.beta(n, k);
    }
    gbeta[k] = T(0);
  }
  T W = a.W[idx], ga = T(0), gt = T(0), gb = T(0);
  double* const p_beta = a.partial + 3 * BN + idx * S;
  const int64_t t_last = a.t0 + k_run - 1;
  // The window mask in u's place (SPEC §11): the spikes s[t-1] come from the counts kept beside
  // it (w_rec's and w_ahp's gradients) or are not read (both frozen). Its word of the current 32
  // steps, loaded at the call's last step and where a word ends.
  const uint32_t* const mask = a.mask ? a.mask + b * mask_words(a.Tn) * N + n : nullptr;
  uint32_t word = 0;
  // u[t] and s[t] of the step being run, carried from the step after it (u[t-1] is loaded with it).
  T u_cur = mask ? T(0) : a.u[(b * a.Tn + t_last) * N + n];
  T s_cur = mask ? T(0) : spikes(u_cur, thr, M);
  const T g_rec = gs_rec ? gs_rec[idx] : T(0);
  // The AHP current (core/synaptic.h): H carried, its gradient sums; s[t_last] fed h only where the
  // row runs the step after the call.
  T H = T(0), g_gamma = T(0), g_w_ahp = T(0), w_ahp = T(0), gamma = T(0);
  const bool ahp_next = a.t0 + k_run < L;
  if constexpr (AHP) {
    H = a.H[idx];
    w_ahp = a.w_ahp[n];
    gamma = a.gamma[n];
  }
  // What step t reads, loaded ahead of it (reverse_steps); with S known at compile time its
  // synapses' values too, otherwise the step reads those as it goes. prev: u[t-1]; count: with the
  // mask, s[t-1] as the counts kept beside it hold it (0 where unread). Converted where read, so
  // that a conversion does not wait for the load.
  struct Loaded {
    IT gs;
    T gw, prev, gh, h_pre;
    uint8_t count;
    T gi[SR], i_pre[SR], gr[SR];
  };
  const auto load = [&](int64_t t, bool with_prev) {
    const int64_t row = (b * a.Tn + t) * N + n;
    const int64_t srow = row * S;
    Loaded v{};
    v.gs = a.gs[b * a.gs_stride_b + t * a.gs_stride_t + n * a.gs_stride_n];
    if (a.gw) v.gw = a.gw[row];
    if (with_prev) {
      if (!mask) {
        v.prev = a.u[row - N];
      } else if (a.counts) {
        v.count = a.counts[row - N];
      }
    }
    if constexpr (AHP) {
      if (a.gh) v.gh = a.gh[row];
      if (a.h_pre) v.h_pre = a.h_pre[row];
    }
    if constexpr (S_FIXED != 0) {
      for (int k = 0; k < S_FIXED; ++k) {
        if (a.gi) v.gi[k] = a.gi[srow + k];
        if (a.i_pre) v.i_pre[k] = a.i_pre[srow + k];
        if (a.gr) v.gr[k] = a.gr[srow + k];
      }
    }
    return v;
  };
  // Step t from its loaded values, s[t-1] and w[t-1].
  const auto step = [&](int64_t t, const Loaded& v, T s_prev, T w_prev) {
    const int64_t row = (b * a.Tn + t) * N + n;
    const int64_t srow = row * S;
    T g = static_cast<T>(v.gs);
    if (gs_rec) g = g + g_rec;
    if constexpr (AHP) {
      if (t < t_last || ahp_next) g = g + H * w_ahp;
    }
    T U;
    if (mask) {
      if (mask_word_ends(t, t_last + 1)) word = mask[(t / kMaskBits) * N];  // as stored
      U = step_backward_masked(g, v.gw, mask_value<T>(word, static_cast<int>(t % kMaskBits)), c, W,
                               gb);
    } else {
      U = step_backward<SURR>(g, v.gw, u_cur, s_cur, w_prev, c, W, gt, ga, gb);
    }
    if constexpr (AHP) ahp_step_backward(U, v.gh, v.h_pre, s_prev, gamma, H, g_gamma, g_w_ahp);
    if (a.g_u) a.g_u[row] = U;
    if (a.s_prev) a.s_prev[row] = s_prev;
    s_cur = s_prev;
    for (int64_t k = 0; k < S; ++k) {
      // i_pre not kept (tau_syn frozen): its gradient's terms read zeros, and are not returned.
      T gik, ipk, grk, bk;
      if constexpr (S_FIXED != 0) {
        gik = v.gi[k], ipk = v.i_pre[k], grk = v.gr[k], bk = beta[k];
      } else {
        gik = a.gi ? a.gi[srow + k] : T(0);
        ipk = a.i_pre ? a.i_pre[srow + k] : T(0);
        grk = a.gr ? a.gr[srow + k] : T(0);
        bk = a.beta(n, k);
      }
      if (a.gi) I[k] = I[k] + gik;
      const T gak = syn_step_backward(U, ipk, bk, I[k], gbeta[k]);
      a.g_in[srow + k] = static_cast<IT>(gak);
      if (a.g_r) a.g_r[srow + k] = a.gr ? gak + grk : gak;
    }
    if (grad_block_ends(t_last, t, a.t0)) {
      flush_grad_block(ga, a.partial[idx]);
      flush_grad_block(gt, a.partial[BN + idx]);
      flush_grad_block(gb, a.partial[2 * BN + idx]);
      for (int64_t k = 0; k < S; ++k) flush_grad_block(gbeta[k], p_beta[k]);
      if constexpr (AHP) {  // after beta's (B,N,S): gamma's (B,N), then w_ahp's
        flush_grad_block(g_gamma, a.partial[3 * BN + BN * S + idx]);
        flush_grad_block(g_w_ahp, a.partial[4 * BN + BN * S + idx]);
      }
    }
  };
  // Steps t_last .. t1 = max(t0, 1) through the ring (reverse_steps runs t' = t_last - t1 + 1 .. 1,
  // t = t' + t1 - 1); step 0 (if the call runs it) reads the initial state.
  const int64_t t1 = a.t0 > 0 ? a.t0 : int64_t{1};
  const auto ring_step = [&](int64_t t, const Loaded& v) {
    T s_prev = static_cast<T>(static_cast<int32_t>(v.count)), w_prev = T(0);
    if (!mask) {
      s_prev = spikes(v.prev, thr, M);
      w_prev = reset(v.prev, s_prev, thr);
    }
    step(t, v, s_prev, w_prev);
    u_cur = v.prev;
  };
  constexpr int kSynRing = syn_backward_ring<T, S_FIXED, AHP>();
  if constexpr (kSynRing == 0) {
    for (int64_t t = t_last; t >= t1; --t) ring_step(t, load(t, true));
  } else {
    reverse_steps<kSynRing>(
        t_last - t1 + 1, [&](int64_t tp) { return load(tp + t1 - 1, true); },
        [&](int64_t tp, const Loaded& v) { ring_step(tp + t1 - 1, v); });
  }
  if (a.t0 == 0) {
    step(0, load(0, false), a.s0 ? a.s0[b * a.s0_stride_b + n] : T(0),
         mask ? T(0) : a.v0[b * a.v0_stride_b + n]);
  }
  a.W[idx] = W;
  if constexpr (AHP) a.H[idx] = H;
  if (S_FIXED) {
    for (int64_t k = 0; k < S; ++k) a.I[idx * S + k] = I[k];
  }
}

}  // namespace gpu
}  // namespace lif
