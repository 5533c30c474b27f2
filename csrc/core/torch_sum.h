// torch.sum's order of additions over one contiguous row, emulated on scalars (SPEC §7: the
// synapse sum must have Rockpool's bits).
#pragma once

#include "hd.h"

namespace lif {

// sum_k i[k], k = 0..S-1, in the order in which torch.sum(dim=-1) adds one contiguous row of S
// values, so that u has Rockpool's bits. Two orders, pinned by the tests against torch.sum for
// S = 1..40 and larger:
//
// On the CPU: ATen's cascade_sum (aten/src/ATen/native/cpu/SumKernel.cpp), whose build for 32-byte
// vectors runs on every x86 CPU (the sum kernels are not dispatched to AVX-512): W = 32 /
// sizeof(T) lanes (8 floats, 4 doubles). A row shorter than W is read as rows of 4 columns, 4
// running sums (one per column), the leftover values added to the first, then the 4 sums added in
// column order. A row of W or more is the same over W-lane vectors (nv = S / W of them), the
// values past the last whole vector summed first, then the W lanes of the vector sum in order.
// Runs of 16 rows are folded into up to 4 levels of partial sums (the cascade), which matters
// from S = 64 W on. Every sum starts from +0 and the result is added to a +0 output.
//
// On CUDA: ATen's gpu reduce (aten/src/ATen/native/cuda/Reduce.cuh) for a contiguous inner row
// of S <= 128 values: P = min(last_pow2(S), 32) lanes, lane l reading elements l, l+P, l+2P, ...
// into 4 accumulators in turn, added ((a0 + a1) + a2) + a3; then lane values combined by the warp
// shuffle tree, offsets 1, 2, 4, ... . Exact for S < 64 (beyond, P can exceed 32 when B*N < 16,
// and S > 128 vectorises the loads: then the sum is still a correct sum, its last bit may differ).
// Derived from the source and host-tested; not yet checked on a GPU.

// ATen's running sums over rows: `items` items of L lanes at x + item * L, read as rows of 4
// items; acc[c] (L lanes) sums column c, in levels of 16 rows (multi_row_sum), then the leftover
// items go to acc[0] and acc[0] += acc[1], acc[2], acc[3] (row_sum).
template <typename T, int L, typename X>
LIF_HD void aten_row_sum(const X& x, int64_t items, T out[L]) {
  constexpr int kLevels = 4;
  const int64_t rows = items / 4;
  // level_power = max(4, ceil(log2(rows)) / 4), as ATen's CeilLog2 (1 for rows <= 2).
  int64_t log2 = 1;
  while ((int64_t(1) << log2) < rows) ++log2;
  const int64_t power = log2 / kLevels > 4 ? log2 / kLevels : 4;
  const int64_t step = int64_t(1) << power;
  const int64_t mask = step - 1;
  T acc[kLevels][4][L];
  for (int j = 0; j < kLevels; ++j)
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < L; ++l) acc[j][c][l] = T(0);
  int64_t i = 0;
  while (i + step <= rows) {
    for (int64_t j = 0; j < step; ++j, ++i)
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < L; ++l) acc[0][c][l] = acc[0][c][l] + x[(i * 4 + c) * L + l];
    for (int j = 1; j < kLevels; ++j) {
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < L; ++l) {
          acc[j][c][l] = acc[j][c][l] + acc[j - 1][c][l];
          acc[j - 1][c][l] = T(0);
        }
      if ((i & (mask << (j * power))) != 0) break;
    }
  }
  for (; i < rows; ++i)
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < L; ++l) acc[0][c][l] = acc[0][c][l] + x[(i * 4 + c) * L + l];
  for (int j = 1; j < kLevels; ++j)
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < L; ++l) acc[0][c][l] = acc[0][c][l] + acc[j][c][l];
  for (int64_t it = rows * 4; it < items; ++it)
    for (int l = 0; l < L; ++l) acc[0][0][l] = acc[0][0][l] + x[it * L + l];
  for (int c = 1; c < 4; ++c)
    for (int l = 0; l < L; ++l) acc[0][0][l] = acc[0][0][l] + acc[0][c][l];
  for (int l = 0; l < L; ++l) out[l] = acc[0][0][l];
}

