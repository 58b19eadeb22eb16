//===- Gemm.cu - dense and grouped GEMMs (cuBLAS), the expert FFN ---------===//
//
// cuBLAS is column-major; every problem here is row-major. A row-major
// C[m,n] = A[m,k] * B[k,n] is the column-major C^T = B^T * A^T, so each
// problem is handed to cuBLAS with the operands swapped: (m', n', k') =
// (n, m, k), first operand B (ld n, or ld k transposed when B is [n,k]),
// second operand A (ld k), C with ld n.
//
//===----------------------------------------------------------------------===//

#include "Common.cuh"

#include <climits>
#include <cstring>

namespace moert {
namespace cuda {

using namespace detail;

//===----------------------------------------------------------------------===//
// Blas
//===----------------------------------------------------------------------===//

Blas::Blas(cudaStream_t stream) : stream_(stream) {
  MOERT_CUBLAS_CHECK(cublasCreate(&handle_));
  MOERT_CUBLAS_CHECK(cublasSetStream(handle_, stream_));
  MOERT_CUBLAS_CHECK(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_HOST));
  MOERT_CUDA_CHECK(
      cudaEventCreateWithFlags(&stageFree_, cudaEventDisableTiming));
}

Blas::~Blas() {
  // Teardown reports but does not abort (the context may be gone already).
  cudaError_t e = cudaSuccess;
  if (stageFree_) {
    cudaError_t r = cudaEventSynchronize(stageFree_);
    e = e != cudaSuccess ? e : r;
    r = cudaEventDestroy(stageFree_);
    e = e != cudaSuccess ? e : r;
  }
  if (hostStage_) {
    cudaError_t r = cudaFreeHost(hostStage_);
    e = e != cudaSuccess ? e : r;
  }
  if (devStage_) {
    cudaError_t r = cudaFree(devStage_);
    e = e != cudaSuccess ? e : r;
  }
  cublasStatus_t s = handle_ ? cublasDestroy(handle_) : CUBLAS_STATUS_SUCCESS;
  if (e != cudaSuccess || s != CUBLAS_STATUS_SUCCESS)
    std::fprintf(stderr, "moert: ~Blas: %s / %s\n", cudaGetErrorString(e),
                 cublasGetStatusString(s));
}

void *Blas::stage(const void *host, size_t bytes) {
  if (bytes == 0)
    return devStage_;
  // The pinned buffer is free once the previous upload has run.
  MOERT_CUDA_CHECK(cudaEventSynchronize(stageFree_));
  if (bytes > stageCap_) {
    // The device buffer may still be read by enqueued GEMMs.
    MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (hostStage_)
      MOERT_CUDA_CHECK(cudaFreeHost(hostStage_));
    if (devStage_)
      MOERT_CUDA_CHECK(cudaFree(devStage_));
    hostStage_ = devStage_ = nullptr;
    stageCap_ = std::max<size_t>({bytes, 2 * stageCap_, 4096});
    MOERT_CUDA_CHECK(cudaMallocHost(&hostStage_, stageCap_));
    MOERT_CUDA_CHECK(cudaMalloc(&devStage_, stageCap_));
  }
  std::memcpy(hostStage_, host, bytes);
  MOERT_CUDA_CHECK(cudaMemcpyAsync(devStage_, hostStage_, bytes,
                                   cudaMemcpyHostToDevice, stream_));
  MOERT_CUDA_CHECK(cudaEventRecord(stageFree_, stream_));
  return devStage_;
}

//===----------------------------------------------------------------------===//
// Problems -> cuBLAS groups
//===----------------------------------------------------------------------===//

namespace {

int toInt(int64_t v, const char *what) {
  MOERT_CUDA_REQUIRE(v >= 0 && v <= INT_MAX,
                     std::string("GEMM size out of range: ") + what + " = " +
                         std::to_string(v));
  return int(v);
}

/// The column-major cuBLAS groups of a list of row-major problems.
struct Groups {
  std::vector<cublasOperation_t> ta, tb;
  std::vector<int> m, n, k, lda, ldb, ldc, size;
  std::vector<float> alpha, beta;
  std::vector<const void *> A, B; // cuBLAS operands (A' = B, B' = A)
  std::vector<void *> C;

