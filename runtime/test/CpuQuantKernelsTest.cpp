//===- CpuQuantKernelsTest.cpp - packed weights against a plain loop ------===//
//
// 2, 4 and 8 bits, K a multiple of the block and not (the padding codes of
// the last block are ignored), one weight and a stack of them (experts),
// with and without zero points: the kernel must
// give the reference's floats (one rounding of (q - z) * s either way).
//
//===----------------------------------------------------------------------===//

#include "QuantReference.h"
#include "moert/cpu/Kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

using namespace moert;
using namespace moert::quanttest;

TEST(CpuQuant, DequantizeMatchesAPlainLoop) {
  unsigned seed = 1;
  // Block sizes: powers of two (MatMulNBits), 24 (whole bytes for every
  // width, not a power of two), and one block per row (QMoE per-row).
  for (int64_t bits : {2, 4, 8})
    for (int64_t bs : {16, 24, 32, 128, 0})
      for (int64_t k : {std::max<int64_t>(bs, 8), 3 * std::max<int64_t>(bs, 8),
                        2 * bs + 5, int64_t(1)})
        for (int64_t batch : {1, 3})
          for (bool zp : {false, true}) {
            int64_t block = bs ? bs : 8 * ((k + 7) / 8);
            SCOPED_TRACE("bits=" + std::to_string(bits) + " block_size=" +
                         std::to_string(block) + " k=" + std::to_string(k) +
                         " batch=" + std::to_string(batch) +
                         (zp ? " zero points" : ""));
            Stack st = randomStack(batch, 7, k, bits, block, seed++, zp);
            const Case &c = st.all;
            std::vector<float> got(st.want.size(), -1.0f);
            cpu::dequantize(c.codes.data(), c.scales.data(),
                            zp ? c.zeroPoints.data() : nullptr, batch, c.n, c.k,
                            bits, block, got.data());
            int bad = 0;
            for (size_t i = 0; i < got.size(); ++i)
              if (got[i] != st.want[i] && bad++ < 5)
                ADD_FAILURE() << "element " << i << ": " << got[i]
                              << ", expected " << st.want[i];
          }
}

TEST(CpuQuant, DequantizeEmpty) {
  // No rows, or no weights: nothing is read or written.
  cpu::dequantize(nullptr, nullptr, nullptr, 1, 0, 64, 4, 32, nullptr);
  cpu::dequantize(nullptr, nullptr, nullptr, 0, 8, 64, 4, 32, nullptr);
}

// packedMatmul against the plain loop's weight times A in double: every
// path (the GEMV's nibble, byte and expanded forms, 1 to 4 rows of A per
// code; the tiled GEMM past 8 rows), C overwritten and accumulated into.
TEST(CpuQuant, PackedMatmulMatchesAPlainLoop) {
  unsigned seed = 7;
  for (int64_t bits : {2, 4, 8})
    for (int64_t bs : {16, 24, 32, 128, 0})
      for (int64_t k : {std::max<int64_t>(bs, 8), 2 * bs + 5, int64_t(200)})
        for (int64_t m : {1, 2, 3, 4, 5, 8, 9, 40})
          for (bool zp : {false, true}) {
            int64_t block = bs ? bs : 8 * ((k + 7) / 8);
            int64_t n = m % 2 ? 37 : 70;
            bool accumulate = m % 3 == 0;
            SCOPED_TRACE("bits=" + std::to_string(bits) +
                         " block_size=" + std::to_string(block) +
                         " k=" + std::to_string(k) + " m=" + std::to_string(m) +
                         (zp ? " zero points" : "") +
                         (accumulate ? " accumulate" : ""));
            Case c = randomCase(n, k, bits, block, seed++);
            std::vector<float> w = reference(c, zp); // [k, n]
            std::mt19937 rng(seed);
            std::uniform_real_distribution<float> u(-1.0f, 1.0f);
            std::vector<float> a(size_t(m * k)), got(size_t(m * n));
            for (float &x : a)
              x = u(rng);
            for (float &x : got)
              x = u(rng);
            std::vector<float> before = got;
            cpu::PackedWeight pw;
            pw.codes = c.codes.data();
            pw.scales = c.scales.data();
            pw.zeroPoints = zp ? c.zeroPoints.data() : nullptr;
            pw.n = n;
            pw.k = k;
            pw.bits = bits;
            pw.blockSize = block;
            cpu::packedMatmul(a.data(), m, pw, got.data(), accumulate);
            packedProductFailures(
                a, m, k, w, n, got, accumulate ? &before : nullptr, nullptr,
                [](int64_t i, int64_t j, double g, double want) {
                  ADD_FAILURE() << "C[" << i << ", " << j << "] = " << g
                                << ", expected " << want;
                });
          }
}

TEST(CpuQuant, PackedMatmulEmpty) {
  // No rows of A or of W: nothing is read or written; k = 0 gives zeros
  // (or leaves C when accumulating).
  cpu::PackedWeight w;
  cpu::packedMatmul(nullptr, 0, w, nullptr, false);
  w.n = 3;
  std::vector<float> c(6, 5.0f);
  cpu::packedMatmul(nullptr, 2, w, c.data(), true);
  EXPECT_EQ(c, std::vector<float>(6, 5.0f));
  cpu::packedMatmul(nullptr, 2, w, c.data(), false);
  EXPECT_EQ(c, std::vector<float>(6, 0.0f));
}
