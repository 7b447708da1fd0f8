// Host-side steps of deeplab::aspp_sum shared by the CPU and CUDA kernels: input
// checks, gathering each tap group's weights into one matrix, and scattering the
// weight gradients back.  The device kernels only do the shifted adds.
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common/aspp_taps.h"

namespace deeplab {
namespace aspp {

inline void check_inputs(const char* op, const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                         at::IntArrayRef rates) {
  TORCH_CHECK(x.dim() == 4, op, ": 'x' must be 4-D [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(!weights.empty(), op, ": 'weights' is empty; give one [Co, C, 3, 3] weight per rate");
  TORCH_CHECK(weights.size() == rates.size(), op, ": ", weights.size(), " weights but ", rates.size(), " rates");
  TORCH_CHECK(biases.empty() || biases.size() == weights.size(), op, ": ", biases.size(),
              " biases for ", weights.size(), " weights; give one per weight or none");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": 'x' must be floating point, got ", x.scalar_type());
  const int64_t co = weights[0].dim() == 4 ? weights[0].size(0) : -1;
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& w = weights[i];
    TORCH_CHECK(w.dim() == 4 && w.size(0) == co && w.size(1) == x.size(1) && w.size(2) == 3 && w.size(3) == 3,
                op, ": 'weights[", i, "]' must be [", co, ", ", x.size(1), ", 3, 3] (x has ", x.size(1),
                " channels), got ", w.sizes());
    TORCH_CHECK(w.scalar_type() == x.scalar_type(), op, ": 'weights[", i, "]' is ", w.scalar_type(),
                " but 'x' is ", x.scalar_type());
    TORCH_CHECK(w.device() == x.device(), op, ": 'weights[", i, "]' is on ", w.device(), " but 'x' is on ",
                x.device());
    TORCH_CHECK(rates[i] >= 1, op, ": 'rates[", i, "]' must be >= 1, got ", rates[i]);
  }
  for (size_t i = 0; i < biases.size(); ++i) {
    const auto& b = biases[i];
    TORCH_CHECK(b.dim() == 1 && b.size(0) == co, op, ": 'biases[", i, "]' must be [", co, "], got ", b.sizes());
    TORCH_CHECK(b.scalar_type() == x.scalar_type(), op, ": 'biases[", i, "]' is ", b.scalar_type(),
                " but 'x' is ", x.scalar_type());
    TORCH_CHECK(b.device() == x.device(), op, ": 'biases[", i, "]' is on ", b.device(), " but 'x' is on ",
                x.device());
  }
}

// x made dense: NCHW-contiguous unless it already is channels-last, which the GEMMs
// read as a transposed matrix without a copy.
inline at::Tensor dense_input(const at::Tensor& x) {
  if (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
  return x.contiguous();
}

// Rows [start, start + count) of image n as a [C, count * W] matrix.
inline at::Tensor row_band(const at::Tensor& x, int64_t n, int64_t start, int64_t count) {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  return x.select(0, n).view({C, H * W}).narrow(1, start * W, count * W);
}

// Pixels per band (GEMM columns); 0 is one band, every tap over the whole image.
// Smaller bands skip more unreachable rows (about 17-27% of the multiply-adds at
// DeepLab's shapes) but make smaller GEMMs.  On CPU, bands of about 200 pixels
// measured fastest at DeepLab's 41x41 and 65x65 maps (benchmarks/aspp.py); on CUDA
// one large GEMM keeps the device busy.  DEEPLAB_ASPP_BAND_COLS overrides both.
inline int64_t band_cols(bool cuda = false) {
  if (const char* env = std::getenv("DEEPLAB_ASPP_BAND_COLS")) return std::atoll(env);
  return cuda ? 0 : 200;
}

inline std::vector<int64_t> to_vector(at::IntArrayRef rates) { return std::vector<int64_t>(rates.begin(), rates.end()); }

// [taps * Co, C]: the weight of every tap, stacked in plan order.
inline at::Tensor stack_weights(at::TensorList weights, const Plan& p) {
  std::vector<at::Tensor> parts;
  parts.reserve(p.taps.size());
  for (const auto& t : p.taps) {
    if (t.rate < 0) {
      at::Tensor c = weights[0].select(3, 1).select(2, 1).clone(at::MemoryFormat::Contiguous);
      for (size_t r = 1; r < weights.size(); ++r) c.add_(weights[r].select(3, 1).select(2, 1));
      parts.push_back(c);
    } else {
      parts.push_back(weights[t.rate].select(3, t.kx).select(2, t.ky));
    }
  }
  return at::cat(parts, 0);
}

// Scatters the stacked weight gradient [taps * Co, C] back to one [Co, C, 3, 3] per
// rate.  The merged centre tap's gradient belongs to every rate's centre.
inline std::vector<at::Tensor> unstack_weight_grads(const at::Tensor& grad, const Plan& p, at::TensorList weights) {
  std::vector<at::Tensor> out;
  for (const auto& w : weights) out.push_back(at::zeros(w.sizes(), w.options()));
  const int64_t co = weights[0].size(0);
  for (size_t t = 0; t < p.taps.size(); ++t) {
    at::Tensor rows = grad.narrow(0, static_cast<int64_t>(t) * co, co);
    const auto& tap = p.taps[t];
    if (tap.rate < 0) {
      for (auto& o : out) o.select(3, 1).select(2, 1).copy_(rows);
    } else {
      out[tap.rate].select(3, tap.kx).select(2, tap.ky).copy_(rows);
    }
  }
  return out;
}

}  // namespace aspp
}  // namespace deeplab
