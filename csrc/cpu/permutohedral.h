// CPU permutohedral lattice: build once per feature set, then filter any number
// of value channels through it (splat -> blur along d+1 axes -> slice).
//
// Values are stored point-major with the channel stride padded to kLane so the
// inner loops run over fixed-width blocks the compiler vectorises.  Splatting is
// done as a gather over a per-vertex list of contributing points, so every stage
// parallelises without atomics.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "common/lattice_math.h"
#include "cpu/big_alloc.h"
#include "cpu/embed_simd.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__CUDACC__)
// Hot loops get an x86-64-v3 (AVX2, FMA) clone chosen at load time by CPU features; the default clone stays
// baseline x86-64 so the library runs everywhere.
#define DL_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DL_HOT
#endif

namespace deeplab {
namespace lattice {

constexpr int64_t kLane = 8;
// Feature dimensions up to this embed with scratch on the stack.
constexpr int kMaxEmbedDim = 16;
static_assert(simd::kMaxDim == kMaxEmbedDim, "every dimension embedded with stack scratch has an eight-point copy");
// How many rows ahead the gather loops prefetch: lattice rows are reached
// through index arrays, which the hardware prefetcher cannot follow.
constexpr int64_t kAhead = 12;

template <typename T>
inline void prefetch_row(const T* row, int64_t S) {
#if defined(__GNUC__)
  for (int64_t k = 0; k < S; k += 64 / static_cast<int64_t>(sizeof(T))) __builtin_prefetch(row + k);
#endif
}
inline int64_t padded(int64_t v) { return (v + kLane - 1) / kLane * kLane; }

template <typename T>
struct Lattice {
  int d = 0;
  int64_t n = 0;  // points
  int64_t m = 0;  // lattice vertices
  // Vertex ids are stored +1: row 0 of every value buffer is kept at zero and
  // stands for "no such vertex", which saves a branch in the blur.
  big_vector<int32_t> offset;      // n*(d+1)
  big_vector<T> weight;            // n*(d+1) barycentric weights
  big_vector<T> slice_w;           // n*(d+1) weights used when slicing (alpha folded in)
  big_vector<int32_t> blur_nb;     // (d+1)*m*2
  // The vertices of each axis as chains along it (build_chains): (d+1) runs in slots
  // of m+1 ids (+1), each run listing chain_len[axis] vertices, every vertex with a
  // neighbour along the axis once, chain after chain, from the vertex with no "n2"
  // neighbour along its "n1" neighbours; the last vertex of a chain is negated, and
  // each run ends with a 0.
  big_vector<int32_t> chain;
  std::vector<int64_t> chain_len;
  big_vector<int64_t> gather_ptr;  // m+1
  big_vector<int32_t> gather_pt;   // n*(d+1)
  big_vector<T> gather_w;          // n*(d+1)
};

// Open-addressing map from vertex key (d int32 coordinates) to dense id, for keys
// that do not pack into 64 bits (PackedTable below is the usual one).  Slots hold the
// id and the upper hash bits only (8 bytes), so probing stays within a small array;
// the keys themselves live in insertion order, which is also the vertex order.
template <typename DimT>
class VertexTable {
 public:
  VertexTable(DimT d, int64_t expected) : d_(d) {
    uint64_t cap = 1024;
    while (cap < static_cast<uint64_t>(expected)) cap <<= 1;
    rehash(cap);
  }
  int64_t size() const { return static_cast<int64_t>(keys_.size() / (d_ > 0 ? d_ : 1)); }
  const int32_t* key(int64_t id) const { return keys_.data() + id * d_; }

  int32_t find(const int32_t* k) const {
    const uint64_t h = hash_key(k, d_);
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot s = slots_[i];
      if (s.id < 0) return -1;
      if (s.tag == tag && keys_equal(key(s.id), k, d_)) return s.id;
    }
  }

  // find() for ``count`` keys (row-major, d each) at once: hashing every key and
  // prefetching its slot, then its candidate key, hides most of the cache misses
  // of these random probes.
  void find_batch(const int32_t* ks, int count, int32_t* out) const {
    constexpr int kMax = 32;
    uint64_t h[kMax];
    for (int i = 0; i < count; ++i) {
      h[i] = hash_key(ks + i * d_, d_);
#if defined(__GNUC__)
      __builtin_prefetch(&slots_[h[i] & mask_]);
#endif
    }
    int32_t first[kMax];
    for (int i = 0; i < count; ++i) {
      first[i] = slots_[h[i] & mask_].id;
#if defined(__GNUC__)
      if (first[i] >= 0) __builtin_prefetch(key(first[i]));
#endif
    }
    for (int i = 0; i < count; ++i) {
      const uint32_t tag = static_cast<uint32_t>(h[i] >> 32);
      const Slot s0 = slots_[h[i] & mask_];
      if (s0.id < 0) {
        out[i] = -1;
      } else if (s0.tag == tag && keys_equal(key(s0.id), ks + i * d_, d_)) {
        out[i] = s0.id;
      } else {
        out[i] = find(ks + i * d_);
      }
    }
  }

