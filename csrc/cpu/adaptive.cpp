// The adaptive-threshold LIF ops on the CPU (SPEC §10): tiles of (batch row, contiguous neurons)
// as for the LIF ops (tiles.h), the forward over the whole time loop and the hand-written BPTT
// backward. The per-element math is core/adaptive.h's; host/adaptive_op.h prepares the arguments.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "../core/adaptive.h"
#include "../core/grad_sums.h"
#include "../core/lengths.h"
#include "../core/switch.h"
#include "../host/adaptive_op.h"
#include "noise_x86.h"
#include "tiles.h"

namespace lif {
namespace cpu {
namespace {

#ifndef LIF_BWD_TILE
#define LIF_BWD_TILE 256
#endif

// A tile's parameter rows (tiles.h param_row) and q = 1 - rho.
template <typename T, int64_t kLen>
struct AdaptiveRows {
  T alpha_buf[kLen], thr_buf[kLen], rho_buf[kLen], beta_buf[kLen], q[kLen];
  const T *alpha, *thr, *rho, *beta;

  template <typename Args>
  AdaptiveRows(const Args& a, int64_t n0, int64_t len)
      : alpha(param_row(a.lif.alpha, n0, len, alpha_buf)),
        thr(param_row(a.lif.thr, n0, len, thr_buf)),
        rho(param_row(a.rho, n0, len, rho_buf)),
        beta(param_row(a.beta, n0, len, beta_buf)) {
    for (int64_t n = 0; n < len; ++n) q[n] = T(1) - rho[n];
  }
};

// One forward tile: batch row b, neurons [n0, n0 + len), the row's `steps`; pointers at (b, t=0,
// n0), steps stride_t apart; the noise as TileNoise takes it (as lif.cpp's forward_tile). Called
// through a pointer (the ISA clone the resolver picks; a direct call may inline the baseline one).
template <typename IT, typename T, int NOISE>
LIF_CLONES void forward_tile(const IT* __restrict__ x, const T* __restrict__ z, uint64_t seed,
                             uint64_t offset, uint64_t subseq, T noise_scale,
                             const T* __restrict__ v0, const T* __restrict__ b0,
                             const T* __restrict__ alpha, const T* __restrict__ thr,
                             const T* __restrict__ bias, const T* __restrict__ rho,
                             const T* __restrict__ beta, T max_spikes, IT* __restrict__ s_out,
                             T* __restrict__ vmem_out, T* __restrict__ adapt_out,
                             T* __restrict__ u_out, T* __restrict__ b_out, T* __restrict__ v_final,
                             T* __restrict__ b_final, bool stream, int64_t steps, int64_t stride_t,
                             int64_t len) {
  T w[kMaxTile], b[kMaxTile];
  T u_scratch[kMaxTile];
  constexpr int64_t kLine = kLineBytes / static_cast<int64_t>(sizeof(T));
  TileNoise<T, NOISE, kMaxTile> noise(z, seed, offset, subseq, noise_scale, len);
  for (int64_t n = 0; n < len; ++n) {
    w[n] = v0[n];
    b[n] = b0[n];
  }
  if (b_out) std::memcpy(b_out, b, sizeof(T) * len);  // checkpoint 0 (core/adaptive.h)
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t off = t * stride_t;
    const IT* __restrict__ xt = x + off;
    const T* __restrict__ zt = noise.step(t, off);
    IT* __restrict__ st = s_out + off;
    T* __restrict__ ut = u_out ? u_out + off : u_scratch;
    // A streaming call (tiles.h) asks for the next step's input a cache line at a time ahead of
    // its use: the loop's body is long enough that the out-of-order window alone keeps too few
    // of its loads in flight. From the caches (a smaller call), asking costs more than it saves.
    const bool ahead = stream && t + 1 < steps;
    auto element = [&](int64_t n, IT& s_to, T& u_to) __attribute__((always_inline)) {
      T u;
      if constexpr (NOISE == kNoNoise) {
        u = integrate(alpha[n], w[n], static_cast<T>(xt[n]), bias[n]);
      } else {
        u = integrate(alpha[n], w[n], static_cast<T>(xt[n]), zt[n], bias[n]);
      }
      T wn, bn = b[n];
      // q = 1 - rho here, not AdaptiveRows' q row: the same operation, one row fewer to read.
      const T s = adaptive_fire(u, thr[n], beta[n], rho[n], T(1) - rho[n], max_spikes, wn, bn);
      s_to = static_cast<IT>(s);
      u_to = u;
      w[n] = wn;
      b[n] = bn;
    };
    // Whole lines with a fixed count (one clean vector loop each), then the tile's last partial
    // line.
    const int64_t whole = len - len % kLine;
    for (int64_t n0 = 0; n0 < whole; n0 += kLine) {
      if (ahead) __builtin_prefetch(xt + stride_t + n0, 0, 3);
      if constexpr (can_stream<IT>() && can_stream<T>()) {
        if (stream) {
          alignas(kLineBytes) IT s_line[kLine];
          alignas(kLineBytes) T u_line[kLine];
          for (int64_t k = 0; k < kLine; ++k) element(n0 + k, s_line[k], u_line[k]);
          stream_line(st + n0, s_line);
          if (u_out) stream_line(ut + n0, u_line);  // else u is not kept
          continue;
        }
      }
      for (int64_t k = 0; k < kLine; ++k) element(n0 + k, st[n0 + k], ut[n0 + k]);
    }
    for (int64_t n = whole; n < len; ++n) element(n, st[n], ut[n]);
    if (b_out && (t + 2) % kAdaptCheckpoint == 0 && t + 2 < steps) {
      std::memcpy(b_out + ((t + 2) / kAdaptCheckpoint) * stride_t, b, sizeof(T) * len);
    }
    if (vmem_out) std::memcpy(vmem_out + off, w, sizeof(T) * len);
    if (adapt_out) std::memcpy(adapt_out + off, b, sizeof(T) * len);
  }
  std::memcpy(v_final, w, sizeof(T) * len);
  std::memcpy(b_final, b, sizeof(T) * len);
  if (stream) stream_fence();
}

// The per-row float64 sums a backward tile leaves (core/grad_sums.h), and its state gradients.
template <typename T>
struct TileGradOut {
  double *alpha, *thr, *bias, *beta, *rho;
  T* g_v0;            // (len,) row of dL/dv0, or nullptr: then g_v0_rows
  double* g_v0_rows;  // a shared v0's rows
  T* g_b0;
  double* g_b0_rows;
};

// The rows a backward tile rebuilds per segment (b, s, w: K steps of the widest tile).
constexpr int64_t kSegValues = 3 * kAdaptCheckpoint * LIF_BWD_TILE;

// Reverse time loop for one tile (core/adaptive.h's equations), one segment of kAdaptCheckpoint
// steps at a time from the last: from the segment's checkpoint and u, a forward sweep rebuilds
// b[t-1], s[t] and w[t] for its steps (the forward's operations, so its bits) into rows that stay
// in cache, then the reverse steps read them. W and Bc start from the gradients on the final state.
template <typename IT, typename T, int SURR, bool HAS_GW, bool HAS_GB>
LIF_CLONES void backward_tile(const IT* __restrict__ gs, int64_t gs_stride_t, bool gs_bcast_n,
                              const T* __restrict__ gw, const T* __restrict__ gb,
                              const T* __restrict__ gvf, const T* __restrict__ gbf,
                              const T* __restrict__ u, const T* __restrict__ b_ckpt,
                              const T* __restrict__ v0, const T* __restrict__ alpha,
                              const T* __restrict__ thr, const T* __restrict__ rho,
                              const T* __restrict__ q, const T* __restrict__ beta, T window,
                              T max_spikes, IT* __restrict__ g_in, const TileGradOut<T>& out,
                              T* __restrict__ seg, int64_t steps, int64_t stride_t, int64_t len) {
  constexpr int64_t K = kAdaptCheckpoint;
  constexpr int64_t kLine = kLineBytes / static_cast<int64_t>(sizeof(T));
  // The carried gradients and the terms' block sums as separate rows (not an array of
  // AdaptiveGrads), so that the loops over the neurons vectorise; each step rebuilds a neuron's
  // AdaptiveGrads from them, which the compiler keeps in registers.
  T W[LIF_BWD_TILE], Bc[LIF_BWD_TILE], ga[LIF_BWD_TILE], gt[LIF_BWD_TILE], gbias[LIF_BWD_TILE],
      gbeta[LIF_BWD_TILE], grho[LIF_BWD_TILE];
  // A segment's rebuilt rows in `seg` (kSegValues, the caller's: too large for a thread's stack):
  // b[t-1], s[t], w[t] for its steps; w before its first step and the running b of the sweep.
  T(*const b_seg)[LIF_BWD_TILE] = reinterpret_cast<T(*)[LIF_BWD_TILE]>(seg);
  T(*const s_seg)[LIF_BWD_TILE] = b_seg + K;
  T(*const w_seg)[LIF_BWD_TILE] = s_seg + K;
  T w_first[LIF_BWD_TILE], b_run[LIF_BWD_TILE];
  IT gs_row[LIF_BWD_TILE];
  for (int64_t n = 0; n < len; ++n) {
    W[n] = gvf ? gvf[n] : T(0);
    Bc[n] = gbf ? gbf[n] : T(0);
    ga[n] = gt[n] = gbias[n] = gbeta[n] = grho[n] = T(0);
    out.alpha[n] = out.thr[n] = out.bias[n] = out.beta[n] = out.rho[n] = 0.0;
  }
  for (int64_t c = adapt_checkpoint_rows(steps, K) - 1; c >= 0; --c) {
    const int64_t t0 = c * K, t1 = std::min(t0 + K, steps);
    // The sweep: from checkpoint c, step t0 - 1 (w[t0-1]; v0 before step 0), then the segment.
    const T* __restrict__ bc = b_ckpt + c * stride_t;
    if (c == 0) {
      for (int64_t n = 0; n < len; ++n) {
        w_first[n] = v0[n];
        b_run[n] = bc[n];
      }
    } else {
      const T* __restrict__ up = u + (t0 - 1) * stride_t;
      for (int64_t n = 0; n < len; ++n) {
        T bn = bc[n];
        adaptive_fire(up[n], thr[n], beta[n], rho[n], q[n], max_spikes, w_first[n], bn);
        b_run[n] = bn;
      }
    }
    for (int64_t t = t0; t < t1; ++t) {
      const T* __restrict__ ut = u + t * stride_t;
      T* __restrict__ bs = b_seg[t - t0];
      T* __restrict__ ss = s_seg[t - t0];
      T* __restrict__ ws = w_seg[t - t0];
      for (int64_t n = 0; n < len; ++n) {
        T bn = b_run[n];
        bs[n] = bn;
        ss[n] = adaptive_fire(ut[n], thr[n], beta[n], rho[n], q[n], max_spikes, ws[n], bn);
        b_run[n] = bn;
      }
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t off = t * stride_t;
      const int64_t j = t - t0;
      const IT* __restrict__ gst = gs + t * gs_stride_t;
      if (gs_bcast_n) {
        for (int64_t n = 0; n < len; ++n) gs_row[n] = gst[0];
        gst = gs_row;
      }
      const T* __restrict__ ut = u + off;
      IT* __restrict__ git = g_in + off;
      const T* __restrict__ b_prev = b_seg[j];
      const T* __restrict__ s_t = s_seg[j];
      const T* __restrict__ w_prev = j > 0 ? w_seg[j - 1] : w_first;
      const T* __restrict__ gwt = HAS_GW ? gw + off : nullptr;
      const T* __restrict__ gbt = HAS_GB ? gb + off : nullptr;
      // Asked for ahead, a line at a time: the previous segment's u for its sweep (into L2), and
      // the next step's rows (N apart: for a large N in another page, where the hardware's
      // prefetchers do not follow).
      for (int64_t n0 = 0; n0 < len; n0 += kLine) {
        if (t >= K) __builtin_prefetch(u + (t - K) * stride_t + n0, 0, 2);
        if (t > t0) {
          __builtin_prefetch(git - stride_t + n0, 1, 3);
          if (!gs_bcast_n) __builtin_prefetch(gst - gs_stride_t + n0, 0, 3);
          if (HAS_GW) __builtin_prefetch(gwt - stride_t + n0, 0, 3);
          if (HAS_GB) __builtin_prefetch(gbt - stride_t + n0, 0, 3);
        }
      }
      for (int64_t n = 0; n < len; ++n) {
        const AdaptiveConsts<T> k{alpha[n], thr[n], beta[n], rho[n], q[n], window, max_spikes};
        const T A = adaptive_threshold(thr[n], beta[n], b_prev[n]);
        AdaptiveGrads<T> g{W[n], Bc[n], ga[n], gt[n], gbias[n], gbeta[n], grho[n]};
        git[n] = static_cast<IT>(adaptive_step_backward<SURR>(
            static_cast<T>(gst[n]), HAS_GW ? gwt[n] : T(0), HAS_GB ? gbt[n] : T(0), ut[n], s_t[n],
            A, b_prev[n], w_prev[n], k, g));
        W[n] = g.W;
        Bc[n] = g.Bc;
        ga[n] = g.g_alpha;
        gt[n] = g.g_thr;
        gbias[n] = g.g_bias;
        gbeta[n] = g.g_beta;
        grho[n] = g.g_rho;
      }
      if (grad_block_ends(steps - 1, t, 0)) {
        for (int64_t n = 0; n < len; ++n) {
          flush_grad_block(ga[n], out.alpha[n]);
          flush_grad_block(gt[n], out.thr[n]);
          flush_grad_block(gbias[n], out.bias[n]);
          flush_grad_block(gbeta[n], out.beta[n]);
          flush_grad_block(grho[n], out.rho[n]);
        }
      }
    }
  }
  // The initial states' gradients: per row, or a shared state's rows in float64 for its batch sum.
  for (int64_t n = 0; n < len; ++n) {
    if (out.g_v0) {
      out.g_v0[n] = W[n];
    } else {
      out.g_v0_rows[n] = static_cast<double>(W[n]);
    }
    if (out.g_b0) {
      out.g_b0[n] = Bc[n];
    } else {
      out.g_b0_rows[n] = static_cast<double>(Bc[n]);
    }
  }
}

}  // namespace

// The model's kernels on the CPU (the device of the op functions in host/adaptive_op.h).
struct AdaptiveCpu : CpuDevice {
  static constexpr int64_t kEvery = kAdaptCheckpoint;  // the saved b: checkpoints

