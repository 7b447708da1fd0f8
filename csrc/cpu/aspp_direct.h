// Direct float32 forward of deeplab::aspp_sum on x86-64 CPUs with AVX-512.
//
// The GEMM path (aspp_sum.cpp) multiplies every tap of a row band against the band's
// full width.  At DeepLab's 41x41 maps with rates 6-24 about a quarter of those
// multiply-adds land on columns that a horizontal tap cannot reach.  Here the taps are
// grouped by their horizontal offset dx, so all taps of a group read the same input
// columns, and products are formed only for input pixels that some tap of the group
// uses:
//
//   for each block of channels [k0, k1), input row i, group g, run of P columns j..j+P:
//     Z[(t, co), p] = sum_k A_g[k][(t, co)] * x[k, i, j + p]   (a register tile)
//     y[co, i - dy_t, j + p - dx_t] += Z[(t, co), p]            (taps t of g that reach row i)
//
// A_g, the group's weights, is packed once per call as [C][taps * Co + 16]: one
// 16-lane vector of A holds 16 (tap, co) pairs, so DeepLab's 21 classes x 3 taps fill
// four vectors with one idle lane.  A tile reads x straight from the tensor (NCHW or
// channels-last) by broadcasting one value per pixel and channel.  Threads split the
// (channel block, input row) items; each sums into its own channels-last copy of y,
// and the copies and the bias are added at the end.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/aspp_taps.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define DEEPLAB_ASPP_DIRECT 1
#else
#define DEEPLAB_ASPP_DIRECT 0
#endif

namespace deeplab {
namespace aspp {

// Whether the CPU has the direct kernel (x86-64 with AVX-512, GCC or Clang build).
inline bool direct_supported() {
#if DEEPLAB_ASPP_DIRECT
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
#else
  return false;
#endif
}

// The CPU forward aspp_sum uses for float32: the direct kernel where the CPU has it,
// unless DEEPLAB_ASPP_CPU_KERNEL=gemm asks for the banded GEMMs ("auto", the default,
// and "direct" take the direct kernel where it exists).  Read on every call.
inline bool use_direct_forward() {
  const char* env = std::getenv("DEEPLAB_ASPP_CPU_KERNEL");
  const std::string v = env ? env : "";
  TORCH_CHECK(v.empty() || v == "auto" || v == "direct" || v == "gemm",
              "aspp_sum: DEEPLAB_ASPP_CPU_KERNEL must be \"auto\", \"direct\" or \"gemm\", got \"", v, "\"");
  return v != "gemm" && direct_supported();
}

#if DEEPLAB_ASPP_DIRECT
namespace direct {

constexpr int kLanes = 16;
constexpr int kChunk = 4 * kLanes;   // (tap, co) lanes per register tile
constexpr int64_t kBlockK = 256;     // channels per block (measured: 128-512 within 3% at 41x41)

struct Group {
  int64_t dx;
  std::vector<const Tap*> taps;      // sorted by dy
  int64_t lda;                       // taps * Co + kLanes
  float* a;                          // [C][lda]
};

// Z[p][v * 16 + l] = sum_k A[k * lda + v * 16 + l] * X[k * xk + p * xp] for p < P, v < V.
template <int V, int P>
__attribute__((target("avx512f"))) void tile(const float* A, int64_t lda, const float* X, int64_t xk, int64_t xp,
                                             int64_t K, float* Z) {
  __m512 acc[V][P];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v)
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) acc[v][p] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 a[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) a[v] = _mm512_loadu_ps(A + v * kLanes);
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      const __m512 b = _mm512_set1_ps(X[p * xp]);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[v][p] = _mm512_fmadd_ps(a[v], b, acc[v][p]);
    }
    A += lda;
    X += xk;
  }
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(Z + p * kChunk + v * kLanes, acc[v][p]);
}

// Pixels per tile for V vectors of A: as many accumulators as the 32 registers allow.
template <int V>
constexpr int max_pixels() {
  return V == 1 ? 14 : V == 2 ? 12 : V == 3 ? 8 : 6;
}

using TileFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, int64_t, float*);

template <int V, int... Ps>
constexpr std::array<TileFn, sizeof...(Ps)> tiles_for(std::integer_sequence<int, Ps...>) {
  return {&tile<V, Ps + 1>...};
}

// tile<V, P> for V in 1..4 and P in 1..max_pixels<V>().
inline TileFn tile_fn(int V, int P) {
  static const auto t1 = tiles_for<1>(std::make_integer_sequence<int, max_pixels<1>()>{});
  static const auto t2 = tiles_for<2>(std::make_integer_sequence<int, max_pixels<2>()>{});
  static const auto t3 = tiles_for<3>(std::make_integer_sequence<int, max_pixels<3>()>{});
  static const auto t4 = tiles_for<4>(std::make_integer_sequence<int, max_pixels<4>()>{});
  switch (V) {
    case 1: return t1[P - 1];
    case 2: return t2[P - 1];
    case 3: return t3[P - 1];
    default: return t4[P - 1];
  }
}

