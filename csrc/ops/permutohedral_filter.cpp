// Schema of the permutohedral-lattice Gaussian filter and its backward.
//
//   permutohedral_filter(features[N, D], values[N, V]) -> out[N, V]
//     out[i] ~= sum_j exp(-|f_i - f_j|^2 / 2) * values[j]   (lattice approximation,
//     self term included, no normalisation).  Linear in ``values``; ``features``
//     only place the points and get no gradient.
//   _permutohedral_filter_backward(features, grad_out) -> grad_values
//     the transposed filter (same lattice, blur axes in reverse order).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(deeplab, m) {
  m.def("permutohedral_filter(Tensor features, Tensor values) -> Tensor");
  m.def("_permutohedral_filter_backward(Tensor features, Tensor grad) -> Tensor");
}
