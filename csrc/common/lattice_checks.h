// Argument checks of the lattice ops, shared by the CPU and CUDA kernels so that both
// refuse the same inputs with the same messages.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <string>

namespace deeplab {
namespace lattice_checks {

// deeplab::dense_crf: shapes, dtypes and parameters; returns the normalization.
inline std::string dense_crf(const at::Tensor& image, const at::Tensor& unary, double pos_w, double pos_xy_std,
                             double bi_w, double bi_xy_std, double bi_rgb_std, int64_t iterations,
                             c10::string_view normalization) {
  TORCH_CHECK(image.dim() == 4 && image.size(1) == 3, "dense_crf: 'image' must be [B, 3, H, W], got ",
              image.sizes());
  TORCH_CHECK(unary.dim() == 4, "dense_crf: 'unary' must be [B, C, H, W], got ", unary.sizes());
  TORCH_CHECK(image.scalar_type() == at::kFloat, "dense_crf: 'image' must be float32, got ", image.scalar_type());
  TORCH_CHECK(unary.scalar_type() == at::kFloat, "dense_crf: 'unary' must be float32, got ", unary.scalar_type());
  TORCH_CHECK(image.size(0) == unary.size(0) && image.size(2) == unary.size(2) && image.size(3) == unary.size(3),
              "dense_crf: 'image' ", image.sizes(), " and 'unary' ", unary.sizes(),
              " must agree in batch, height and width");
  TORCH_CHECK(unary.size(1) >= 1, "dense_crf: 'unary' needs at least one label");
  TORCH_CHECK(pos_xy_std > 0 && bi_xy_std > 0 && bi_rgb_std > 0,
              "dense_crf: standard deviations must be positive, got pos_xy_std=", pos_xy_std,
              " bi_xy_std=", bi_xy_std, " bi_rgb_std=", bi_rgb_std);
  TORCH_CHECK(pos_w >= 0 && bi_w >= 0, "dense_crf: weights must be non-negative, got pos_w=", pos_w,
              " bi_w=", bi_w);
  TORCH_CHECK(iterations >= 0, "dense_crf: 'iterations' must be >= 0, got ", iterations);
  const std::string norm(normalization.data(), normalization.size());
  TORCH_CHECK(norm == "symmetric" || norm == "after",
              "dense_crf: 'normalization' must be \"symmetric\" or \"after\", got \"", norm, "\"");
  return norm;
}

// deeplab::permutohedral_filter and its backward.
inline void filter(const at::Tensor& features, const at::Tensor& values, const char* vname) {
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
  TORCH_CHECK(features.size(0) < (int64_t{1} << 31) / (features.size(1) + 1),
              "permutohedral_filter: too many points for 32-bit lattice indices");
}

}  // namespace lattice_checks
}  // namespace deeplab
