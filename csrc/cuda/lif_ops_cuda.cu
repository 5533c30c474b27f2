// CUDA implementations of the lif_cuda ops: lif_op_glue.h prepares tensors and arguments exactly as
// for the CPU (same checks, same empty-shape rules), under a guard for the input's device; the
// kernels of lif_kernel_cuda.cu are launched on the current stream.
//
// Only c10/cuda and ATen core headers, and the CUDA generator's: no ATen/cuda/CUDAContext.h (it
// needs cuBLAS headers).
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <mutex>

#include "../lif_op_glue.h"
#include "lif_cuda.h"

namespace lif {
namespace {

// In-kernel noise under CUDA graph capture (torch.cuda.graph, torch.compile's "reduce-overhead"):
// a key drawn on the host at capture time would be baked into the graph, and every replay would
// add the same noise. So, as torch's own Philox kernels (dropout) do, the captured kernel reads its
// key on the device from the CUDA generator's graph-safe state, which each replay advances: fresh
// noise per replay, and torch.manual_seed(s) before the replays reproduces them. The stream is
// then (seed, offset / 4) of the CUDA generator, not the CPU generator's draw of an eager call.
// Outside capture nothing changes: one stream on CPU and CUDA under one seed.
bool kernel_noise_keyed_on_device(const std::optional<Tensor>& noise,
                                  const std::optional<Tensor>& noise_key, double noise_scale) {
  if (noise.has_value() || noise_key.has_value() || !(noise_scale > 0.0)) return false;
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
}

// The captured call's key: the generator's state, advanced by the 32-bit words the call spends per
// subsequence (ceil(T/4) blocks of 4), as ForwardArgs::key_seed describes.
void key_from_cuda_generator(ForwardOp& op, c10::DeviceIndex device) {
  auto* gen = at::cuda::detail::getDefaultCUDAGenerator(device).get<at::CUDAGeneratorImpl>();
  at::PhiloxCudaState state;
  {
    const std::lock_guard<std::mutex> lock(gen->mutex_);
    state = gen->philox_cuda_state(4 * static_cast<uint64_t>((op.T + 3) / 4));
  }
  TORCH_INTERNAL_ASSERT(state.captured_, "lif_cuda: expected a captured Philox state");
  op.key_seed = state.seed_.ptr;
  op.key_offset = state.offset_.ptr;
  op.key_offset_intragraph = state.offset_intragraph_;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lif_forward_cuda(
    const Tensor& input, const Tensor& v0, const Tensor& tau_mem, const Tensor& threshold,
    const Tensor& bias, const std::optional<Tensor>& noise, const std::optional<Tensor>& noise_key,
    double dt, double noise_scale, double window, double max_spikes, int64_t /*surrogate*/,
    bool record, bool save_u, const std::optional<Tensor>& lengths) {
  const c10::cuda::CUDAGuard device_guard(input.device());
  const bool device_key = kernel_noise_keyed_on_device(noise, noise_key, noise_scale);
  ForwardOp op =
      prepare_forward(input, v0, tau_mem, threshold, bias, noise, noise_key, dt, noise_scale,
                      window, max_spikes, record, save_u, lengths, !device_key);
  if (device_key && op.run) key_from_cuda_generator(op, input.device().index());
  if (op.run) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(input.device().index()).stream();
    LIF_DISPATCH_IO(op.x.scalar_type(), "lif_forward_cuda",
                    [&] { gpu::forward(op.args<IT, CT>(), stream); });
  }
  return op.outputs();
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lif_backward_cuda(
    const Tensor& grad_spikes, const std::optional<Tensor>& grad_vmem,
    const std::optional<Tensor>& grad_vfinal, const Tensor& u, const Tensor& v0,
    const Tensor& tau_mem, const Tensor& threshold, double dt, double window, double max_spikes,
    int64_t surrogate, bool scalar_bias, const std::optional<Tensor>& lengths) {
  const c10::cuda::CUDAGuard device_guard(u.device());
  // grad_spikes is read with its strides where a row is contiguous or broadcast (stride 0: the
  // expanded ones of `spikes.sum()` cost no (B,T,N) copy); anything else is copied first.
  const BackwardOp op =
      prepare_backward(grad_spikes, grad_vmem, grad_vfinal, u, v0, tau_mem, threshold, dt, window,
                       max_spikes, surrogate, scalar_bias, lengths);
  if (op.run) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(u.device().index()).stream();
    LIF_DISPATCH_IO(op.gs.scalar_type(), "lif_backward_cuda",
                    [&] { gpu::backward(op.args<IT, CT>(), stream); });
  }
  return op.outputs();
}

}  // namespace
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CUDA, m) {
  m.impl("lif_forward", &lif::lif_forward_cuda);
  m.impl("lif_backward", &lif::lif_backward_cuda);
}
