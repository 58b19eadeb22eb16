//===- Index.cu - topk and scatter_elements on the device -----------------===//
//
// The device counterparts of runtime/cpu/IndexKernels.cpp (moert/cuda/
// Kernels.h states where they differ). runtime/test/CudaIndexKernelsTest.cpp
// checks them against the CPU kernels.
//
//===----------------------------------------------------------------------===//

#include "Common.cuh"

#include <climits>

namespace moert {
namespace cuda {

using namespace detail;

namespace {

constexpr int kTopKThreads = 128;

__device__ __forceinline__ bool isNan(float v) { return isnan(v); }
__device__ __forceinline__ bool isNan(int64_t) { return false; }

/// cpu::topk's total order: a comes before b.
template <typename T>
__device__ __forceinline__ bool before(T va, int64_t a, T vb, int64_t b,
                                       bool largest) {
  bool na = isNan(va), nb = isNan(vb);
  if (na != nb)
    return largest ? na : nb;
  if (!na && va != vb)
    return largest ? va > vb : va < vb;
  return a < b;
}

/// The earlier of two candidates (index -1: none).
template <typename T>
__device__ __forceinline__ void pick(T &v, int64_t &i, T ov, int64_t oi,
                                     bool largest) {
  if (oi >= 0 && (i < 0 || before(ov, oi, v, i, largest))) {
    v = ov;
    i = oi;
  }
}

__device__ __forceinline__ float shflDown(float v, int off) {
  return __shfl_down_sync(0xffffffffu, v, off);
}
__device__ __forceinline__ int64_t shflDown(int64_t v, int off) {
  return int64_t(__shfl_down_sync(0xffffffffu, (long long)v, off));
}

template <typename T>
__global__ void topkKernel(const T *__restrict__ x, int64_t rows, int64_t n,
                           int64_t k, bool largest, T *__restrict__ values,
                           int64_t *__restrict__ indices) {
  __shared__ T warpV[kTopKThreads / kWarp];
  __shared__ int64_t warpI[kTopKThreads / kWarp];
  __shared__ T bestV;
  __shared__ int64_t bestI;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * n;
    T prevV = T(0);
    int64_t prevI = -1;
    for (int64_t j = 0; j < k; ++j) {
      // The best element after the previous pick.
      T v = T(0);
      int64_t i = -1;
      for (int64_t e = threadIdx.x; e < n; e += blockDim.x) {
        T ve = xr[e];
        if (prevI < 0 || before(prevV, prevI, ve, e, largest))
          pick(v, i, ve, e, largest);
      }
      for (int off = kWarp / 2; off > 0; off /= 2) {
        T ov = shflDown(v, off);
        long long oi = __shfl_down_sync(0xffffffffu, (long long)i, off);
        pick(v, i, ov, int64_t(oi), largest);
      }
      if (lane == 0) {
        warpV[warp] = v;
        warpI[warp] = i;
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        for (int w = 1; w < int(blockDim.x) / kWarp; ++w)
          pick(v, i, warpV[w], warpI[w], largest);
        bestV = v;
        bestI = i;
        values[r * k + j] = v;
        indices[r * k + j] = i;
      }
      __syncthreads();
      prevV = bestV;
      prevI = bestI;
      __syncthreads(); // bestV/bestI are rewritten in the next pass
    }
  }
}

/// A scatter's geometry by value: dims innermost last, data's strides.
struct ScatterGeom {
  int rank, axis;
  int64_t dataDim[kMaxScatterRank], dataStride[kMaxScatterRank];
  int64_t indexDim[kMaxScatterRank];
  int64_t n; // index positions
};

__global__ void scatterStatusInit(int64_t *status) {
  status[0] = 0;
  status[1] = LLONG_MAX;
}

/// Where index position p lands in data, or -1 (counted in `status`).
template <typename I>
__device__ __forceinline__ int64_t scatterTarget(const ScatterGeom &g,
                                                 const I *indices, int64_t p,
                                                 int64_t *status) {
  int64_t i = int64_t(indices[p]), size = g.dataDim[g.axis];
  if (i < 0)
    i += size;
  if (i < 0 || i >= size) {
    atomicAdd(reinterpret_cast<unsigned long long *>(status), 1ull);
    atomicMin(reinterpret_cast<long long *>(status + 1), (long long)p);
    return -1;
  }
  int64_t at = 0, rest = p;
  for (int d = g.rank - 1; d >= 0; --d) {
    int64_t c = rest % g.indexDim[d];
    rest /= g.indexDim[d];
    at += (d == g.axis ? i : c) * g.dataStride[d];
  }
  return at;
}

/// `none`: elements moved as T (a word of the element's size).
template <typename T, typename I>
__global__ void scatterCopyKernel(ScatterGeom g, const I *__restrict__ indices,
                                  const T *__restrict__ updates, T *out,
                                  int64_t *status) {
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < g.n;
       p += int64_t(gridDim.x) * blockDim.x) {
    int64_t at = scatterTarget(g, indices, p, status);
    if (at >= 0)
      out[at] = updates[p];
  }
}

/// out op u, as cpu::scatterElements (std::max / std::min for max / min).
__device__ __forceinline__ float combine(cpu::ScatterReduction r, float o,
                                         float u) {
  switch (r) {
  case cpu::ScatterReduction::mul:
    return o * u;
  case cpu::ScatterReduction::max:
    return o < u ? u : o;
  case cpu::ScatterReduction::min:
    return u < o ? u : o;
  case cpu::ScatterReduction::add:
    return o + u;
  case cpu::ScatterReduction::none:
    break;
  }
  return u;
}

template <typename I>
__global__ void scatterReduceKernel(ScatterGeom g, cpu::ScatterReduction r,
                                    const I *__restrict__ indices,
                                    const float *__restrict__ updates,
                                    float *out, int64_t *status) {
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < g.n;
       p += int64_t(gridDim.x) * blockDim.x) {
    int64_t at = scatterTarget(g, indices, p, status);
    if (at < 0)
      continue;
    float u = updates[p];
    if (r == cpu::ScatterReduction::add) {
      atomicAdd(out + at, u);
      continue;
    }
    unsigned int *word = reinterpret_cast<unsigned int *>(out + at);
    unsigned int old = *word, assumed;
    do {
      assumed = old;
      unsigned int next = __float_as_uint(combine(r, __uint_as_float(old), u));
      if (next == assumed)
        break;
      old = atomicCAS(word, assumed, next);
    } while (old != assumed);
  }
}

