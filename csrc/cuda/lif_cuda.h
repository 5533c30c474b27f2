// Raw-pointer interface of the CUDA kernels (lif_kernel_cuda.cu), called by lif_ops_cuda.cu. All
// tensors are contiguous and on the current device: (B,T,N) sequences, (B,N) per-row state, (N,)
// parameters. The launches go on `stream` and are checked.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace lif {
namespace gpu {

template <typename T>
struct ForwardArgs {
  const T* x;        // (B,T,N) input current
  const T* noise;    // (B,T,N) or nullptr
  const T* v0;       // (B,N) initial membrane
  const T* alpha;    // (N,) decay exp(-dt/tau)
  const T* thr;      // (N,)
  const T* bias;     // (N,)
  T max_spikes;
  T* s_out;          // (B,T,N) spikes
  T* w_rec;          // (B,T,N) recorded post-reset membrane, or nullptr
  T* u_out;          // (B,T,N) pre-spike membrane saved for backward, or nullptr
  T* v_final;        // (B,N) final state
  int64_t B, Tn, N;  // all > 0
};

template <typename T>
struct BackwardArgs {
  const T* gs;       // (B,T,N) upstream gradient on spikes
  const T* gw;       // (B,T,N) upstream gradient on recorded membrane, or nullptr
  const T* gvf;      // (B,N) upstream gradient on the final state, or nullptr
  const T* u;        // (B,T,N) saved pre-spike membrane
  const T* v0;       // (B,N)
  const T* alpha;    // (N,)
  const T* thr;      // (N,)
  T window, max_spikes;
  int surrogate;     // lif::Surrogate
  T* g_in;           // (B,T,N)
  T* g_v0;           // (B,N)
  T* partial;        // (3,B,N) scratch: per-row alpha, thr, bias gradients
  T* g_alpha, *g_thr, *g_bias;  // (N,) sums of the partials over the batch, in batch order
  int64_t B, Tn, N;  // all > 0
};

template <typename T>
void forward(const ForwardArgs<T>& a, cudaStream_t stream);
template <typename T>
void backward(const BackwardArgs<T>& a, cudaStream_t stream);

}  // namespace gpu
}  // namespace lif
