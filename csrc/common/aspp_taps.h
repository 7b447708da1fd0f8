// The tap plan shared by the aspp_sum kernels (CPU and CUDA).
//
// y = sum_r conv3x3(x, W_r, dilation r, padding r) is computed as GEMMs of the weight
// taps against the input followed by shifted adds:
//
//   Z_t = W_t[Co, C] @ x[C, rows]                   (all taps of a band in one GEMM)
//   y[co, h, w] += Z_t[co, h + dy_t, w + dx_t]      where (h + dy_t, w + dx_t) is inside x
//
// The centre taps of all rates share the offset (0, 0); their weights are summed into
// one tap.  Taps whose offset is at least the map size never read inside the image and
// are dropped.  The input is cut into bands of rows; a tap with vertical offset dy reads
// input rows [max(dy, 0), H + min(dy, 0)), so with the taps sorted by dy the taps a
// band needs are one contiguous range: each band is one GEMM of a slice of the stacked
// weights against the band, with no copies.  Large rates on small maps then skip most
// of the rows they cannot reach, while each GEMM keeps M = taps * Co large, which is
// what lets BLAS run near peak when Co is DeepLab's 21 classes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/hd.h"

namespace deeplab {
namespace aspp {

struct Tap {
  int64_t dy, dx;  // offset of the input pixel read for output pixel (h, w)
  int rate;        // index into the rates, -1 for the merged centre tap
  int ky, kx;      // kernel position (1, 1 for the centre)
};

struct Band {
  int64_t i0, i1;           // input rows [i0, i1); Z row = input row - i0
  int64_t t0, t1;           // the taps [t0, t1) that read inside this band
};

struct Plan {
  std::vector<Tap> taps;    // sorted by dy
  std::vector<Band> bands;
};

// target_cols: roughly how many pixels (GEMM columns) one band should hold.
inline Plan plan_taps(const std::vector<int64_t>& rates, int64_t H, int64_t W, int64_t target_cols) {
  Plan p;
  p.taps.push_back(Tap{0, 0, -1, 1, 1});
  for (int r = 0; r < static_cast<int>(rates.size()); ++r) {
    for (int ky = 0; ky < 3; ++ky) {
      for (int kx = 0; kx < 3; ++kx) {
        if (ky == 1 && kx == 1) continue;
        const int64_t dy = (ky - 1) * rates[r], dx = (kx - 1) * rates[r];
        if (std::llabs(dy) >= H || std::llabs(dx) >= W) continue;
        p.taps.push_back(Tap{dy, dx, r, ky, kx});
      }
    }
  }
  std::stable_sort(p.taps.begin(), p.taps.end(), [](const Tap& a, const Tap& b) { return a.dy < b.dy; });
  int64_t nb = target_cols > 0 ? (H * W + target_cols / 2) / target_cols : 1;
  nb = std::max<int64_t>(1, std::min(nb, H));
  const int64_t rows = (H + nb - 1) / nb;
  const int64_t T = static_cast<int64_t>(p.taps.size());
  for (int64_t i0 = 0; i0 < H; i0 += rows) {
    const int64_t i1 = std::min(H, i0 + rows);
    // Tap reads [max(dy,0), H+min(dy,0)); it meets [i0, i1) iff i0 - H < dy < i1.
    int64_t t0 = 0, t1 = T;
    while (t0 < T && p.taps[t0].dy <= i0 - H) ++t0;
    while (t1 > t0 && p.taps[t1 - 1].dy >= i1) --t1;
    if (t1 > t0) p.bands.push_back(Band{i0, i1, t0, t1});
  }
  return p;
}

// The output rows [h0, h1) of a tap with vertical offset dy whose input row h + dy lies
// in the image and in the band's rows [i0, i1).
DL_HD void valid_rows(int64_t dy, int64_t i0, int64_t i1, int64_t H, int64_t& h0, int64_t& h1) {
  h0 = i0 - dy > 0 ? i0 - dy : 0;
  h1 = i1 - dy < H ? i1 - dy : H;
}

inline void valid_rows(const Tap& t, const Band& b, int64_t H, int64_t& h0, int64_t& h1) {
  valid_rows(t.dy, b.i0, b.i1, H, h0, h1);
}

// The output columns [w0, w1) for which w + dx is inside [0, W).
DL_HD void valid_cols(int64_t dx, int64_t W, int64_t& w0, int64_t& w1) {
  w0 = dx < 0 ? -dx : 0;
  w1 = dx > 0 ? W - dx : W;
}

// Index into a band's GEMM output Z [T, Co, rows, W] (equally the backward's shifted
// gradient S): tap tt of the band, class co, band row r, column j.
DL_HD int64_t z_index(int64_t tt, int64_t co, int64_t Co, int64_t rows, int64_t r, int64_t j, int64_t W) {
  return ((tt * Co + co) * rows + r) * W + j;
}

// Whether output pixel (h, w) reads inside the image and the band through the tap
// (dy, dx); the per-pixel form of valid_rows and valid_cols, for one thread per pixel.
DL_HD bool tap_reads(int64_t dy, int64_t dx, int64_t i0, int64_t i1, int64_t H, int64_t W, int64_t h, int64_t w) {
  int64_t h0, h1, w0, w1;
  valid_rows(dy, i0, i1, H, h0, h1);
  valid_cols(dx, W, w0, w1);
  return h >= h0 && h < h1 && w >= w0 && w < w1;
}

}  // namespace aspp
}  // namespace deeplab