  int32_t find_or_insert(const int32_t* k) {
    const uint64_t h = hash_key(k, d_);
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot s = slots_[i];
      if (s.id < 0) {
        const int32_t id = static_cast<int32_t>(size());
        keys_.insert(keys_.end(), k, k + d_);
        slots_[i] = Slot{tag, id};
        // Keep the load factor under 1/2 so probe runs stay short.
        if (static_cast<uint64_t>(id + 1) * 2 > mask_ + 1) rehash((mask_ + 1) * 2);
        return id;
      }
      if (s.tag == tag && keys_equal(key(s.id), k, d_)) return s.id;
    }
  }

 private:
  struct Slot {
    uint32_t tag;
    int32_t id;
  };
  void rehash(uint64_t cap) {
    slots_.assign(cap, Slot{0, -1});
    mask_ = cap - 1;
    const int64_t m = size();
    for (int64_t id = 0; id < m; ++id) {
      const uint64_t h = hash_key(key(id), d_);
      uint64_t i = h & mask_;
      while (slots_[i].id >= 0) i = (i + 1) & mask_;
      slots_[i] = Slot{static_cast<uint32_t>(h >> 32), static_cast<int32_t>(id)};
    }
  }
  DimT d_;
  uint64_t mask_ = 0;
  std::vector<Slot> slots_;
  std::vector<int32_t> keys_;
};

// Vertex keys packed into one 64-bit word, 64/d bits per coordinate with a bias,
// when every coordinate fits: one compare per key, and the key sits in the hash slot
// itself, so a lookup is one cache miss instead of two (slot, then stored key).
// Subtracting 1 from every field and adding d+1 to one is then plain arithmetic on
// the word, as long as no field leaves its range, which the bias guarantees.
struct PackedKeys {
  int bits = 0;
  uint64_t ones = 0;  // 1 in every field
  int64_t bias = 0;
  // Whether coordinates within +-reach fit (with a margin for the neighbour steps).
  static PackedKeys make(int d, int64_t reach) {
    PackedKeys k;
    if (d < 1 || d > kMaxEmbedDim) return k;
    const int bits = 64 / d;
    if (bits < 63 && reach + d + 2 >= (int64_t{1} << (bits - 1))) return k;
    k.bits = bits;
    k.bias = bits >= 63 ? (int64_t{1} << 31) : (int64_t{1} << (bits - 1));
    for (int i = 0; i < d; ++i) k.ones |= uint64_t{1} << (i * bits);
    return k;
  }
  bool ok() const { return bits > 0; }
  template <typename DimT>
  uint64_t pack(const int32_t* key, DimT d) const {
    uint64_t w = 0;
    for (int i = 0; i < d; ++i) w |= static_cast<uint64_t>(key[i] + bias) << (i * bits);
    return w;
  }
  // The "n1" neighbour along ``axis``: -1 on every coordinate, +d on the axis.
  template <typename DimT>
  uint64_t neighbor(uint64_t w, DimT d, int axis) const {
    w -= ones;
    if (axis < d) w += static_cast<uint64_t>(d + 1) << (axis * bits);
    return w;
  }
};

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

// Open-addressing map from packed key to dense id (ids in insertion order).
class PackedTable {
 public:
  explicit PackedTable(int64_t expected) {
    uint64_t cap = 1024;
    while (cap < static_cast<uint64_t>(expected) * 2) cap <<= 1;
    rehash(cap);
  }

  void prefetch(uint64_t k) const {
#if defined(__GNUC__)
    __builtin_prefetch(&slots_[mix64(k) & mask_]);
#endif
  }

