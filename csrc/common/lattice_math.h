// Per-point arithmetic of the permutohedral lattice (Adams, Baek and Davis,
// "Fast High-Dimensional Filtering Using the Permutohedral Lattice", 2010),
// shared verbatim by the CPU and CUDA kernels so both build the same lattice.
//
// A d-dimensional feature is lifted onto the hyperplane sum(x) = 0 of R^{d+1},
// the enclosing simplex is found by rounding to the nearest remainder-0 point
// and sorting the residuals, and the point's barycentric weights on the d+1
// simplex vertices are computed.  A vertex is identified by its first d
// integer coordinates (the last one is implied by the zero sum).
//
// The dimension argument ``d`` is a template type: callers pass a plain int, or a
// std::integral_constant<int, D> (see Dim below) so that the host builds a copy of
// each function with every loop bound known, for the dimensions DeepLab uses.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/hd.h"

namespace deeplab {
namespace lattice {

// A dimension fixed at compile time; converts to int wherever one is expected.
template <int D>
using Dim = std::integral_constant<int, D>;

// Scale of feature axis i so that the lattice's blur ([1/2 1 1/2] along each of
// the d+1 axes) approximates a unit-variance Gaussian (p.6 of the paper).
template <typename F>
DL_HD F axis_scale(int i, int d) {
  const double inv_std = std::sqrt(2.0 / 3.0) * (d + 1);
  return static_cast<F>(inv_std / std::sqrt(static_cast<double>((i + 1) * (i + 2))));
}

// Normalising constant of the sliced result: the blur kernel's self weight
// summed over the d+1 passes leaves a factor 1 + 2^-d.
template <typename F>
DL_HD F slice_alpha(int d) {
  return static_cast<F>(1.0 / (1.0 + std::pow(2.0, -d)));
}

// Embeds one feature vector ``f`` (length d); ``scale`` holds axis_scale(i, d)
// for i < d, computed once by the caller.  Outputs:
//   rem0[0..d]  the remainder-0 lattice point the simplex hangs off
//   rank[0..d]  the position of each coordinate's residual in sorted order
//   bary[0..d]  barycentric weight of simplex vertex r (bary needs d+2 slots)
// ``elevated`` is scratch of d+1 values.
template <typename F, typename DimT>
DL_HD void embed_point(const F* f, const F* scale, DimT d, F* elevated, int32_t* rem0, int32_t* rank,
                       F* bary) {
  // Lift: elevated = E f with E's rows chosen so the coordinates sum to zero.
  F sm = 0;
  for (int j = d; j > 0; --j) {
    const F cf = f[j - 1] * scale[j - 1];
    elevated[j] = sm - static_cast<F>(j) * cf;
    sm += cf;
  }
  elevated[0] = sm;

  // Nearest multiple of (d+1) per coordinate; the rounded point may leave the
  // hyperplane by ``sum`` units, which the rank correction below puts back.
  const F down = static_cast<F>(1) / static_cast<F>(d + 1);
  const F up = static_cast<F>(d + 1);
  int32_t sum = 0;
  for (int i = 0; i <= d; ++i) {
    const F v = down * elevated[i];
    const F hi = std::ceil(v) * up;
    const F lo = std::floor(v) * up;
    const int32_t r = static_cast<int32_t>((hi - elevated[i] < elevated[i] - lo) ? hi : lo);
    rem0[i] = r;
    sum += r / (d + 1);
  }

  // Sort the residuals (ties go to the later coordinate).
  for (int i = 0; i <= d; ++i) rank[i] = 0;
  for (int i = 0; i < d; ++i) {
    const F di = elevated[i] - static_cast<F>(rem0[i]);
    for (int j = i + 1; j <= d; ++j) {
      // Branch-free: the outcome is data-dependent and mispredicts half the time.
      const int32_t less = di < elevated[j] - static_cast<F>(rem0[j]) ? 1 : 0;
      rank[i] += less;
      rank[j] += 1 - less;
    }
  }
  for (int i = 0; i <= d; ++i) {
    rank[i] += sum;
    if (rank[i] < 0) {
      rank[i] += d + 1;
      rem0[i] += d + 1;
    } else if (rank[i] > d) {
      rank[i] -= d + 1;
      rem0[i] -= d + 1;
    }
  }

  // Barycentric coordinates (p.10 of the paper).
  for (int i = 0; i <= d + 1; ++i) bary[i] = 0;
  for (int i = 0; i <= d; ++i) {
    const F v = (elevated[i] - static_cast<F>(rem0[i])) * down;
    bary[d - rank[i]] += v;
    bary[d - rank[i] + 1] -= v;
  }
  bary[0] += static_cast<F>(1) + bary[d + 1];
}

// Key (first d integer coordinates) of vertex ``r`` of the simplex described by
// rem0/rank: the canonical simplex's vertex r shifted to rem0.
template <typename DimT>
DL_HD void vertex_key(const int32_t* rem0, const int32_t* rank, DimT d, int r, int32_t* key) {
  for (int i = 0; i < d; ++i)
    key[i] = rem0[i] + ((rank[i] <= d - r) ? r : r - (d + 1));
}

// Keys of the two neighbours of ``key`` along lattice axis ``axis`` (0..d):
// +1 on every coordinate but ``axis``, which moves by -d (and the reverse).
template <typename DimT>
DL_HD void neighbor_keys(const int32_t* key, DimT d, int axis, int32_t* n1, int32_t* n2) {
  for (int k = 0; k < d; ++k) {
    n1[k] = key[k] - 1;
    n2[k] = key[k] + 1;
  }
  if (axis < d) {
    n1[axis] = key[axis] + d;
    n2[axis] = key[axis] - d;
  }
}

template <typename DimT>
DL_HD uint64_t hash_key(const int32_t* key, DimT d) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < d; ++i) {
    h ^= static_cast<uint32_t>(key[i]);
    h *= 1099511628211ull;
  }
  return h ^ (h >> 29);
}

template <typename DimT>
DL_HD bool keys_equal(const int32_t* a, const int32_t* b, DimT d) {
  for (int i = 0; i < d; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

}  // namespace lattice
}  // namespace deeplab
