//===- QuantKernels.cpp - packed integer weights to f32 -------------------===//
//
// The `dequantize` step (plan.fbs Dequantize): MatMulNBits' weights kept
// packed in the plan and expanded into the arena before their matmul, and
// QMoE's stacked expert weights (a batch of them) before expert_compute.
//
//===----------------------------------------------------------------------===//

#include "moert/cpu/Kernels.h"

namespace moert::cpu {

void dequantize(const uint8_t *codes, const float *scales,
                const float *zeroPoints, int64_t batch, int64_t n, int64_t k,
                int64_t bits, int64_t blockSize, float *out) {
  int64_t blocks = (k + blockSize - 1) / blockSize;
  int64_t rowBytes = blocks * blockSize * bits / 8, perByte = 8 / bits;
  unsigned mask = (1u << bits) - 1;
  float dflt = float(int64_t(1) << (bits - 1));
  for (int64_t e = 0; e < batch; ++e) {
    const uint8_t *q = codes + e * n * rowBytes;
    const float *s = scales + e * n * blocks;
    const float *z = zeroPoints ? zeroPoints + e * n * blocks : nullptr;
    float *o = out + e * k * n;
    // Output rows (c) outer: the writes are sequential, and the n code
    // rows read (n * rowBytes, a few KiB) stay in L1 across consecutive c.
    for (int64_t c = 0; c < k; ++c) {
      int64_t b = c / blockSize, byte = c / perByte;
      unsigned shift = unsigned(bits * (c % perByte));
      float *orow = o + c * n;
      for (int64_t r = 0; r < n; ++r) {
        unsigned v = (q[r * rowBytes + byte] >> shift) & mask;
        float zp = z ? z[r * blocks + b] : dflt;
        orow[r] = (float(v) - zp) * s[r * blocks + b];
      }
    }
  }
}

} // namespace moert::cpu
