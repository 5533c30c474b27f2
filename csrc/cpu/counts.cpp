// SpikeLinear's pack and unpack on the CPU (SPEC §11): one pass each under at::parallel_for over
// the packed bytes; the pack checks every value it reads (core/counts.h) and raises a ValueError
// naming max_count after the pass, before anything is returned.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "../core/counts.h"
#include "../host/counts_op.h"
#include "tiles.h"

namespace lif {
namespace cpu {
namespace {

// Packed bytes per task: enough work to amortise a task, small enough to split a layer's input.
constexpr int64_t kCountsGrain = int64_t{1} << 15;

// Bytes per block of the bits' pass: its 0/1 counts first, in a loop that vectorises, then 8 at a
// time into a byte.
constexpr int64_t kBitsBlock = 64;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gather_bits reads 8 bytes as a uint64");

// Eight bytes that are each 0 or 1 as one byte, byte j -> bit j: one multiply (each product term
// lands on its own bit, so nothing carries into the top byte).
inline uint8_t gather_bits(const uint8_t* ones) {
  uint64_t v;
  std::memcpy(&v, ones, sizeof v);
  return static_cast<uint8_t>((v * 0x0102040810204080ull) >> 56);
}

// Bytes [begin, end) of the bits of x (n elements); returns whether a value broke the promise.
template <typename IT>
LIF_CLONES uint32_t pack_bits_range(const IT* __restrict__ x, uint8_t* __restrict__ out,
                                    int64_t begin, int64_t end, int64_t n) {
  using F = CountMath<IT>;
  uint32_t bad = 0;
  const int64_t full = std::min(end, n / 8);
  uint8_t ones[8 * kBitsBlock];
  for (int64_t i = begin; i < full; i += kBitsBlock) {
    const int64_t len = std::min(kBitsBlock, full - i);
    const IT* xb = x + 8 * i;
    for (int64_t k = 0; k < 8 * len; ++k) {
      ones[k] = static_cast<uint8_t>(checked_count<F>(static_cast<F>(xb[k]), F(1), bad));
    }
    for (int64_t k = 0; k < len; ++k) out[i + k] = gather_bits(ones + 8 * k);
  }
  if (end > full) out[full] = pack_bits<F>(x + 8 * full, static_cast<int>(n - 8 * full), bad);
  return bad;
}

template <typename IT>
LIF_CLONES uint32_t pack_bytes_range(const IT* __restrict__ x, uint8_t* __restrict__ out,
                                     int64_t begin, int64_t end, int64_t max_count) {
  using F = CountMath<IT>;
  const F m = static_cast<F>(max_count);
  uint32_t bad = 0;
  for (int64_t i = begin; i < end; ++i) {
    out[i] = static_cast<uint8_t>(checked_count<F>(static_cast<F>(x[i]), m, bad));
  }
  return bad;
}

template <typename OT>
LIF_CLONES void unpack_bits_range(const uint8_t* __restrict__ packed, OT* __restrict__ out,
                                  int64_t begin, int64_t end, int64_t n) {
  const int64_t full = std::min(end, n / 8);
  for (int64_t i = begin; i < full; ++i) {
    for (int j = 0; j < 8; ++j) out[8 * i + j] = unpack_bit<OT>(packed[i], j);
  }
  if (end > full) {
    for (int j = 0; j < n - 8 * full; ++j) out[8 * full + j] = unpack_bit<OT>(packed[full], j);
  }
}

template <typename OT>
LIF_CLONES void unpack_bytes_range(const uint8_t* __restrict__ packed, OT* __restrict__ out,
                                   int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) out[i] = unpack_byte<OT>(packed[i]);
}

at::Tensor pack_counts_cpu(const at::Tensor& input, int64_t max_count) {
  const PackCounts p = prepare_pack_counts(input, max_count);
  const int64_t n = p.input.numel();
  std::atomic<uint32_t> bad{0};
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, p.input.scalar_type(), "lif_pack_counts", [&] {
        const scalar_t* x = p.input.const_data_ptr<scalar_t>();
        uint8_t* out = p.packed.mutable_data_ptr<uint8_t>();
        at::parallel_for(0, p.packed.numel(), kCountsGrain, [&](int64_t b, int64_t e) {
          const uint32_t tile_bad = max_count == 1 ? pack_bits_range(x, out, b, e, n)
                                                   : pack_bytes_range(x, out, b, e, max_count);
          if (tile_bad) bad.store(1, std::memory_order_relaxed);
        });
      });
  TORCH_CHECK_VALUE(bad.load() == 0, counts_promise_broken(max_count));
  return p.packed;
}

at::Tensor unpack_counts_cpu(const at::Tensor& packed, int64_t max_count, int64_t numel,
                             at::ScalarType dtype) {
  at::Tensor out = prepare_unpack_counts(packed, max_count, numel, dtype);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "lif_unpack_counts", [&] {
    const uint8_t* in = packed.const_data_ptr<uint8_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, packed.numel(), kCountsGrain, [&](int64_t b, int64_t e) {
      if (max_count == 1) {
        unpack_bits_range(in, o, b, e, numel);
      } else {
        unpack_bytes_range(in, o, b, e);
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace lif

TORCH_LIBRARY_IMPL(lif_cuda, CPU, m) {
  m.impl("pack_counts", &lif::cpu::pack_counts_cpu);
  m.impl("unpack_counts", &lif::cpu::unpack_counts_cpu);
}
