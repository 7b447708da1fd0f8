// CPU kernel of deeplab::aspp_v3_head (see common/aspp_v3_head_impl.h for the steps).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/aspp_v3_head_impl.h"

namespace deeplab {
namespace {

at::Tensor aspp_v3_head_cpu(const at::Tensor& x, at::TensorList weights, at::TensorList biases, at::IntArrayRef rates,
                            at::TensorList proj_weights, const c10::optional<at::Tensor>& pool_weight,
                            const c10::optional<at::Tensor>& pool_bias,
                            const c10::optional<at::Tensor>& pool_proj_weight, const at::Tensor& proj_bias,
                            bool relu_out, at::IntArrayRef tap_branches) {
  aspp::check_head_inputs(x, weights, biases, rates, proj_weights, pool_weight, pool_bias, pool_proj_weight,
                          proj_bias, tap_branches);
  TORCH_CHECK(x.device().is_cpu(), "aspp_v3_head: 'x' must be a CPU tensor here, got ", x.device());
  return aspp::aspp_v3_head_impl(x, weights, biases, rates, proj_weights, pool_weight, pool_bias, pool_proj_weight,
                                 proj_bias, relu_out, tap_branches);
}

}  // namespace

TORCH_LIBRARY_IMPL(deeplab, CPU, m) { m.impl("aspp_v3_head", &aspp_v3_head_cpu); }

}  // namespace deeplab
