//===- CpuQuantKernelsTest.cpp - cpu::dequantize against a plain loop -----===//
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
