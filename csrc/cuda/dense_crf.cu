// CUDA kernel of deeplab::dense_crf (same steps as csrc/cpu/dense_crf.cpp):
// per image, build the positional and bilateral lattices, fold each kernel's
// normaliser and Potts weight into its splat/slice weights, then iterate
//   msg = -unary + sum_k filter_k(Q),   Q = softmax(msg).
// Buffers are pixel-major [H*W, C]; one thread per (pixel, label) or per pixel.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "common/crf_math.h"
#include "common/lattice_checks.h"
#include "cuda/permutohedral.cuh"

namespace deeplab {
namespace {

using lattice_cuda::blocks_for;
using lattice_cuda::kThreads;

__global__ void features_kernel(const float* __restrict__ img, int64_t H, int64_t W, float xy_std, float rgb_std,
                                bool with_colour, float* __restrict__ f) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t n = H * W;
  if (p >= n) return;
  const int d = with_colour ? 5 : 2;
  crf::pixel_features(img, n, p % W, p / W, p, xy_std, rgb_std, with_colour, f + p * d);
}

__global__ void norm_scales_kernel(const float* __restrict__ deg, int64_t n, float w, bool symmetric,
                                   float* __restrict__ in_scale, float* __restrict__ out_scale) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= n) return;
  crf::norm_scales(deg[p], w, symmetric, in_scale[p], out_scale[p]);
}

__global__ void scale_rows_kernel(float* __restrict__ wts, const float* __restrict__ scale, int64_t n, int dp1) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n * dp1) wts[i] *= scale[i / dp1];
}

__global__ void transpose_unary_kernel(const float* __restrict__ unary, int64_t C, int64_t n,
                                       float* __restrict__ neg_u) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n * C) return;
  const int64_t p = t / C, c = t % C;
  neg_u[t] = -unary[c * n + p];
}

__global__ void softmax_rows_kernel(const float* __restrict__ in, int64_t n, int64_t C, float* __restrict__ q) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= n) return;
  const float* a = in + p * C;
  float mx = a[0];
  for (int64_t c = 1; c < C; ++c) mx = fmaxf(mx, a[c]);
  float tot = 0.f;
  for (int64_t c = 0; c < C; ++c) tot += __expf(a[c] - mx);
  const float inv = 1.f / tot;
  for (int64_t c = 0; c < C; ++c) q[p * C + c] = __expf(a[c] - mx) * inv;
}

__global__ void untranspose_kernel(const float* __restrict__ q, int64_t C, int64_t n, float* __restrict__ out) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n * C) return;
  const int64_t c = t / n, p = t % n;
  out[t] = q[p * C + c];
}

struct Params {
  float pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std;
  int64_t iterations;
  bool symmetric;
};

