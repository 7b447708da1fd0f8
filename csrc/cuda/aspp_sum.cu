// CUDA kernel of deeplab::aspp_sum and its backward.  Same plan and steps as the CPU
// kernel (csrc/cpu/aspp_sum.cpp): per image and band, one cuBLAS GEMM of the stacked
// tap weights against the band, then the shifted adds below; backward gathers the
// shifted output gradient and runs two GEMMs.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/aspp_sum_host.h"

namespace deeplab {
namespace {

constexpr int kThreads = 256;

// The band's taps as device-side arrays: dy, dx per tap.
struct BandTaps {
  const int64_t* dy;
  const int64_t* dx;
  int64_t t0, t1, i0, i1;
};

inline int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 * 8 ? (b < 1 ? 1 : b) : 65535 * 8);
}

// One thread per output pixel of the image: y[co, h, w] += sum over the band's taps of
// Z[t, co, h + dy - i0, w + dx] where that input pixel is in the image and the band.
template <typename scalar_t, typename acc_t>
__global__ void shift_add_kernel(const scalar_t* __restrict__ Z, acc_t* __restrict__ y, BandTaps b, int64_t Co,
                                 int64_t H, int64_t W) {
  const int64_t total = Co * H * W, rows = b.i1 - b.i0;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t w = idx % W, h = (idx / W) % H, co = idx / (H * W);
    acc_t s = 0;
    for (int64_t t = b.t0; t < b.t1; ++t) {
      const int64_t dy = b.dy[t], dx = b.dx[t];
      if (!aspp::tap_reads(dy, dx, b.i0, b.i1, H, W, h, w)) continue;
      s += static_cast<acc_t>(Z[aspp::z_index(t - b.t0, co, Co, rows, h + dy - b.i0, w + dx, W)]);
    }
    y[idx] += s;
  }
}

// S[t, co, i - i0, j] = gy[co, i - dy, j - dx], zero where that output pixel does not exist.
template <typename scalar_t>
__global__ void shift_gather_kernel(const scalar_t* __restrict__ gy, scalar_t* __restrict__ S, BandTaps b,
                                    int64_t Co, int64_t H, int64_t W) {
  const int64_t rows = b.i1 - b.i0, total = (b.t1 - b.t0) * Co * rows * W;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = idx % W, r = (idx / W) % rows, co = (idx / (W * rows)) % Co;
    const int64_t t = b.t0 + idx / (W * rows * Co);
    // Output pixel (h, w) = (i0 + r - dy, j - dx) reads input pixel (i0 + r, j) through tap t.
    const int64_t h = b.i0 + r - b.dy[t], w = j - b.dx[t];
    S[idx] = aspp::tap_reads(b.dy[t], b.dx[t], b.i0, b.i1, H, W, h, w) ? gy[(co * H + h) * W + w] : scalar_t(0);
  }
}

// dy and dx of every tap, on the device.
at::Tensor tap_offsets(const aspp::Plan& p, const at::Device& device) {
  std::vector<int64_t> v;
  for (const auto& t : p.taps) v.push_back(t.dy);
  for (const auto& t : p.taps) v.push_back(t.dx);
  return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(device);
}

BandTaps band_taps(const at::Tensor& offsets, const aspp::Plan& p, const aspp::Band& b) {
  const int64_t* d = offsets.data_ptr<int64_t>();
  return BandTaps{d, d + p.taps.size(), b.t0, b.t1, b.i0, b.i1};
}

