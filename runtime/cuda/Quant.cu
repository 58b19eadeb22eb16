//===- Quant.cu - packed integer weights to f32 on the device -------------===//
//
// cpu::dequantize on the device (runtime/cpu/QuantKernels.cpp):
// runtime/test/CudaQuantKernelsTest.cpp checks it against a plain loop.
//
//===----------------------------------------------------------------------===//

#include "Common.cuh"

namespace moert {
namespace cuda {

using namespace detail;

namespace {

/// One thread per element of out [batch, k, n], consecutive threads along n.
__global__ void dequantizeKernel(const uint8_t *codes, const float *scales,
                                 const float *zeroPoints, int64_t batch,
                                 int64_t n, int64_t k, int bits,
                                 int64_t blockSize, float *out) {
  int64_t blocks = (k + blockSize - 1) / blockSize;
  int64_t rowBytes = blocks * blockSize * bits / 8, perByte = 8 / bits;
  unsigned mask = (1u << bits) - 1;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
       i < batch * n * k; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t e = i / (n * k), c = i / n % k, r = e * n + i % n;
    int64_t b = r * blocks + c / blockSize;
    unsigned q =
        (codes[r * rowBytes + c / perByte] >> (bits * (c % perByte))) & mask;
    float z = zeroPoints ? zeroPoints[b] : float(int64_t(1) << (bits - 1));
    out[i] = (float(q) - z) * scales[b];
  }
}

} // namespace

void dequantize(const uint8_t *codes, const float *scales,
                const float *zeroPoints, int64_t batch, int64_t n, int64_t k,
                int64_t bits, int64_t blockSize, float *out,
                cudaStream_t stream) {
  if (batch * n * k == 0)
    return;
  dequantizeKernel<<<blocksFor(batch * n * k, 256, 65535), 256, 0, stream>>>(
      codes, scales, zeroPoints, batch, n, k, int(bits), blockSize, out);
  MOERT_CUDA_CHECK_LAUNCH();
}

} // namespace cuda
} // namespace moert
