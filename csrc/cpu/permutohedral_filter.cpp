// CPU kernel of deeplab::permutohedral_filter and its backward.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "common/lattice_checks.h"
#include "cpu/permutohedral.h"

namespace deeplab {
namespace {

at::Tensor filter_cpu(const at::Tensor& features, const at::Tensor& values, bool reverse) {
  const int64_t n = values.size(0), v = values.size(1);
  const int d = static_cast<int>(features.size(1));
  auto out = at::empty_like(values, at::MemoryFormat::Contiguous);
  if (n == 0 || v == 0) return out.zero_();
  const int64_t S = lattice::padded(v);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "permutohedral_filter_cpu", [&] {
    auto f = features.to(values.scalar_type()).contiguous();
    // Padded, point-major copy of the values; the padding lanes stay zero.
    auto buf = at::zeros({n, S}, values.options());
    buf.narrow(1, 0, v).copy_(values);
    lattice::Lattice<scalar_t> L;
    lattice::build_lattice<scalar_t>(f.data_ptr<scalar_t>(), n, d, L);
    lattice::Workspace<scalar_t> ws;
    scalar_t* p = buf.data_ptr<scalar_t>();
    lattice::filter<scalar_t>(L, p, p, S, reverse, ws);
    out.copy_(buf.narrow(1, 0, v));
  });
  return out;
}

at::Tensor permutohedral_filter_cpu(const at::Tensor& features, const at::Tensor& values) {
  lattice_checks::filter(features, values, "values");
  return filter_cpu(features, values, /*reverse=*/false);
}

at::Tensor permutohedral_filter_backward_cpu(const at::Tensor& features, const at::Tensor& grad) {
  lattice_checks::filter(features, grad, "grad");
  return filter_cpu(features, grad, /*reverse=*/true);
}

}  // namespace

TORCH_LIBRARY_IMPL(deeplab, CPU, m) {
  m.impl("permutohedral_filter", &permutohedral_filter_cpu);
  m.impl("_permutohedral_filter_backward", &permutohedral_filter_backward_cpu);
}

}  // namespace deeplab