at::Tensor aspp_sum_cuda(const at::Tensor& x_, at::TensorList weights, at::TensorList biases,
                         at::IntArrayRef rates) {
  aspp::check_inputs("aspp_sum", x_, weights, biases, rates);
  TORCH_CHECK(x_.is_cuda(), "aspp_sum: 'x' must be a CUDA tensor here, got ", x_.device());
  const c10::cuda::CUDAGuard guard(x_.device());
  const int64_t N = x_.size(0), H = x_.size(2), W = x_.size(3), Co = weights[0].size(0);
  auto out = at::empty({N, Co, H, W}, x_.options());
  if (out.numel() == 0) return out;

  const at::Tensor x = aspp::dense_input(x_);
  const auto plan = aspp::plan_taps(aspp::to_vector(rates), H, W, aspp::band_cols(/*cuda=*/true));
  const at::Tensor wall = aspp::stack_weights(weights, plan);
  const at::Tensor offsets = tap_offsets(plan, x.device());

  const auto acc_type = at::toOpMathType(x.scalar_type());
  at::Tensor acc = acc_type == x.scalar_type() ? out : at::empty({N, Co, H, W}, x.options().dtype(acc_type));
  if (biases.empty()) {
    acc.zero_();
  } else {
    at::Tensor b = biases[0].to(acc_type, /*non_blocking=*/false, /*copy=*/true);
    for (size_t r = 1; r < biases.size(); ++r) b.add_(biases[r]);
    acc.copy_(b.view({1, Co, 1, 1}).expand({N, Co, H, W}));
  }

  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "aspp_sum_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t n = 0; n < N; ++n) {
      acc_t* yn = acc.data_ptr<acc_t>() + n * Co * H * W;
      for (const auto& b : plan.bands) {
        at::Tensor Z = at::mm(wall.narrow(0, b.t0 * Co, (b.t1 - b.t0) * Co), aspp::row_band(x, n, b.i0, b.i1 - b.i0));
        shift_add_kernel<scalar_t, acc_t><<<blocks_for(Co * H * W), kThreads, 0, stream>>>(
            Z.data_ptr<scalar_t>(), yn, band_taps(offsets, plan, b), Co, H, W);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  });
  if (!acc.is_same(out)) out.copy_(acc);
  return out;
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> aspp_sum_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x_, at::TensorList weights, at::IntArrayRef rates, bool has_bias) {
  aspp::check_inputs("_aspp_sum_backward", x_, weights, {}, rates);
  TORCH_CHECK(x_.is_cuda(), "_aspp_sum_backward: 'x' must be a CUDA tensor here, got ", x_.device());
  const c10::cuda::CUDAGuard guard(x_.device());
  const int64_t N = x_.size(0), C = x_.size(1), H = x_.size(2), W = x_.size(3), Co = weights[0].size(0);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == N && grad.size(1) == Co && grad.size(2) == H && grad.size(3) == W,
              "_aspp_sum_backward: 'grad' must be [", N, ", ", Co, ", ", H, ", ", W, "], got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == x_.scalar_type(), "_aspp_sum_backward: 'grad' is ", grad.scalar_type(),
              " but 'x' is ", x_.scalar_type());

  at::Tensor gx = at::zeros({N, C, H, W}, x_.options());
  std::vector<at::Tensor> gb;
  if (has_bias) {
    at::Tensor s = grad.sum({0, 2, 3});
    for (size_t r = 0; r < weights.size(); ++r) gb.push_back(s.clone());
  }
  const auto plan = aspp::plan_taps(aspp::to_vector(rates), std::max<int64_t>(H, 1), std::max<int64_t>(W, 1),
                                    aspp::band_cols(/*cuda=*/true));
  at::Tensor gwall = at::zeros({static_cast<int64_t>(plan.taps.size()) * Co, C}, x_.options());
  if (grad.numel() == 0 || C == 0) return {gx, aspp::unstack_weight_grads(gwall, plan, weights), gb};

  const at::Tensor x = aspp::dense_input(x_);
  const at::Tensor gy = grad.contiguous();
  const at::Tensor wall = aspp::stack_weights(weights, plan);
  const at::Tensor offsets = tap_offsets(plan, x.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "aspp_sum_backward_cuda", [&] {
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* gyn = gy.data_ptr<scalar_t>() + n * Co * H * W;
      for (const auto& b : plan.bands) {
        const int64_t rows = b.i1 - b.i0, T = b.t1 - b.t0;
        at::Tensor S = at::empty({T * Co, rows * W}, x.options());
        shift_gather_kernel<scalar_t><<<blocks_for(S.numel()), kThreads, 0, stream>>>(
            gyn, S.data_ptr<scalar_t>(), band_taps(offsets, plan, b), Co, H, W);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        gwall.narrow(0, b.t0 * Co, T * Co).addmm_(S, aspp::row_band(x, n, b.i0, rows).t());
        aspp::row_band(gx, n, b.i0, rows).addmm_(wall.narrow(0, b.t0 * Co, T * Co).t(), S);
      }
    }
  });
  return {gx, aspp::unstack_weight_grads(gwall, plan, weights), gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(deeplab, CUDA, m) {
  m.impl("aspp_sum", &aspp_sum_cuda);
  m.impl("_aspp_sum_backward", &aspp_sum_backward_cuda);
}

}  // namespace deeplab
