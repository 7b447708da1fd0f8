// CPU kernel of deeplab::aspp_sum and its backward.
//
// Forward, per image and band of input rows (see common/aspp_taps.h): one GEMM of the
// stacked tap weights that reach the band against the band, then shifted adds place
// the GEMM output into y.  The library convolution runs one GEMM-like pass per rate with
// M = Co (21 classes in DeepLab); here M = taps * Co and the input is read once.
//
// Backward, per image and band: S = the output gradient shifted by each tap (the
// transpose of the shifted add), then grad_w += S @ x_band^T and grad_x_band += W^T @ S.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/aspp_sum_host.h"
#include "cpu/aspp_direct.h"

namespace deeplab {
namespace {

// y[co, h, w] += Z[t, co, h + dy_t - i0, w + dx_t] over the band's taps, where the
// input pixel lies inside the image and the band.
template <typename scalar_t, typename acc_t>
void shift_add(const scalar_t* Z, acc_t* y, const aspp::Plan& p, const aspp::Band& b, int64_t Co, int64_t H,
               int64_t W) {
  const int64_t rows = b.i1 - b.i0;
  at::parallel_for(0, Co * H, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t co = i / H, h = i % H;
      acc_t* yrow = y + i * W;
      for (int64_t t = b.t0; t < b.t1; ++t) {
        const auto& tap = p.taps[t];
        int64_t h0, h1, w0, w1;
        aspp::valid_rows(tap, b, H, h0, h1);
        if (h < h0 || h >= h1) continue;
        aspp::valid_cols(tap.dx, W, w0, w1);
        const scalar_t* zrow = Z + aspp::z_index(t - b.t0, co, Co, rows, h + tap.dy - b.i0, tap.dx, W);
        for (int64_t w = w0; w < w1; ++w) yrow[w] += static_cast<acc_t>(zrow[w]);
      }
    }
  });
}

// The transpose of shift_add: S[t, co, i - i0, w] = gy[co, i - dy_t, w - dx_t] for input
// rows i of the band, zero where that output pixel does not exist.
template <typename scalar_t>
void shift_gather(const scalar_t* gy, scalar_t* S, const aspp::Plan& p, const aspp::Band& b, int64_t Co,
                  int64_t H, int64_t W) {
  const int64_t rows = b.i1 - b.i0, T = b.t1 - b.t0;
  at::parallel_for(0, T * Co * rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = b.t0 + i / (Co * rows), co = (i / rows) % Co, r = i % rows;
      const auto& tap = p.taps[t];
      int64_t h0, h1, w0, w1;
      aspp::valid_rows(tap, b, H, h0, h1);
      aspp::valid_cols(tap.dx, W, w0, w1);
      const int64_t h = b.i0 + r - tap.dy;
      scalar_t* srow = S + aspp::z_index(t - b.t0, co, Co, rows, r, 0, W);
      std::fill(srow, srow + W, scalar_t(0));
      if (h < h0 || h >= h1) continue;
      // Input column w + dx receives output column w.
      const scalar_t* grow = gy + (co * H + h) * W;
      for (int64_t w = w0; w < w1; ++w) srow[w + tap.dx] = grow[w];
    }
  });
}

