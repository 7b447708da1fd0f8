// Schema of fully connected CRF mean-field inference (Kraehenbuehl & Koltun 2011)
// with Potts compatibility, one Gaussian (positional) and one bilateral kernel.
//
//   dense_crf(image[B, 3, H, W] float32, unary[B, C, H, W] float32,
//             pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std, iterations,
//             normalization) -> Q[B, C, H, W] float32 (marginals)
//
// ``unary`` is the energy -log p.  Positional features are (x, y) / pos_xy_std,
// bilateral features (x, y) / bi_xy_std and the three image channels / bi_rgb_std.
// ``normalization`` is "symmetric" (D^-1/2 K D^-1/2, pydensecrf's default) or
// "after" (D^-1 K, per-pixel, as in the densecrf code DeepLab shipped).
// Not differentiable.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(deeplab, m) {
  m.def(
      "dense_crf(Tensor image, Tensor unary, float pos_w, float pos_xy_std, float bi_w, "
      "float bi_xy_std, float bi_rgb_std, int iterations, str normalization=\"symmetric\") -> Tensor");
}
