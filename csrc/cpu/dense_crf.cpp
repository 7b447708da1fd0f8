// CPU kernel of deeplab::dense_crf: mean-field inference of a fully connected
// CRF whose pairwise terms are filtered through permutohedral lattices.
//
// One image at a time: build the positional (2-D) and bilateral (5-D) lattices,
// compute each kernel's normaliser by filtering ones, then iterate
//   msg = -unary + sum_k w_k * n_k * filter_k(n_k * Q),   Q = softmax(msg)
// with n_k = D_k^-1/2 on both sides ("symmetric") or D_k^-1 after ("after").
// A batch is spread over threads one image per thread; a single image spreads
// its pixel and lattice loops instead.
//
// On x86 with AVX2/FMA/F16C the iterations store lattice values in half floats
// (cpu/mean_field_f16.h: one cache line per row instead of two, arithmetic in
// float32); DEEPLAB_CRF_STORAGE=float32 selects the float32 loop below everywhere.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/crf_math.h"
#include "cpu/big_alloc.h"
#include "common/lattice_checks.h"
#include "cpu/mean_field_f16.h"
#include "cpu/permutohedral.h"
#include "cpu/vec8.h"

namespace deeplab {
namespace {

using lattice::kLane;

// Energy given to the padding lanes of each pixel's label vector, so that they
// take no probability mass in the softmax.
constexpr float kPadEnergy = -1e30f;

static_assert(kLane == 8, "softmax_rows works on blocks of eight labels");

DL_HOT void softmax_rows(const float* __restrict__ in, float* __restrict__ out, int64_t S, int64_t p0,
                         int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* a = in + p * S;
    float* q = out + p * S;
    v8f mx;
    std::memcpy(&mx, a, sizeof(mx));
    for (int64_t c = kLane; c < S; c += kLane) {
      v8f x;
      std::memcpy(&x, a + c, sizeof(x));
      mx = x > mx ? x : mx;
    }
    float m = mx[0];
    for (int k = 1; k < kLane; ++k) m = mx[k] > m ? mx[k] : m;
    v8f tot = mx - mx;
    for (int64_t c = 0; c < S; c += kLane) {
      v8f x;
      std::memcpy(&x, a + c, sizeof(x));
      const v8f e = exp_nonpositive(x - m);
      std::memcpy(q + c, &e, sizeof(e));
      tot += e;
    }
    float t = 0.f;
    for (int k = 0; k < kLane; ++k) t += tot[k];
    const float inv = 1.f / t;
    for (int64_t c = 0; c < S; ++c) q[c] *= inv;
  }
}

// Whether the iterations store lattice values in half floats (see the top); read on
// every call so that a process can switch.
bool half_storage() {
  const char* env = std::getenv("DEEPLAB_CRF_STORAGE");
  const std::string v = env ? env : "";
  TORCH_CHECK(v.empty() || v == "half" || v == "float32",
              "dense_crf: DEEPLAB_CRF_STORAGE must be \"half\" or \"float32\", got \"", v, "\"");
#if defined(DEEPLAB_HAVE_F16_MEAN_FIELD)
  return v != "float32" && f16::cpu_supported();
#else
  return false;
#endif
}

// Whether every value is finite: x - x is 0 for finite x and NaN otherwise.  One
// pass without the temporaries of at::isfinite(t).all().
DL_HOT bool finite_range(const float* __restrict__ p, int64_t b, int64_t e) {
  int bad = 0;
  for (int64_t i = b; i < e; ++i) bad |= (p[i] - p[i]) != 0.f;
  return !bad;
}

bool all_finite(const float* p, int64_t n) {
  std::atomic<bool> ok{true};
  at::parallel_for(0, n, 1 << 18, [&](int64_t b, int64_t e) {
    if (!finite_range(p, b, e)) ok = false;
  });
  return ok;
}

struct Params {
  float pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std;
  int64_t iterations;
  bool symmetric;
  bool half;  // half-float lattice storage in the iterations
};

// One pairwise kernel: its lattice with the normaliser and the Potts weight
// folded into the splat/slice weights, so that filtering Q yields the message
// w * n * K (n' * Q) directly.
void build_kernel(lattice::Lattice<float>& lat, const big_vector<float>& feats, int64_t n, int64_t W, int d,
                  float w, bool symmetric, bool chains) {
  lattice::build_lattice<float>(feats.data(), n, d, lat, /*row=*/W);
  if (chains) lattice::build_chains(lat);
  const big_vector<float> deg = lattice::filter_ones(lat);
  big_vector<float> in_scale(n), out_scale(n);
  at::parallel_for(0, n, 16384, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) crf::norm_scales(deg[p], w, symmetric, in_scale[p], out_scale[p]);
  });
  lattice::scale_lattice<float>(lat, in_scale.data(), out_scale.data());
}

