// SSBA attention kernel: each query block (one image tile, or the text queries) against only the keys it may
// attend, read in place from k and v (row pointers, no gathered copy), with an online softmax over key blocks.
//
// Layout trick: scores are kept transposed, S^T[key][query], with queries in the vector lanes. Then
//   * Q K^T broadcasts one element of a key row (k as it lies in memory) against a vector of queries from a
//     small transposed copy of the query block (Q^T, scaled by scale * log2(e), built once per block);
//   * the softmax's running max and sum are element-wise over key rows (no horizontal reduction);
//   * P V broadcasts one probability against a vector of a value row (v as it lies in memory) and accumulates
//     O[query][dim] in natural layout, which is written straight to the output rows.
// Vector width and register tiles come from the ISA the file is compiled for (GCC/Clang vector extensions, so
// the same source gives AVX-512, AVX2 and NEON code).
#include "ssba_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace elasticdit {
namespace {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kRK = 6, kCQ = 4;  // Q K^T tile: 6 keys x 4 vectors of queries (24 accumulators)
constexpr int kRQ = 4, kCV = 4;  // P V tile: 4 queries x 4 vectors of the head dim (16 accumulators)
constexpr const char* kIsa = "avx512";
#elif defined(__AVX2__) || defined(__AVX__)
constexpr int kVecBytes = 32;
constexpr int kRK = 4, kCQ = 2;
constexpr int kRQ = 2, kCV = 4;
constexpr const char* kIsa = "avx2";
#elif defined(__ARM_NEON) || defined(__ARM_NEON__)
constexpr int kVecBytes = 16;
constexpr int kRK = 6, kCQ = 4;  // 24 accumulators of 4 lanes (16 queries) + 4 query vectors
constexpr int kRQ = 4, kCV = 4;  // 16 accumulators; 4 queries divide an 8 x 8 tile
constexpr const char* kIsa = "neon";
#else
constexpr int kVecBytes = 16;
constexpr int kRK = 2, kCQ = 2;
constexpr int kRQ = 2, kCV = 2;
constexpr const char* kIsa = "generic";
#endif

typedef float vf __attribute__((vector_size(kVecBytes)));
typedef float vfu __attribute__((vector_size(kVecBytes), aligned(4)));  // unaligned loads from q/k/v/out
typedef int32_t vi __attribute__((vector_size(kVecBytes)));
constexpr int L = kVecBytes / 4;  // lanes

constexpr int kKeyBlock = 64;   // keys per online-softmax step
constexpr int kMaxQueries = 128;  // queries per block (lanes of S^T rows)
constexpr int kTileQueries = 64;  // an image tile's queries are split into blocks of at most this many
constexpr float kLog2e = 1.4426950408889634f;

template <size_t... I>
inline vf splat_lanes(float x, std::index_sequence<I...>) {
  return vf{((void)I, x)...};
}
// A broadcast (`vf{} + x` would add in scalar first, a lane loop is assembled lane by lane).
inline vf splat(float x) { return splat_lanes(x, std::make_index_sequence<L>()); }

inline vf vmax(vf a, vf b) { return a > b ? a : b; }

// 2^x for x <= 0 (any x >= -126 is accurate to ~1 ulp; below that, 0): round to nearest, a degree-7 polynomial
// for 2^f on [-0.5, 0.5], and the exponent written into the float's bits.
inline vf exp2v(vf x) {
  x = vmax(x, splat(-126.0f));
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  vf n = (x + magic) - magic;
  vf f = x - n;
  vf p = splat(1.525273380405984e-05f);
  p = p * f + 1.5403530393381606e-04f;
  p = p * f + 1.3333558146428443e-03f;
  p = p * f + 9.618129107628477e-03f;
  p = p * f + 5.550410866482158e-02f;
  p = p * f + 2.402265069591007e-01f;
  p = p * f + 6.931471805599453e-01f;
  p = p * f + 1.0f;
  vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)bits;
}

struct Scratch {
  std::vector<float> buf;
  std::vector<int32_t> keys;
  float* qt = nullptr;     // [dim][qw]      queries, transposed and scaled
  float* st = nullptr;     // [kKeyBlock + kRK][qw]  scores, then probabilities, of one key block
  float* o = nullptr;      // [kMaxQueries][dim]     output accumulator
  float* m = nullptr;      // [qw] running max (log2 units)
  float* l = nullptr;      // [qw] running sum
  float* alpha = nullptr;  // [qw] rescale of the previous blocks
  void reserve(int64_t dim, int64_t seq) {
    const size_t n_qt = dim * kMaxQueries, n_st = (kKeyBlock + kRK) * kMaxQueries, n_o = kMaxQueries * dim;
    const size_t need = n_qt + n_st + n_o + 3 * kMaxQueries + 16;
    if (buf.size() < need) buf.assign(need, 0.0f);
    float* base = buf.data();
    base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64 / sizeof(float);
    qt = base;
    st = qt + n_qt;
    o = st + n_st;
    m = o + n_o;
    l = m + kMaxQueries;
    alpha = l + kMaxQueries;
    if (keys.size() < static_cast<size_t>(seq)) keys.resize(seq);
  }
};