inline int pixels_per_tile(int V) {
  return V == 1 ? max_pixels<1>() : V == 2 ? max_pixels<2>() : V == 3 ? max_pixels<3>() : max_pixels<4>();
}

// Input rows [i0, i1) of one block of channels [k0, k1) of image x (strides sk, sh,
// sw), summed into yt, a channels-last [H * W][Co] accumulator.
inline void run_rows(const float* x, int64_t sk, int64_t sh, int64_t sw, int64_t k0, int64_t k1, int64_t i0,
                     int64_t i1, int64_t H, int64_t W, int64_t Co, const std::vector<Group>& groups, float* yt) {
  alignas(64) float Z[max_pixels<1>() * kChunk];
  const int64_t K = k1 - k0;
  for (int64_t i = i0; i < i1; ++i) {
    for (const auto& g : groups) {
      // Taps of the group that read row i: i = h + dy for an output row h in [0, H).
      const int64_t T = static_cast<int64_t>(g.taps.size());
      int64_t ta = 0, tb = T;
      while (ta < T && g.taps[ta]->dy <= i - H) ++ta;
      while (tb > ta && g.taps[tb - 1]->dy > i) --tb;
      if (ta == tb) continue;
      const int64_t j0 = std::max<int64_t>(g.dx, 0), j1 = W + std::min<int64_t>(g.dx, 0);
      const int64_t m1 = tb * Co;
      for (int64_t mc = ta * Co; mc < m1; mc += kChunk) {
        const int64_t lanes = std::min<int64_t>(kChunk, m1 - mc);
        const int V = static_cast<int>((lanes + kLanes - 1) / kLanes);
        const int Pmax = pixels_per_tile(V);
        const float* A = g.a + k0 * g.lda + mc;
        // The run split into tiles of near-equal width: no narrow last tile.
        const int64_t ntiles = (j1 - j0 + Pmax - 1) / Pmax;
        for (int64_t tj = 0, j = j0; tj < ntiles; ++tj) {
          const int P = static_cast<int>((j1 - j0) * (tj + 1) / ntiles - (j - j0));
          tile_fn(V, P)(A, g.lda, x + k0 * sk + i * sh + j * sw, sk, sw, K, Z);
          // Scatter: lane m = t * Co + co of pixel p goes to y[i - dy_t, j + p - dx_t, co].
          for (int64_t t = mc / Co; t * Co < mc + lanes; ++t) {
            const int64_t c0 = std::max<int64_t>(t * Co, mc), c1 = std::min<int64_t>((t + 1) * Co, mc + lanes);
            const Tap& tap = *g.taps[t];
            float* yrow = yt + ((i - tap.dy) * W + j - tap.dx) * Co + (c0 - t * Co);
            for (int p = 0; p < P; ++p) {
              const float* z = Z + p * kChunk + (c0 - mc);
              float* yp = yrow + p * Co;
              for (int64_t c = 0; c < c1 - c0; ++c) yp[c] += z[c];
            }
          }
          j += P;
        }
      }
    }
  }
}