  void add(const GemmProblem &p, float betaValue) {
    if (p.m == 0 || p.n == 0 || p.k == 0)
      return;
    cublasOperation_t opA = p.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    int mm = toInt(p.n, "n"), nn = toInt(p.m, "m"), kk = toInt(p.k, "k");
    int la = p.transB ? kk : mm, lb = kk, lc = mm;
    bool same = !size.empty() && ta.back() == opA && m.back() == mm &&
                n.back() == nn && k.back() == kk && lda.back() == la &&
                beta.back() == betaValue;
    if (same) {
      ++size.back();
    } else {
      ta.push_back(opA);
      tb.push_back(CUBLAS_OP_N);
      m.push_back(mm);
      n.push_back(nn);
      k.push_back(kk);
      lda.push_back(la);
      ldb.push_back(lb);
      ldc.push_back(lc);
      alpha.push_back(1.f);
      beta.push_back(betaValue);
      size.push_back(1);
    }
    A.push_back(p.B);
    B.push_back(p.A);
    C.push_back(p.C);
  }
  size_t problems() const { return A.size(); }
};

/// Appends the three pointer arrays of `g` to `blob`; returns the offset.
size_t appendPointers(std::vector<unsigned char> &blob, const Groups &g) {
  size_t off = (blob.size() + 15) / 16 * 16, n = g.problems();
  blob.resize(off + 3 * n * sizeof(void *));
  unsigned char *p = blob.data() + off;
  std::memcpy(p, g.A.data(), n * sizeof(void *));
  std::memcpy(p + n * sizeof(void *), g.B.data(), n * sizeof(void *));
  std::memcpy(p + 2 * n * sizeof(void *), g.C.data(), n * sizeof(void *));
  return off;
}

void gemmEx(Blas &blas, cublasOperation_t ta, int m, int n, int k,
            const float *alpha, const void *A, cudaDataType_t at, int lda,
            const void *B, cudaDataType_t bt, int ldb, const float *beta,
            void *C, cudaDataType_t ct, int ldc) {
  MOERT_CUBLAS_CHECK(cublasGemmEx(
      blas.handle(), ta, CUBLAS_OP_N, m, n, k, alpha, A, at, lda, B, bt, ldb,
      beta, C, ct, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/// Whether the matrices of `g` meet the pointer alignment that cuBLAS's
/// batched and grouped GEMMs assume for 16-bit types (they cannot see the
/// pointers, which are in device memory): 16 bytes when k % 8 == 0, 4 bytes
/// when k % 2 == 0. Sub-matrices of activations with odd row lengths can
/// miss it; those calls run as a loop of cublasGemmEx, which checks the
/// pointers itself (a misaligned access would poison the context).
bool groupedAligned(DType dt, const Groups &g) {
  if (dt == DType::f32)
    return true;
  size_t i = 0;
  for (size_t grp = 0; grp < g.size.size(); ++grp) {
    uintptr_t need = g.k[grp] % 8 == 0 ? 16 : g.k[grp] % 2 == 0 ? 4 : 1;
    for (int j = 0; j < g.size[grp]; ++j, ++i)
      if (reinterpret_cast<uintptr_t>(g.A[i]) % need ||
          reinterpret_cast<uintptr_t>(g.B[i]) % need ||
          reinterpret_cast<uintptr_t>(g.C[i]) % need)
        return false;
  }
  return true;
}

/// Runs `g`; `dev` is the staged copy of its pointer arrays.
void runGroups(Blas &blas, DType dt, const Groups &g, void *dev) {
  if (g.problems() == 0)
    return;
  const cudaDataType_t t = cudaDataTypeOf(dt);
  if (blas.groupedMode() == Blas::GroupedMode::grouped &&
      groupedAligned(dt, g)) {
    size_t n = g.problems();
    void **table = static_cast<void **>(dev);
    const void *const *dA = table;
    const void *const *dB = table + n;
    void *const *dC = table + 2 * n;
    cublasStatus_t st = cublasGemmGroupedBatchedEx(
        blas.handle(), g.ta.data(), g.tb.data(), g.m.data(), g.n.data(),
        g.k.data(), g.alpha.data(), dA, t, g.lda.data(), dB, t, g.ldb.data(),
        g.beta.data(), dC, t, g.ldc.data(), int(g.size.size()), g.size.data(),
        CUBLAS_COMPUTE_32F);
    if (st == CUBLAS_STATUS_SUCCESS)
      return;
    if (st != CUBLAS_STATUS_NOT_SUPPORTED)
      failCublas(__FILE__, __LINE__, "cublasGemmGroupedBatchedEx(...)", st);
    std::fprintf(stderr,
                 "moert: cublasGemmGroupedBatchedEx: not supported for %s; "
                 "using a loop of cublasGemmEx from now on\n",
                 dtypeName(dt));
    blas.markFellBack();
  }
  size_t i = 0;
  for (size_t grp = 0; grp < g.size.size(); ++grp)
    for (int j = 0; j < g.size[grp]; ++j, ++i)
      gemmEx(blas, g.ta[grp], g.m[grp], g.n[grp], g.k[grp], &g.alpha[grp],
             g.A[i], t, g.lda[grp], g.B[i], t, g.ldb[grp], &g.beta[grp], g.C[i],
             t, g.ldc[grp]);
}

template <typename T>
__global__ void fillRowsKernel(T *__restrict__ C, const T *__restrict__ bias,
                               int64_t M, int64_t N) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * N;
       i += int64_t(gridDim.x) * blockDim.x)
    C[i] = bias[i % N];
}

/// Last slot s in [0, S) with off[s] <= r (empty slots share offsets).
__device__ __forceinline__ int slotOf(const int64_t *off, int S, int64_t r) {
  int lo = 0, hi = S - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (off[mid] <= r)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

template <typename T, int V> struct alignas(sizeof(T) * V) Vec { T v[V]; };

/// clamped_swiglu's parameters (DeviceExpertWeights), by value.
struct GluParams {
  float alpha, beta, limit;
};

/// g[r,f] = act(g[r,f] + bg[s,f]) * (u[r,f] + bu[s,f]) in fp32, stored in T
/// (clamped_swiglu: g' sigmoid(alpha g') (u' + beta) of the clamped g', u');
/// V elements per thread (V divides F). relOff: slot offsets relative to
/// the first row (only read when there are biases).
template <typename T, int V>
__global__ void actMulKernel(T *__restrict__ g, const T *__restrict__ u,
                             const T *__restrict__ bg, const T *__restrict__ bu,
                             const int64_t *__restrict__ relOff, int S,
                             int64_t R, int64_t F, Activation act,
                             GluParams glu) {
  const int64_t chunks = R * F / V;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < chunks;
       c += int64_t(gridDim.x) * blockDim.x) {
    int64_t e = c * V, r = e / F, f = e % F;
    int s = (bg || bu) ? slotOf(relOff, S, r) : 0;
    Vec<T, V> gv = reinterpret_cast<const Vec<T, V> *>(g)[c], uv{};
    if (u)
      uv = reinterpret_cast<const Vec<T, V> *>(u)[c];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      float x = toFloat(gv.v[i]);
      if (bg)
        x += toFloat(bg[int64_t(s) * F + f + i]);
      float z = 0.0f;
      if (u) {
        z = toFloat(uv.v[i]);
        if (bu)
          z += toFloat(bu[int64_t(s) * F + f + i]);
      }
      float y;
      if (act == Activation::clamped_swiglu) {
        x = fminf(x, glu.limit);
        z = fminf(fmaxf(z, -glu.limit), glu.limit);
        y = x / (1.0f + __expf(-glu.alpha * x)) * (z + glu.beta);
      } else {
        y = activate(act, x);
        if (u)
          y *= z;
      }
      gv.v[i] = fromFloat<T>(y);
    }
    reinterpret_cast<Vec<T, V> *>(g)[c] = gv;
  }
}

template <typename T>
__global__ void addSlotBiasKernel(T *__restrict__ y, const T *__restrict__ b,
                                  const int64_t *__restrict__ relOff, int S,
                                  int64_t R, int64_t H) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < R * H;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / H, h = i % H;
    int s = slotOf(relOff, S, r);
    y[i] = fromFloat<T>(toFloat(y[i]) + toFloat(b[int64_t(s) * H + h]));
  }
}

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

} // namespace

