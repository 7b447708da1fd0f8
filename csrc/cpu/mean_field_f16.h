// Mean-field iterations of the dense CRF with the lattice values stored as IEEE
// half floats (x86 with AVX2, FMA and F16C).
//
// Every stage of an iteration reaches lattice rows through index arrays, so its
// cost is the number of cache lines it touches.  A row of 21-32 labels in float32
// is 96-128 bytes, two cache lines; in half floats, padded to 32 labels and aligned,
// it is exactly one.  All arithmetic stays in float32 (rows are widened on load and
// rounded once on store), so the only change from float32 storage is one rounding
// to 11 significant bits per stored row: about 5e-4 relative, far below the
// lattice's own approximation of the Gaussian.
//
// One iteration, per kernel: splat the stored Q (gathering each vertex's
// contributors), blur along the d+1 axes in place, chain by chain (skipping the
// vertices with no neighbour along the axis); then one pass over the pixels slices
// every kernel, adds -unary, takes the softmax and stores Q for the next splat
// (in half floats) or, after the last iteration, the result (in float32, label-major,
// straight into the op's output).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)  // GCC: the target pragma below
#define DEEPLAB_HAVE_F16_MEAN_FIELD 1

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu/big_alloc.h"
#include "cpu/permutohedral.h"
#include "cpu/vec8.h"

namespace deeplab {
namespace f16 {

// Rows are prefetched this many steps ahead: far enough to cover a miss to the last-level cache.
constexpr int64_t kAhead = 32;
using lattice::kLane;

// Halves per stored row: the labels padded to 8, then to a whole cache line once a
// row is more than half of one.
constexpr int64_t row_halves(int64_t S) { return S <= 8 ? 8 : S <= 16 ? 16 : (S + 31) / 32 * 32; }

// A 64-byte aligned, uninitialised array of half floats (big_alloc.h).
using HalfBuffer = BigArray<uint16_t>;

inline bool cpu_supported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("f16c");
  return ok;
}

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

inline __m256 load_h(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline void store_h(uint16_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

// exp(x - m) for x <= m: vec8.h's exp_nonpositive (the same steps and coefficients)
// in AVX2 intrinsics, the polynomial in fused multiply-adds.
inline __m256 exp_shifted(__m256 x, __m256 m) {
  const __m256 magic = _mm256_set1_ps(kExp2Magic);
  const __m256 t =
      _mm256_max_ps(_mm256_mul_ps(_mm256_sub_ps(x, m), _mm256_set1_ps(1.44269504088896341f)), _mm256_set1_ps(-126.f));
  const __m256 tm = _mm256_add_ps(t, magic);
  const __m256 g = _mm256_sub_ps(t, _mm256_sub_ps(tm, magic));
  __m256 p = _mm256_fmadd_ps(g, _mm256_set1_ps(kExp2Poly[5]), _mm256_set1_ps(kExp2Poly[4]));
  for (int k = 3; k >= 0; --k) p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(kExp2Poly[k]));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(tm), 23)));
}

// A row's stride in halves: known at compile time for NB > 0, so that row addresses
// are shifts and a row's prefetch is one instruction.
template <int NB>
constexpr int64_t fixed_rs(int64_t RS_rt) { return NB > 0 ? row_halves(NB * kLane) : RS_rt; }

// The kernels below take NB > 0 to fix the number of label blocks at compile time,
// so that a row's accumulators stay in registers; NB = 0 reads it from ``nb_rt`` and
// accumulates in the caller's ``heap`` scratch.
// dst[v] = sum of the weighted stored Q rows of vertex v's contributors.
template <int NB>
void splat(const lattice::Lattice<float>& L, const uint16_t* __restrict__ q, int64_t RS_rt,
           uint16_t* __restrict__ dst, int64_t nb_rt, int64_t v0, int64_t v1, __m256* heap) {
  const int64_t nb = NB > 0 ? NB : nb_rt;
  const int64_t RS = fixed_rs<NB>(RS_rt);
  __m256 local[NB > 0 ? NB : 1];
  __m256* acc = NB > 0 ? local : heap;
  const int64_t end = L.gather_ptr[v1];
  for (int64_t v = v0; v < v1; ++v) {
    for (int64_t b = 0; b < nb; ++b) acc[b] = _mm256_setzero_ps();
    for (int64_t j = L.gather_ptr[v]; j < L.gather_ptr[v + 1]; ++j) {
      if (j + kAhead < end) lattice::prefetch_row(q + static_cast<int64_t>(L.gather_pt[j + kAhead]) * RS, RS);
      const __m256 w = _mm256_set1_ps(L.gather_w[j]);
      const uint16_t* src = q + static_cast<int64_t>(L.gather_pt[j]) * RS;
      for (int64_t b = 0; b < nb; ++b) acc[b] = _mm256_fmadd_ps(w, load_h(src + b * kLane), acc[b]);
    }
    uint16_t* o = dst + (v + 1) * RS;
    for (int64_t b = 0; b < nb; ++b) store_h(o + b * kLane, acc[b]);
  }
}