// S^T[j][i0 .. i0 + CQ*L) for keys j in [0, RK) of `rows` (pointers to key rows).
template <int RK, int CQ>
inline void qk_tile(const float* const* rows, const float* qt, int64_t qw, int64_t dim, float* st, int64_t i0) {
  vf acc[RK][CQ];
#pragma GCC unroll 8
  for (int r = 0; r < RK; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < CQ; ++c) acc[r][c] = splat(0.0f);
  for (int64_t d = 0; d < dim; ++d) {
    vf qv[CQ];
#pragma GCC unroll 8
    for (int c = 0; c < CQ; ++c) qv[c] = *reinterpret_cast<const vf*>(qt + d * qw + i0 + c * L);
#pragma GCC unroll 8
    for (int r = 0; r < RK; ++r) {
      const vf b = splat(rows[r][d]);
#pragma GCC unroll 8
      for (int c = 0; c < CQ; ++c) acc[r][c] += b * qv[c];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RK; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < CQ; ++c) *reinterpret_cast<vf*>(st + r * qw + i0 + c * L) = acc[r][c];
}

template <int CQ>
void qk_block(const float* const* rows, int64_t nk, const float* qt, int64_t qw, int64_t dim, float* st) {
  for (int64_t j = 0; j < nk; j += kRK) {
    // the last group may run past nk: it recomputes the last key into rows the softmax never reads
    const float* group[kRK];
    for (int r = 0; r < kRK; ++r) group[r] = rows[std::min<int64_t>(j + r, nk - 1)];
    int64_t i0 = 0;
    for (; i0 + CQ * L <= qw; i0 += CQ * L) qk_tile<kRK, CQ>(group, qt, qw, dim, st + j * qw, i0);
    for (; i0 < qw; i0 += L) qk_tile<kRK, 1>(group, qt, qw, dim, st + j * qw, i0);
  }
}

// O[i0 .. i0+RQ)[d0 .. d0 + CV*L) = alpha * O + sum_j P^T[j][i] V[j][d] over the block's keys.
template <int RQ, int CV>
inline void pv_tile(const float* const* rows, int64_t nk, const float* st, int64_t qw, const float* alpha, float* o,
                    int64_t dim, int64_t i0, int64_t d0) {
  vf acc[RQ][CV];
#pragma GCC unroll 8
  for (int r = 0; r < RQ; ++r) {
    const vf a = splat(alpha[i0 + r]);
#pragma GCC unroll 8
    for (int c = 0; c < CV; ++c) acc[r][c] = a * *reinterpret_cast<const vf*>(o + (i0 + r) * dim + d0 + c * L);
  }
  for (int64_t j = 0; j < nk; ++j) {
    vf vv[CV];
    const float* vrow = rows[j] + d0;
#pragma GCC unroll 8
    for (int c = 0; c < CV; ++c) vv[c] = *reinterpret_cast<const vfu*>(vrow + c * L);
    const float* p = st + j * qw + i0;
#pragma GCC unroll 8
    for (int r = 0; r < RQ; ++r) {
      const vf b = splat(p[r]);
#pragma GCC unroll 8
      for (int c = 0; c < CV; ++c) acc[r][c] += b * vv[c];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RQ; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < CV; ++c) *reinterpret_cast<vf*>(o + (i0 + r) * dim + d0 + c * L) = acc[r][c];
}

template <int CV>
void pv_queries(const float* const* rows, int64_t nk, const float* st, int64_t qw, const float* alpha, float* o,
                int64_t dim, int64_t nq) {
  for (int64_t d0 = 0; d0 < dim; d0 += CV * L) {
    int64_t i0 = 0;
    for (; i0 + kRQ <= nq; i0 += kRQ) pv_tile<kRQ, CV>(rows, nk, st, qw, alpha, o, dim, i0, d0);
    for (; i0 < nq; ++i0) pv_tile<1, CV>(rows, nk, st, qw, alpha, o, dim, i0, d0);
  }
}

// Head dims that are not a multiple of the vector width (tiny test models): plain loops.
void pv_scalar(const float* const* rows, int64_t nk, const float* st, int64_t qw, const float* alpha, float* o,
               int64_t dim, int64_t nq) {
  for (int64_t i = 0; i < nq; ++i) {
    float* oi = o + i * dim;
    for (int64_t d = 0; d < dim; ++d) oi[d] *= alpha[i];
    for (int64_t j = 0; j < nk; ++j) {
      const float p = st[j * qw + i];
      for (int64_t d = 0; d < dim; ++d) oi[d] += p * rows[j][d];
    }
  }
}

void pv_block(const float* const* rows, int64_t nk, const float* st, int64_t qw, const float* alpha, float* o,
              int64_t dim, int64_t nq) {
  if (dim % (kCV * L) == 0) return pv_queries<kCV>(rows, nk, st, qw, alpha, o, dim, nq);
  if (kCV >= 2 && dim % (2 * L) == 0) return pv_queries<(kCV >= 2 ? 2 : 1)>(rows, nk, st, qw, alpha, o, dim, nq);
  if (dim % L == 0) return pv_queries<1>(rows, nk, st, qw, alpha, o, dim, nq);
  pv_scalar(rows, nk, st, qw, alpha, o, dim, nq);
}

// Online softmax over one block of nk score rows: new running max, probabilities in place, running sum, and
// the factor alpha by which earlier blocks' output must be scaled.
void softmax_block(float* st, int64_t nk, int64_t qw, float* m, float* l, float* alpha) {
  for (int64_t i = 0; i < qw; i += L) {
    vf mx = *reinterpret_cast<vf*>(m + i);
    const vf old = mx;
    for (int64_t j = 0; j < nk; ++j) mx = vmax(mx, *reinterpret_cast<vf*>(st + j * qw + i));
    vf sum = splat(0.0f);
    for (int64_t j = 0; j < nk; ++j) {
      vf* s = reinterpret_cast<vf*>(st + j * qw + i);
      const vf p = exp2v(*s - mx);
      *s = p;
      sum += p;
    }
    const vf a = exp2v(old - mx);
    *reinterpret_cast<vf*>(alpha + i) = a;
    *reinterpret_cast<vf*>(l + i) = *reinterpret_cast<vf*>(l + i) * a + sum;
    *reinterpret_cast<vf*>(m + i) = mx;
  }
}

// One query block against a key list: the whole flash-attention loop.
void attend(const SSBAProblem& p, const float* q, const float* k, const float* v, float* out, const int32_t* qrows,
            int64_t nq, const int32_t* keys, int64_t nk, Scratch& s) {
  const int64_t dim = p.dim, qw = (nq + L - 1) / L * L;
  const float qscale = p.scale * kLog2e;
  for (int64_t d = 0; d < dim; ++d) {
    float* row = s.qt + d * qw;
    for (int64_t i = 0; i < nq; ++i) row[i] = q[qrows[i] * dim + d] * qscale;
    for (int64_t i = nq; i < qw; ++i) row[i] = 0.0f;
  }
  std::fill(s.o, s.o + qw * dim, 0.0f);
  std::fill(s.m, s.m + qw, -std::numeric_limits<float>::infinity());
  std::fill(s.l, s.l + qw, 0.0f);
  const float* krows[kKeyBlock];
  const float* vrows[kKeyBlock];
  for (int64_t j0 = 0; j0 < nk; j0 += kKeyBlock) {
    const int64_t nb = std::min<int64_t>(kKeyBlock, nk - j0);
    for (int64_t j = 0; j < nb; ++j) {
      krows[j] = k + static_cast<int64_t>(keys[j0 + j]) * dim;
      vrows[j] = v + static_cast<int64_t>(keys[j0 + j]) * dim;
    }
    switch (std::min<int64_t>(qw / L, kCQ)) {
      case 1: qk_block<1>(krows, nb, s.qt, qw, dim, s.st); break;
      case 2: qk_block<(kCQ >= 2 ? 2 : 1)>(krows, nb, s.qt, qw, dim, s.st); break;
      case 3: qk_block<(kCQ >= 3 ? 3 : 1)>(krows, nb, s.qt, qw, dim, s.st); break;
      default: qk_block<kCQ>(krows, nb, s.qt, qw, dim, s.st); break;
    }
    softmax_block(s.st, nb, qw, s.m, s.l, s.alpha);
    pv_block(vrows, nb, s.st, qw, s.alpha, s.o, dim, nq);
  }
  for (int64_t i = 0; i < nq; ++i) {
    const float inv = 1.0f / s.l[i];
    float* dst = out + qrows[i] * dim;
    const float* src = s.o + i * dim;
    for (int64_t d = 0; d < dim; ++d) dst[d] = src[d] * inv;
  }
}

struct Geometry {
  int64_t tokens, text, nth, ntw, span_h, span_w, chunks, text_blocks, image_items;
  explicit Geometry(const SSBAProblem& p) {
    tokens = p.grid_h * p.grid_w;
    text = p.seq - tokens;
    nth = p.grid_h / p.tile;
    ntw = p.grid_w / p.tile;
    span_h = std::min(2 * p.window + 1, nth);
    span_w = std::min(2 * p.window + 1, ntw);
    chunks = (p.tile * p.tile + kTileQueries - 1) / kTileQueries;
    text_blocks = (text + kMaxQueries - 1) / kMaxQueries;
    image_items = nth * ntw * chunks;
  }
};

}  // namespace

const char* ssba_isa() { return kIsa; }

const char* ssba_check(const SSBAProblem& p) {
  if (p.batch_heads < 1 || p.seq < 1 || p.dim < 1) return "q, k and v must be non-empty [batch*heads, seq, dim]";
  if (p.tile < 1 || p.grid_h < 1 || p.grid_w < 1 || p.grid_h % p.tile || p.grid_w % p.tile)
    return "the tile must divide both grid sides";
  if (p.window < 0 || p.shift < 0) return "window and shift must be non-negative";
  if (p.grid_h * p.grid_w > p.seq) return "the sequence is shorter than the image grid";
  if (p.seq > std::numeric_limits<int32_t>::max() / (p.dim > 0 ? p.dim : 1)) return "the sequence is too long";
  return nullptr;
}

int64_t ssba_work_items(const SSBAProblem& p) {
  const Geometry g(p);
  return p.batch_heads * (g.text_blocks + g.image_items);
}

void ssba_run(const SSBAProblem& p, const float* q, const float* k, const float* v, float* out, int64_t begin,
              int64_t end) {
  const Geometry g(p);
  thread_local Scratch s;
  s.reserve(p.dim, p.seq);
  int32_t qrows[kMaxQueries];
  const int64_t stride = p.seq * p.dim;
  const int64_t text_items = p.batch_heads * g.text_blocks;  // the largest items first, for load balance
  for (int64_t item = begin; item < end; ++item) {
    int64_t bh, nq, nk;
    if (item < text_items) {
      bh = item / g.text_blocks;
      const int64_t block = item % g.text_blocks;
      const int64_t first = g.tokens + block * kMaxQueries;
      nq = std::min<int64_t>(kMaxQueries, p.seq - first);
      for (int64_t i = 0; i < nq; ++i) qrows[i] = static_cast<int32_t>(first + i);
      nk = p.seq;
      for (int64_t j = 0; j < nk; ++j) s.keys[j] = static_cast<int32_t>(j);
    } else {
      const int64_t rest = item - text_items;
      bh = rest / g.image_items;
      const int64_t local = rest % g.image_items;
      const int64_t t = local / g.chunks, chunk = local % g.chunks;
      const int64_t ty = t / g.ntw, tx = t % g.ntw, T = p.tile;
      const int64_t first = chunk * kTileQueries;
      nq = std::min<int64_t>(kTileQueries, T * T - first);
      for (int64_t i = 0; i < nq; ++i) {
        const int64_t a = (first + i) / T, b = (first + i) % T;
        const int64_t y = (ty * T + a + p.shift) % p.grid_h, x = (tx * T + b + p.shift) % p.grid_w;
        qrows[i] = static_cast<int32_t>(y * p.grid_w + x);
      }
      const int64_t sh = std::clamp<int64_t>(ty - p.window, 0, g.nth - g.span_h);
      const int64_t sw = std::clamp<int64_t>(tx - p.window, 0, g.ntw - g.span_w);
      nk = 0;
      for (int64_t yr = sh * T; yr < (sh + g.span_h) * T; ++yr) {
        const int64_t y = (yr + p.shift) % p.grid_h;
        for (int64_t xr = sw * T; xr < (sw + g.span_w) * T; ++xr)
          s.keys[nk++] = static_cast<int32_t>(y * p.grid_w + (xr + p.shift) % p.grid_w);
      }
      for (int64_t j = g.tokens; j < p.seq; ++j) s.keys[nk++] = static_cast<int32_t>(j);
    }
    attend(p, q + bh * stride, k + bh * stride, v + bh * stride, out + bh * stride, qrows, nq, s.keys.data(), nk, s);
  }
}

void ssba_run_shared(const SSBAProblem& p, const float* q, const float* k, const float* v, float* out,
                     std::atomic<int64_t>& next) {
  const int64_t items = ssba_work_items(p);
  for (int64_t item = next.fetch_add(1); item < items; item = next.fetch_add(1)) {
    ssba_run(p, q, k, v, out, item, item + 1);
  }
}

}  // namespace elasticdit