  int32_t find(uint64_t k) const {
    for (uint64_t i = mix64(k) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.key == k) return s.id;
    }
  }
  int64_t size() const { return static_cast<int64_t>(keys_.size()); }
  uint64_t key(int64_t id) const { return keys_[id]; }

  int32_t find_or_insert(uint64_t k) {
    for (uint64_t i = mix64(k) & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.id < 0) {
        const int32_t id = static_cast<int32_t>(keys_.size());
        keys_.push_back(k);
        s = Slot{k, id};
        if (static_cast<uint64_t>(id + 1) * 2 > mask_ + 1) rehash((mask_ + 1) * 2);
        return id;
      }
      if (s.key == k) return s.id;
    }
  }

 private:
  struct Slot {
    uint64_t key;
    int32_t id;
  };
  void rehash(uint64_t cap) {
    slots_.assign(cap, Slot{0, -1});
    mask_ = cap - 1;
    for (int64_t id = 0; id < size(); ++id) {
      uint64_t i = mix64(keys_[id]) & mask_;
      while (slots_[i].id >= 0) i = (i + 1) & mask_;
      slots_[i] = Slot{keys_[id], static_cast<int32_t>(id)};
    }
  }
  uint64_t mask_ = 0;
  big_vector<Slot> slots_;
  big_vector<uint64_t> keys_;
};

// Embeds points [b, e) (lattice_math.h's embed_point), writing their simplex
// (rem0, rank) and barycentric weights; a hot-loop clone so that rounding compiles
// to single instructions.  Float points with d up to kMaxEmbedDim go eight at a time
// through embed_simd.h, which gives embed_point's results for Dim<d> bit for bit (with
// d known at compile time in every case: a runtime d is dispatched to its Dim<d>);
// double points, larger d, and x86 CPUs without AVX2, one at a time.
template <typename T, typename DimT>
DL_HOT void embed_range(const T* features, const T* scale, DimT d, int32_t* rem0, int32_t* rank, T* weight,
                        int64_t b, int64_t e) {
  const int dp1 = d + 1;
  if constexpr (std::is_same<T, float>::value) {
    if (simd::embed_eights_for(d, features, scale, rem0, rank, weight, b, e)) return;
  }
  T elevated[kMaxEmbedDim + 1], bary[kMaxEmbedDim + 2];
  std::vector<T> big_e, big_b;
  T* el = elevated;
  T* ba = bary;
  if (d > kMaxEmbedDim) {
    big_e.resize(dp1);
    big_b.resize(dp1 + 1);
    el = big_e.data();
    ba = big_b.data();
  }
  for (int64_t p = b; p < e; ++p) {
    embed_point<T>(features + p * d, scale, d, el, rem0 + p * dp1, rank + p * dp1, ba);
    for (int r = 0; r < dp1; ++r) weight[p * dp1 + r] = ba[r];
  }
}

// Vertex ids for d = 2 without a hash table: the keys (two coordinates) of the vertices of
// n points fill a box of Z^2 only a few times larger than their count (a third of the
// integer pairs are lattice points), so a dense grid over the box maps a key to its id
// with one read, and a neighbour is a fixed step in the grid.  Ids follow the scan
// order, as in the hashed build, so the lattice is the same.  Fills offset, m and the
// "n1" neighbours; returns false, touching nothing, when the box is too large.
template <typename T>
bool index_grid2(const int32_t* rem0, const int32_t* rank, int64_t n, Lattice<T>& L) {
  const Dim<2> d;
  constexpr int64_t dp1 = 3;
  big_vector<int32_t> keys(n * dp1 * 2);
  at::parallel_for(0, n, 8192, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p)
      for (int r = 0; r < dp1; ++r) vertex_key(rem0 + p * dp1, rank + p * dp1, d, r, keys.data() + (p * dp1 + r) * 2);
  });
  int32_t lo[2] = {0, 0}, hi[2] = {0, 0};
  if (n > 0)
    for (int c = 0; c < 2; ++c) lo[c] = hi[c] = keys[c];
  for (int64_t i = 0; i < n * dp1; ++i)
    for (int c = 0; c < 2; ++c) {
      lo[c] = std::min(lo[c], keys[i * 2 + c]);
      hi[c] = std::max(hi[c], keys[i * 2 + c]);
    }
  // A margin of d + 1 so that every neighbour step stays inside the grid.
  const int64_t w0 = int64_t{hi[0]} - lo[0] + 1 + 2 * dp1, w1 = int64_t{hi[1]} - lo[1] + 1 + 2 * dp1;
  if (w0 * w1 > 16 * n * dp1 + 4096 || w0 * w1 >= (int64_t{1} << 31)) return false;
  big_vector<int32_t> grid(w0 * w1, 0);  // id + 1, 0 for none
  std::vector<int32_t> cell;              // grid cell of each vertex
  cell.reserve(n);
  for (int64_t i = 0; i < n * dp1; ++i) {
    const int32_t c = static_cast<int32_t>((keys[i * 2] - lo[0] + dp1) * w1 + (keys[i * 2 + 1] - lo[1] + dp1));
    int32_t& g = grid[c];
    if (!g) {
      cell.push_back(c);
      g = static_cast<int32_t>(cell.size());
    }
    L.offset[i] = g;
  }
  const int64_t m = static_cast<int64_t>(cell.size());
  L.m = m;
  L.blur_nb.assign(dp1 * m * 2, 0);
  // n1 along axis a: +d on coordinate a (a < d), -1 on the other coordinates.
  const int64_t step[dp1] = {2 * w1 - 1, -w1 + 2, -w1 - 1};
  for (int a = 0; a < dp1; ++a) {
    int32_t* nb = L.blur_nb.data() + a * m * 2;
    for (int64_t v = 0; v < m; ++v) nb[v * 2] = grid[cell[v] + step[a]];
  }
  return true;
}

