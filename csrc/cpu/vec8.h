// Eight floats as one value, and the exp the CRF's float32 loop (cpu/dense_crf.cpp)
// uses in its softmax; the half-storage loop (cpu/mean_field_f16.h) has the same
// steps in AVX2 intrinsics, with the polynomial in fused multiply-adds.
#pragma once

#include <cstdint>
#include <cstring>

namespace deeplab {

// Eight floats as one value: GCC/Clang vector extensions give the same code on
// every target (one AVX register in the x86-64-v3 clone, two SSE ones otherwise).
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

// Always inlined into its (possibly AVX) callers: an out-of-line copy would be
// compiled for the baseline ABI, which passes 32-byte vectors differently.
#define DL_VINLINE inline __attribute__((always_inline))

// exp(x) for x <= 0 (the max is subtracted first): x = n ln2 + f, 2^n built in
// the exponent bits, e^f by its Taylor polynomial.  Relative error below 2e-7.
DL_VINLINE v8f exp_nonpositive(v8f x) {
  const v8f lo = x - x - 87.f;
  x = x < lo ? lo : x;
  const v8f t = x * 1.44269504088896341f;
  const v8f n = (t + 12582912.f) - 12582912.f;  // round to nearest, |t| < 2^22
  const v8f f = (t - n) * 0.69314718055994531f;  // |f| <= ln2/2
  v8f p = f * (1.f / 5040.f) + 1.f / 720.f;
  p = p * f + 1.f / 120.f;
  p = p * f + 1.f / 24.f;
  p = p * f + 1.f / 6.f;
  p = p * f + 0.5f;
  p = p * f + 1.f;
  p = p * f + 1.f;
  const v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8f scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace deeplab
