//===- CpuQuantKernelsTest.cpp - cpu::dequantize against a plain loop -----===//
//
// 2, 4 and 8 bits, K a multiple of the block and not (the padding codes of
// the last block are ignored), with and without zero points: the kernel must
// give the reference's floats (one rounding of (q - z) * s either way).
//
//===----------------------------------------------------------------------===//

#include "QuantReference.h"
#include "moert/cpu/Kernels.h"

#include <gtest/gtest.h>

using namespace moert;
using namespace moert::quanttest;

TEST(CpuQuant, DequantizeMatchesAPlainLoop) {
  unsigned seed = 1;
  for (int64_t bits : {2, 4, 8})
    for (int64_t bs : {16, 32, 128})
      for (int64_t k : {bs, 3 * bs, 2 * bs + 5, int64_t(1)})
        for (bool zp : {false, true}) {
          SCOPED_TRACE("bits=" + std::to_string(bits) + " block_size=" +
                       std::to_string(bs) + " k=" + std::to_string(k) +
                       (zp ? " zero points" : ""));
          Case c = randomCase(7, k, bits, bs, seed++);
          std::vector<float> want = reference(c, zp);
          std::vector<float> got(want.size(), -1.0f);
          cpu::dequantize(c.codes.data(), c.scales.data(),
                          zp ? c.zeroPoints.data() : nullptr, c.n, c.k, bits,
                          bs, got.data());
          int bad = 0;
          for (size_t i = 0; i < got.size(); ++i)
            if (got[i] != want[i] && bad++ < 5)
              ADD_FAILURE() << "[" << i / size_t(c.n) << ", " << i % size_t(c.n)
                            << "]: " << got[i] << ", expected " << want[i];
        }
}

TEST(CpuQuant, DequantizeEmpty) {
  // No rows: nothing is read or written.
  cpu::dequantize(nullptr, nullptr, nullptr, 0, 64, 4, 32, nullptr);
}
