// deeplab::aspp_v3_head on any device: the branch convolutions are the library's
// (oneDNN / cuDNN), except the 3x3 branches listed in ``tap_branches``, which go
// through deeplab::aspp_sum with their one rate (the caller lists those it measured
// faster that way; see benchmarks/RESULTS.md); the fusion is in what follows them.  Each branch's ReLU
// output goes straight into a batched GEMM with its slice of the projection, added to
// one accumulator, so the B * Cb channel concat and the upsampled pooling map are never
// built, and at most one branch output is alive at a time.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <vector>

namespace deeplab {
namespace aspp {

inline void check_head_inputs(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                              at::IntArrayRef rates, at::TensorList proj_weights,
                              const c10::optional<at::Tensor>& pool_weight, const c10::optional<at::Tensor>& pool_bias,
                              const c10::optional<at::Tensor>& pool_proj_weight, const at::Tensor& proj_bias,
                              at::IntArrayRef tap_branches) {
  const char* op = "aspp_v3_head";
  for (const int64_t t : tap_branches)
    TORCH_CHECK(t >= 0 && t < static_cast<int64_t>(weights.size()) && weights[t].dim() == 4 && weights[t].size(2) == 3,
                op, ": 'tap_branches' entry ", t, " is not a 3x3 branch (", weights.size(), " branches)");
  TORCH_CHECK(x.dim() == 4, op, ": 'x' must be 4-D [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": 'x' must be floating point, got ", x.scalar_type());
  const size_t B = weights.size();
  TORCH_CHECK(biases.size() == B && rates.size() == B && proj_weights.size() == B, op, ": ", B, " weights but ",
              biases.size(), " biases, ", rates.size(), " rates and ", proj_weights.size(),
              " proj_weights; give one of each per branch");
  TORCH_CHECK(proj_bias.dim() == 1, op, ": 'proj_bias' must be [Co], got ", proj_bias.sizes());
  const int64_t co = proj_bias.size(0);
  auto same = [&](const at::Tensor& t, const char* name, size_t i) {
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": '", name, "[", i, "]' is ", t.scalar_type(),
                " but 'x' is ", x.scalar_type());
    TORCH_CHECK(t.device() == x.device(), op, ": '", name, "[", i, "]' is on ", t.device(), " but 'x' is on ",
                x.device());
  };
  for (size_t i = 0; i < B; ++i) {
    const auto& w = weights[i];
    TORCH_CHECK(w.dim() == 4 && w.size(1) == x.size(1) && w.size(2) == w.size(3) && (w.size(2) == 1 || w.size(2) == 3),
                op, ": 'weights[", i, "]' must be [Cb, ", x.size(1), ", k, k] with k 1 or 3, got ", w.sizes());
    TORCH_CHECK(biases[i].dim() == 1 && biases[i].size(0) == w.size(0), op, ": 'biases[", i, "]' must be [",
                w.size(0), "], got ", biases[i].sizes());
    TORCH_CHECK(proj_weights[i].dim() == 2 && proj_weights[i].size(0) == co && proj_weights[i].size(1) == w.size(0),
                op, ": 'proj_weights[", i, "]' must be [", co, ", ", w.size(0), "], got ", proj_weights[i].sizes());
    TORCH_CHECK(rates[i] >= 1, op, ": 'rates[", i, "]' must be >= 1, got ", rates[i]);
    same(w, "weights", i);
    same(biases[i], "biases", i);
    same(proj_weights[i], "proj_weights", i);
  }
  const bool has_pool = pool_weight.has_value();
  TORCH_CHECK(pool_bias.has_value() == has_pool && pool_proj_weight.has_value() == has_pool, op,
              ": give all of 'pool_weight', 'pool_bias' and 'pool_proj_weight', or none");
  if (has_pool) {
    const auto& pw = *pool_weight;
    TORCH_CHECK(pw.dim() == 2 && pw.size(1) == x.size(1), op, ": 'pool_weight' must be [Cp, ", x.size(1), "], got ",
                pw.sizes());
    TORCH_CHECK(pool_bias->dim() == 1 && pool_bias->size(0) == pw.size(0), op, ": 'pool_bias' must be [",
                pw.size(0), "], got ", pool_bias->sizes());
    TORCH_CHECK(pool_proj_weight->dim() == 2 && pool_proj_weight->size(0) == co &&
                    pool_proj_weight->size(1) == pw.size(0),
                op, ": 'pool_proj_weight' must be [", co, ", ", pw.size(0), "], got ", pool_proj_weight->sizes());
    same(pw, "pool_weight", 0);
    same(*pool_bias, "pool_bias", 0);
    same(*pool_proj_weight, "pool_proj_weight", 0);
  }
  same(proj_bias, "proj_bias", 0);
}

inline at::Tensor aspp_v3_head_impl(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                                    at::IntArrayRef rates, at::TensorList proj_weights,
                                    const c10::optional<at::Tensor>& pool_weight,
                                    const c10::optional<at::Tensor>& pool_bias,
                                    const c10::optional<at::Tensor>& pool_proj_weight, const at::Tensor& proj_bias,
                                    bool relu_out, at::IntArrayRef tap_branches) {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3), Co = proj_bias.size(0);
  // Per-image bias [N, Co, 1]: the projection bias plus the image-pooling branch.
  at::Tensor bias = proj_bias.view({1, Co}).expand({N, Co});
  if (pool_weight.has_value() && N > 0) {
    at::Tensor pooled = H * W > 0 ? x.mean({2, 3}) : at::zeros({N, x.size(1)}, x.options());
    at::Tensor p = at::addmm(*pool_bias, pooled, pool_weight->t()).relu_();
    bias = at::addmm(bias, p, pool_proj_weight->t());
  }
  at::Tensor y = bias.unsqueeze(2).expand({N, Co, H * W}).contiguous();
  if (y.numel() == 0) return y.view({N, Co, H, W});
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t k = weights[i].size(2), pad = rates[i] * (k - 1) / 2, dil = k == 1 ? 1 : rates[i];
    const bool taps = std::find(tap_branches.begin(), tap_branches.end(), static_cast<int64_t>(i)) != tap_branches.end();
    at::Tensor r;
    if (taps) {
      static const auto aspp_sum = c10::Dispatcher::singleton()
                                       .findSchemaOrThrow("deeplab::aspp_sum", "")
                                       .typed<at::Tensor(const at::Tensor&, at::TensorList, at::TensorList,
                                                         at::IntArrayRef)>();
      const int64_t rate = rates[i];
      r = aspp_sum.call(x, {weights[i]}, {biases[i]}, at::IntArrayRef(&rate, 1));
    } else {
      r = at::convolution(x, weights[i], biases[i], {1, 1}, {pad, pad}, {dil, dil}, false, {0, 0}, 1);
    }
    r.relu_();
    y.baddbmm_(proj_weights[i].unsqueeze(0).expand({N, Co, proj_weights[i].size(1)}), r.flatten(2));
  }
  if (relu_out) y.relu_();
  return y.view({N, Co, H, W});
}

}  // namespace aspp
}  // namespace deeplab
