// torch.sum's order of additions over one contiguous row, emulated on scalars (SPEC §7: the
// synapse sum must have Rockpool's bits).
#pragma once

#include "hd.h"

namespace lif {

// sum_k i[k], k = 0..S-1, in the order in which torch.sum(dim=-1) adds one contiguous row of S
// values, so that u has Rockpool's bits. The orders are written from ATen's source (torch 2.13) and
// pinned by the host tests against torch.sum on the CPU and against an emulation of the CUDA reduce
// written from Reduce.cuh; a GPU run (tests/test_cuda.py) checks them against torch.sum on CUDA.
//
// On the CPU: ATen's cascade_sum (aten/src/ATen/native/cpu/SumKernel.cpp), whose build for 32-byte
// vectors runs on every x86 CPU (the sum kernels are not dispatched to AVX-512): W = 32 /
// sizeof(T) lanes (8 floats, 4 doubles). A row shorter than W is read as rows of 4 columns, 4
// running sums (one per column), the leftover values added to the first, then the 4 sums added in
// column order. A row of W or more is the same over W-lane vectors (nv = S / W of them), the
// values past the last whole vector summed first, then the W lanes of the vector sum in order.
// Runs of 16 rows are folded into up to 4 levels of partial sums (the cascade), which matters
// from S = 64 W on. Every sum starts from +0 and the result is added to a +0 output.

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

// torch.sum of a contiguous row on CUDA: ATen's gpu reduce (aten/src/ATen/native/cuda/Reduce.cuh)
// for a contiguous inner row of S < 128 values among `outputs` rows (Rockpool's isyn.sum(2):
// outputs = B * N). At S >= 128 torch vectorises the loads (dim0 >= 128 in setReduceConfig): the
// sum is then still a correct sum, its last bit may differ.
//
// - P lanes (threads in x): ReduceConfig::set_block_dimension with 512 threads, i.e. the largest
//   power of 2 <= S capped at 32, unless fewer than 16 rows leave room for up to 512 / rows.
// - Lane l reads elements l, l + P, l + 2P, ... into 4 accumulators in turn (thread_reduce_impl,
//   vt0 = 4), each starting from +0, added ((a0 + a1) + a2) + a3.
// - block_x_reduce: lanes beyond 32 are folded through shared memory, offsets P/2, P/4, ..., 32;
//   then the warp shuffles, offsets decreasing (16, 8, ..., 1: torch 2.13 on CUDA,
//   kCudaSumDown) or increasing (1, 2, ..., 16: earlier releases and ROCm, kCudaSumUp).
// Which warp order the running torch uses is measured once per device (the CUDA ops' probe,
// cuda/sum_order.h, with sum_probe_* below) rather than assumed.
LIF_HD int cuda_sum_lanes(int64_t S, int64_t outputs) {
  constexpr int kThreads = 512, kWarp = 32;
  const auto last_pow2 = [](int64_t v) {
    int p = 1;
    while (int64_t(p) * 2 <= v && p < kThreads) p *= 2;
    return p;
  };
  const int s2 = S < kThreads ? last_pow2(S) : kThreads;
  const int o2 = outputs < kThreads ? last_pow2(outputs) : kThreads;
  const int width = s2 < kWarp ? s2 : kWarp;
  const int height = o2 < kThreads / width ? o2 : kThreads / width;
  return s2 < kThreads / height ? s2 : kThreads / height;
}

// One lane's value: elements l, l + P, ... into 4 accumulators in turn.
template <typename T, typename X>
LIF_HD T cuda_lane_sum(const X& x, int64_t S, int P, int l) {
  T acc[4] = {T(0), T(0), T(0), T(0)};
  int j = 0;
  for (int64_t idx = l; idx < S; idx += P, ++j) acc[j & 3] = acc[j & 3] + x[idx];
  return ((acc[0] + acc[1]) + acc[2]) + acc[3];
}

// Any S >= 0; X: a pointer, or a view with operator[] (AhpLanes below).
template <bool WARP_DOWN, typename T, typename X>
LIF_HD T cuda_lanes_sum(const X& x, int64_t S, int64_t outputs) {
  if (S <= 0) return T(0);
  const int P = cuda_sum_lanes(S, outputs);
  const int W = P < 32 ? P : 32;
  T lane[32];
  for (int l = 0; l < W; ++l) {
    if (P <= 32) {
      lane[l] = cuda_lane_sum<T>(x, S, P, l);
    } else {
      // Shared-memory stage: lane l gathers lanes l + 32 j, offsets P/2 .. 32 (j: J/2 .. 1).
      T part[16];
      const int J = P / 32;
      for (int j = 0; j < J; ++j) part[j] = cuda_lane_sum<T>(x, S, P, l + 32 * j);
      for (int off = J / 2; off > 0; off >>= 1)
        for (int j = 0; j < off; ++j) part[j] = part[j] + part[j + off];
      lane[l] = part[0];
    }
  }
  if (WARP_DOWN) {
    for (int off = W / 2; off > 0; off >>= 1)
      for (int l = 0; l < off; ++l) lane[l] = lane[l] + lane[l + off];
  } else {
    for (int off = 1; off < W; off <<= 1)
      for (int l = 0; l + off < W; ++l) lane[l] = lane[l] + lane[l + off];
  }
  return lane[0];
}

template <typename T>
LIF_HD T cpu_torch_sum(const T* x, int64_t S) {
  return cpu_lanes_sum<T>(x, S);
}
template <bool WARP_DOWN, typename T>
LIF_HD T cuda_torch_sum(const T* x, int64_t S, int64_t outputs) {
  return cuda_lanes_sum<WARP_DOWN, T>(x, S, outputs);
}

// The synapse sums' orders: the CPU's, and CUDA's two warp orders.
enum SumOrder : int { kCpuSum = 0, kCudaSumDown = 1, kCudaSumUp = 2 };

// The device probe: rows (outputs, S) whose sums differ between the two CUDA orders, each tried on
// the device with torch.sum and compared with both emulations. Values of many magnitudes and both
// signs, so that the orders round differently (the host tests check that they do).
struct SumProbeShape {
  int64_t outputs, S;
};
constexpr int kSumProbeShapes = 5;
LIF_HD SumProbeShape sum_probe_shape(int i) {
  const SumProbeShape shapes[kSumProbeShapes] = {{1, 4}, {1, 8}, {21, 32}, {21, 40}, {1, 100}};
  return shapes[i];
}
template <typename T>
LIF_HD T sum_probe_value(int64_t k) {
  if (k < 4)
    return k == 0 ? T(1) : (k == 2 ? T(-1) : T(1.0f / 16777216.0f));  // 1, 2^-24, -1, 2^-24
  // A full 24-bit mantissa in [1, 2), a sign, and a scale 2^e, e in [-6, 6].
  const int64_t bits = (k * 2654435761) & 0xffffff;
  T v = T(1) + static_cast<T>(bits) * static_cast<T>(1.0f / 16777216.0f);
  if ((k * 7) % 3 == 0) v = -v;
  const int e = static_cast<int>((k * 5) % 13) - 6;
  for (int i = 0; i < e; ++i) v = v * T(2);
  for (int i = 0; i > e; --i) v = v * T(0.5f);
  return v;
}

// The same sums for small S known at compile time, without the additions of +0 the general code
// makes: those change at most the sign of a zero, which the final +0 then makes +0 as torch's is.
// SUM_ORDER selects the order; S_FIXED == 0 means S is only known at run time; `outputs` (rows
// summed together, B * N) matters to the CUDA orders only.
template <int SUM_ORDER, int S_FIXED, typename T>
LIF_HD T synaptic_sum(const T* i, int64_t S, int64_t outputs) {
  if constexpr (S_FIXED == 1) {
    return T(0) + i[0];
  } else if constexpr (S_FIXED == 2) {
    return T(0) + (i[0] + i[1]);
  } else if constexpr (S_FIXED == 4 && SUM_ORDER == kCpuSum) {
    return T(0) + (((i[0] + i[1]) + i[2]) + i[3]);
  } else if constexpr (S_FIXED == 4 && SUM_ORDER == kCudaSumDown) {
    return T(0) + ((i[0] + i[2]) + (i[1] + i[3]));
  } else if constexpr (S_FIXED == 4 && SUM_ORDER == kCudaSumUp) {
    return T(0) + ((i[0] + i[1]) + (i[2] + i[3]));
  } else if constexpr (SUM_ORDER == kCpuSum) {
    return cpu_torch_sum<T>(i, S_FIXED ? S_FIXED : S);
  } else {
    return cuda_torch_sum<SUM_ORDER == kCudaSumDown, T>(i, S_FIXED ? S_FIXED : S, outputs);
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

// sum over [i[0..S-1], h] in torch.sum's order for S + 1 values (as synaptic_sum for S values;
// `outputs` as there).
template <int SUM_ORDER, int S_FIXED, typename T>
LIF_HD T ahp_sum(const T* i, int64_t S, T h, int64_t outputs) {
  if constexpr (S_FIXED == 1) {
    return T(0) + (i[0] + h);  // two lanes: every order adds them directly
  } else if constexpr (S_FIXED == 2 && SUM_ORDER == kCpuSum) {
    return T(0) + ((i[0] + i[1]) + h);  // three lanes, one running sum
  } else if constexpr (S_FIXED == 2) {
    return T(0) + ((i[0] + h) + i[1]);  // CUDA: P = 2 lanes, {0, 2} and {1}, then one shuffle
  } else {
    const AhpLanes<T> lanes{i, S_FIXED ? S_FIXED : S, h};
    const int64_t n = (S_FIXED ? S_FIXED : S) + 1;
    if constexpr (SUM_ORDER == kCpuSum) {
      return cpu_lanes_sum<T>(lanes, n);
    } else {
      return cuda_lanes_sum<SUM_ORDER == kCudaSumDown, T>(lanes, n, outputs);
    }
  }
}

}  // namespace lif
