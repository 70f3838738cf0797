// Standalone driver of the SSBA kernel core (no ExecuTorch): reads a problem and q, k, v from a file, writes
// the output to another. Used to check a cross-compiled build (e.g. arm64 NEON under qemu-aarch64) against
// the Python reference: see tests/test_ssba_kernel.py::test_kernel_neon_build_under_qemu.
//   file in:  int64 batch_heads, seq, dim, grid_h, grid_w, tile, window, shift; float32 scale; q, k, v
//   file out: float32 out
#include <cstdio>
#include <vector>

#include "../ssba_kernel.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s IN OUT\n", argv[0]);
    return 2;
  }
  std::FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 2;
  int64_t h[8];
  float scale;
  if (std::fread(h, sizeof h, 1, in) != 1 || std::fread(&scale, sizeof scale, 1, in) != 1) return 2;
  const elasticdit::SSBAProblem p{h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], scale};
  if (const char* problem = elasticdit::ssba_check(p)) {
    std::fprintf(stderr, "%s\n", problem);
    return 1;
  }
  const size_t n = p.batch_heads * p.seq * p.dim;
  std::vector<float> q(n), k(n), v(n), out(n);
  for (auto* t : {&q, &k, &v})
    if (std::fread(t->data(), sizeof(float), n, in) != n) return 2;
  std::fclose(in);
  elasticdit::ssba_run(p, q.data(), k.data(), v.data(), out.data(), 0, elasticdit::ssba_work_items(p));
  std::FILE* f = std::fopen(argv[2], "wb");
  if (!f || std::fwrite(out.data(), sizeof(float), n, f) != n) return 2;
  std::fclose(f);
  std::printf("%s\n", elasticdit::ssba_isa());
  return 0;
}
