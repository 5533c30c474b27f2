// Deterministic parameter-gradient sums, one rule for every model (SPEC §3). A kernel sums one
// (batch row, neuron)'s gradient terms in reverse step order in the compute type T over blocks of
// at most kGradBlock steps (counted from a call's last step; a block never spans two calls), in
// registers or a tile row, so the hot loop keeps T's width; each block's sum is added to the row's
// float64 partial. Everything after is float64: over the batch in batch order (b = 0..B-1, from
// 0), then, for a parameter shared by neurons, over the neurons in index order, and a decay's
// gradient becomes its time constant's; the result is rounded to T once. A scalar parameter's
// gradient adds B*N*T terms of either sign, whose cancellation float32 running sums would show
// beyond SPEC §3's tolerance. No atomics, the same order on the CPU and on CUDA, so the same bits.
// The two passes below are written per value / per output, for a CPU loop or a CUDA thread each.
#pragma once

#include <cstdint>

#include "hd.h"

namespace lif {

// dL/dtau from dL/dalpha, alpha = exp(reciprocal(tau) * (-dt)) (as torch computes it): the chain
// rule in the order autograd of that expression takes, ((g * alpha) * (-dt)) * -(r * r), r = 1/tau.
template <typename T>
LIF_HD T tau_grad(T g_alpha, T alpha, T tau, T dt) {
  const T r = T(1) / tau;
  const T e = g_alpha * alpha;
  const T m = e * (-dt);
  return m * (-(r * r));
}

constexpr int64_t kGradBlock = 32;

// Whether reverse step t ends a block, in a call over the steps t_first..t_last.
LIF_HD bool grad_block_ends(int64_t t_last, int64_t t, int64_t t_first) {
  return t == t_first || (t_last - t) % kGradBlock == kGradBlock - 1;
}

// A block's sum into its float64 sum, and a fresh block.
template <typename T>
LIF_HD void flush_grad_block(T& block, double& sum) {
  sum += static_cast<double>(block);
  block = T(0);
}

// How a parameter's per-neuron values collapse into its shape: kept ((N,) or (N,S)), summed over
// the neurons per synapse index ((1,S)), or summed altogether (()).
enum GradCollapse : int { kKeepAll = 0, kSumNeurons = 1, kSumAll = 2 };

template <typename T>
struct GradSum {
  double* partial;  // (B, count) per-row sums, overwritten (row 0 ends as the batch sums)
  int64_t count;  // values per row: N, or N*S
  int64_t S;  // synapses per neuron (kSumNeurons: dst has S values)
  int collapse;  // GradCollapse
  T* dst;  // the gradient, in the parameter's shape
  const T* decay;  // in dst's shape: dst is the gradient of tau, decay = exp(-dt/tau); or nullptr
  const T* tau;
  double dt;
};

template <typename T>
LIF_HD T grad_sum_out(const GradSum<T>& s, double sum, int64_t i) {
  return static_cast<T>(
      s.decay ? tau_grad(sum, static_cast<double>(s.decay[i]), static_cast<double>(s.tau[i]), s.dt)
              : sum);
}

// Pass 1, value m < count: summed over the batch into row 0 (and, kept, into the output).
template <typename T>
LIF_HD void grad_sum_batch(const GradSum<T>& s, int64_t B, int64_t m) {
  double acc = 0.0 + s.partial[m];
  for (int64_t b = 1; b < B; ++b) acc += s.partial[b * s.count + m];
  s.partial[m] = acc;
  if (s.collapse == kKeepAll) s.dst[m] = grad_sum_out(s, acc, m);
}

// Pass 1 for the values [m0, m1), the batch loop outside (contiguous rows, for a CPU loop that
// vectorises): for each value the same additions in the same order as grad_sum_batch.
template <typename T>
LIF_HD void grad_sum_batch_rows(const GradSum<T>& s, int64_t B, int64_t m0, int64_t m1) {
  double* acc = s.partial;
  for (int64_t m = m0; m < m1; ++m) acc[m] = 0.0 + acc[m];
  for (int64_t b = 1; b < B; ++b) {
    const double* row = s.partial + b * s.count;
    for (int64_t m = m0; m < m1; ++m) acc[m] += row[m];
  }
  if (s.collapse == kKeepAll) {
    for (int64_t m = m0; m < m1; ++m) s.dst[m] = grad_sum_out(s, acc[m], m);
  }
}

// The outputs of pass 2: S for kSumNeurons, 1 for kSumAll, none for kKeepAll.
template <typename T>
LIF_HD int64_t grad_sum_outputs(const GradSum<T>& s) {
  return s.collapse == kKeepAll ? 0 : (s.collapse == kSumNeurons ? s.S : 1);
}

// Pass 2, output k: the batch sums of its n values (m = k + i * step, i < n) added as a fixed
// tree, the same on the CPU and CUDA (a CUDA block adds the leaves in parallel, then the levels;
// one thread adding N values would wait on N dependent loads): up to kGradTreeWidth leaves of
// grad_tree_leaf(n) consecutive values, each leaf summed in index order from 0, then the leaves
// added pairwise level by level, leaf j += leaf j + w for j a multiple of 2w, w = 1, 2, 4, ...
// Up to kGradLeaf values this is the sum in index order.
constexpr int kGradTreeWidth = 256;
constexpr int64_t kGradLeaf = 32;

template <typename T>
LIF_HD int64_t grad_tree_values(const GradSum<T>& s) {
  return s.collapse == kSumNeurons ? s.count / s.S : s.count;
}

LIF_HD int64_t grad_tree_leaf(int64_t n) {
  const int64_t per_leaf = (n + kGradTreeWidth - 1) / kGradTreeWidth;
  return per_leaf > kGradLeaf ? per_leaf : kGradLeaf;
}

LIF_HD int64_t grad_tree_leaves(int64_t n) {
  const int64_t L = grad_tree_leaf(n);
  return (n + L - 1) / L;
}

// Leaf j of output k.
template <typename T>
LIF_HD double grad_tree_leaf_sum(const GradSum<T>& s, int64_t k, int64_t j) {
  const int64_t step = s.collapse == kSumNeurons ? s.S : 1;
  const int64_t n = grad_tree_values(s), L = grad_tree_leaf(n);
  const int64_t end = (j + 1) * L < n ? (j + 1) * L : n;
  double sum = 0.0;
  for (int64_t i = j * L; i < end; ++i) sum += s.partial[k + i * step];
  return sum;
}

// The whole of pass 2 for output k in one thread (the CPU; the host tests).
template <typename T>
LIF_HD void grad_sum_neurons(const GradSum<T>& s, int64_t k) {
  const int64_t leaves = grad_tree_leaves(grad_tree_values(s));
  double v[kGradTreeWidth];
  for (int64_t j = 0; j < leaves; ++j) v[j] = grad_tree_leaf_sum(s, k, j);
  for (int64_t w = 1; w < leaves; w *= 2)
    for (int64_t j = 0; j + w < leaves; j += 2 * w) v[j] += v[j + w];
  s.dst[k] = grad_sum_out(s, leaves > 0 ? v[0] : 0.0, k);
}

// ---------------------------------------------------------------- the sums inside a kernel
// A CUDA backward kernel runs the two passes itself once its threads (idx = b * N + n) have stored
// their rows' partials, deterministically: the neurons fall into tiles of kGradTile; a block whose
// threads are done counts them into their tiles (one counter per tile, atomic); the block that
// completes a tile runs pass 1 for that tile's values, the block that completes the last tile pass
// 2. Which block adds changes no addition's order: the bits are those of pass 1 then pass 2.
constexpr int64_t kGradTile = 128;

// Parameter-gradient sums handed to a kernel, with the counters: `arrivals` (grad_tiles(N) + 1,
// zero when the kernel starts): the threads counted per tile, then the tiles completed.
constexpr int kMaxKernelSums = 6;

template <typename T>
struct KernelGradSums {
  GradSum<T> sums[kMaxKernelSums];
  int count;  // 0: the kernel sums nothing
  unsigned long long* arrivals;
  int64_t B, N;
};

LIF_HD int64_t grad_tiles(int64_t N) { return (N + kGradTile - 1) / kGradTile; }

// The threads of tile j: its neurons' rows b = 0..B-1.
LIF_HD int64_t grad_tile_threads(int64_t B, int64_t N, int64_t j) {
  const int64_t end = (j + 1) * kGradTile < N ? (j + 1) * kGradTile : N;
  return B * (end - j * kGradTile);
}

// A block's arrival: its threads [lo, hi) (at most kGradTile) counted into their tiles' counters,
// a run of one row and one tile at a time, by add(counter, n), which returns the counter's value
// before; the tiles this completes go to done[0..3] (a range spans at most two rows of at most two
// tiles each, or one tile where N <= kGradTile), their number is returned. A tile is completed by
// the one add that brings its counter to its thread count.
template <typename Add>
LIF_HD int grad_tiles_completed(int64_t lo, int64_t hi, int64_t B, int64_t N, const Add& add,
                                int64_t* done) {
  int d = 0;
  if (N <= kGradTile) {
    if (hi > lo && add(0, hi - lo) + (hi - lo) == B * N) done[d++] = 0;
    return d;
  }
  for (int64_t i = lo; i < hi;) {
    const int64_t n = i % N, j = n / kGradTile;
    const int64_t tile_end = (j + 1) * kGradTile < N ? (j + 1) * kGradTile : N;
    const int64_t len = tile_end - n < hi - i ? tile_end - n : hi - i;
    if (add(j, len) + len == grad_tile_threads(B, N, j)) done[d++] = j;
    i += len;
  }
  return d;
}

// Pass 1 for tile j's values (count / N per neuron), by worker `worker` of `workers`.
template <typename T>
LIF_HD void grad_sum_batch_tile(const GradSum<T>& s, int64_t B, int64_t N, int64_t j,
                                int64_t worker, int64_t workers) {
  const int64_t per = s.count / N;
  const int64_t end = ((j + 1) * kGradTile < N ? (j + 1) * kGradTile : N) * per;
  for (int64_t m = j * kGradTile * per + worker; m < end; m += workers) grad_sum_batch(s, B, m);
}

}  // namespace lif
