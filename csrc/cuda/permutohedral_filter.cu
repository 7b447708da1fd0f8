// CUDA kernel of deeplab::permutohedral_filter and its backward (same steps as
// csrc/cpu/permutohedral_filter.cpp).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/permutohedral.cuh"

namespace deeplab {
namespace {

void check_inputs(const at::Tensor& features, const at::Tensor& values, const char* vname) {
  TORCH_CHECK(features.dim() == 2, "permutohedral_filter: 'features' must be 2-D [N, D], got ",
              features.sizes());
  TORCH_CHECK(values.dim() == 2, "permutohedral_filter: '", vname, "' must be 2-D [N, V], got ",
              values.sizes());
  TORCH_CHECK(features.size(0) == values.size(0), "permutohedral_filter: 'features' has ",
              features.size(0), " points but '", vname, "' has ", values.size(0));
  TORCH_CHECK(features.size(1) >= 1, "permutohedral_filter: 'features' needs at least one dimension");
  TORCH_CHECK(at::isFloatingType(features.scalar_type()),
              "permutohedral_filter: 'features' must be floating point, got ", features.scalar_type());
  TORCH_CHECK(values.scalar_type() == at::kFloat || values.scalar_type() == at::kDouble,
              "permutohedral_filter: '", vname, "' must be float32 or float64, got ", values.scalar_type());
  TORCH_CHECK(features.is_cuda() && values.is_cuda() && features.device() == values.device(),
              "permutohedral_filter: 'features' and '", vname, "' must be on the same CUDA device");
  TORCH_CHECK(features.size(0) < (int64_t{1} << 31) / (features.size(1) + 1),
              "permutohedral_filter: too many points for 32-bit lattice indices");
}

at::Tensor filter_cuda(const at::Tensor& features, const at::Tensor& values, bool reverse) {
  const c10::cuda::CUDAGuard guard(values.device());
  const int64_t n = values.size(0), v = values.size(1);
  auto out = at::empty({n, v}, values.options());
  if (n == 0 || v == 0) return out.zero_();
  auto f = features.to(values.scalar_type()).contiguous();
  auto in = values.contiguous();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "permutohedral_filter_cuda", [&] {
    const auto L = lattice_cuda::build_lattice(f);
    lattice_cuda::filter<scalar_t>(L, in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), v, reverse,
                                   values.options());
  });
  return out;
}

at::Tensor permutohedral_filter_cuda(const at::Tensor& features, const at::Tensor& values) {
  check_inputs(features, values, "values");
  return filter_cuda(features, values, /*reverse=*/false);
}

at::Tensor permutohedral_filter_backward_cuda(const at::Tensor& features, const at::Tensor& grad) {
  check_inputs(features, grad, "grad");
  return filter_cuda(features, grad, /*reverse=*/true);
}

}  // namespace

TORCH_LIBRARY_IMPL(deeplab, CUDA, m) {
  m.impl("permutohedral_filter", &permutohedral_filter_cuda);
  m.impl("_permutohedral_filter_backward", &permutohedral_filter_backward_cuda);
}

}  // namespace deeplab