// y[n] = sum of the taps of `plan` over x[n] (+ bias_sum), float32.  `w` holds one
// contiguous [Co, C, 3, 3] weight per rate.
inline void forward(const at::Tensor& x, const std::vector<at::Tensor>& w, const at::Tensor& bias_sum,
                    const Plan& plan, at::Tensor& out) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Co = w[0].size(0);
  const int64_t sn = x.stride(0), sk = x.stride(1), sh = x.stride(2), sw = x.stride(3);

  // Group the taps by dx, keeping the plan's dy order inside each group.
  std::vector<Group> groups;
  for (const auto& t : plan.taps) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return g.dx == t.dx; });
    if (it == groups.end()) {
      groups.push_back(Group{t.dx, {}, 0, nullptr});
      it = groups.end() - 1;
    }
    it->taps.push_back(&t);
  }
  int64_t total = 0;
  for (auto& g : groups) {
    g.lda = static_cast<int64_t>(g.taps.size()) * Co + kLanes;
    total += g.lda * C;
  }
  at::Tensor packed = at::empty({total}, x.options());
  {
    float* p = packed.data_ptr<float>();
    for (auto& g : groups) {
      g.a = p;
      p += g.lda * C;
    }
  }
  // A_g[k][t * Co + co] = w[rate_t][co, k, ky_t, kx_t]; the merged centre sums every
  // rate.  dest[r * 9 + ky * 3 + kx]: where that weight goes (no entry: the tap never
  // reaches the map).
  struct Dest {
    float* a = nullptr;
    int64_t lda = 0, lane = 0;
  };
  const int64_t R = static_cast<int64_t>(w.size());
  std::vector<Dest> dest(R * 9);
  for (const auto& g : groups)
    for (size_t t = 0; t < g.taps.size(); ++t) {
      const Tap& tap = *g.taps[t];
      const Dest d{g.a, g.lda, static_cast<int64_t>(t) * Co};
      if (tap.rate < 0) {
        for (int64_t r = 0; r < R; ++r) dest[r * 9 + 4] = d;
      } else {
        dest[tap.rate * 9 + tap.ky * 3 + tap.kx] = d;
      }
    }
  // Channel blocks: read each weight row w[r][co][k0:k1][:] once, in order, while the
  // block's packed rows (all groups) stay in L2: 64 channels at DeepLab's 21 classes,
  // fewer for wide layers.
  int64_t row_floats = 0;
  for (const auto& g : groups) row_floats += g.lda;
  const int64_t kp = std::max<int64_t>(1, std::min<int64_t>(64, (256 << 10) / (4 * std::max<int64_t>(row_floats, 1))));
  at::parallel_for(0, (C + kp - 1) / kp, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t k0 = b0 * kp; k0 < std::min(C, b1 * kp); k0 += kp) {
      const int64_t k1 = std::min(C, k0 + kp);
      for (const auto& g : groups)
        for (int64_t k = k0; k < k1; ++k) std::fill(g.a + k * g.lda, g.a + (k + 1) * g.lda, 0.f);
      for (int64_t r = 0; r < R; ++r) {
        const float* wr = w[r].data_ptr<float>();
        for (int64_t co = 0; co < Co; ++co) {
          const float* src = wr + (co * C + k0) * 9;
          for (int64_t k = k0; k < k1; ++k, src += 9)
            for (int pos = 0; pos < 9; ++pos) {
              const Dest& d = dest[r * 9 + pos];
              if (d.a) d.a[k * d.lda + d.lane + co] += src[pos];
            }
        }
      }
    }
  });

  const int64_t HW = H * W, nkb = (C + kBlockK - 1) / kBlockK;
  const int nthreads = at::get_num_threads();
  at::Tensor ybuf = at::empty({nthreads, HW * Co}, x.options());
  const float* bias = bias_sum.defined() ? bias_sum.data_ptr<float>() : nullptr;
  for (int64_t n = 0; n < N; ++n) {
    ybuf.zero_();
    const float* xn = x.data_ptr<float>() + n * sn;
    // Work items are (channel block, input row), block-major so that a thread's items
    // share their block's weights; any split is race-free, as each thread sums into
    // its own accumulator, so more threads than channel blocks all find work.
    at::parallel_for(0, nkb * H, 1, [&](int64_t q0, int64_t q1) {
      float* yt = ybuf.data_ptr<float>() + static_cast<int64_t>(at::get_thread_num()) * HW * Co;
      for (int64_t q = q0; q < q1;) {
        const int64_t b = q / H, i0 = q % H, i1 = std::min(H, i0 + (q1 - q));
        run_rows(xn, sk, sh, sw, b * kBlockK, std::min(C, (b + 1) * kBlockK), i0, i1, H, W, Co, groups, yt);
        q += i1 - i0;
      }
    });
    // out[n, co, p] = bias[co] + sum over threads of ybuf[t][p][co], in 16 x 16 tiles
    // (a transpose: ybuf is channels-last).
    float* on = out.data_ptr<float>() + n * Co * HW;
    const float* yb = ybuf.data_ptr<float>();
    at::parallel_for(0, (HW + 15) / 16, 4, [&](int64_t pb0, int64_t pb1) {
      for (int64_t p0 = pb0 * 16; p0 < std::min(HW, pb1 * 16); p0 += 16) {
        const int64_t p1 = std::min(HW, p0 + 16);
        for (int64_t c0 = 0; c0 < Co; c0 += 16) {
          const int64_t c1 = std::min(Co, c0 + 16);
          float tile[16][16];
          for (int64_t p = p0; p < p1; ++p)
            for (int64_t co = c0; co < c1; ++co) {
              float acc = bias ? bias[co] : 0.f;
              for (int t = 0; t < nthreads; ++t) acc += yb[(t * HW + p) * Co + co];
              tile[co - c0][p - p0] = acc;
            }
          for (int64_t co = c0; co < c1; ++co) std::memcpy(on + co * HW + p0, tile[co - c0], (p1 - p0) * sizeof(float));
        }
      }
    });
  }
}

}  // namespace direct
#endif

}  // namespace aspp
}  // namespace deeplab