// torch.sum of a contiguous row on the CPU, any S >= 0. X: a pointer, or a view with operator[]
// (AhpLanes below).
template <typename T, typename X>
LIF_HD T cpu_lanes_sum(const X& x, int64_t S) {
  constexpr int W = 32 / static_cast<int>(sizeof(T));
  T sum;
  if (S < W) {
    T one[1];
    aten_row_sum<T, 1>(x, S, one);
    sum = one[0];
  } else {
    const int64_t nv = S / W;
    T lanes[W];
    aten_row_sum<T, W>(x, nv, lanes);
    sum = T(0);
    for (int64_t k = nv * W; k < S; ++k) sum = sum + x[k];
    for (int l = 0; l < W; ++l) sum = sum + lanes[l];
  }
  return T(0) + sum;
}

// torch.sum of a contiguous row on CUDA (see above), any S >= 0.
template <typename T, typename X>
LIF_HD T cuda_lanes_sum(const X& x, int64_t S) {
  if (S <= 0) return T(0);
  int P = 1;
  while (P * 2 <= S && P < 32) P *= 2;
  T lane[32];
  for (int l = 0; l < P; ++l) {
    T acc[4] = {T(0), T(0), T(0), T(0)};
    int j = 0;
    for (int64_t idx = l; idx < S; idx += P, ++j) acc[j & 3] = acc[j & 3] + x[idx];
    lane[l] = ((acc[0] + acc[1]) + acc[2]) + acc[3];
  }
  for (int off = 1; off < P; off <<= 1)
    for (int l = 0; l + off < P; ++l) lane[l] = lane[l] + lane[l + off];
  return lane[0];
}

template <typename T>
LIF_HD T cpu_torch_sum(const T* x, int64_t S) {
  return cpu_lanes_sum<T>(x, S);
}
template <typename T>
LIF_HD T cuda_torch_sum(const T* x, int64_t S) {
  return cuda_lanes_sum<T>(x, S);
}

// The same sums for small S known at compile time, without the additions of +0 the general code
// makes: those change at most the sign of a zero, which the final +0 then makes +0 as torch's is.
// SUM_ORDER selects the device's order; S_FIXED == 0 means S is only known at run time.
enum SumOrder : int { kCpuSum = 0, kCudaSum = 1 };

template <int SUM_ORDER, int S_FIXED, typename T>
LIF_HD T synaptic_sum(const T* i, int64_t S) {
  if constexpr (S_FIXED == 1) {
    return T(0) + i[0];
  } else if constexpr (S_FIXED == 2) {
    return T(0) + (i[0] + i[1]);
  } else if constexpr (S_FIXED == 4 && SUM_ORDER == kCpuSum) {
    return T(0) + (((i[0] + i[1]) + i[2]) + i[3]);
  } else if constexpr (S_FIXED == 4 && SUM_ORDER == kCudaSum) {
    return T(0) + ((i[0] + i[1]) + (i[2] + i[3]));
  } else if constexpr (SUM_ORDER == kCpuSum) {
    return cpu_torch_sum<T>(i, S_FIXED ? S_FIXED : S);
  } else {
    return cuda_torch_sum<T>(i, S_FIXED ? S_FIXED : S);
  }
}

// The S synapse currents and the AHP current h as one row of S + 1 lanes, [i[0..S-1], h]: what
// Rockpool's aLIFTorch sums (torch.cat((isyn, iahp), 2).sum(2), SPEC §9), read without a copy.
template <typename T>
struct AhpLanes {
  const T* i;
  int64_t S;
  T h;
  LIF_HD T operator[](int64_t k) const { return k < S ? i[k] : h; }
};

// sum over [i[0..S-1], h] in torch.sum's order for S + 1 values (as synaptic_sum for S values).
template <int SUM_ORDER, int S_FIXED, typename T>
LIF_HD T ahp_sum(const T* i, int64_t S, T h) {
  if constexpr (S_FIXED == 1) {
    return T(0) + (i[0] + h);  // two lanes: both orders add them directly
  } else if constexpr (S_FIXED == 2 && SUM_ORDER == kCpuSum) {
    return T(0) + ((i[0] + i[1]) + h);  // three lanes, one running sum
  } else if constexpr (S_FIXED == 2 && SUM_ORDER == kCudaSum) {
    return T(0) + ((i[0] + h) + i[1]);  // lanes {0, 2} and {1}, then the shuffle
  } else {
    const AhpLanes<T> lanes{i, S_FIXED ? S_FIXED : S, h};
    const int64_t n = (S_FIXED ? S_FIXED : S) + 1;
    if constexpr (SUM_ORDER == kCpuSum) {
      return cpu_lanes_sum<T>(lanes, n);
    } else {
      return cuda_lanes_sum<T>(lanes, n);
    }
  }
}

}  // namespace lif