void crf_one(const float* img, const float* unary, float* qout, int64_t C, int64_t H, int64_t W,
             const Params& prm) {
  const int64_t n = H * W;
  const int64_t S = lattice::padded(C);
  const int64_t grain = 8192;  // pixels per task: a parallel region only pays off for larger work

  std::vector<lattice::Lattice<float>> kernels;
  kernels.reserve(2);
  const bool chains = prm.half && prm.iterations > 0;  // the half-float iterations blur along chains
  if (prm.pos_w != 0.f) {
    big_vector<float> f(n * 2);
    at::parallel_for(0, H, std::max<int64_t>(1, 4096 / std::max<int64_t>(W, 1)), [&](int64_t b, int64_t e) {
      for (int64_t y = b; y < e; ++y)
        for (int64_t x = 0; x < W; ++x)
          crf::pixel_features(img, n, x, y, y * W + x, prm.pos_xy_std, 1.f, false, f.data() + (y * W + x) * 2);
    });
    kernels.emplace_back();
    build_kernel(kernels.back(), f, n, W, 2, prm.pos_w, prm.symmetric, chains);
  }
  if (prm.bi_w != 0.f) {
    big_vector<float> f(n * 5);
    at::parallel_for(0, H, std::max<int64_t>(1, 4096 / std::max<int64_t>(W, 1)), [&](int64_t b, int64_t e) {
      for (int64_t y = b; y < e; ++y)
        for (int64_t x = 0; x < W; ++x)
          crf::pixel_features(img, n, x, y, y * W + x, prm.bi_xy_std, prm.bi_rgb_std, true,
                              f.data() + (y * W + x) * 5);
    });
    kernels.emplace_back();
    build_kernel(kernels.back(), f, n, W, 5, prm.bi_w, prm.symmetric, chains);
  }

  // -unary, point-major and label-padded, transposed in tiles of pixels.
  constexpr int64_t kTile = 64;
  const int64_t tiles = (n + kTile - 1) / kTile;
  // Scratch the loops below overwrite completely: left uninitialised.
  auto neg_u = big_array<float>(n * S);
  at::parallel_for(0, tiles, grain / kTile, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t p0 = t * kTile, p1 = std::min(n, p0 + kTile);
      for (int64_t p = p0; p < p1; ++p)
        for (int64_t c = C; c < S; ++c) neg_u[p * S + c] = kPadEnergy;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t p = p0; p < p1; ++p) neg_u[p * S + c] = -unary[c * n + p];
    }
  });

#if defined(DEEPLAB_HAVE_F16_MEAN_FIELD)
  if (prm.half) {
    // The last pixel pass writes the marginals label-major, straight into qout.
    f16::mean_field(neg_u.get(), kernels, n, S, C, prm.iterations, qout);
    return;
  }
#endif
  auto q = big_array<float>(n * S);
  {
    lattice::Workspace<float> ws;
    auto msg = big_array<float>(n * S);
    at::parallel_for(0, n, grain, [&](int64_t b, int64_t e) { softmax_rows(neg_u.get(), q.get(), S, b, e); });
    for (int64_t it = 0; it < prm.iterations; ++it) {
      // Potts: a pixel's label is rewarded by the filtered mass of that label.
      const float* base = neg_u.get();
      for (const auto& lat : kernels) {
        lattice::filter<float>(lat, q.get(), msg.get(), S, false, ws, base);
        base = msg.get();
      }
      at::parallel_for(0, n, grain, [&](int64_t b, int64_t e) { softmax_rows(base, q.get(), S, b, e); });
    }
  }

  at::parallel_for(0, tiles, grain / kTile, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t p0 = t * kTile, p1 = std::min(n, p0 + kTile);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t p = p0; p < p1; ++p) qout[c * n + p] = q[p * S + c];
    }
  });
}

at::Tensor dense_crf_cpu(const at::Tensor& image, const at::Tensor& unary, double pos_w, double pos_xy_std,
                         double bi_w, double bi_xy_std, double bi_rgb_std, int64_t iterations,
                         c10::string_view normalization) {
  const std::string norm = lattice_checks::dense_crf(image, unary, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std,
                                                     iterations, normalization);
  TORCH_CHECK(image.device().is_cpu() && unary.device().is_cpu(), "dense_crf: CPU kernel got non-CPU tensors");

  auto img = image.contiguous();
  auto u = unary.contiguous();
  auto out = at::empty_like(u);
  const int64_t B = u.size(0), C = u.size(1), H = u.size(2), W = u.size(3);
  if (out.numel() == 0) return out;
  TORCH_CHECK(H * W < (int64_t{1} << 31) / 6, "dense_crf: image too large for 32-bit lattice indices");
  TORCH_CHECK(all_finite(u.data_ptr<float>(), u.numel()), "dense_crf: 'unary' contains NaN or infinite values");
  TORCH_CHECK(all_finite(img.data_ptr<float>(), img.numel()), "dense_crf: 'image' contains NaN or infinite values");

  const Params prm{static_cast<float>(pos_w), static_cast<float>(pos_xy_std), static_cast<float>(bi_w),
                   static_cast<float>(bi_xy_std), static_cast<float>(bi_rgb_std), iterations, norm == "symmetric",
                   half_storage()};
  const float* ip = img.data_ptr<float>();
  const float* up = u.data_ptr<float>();
  float* op = out.data_ptr<float>();
  auto one = [&](int64_t b) {
    crf_one(ip + b * 3 * H * W, up + b * C * H * W, op + b * C * H * W, C, H, W, prm);
  };
  if (B > 1 && at::get_num_threads() > 1) {
    // Nested parallel_for calls inside run inline, one image per thread.
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) one(b);
    });
  } else {
    for (int64_t b = 0; b < B; ++b) one(b);
  }
  return out;
}

}  // namespace

// For deeplab_compile._C.cpu_paths(): "half" or "float32", as the next call would
// run, or "invalid" for a bad DEEPLAB_CRF_STORAGE.
const char* crf_storage_kind() noexcept {
  try {
    return half_storage() ? "half" : "float32";
  } catch (...) {
    return "invalid";
  }
}

TORCH_LIBRARY_IMPL(deeplab, CPU, m) {
  m.impl("dense_crf", &dense_crf_cpu);
}

}  // namespace deeplab