  template <typename IT, typename T>
  static void forward(const AdaptiveForwardArgs<IT, T>& a) {
    const LifForwardArgs<IT, T>& m = a.lif;  // the membrane part
    const int64_t B = m.B, Tn = m.Tn, N = m.N;
    const T M = static_cast<T>(m.max_spikes);
    const T scale = static_cast<T>(m.noise.scale);
    uint64_t seed = 0, offset = 0;
    m.noise.key.get(seed, offset);
    const auto fn = NOISE_SWITCH(m.noise.mode, NOISE, [&] { return &forward_tile<IT, T, NOISE>; });
    // Spikes and u (when kept) streamed past the caches when what the call moves (the input
    // read, they written) is larger than them (tiles.h).
    const int64_t moved_bytes = static_cast<int64_t>(2 * sizeof(IT) + (m.u_out ? sizeof(T) : 0));
    const bool stream = B * Tn * N * moved_bytes >= kStreamMinBytes;
    for_each_tile(
        B, N, choose_tile(B, N, kMaxTile), Tn * N * B, [&](int64_t b, int64_t n0, int64_t len) {
          const AdaptiveRows<T, kMaxTile> p(a, n0, len);
          T bias_buf[kMaxTile];
          const int64_t row = b * Tn * N + n0;  // (b, t=0, n0)
          const int64_t bn = b * N + n0;
          T* vmem = m.vmem_out ? m.vmem_out + row : nullptr;
          T* adapt = a.adapt_out ? a.adapt_out + row : nullptr;
          T* u_out = m.u_out ? m.u_out + row : nullptr;
          T* b_out = a.b_out ? a.b_out + b * adapt_checkpoint_rows(Tn, kEvery) * N + n0 : nullptr;
          const int64_t steps = row_steps(m.lengths, b, Tn);
          fn(m.x + row, m.noise.tensor ? m.noise.tensor + row : nullptr, seed, offset,
             static_cast<uint64_t>(bn), scale, m.v0 + b * m.v0_stride_b + n0,
             a.b0 + b * a.b0_stride_b + n0, p.alpha, p.thr, param_row(m.bias, n0, len, bias_buf),
             p.rho, p.beta, M, m.s_out + row, vmem, adapt, u_out, b_out, m.v_final + bn,
             a.b_final + bn,
             stream && stream_rows(m.s_out + row, N) && (!u_out || stream_rows(u_out, N)), steps, N,
             len);
          if (steps < Tn) {
            pad_fill(m.s_out + row, static_cast<IT>(0), steps, Tn, N, len);
            for (T* seq : {vmem, u_out}) {
              if (seq) pad_hold<T>(seq, m.v_final + bn, steps, Tn, N, len);
            }
            if (adapt) pad_hold<T>(adapt, a.b_final + bn, steps, Tn, N, len);
          }
          if (b_out) {
            pad_hold<T>(b_out, a.b_final + bn, adapt_checkpoint_rows(steps, kEvery),
                        adapt_checkpoint_rows(Tn, kEvery), N, len);
          }
        });
  }

