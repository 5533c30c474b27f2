// The CPU output pool (see output_pool.h).
#include "output_pool.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/impl/alloc_cpu.h>

#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>

namespace lif {
namespace {

// Default limit: 1 GiB of unused buffers; LIF_OUTPUT_POOL_MB in the environment sets another
// (0: off) when the library loads. lif_cuda.set_output_pool_limit() changes it at any time.
int64_t default_limit() {
  const char* env = std::getenv("LIF_OUTPUT_POOL_MB");
  if (env == nullptr || *env == '\0') return int64_t(1) << 30;
  try {
    const long long mb = std::stoll(env);
    return mb > 0 ? static_cast<int64_t>(mb) << 20 : 0;
  } catch (...) {
    return int64_t(1) << 30;
  }
}

class OutputPool {
 public:
  OutputPool() : limit_(default_limit()) {}

  // A buffer of exactly `bytes`, reused or new.
  void* take(int64_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = free_.rbegin(); it != free_.rend(); ++it) {  // most recently returned first
        if (it->bytes == bytes) {
          void* p = it->ptr;
          held_ -= bytes;
          free_.erase(std::next(it).base());
          ++hits_;
          return p;
        }
      }
      ++misses_;
    }
    return c10::alloc_cpu(static_cast<size_t>(bytes));
  }

  // Called when the tensor that owned the buffer dies.
  void give_back(void* p, int64_t bytes) {
    std::deque<Block> evicted;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (bytes > limit_) {
        evicted.push_back({p, bytes});
      } else {
        free_.push_back({p, bytes});
        held_ += bytes;
        while (held_ > limit_) {  // the least recently returned go first
          evicted.push_back(free_.front());
          held_ -= free_.front().bytes;
          free_.pop_front();
        }
      }
    }
    for (const Block& b : evicted) c10::free_cpu(b.ptr);  // outside the lock
  }

  bool on() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return limit_ > 0;
  }

  OutputPoolStats stats() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return {limit_, held_, hits_, misses_};
  }

  OutputPoolStats set_limit(int64_t limit) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      limit_ = limit > 0 ? limit : 0;
    }
    trim();
    return stats();
  }

  // Never destroyed: buffers may come back from tensors freed during static destruction at exit.
  static OutputPool& instance() {
    static OutputPool* pool = new OutputPool();
    return *pool;
  }

 private:
  struct Block {
    void* ptr;
    int64_t bytes;
  };

  // Frees what no longer fits under the limit.
  void trim() {
    std::deque<Block> evicted;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      while (held_ > limit_ && !free_.empty()) {
        evicted.push_back(free_.front());
        held_ -= free_.front().bytes;
        free_.pop_front();
      }
    }
    for (const Block& b : evicted) c10::free_cpu(b.ptr);
  }

  std::mutex mutex_;
  std::deque<Block> free_;
  int64_t limit_, held_ = 0, hits_ = 0, misses_ = 0;
};

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (const int64_t s : sizes) numel *= s;
  const int64_t bytes =
      numel * static_cast<int64_t>(c10::elementSize(options.dtype().toScalarType()));
  OutputPool& pool = OutputPool::instance();
  if (!options.device().is_cpu() || bytes < kPoolMinBytes || !pool.on()) {
    return at::empty(sizes, options);
  }
  void* p = pool.take(bytes);
  return at::from_blob(
      p, sizes, [bytes](void* data) { OutputPool::instance().give_back(data, bytes); },
      options.memory_format(std::nullopt));
}

OutputPoolStats output_pool_stats() { return OutputPool::instance().stats(); }

OutputPoolStats set_output_pool_limit(int64_t limit_bytes) {
  return OutputPool::instance().set_limit(limit_bytes);
}

}  // namespace lif
