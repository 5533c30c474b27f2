// The ops that keep SpikeLinear's input for its backward as bits or bytes (SPEC §11): their
// argument checks, the error of a broken promise and the outputs, the same on every device. The
// devices' passes are cpu/counts.cpp's and cuda/counts.cu's, the per-element math core/counts.h's.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <string>

#include "../core/counts.h"
#include "checks.h"

namespace lif {

inline void check_max_count(int64_t max_count) {
  TORCH_CHECK_VALUE(max_count >= 1 && max_count <= kMaxCount,
                    "max_count must be an int in [1, 255], got ", max_count);
}

// An input value that is not an integer count in [0, max_count] (a ValueError on the CPU, a
// device-side assertion on CUDA).
inline std::string counts_promise_broken(int64_t max_count) {
  return "SpikeLinear: the input must hold spike counts in {0, ..., max_count} with max_count=" +
         std::to_string(max_count);
}

// pack_counts: the input in memory order (a copy where it is strided) and its packed bytes.
struct PackCounts {
  at::Tensor input;
  at::Tensor packed;
};

inline PackCounts prepare_pack_counts(const at::Tensor& input, int64_t max_count) {
  check_io_dtype(input, "input");
  check_max_count(max_count);
  at::Tensor x = input.contiguous();
  at::Tensor packed = at::empty({packed_bytes(x.numel(), max_count)}, x.options().dtype(at::kByte));
  return {x, packed};
}

// unpack_counts: the packed bytes of `numel` counts, and the (numel,) output of `dtype`.
inline at::Tensor prepare_unpack_counts(const at::Tensor& packed, int64_t max_count, int64_t numel,
                                        at::ScalarType dtype) {
  check_max_count(max_count);
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte, "packed must be uint8, got ",
                   packed.scalar_type());
  TORCH_CHECK_VALUE(numel >= 0 && packed.dim() == 1 && packed.is_contiguous() &&
                        packed.size(0) == packed_bytes(numel, max_count),
                    "packed must be the contiguous (", packed_bytes(numel, max_count),
                    ",) bytes of ", numel, " counts, got ", packed.sizes());
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || is_half_type(dtype),
                   "dtype must be float32, float64, float16 or bfloat16, got ", dtype);
  return at::empty({numel}, packed.options().dtype(dtype));
}

}  // namespace lif
