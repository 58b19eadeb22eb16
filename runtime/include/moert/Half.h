//===- Half.h - bf16 and fp16 conversions on the host -----------*- C++ -*-===//
//
// The 16-bit float formats of plans compiled with `moec --precision=bf16|fp16`
// (expert and dense GEMM weights and the rows that go through them), as raw
// uint16_t bits:
//   * bf16: 1 sign, 8 exponent, 7 mantissa bits (the top half of an fp32);
//   * fp16: IEEE 754 binary16 (1, 5, 10), with subnormals.
// Narrowing rounds to nearest, ties to even (as cvt.rn on the GPU and
// LLVM's fptrunc), keeps infinities, and turns NaNs into quiet NaNs of the
// same sign. Widening is exact. Used by the plan writer (weights) and the
// CPU backend (which computes in fp32 on the widened values); header-only,
// no dependencies.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_HALF_H
#define MOERT_HALF_H

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace moert {

inline uint32_t floatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// fp32 -> bf16, round to nearest even.
inline uint16_t f32ToBf16(float f) {
  uint32_t u = floatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) // NaN: keep the sign, make it quiet
    return uint16_t((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf16ToF32(uint16_t h) { return bitsFloat(uint32_t(h) << 16); }

/// fp32 -> IEEE fp16, round to nearest even (subnormals, overflow to inf).
inline uint16_t f32ToF16(float f) {
  uint32_t u = floatBits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) // NaN
    return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) // >= 65520 rounds to infinity (and inf itself)
    return uint16_t(sign | 0x7c00u);
  if (a < 0x38800000u) { // below 2^-14: subnormal fp16 (or zero)
    if (a < 0x33000000u) // below 2^-25: rounds to zero
      return sign;
    // The value is m * 2^(e-150) with the implicit bit in m; the fp16
    // subnormal unit is 2^-24, so shift by 126 - e (14..24 here).
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1),
             half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
      ++q; // may carry into the smallest normal: still the right bits
    return uint16_t(sign | q);
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits.
  uint32_t r = a - 0x38000000u; // exponent - 112, in place
  uint32_t q = r >> 13, rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))
    ++q; // a carry into the exponent is the correct next binade
  return uint16_t(sign | q);
}

inline float f16ToF32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) // inf or NaN
    return bitsFloat(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    if (m == 0)
      return bitsFloat(sign);
    // Subnormal: m * 2^-24, exact in fp32.
    float v = float(m) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return bitsFloat(sign | ((e + 112) << 23) | (m << 13));
}

/// Which 16-bit format; `fromF32`/`toF32` convert `n` elements.
enum class Half16 { bf16, f16 };
inline void fromF32(Half16 t, const float *src, uint16_t *dst, size_t n) {
  if (t == Half16::bf16)
    for (size_t i = 0; i < n; ++i)
      dst[i] = f32ToBf16(src[i]);
  else
    for (size_t i = 0; i < n; ++i)
      dst[i] = f32ToF16(src[i]);
}
inline void toF32(Half16 t, const uint16_t *src, float *dst, size_t n) {
  if (t == Half16::bf16)
    for (size_t i = 0; i < n; ++i)
      dst[i] = bf16ToF32(src[i]);
  else
    for (size_t i = 0; i < n; ++i)
      dst[i] = f16ToF32(src[i]);
}

} // namespace moert

#endif // MOERT_HALF_H