at::Tensor aspp_sum_cpu(const at::Tensor& x_, at::TensorList weights, at::TensorList biases,
                        at::IntArrayRef rates) {
  aspp::check_inputs("aspp_sum", x_, weights, biases, rates);
  TORCH_CHECK(x_.device().is_cpu(), "aspp_sum: 'x' must be a CPU tensor here, got ", x_.device());
  const int64_t N = x_.size(0), H = x_.size(2), W = x_.size(3), Co = weights[0].size(0);
  auto out = at::empty({N, Co, H, W}, x_.options());
  if (out.numel() == 0) return out;

  const at::Tensor x = aspp::dense_input(x_);
  // Reduced-precision inputs accumulate in float.  The rates' biases, summed once.
  const auto acc_type = at::toOpMathType(x.scalar_type());
  at::Tensor bias_sum;
  if (!biases.empty()) {
    bias_sum = biases[0].to(acc_type, /*non_blocking=*/false, /*copy=*/true).contiguous();
    for (size_t r = 1; r < biases.size(); ++r) bias_sum.add_(biases[r]);
  }
#if DEEPLAB_ASPP_DIRECT
  if (x.scalar_type() == at::kFloat && aspp::use_direct_forward()) {
    std::vector<at::Tensor> w;
    for (const auto& t : weights) w.push_back(t.contiguous());
    aspp::direct::forward(x, w, bias_sum, aspp::plan_taps(aspp::to_vector(rates), H, W, 0), out);
    return out;
  }
#endif
  const auto plan = aspp::plan_taps(aspp::to_vector(rates), H, W, aspp::band_cols());
  const at::Tensor wall = aspp::stack_weights(weights, plan);

  at::Tensor acc = acc_type == x.scalar_type() ? out : at::empty({N, Co, H, W}, x.options().dtype(acc_type));
  if (bias_sum.defined()) {
    acc.copy_(bias_sum.view({1, Co, 1, 1}).expand({N, Co, H, W}));
  } else {
    acc.zero_();
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "aspp_sum_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t n = 0; n < N; ++n) {
      acc_t* yn = acc.data_ptr<acc_t>() + n * Co * H * W;
      for (const auto& b : plan.bands) {
        at::Tensor Z = at::mm(wall.narrow(0, b.t0 * Co, (b.t1 - b.t0) * Co), aspp::row_band(x, n, b.i0, b.i1 - b.i0));
        shift_add<scalar_t, acc_t>(Z.data_ptr<scalar_t>(), yn, plan, b, Co, H, W);
      }
    }
  });
  if (!acc.is_same(out)) out.copy_(acc);
  return out;
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> aspp_sum_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x_, at::TensorList weights, at::IntArrayRef rates, bool has_bias) {
  aspp::check_inputs("_aspp_sum_backward", x_, weights, {}, rates);
  TORCH_CHECK(x_.device().is_cpu(), "_aspp_sum_backward: 'x' must be a CPU tensor here, got ", x_.device());
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
                                    aspp::band_cols());
  at::Tensor gwall = at::zeros({static_cast<int64_t>(plan.taps.size()) * Co, C}, x_.options());
  if (grad.numel() == 0 || C == 0) return {gx, aspp::unstack_weight_grads(gwall, plan, weights), gb};

  const at::Tensor x = aspp::dense_input(x_);
  const at::Tensor gy = grad.contiguous();
  const at::Tensor wall = aspp::stack_weights(weights, plan);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "aspp_sum_backward_cpu", [&] {
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* gyn = gy.data_ptr<scalar_t>() + n * Co * H * W;
      for (const auto& b : plan.bands) {
        const int64_t rows = b.i1 - b.i0, T = b.t1 - b.t0;
        at::Tensor S = at::empty({T * Co, rows * W}, x.options());
        shift_gather<scalar_t>(gyn, S.data_ptr<scalar_t>(), plan, b, Co, H, W);
        gwall.narrow(0, b.t0 * Co, T * Co).addmm_(S, aspp::row_band(x, n, b.i0, rows).t());
        aspp::row_band(gx, n, b.i0, rows).addmm_(wall.narrow(0, b.t0 * Co, T * Co).t(), S);
      }
    }
  });
  return {gx, aspp::unstack_weight_grads(gwall, plan, weights), gb};
}

}  // namespace

// For deeplab_compile._C.cpu_paths(): the float32 forward the next call would run,
// "direct" or "gemm", or "invalid" for a bad DEEPLAB_ASPP_CPU_KERNEL.
const char* aspp_cpu_forward_kind() noexcept {
  try {
    return aspp::use_direct_forward() ? "direct" : "gemm";
  } catch (...) {
    return "invalid";
  }
}

TORCH_LIBRARY_IMPL(deeplab, CPU, m) {
  m.impl("aspp_sum", &aspp_sum_cpu);
  m.impl("_aspp_sum_backward", &aspp_sum_backward_cpu);
}

}  // namespace deeplab
