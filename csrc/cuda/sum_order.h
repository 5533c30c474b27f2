// Which of torch's CUDA sum orders (core/torch_sum.h) the running torch uses, measured once per
// device: torch's warp order has changed between releases, and the synapse sum must keep
// Rockpool's bits (SPEC §7) whichever torch is installed. nvcc only.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/sum.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAMacros.h>
#include <c10/util/Exception.h>

#include <array>
#include <atomic>
#include <vector>

#include "../core/torch_sum.h"

namespace lif {
namespace gpu {

// torch.sum over the probe rows on `device`, compared row by row with both emulations: the
// order that matches every row. A host read, so never under CUDA graph capture.
inline int probe_sum_order(c10::DeviceIndex device) {
  TORCH_CHECK(c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None,
              "lif_cuda: the synaptic op measures torch.sum's order on cuda:", int(device),
              " once, with a host read, which CUDA graph capture forbids: run one call on that "
              "device before capturing (torch.cuda.graph's warm-up does)");
  const c10::InferenceMode no_autograd;
  bool down = true, up = true;
  for (int p = 0; p < kSumProbeShapes; ++p) {
    const SumProbeShape shape = sum_probe_shape(p);
    std::vector<float> x(static_cast<size_t>(shape.outputs * shape.S));
    for (size_t k = 0; k < x.size(); ++k) x[k] = sum_probe_value<float>(static_cast<int64_t>(k));
    const at::Tensor got = at::from_blob(x.data(), {shape.outputs, shape.S}, at::kFloat)
                               .to(c10::Device(c10::DeviceType::CUDA, device))
                               .sum(-1)
                               .cpu();
    const float* g = got.const_data_ptr<float>();
    for (int64_t r = 0; r < shape.outputs; ++r) {
      const float* row = x.data() + r * shape.S;
      down = down && g[r] == cuda_torch_sum<true>(row, shape.S, shape.outputs);
      up = up && g[r] == cuda_torch_sum<false>(row, shape.S, shape.outputs);
    }
  }
  if (down) return kCudaSumDown;
  if (up) return kCudaSumUp;
  TORCH_WARN_ONCE("lif_cuda: torch.sum on cuda:", int(device),
                  " adds in neither known order (core/torch_sum.h); synaptic sums over S >= 3 "
                  "synapses may differ from torch.sum in the last bit");
  return kCudaSumDown;
}

// The probe's answer for `device`, measured on first use.
inline int cuda_sum_order(c10::DeviceIndex device) {
  static std::array<std::atomic<int>, C10_COMPILE_TIME_MAX_GPUS> orders{};  // 0: not yet measured
  TORCH_CHECK(device >= 0 && device < C10_COMPILE_TIME_MAX_GPUS, "lif_cuda: device ", int(device));
  std::atomic<int>& order = orders[static_cast<size_t>(device)];
  int o = order.load(std::memory_order_acquire);
  if (o == 0) {
    o = probe_sum_order(device);
    order.store(o, std::memory_order_release);
  }
  return o;
}

}  // namespace gpu
}  // namespace lif