template <typename I>
void launchScatter(const ScatterGeom &g, const void *indices,
                   const void *updates, size_t eltBytes,
                   cpu::ScatterReduction r, void *out, int64_t *status,
                   cudaStream_t stream) {
  const unsigned blocks = blocksFor(g.n, 256);
  const I *ix = static_cast<const I *>(indices);
  if (r != cpu::ScatterReduction::none) {
    scatterReduceKernel<I><<<blocks, 256, 0, stream>>>(
        g, r, ix, static_cast<const float *>(updates),
        static_cast<float *>(out), status);
    return;
  }
  auto copy = [&](auto word) {
    using T = decltype(word);
    scatterCopyKernel<T, I><<<blocks, 256, 0, stream>>>(
        g, ix, static_cast<const T *>(updates), static_cast<T *>(out), status);
  };
  switch (eltBytes) {
  case 1:
    copy(uint8_t());
    break;
  case 2:
    copy(uint16_t());
    break;
  case 4:
    copy(uint32_t());
    break;
  default:
    copy(uint64_t());
    break;
  }
}

} // namespace

namespace {
template <typename T>
void topkRows(const T *x, int64_t rows, int64_t n, int64_t k, bool largest,
              T *values, int64_t *indices, cudaStream_t stream) {
  MOERT_CUDA_REQUIRE(k >= 1 && k <= n, "topk needs 1 <= k <= n");
  if (rows <= 0)
    return;
  topkKernel<T><<<blocksFor(rows, 1, 65535), kTopKThreads, 0, stream>>>(
      x, rows, n, k, largest, values, indices);
  MOERT_CUDA_CHECK_LAUNCH();
}
} // namespace

void topk(const float *x, int64_t rows, int64_t n, int64_t k, bool largest,
          float *values, int64_t *indices, cudaStream_t stream) {
  topkRows(x, rows, n, k, largest, values, indices, stream);
}

void topk(const int64_t *x, int64_t rows, int64_t n, int64_t k, bool largest,
          int64_t *values, int64_t *indices, cudaStream_t stream) {
  topkRows(x, rows, n, k, largest, values, indices, stream);
}

void scatterElements(const cpu::ScatterShape &g, const void *indices,
                     bool indices64, const void *updates, size_t eltBytes,
                     cpu::ScatterReduction r, void *out, int64_t *status,
                     cudaStream_t stream) {
  const int rank = int(g.data.size());
  MOERT_CUDA_REQUIRE(rank >= 1 && rank <= kMaxScatterRank &&
                         g.index.size() == g.data.size() && g.axis >= 0 &&
                         g.axis < rank,
                     "a scatter of 1 to 8 dims (after merging), axis in "
                     "range");
  MOERT_CUDA_REQUIRE(eltBytes == 1 || eltBytes == 2 || eltBytes == 4 ||
                         eltBytes == 8,
                     "elements of 1, 2, 4 or 8 bytes");
  MOERT_CUDA_REQUIRE(r == cpu::ScatterReduction::none || eltBytes == 4,
                     "reductions combine fp32 elements");
  scatterStatusInit<<<1, 1, 0, stream>>>(status);
  MOERT_CUDA_CHECK_LAUNCH();
  ScatterGeom geom{};
  geom.rank = rank;
  geom.axis = g.axis;
  geom.n = g.numIndices();
  int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    geom.dataDim[d] = g.data[size_t(d)];
    geom.indexDim[d] = g.index[size_t(d)];
    geom.dataStride[d] = stride;
    stride *= g.data[size_t(d)];
  }
  if (geom.n <= 0)
    return;
  if (indices64)
    launchScatter<int64_t>(geom, indices, updates, eltBytes, r, out, status,
                           stream);
  else
    launchScatter<int32_t>(geom, indices, updates, eltBytes, r, out, status,
                           stream);
  MOERT_CUDA_CHECK_LAUNCH();
}

} // namespace cuda
} // namespace moert
