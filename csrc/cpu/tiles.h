// How the CPU kernels of every model arrange the work: tiles of (batch row, contiguous neurons)
// under at::parallel_for, the time loop inside a tile and the neuron loop innermost (contiguous in
// the (B,T,N) layout, so it vectorises); the per-ISA clones of the tile functions; a tile's row of
// a broadcast parameter; the gradient sums' loops. No math here (that is core/'s); the in-kernel
// noise rows are noise_x86.h's.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../core/args.h"
#include "../core/grad_sums.h"
#include "../core/surrogate.h"
#include "../host/prepare.h"

// The inner loops are built once per instruction-set level (GCC target_clones: AVX2, SSE4.1,
// baseline) and picked at load time, so a default build runs on any x86-64 CPU and is still fast
// (floor needs SSE4.1 to vectorise).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LIF_NO_CLONES)
#define LIF_CLONES __attribute__((target_clones("avx2", "sse4.1", "default")))
#else
#define LIF_CLONES
#endif

namespace lif {
namespace cpu {

constexpr int64_t kMaxTile = 1024;

// Small calls run on the calling thread: below ~64K elements, waking the thread pool costs more
// than the work (parallel_for runs inline when one grain covers the whole range).
inline int64_t grain_size(int64_t items, int64_t elements) {
  return elements < (int64_t(1) << 16) ? std::max<int64_t>(items, 1) : 1;
}

// Tile width: up to max_tile neurons, narrowed (down to 64) until there are a few tiles per
// thread. Results never depend on it: neurons are independent and every parameter gradient is
// reduced per (batch row, neuron) first.
inline int64_t choose_tile(int64_t B, int64_t N, int64_t max_tile) {
  int64_t tile = std::min<int64_t>(max_tile, ((N + 15) / 16) * 16);
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  while (tile > 64 && B * ((N + tile - 1) / tile) < want) tile /= 2;
  return tile;
}

// Every (batch row b, neurons [n0, n0 + len)) tile of a (B, N) call, in parallel: fn(b, n0, len).
// `work` (B*T*N) decides whether the call is worth the thread pool.
template <typename F>
void for_each_tile(int64_t B, int64_t N, int64_t tile, int64_t work, const F& fn) {
  const int64_t ntiles = (N + tile - 1) / tile;
  at::parallel_for(0, B * ntiles, grain_size(B * ntiles, work), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n0 = (i % ntiles) * tile;
      fn(i / ntiles, n0, std::min(tile, N - n0));
    }
  });
}

// Streaming (non-temporal) stores for a call's large outputs: written once, read much later (the
// backward's saved u) or by another op, they would only push the tile's rows out of the caches,
// and each store would first read its line from memory. Only where what the call moves (its input
// read, its outputs written) is larger than a last-level cache, float, and every row starts on a
// cache line.
constexpr int64_t kStreamMinBytes = int64_t(32) << 20;
constexpr int64_t kLineBytes = 64;

template <typename T>
constexpr bool can_stream() {
#if defined(__x86_64__)
  return std::is_same_v<T, float>;
#else
  return false;
#endif
}

// Whether a tile's (B,T,N) output rows (from `p`, `stride_t` elements apart) can be streamed.
template <typename T>
bool stream_rows(const T* p, int64_t stride_t) {
  return can_stream<T>() && reinterpret_cast<uintptr_t>(p) % kLineBytes == 0 &&
         (stride_t * static_cast<int64_t>(sizeof(T))) % kLineBytes == 0;
}

// One cache line from `src` to `dst` (both line-aligned) with non-temporal stores. SSE's stores
// (every x86-64 CPU has them): the write-combining buffers merge them into whole lines anyway.
template <typename T>
inline void stream_line(T* dst, const T* src) {
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>) {
    for (int k = 0; k < 16; k += 4) _mm_stream_ps(dst + k, _mm_load_ps(src + k));
    return;
  }
#endif
  std::copy(src, src + kLineBytes / sizeof(T), dst);
}

// Orders a tile's streaming stores before whatever reads them next.
inline void stream_fence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

// The tile's row of a per-neuron parameter: the row itself, or a broadcast value spread into `buf`
// (len <= the tile width), so the inner loops always read a contiguous row.
template <typename T>
const T* param_row(PerNeuron<T> p, int64_t n0, int64_t len, T* buf) {
  if (p.stride == 1) return p.data + n0;
  std::fill(buf, buf + len, p.data[0]);
  return buf;
}

// The same for a per-synapse parameter: len * S values from neuron n0 on.
template <typename T>
const T* param_row(PerSynapse<T> p, int64_t n0, int64_t len, int64_t S, T* buf) {
  if (p.stride_n == S && p.stride_k == 1) return p.data + n0 * S;
  for (int64_t n = 0; n < len; ++n)
    for (int64_t k = 0; k < S; ++k) buf[n * S + k] = p(n0 + n, k);
  return buf;
}

// A backward tile's per-neuron constants (NeuronConsts, core/surrogate.h), computed once per tile
// and held as separate rows, so that the loops over the neurons stay vectorised.
template <typename T, int64_t kRows>
struct ConstRows {
  const T* alpha;
  const T* thr;
  T window, max_spikes;
  T inv_thr[kRows], inv_thr2[kRows], pwl_lo[kRows];

  ConstRows(const T* alpha_row, const T* thr_row, T window_, T max_spikes_, int64_t len)
      : alpha(alpha_row), thr(thr_row), window(window_), max_spikes(max_spikes_) {
    for (int64_t n = 0; n < len; ++n) {
      const NeuronConsts<T> c = neuron_consts(alpha[n], thr[n], window, max_spikes);
      inv_thr[n] = c.inv_thr;
      inv_thr2[n] = c.inv_thr2;
      pwl_lo[n] = c.pwl_lo;
    }
  }

  LIF_HD NeuronConsts<T> operator()(int64_t n) const {
    NeuronConsts<T> c;
    c.alpha = alpha[n];
    c.thr = thr[n];
    c.inv_thr = inv_thr[n];
    c.inv_thr2 = inv_thr2[n];
    c.pwl_lo = pwl_lo[n];
    c.window = window;
    c.max_spikes = max_spikes;
    return c;
  }
};

// The CPU as the ops' device (HostDevice, host/prepare.h): the parameter-gradient sums
// (core/grad_sums.h), pass 1 parallel over the values, pass 2 over the outputs; the order of
// additions inside each is fixed, so threads change no bit. Each model adds its kernels.
struct CpuDevice : HostDevice {
  template <typename T>
  static void grad_sums(const std::vector<GradSum<T>>& sums, int64_t B) {
    // Pass 1 of every parameter in one parallel region: chunk [begin, end) of the largest count
    // takes the same fraction of each parameter's values (any partition gives the same bits).
    int64_t most = 0;
    for (const GradSum<T>& s : sums) most = std::max(most, s.count);
    at::parallel_for(0, most, grain_size(most, B * most), [&](int64_t begin, int64_t end) {
      for (const GradSum<T>& s : sums) {
        grad_sum_batch_rows(s, B, begin * s.count / most, end * s.count / most);
      }
    });
    for (const GradSum<T>& s : sums) {
      for (int64_t k = 0; k < grad_sum_outputs(s); ++k) grad_sum_neurons(s, k);
    }
  }
};

}  // namespace cpu
}  // namespace lif