// Builds the lattice of ``n`` points with ``d``-dimensional features (row-major).
// ``row``: when the points are an image in scan order, its width (a hint that
// speeds the build up; 0 for none).
template <typename T, typename DimT>
void build_lattice_impl(const T* features, int64_t n, DimT d, Lattice<T>& L, int64_t row) {
  L.d = d;
  L.n = n;
  const int64_t dp1 = d + 1;
  big_vector<int32_t> rem0(n * dp1), rank(n * dp1);
  L.offset.assign(n * dp1, 0);
  L.weight.assign(n * dp1, T(0));

  // 1. Embed every point (independent per point).
  std::vector<T> scale(d);
  for (int i = 0; i < d; ++i) scale[i] = axis_scale<T>(i, d);
  at::parallel_for(0, n, 8192, [&](int64_t b, int64_t e) {
    embed_range(features, scale.data(), d, rem0.data(), rank.data(), L.weight.data(), b, e);
  });

  // 2. Give each distinct vertex an id, sequentially so that ids follow the
  //    scan order of the points, which keeps lattice neighbours close in memory.
  //    Neighbouring points mostly share simplex corners, which are reused before
  //    the table is consulted.
  // 3. Neighbours along each axis.  Only the "n1" neighbour (key - 1 everywhere,
  //    + d on the axis) is looked up; the opposite neighbour relation is its
  //    inverse: if n1(v) = u along an axis, then n2(u) = v.
  // Keys that fit in 64 bits (PackedKeys) take PackedTable; others VertexTable,
  // where each corner is compared only with the same corner of the previous point.
  int64_t reach = 0;
  const bool gridded = d == 2 && index_grid2(rem0.data(), rank.data(), n, L);
  if (!gridded)
    for (int64_t i = 0; i < n * dp1; ++i) reach = std::max<int64_t>(reach, std::llabs(rem0[i]));
  const PackedKeys pk = PackedKeys::make(d, reach + dp1);
  if (gridded) {
    // index_grid2 did it all.
  } else if (pk.ok()) {
    // Points on an image grid (``row`` > 0) also share corners with the point one
    // row up, not always as the same corner index: each corner is compared with
    // every corner of the previous point and of the point above before the table.
    // The keys are computed first (in parallel), so that the table slots of the
    // keys a few points ahead can be prefetched.
    big_vector<uint64_t> keys(n * dp1);
    at::parallel_for(0, n, 8192, [&](int64_t b, int64_t e) {
      int32_t key[kMaxEmbedDim];
      for (int64_t p = b; p < e; ++p)
        for (int r = 0; r <= d; ++r) {
          vertex_key(rem0.data() + p * dp1, rank.data() + p * dp1, d, r, key);
          keys[p * dp1 + r] = pk.pack(key, d);
        }
    });
    PackedTable table(2 * n);
    constexpr int64_t kAheadPoints = 8;
    for (int64_t p = 0; p < n; ++p) {
      if (p + kAheadPoints < n)
        for (int r = 0; r <= d; ++r) table.prefetch(keys[(p + kAheadPoints) * dp1 + r]);
      const uint64_t* kp = keys.data() + p * dp1;
      const int64_t near[2] = {p - 1, row > 0 ? p - row : -1};
      for (int r = 0; r <= d; ++r) {
        const uint64_t k = kp[r];
        int32_t id = 0;
        for (int c = 0; c < 2 && !id; ++c) {
          if (near[c] < 0) continue;
          const uint64_t* kq = keys.data() + near[c] * dp1;
          for (int s2 = 0; s2 <= d; ++s2)
            if (kq[s2] == k) {
              id = L.offset[near[c] * dp1 + s2];
              break;
            }
        }
        L.offset[p * dp1 + r] = id ? id : table.find_or_insert(k) + 1;
      }
    }
    L.m = table.size();
    const int64_t m = L.m;
    L.blur_nb.assign(dp1 * m * 2, 0);
    at::parallel_for(0, m, 4096, [&](int64_t b, int64_t e) {
      // Software-pipelined: the slot of the lookup kAheadKeys ahead is prefetched.
      constexpr int64_t kAheadKeys = 24;
      for (int a = 0; a <= d; ++a) {
        int32_t* nb = L.blur_nb.data() + static_cast<int64_t>(a) * m * 2;
        for (int64_t v = b; v < std::min(e, b + kAheadKeys); ++v) table.prefetch(pk.neighbor(table.key(v), d, a));
        for (int64_t v = b; v < e; ++v) {
          if (v + kAheadKeys < e) table.prefetch(pk.neighbor(table.key(v + kAheadKeys), d, a));
          nb[v * 2] = table.find(pk.neighbor(table.key(v), d, a)) + 1;
        }
      }
    });
  } else {
    VertexTable<DimT> table(d, n);
    std::vector<int32_t> key(d), prev_keys(static_cast<size_t>(dp1) * d, 0);
    for (int64_t p = 0; p < n; ++p) {
      for (int r = 0; r <= d; ++r) {
        vertex_key(rem0.data() + p * dp1, rank.data() + p * dp1, d, r, key.data());
        int32_t* prev = prev_keys.data() + r * d;
        if (p > 0 && keys_equal(prev, key.data(), d)) {
          L.offset[p * dp1 + r] = L.offset[(p - 1) * dp1 + r];
          continue;
        }
        L.offset[p * dp1 + r] = table.find_or_insert(key.data()) + 1;
        std::copy(key.begin(), key.end(), prev);
      }
    }
    L.m = table.size();
    const int64_t m = L.m;
    L.blur_nb.assign(dp1 * m * 2, 0);
    at::parallel_for(0, m, 4096, [&](int64_t b, int64_t e) {
      constexpr int kBatch = 32;
      std::vector<int32_t> batch(static_cast<size_t>(kBatch) * d), n2(d), found(kBatch);
      for (int a = 0; a <= d; ++a) {
        int32_t* nb = L.blur_nb.data() + static_cast<int64_t>(a) * m * 2;
        for (int64_t v0 = b; v0 < e; v0 += kBatch) {
          const int cnt = static_cast<int>(std::min<int64_t>(kBatch, e - v0));
          for (int i = 0; i < cnt; ++i)
            neighbor_keys(table.key(v0 + i), d, a, batch.data() + i * d, n2.data());
          table.find_batch(batch.data(), cnt, found.data());
          for (int i = 0; i < cnt; ++i) nb[(v0 + i) * 2] = found[i] + 1;
        }
      }
    });
  }
  const int64_t m = L.m;
  // The axes are independent: one task each.  A vertex without "n1" writes to a
  // scratch word instead of taking a branch: about half of them have none, in no
  // predictable order.
  at::parallel_for(0, dp1, 1, [&](int64_t a0, int64_t a1) {
    int32_t none = 0;
    for (int64_t a = a0; a < a1; ++a) {
      int32_t* nb = L.blur_nb.data() + a * m * 2;
      for (int64_t v = 0; v < m; ++v) {
        const int32_t u = nb[v * 2];
        int32_t* n2 = u > 0 ? nb + static_cast<int64_t>(u - 1) * 2 + 1 : &none;
        *n2 = static_cast<int32_t>(v + 1);
      }
    }
  });

  // 4. Invert offset into per-vertex contributor lists (splat as gather).
  //    The corners are cut into one chunk per thread: each chunk counts its
  //    contributors per vertex, the counts give every chunk its own run of slots
  //    within each vertex's list (chunks in scan order, so the lists are the same
  //    for any thread count), and each chunk fills its runs.
  const int64_t total = n * dp1;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), total / 65536));
  big_vector<int32_t> count(chunks * m, 0);  // then: the chunk's first slot within the vertex's list
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int32_t* cnt = count.data() + c * m;
      for (int64_t i = total * c / chunks; i < total * (c + 1) / chunks; ++i) ++cnt[L.offset[i] - 1];
    }
  });
  L.gather_ptr.assign(m + 1, 0);
  for (int64_t v = 0; v < m; ++v) {
    int64_t k = L.gather_ptr[v];
    for (int64_t c = 0; c < chunks; ++c) {
      const int32_t here = count[c * m + v];
      count[c * m + v] = static_cast<int32_t>(k - L.gather_ptr[v]);
      k += here;
    }
    L.gather_ptr[v + 1] = k;
  }
  // gather_ptr[v] .. gather_ptr[v+1] now bounds vertex v's contributors.
  L.gather_pt.resize(total);
  L.gather_w.resize(total);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int32_t* at_ = count.data() + c * m;
      for (int64_t i = total * c / chunks; i < total * (c + 1) / chunks; ++i) {
        const int64_t v = L.offset[i] - 1;
        const int64_t slot = L.gather_ptr[v] + at_[v]++;
        L.gather_pt[slot] = static_cast<int32_t>(i / dp1);
        L.gather_w[slot] = L.weight[i];
      }
    }
  });
  const T alpha = slice_alpha<T>(d);
  L.slice_w.resize(n * dp1);
  at::parallel_for(0, n * dp1, 65536, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) L.slice_w[i] = L.weight[i] * alpha;
  });
}