// In place along one axis: row[v] = row[v] + (row[n1(v)] + row[n2(v)]) / 2 for the
// vertices of the chains in [i0, i1) of ``run`` (build_chains; i0 and i1 cut between
// chains), each row read once and the old value of the previous vertex kept in
// registers.  The same arithmetic as a blur into a second buffer, so the same bits.
template <int NB>
void blur_chains(const int32_t* __restrict__ run, uint16_t* __restrict__ rows, int64_t RS_rt, int64_t nb_rt,
                 int64_t i0, int64_t i1) {
  if (i0 >= i1) return;
  const int64_t nb = NB > 0 ? NB : nb_rt;
  const int64_t RS = fixed_rs<NB>(RS_rt);
  // A row's blocks in registers for up to kMaxNB blocks; more go one block at a time.
  constexpr int64_t kMaxNB = NB > 0 ? NB : 8;
  const int64_t width = nb <= kMaxNB ? nb : 1;
  const __m256 half = _mm256_set1_ps(0.5f);
  __m256 prev[kMaxNB], cur[kMaxNB];
  for (int64_t b0 = 0; b0 < nb; b0 += width) {
    const uint16_t* first = rows + static_cast<int64_t>(std::abs(run[i0])) * RS + b0 * kLane;
    for (int64_t b = 0; b < width; ++b) {
      prev[b] = _mm256_setzero_ps();
      cur[b] = load_h(first + b * kLane);
    }
    for (int64_t i = i0; i < i1; ++i) {
      if (i + kAhead < i1) lattice::prefetch_row(rows + static_cast<int64_t>(std::abs(run[i + kAhead])) * RS, RS);
      const int32_t o = run[i];
      // -1 for the last vertex of a chain, else 0: the chain's end taken without a
      // branch (bilateral chains are two or three vertices long, so a branch on it
      // would be mispredicted about once per chain).
      const int32_t last = o >> 31;
      // The next row: this chain's next vertex, or the first of the next chain, which
      // only becomes ``cur``; row 0 (zeros) after the last chain of the range.
      const int64_t next = i + 1 < i1 ? std::abs(run[i + 1]) : 0;
      const uint16_t* r = rows + next * RS + b0 * kLane;
      const __m256 keep = _mm256_castsi256_ps(_mm256_set1_epi32(~last));
      uint16_t* out = rows + static_cast<int64_t>((o ^ last) - last) * RS + b0 * kLane;
      for (int64_t b = 0; b < width; ++b) {
        const __m256 nx = load_h(r + b * kLane);
        store_h(out + b * kLane, _mm256_fmadd_ps(half, _mm256_add_ps(prev[b], _mm256_and_ps(nx, keep)), cur[b]));
        prev[b] = _mm256_and_ps(cur[b], keep);
        cur[b] = nx;
      }
    }
  }
}

// What the pixel pass reads of one kernel.
struct Slice {
  const int32_t* offset;   // n*(d+1) vertex ids (+1)
  const float* weight;     // n*(d+1) slice weights (alpha, w and the normaliser folded in)
  const uint16_t* values;  // the blurred rows, or null before the first iteration
  int dp1;
  bool prefetch;           // the rows outgrow the per-core cache: prefetch ahead
};