//===----------------------------------------------------------------------===//
// matmul, groupedGemm
//===----------------------------------------------------------------------===//

void matmul(Blas &blas, DType in, const void *A, const void *B,
            const void *bias, DType out, void *C, int64_t M, int64_t K,
            int64_t N, bool transB) {
  MOERT_CUDA_REQUIRE(out == in || out == DType::f32,
                     std::string("matmul: ") + dtypeName(in) + " inputs, " +
                         dtypeName(out) + " output");
  if (M == 0 || N == 0)
    return;
  cudaStream_t stream = blas.stream();
  float alpha = 1.f, beta = 0.f;
  if (bias) {
    dispatchDType(out, [&](auto tag) {
      using T = decltype(tag);
      fillRowsKernel<T><<<blocksFor(M * N, 256), 256, 0, stream>>>(
          static_cast<T *>(C), static_cast<const T *>(bias), M, N);
    });
    MOERT_CUDA_CHECK_LAUNCH();
    beta = 1.f;
  } else if (K == 0) {
    MOERT_CUDA_CHECK(
        cudaMemsetAsync(C, 0, size_t(M * N) * dtypeSize(out), stream));
    return;
  }
  if (K == 0)
    return;
  int m = toInt(N, "N"), n = toInt(M, "M"), k = toInt(K, "K");
  gemmEx(blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, B,
         cudaDataTypeOf(in), transB ? k : m, A, cudaDataTypeOf(in), k, &beta, C,
         cudaDataTypeOf(out), m);
}

