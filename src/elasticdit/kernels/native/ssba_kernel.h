// SSBA attention, flash-style, for float32 on any CPU with GCC/Clang vector extensions.
//
// q, k, v, out: [batch*heads, seq, dim], contiguous; the joint sequence is [image tokens in raster order of a
// grid_h x grid_w grid, text tokens]. Image queries attend the keys of their tile's clamped window (tile x tile
// tiles, window w: (2w+1)^2 tiles, fewer at an axis with fewer tiles; the grid rolled by `shift` first) plus
// every text key; text queries attend every key. Same rules as elasticdit/ssba/pattern.py.
#pragma once

#include <atomic>
#include <cstdint>

namespace elasticdit {

struct SSBAProblem {
  int64_t batch_heads, seq, dim;
  int64_t grid_h, grid_w, tile, window, shift;
  float scale;
};

// Why a problem cannot run, or nullptr.
const char* ssba_check(const SSBAProblem& p);

// Independent work items (one query block of one head each), for a parallel_for over [0, count).
int64_t ssba_work_items(const SSBAProblem& p);

// Computes work items [begin, end). Scratch lives on the stack and in a per-call buffer; no global state.
void ssba_run(const SSBAProblem& p, const float* q, const float* k, const float* v, float* out, int64_t begin,
              int64_t end);

// Dynamic scheduling: takes the next item from `next` until none remain. Several workers (one per thread) share
// one counter, so load balance does not depend on how the thread pool splits a range.
void ssba_run_shared(const SSBAProblem& p, const float* q, const float* k, const float* v, float* out,
                     std::atomic<int64_t>& next);

// Name of the vector configuration compiled in ("avx512", "avx2", "neon", "generic").
const char* ssba_isa();

}  // namespace elasticdit