// acc += the slice of one kernel at pixel p; DP1 > 0 fixes the corner count.  With
// ``ahead``, also prefetches the rows pixel p + kAhead will slice.
template <int NB, int DP1>
inline void slice_pixel(const Slice& K, int64_t p, int64_t RS_rt, int64_t nb, bool ahead, __m256* acc) {
  const int dp1 = DP1 > 0 ? DP1 : K.dp1;
  const int64_t RS = fixed_rs<NB>(RS_rt);
  if (ahead) {
    const int32_t* next = K.offset + (p + kAhead) * dp1;
    for (int r = 0; r < dp1; ++r) lattice::prefetch_row(K.values + static_cast<int64_t>(next[r]) * RS, RS);
  }
  const int32_t* off = K.offset + p * dp1;
  const float* sw = K.weight + p * dp1;
  for (int r = 0; r < dp1; ++r) {
    const uint16_t* row = K.values + static_cast<int64_t>(off[r]) * RS;
    const __m256 w = _mm256_set1_ps(sw[r]);
    for (int64_t b = 0; b < (NB > 0 ? NB : nb); ++b) acc[b] = _mm256_fmadd_ps(w, load_h(row + b * kLane), acc[b]);
  }
}

// The softmax works on kGroup pixels at a time: a pixel's max, exp and sum form one
// long chain of dependent instructions, and eight independent chains side by side
// keep the core busy where one pixel at a time waits on each step.
constexpr int64_t kGroup = 8;

// For eight vectors v[0..7], the max or the sum (``op``: _mm256_max_ps or
// _mm256_add_ps) of each one's lanes, in the lanes of one vector: each vector's halves
// combined, then the lanes two apart, then the last two.  Lanes of the result: v[0],
// v[2], v[4], v[6], v[1], v[3], v[5], v[7].
template <typename Op>
inline __m256 reduce8(const __m256* v, Op op) {
  __m256 w[4];
  for (int i = 0; i < 4; ++i)
    w[i] = op(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20), _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
  const __m256 x0 = op(_mm256_shuffle_ps(w[0], w[1], 0x44), _mm256_shuffle_ps(w[0], w[1], 0xEE));
  const __m256 x1 = op(_mm256_shuffle_ps(w[2], w[3], 0x44), _mm256_shuffle_ps(w[2], w[3], 0xEE));
  return op(_mm256_shuffle_ps(x0, x1, 0x88), _mm256_shuffle_ps(x0, x1, 0xDD));
}
inline __m256 hmax8(const __m256* v) { return reduce8(v, [](__m256 x, __m256 y) { return _mm256_max_ps(x, y); }); }
inline __m256 hsum8(const __m256* v) { return reduce8(v, [](__m256 x, __m256 y) { return _mm256_add_ps(x, y); }); }
// Where reduce8 puts vector i.
constexpr int kLaneOf[kGroup] = {0, 4, 1, 5, 2, 6, 3, 7};

// Transposes the 8x8 matrix of rows r[0..7] in place.
inline void transpose8(__m256* r) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

// Writes the marginals ``q`` of pixels g0 .. g0+g-1 (nb vectors each, point-major)
// label-major into ``out`` (C planes of n): eight pixels at a time as an 8x8
// transpose per block of labels.
inline void store_planar(const __m256* q, int64_t nb, int64_t g, int64_t C, int64_t n, int64_t g0, float* out) {
  if (g < kGroup) {
    for (int64_t i = 0; i < g; ++i) {
      alignas(32) float row[kLane];
      for (int64_t b = 0; b < nb; ++b) {
        _mm256_store_ps(row, q[i * nb + b]);
        for (int64_t c = b * kLane; c < std::min(C, (b + 1) * kLane); ++c) out[c * n + g0 + i] = row[c - b * kLane];
      }
    }
    return;
  }
  for (int64_t b = 0; b < nb; ++b) {
    __m256 r[kGroup];
    for (int64_t i = 0; i < kGroup; ++i) r[i] = q[i * nb + b];
    transpose8(r);
    for (int64_t l = 0; l < kLane && b * kLane + l < C; ++l) _mm256_storeu_ps(out + (b * kLane + l) * n + g0, r[l]);
  }
}

