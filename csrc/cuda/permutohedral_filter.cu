// CUDA kernel of deeplab::permutohedral_filter and its backward (same steps as
// csrc/cpu/permutohedral_filter.cpp).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/lattice_checks.h"
#include "cuda/permutohedral.cuh"

namespace deeplab {
namespace {

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

// The shared argument checks, then the device (t is 'values' or 'grad').
void check_inputs(const at::Tensor& features, const at::Tensor& t, const char* tname) {
  TORCH_CHECK(features.is_cuda() && t.is_cuda() && features.device() == t.device(),
              "permutohedral_filter: 'features' and '", tname, "' must be on the same CUDA device");
  lattice_checks::filter(features, t, tname);
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