void batchMatmul(Blas &blas, const float *A, const float *B, float *C,
                 int64_t batch, int64_t M, int64_t K, int64_t N, bool transB) {
  if (batch == 0 || M == 0 || N == 0)
    return;
  if (K == 0) {
    MOERT_CUDA_CHECK(
        cudaMemsetAsync(C, 0, size_t(batch * M * N) * 4, blas.stream()));
    return;
  }
  // Row-major C = A B is column-major C^T = B^T A^T. With transB, B is
  // row-major [N, K], i.e. column-major [K, N] (ld K), taken transposed.
  float alpha = 1.f, beta = 0.f;
  int m = toInt(N, "N"), n = toInt(M, "M"), k = toInt(K, "K");
  MOERT_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      blas.handle(), transB ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, m, n, k,
      &alpha, B, CUDA_R_32F, transB ? k : m, K * N, A, CUDA_R_32F, k, M * K,
      &beta, C, CUDA_R_32F, m, M * N, toInt(batch, "batch"), CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
}

void groupedGemm(Blas &blas, DType dt, const std::vector<GemmProblem> &probs) {
  Groups g;
  for (const GemmProblem &p : probs)
    g.add(p, 0.f);
  if (g.problems() == 0)
    return;
  std::vector<unsigned char> blob;
  size_t off = appendPointers(blob, g);
  auto *dev =
      static_cast<unsigned char *>(blas.stage(blob.data(), blob.size()));
  runGroups(blas, dt, g, dev + off);
}

//===----------------------------------------------------------------------===//
// groupedFFN
//===----------------------------------------------------------------------===//

size_t groupedFFNScratch(int64_t rows, const DeviceExpertWeights &w) {
  size_t one = align256(size_t(rows * w.F) * dtypeSize(w.dtype));
  return w.wUp ? 2 * one : one;
}

