// CUDA permutohedral lattice: the same steps as csrc/cpu/permutohedral.h.
//
//   build:  embed every point (one thread each) -> insert the d+1 vertex keys of
//           every point into an open-addressing table with atomicCAS -> number
//           the distinct vertices with a prefix sum -> look up blur neighbours.
//   filter: splat (atomicAdd into vertex rows) -> blur along each of the d+1
//           axes (double buffered) -> slice (gather), out = base + result.
//
// Unlike the CPU path the channel stride is not padded (S = number of channels):
// threads map to (row, channel) pairs, so there are no vector lanes to fill.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include "common/lattice_math.h"

namespace deeplab {
namespace lattice_cuda {

constexpr int kMaxD = 16;  // feature dimensions handled by the fixed-size thread-local arrays
constexpr int kThreads = 256;

inline int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

struct Lattice {
  int d = 0;
  int64_t n = 0;
  int64_t m = 0;
  at::Tensor offset;   // int32 [n, d+1]  vertex id + 1 (row 0 of a value buffer is zero)
  at::Tensor splat_w;  // float [n, d+1]  barycentric weights (times an optional input scale)
  at::Tensor slice_w;  // float [n, d+1]  barycentric weights * alpha (times an output scale)
  at::Tensor blur_nb;  // int32 [d+1, m, 2] neighbour ids + 1 along each axis (0 = none)
};

template <typename F>
__global__ void embed_points_kernel(const F* __restrict__ features, const F* __restrict__ scale, int64_t n, int d,
                                    int32_t* __restrict__ keys, F* __restrict__ weight) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= n) return;
  F f[kMaxD], sc[kMaxD], elevated[kMaxD + 1], bary[kMaxD + 2];
  int32_t rem0[kMaxD + 1], rank[kMaxD + 1];
  for (int i = 0; i < d; ++i) {
    f[i] = features[p * d + i];
    sc[i] = scale[i];
  }
  lattice::embed_point<F>(f, sc, d, elevated, rem0, rank, bary);
  for (int r = 0; r <= d; ++r) {
    const int64_t e = p * (d + 1) + r;
    lattice::vertex_key(rem0, rank, d, r, keys + e * d);
    weight[e] = bary[r];
  }
}

// Entry e (a point's simplex corner) claims the first free slot of its key's probe
// run, or finds the entry that already holds an equal key.  Keys were written by the
// previous kernel, so comparing against another entry's key is safe.
__global__ void insert_keys_kernel(const int32_t* __restrict__ keys, int64_t entries, int d, int32_t* table,
                                   uint64_t mask, int32_t* __restrict__ rep) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= entries) return;
  const int32_t* key = keys + e * d;
  uint64_t h = lattice::hash_key(key, d) & mask;
  while (true) {
    const int32_t prev = atomicCAS(table + h, -1, static_cast<int32_t>(e));
    if (prev == -1) {
      rep[e] = static_cast<int32_t>(e);
      return;
    }
    if (lattice::keys_equal(keys + static_cast<int64_t>(prev) * d, key, d)) {
      rep[e] = prev;
      return;
    }
    h = (h + 1) & mask;
  }
}

__global__ void assign_vertices_kernel(const int32_t* __restrict__ rep, const int64_t* __restrict__ dense,
                                       int64_t entries, int32_t* __restrict__ offset,
                                       int32_t* __restrict__ vertex_entry) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= entries) return;
  const int32_t r = rep[e];
  offset[e] = static_cast<int32_t>(dense[r]);  // inclusive count: ids start at 1, 0 means "none"
  if (r == e) vertex_entry[dense[e] - 1] = static_cast<int32_t>(e);
}

__device__ __forceinline__ int32_t find_vertex(const int32_t* key, const int32_t* keys, int d, const int32_t* table,
                                               uint64_t mask, const int64_t* dense) {
  uint64_t h = lattice::hash_key(key, d) & mask;
  while (true) {
    const int32_t e = table[h];
    if (e < 0) return 0;
    if (lattice::keys_equal(keys + static_cast<int64_t>(e) * d, key, d)) return static_cast<int32_t>(dense[e]);
    h = (h + 1) & mask;
  }
}

__global__ void find_neighbors_kernel(const int32_t* __restrict__ keys, const int32_t* __restrict__ vertex_entry,
                                      int64_t m, int d, const int32_t* __restrict__ table, uint64_t mask,
                                      const int64_t* __restrict__ dense, int32_t* __restrict__ blur_nb) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= m * (d + 1)) return;
  const int64_t v = t % m;
  const int a = static_cast<int>(t / m);
  int32_t n1[kMaxD], n2[kMaxD];
  lattice::neighbor_keys(keys + static_cast<int64_t>(vertex_entry[v]) * d, d, a, n1, n2);
  blur_nb[(a * m + v) * 2 + 0] = find_vertex(n1, keys, d, table, mask, dense);
  blur_nb[(a * m + v) * 2 + 1] = find_vertex(n2, keys, d, table, mask, dense);
}

template <typename F>
__global__ void scale_slice_kernel(F* __restrict__ w, int64_t n, int dp1, F factor) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n * dp1) w[i] *= factor;
}

