// The permutohedral embedding (lattice_math.h's embed_point) of eight float points at
// once, one point per lane of a v8f, for a dimension D fixed at compile time.
//
// Every lane goes through the same operations, in the same order, as embed_point with
// d = Dim<D> does for its point, so that the compiler contracts the same products into
// FMAs in each clone and the results are those of embed_point bit for bit:
//   - the lift accumulates from the last coordinate down;
//   - the barycentric weights are accumulated vertex slot by vertex slot in the order of
//     the coordinates, as embed_point's scatter does, with each update kept as
//     ``slot + diff * down`` (or ``slot - diff * down``) under a lane mask;
//   - ceil and floor are exact (truncation, then a correction by one).
// On x86 the block loop (embed_eights) is compiled for x86-64-v3 alone and runs where
// the CPU has it; embed8 and its helpers are always inlined into it.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/lattice_math.h"
#include "cpu/vec8.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX2__)
#define DL_SIMD_X86_V3 1
#define DL_SIMD_TARGET __attribute__((target("arch=x86-64-v3")))
#else
#define DL_SIMD_TARGET
#endif

namespace deeplab {
namespace lattice {
namespace simd {

// floor and ceil of eight floats.  Below 2^23 in magnitude, the truncation to int32
// is exact and the correction by one gives the result; from 2^23 up every float is
// an integer already (and may not fit an int32).
DL_VINLINE v8f floor8(v8f v) {
  const v8f t = __builtin_convertvector(__builtin_convertvector(v, v8i), v8f);
  const v8f a = v < 0 ? -v : v;
  const v8f fl = t > v ? t - 1.f : t;
  return a < 8388608.f ? fl : v;
}
DL_VINLINE v8f ceil8(v8f v) {
  const v8f t = __builtin_convertvector(__builtin_convertvector(v, v8i), v8f);
  const v8f a = v < 0 ? -v : v;
  const v8f cl = t < v ? t + 1.f : t;
  return a < 8388608.f ? cl : v;
}

// Embeds the points f[0 .. 8*D) (8 points, row-major) with ``scale`` = axis_scale(i, D)
// and writes their rem0, rank and weight rows (D+1 each, point-major), as embed_point
// followed by copying bary[0..D] would.
template <int D>
DL_VINLINE void embed8(const float* f, const float* scale, int32_t* rem0_out, int32_t* rank_out,
                       float* weight_out) {
  constexpr int dp1 = D + 1;
  // Transpose the features: x[j] holds coordinate j of the eight points.
  v8f x[D];
  {
    float t[D][8];
    for (int l = 0; l < 8; ++l)
      for (int j = 0; j < D; ++j) t[j][l] = f[l * D + j];
    std::memcpy(x, t, sizeof(x));
  }

  // Lift (embed_point's order: the last coordinate first).
  v8f el[dp1];
  v8f sm = {};
  for (int j = D; j > 0; --j) {
    const v8f cf = x[j - 1] * scale[j - 1];
    el[j] = sm - static_cast<float>(j) * cf;
    sm += cf;
  }
  el[0] = sm;

  // Nearest multiple of D+1.
  const float down = 1.f / static_cast<float>(dp1);
  const float up = static_cast<float>(dp1);
  v8i rem0[dp1];
  v8i sum = {};
  for (int i = 0; i <= D; ++i) {
    const v8f v = down * el[i];
    const v8f hi = ceil8(v) * up;
    const v8f lo = floor8(v) * up;
    const v8i r = __builtin_convertvector((hi - el[i] < el[i] - lo) ? hi : lo, v8i);
    rem0[i] = r;
    sum += r / dp1;
  }

  // Ranks of the residuals; a compare gives -1 (true) or 0 per lane.
  v8i rank[dp1];
  for (int i = 0; i <= D; ++i) rank[i] = v8i{};
  for (int i = 0; i < D; ++i) {
    const v8f di = el[i] - __builtin_convertvector(rem0[i], v8f);
    for (int j = i + 1; j <= D; ++j) {
      const v8i less = di < el[j] - __builtin_convertvector(rem0[j], v8f);
      rank[i] -= less;
      rank[j] += 1 + less;
    }
  }
  for (int i = 0; i <= D; ++i) {
    rank[i] += sum;
    const v8i neg = rank[i] < 0;
    const v8i over = rank[i] > D;
    const v8i step = (neg & dp1) - (over & dp1);
    rank[i] += step;
    rem0[i] += step;
  }

  // Barycentric weights: slot d - rank[i] gets +v, slot d - rank[i] + 1 gets -v, for i
  // in order (each slot is touched by one coordinate of each sign).
  v8f bary[D + 2];
  for (int k = 0; k <= D + 1; ++k) bary[k] = v8f{};
  for (int i = 0; i <= D; ++i) {
    const v8f diff = el[i] - __builtin_convertvector(rem0[i], v8f);
    const v8i slot = D - rank[i];
    for (int k = 0; k <= D; ++k) bary[k] = slot == k ? bary[k] + diff * down : bary[k];
    for (int k = 1; k <= D + 1; ++k) bary[k] = slot == k - 1 ? bary[k] - diff * down : bary[k];
  }
  bary[0] += 1.f + bary[D + 1];

  // Back to point-major rows.
  {
    int32_t tr[dp1][8], tk[dp1][8];
    float tw[dp1][8];
    std::memcpy(tr, rem0, sizeof(tr));
    std::memcpy(tk, rank, sizeof(tk));
    std::memcpy(tw, bary, sizeof(tw));
    for (int l = 0; l < 8; ++l)
      for (int i = 0; i <= D; ++i) {
        rem0_out[l * dp1 + i] = tr[i][l];
        rank_out[l * dp1 + i] = tk[i][l];
        weight_out[l * dp1 + i] = tw[i][l];
      }
  }
}

// Embeds points [b, e) eight at a time; the last (e - b) % 8 go through embed8 too,
// padded with zero features, so that every point takes the same arithmetic.  On x86
// this is compiled for x86-64-v3 (AVX2, FMA) only: baseline x86-64 would emulate the
// eight-lane selects at a loss, so there the caller keeps embed_point (see simd_ok).
template <int D>
DL_SIMD_TARGET void embed_eights(const float* features, const float* scale, int32_t* rem0, int32_t* rank,
                                 float* weight, int64_t b, int64_t e) {
  constexpr int dp1 = D + 1;
  for (; b + 8 <= e; b += 8)
    embed8<D>(features + b * D, scale, rem0 + b * dp1, rank + b * dp1, weight + b * dp1);
  if (b == e) return;
  const int left = static_cast<int>(e - b);
  float f[8 * D] = {};
  int32_t r0[8 * dp1], rk[8 * dp1];
  float w[8 * dp1];
  std::memcpy(f, features + b * D, sizeof(float) * left * D);
  embed8<D>(f, scale, r0, rk, w);
  std::memcpy(rem0 + b * dp1, r0, sizeof(int32_t) * left * dp1);
  std::memcpy(rank + b * dp1, rk, sizeof(int32_t) * left * dp1);
  std::memcpy(weight + b * dp1, w, sizeof(float) * left * dp1);
}

// Whether embed_eights runs here: on x86, where the CPU has AVX2 and FMA; elsewhere
// always (GCC vector extensions map to the target's own vectors).
inline bool simd_ok() {
#if defined(__x86_64__) || defined(__i386__)
#if defined(__AVX2__) && defined(__FMA__)
  return true;
#elif defined(DL_SIMD_X86_V3)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
#else
  return true;
#endif
}

// The largest dimension with an eight-point copy (permutohedral.h's kMaxEmbedDim).
constexpr int kMaxDim = 16;

// embed_eights for the dimension ``d`` (an int, or Dim<D>) where this CPU runs it and d
// is at most kMaxDim; returns false, touching nothing, otherwise (the caller then embeds
// one point at a time).  A runtime d is dispatched to its fixed Dim<d> copy.
template <int D = 1, typename DimT>
bool embed_eights_for(DimT d, const float* features, const float* scale, int32_t* rem0, int32_t* rank,
                      float* weight, int64_t b, int64_t e) {
  if constexpr (!std::is_same<DimT, int>::value) {
    if constexpr (DimT::value > kMaxDim) return false;
    else {
      if (!simd_ok()) return false;
      embed_eights<DimT::value>(features, scale, rem0, rank, weight, b, e);
      return true;
    }
  } else if constexpr (D > kMaxDim) {
    return false;
  } else {
    if (d != D) return embed_eights_for<D + 1>(d, features, scale, rem0, rank, weight, b, e);
    return embed_eights_for(Dim<D>{}, features, scale, rem0, rank, weight, b, e);
  }
}

}  // namespace simd
}  // namespace lattice
}  // namespace deeplab