lattice_cuda::Lattice build_kernel(const float* img, int64_t H, int64_t W, float w, float xy_std, float rgb_std,
                                   bool with_colour, bool symmetric, const at::TensorOptions& opt) {
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = H * W;
  const int d = with_colour ? 5 : 2;
  auto f = at::empty({n, d}, opt);
  features_kernel<<<blocks_for(n), kThreads, 0, stream>>>(img, H, W, xy_std, rgb_std, with_colour,
                                                          f.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto L = lattice_cuda::build_lattice(f);
  auto ones = at::ones({n, 1}, opt);
  auto deg = at::empty({n, 1}, opt);
  lattice_cuda::filter<float>(L, ones.data_ptr<float>(), deg.data_ptr<float>(), 1, false, opt);
  auto in_scale = at::empty({n}, opt);
  auto out_scale = at::empty({n}, opt);
  norm_scales_kernel<<<blocks_for(n), kThreads, 0, stream>>>(deg.data_ptr<float>(), n, w, symmetric,
                                                             in_scale.data_ptr<float>(),
                                                             out_scale.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  scale_rows_kernel<<<blocks_for(n * (d + 1)), kThreads, 0, stream>>>(L.splat_w.data_ptr<float>(),
                                                                      in_scale.data_ptr<float>(), n, d + 1);
  scale_rows_kernel<<<blocks_for(n * (d + 1)), kThreads, 0, stream>>>(L.slice_w.data_ptr<float>(),
                                                                      out_scale.data_ptr<float>(), n, d + 1);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return L;
}

void crf_one(const float* img, const float* unary, float* qout, int64_t C, int64_t H, int64_t W, const Params& prm,
             const at::TensorOptions& opt) {
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = H * W;
  std::vector<lattice_cuda::Lattice> kernels;
  if (prm.pos_w != 0.f)
    kernels.push_back(build_kernel(img, H, W, prm.pos_w, prm.pos_xy_std, 1.f, false, prm.symmetric, opt));
  if (prm.bi_w != 0.f)
    kernels.push_back(build_kernel(img, H, W, prm.bi_w, prm.bi_xy_std, prm.bi_rgb_std, true, prm.symmetric, opt));

  auto neg_u = at::empty({n, C}, opt);
  auto q = at::empty({n, C}, opt);
  auto msg = at::empty({n, C}, opt);
  transpose_unary_kernel<<<blocks_for(n * C), kThreads, 0, stream>>>(unary, C, n, neg_u.data_ptr<float>());
  softmax_rows_kernel<<<blocks_for(n), kThreads, 0, stream>>>(neg_u.data_ptr<float>(), n, C, q.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  for (int64_t it = 0; it < prm.iterations; ++it) {
    // Potts: a pixel's label is rewarded by the filtered mass of that label.
    const float* base = neg_u.data_ptr<float>();
    for (const auto& L : kernels) {
      lattice_cuda::filter<float>(L, q.data_ptr<float>(), msg.data_ptr<float>(), C, false, opt, base);
      base = msg.data_ptr<float>();
    }
    softmax_rows_kernel<<<blocks_for(n), kThreads, 0, stream>>>(base, n, C, q.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  untranspose_kernel<<<blocks_for(n * C), kThreads, 0, stream>>>(q.data_ptr<float>(), C, n, qout);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor dense_crf_cuda(const at::Tensor& image, const at::Tensor& unary, double pos_w, double pos_xy_std,
                          double bi_w, double bi_xy_std, double bi_rgb_std, int64_t iterations,
                          c10::string_view normalization) {
  const std::string norm = lattice_checks::dense_crf(image, unary, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std,
                                                     iterations, normalization);
  TORCH_CHECK(image.is_cuda() && unary.is_cuda() && image.device() == unary.device(),
              "dense_crf: 'image' and 'unary' must be on the same CUDA device");
  const c10::cuda::CUDAGuard guard(unary.device());

  auto img = image.contiguous();
  auto u = unary.contiguous();
  auto out = at::empty_like(u);
  const int64_t B = u.size(0), C = u.size(1), H = u.size(2), W = u.size(3);
  if (out.numel() == 0) return out;
  TORCH_CHECK(H * W < (int64_t{1} << 31) / 6, "dense_crf: image too large for 32-bit lattice indices");
  TORCH_CHECK(at::isfinite(u).all().item<bool>(), "dense_crf: 'unary' contains NaN or infinite values");
  TORCH_CHECK(at::isfinite(img).all().item<bool>(), "dense_crf: 'image' contains NaN or infinite values");

  const Params prm{static_cast<float>(pos_w), static_cast<float>(pos_xy_std), static_cast<float>(bi_w),
                   static_cast<float>(bi_xy_std), static_cast<float>(bi_rgb_std), iterations, norm == "symmetric"};
  for (int64_t b = 0; b < B; ++b)
    crf_one(img.data_ptr<float>() + b * 3 * H * W, u.data_ptr<float>() + b * C * H * W,
            out.data_ptr<float>() + b * C * H * W, C, H, W, prm, u.options());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(deeplab, CUDA, m) {
  m.impl("dense_crf", &dense_crf_cuda);
}

}  // namespace deeplab
