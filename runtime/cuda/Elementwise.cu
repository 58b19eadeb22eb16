//===- Elementwise.cu - unary, binary (broadcasting), softmax; dtypes -----===//

#include "Common.cuh"

#include <cmath>

namespace moert {
namespace cuda {

using namespace detail;

size_t dtypeSize(DType t) { return t == DType::f32 ? 4 : 2; }

const char *dtypeName(DType t) {
  switch (t) {
  case DType::f32:
    return "f32";
  case DType::bf16:
    return "bf16";
  case DType::f16:
    return "f16";
  }
  return "?";
}

bool parseDType(const std::string &s, DType &out) {
  if (s == "f32" || s == "fp32")
    out = DType::f32;
  else if (s == "bf16")
    out = DType::bf16;
  else if (s == "f16" || s == "fp16")
    out = DType::f16;
  else
    return false;
  return true;
}

cudaDataType_t cudaDataTypeOf(DType t) {
  switch (t) {
  case DType::f32:
    return CUDA_R_32F;
  case DType::bf16:
    return CUDA_R_16BF;
  case DType::f16:
    return CUDA_R_16F;
  }
  return CUDA_R_32F;
}

bool deviceAvailable(std::string *why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why)
      *why = cudaGetErrorString(e);
    (void)cudaGetLastError(); // clear the error for later calls
    return false;
  }
  if (n == 0) {
    if (why)
      *why = "no CUDA-capable device is detected (0 devices)";
    return false;
  }
  return true;
}

namespace {

__device__ __forceinline__ float applyUnary(Unary op, float x) {
  switch (op) {
  case Unary::neg:
    return -x;
  case Unary::exp:
    return expf(x);
  case Unary::sigmoid:
    return sigmoidF(x);
  case Unary::silu:
    return x * sigmoidF(x);
  case Unary::gelu:
    return geluErf(x);
  case Unary::gelu_tanh:
    return geluTanh(x);
  case Unary::relu:
    return x > 0.f ? x : 0.f;
  case Unary::tanh:
    return tanhf(x);
  case Unary::sqrt:
    return sqrtf(x);
  case Unary::rsqrt:
    return 1.f / sqrtf(x);
  case Unary::copy:
    return x;
  }
  return x;
}

__global__ void unaryKernel(Unary op, const float *__restrict__ x,
                            float *__restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = applyUnary(op, x[i]);
}

constexpr int kMaxRank = 8;
struct BroadcastArgs {
  int rank;
  int64_t shape[kMaxRank];
  int64_t aStride[kMaxRank], bStride[kMaxRank]; // 0 along broadcast dims
};

__device__ __forceinline__ float applyBinary(Binary op, float a, float b) {
  switch (op) {
  case Binary::add:
    return a + b;
  case Binary::sub:
    return a - b;
  case Binary::mul:
    return a * b;
  case Binary::div:
    return a / b;
  // NaN propagates, as in numpy (and cpu::binary; not fmaxf/fminf).
  case Binary::max:
    return (a > b || a != a) ? a : b;
  case Binary::min:
    return (a < b || a != a) ? a : b;
  }
  return a;
}

__global__ void binaryKernel(Binary op, const float *__restrict__ a,
                             const float *__restrict__ b,
                             float *__restrict__ out, int64_t n,
                             BroadcastArgs s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, ia = 0, ib = 0;
    for (int d = s.rank - 1; d >= 0; --d) {
      int64_t c = rem % s.shape[d];
      rem /= s.shape[d];
      ia += c * s.aStride[d];
      ib += c * s.bStride[d];
    }
    out[i] = applyBinary(op, a[ia], b[ib]);
  }
}

/// One warp per row: max, sum of exp, then the normalised values.
__global__ void softmaxKernel(const float *__restrict__ x,
                              float *__restrict__ y, int64_t rows, int64_t n) {
  const int warps = blockDim.x / kWarp, lane = threadIdx.x % kWarp;
  for (int64_t r = int64_t(blockIdx.x) * warps + threadIdx.x / kWarp; r < rows;
       r += int64_t(gridDim.x) * warps) {
    const float *xr = x + r * n;
    float mx = -INFINITY;
    for (int64_t j = lane; j < n; j += kWarp)
      mx = fmaxf(mx, xr[j]);
    for (int off = kWarp / 2; off > 0; off /= 2)
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    // As cpu::softmax: the sum in double, one reciprocal rounded to float.
    double sum = 0.0;
    for (int64_t j = lane; j < n; j += kWarp)
      sum += double(expf(xr[j] - mx));
    for (int off = kWarp / 2; off > 0; off /= 2)
      sum += __shfl_xor_sync(0xffffffffu, sum, off);
    const float inv = float(1.0 / sum);
    for (int64_t j = lane; j < n; j += kWarp)
      y[r * n + j] = expf(xr[j] - mx) * inv;
  }
}

} // namespace

void unary(Unary op, const float *x, float *y, int64_t n, cudaStream_t stream) {
  if (n <= 0)
    return;
  unaryKernel<<<blocksFor(n, 256), 256, 0, stream>>>(op, x, y, n);
  MOERT_CUDA_CHECK_LAUNCH();
}

void binary(Binary op, const float *a, const std::vector<int64_t> &aShape,
            const float *b, const std::vector<int64_t> &bShape, float *out,
            const std::vector<int64_t> &outShape, cudaStream_t stream) {
  const int rank = int(outShape.size());
  MOERT_CUDA_REQUIRE(rank <= kMaxRank && int(aShape.size()) <= rank &&
                         int(bShape.size()) <= rank,
                     "binary: ranks " + std::to_string(aShape.size()) + ", " +
                         std::to_string(bShape.size()) + " -> " +
                         std::to_string(rank) + " (at most 8)");
  BroadcastArgs s{};
  s.rank = rank;
  int64_t n = 1, sa = 1, sb = 1;
  for (int d = rank - 1; d >= 0; --d) {
    int da = d - (rank - int(aShape.size()));
    int db = d - (rank - int(bShape.size()));
    int64_t ea = da >= 0 ? aShape[size_t(da)] : 1;
    int64_t eb = db >= 0 ? bShape[size_t(db)] : 1;
    int64_t eo = outShape[size_t(d)];
    MOERT_CUDA_REQUIRE((ea == eo || ea == 1) && (eb == eo || eb == 1),
                       "binary: shapes do not broadcast to the output at dim " +
                           std::to_string(d));
    s.shape[d] = eo;
    s.aStride[d] = ea == 1 ? 0 : sa;
    s.bStride[d] = eb == 1 ? 0 : sb;
    sa *= ea;
    sb *= eb;
    n *= eo;
  }
  if (n <= 0)
    return;
  binaryKernel<<<blocksFor(n, 256), 256, 0, stream>>>(op, a, b, out, n, s);
  MOERT_CUDA_CHECK_LAUNCH();
}

void softmax(const float *x, float *y, int64_t rows, int64_t n,
             cudaStream_t stream) {
  if (rows <= 0 || n <= 0)
    return;
  const int warps = 8;
  softmaxKernel<<<blocksFor(rows, warps, int64_t(1) << 16), warps * kWarp, 0,
                  stream>>>(x, y, rows, n);
  MOERT_CUDA_CHECK_LAUNCH();
}

} // namespace cuda
} // namespace moert