// Builds the lattice of n points with d-dimensional features (``features`` is a
// contiguous [n, d] tensor of the values' dtype, on the current device).
inline Lattice build_lattice(const at::Tensor& features) {
  TORCH_CHECK(features.size(1) <= kMaxD, "permutohedral lattice (CUDA): at most ", kMaxD,
              " feature dimensions, got ", features.size(1));
  Lattice L;
  L.n = features.size(0);
  L.d = static_cast<int>(features.size(1));
  const int d = L.d, dp1 = d + 1;
  const int64_t entries = L.n * dp1;
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto iopt = features.options().dtype(at::kInt);
  auto keys = at::empty({entries, d}, iopt);
  L.splat_w = at::empty({L.n, dp1}, features.options());
  std::vector<double> sc(d);
  for (int i = 0; i < d; ++i) sc[i] = lattice::axis_scale<double>(i, d);
  auto scale = at::tensor(sc, at::kDouble).to(features.options());

  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "permutohedral_embed_cuda", [&] {
    embed_points_kernel<scalar_t><<<blocks_for(L.n), kThreads, 0, stream>>>(
        features.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), L.n, d, keys.data_ptr<int32_t>(),
        L.splat_w.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  uint64_t cap = 1024;
  while (cap < static_cast<uint64_t>(2 * entries)) cap <<= 1;
  auto table = at::full({static_cast<int64_t>(cap)}, -1, iopt);
  auto rep = at::empty({entries}, iopt);
  insert_keys_kernel<<<blocks_for(entries), kThreads, 0, stream>>>(keys.data_ptr<int32_t>(), entries, d,
                                                                  table.data_ptr<int32_t>(), cap - 1,
                                                                  rep.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // Vertex ids: inclusive running count of the entries that own their key.
  auto owner = rep.eq(at::arange(entries, iopt)).to(at::kLong);
  auto dense = at::cumsum(owner, 0);
  L.m = entries > 0 ? dense[entries - 1].item<int64_t>() : 0;
  L.offset = at::empty({L.n, dp1}, iopt);
  auto vertex_entry = at::empty({std::max<int64_t>(L.m, 1)}, iopt);
  assign_vertices_kernel<<<blocks_for(entries), kThreads, 0, stream>>>(
      rep.data_ptr<int32_t>(), dense.data_ptr<int64_t>(), entries, L.offset.data_ptr<int32_t>(),
      vertex_entry.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  L.blur_nb = at::empty({dp1, L.m, 2}, iopt);
  if (L.m > 0) {
    find_neighbors_kernel<<<blocks_for(L.m * dp1), kThreads, 0, stream>>>(
        keys.data_ptr<int32_t>(), vertex_entry.data_ptr<int32_t>(), L.m, d, table.data_ptr<int32_t>(), cap - 1,
        dense.data_ptr<int64_t>(), L.blur_nb.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  L.slice_w = L.splat_w * lattice::slice_alpha<double>(d);
  return L;
}

template <typename F>
__global__ void splat_kernel(const int32_t* __restrict__ offset, const F* __restrict__ w, const F* __restrict__ in,
                             int64_t n, int dp1, int64_t S, F* __restrict__ buf) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n * dp1 * S) return;
  const int64_t k = t % S;
  const int64_t e = t / S;
  const int64_t p = e / dp1;
  atomicAdd(buf + static_cast<int64_t>(offset[e]) * S + k, w[e] * in[p * S + k]);
}

template <typename F>
__global__ void blur_kernel(const int32_t* __restrict__ nb, const F* __restrict__ src, int64_t m, int64_t S,
                            F* __restrict__ dst) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= m * S) return;
  const int64_t k = t % S;
  const int64_t v = t / S;
  const F a = src[static_cast<int64_t>(nb[2 * v]) * S + k];
  const F b = src[static_cast<int64_t>(nb[2 * v + 1]) * S + k];
  dst[(v + 1) * S + k] = src[(v + 1) * S + k] + F(0.5) * (a + b);
}

template <typename F>
__global__ void slice_kernel(const int32_t* __restrict__ offset, const F* __restrict__ w, const F* __restrict__ buf,
                             const F* base, int64_t n, int dp1, int64_t S, F* out) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n * S) return;
  const int64_t k = t % S;
  const int64_t p = t / S;
  F acc = base ? base[t] : F(0);
  for (int r = 0; r < dp1; ++r) {
    const int64_t e = p * dp1 + r;
    acc += w[e] * buf[static_cast<int64_t>(offset[e]) * S + k];
  }
  out[t] = acc;
}

// out = base + filter(in); in/out/base are contiguous [n, S] of the lattice's dtype
// and may alias.  ``reverse`` runs the blur axes backwards (the transposed filter).
template <typename F>
void filter(const Lattice& L, const F* in, F* out, int64_t S, bool reverse, const at::TensorOptions& opt,
            const F* base = nullptr) {
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int dp1 = L.d + 1;
  auto cur = at::zeros({L.m + 1, S}, opt);
  auto nxt = at::zeros({L.m + 1, S}, opt);
  splat_kernel<F><<<blocks_for(L.n * dp1 * S), kThreads, 0, stream>>>(
      L.offset.data_ptr<int32_t>(), L.splat_w.data_ptr<F>(), in, L.n, dp1, S, cur.data_ptr<F>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  for (int i = 0; i <= L.d; ++i) {
    const int a = reverse ? L.d - i : i;
    if (L.m > 0) {
      blur_kernel<F><<<blocks_for(L.m * S), kThreads, 0, stream>>>(
          L.blur_nb.data_ptr<int32_t>() + static_cast<int64_t>(a) * L.m * 2, cur.data_ptr<F>(), L.m, S,
          nxt.data_ptr<F>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    std::swap(cur, nxt);
  }
  slice_kernel<F><<<blocks_for(L.n * S), kThreads, 0, stream>>>(
      L.offset.data_ptr<int32_t>(), L.slice_w.data_ptr<F>(), cur.data_ptr<F>(), base, L.n, dp1, S, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace lattice_cuda
}  // namespace deeplab