  template <typename IT, typename T>
  static void backward(const AdaptiveBackwardArgs<IT, T>& a) {
    const LifBackwardArgs<IT, T>& m = a.lif;
    const int64_t B = m.B, Tn = m.Tn, N = m.N, BN = B * N;
    const T M = static_cast<T>(m.max_spikes);
    const T window = static_cast<T>(m.window);
    const auto fn = SURROGATE_SWITCH(m.surrogate, SURR, [&] {
      return BOOL_SWITCH(m.gw != nullptr, HAS_GW, [&] {
        return BOOL_SWITCH(a.gb != nullptr, HAS_GB,
                           [&] { return &backward_tile<IT, T, SURR, HAS_GW, HAS_GB>; });
      });
    });
    // Each thread's segment rows (uninitialised: the sweep fills them), one allocation a call.
    const std::unique_ptr<T[]> seg(new T[at::get_num_threads() * kSegValues]);
    for_each_tile(
        B, N, choose_tile(B, N, LIF_BWD_TILE), Tn * BN, [&](int64_t b, int64_t n0, int64_t len) {
          const AdaptiveRows<T, LIF_BWD_TILE> p(a, n0, len);
          const int64_t row = b * Tn * N + n0;
          const int64_t bn = b * N + n0;
          const int64_t steps = row_steps(m.lengths, b, Tn);
          double* part = m.partial + bn;  // rows as core/args.h's AdaptiveBackwardArgs says
          const TileGradOut<T> out{part,
                                   part + BN,
                                   part + 2 * BN,
                                   part + 4 * BN,
                                   part + 5 * BN,
                                   m.g_v0 ? m.g_v0 + bn : nullptr,
                                   m.g_v0 ? nullptr : part + 3 * BN,
                                   a.g_b0 ? a.g_b0 + bn : nullptr,
                                   a.g_b0 ? nullptr : part + 6 * BN};
          fn(m.gs + b * m.gs_stride_b + n0 * m.gs_stride_n, m.gs_stride_t,
             m.gs_stride_n == 0 && len > 1, m.gw ? m.gw + row : nullptr,
             a.gb ? a.gb + row : nullptr, m.gvf ? m.gvf + bn : nullptr,
             a.gbf ? a.gbf + bn : nullptr, m.u + row,
             a.b + b * adapt_checkpoint_rows(Tn, kEvery) * N + n0, m.v0 + b * m.v0_stride_b + n0,
             p.alpha, p.thr, p.rho, p.q, p.beta, window, M, m.g_in + row, out,
             seg.get() + at::get_thread_num() * kSegValues, steps, N, len);
          pad_fill(m.g_in + row, static_cast<IT>(0), steps, Tn, N, len);
        });
  }
};

}  // namespace cpu
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CPU, m) {
  m.impl("adaptive_forward", &lif::adaptive_forward<lif::cpu::AdaptiveCpu>);
  m.impl("adaptive_backward", &lif::adaptive_backward<lif::cpu::AdaptiveCpu>);
}
