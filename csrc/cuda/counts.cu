// SpikeLinear's pack and unpack on CUDA (SPEC §11): one thread per element, on the current stream.
// The pack checks every value it reads (core/counts.h) and clears a device flag where one breaks
// the promise; an asynchronous assertion on that flag follows on the same stream, so a broken
// promise is a device-side error with no host sync, as torch's own index checks are.
#include <ATen/Dispatch.h>
#include <ATen/ops/_assert_async.h>
#include <ATen/ops/ones.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "../core/counts.h"
#include "../host/counts_op.h"
#include "launch.h"

namespace lif {
namespace gpu {
namespace {

constexpr int kWarp = 32;

// Element k's bit; a warp's 32 bits gathered by a ballot (full warps: kBlock is a multiple of 32
// and no thread returns early), written as 4 bytes by lanes 0, 8, 16, 24.
template <typename IT>
__global__ void __launch_bounds__(kBlock)
    pack_bits_kernel(const IT* __restrict__ x, uint8_t* __restrict__ out, int64_t n,
                     int32_t* __restrict__ ok) {
  using F = CountMath<IT>;
  const int64_t k = thread_index();
  uint32_t bad = 0;
  const uint32_t bit = k < n ? checked_count<F>(static_cast<F>(x[k]), F(1), bad) : 0u;
  const uint32_t word = __ballot_sync(0xffffffffu, bit != 0u);
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  if (lane % 8 == 0 && k < n) out[k / 8] = static_cast<uint8_t>(word >> lane);
  if (bad) *ok = 0;
}

template <typename IT>
__global__ void __launch_bounds__(kBlock)
    pack_bytes_kernel(const IT* __restrict__ x, uint8_t* __restrict__ out, int64_t n,
                      int64_t max_count, int32_t* __restrict__ ok) {
  using F = CountMath<IT>;
  const int64_t k = thread_index();
  if (k >= n) return;
  uint32_t bad = 0;
  out[k] =
      static_cast<uint8_t>(checked_count<F>(static_cast<F>(x[k]), static_cast<F>(max_count), bad));
  if (bad) *ok = 0;
}

template <typename OT>
__global__ void __launch_bounds__(kBlock)
    unpack_kernel(const uint8_t* __restrict__ packed, OT* __restrict__ out, int64_t n, bool bits) {
  const int64_t k = thread_index();
  if (k >= n) return;
  out[k] =
      bits ? unpack_bit<OT>(packed[k / 8], static_cast<int>(k % 8)) : unpack_byte<OT>(packed[k]);
}

at::Tensor pack_counts_cuda(const at::Tensor& input, int64_t max_count) {
  const c10::DeviceGuard guard(input.device());
  const PackCounts p = prepare_pack_counts(input, max_count);
  const int64_t n = p.input.numel();
  if (n == 0) return p.packed;
  at::Tensor ok = at::ones({}, p.input.options().dtype(at::kInt));
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, p.input.scalar_type(), "lif_pack_counts", [&] {
        const scalar_t* x = p.input.const_data_ptr<scalar_t>();
        uint8_t* out = p.packed.mutable_data_ptr<uint8_t>();
        int32_t* flag = ok.mutable_data_ptr<int32_t>();
        if (max_count == 1) {
          pack_bits_kernel<scalar_t><<<grid_for(n), kBlock, 0, stream>>>(x, out, n, flag);
        } else {
          pack_bytes_kernel<scalar_t>
              <<<grid_for(n), kBlock, 0, stream>>>(x, out, n, max_count, flag);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  at::_assert_async(ok, counts_promise_broken(max_count));
  return p.packed;
}

at::Tensor unpack_counts_cuda(const at::Tensor& packed, int64_t max_count, int64_t numel,
                              at::ScalarType dtype) {
  const c10::DeviceGuard guard(packed.device());
  at::Tensor out = prepare_unpack_counts(packed, max_count, numel, dtype);
  if (numel == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "lif_unpack_counts", [&] {
    unpack_kernel<scalar_t><<<grid_for(numel), kBlock, 0, current_stream()>>>(
        packed.const_data_ptr<uint8_t>(), out.mutable_data_ptr<scalar_t>(), numel, max_count == 1);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace gpu
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CUDA, m) {
  m.impl("pack_counts", &lif::gpu::pack_counts_cuda);
  m.impl("unpack_counts", &lif::gpu::unpack_counts_cuda);
}
