//===- Quant.cu - packed integer weights to f32 on the device -------------===//
//
// cpu::dequantize on the device (runtime/cpu/QuantKernels.cpp), and
// packedGemv, a weight-only GEMV on the codes for decode-sized GEMMs:
// runtime/test/CudaQuantKernelsTest.cpp checks both against plain loops.
//
//===----------------------------------------------------------------------===//

#include "Common.cuh"

namespace moert {
namespace cuda {

using namespace detail;

namespace {

/// One thread per element of out [batch, k, n], consecutive threads along n;
/// T: the result's type (each weight is exact in f32, rounded once to T).
template <typename T>
__global__ void dequantizeKernel(const uint8_t *codes, const float *scales,
                                 const float *zeroPoints, int64_t batch,
                                 int64_t n, int64_t k, int bits,
                                 int64_t blockSize, T *out) {
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
    out[i] = fromFloat<T>((float(q) - z) * scales[b]);
  }
}

/// One warp per row r of W (column r of C): each lane expands the codes
/// c = lane, lane + 32, ... of that row and multiplies them with up to MR
/// rows of A, then the warp sums its lanes. Reads 0.5 byte per 4-bit
/// weight, where dequantize + GEMM writes and reads 4 more.
template <int MR>
__global__ void packedGemvKernel(const float *A, int m, const uint8_t *codes,
                                 const float *scales, const float *zeroPoints,
                                 int64_t n, int64_t k, int bits,
                                 int64_t blockSize, const float *bias, float *C,
                                 bool accumulate) {
  int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  int lane = threadIdx.x % 32;
  if (r >= n)
    return;
  int64_t blocks = (k + blockSize - 1) / blockSize;
  const uint8_t *row = codes + r * (blocks * blockSize * bits / 8);
  const float *s = scales + r * blocks;
  const float *z = zeroPoints ? zeroPoints + r * blocks : nullptr;
  int perByte = 8 / bits;
  unsigned mask = (1u << bits) - 1;
  float dflt = float(1 << (bits - 1));
  float acc[MR];
  for (int i = 0; i < MR; ++i)
    acc[i] = 0.0f;
  for (int64_t c = lane; c < k; c += 32) {
    unsigned q = (row[c / perByte] >> (bits * (c % perByte))) & mask;
    int64_t b = c / blockSize;
    float w = (float(q) - (z ? z[b] : dflt)) * s[b];
    for (int i = 0; i < MR; ++i)
      if (i < m)
        acc[i] += A[i * k + c] * w;
  }
  for (int i = 0; i < MR; ++i) {
    float v = acc[i];
    for (int off = 16; off > 0; off /= 2)
      v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0 && i < m) {
      float *out = C + i * n + r;
      *out = (accumulate ? *out : 0.0f) + v + (bias ? bias[r] : 0.0f);
    }
  }
}

} // namespace

void packedGemv(const float *A, int64_t M, const cpu::PackedWeight &w,
                const float *bias, float *C, bool accumulate,
                cudaStream_t stream) {
  if (M <= 0 || w.n <= 0)
    return;
  for (int64_t m0 = 0; m0 < M; m0 += kPackedGemvRows) {
    int m = int(std::min<int64_t>(kPackedGemvRows, M - m0));
    packedGemvKernel<kPackedGemvRows>
        <<<blocksFor(w.n * 32, 256, int64_t(1) << 30), 256, 0, stream>>>(
            A + m0 * w.k, m, w.codes, w.scales, w.zeroPoints, w.n, w.k,
            int(w.bits), w.blockSize, bias, C + m0 * w.n, accumulate);
    MOERT_CUDA_CHECK_LAUNCH();
  }
}

void dequantize(const uint8_t *codes, const float *scales,
                const float *zeroPoints, int64_t batch, int64_t n, int64_t k,
                int64_t bits, int64_t blockSize, void *out, DType outType,
                cudaStream_t stream) {
  if (batch * n * k == 0)
    return;
  dispatchDType(outType, [&](auto tag) {
    using T = decltype(tag);
    dequantizeKernel<T>
        <<<blocksFor(batch * n * k, 256, 65535), 256, 0, stream>>>(
            codes, scales, zeroPoints, batch, n, k, int(bits), blockSize,
            static_cast<T *>(out));
  });
  MOERT_CUDA_CHECK_LAUNCH();
}

} // namespace cuda
} // namespace moert