template <typename T>
void build_lattice(const T* features, int64_t n, int d, Lattice<T>& L, int64_t row = 0) {
  // The dimensions of DeepLab's kernels (positional 2, bilateral 5) and of RGB-only
  // features get a copy with every loop bound fixed.
  switch (d) {
    case 2: return build_lattice_impl(features, n, Dim<2>{}, L, row);
    case 3: return build_lattice_impl(features, n, Dim<3>{}, L, row);
    case 5: return build_lattice_impl(features, n, Dim<5>{}, L, row);
    default: return build_lattice_impl(features, n, d, L, row);
  }
}

// Lists one axis' chains into ``out`` (m + 1 ids) from that axis' neighbours ``nb``,
// and returns how many vertices it listed.  A vertex with neither neighbour is left
// out: the blur leaves its row as it is (a third of a bilateral lattice's vertices
// along each axis).  Following a chain is a series of dependent reads of nb.  Short
// chains (the bilateral kernel's, a read or two each) are followed one at a time, in
// order: the core overlaps each with the next.  Long ones (the positional kernel's,
// hundreds of vertices) are followed kChainLanes at a time, side by side so that their
// reads overlap, each written out whole when it ends.  The chains' order in a run does
// not change the blur.
inline int64_t list_chains(const int32_t* nb, int64_t m, int32_t* out) {
  constexpr int kChainLanes = 16;
  // The first vertex of a chain has no "n2"; one that has no "n1" either is alone.
  auto first = [&](int64_t v) { return nb[v * 2 + 1] <= 0 && nb[v * 2] > 0; };
  int64_t k = 0, chains = 0, alone = 0;
  for (int64_t v = 0; v < m; ++v) {
    chains += first(v);
    alone += nb[v * 2 + 1] <= 0 && nb[v * 2] <= 0;
  }
  if (chains * 8 > m - alone) {
    // The first vertices, gathered without a branch; the second vertex of the chain
    // kAheadChains ahead is prefetched, as the walk cannot start its read any earlier.
    constexpr int64_t kAheadChains = 16;
    std::vector<int32_t> firsts(chains + 1);
    int64_t h = 0;
    for (int64_t v = 0; v < m; ++v) {
      firsts[h] = static_cast<int32_t>(v);
      h += first(v);
    }
    for (int64_t c = 0; c < chains; ++c) {
#if defined(__GNUC__)
      if (c + kAheadChains < chains) __builtin_prefetch(&nb[(nb[firsts[c + kAheadChains] * 2] - 1) * 2]);
#endif
      for (int32_t u = firsts[c] + 1;;) {
        const int32_t next = nb[(u - 1) * 2];
        out[k++] = next > 0 ? u : -u;
        if (next <= 0) break;
        u = next;
      }
    }
  } else {
    int64_t scan = 0;
    // The first vertex (+1) of the next chain not yet followed; 0 after the last.
    auto next_first = [&]() -> int32_t {
      while (scan < m && !first(scan)) ++scan;
      return scan < m ? static_cast<int32_t>(++scan) : 0;
    };
    std::vector<int32_t> walked[kChainLanes];
    int32_t at_[kChainLanes];
    int live = 0;
    for (int l = 0; l < kChainLanes; ++l) live += (at_[l] = next_first()) != 0;
    while (live > 0) {
      for (int l = 0; l < kChainLanes; ++l) {
        const int32_t u = at_[l];
        if (!u) continue;
        const int32_t next = nb[(u - 1) * 2];
        walked[l].push_back(next > 0 ? u : -u);
        if (next > 0) {
          at_[l] = next;
          continue;
        }
        std::copy(walked[l].begin(), walked[l].end(), out + k);
        k += static_cast<int64_t>(walked[l].size());
        walked[l].clear();
        live -= (at_[l] = next_first()) == 0;
      }
    }
  }
  // Every other vertex is in exactly one chain: n1 is one-to-one and never returns to
  // a vertex along an axis (each step adds d to the axis' coordinate).
  TORCH_INTERNAL_ASSERT(k == m - alone, "build_chains: lists ", k, " of ", m - alone, " vertices");
  out[k] = 0;
  return k;
}

