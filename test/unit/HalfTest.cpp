//===- HalfTest.cpp - moert/Half.h against LLVM's APFloat -----------------===//
//
// The runtime's bf16/fp16 conversions (used by the plan writer for weights
// and by the CPU backend) checked against an independent implementation,
// llvm::APFloat (round to nearest even), on special values, every binade
// edge and a million random bit patterns; widening on all 65536 inputs.
//
//===----------------------------------------------------------------------===//

#include "moert/Half.h"

#include "llvm/ADT/APFloat.h"

#include <cmath>
#include <gtest/gtest.h>
#include <random>

using namespace moert;

namespace {

uint16_t viaAPFloat(float f, const llvm::fltSemantics &sem) {
  llvm::APFloat a(f);
  bool lost = false;
  a.convert(sem, llvm::APFloat::rmNearestTiesToEven, &lost);
  return uint16_t(a.bitcastToAPInt().getZExtValue());
}

bool isNaN16(uint16_t h, bool bf16) {
  return bf16 ? ((h & 0x7f80u) == 0x7f80u && (h & 0x7fu))
              : ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu));
}

void expectNarrow(float f) {
  uint32_t bits = floatBits(f);
  uint16_t b = f32ToBf16(f), bRef = viaAPFloat(f, llvm::APFloat::BFloat());
  uint16_t h = f32ToF16(f), hRef = viaAPFloat(f, llvm::APFloat::IEEEhalf());
  if (std::isnan(f)) {
    // Any quiet NaN of the same sign.
    EXPECT_TRUE(isNaN16(b, true)) << std::hex << bits;
    EXPECT_TRUE(isNaN16(h, false)) << std::hex << bits;
    EXPECT_EQ(b >> 15, bits >> 31);
    EXPECT_EQ(h >> 15, bits >> 31);
    return;
  }
  EXPECT_EQ(b, bRef) << "bf16 of 0x" << std::hex << bits;
  EXPECT_EQ(h, hRef) << "fp16 of 0x" << std::hex << bits;
}

TEST(Half, SpecialValuesAndEdges) {
  float inf = INFINITY;
  for (float f :
       {0.0f,          -0.0f,       1.0f,          -1.0f,         0.1f,
        65504.0f,      65519.99f,   65520.0f,      65536.0f,      1e-8f,
        2.9802322e-8f, 2.98024e-8f, 5.9604645e-8f, 6.1035156e-5f, 6.1e-5f,
        3.4028235e38f, 1e-45f,      inf,           -inf,          NAN,
        -NAN})
    expectNarrow(f);
  // Both sides of every binade edge and the halfway points of fp16 and
  // bf16 ulps.
  for (uint32_t e = 0; e < 255; ++e)
    for (uint32_t m : {0u, 1u, 0xfffu, 0x1000u, 0x1001u, 0x2000u, 0x3000u,
                       0x7fffu, 0x8000u, 0x8001u, 0x18000u, 0x7fffffu})
      for (uint32_t s : {0u, 0x80000000u})
        expectNarrow(bitsFloat(s | (e << 23) | m));
}

TEST(Half, RandomBitPatterns) {
  std::mt19937 rng(7);
  for (int i = 0; i < 1000000; ++i)
    expectNarrow(bitsFloat(uint32_t(rng())));
}

TEST(Half, WideningIsExact) {
  for (uint32_t h = 0; h < 65536; ++h) {
    llvm::APFloat b(llvm::APFloat::BFloat(), llvm::APInt(16, h));
    llvm::APFloat f(llvm::APFloat::IEEEhalf(), llvm::APInt(16, h));
    if (b.isNaN()) {
      EXPECT_TRUE(std::isnan(bf16ToF32(uint16_t(h))));
    } else {
      EXPECT_EQ(floatBits(bf16ToF32(uint16_t(h))),
                floatBits(b.convertToFloat()));
    }
    if (f.isNaN()) {
      EXPECT_TRUE(std::isnan(f16ToF32(uint16_t(h))));
    } else {
      EXPECT_EQ(floatBits(f16ToF32(uint16_t(h))), floatBits(f.convertToFloat()))
          << "fp16 0x" << std::hex << h;
    }
    // Narrowing a widened value gives it back.
    if (!b.isNaN()) {
      EXPECT_EQ(f32ToBf16(bf16ToF32(uint16_t(h))), h);
    }
    if (!f.isNaN()) {
      EXPECT_EQ(f32ToF16(f16ToF32(uint16_t(h))), h);
    }
  }
}

} // namespace