// For pixels [p0, p1): Q = softmax(-unary + sum of the sliced kernels), stored in
// half floats into ``qh`` (stride RS) and/or in float32 into ``out``, label-major
// (C planes of n).  ``heap``: 2 * kGroup * nb vectors of scratch for NB = 0.
//
// Software-pipelined by group: slicing a group waits on memory, its softmax on
// arithmetic, and one group is more than the core can look ahead, so the exps of
// each group's pixels run interleaved with the slicing of the next group's (the
// accumulators of the two alternate between two halves of the scratch).  Each pixel
// gets the same operations in the same order as one group at a time.
template <int NB>
void pixel_pass(const float* __restrict__ neg_u, const Slice* ks, int nk, int64_t RS_rt, int64_t nb_rt,
                int64_t p0, int64_t p1, uint16_t* __restrict__ qh, float* __restrict__ out, int64_t C, int64_t n,
                __m256* heap) {
  const int64_t nb = NB > 0 ? NB : nb_rt;
  const int64_t RS = fixed_rs<NB>(RS_rt);
  const int64_t S = nb * kLane;
  alignas(32) __m256 local[NB > 0 ? 2 * kGroup * NB : 1];
  __m256* bufs = NB > 0 ? local : heap;
  alignas(32) __m256 red[kGroup], tot[kGroup];
  alignas(32) float m8[kGroup], inv8[kGroup];
  __m256* prev = nullptr;  // the previous group's accumulators, exps pending
  int64_t prev_g0 = 0, prev_g = 0;
  for (int64_t g0 = p0, k = 0;; g0 += kGroup, ++k) {
    const int64_t g = g0 < p1 ? std::min(kGroup, p1 - g0) : 0;
    __m256* cur = bufs + (k & 1) * kGroup * nb;
    for (int64_t i = 0; i < kGroup; ++i) {
      if (i < g) {
        const int64_t p = g0 + i;
        __m256* acc = cur + i * nb;
        for (int64_t b = 0; b < nb; ++b) acc[b] = _mm256_loadu_ps(neg_u + p * S + b * kLane);
        const bool ahead = p + kAhead < p1;
        for (int kk = 0; kk < nk; ++kk) {
          const Slice& K = ks[kk];
          if (!K.values) continue;
          const bool pf = ahead && K.prefetch;
          switch (K.dp1) {  // DeepLab's kernels: positional (d = 2) and bilateral (d = 5)
            case 3: slice_pixel<NB, 3>(K, p, RS, nb, pf, acc); break;
            case 6: slice_pixel<NB, 6>(K, p, RS, nb, pf, acc); break;
            default: slice_pixel<NB, 0>(K, p, RS, nb, pf, acc); break;
          }
        }
        __m256 mx = acc[0];
        for (int64_t b = 1; b < nb; ++b) mx = _mm256_max_ps(mx, acc[b]);
        red[i] = mx;
      }
      if (i < prev_g) {
        __m256* acc = prev + i * nb;
        const __m256 m = _mm256_set1_ps(m8[kLaneOf[i]]);
        __m256 t = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
          acc[b] = exp_shifted(acc[b], m);
          t = _mm256_add_ps(t, acc[b]);
        }
        tot[i] = t;
      }
    }
    if (prev_g > 0) {
      for (int64_t i = prev_g; i < kGroup; ++i) tot[i] = tot[0];
      _mm256_store_ps(inv8, _mm256_div_ps(_mm256_set1_ps(1.f), hsum8(tot)));
      for (int64_t i = 0; i < prev_g; ++i) {
        const int64_t p = prev_g0 + i;
        __m256* acc = prev + i * nb;
        const __m256 inv = _mm256_set1_ps(inv8[kLaneOf[i]]);
        for (int64_t b = 0; b < nb; ++b) {
          acc[b] = _mm256_mul_ps(acc[b], inv);
          if (qh) store_h(qh + p * RS + b * kLane, acc[b]);
        }
      }
      if (out) store_planar(prev, nb, prev_g, C, n, prev_g0, out);
    }
    if (g == 0) break;
    for (int64_t i = g; i < kGroup; ++i) red[i] = red[0];
    _mm256_store_ps(m8, hmax8(red));
    prev = cur;
    prev_g0 = g0;
    prev_g = g;
  }
}

#pragma GCC pop_options

