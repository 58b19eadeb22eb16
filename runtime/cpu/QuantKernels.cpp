//===- QuantKernels.cpp - packed integer weights to f32 -------------------===//
//
// The `dequantize` step (plan.fbs Dequantize): MatMulNBits' weights kept
// packed in the plan and expanded into the arena before their matmul.
//
//===----------------------------------------------------------------------===//

#include "moert/cpu/Kernels.h"

namespace moert::cpu {

void dequantize(const uint8_t *codes, const float *scales,
                const float *zeroPoints, int64_t n, int64_t k, int64_t bits,
                int64_t blockSize, float *out) {
  int64_t blocks = (k + blockSize - 1) / blockSize;
  int64_t rowBytes = blocks * blockSize * bits / 8, perByte = 8 / bits;
  unsigned mask = (1u << bits) - 1;
  float dflt = float(int64_t(1) << (bits - 1));
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t *row = codes + r * rowBytes;
    for (int64_t c = 0; c < k; ++c) {
      int64_t b = c / blockSize;
      unsigned q = (row[c / perByte] >> (bits * (c % perByte))) & mask;
      float z = zeroPoints ? zeroPoints[r * blocks + b] : dflt;
      out[c * n + r] = (float(q) - z) * scales[r * blocks + b];
    }
  }
}

} // namespace moert::cpu
