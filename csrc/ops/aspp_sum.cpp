// Schema of DeepLab v2's ASPP sum and its backward.
//
//   aspp_sum(x[N, C, H, W], weights[R] of [Co, C, 3, 3], biases[R] of [Co] (or none),
//            rates[R]) -> y[N, Co, H, W]
//     y = sum_r conv2d(x, weights[r], biases[r], dilation=rates[r], padding=rates[r]).
//     The input is read once; there are no per-rate outputs.
//   _aspp_sum_backward(grad[N, Co, H, W], x, weights, rates, has_bias)
//       -> (grad_x, grad_weights[R], grad_biases[R] (empty without bias))
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(deeplab, m) {
  m.def("aspp_sum(Tensor x, Tensor[] weights, Tensor[] biases, int[] rates) -> Tensor");
  m.def("_aspp_sum_backward(Tensor grad, Tensor x, Tensor[] weights, int[] rates, bool has_bias) "
        "-> (Tensor, Tensor[], Tensor[])");
}
