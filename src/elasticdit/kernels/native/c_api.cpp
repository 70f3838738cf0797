// A C entry point to the same kernel, for calling it from Python (ctypes) on plain buffers: eager checks of
// the kernel's numerics without a round trip through torch.export, and the benchmarks' roofline probes.
#include <algorithm>
#include <atomic>
#include <cstdint>

#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include "ssba_kernel.h"

extern "C" {

// Returns nullptr on success, else why the problem is invalid (nothing is written then).
__attribute__((visibility("default"))) const char* elasticdit_ssba_attention_f32(
    const float* q, const float* k, const float* v, float* out, int64_t batch_heads, int64_t seq, int64_t dim,
    int64_t grid_h, int64_t grid_w, int64_t tile, int64_t window, int64_t shift, float scale, int32_t threaded) {
  const elasticdit::SSBAProblem p{batch_heads, seq, dim, grid_h, grid_w, tile, window, shift, scale};
  if (const char* problem = elasticdit::ssba_check(p)) return problem;
  const int64_t items = elasticdit::ssba_work_items(p);
  if (threaded) {  // as the ExecuTorch kernel does
    std::atomic<int64_t> next{0};
    const int64_t workers = std::min(executorch::extension::get_thread_count(), items);
    executorch::extension::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
      for (int64_t w = begin; w < end; ++w) elasticdit::ssba_run_shared(p, q, k, v, out, next);
    });
  } else {
    elasticdit::ssba_run(p, q, k, v, out, 0, items);
  }
  return nullptr;
}

__attribute__((visibility("default"))) const char* elasticdit_kernels_isa() { return elasticdit::ssba_isa(); }
}