// Fills L.chain and L.chain_len from L.blur_nb, one task per axis.  A blur along one
// axis over a chain needs each row once (the previous row's value is kept), instead
// of three reads per vertex.
template <typename T>
void build_chains(Lattice<T>& L) {
  const int64_t m = L.m, dp1 = L.d + 1;
  L.chain.resize(dp1 * (m + 1));
  L.chain_len.assign(dp1, 0);
  at::parallel_for(0, dp1, 1, [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a)
      L.chain_len[a] = list_chains(L.blur_nb.data() + a * m * 2, m, L.chain.data() + a * (m + 1));
  });
}

// Where a range [b, e) of one axis' chain run is cut so that every chain lies in
// exactly one part: the start of the first chain that begins at or after b.
inline int64_t chain_cut(const int32_t* run, int64_t b) {
  while (b > 0 && run[b - 1] > 0) ++b;
  return b;
}

// The lattice filter of ones, K 1 (each point's row sum), with one channel: the
// normaliser of a CRF kernel.  The same splat -> blur -> slice as filter(), on
// scalars.  Call it before scale_lattice().
template <typename T>
big_vector<T> filter_ones(const Lattice<T>& L) {
  const int dp1 = L.d + 1;
  const int64_t n = L.n, m = L.m;
  big_vector<T> a(m + 1, T(0)), b(m + 1, T(0));
  at::parallel_for(0, m, 16384, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      T s = 0;
      for (int64_t j = L.gather_ptr[v]; j < L.gather_ptr[v + 1]; ++j) s += L.gather_w[j];
      a[v + 1] = s;
    }
  });
  for (int ax = 0; ax <= L.d; ++ax) {
    const int32_t* nb = L.blur_nb.data() + static_cast<int64_t>(ax) * m * 2;
    at::parallel_for(0, m, 16384, [&](int64_t v0, int64_t v1) {
      for (int64_t v = v0; v < v1; ++v) b[v + 1] = a[v + 1] + T(0.5) * (a[nb[2 * v]] + a[nb[2 * v + 1]]);
    });
    std::swap(a, b);
  }
  big_vector<T> out(n);
  at::parallel_for(0, n, 16384, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      T s = 0;
      for (int r = 0; r < dp1; ++r) s += L.slice_w[p * dp1 + r] * a[L.offset[p * dp1 + r]];
      out[p] = s;
    }
  });
  return out;
}

