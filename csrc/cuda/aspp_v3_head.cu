// CUDA kernel of deeplab::aspp_v3_head: the same steps as on CPU
// (common/aspp_v3_head_impl.h), with cuDNN branch convolutions and cuBLAS batched GEMMs
// accumulating into one output.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/aspp_v3_head_impl.h"

namespace deeplab {
namespace {

at::Tensor aspp_v3_head_cuda(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                             at::IntArrayRef rates, at::TensorList proj_weights,
                             const c10::optional<at::Tensor>& pool_weight, const c10::optional<at::Tensor>& pool_bias,
                             const c10::optional<at::Tensor>& pool_proj_weight, const at::Tensor& proj_bias,
                             bool relu_out, at::IntArrayRef tap_branches) {
  aspp::check_head_inputs(x, weights, biases, rates, proj_weights, pool_weight, pool_bias, pool_proj_weight,
                          proj_bias, tap_branches);
  TORCH_CHECK(x.is_cuda(), "aspp_v3_head: 'x' must be a CUDA tensor here, got ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  return aspp::aspp_v3_head_impl(x, weights, biases, rates, proj_weights, pool_weight, pool_bias, pool_proj_weight,
                                 proj_bias, relu_out, tap_branches);
}

}  // namespace

TORCH_LIBRARY_IMPL(deeplab, CUDA, m) { m.impl("aspp_v3_head", &aspp_v3_head_cuda); }

}  // namespace deeplab
