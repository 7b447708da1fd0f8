// Per-pixel arithmetic of the dense CRF shared by the CPU and CUDA kernels: the
// lattice features of a pixel and the scales that fold a kernel's normaliser and
// Potts weight into its splat and slice weights.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hd.h"

namespace deeplab {
namespace crf {

// Features of pixel (x, y) of an H x W image (p = y * W + x, n = H * W): x / xy_std,
// y / xy_std and, with colour, each of the three channels of the planar image over
// rgb_std.  Writes 2 or 5 floats to f.
DL_HD void pixel_features(const float* img, int64_t n, int64_t x, int64_t y, int64_t p, float xy_std, float rgb_std,
                          bool with_colour, float* f) {
  f[0] = x / xy_std;
  f[1] = y / xy_std;
  if (with_colour)
    for (int c = 0; c < 3; ++c) f[2 + c] = img[c * n + p] / rgb_std;
}

// From a pixel's degree s (its kernel filtered over ones): the input scale and the
// output scale times the Potts weight w.  "symmetric" normalises by s^-1/2 on both
// sides, otherwise by s^-1 after filtering.
DL_HD void norm_scales(float s, float w, bool symmetric, float& in_scale, float& out_scale) {
  const float norm = symmetric ? 1.f / sqrtf(s + 1e-20f) : 1.f / (s + 1e-20f);
  in_scale = symmetric ? norm : 1.f;
  out_scale = w * norm;
}

}  // namespace crf
}  // namespace deeplab
