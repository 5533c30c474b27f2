// Fused LIF kernels for CUDA: forward over the whole time loop and the hand-written BPTT backward
// (SPEC §1, §3). One thread per (batch row b, neuron n), the time loop inside the thread
// (lif_neuron_loop.h). Consecutive threads are consecutive neurons of one row, so in the native
// (B,T,N) layout every load and store of a warp is one contiguous run. Indices are 64-bit.
//
// The per-element math is lif_core.h's, nothing else. Bit-exactness with the reference needs this
// file compiled without --use_fast_math and with -fmad=false (setup.py), so that no multiply-add is
// contracted and the division stays IEEE.
//
// Parameter gradients: each thread writes its row's partial sums; a second kernel adds them over
// the batch in the fixed order b = 0..B-1 (no atomics), so the bits do not depend on the launch
// shape and equal the CPU kernel's.

#include "lif_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <type_traits>

#include "lif_neuron_loop.h"

namespace lif {
namespace gpu {
namespace {

constexpr int kBlock = 128;

// Calls f with a compile-time copy of a runtime value (std::integral_constant), so the hot loop
// never branches on it.
template <typename F>
void bool_switch(bool flag, F&& f) {
  if (flag) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

template <typename F>
void noise_switch(int mode, F&& f) {
  if (mode == kNoiseKernel) {
    f(std::integral_constant<int, kNoiseKernel>{});
  } else if (mode == kNoiseTensor) {
    f(std::integral_constant<int, kNoiseTensor>{});
  } else {
    f(std::integral_constant<int, kNoNoise>{});
  }
}

unsigned int blocks_for(int64_t threads) {
  const int64_t blocks = (threads + kBlock - 1) / kBlock;
  TORCH_CHECK(blocks <= 0x7fffffff, "lif_cuda: ", threads,
              " (batch row, neuron) pairs exceed one CUDA grid");
  return static_cast<unsigned int>(blocks);
}

template <typename IT, typename T, int NOISE, bool SAVE_U, bool RECORD>
__global__ void __launch_bounds__(kBlock) forward_kernel(const ForwardArgs<IT, T> a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;  // b * N + n
  if (idx >= a.B * a.N) return;
  const int64_t b = idx / a.N;
  const int64_t n = idx - b * a.N;
  const int64_t row = b * a.Tn * a.N + n;  // (b, t=0, n)
  const NoiseKey<T> key{a.seed, a.offset, static_cast<T>(a.noise_scale),
                        static_cast<uint64_t>(row)};
  a.v_final[idx] = forward_neuron<IT, T, NOISE, SAVE_U, RECORD>(
      a.x + row, NOISE == kNoiseTensor ? a.noise + row : nullptr, key, a.v0[idx], a.alpha[n],
      a.thr[n], a.bias[n], static_cast<T>(a.max_spikes), a.s_out + row,
      SAVE_U ? a.u_out + row : nullptr, RECORD ? a.w_rec + row : nullptr, a.Tn, a.N);
}

template <typename IT, typename T, int SURR, bool HAS_GW>
__global__ void __launch_bounds__(kBlock) backward_kernel(const BackwardArgs<IT, T> a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;  // b * N + n
  const int64_t BN = a.B * a.N;
  if (idx >= BN) return;
  const int64_t b = idx / a.N;
  const int64_t n = idx - b * a.N;
  const int64_t row = b * a.Tn * a.N + n;
  const NeuronGrads<T> g = backward_neuron<IT, T, SURR, HAS_GW>(
      a.gs + row, HAS_GW ? a.gw + row : nullptr, a.gvf ? a.gvf[idx] : T(0), a.u + row, a.v0[idx],
      a.alpha[n], a.thr[n], static_cast<T>(a.window), static_cast<T>(a.max_spikes), a.g_in + row,
      a.Tn, a.N);
  a.g_v0[idx] = g.v0;
  a.partial[idx] = g.alpha;
  a.partial[BN + idx] = g.thr;
  a.partial[2 * BN + idx] = g.bias;
}

// out_j[n] = sum over b = 0..B-1, in that order, of partial[(j * B + b) * N + n], for the three
// parameter gradients j = alpha, thr, bias: the CPU kernel's order, so the same bits.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    reduce_over_batch_kernel(const T* __restrict__ partial, T* __restrict__ g_alpha,
                             T* __restrict__ g_thr, T* __restrict__ g_bias, int64_t B, int64_t N) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;  // j * N + n
  if (idx >= 3 * N) return;
  const int64_t j = idx / N;
  const int64_t n = idx - j * N;
  const T* __restrict__ p = partial + j * B * N + n;
  T sum = T(0);
  for (int64_t b = 0; b < B; ++b) sum += p[b * N];
  T* out = j == 0 ? g_alpha : (j == 1 ? g_thr : g_bias);
  out[n] = sum;
}

}  // namespace

template <typename IT, typename T>
void forward(const ForwardArgs<IT, T>& a, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(a.B * a.N);
  const int mode = a.noise ? kNoiseTensor : (a.kernel_noise ? kNoiseKernel : kNoNoise);
  noise_switch(mode, [&](auto noise) {
    bool_switch(a.u_out != nullptr, [&](auto save_u) {
      bool_switch(a.w_rec != nullptr, [&](auto record) {
        forward_kernel<IT, T, decltype(noise)::value, decltype(save_u)::value,
                       decltype(record)::value><<<blocks, kBlock, 0, stream>>>(a);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
}

template <typename IT, typename T>
void backward(const BackwardArgs<IT, T>& a, cudaStream_t stream) {
  const unsigned int blocks = blocks_for(a.B * a.N);
  bool_switch(a.surrogate == kPeriodicExponential, [&](auto pexp) {
    bool_switch(a.gw != nullptr, [&](auto has_gw) {
      constexpr int kSurr = decltype(pexp)::value ? kPeriodicExponential : kStepPWL;
      backward_kernel<IT, T, kSurr, decltype(has_gw)::value><<<blocks, kBlock, 0, stream>>>(a);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  reduce_over_batch_kernel<T><<<blocks_for(3 * a.N), kBlock, 0, stream>>>(
      a.partial, a.g_alpha, a.g_thr, a.g_bias, a.B, a.N);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define LIF_INSTANTIATE(IT, T)                                                 \
  template void forward<IT, T>(const ForwardArgs<IT, T>&, cudaStream_t);   \
  template void backward<IT, T>(const BackwardArgs<IT, T>&, cudaStream_t);
LIF_INSTANTIATE(float, float)
LIF_INSTANTIATE(double, double)
LIF_INSTANTIATE(c10::Half, float)
LIF_INSTANTIATE(c10::BFloat16, float)
#undef LIF_INSTANTIATE

}  // namespace gpu
}  // namespace lif