// Folds per-point factors into the splat (``in_scale``) and slice (``out_scale``)
// weights, so filter() computes out_scale * K (in_scale * values) at no extra
// cost.  Either may be null.
template <typename T>
void scale_lattice(Lattice<T>& L, const T* in_scale, const T* out_scale) {
  const int dp1 = L.d + 1;
  if (in_scale)
    at::parallel_for(0, static_cast<int64_t>(L.gather_w.size()), 65536, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) L.gather_w[j] *= in_scale[L.gather_pt[j]];
    });
  if (out_scale)
    at::parallel_for(0, L.n, 16384, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p)
        for (int r = 0; r < dp1; ++r) L.slice_w[p * dp1 + r] *= out_scale[p];
    });
}

// Value buffers reused across filter calls on one lattice.
template <typename T>
struct Workspace {
  std::vector<T> a, b;
  void ensure(int64_t rows, int64_t stride) {
    const size_t need = static_cast<size_t>(rows) * stride;
    if (a.size() < need) {
      a.assign(need, T(0));
      b.assign(need, T(0));
    }
    std::fill(a.begin(), a.begin() + stride, T(0));
    std::fill(b.begin(), b.begin() + stride, T(0));
  }
};

template <typename T>
DL_HOT void splat_range(const Lattice<T>& L, const T* __restrict__ in, int64_t S, T* __restrict__ buf,
                        int64_t v0, int64_t v1) {
  for (int64_t v = v0; v < v1; ++v) {
    T* __restrict__ dst = buf + (v + 1) * S;
    for (int64_t k = 0; k < S; ++k) dst[k] = T(0);
    const int64_t end = L.gather_ptr[v1 < L.m ? v1 : L.m];
    for (int64_t j = L.gather_ptr[v]; j < L.gather_ptr[v + 1]; ++j) {
      if (j + kAhead < end) prefetch_row(in + static_cast<int64_t>(L.gather_pt[j + kAhead]) * S, S);
      const T w = L.gather_w[j];
      const T* __restrict__ src = in + static_cast<int64_t>(L.gather_pt[j]) * S;
      for (int64_t k0 = 0; k0 < S; k0 += kLane)
        for (int64_t k = k0; k < k0 + kLane; ++k) dst[k] += w * src[k];
    }
  }
}

