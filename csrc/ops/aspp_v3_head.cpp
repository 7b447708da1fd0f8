// Schema of the fused DeepLab v3 ASPP head for inference.
//
//   aspp_v3_head(x[N, C, H, W],
//                weights[B] of [Cb_i, C, k_i, k_i] (k_i = 1 or 3), biases[B] of [Cb_i],
//                rates[B] (dilation of the 3x3 branches; ignored for 1x1),
//                proj_weights[B] of [Co, Cb_i]      (the projection's slice for branch i),
//                pool_weight[Cp, C]?, pool_bias[Cp]?, pool_proj_weight[Co, Cp]?,
//                proj_bias[Co], relu_out, tap_branches=[]) -> y[N, Co, H, W]
//
//   y = act(proj_bias + P_pool relu(pool_weight mean_hw(x) + pool_bias)
//           + sum_i P_i relu(conv_i(x)))
//
// BatchNorm is already folded into every weight and bias.  Each branch's ReLU output
// is multiplied by its slice of the 1x1 projection and accumulated, so the concat of
// all branches is never built; image pooling becomes a per-image, per-channel bias.
// ``tap_branches`` lists the 3x3 branches to convolve with deeplab::aspp_sum (our tap
// GEMMs, one rate) instead of the library convolution: the atrous kernel, used where
// the dispatcher measured it faster for that branch's shape and rate.
// Inference only: no backward.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(deeplab, m) {
  m.def("aspp_v3_head(Tensor x, Tensor[] weights, Tensor[] biases, int[] rates, Tensor[] proj_weights, "
        "Tensor? pool_weight, Tensor? pool_bias, Tensor? pool_proj_weight, Tensor proj_bias, bool relu_out, "
        "int[] tap_branches=[]) -> Tensor");
}
