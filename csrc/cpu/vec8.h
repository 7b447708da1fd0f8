// Eight floats as one value, and the exp of the CRF's softmax: this one in the float32
// loop (cpu/dense_crf.cpp), the same steps with the same coefficients in AVX2
// intrinsics in the half-storage loop (cpu/mean_field_f16.h).
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

// 2^g for |g| <= 1/2: a degree-5 minimax polynomial, lowest power first (relative
// error 7.5e-8, 2.3e-7 evaluated in float32).
constexpr float kExp2Poly[6] = {1.0000001192092896f, 6.931469440460205e-1f, 2.4022120237350464e-1f,
                                5.550713464617729e-2f, 9.675541892647743e-3f, 1.3276470126584172e-3f};
// Added to t in [-126, 0]: rounds it to an integer n in the low mantissa bits of the
// sum (floats in [2^23, 2^24) are whole), already biased by 127, so that the sum
// shifted left by 23 is the float 2^n.
constexpr float kExp2Magic = 12583039.f;  // 1.5 * 2^23 + 127

// exp(x) for x <= 0 (the max is subtracted first): 2^t with t = x log2(e) = n + g,
// n = round(t), 2^n built in the exponent bits and 2^g by kExp2Poly.  t is clamped at
// -126, the smallest normal power (the padding lanes sit there).
DL_VINLINE v8f exp_nonpositive(v8f x) {
  const v8f lo = x - x - 126.f;
  v8f t = x * 1.44269504088896341f;
  t = t < lo ? lo : t;
  const v8f tm = t + kExp2Magic;
  const v8f g = t - (tm - kExp2Magic);
  v8f p = g * kExp2Poly[5] + kExp2Poly[4];
  for (int k = 3; k >= 0; --k) p = p * g + kExp2Poly[k];
  v8i bits;
  std::memcpy(&bits, &tm, sizeof(bits));
  bits <<= 23;
  v8f scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace deeplab