void groupedFFN(Blas &blas, const void *x,
                const std::vector<int64_t> &slotOffsets,
                const DeviceExpertWeights &w, void *y, void *scratch,
                size_t scratchBytes) {
  MOERT_CUDA_REQUIRE(!slotOffsets.empty(), "groupedFFN: no slot offsets");
  MOERT_CUDA_REQUIRE(w.wGate && w.wDown && w.H > 0 && w.F > 0,
                     "groupedFFN: missing weights or sizes");
  const int S = int(slotOffsets.size()) - 1;
  const int64_t off0 = slotOffsets.front(), R = slotOffsets.back() - off0;
  MOERT_CUDA_REQUIRE(reinterpret_cast<uintptr_t>(scratch) % 16 == 0,
                     "groupedFFN: scratch must be 16-byte aligned");
  for (int s = 0; s < S; ++s)
    MOERT_CUDA_REQUIRE(slotOffsets[size_t(s)] <= slotOffsets[size_t(s) + 1],
                       "groupedFFN: slot offsets decrease at slot " +
                           std::to_string(s));
  if (R == 0)
    return;
  MOERT_CUDA_REQUIRE(off0 >= 0, "groupedFFN: negative slot offset");
  MOERT_CUDA_REQUIRE(scratchBytes >= groupedFFNScratch(R, w),
                     "groupedFFN: scratch of " + std::to_string(scratchBytes) +
                         " bytes, " + std::to_string(groupedFFNScratch(R, w)) +
                         " needed");
  const int64_t H = w.H, F = w.F;
  const size_t elt = dtypeSize(w.dtype);
  auto at = [](const void *p, int64_t elems, size_t elt) {
    return static_cast<const void *>(static_cast<const char *>(p) +
                                     elems * int64_t(elt));
  };
  char *g = static_cast<char *>(scratch);
  char *u = w.wUp ? g + align256(size_t(R * F) * elt) : nullptr;

  // Gate and up: per slot one cuBLAS group of two equal-shape problems.
  Groups gateUp, down;
  for (int s = 0; s < S; ++s) {
    int64_t lo = slotOffsets[size_t(s)], rows = slotOffsets[size_t(s) + 1] - lo;
    if (rows == 0)
      continue;
    GemmProblem p;
    p.m = rows;
    p.k = H;
    p.n = F;
    p.A = at(x, lo * H, elt);
    p.B = at(w.wGate, int64_t(s) * H * F, elt);
    p.C = g + (lo - off0) * F * int64_t(elt);
    gateUp.add(p, 0.f);
    if (u) {
      p.B = at(w.wUp, int64_t(s) * H * F, elt);
      p.C = u + (lo - off0) * F * int64_t(elt);
      gateUp.add(p, 0.f);
    }
    GemmProblem d;
    d.m = rows;
    d.k = F;
    d.n = H;
    d.A = g + (lo - off0) * F * int64_t(elt);
    d.B = at(w.wDown, int64_t(s) * F * H, elt);
    d.C = static_cast<char *>(y) + lo * H * int64_t(elt);
    down.add(d, 0.f);
  }

  // One upload: relative slot offsets, then both pointer tables.
  std::vector<unsigned char> blob(size_t(S + 1) * sizeof(int64_t));
  for (int s = 0; s <= S; ++s) {
    int64_t rel = slotOffsets[size_t(s)] - off0;
    std::memcpy(blob.data() + size_t(s) * sizeof(int64_t), &rel,
                sizeof(int64_t));
  }
  size_t offGU = appendPointers(blob, gateUp);
  size_t offDown = appendPointers(blob, down);
  auto *dev =
      static_cast<unsigned char *>(blas.stage(blob.data(), blob.size()));
  const int64_t *relOff = reinterpret_cast<const int64_t *>(dev);

  runGroups(blas, w.dtype, gateUp, dev + offGU);

  cudaStream_t stream = blas.stream();
  GluParams glu{w.alpha, w.beta, w.limit};
  dispatchDType(w.dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = int(16 / sizeof(T));
    auto *gt = reinterpret_cast<T *>(g);
    auto *ut = reinterpret_cast<const T *>(u);
    auto *bg = static_cast<const T *>(w.bGate);
    auto *bu = static_cast<const T *>(w.bUp);
    if (F % V == 0)
      actMulKernel<T, V><<<blocksFor(R * F / V, 256), 256, 0, stream>>>(
          gt, ut, bg, bu, relOff, S, R, F, w.act, glu);
    else
      actMulKernel<T, 1><<<blocksFor(R * F, 256), 256, 0, stream>>>(
          gt, ut, bg, bu, relOff, S, R, F, w.act, glu);
  });
  MOERT_CUDA_CHECK_LAUNCH();

  runGroups(blas, w.dtype, down, dev + offDown);

  if (w.bDown) {
    dispatchDType(w.dtype, [&](auto tag) {
      using T = decltype(tag);
      addSlotBiasKernel<T><<<blocksFor(R * H, 256), 256, 0, stream>>>(
          reinterpret_cast<T *>(static_cast<char *>(y) +
                                off0 * H * int64_t(elt)),
          static_cast<const T *>(w.bDown), relOff, S, R, H);
    });
    MOERT_CUDA_CHECK_LAUNCH();
  }
}

} // namespace cuda
} // namespace moert