// Runs ``iterations`` mean-field steps.  ``neg_u`` is -unary, point-major with S
// (a multiple of 8) floats per pixel, padding lanes at a large negative energy;
// ``kernels`` carry their contributor lists with the splat scale folded into
// gather_w, and their slice weights.  Writes the marginals of the C labels,
// label-major (C planes of n), to ``out``.
template <int NB>
void mean_field_impl(const float* neg_u, const std::vector<lattice::Lattice<float>>& kernels, int64_t n,
                     int64_t S, int64_t C, int64_t iterations, float* out) {
  const int64_t nb = S / kLane, RS = row_halves(S);
  const int nk = static_cast<int>(kernels.size());
  const int64_t grain = 2048;
  auto with_scratch = [&](auto&& body) {
    // Accumulators for NB = 0 only (2 * kGroup rows for the pixel pass), aligned by hand
    // (std::vector promises 16 bytes).
    if (NB > 0) return body(static_cast<__m256*>(nullptr));
    std::vector<float> raw((2 * kGroup * nb + 1) * kLane);
    body(reinterpret_cast<__m256*>((reinterpret_cast<uintptr_t>(raw.data()) + 31) & ~uintptr_t{31}));
  };

  HalfBuffer qh;
  std::vector<HalfBuffer> a(nk);
  std::vector<Slice> slices(nk);
  const bool iterate = iterations > 0 && nk > 0;
  for (int k = 0; k < nk; ++k) {
    // Rows of a small lattice stay in the per-core cache; prefetching them only costs.
    const bool big = (kernels[k].m + 1) * RS * static_cast<int64_t>(sizeof(uint16_t)) > (int64_t{1} << 20);
    slices[k] = Slice{kernels[k].offset.data(), kernels[k].slice_w.data(), nullptr, kernels[k].d + 1, big};
    if (!iterate) continue;
    // Splat and blur write rows 1..m; row 0 ("no such vertex", the end of the chains) must read as zero.
    a[k] = HalfBuffer((kernels[k].m + 1) * RS);
    std::memset(a[k].get(), 0, RS * sizeof(uint16_t));
  }
  if (iterate) qh = HalfBuffer(n * RS);

  for (int64_t it = 0; it <= iterations; ++it) {
    const bool last = it == iterations || nk == 0;
    at::parallel_for(0, n, grain, [&](int64_t p0, int64_t p1) {
      with_scratch([&](__m256* heap) {
        pixel_pass<NB>(neg_u, slices.data(), nk, RS, nb, p0, p1, last ? nullptr : qh.get(), last ? out : nullptr, C, n,
                       heap);
      });
    });
    if (last) break;
    for (int k = 0; k < nk; ++k) {
      const auto& L = kernels[k];
      const int64_t m = L.m;
      at::parallel_for(0, m, grain, [&](int64_t v0, int64_t v1) {
        with_scratch([&](__m256* heap) { splat<NB>(L, qh.get(), RS, a[k].get(), nb, v0, v1, heap); });
      });
      for (int ax = 0; ax <= L.d; ++ax) {
        const int32_t* run = L.chain.data() + static_cast<int64_t>(ax) * (m + 1);
        // Vertices alone along this axis are not in the run: their rows stay as they are.
        at::parallel_for(0, L.chain_len[ax], grain, [&](int64_t i0, int64_t i1) {
          blur_chains<NB>(run, a[k].get(), RS, nb, lattice::chain_cut(run, i0), lattice::chain_cut(run, i1));
        });
      }
      slices[k].values = a[k].get();
    }
  }
}

inline void mean_field(const float* neg_u, const std::vector<lattice::Lattice<float>>& kernels, int64_t n,
                       int64_t S, int64_t C, int64_t iterations, float* out) {
  switch (S / kLane) {  // up to 32 labels with a row's accumulators in registers
    case 1: return mean_field_impl<1>(neg_u, kernels, n, S, C, iterations, out);
    case 2: return mean_field_impl<2>(neg_u, kernels, n, S, C, iterations, out);
    case 3: return mean_field_impl<3>(neg_u, kernels, n, S, C, iterations, out);
    case 4: return mean_field_impl<4>(neg_u, kernels, n, S, C, iterations, out);
    default: return mean_field_impl<0>(neg_u, kernels, n, S, C, iterations, out);
  }
}

}  // namespace f16
}  // namespace deeplab

#endif