template <typename T>
DL_HOT void blur_range(const int32_t* nb, const T* __restrict__ src, int64_t S, T* __restrict__ dst,
                       int64_t v0, int64_t v1) {
  for (int64_t v = v0; v < v1; ++v) {
    const T* __restrict__ c = src + (v + 1) * S;
    const T* __restrict__ p1 = src + static_cast<int64_t>(nb[2 * v]) * S;
    const T* __restrict__ p2 = src + static_cast<int64_t>(nb[2 * v + 1]) * S;
    T* __restrict__ o = dst + (v + 1) * S;
    if (v + kAhead < v1) {
      prefetch_row(src + static_cast<int64_t>(nb[2 * (v + kAhead)]) * S, S);
      prefetch_row(src + static_cast<int64_t>(nb[2 * (v + kAhead) + 1]) * S, S);
    }
    for (int64_t k0 = 0; k0 < S; k0 += kLane)
      for (int64_t k = k0; k < k0 + kLane; ++k) o[k] = c[k] + T(0.5) * (p1[k] + p2[k]);
  }
}

template <typename T>
DL_HOT void slice_range(const Lattice<T>& L, const T* __restrict__ buf, int64_t S, const T* base, T* out,
                        int64_t p0, int64_t p1) {
  const int dp1 = L.d + 1;
  for (int64_t p = p0; p < p1; ++p) {
    if (p + kAhead < p1)
      for (int r = 0; r < dp1; ++r)
        prefetch_row(buf + static_cast<int64_t>(L.offset[(p + kAhead) * dp1 + r]) * S, S);
    T acc[kLane];
    for (int64_t k0 = 0; k0 < S; k0 += kLane) {
      for (int64_t k = 0; k < kLane; ++k) acc[k] = base ? base[p * S + k0 + k] : T(0);
      for (int r = 0; r < dp1; ++r) {
        const T w = L.slice_w[p * dp1 + r];
        const T* __restrict__ src = buf + static_cast<int64_t>(L.offset[p * dp1 + r]) * S + k0;
        for (int64_t k = 0; k < kLane; ++k) acc[k] += w * src[k];
      }
      for (int64_t k = 0; k < kLane; ++k) out[p * S + k0 + k] = acc[k];
    }
  }
}

// out = base + lattice filter of ``in`` (base may be null); all are n x S with S
// a multiple of kLane, and they may alias one another.  ``reverse`` blurs the
// axes in reverse order, which applies the transposed filter (each axis' blur
// is symmetric), i.e. the gradient.
template <typename T>
void filter(const Lattice<T>& L, const T* in, T* out, int64_t S, bool reverse, Workspace<T>& ws,
            const T* base = nullptr) {
  const int64_t m = L.m;
  ws.ensure(m + 1, S);
  T* cur = ws.a.data();
  T* nxt = ws.b.data();
  // Coarse grains: a parallel region costs a thread wake-up, which only pays off
  // for a few hundred kilobytes of work.
  const int64_t grain = std::max<int64_t>(512, 131072 / S);
  at::parallel_for(0, m, grain, [&](int64_t b, int64_t e) { splat_range(L, in, S, cur, b, e); });
  for (int i = 0; i <= L.d; ++i) {
    const int a = reverse ? L.d - i : i;
    const int32_t* nb = L.blur_nb.data() + static_cast<int64_t>(a) * m * 2;
    at::parallel_for(0, m, grain, [&](int64_t b, int64_t e) { blur_range(nb, cur, S, nxt, b, e); });
    std::swap(cur, nxt);
  }
  at::parallel_for(0, L.n, grain, [&](int64_t b, int64_t e) { slice_range(L, cur, S, base, out, b, e); });
}

}  // namespace lattice
}  // namespace deeplab
