// Raw-pointer interface of the CUDA kernels (lif_kernel_cuda.cu), called by lif_ops_cuda.cu. All
// tensors are contiguous and on the current device: (B,T,N) sequences, (B,N) per-row state, (N,)
// parameters. IT is the input/spike/grad-input type (float, double, c10::Half, c10::BFloat16); T the
// compute and state type (float for the half types). The launches go on `stream` and are checked.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace lif {
namespace gpu {

template <typename IT, typename T>
struct ForwardArgs {
  const IT* x;        // (B,T,N) input current
  const T* noise;     // (B,T,N) noise tensor, or nullptr
  bool kernel_noise;  // draw the noise in the kernel (SPEC §4); only without a noise tensor
  uint64_t seed, offset;  // Philox key (kernel_noise)
  double noise_scale;     // noise_std * sqrt(dt) (kernel_noise)
  const T* v0;        // (B,N) initial membrane
  const T* alpha;     // (N,) decay exp(-dt/tau)
  const T* thr;       // (N,)
  const T* bias;      // (N,)
  double max_spikes;
  IT* s_out;          // (B,T,N) spikes
  T* w_rec;           // (B,T,N) recorded post-reset membrane, or nullptr
  T* u_out;           // (B,T,N) pre-spike membrane saved for backward, or nullptr
  T* v_final;         // (B,N) final state
  int64_t B, Tn, N;   // all > 0
};

template <typename IT, typename T>
struct BackwardArgs {
  const IT* gs;       // (B,T,N) upstream gradient on spikes
  const T* gw;        // (B,T,N) upstream gradient on recorded membrane, or nullptr
  const T* gvf;       // (B,N) upstream gradient on the final state, or nullptr
  const T* u;         // (B,T,N) saved pre-spike membrane
  const T* v0;        // (B,N)
  const T* alpha;     // (N,)
  const T* thr;       // (N,)
  double window, max_spikes;
  int surrogate;      // lif::Surrogate
  IT* g_in;           // (B,T,N)
  T* g_v0;            // (B,N)
  T* partial;         // (3,B,N) scratch: per-row alpha, thr, bias gradients
  T* g_alpha, *g_thr, *g_bias;  // (N,) sums of the partials over the batch, in batch order
  int64_t B, Tn, N;   // all > 0
};

template <typename IT, typename T>
void forward(const ForwardArgs<IT, T>& a, cudaStream_t stream);
template <typename IT, typename T>
void backward(const BackwardArgs<IT, T>& a, cudaStream_t stream);

}  // namespace gpu
}  // namespace lif
