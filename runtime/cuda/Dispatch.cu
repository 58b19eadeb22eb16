//===- Dispatch.cu - dispatch layout, row movement, combine ---------------===//

#include "Common.cuh"

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <string>

namespace moert {
namespace cuda {

using namespace detail;

//===----------------------------------------------------------------------===//
// DevicePlacement
//===----------------------------------------------------------------------===//

DevicePlacement::DevicePlacement(const Placement &p, cudaStream_t stream)
    : numExperts_(p.numExperts), groupSize_(p.groupSize),
      slotsPerRank_(p.slotsPerRank) {
  MOERT_CUDA_REQUIRE(
      p.numExperts >= 0 && p.groupSize >= 1 && p.slotsPerRank >= 0 &&
          int64_t(p.replicas.size()) == p.numExperts,
      "placement: " + std::to_string(p.replicas.size()) +
          " replica lists for " + std::to_string(p.numExperts) + " experts");
  MOERT_CUDA_REQUIRE(p.groupSize * p.slotsPerRank < (int64_t(1) << 30),
                     "placement: too many (rank, slot) buckets");
  std::vector<int32_t> offsets(size_t(p.numExperts) + 1, 0), buckets;
  for (int64_t e = 0; e < p.numExperts; ++e) {
    for (const auto &rs : p.replicas[size_t(e)]) {
      MOERT_CUDA_REQUIRE(rs.first >= 0 && rs.first < p.groupSize &&
                             rs.second >= 0 && rs.second < p.slotsPerRank,
                         "placement: expert " + std::to_string(e) +
                             " has a replica at (rank " +
                             std::to_string(rs.first) + ", slot " +
                             std::to_string(rs.second) + ") outside " +
                             std::to_string(p.groupSize) + " ranks x " +
                             std::to_string(p.slotsPerRank) + " slots");
      buckets.push_back(int32_t(rs.first * p.slotsPerRank + rs.second));
    }
    offsets[size_t(e) + 1] = int32_t(buckets.size());
  }
  if (buckets.empty())
    buckets.push_back(0); // keep a valid allocation
  MOERT_CUDA_CHECK(cudaMalloc(&repOffsets_, offsets.size() * sizeof(int32_t)));
  MOERT_CUDA_CHECK(cudaMalloc(&repBuckets_, buckets.size() * sizeof(int32_t)));
  MOERT_CUDA_CHECK(cudaMemcpyAsync(repOffsets_, offsets.data(),
                                   offsets.size() * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, stream));
  MOERT_CUDA_CHECK(cudaMemcpyAsync(repBuckets_, buckets.data(),
                                   buckets.size() * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, stream));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

DevicePlacement::~DevicePlacement() {
  // Destructors do not fail the process for a failed free at teardown (the
  // context may already be gone); they still report it.
  cudaError_t e1 = cudaFree(repOffsets_), e2 = cudaFree(repBuckets_);
  if (e1 != cudaSuccess || e2 != cudaSuccess)
    std::fprintf(stderr, "moert: cudaFree in ~DevicePlacement: %s\n",
                 cudaGetErrorString(e1 != cudaSuccess ? e1 : e2));
}

//===----------------------------------------------------------------------===//
// planDispatch
//===----------------------------------------------------------------------===//

namespace {

constexpr size_t kAlign = 256;
size_t alignUp(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

/// The workspace carve-up of planDispatch.
struct DispatchWs {
  uint32_t *keysIn, *keysOut; // [n] bucket of each assignment (B: invalid)
  int32_t *valsIn, *valsOut;  // [n] assignment index
  uint32_t *totals;           // [B+1] assignments per bucket
  uint32_t *kept;             // [B+1] kept assignments per bucket
  uint32_t *start;            // [B+1] exclusive scan of totals
  uint32_t *keptOff;          // [B+1] exclusive scan of kept
  void *cubTemp;
  size_t cubBytes;
  size_t total;
};

int endBitFor(int64_t B) {
  int bits = 1;
  while ((int64_t(1) << bits) <= B) // keys are 0..B
    ++bits;
  return bits;
}

size_t cubTempBytes(int64_t n, int64_t B) {
  size_t sortBytes = 0, scanBytes = 0;
  MOERT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sortBytes, static_cast<const uint32_t *>(nullptr),
      static_cast<uint32_t *>(nullptr), static_cast<const int32_t *>(nullptr),
      static_cast<int32_t *>(nullptr), int(n), 0, endBitFor(B)));
  MOERT_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(
      nullptr, scanBytes, static_cast<const uint32_t *>(nullptr),
      static_cast<uint32_t *>(nullptr), int(B + 1)));
  return std::max(sortBytes, scanBytes);
}

DispatchWs carve(void *ws, int64_t n, int64_t B, size_t cubBytes) {
  DispatchWs w{};
  char *p = static_cast<char *>(ws);
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char *r = p ? p + off : nullptr;
    off += alignUp(bytes);
    return r;
  };
  size_t nn = size_t(std::max<int64_t>(n, 1)), bb = size_t(B + 1);
  w.keysIn = reinterpret_cast<uint32_t *>(take(nn * 4));
  w.keysOut = reinterpret_cast<uint32_t *>(take(nn * 4));
  w.valsIn = reinterpret_cast<int32_t *>(take(nn * 4));
  w.valsOut = reinterpret_cast<int32_t *>(take(nn * 4));
  w.totals = reinterpret_cast<uint32_t *>(take(bb * 4));
  w.kept = reinterpret_cast<uint32_t *>(take(bb * 4));
  w.start = reinterpret_cast<uint32_t *>(take(bb * 4));
  w.keptOff = reinterpret_cast<uint32_t *>(take(bb * 4));
  w.cubTemp = take(cubBytes);
  w.cubBytes = cubBytes;
  w.total = off;
  return w;
}

__global__ void assignKernel(const int64_t *__restrict__ ids, int64_t n,
                             const int32_t *__restrict__ repOffsets,
                             const int32_t *__restrict__ repBuckets, int64_t E,
                             uint32_t B, uint32_t *keys, int32_t *vals,
                             uint32_t *totals) {
  for (int64_t a = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; a < n;
       a += int64_t(gridDim.x) * blockDim.x) {
    int64_t e = ids[a];
    uint32_t key = B;
    if (e >= 0 && e < E) {
      int32_t lo = repOffsets[e], nrep = repOffsets[e + 1] - lo;
      if (nrep > 0)
        key = uint32_t(repBuckets[lo + int32_t(a % nrep)]);
    }
    keys[a] = key;
    vals[a] = int32_t(a);
    atomicAdd(&totals[key], 1u);
  }
}

__global__ void keptKernel(const uint32_t *__restrict__ totals, uint32_t B,
                           int64_t capacity, uint32_t *kept,
                           int64_t *sendCounts) {
  for (uint32_t b = blockIdx.x * blockDim.x + threadIdx.x; b <= B;
       b += gridDim.x * blockDim.x) {
    uint32_t c = b == B ? 0u : totals[b];
    if (capacity >= 0 && int64_t(c) > capacity)
      c = uint32_t(capacity);
    kept[b] = c;
    if (b < B)
      sendCounts[b] = c;
  }
}

__global__ void positionsKernel(const uint32_t *__restrict__ keys,
                                const int32_t *__restrict__ vals, int64_t n,
                                uint32_t B, const uint32_t *__restrict__ start,
                                const uint32_t *__restrict__ kept,
                                const uint32_t *__restrict__ keptOff,
                                int64_t *sendPos) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t b = keys[i];
    int64_t pos = -1;
    if (b < B) {
      uint32_t r = uint32_t(i) - start[b];
      if (r < kept[b])
        pos = int64_t(keptOff[b]) + r;
    }
    sendPos[vals[i]] = pos;
  }
}

__global__ void statsKernel(const uint32_t *__restrict__ totals,
                            const uint32_t *__restrict__ keptOff, uint32_t B,
                            int64_t n, int64_t *stats) {
  int64_t rows = keptOff[B], invalid = totals[B];
  stats[0] = rows;
  stats[1] = n - rows - invalid;
  stats[2] = invalid;
}

} // namespace

size_t planDispatchWorkspace(int64_t T, int64_t k, const DevicePlacement &pl) {
  int64_t n = T * k, B = pl.buckets();
  return carve(nullptr, n, B, cubTempBytes(n, B)).total;
}

void planDispatch(const int64_t *ids, int64_t T, int64_t k,
                  const DevicePlacement &pl, int64_t capacity, int64_t *sendPos,
                  int64_t *sendCounts, int64_t *stats, void *workspace,
                  size_t workspaceBytes, cudaStream_t stream) {
  const int64_t n = T * k, B = pl.buckets();
  MOERT_CUDA_REQUIRE(T >= 0 && k >= 1 && n < (int64_t(1) << 31),
                     "planDispatch: " + std::to_string(T) + " tokens x top-" +
                         std::to_string(k));
  DispatchWs w = carve(workspace, n, B, cubTempBytes(n, B));
  MOERT_CUDA_REQUIRE(workspaceBytes >= w.total,
                     "planDispatch: workspace of " +
                         std::to_string(workspaceBytes) + " bytes, " +
                         std::to_string(w.total) + " needed");
  MOERT_CUDA_CHECK(cudaMemsetAsync(w.totals, 0, size_t(B + 1) * 4, stream));
  const int threads = 256;
  if (n > 0) {
    assignKernel<<<blocksFor(n, threads), threads, 0, stream>>>(
        ids, n, pl.repOffsets(), pl.repBuckets(), pl.numExperts(), uint32_t(B),
        w.keysIn, w.valsIn, w.totals);
    MOERT_CUDA_CHECK_LAUNCH();
    // Stable: equal buckets keep the assignment order.
    size_t bytes = w.cubBytes;
    MOERT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
        w.cubTemp, bytes, w.keysIn, w.keysOut, w.valsIn, w.valsOut, int(n), 0,
        endBitFor(B), stream));
  }
  keptKernel<<<blocksFor(B + 1, threads), threads, 0, stream>>>(
      w.totals, uint32_t(B), capacity, w.kept, sendCounts);
  MOERT_CUDA_CHECK_LAUNCH();
  size_t bytes = w.cubBytes;
  MOERT_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(w.cubTemp, bytes, w.totals,
                                                 w.start, int(B + 1), stream));
  bytes = w.cubBytes;
  MOERT_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(
      w.cubTemp, bytes, w.kept, w.keptOff, int(B + 1), stream));
  if (n > 0) {
    positionsKernel<<<blocksFor(n, threads), threads, 0, stream>>>(
        w.keysOut, w.valsOut, n, uint32_t(B), w.start, w.kept, w.keptOff,
        sendPos);
    MOERT_CUDA_CHECK_LAUNCH();
  }
  statsKernel<<<1, 1, 0, stream>>>(w.totals, w.keptOff, uint32_t(B), n, stats);
  MOERT_CUDA_CHECK_LAUNCH();
}

//===----------------------------------------------------------------------===//
// Row movement
//===----------------------------------------------------------------------===//

namespace {

enum class RowMap { pack, gather, scatter };

/// Copies rows of `units` U-words. Row i (of n) goes from src row srcRow to
/// dst row dstRow, as given by the map.
template <typename U, RowMap M>
__global__ void copyRowsKernel(const U *__restrict__ src, U *__restrict__ dst,
                               int64_t units, const int64_t *__restrict__ idx,
                               int64_t n, int64_t k) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    int64_t p = idx[i], s, d;
    if (p < 0)
      continue;
    if (M == RowMap::pack) {
      s = i / k;
      d = p;
    } else if (M == RowMap::gather) {
      s = p;
      d = i;
    } else {
      s = i;
      d = p;
    }
    const U *from = src + s * units;
    U *to = dst + d * units;
    for (int64_t u = threadIdx.x; u < units; u += blockDim.x)
      to[u] = from[u];
  }
}

template <RowMap M>
void copyRows(const void *src, void *dst, size_t rowBytes, const int64_t *idx,
              int64_t n, int64_t k, cudaStream_t stream) {
  if (n <= 0 || rowBytes == 0)
    return;
  auto aligned = [&](size_t a) {
    return rowBytes % a == 0 && reinterpret_cast<uintptr_t>(src) % a == 0 &&
           reinterpret_cast<uintptr_t>(dst) % a == 0;
  };
  auto launch = [&](auto unit) {
    using U = decltype(unit);
    int64_t units = int64_t(rowBytes / sizeof(U));
    int threads = int(std::min<int64_t>(256, (units + 31) / 32 * 32));
    copyRowsKernel<U, M>
        <<<blocksFor(n, 1, int64_t(1) << 20), threads, 0, stream>>>(
            static_cast<const U *>(src), static_cast<U *>(dst), units, idx, n,
            k);
    MOERT_CUDA_CHECK_LAUNCH();
  };
  if (aligned(16))
    launch(uint4());
  else if (aligned(8))
    launch(uint2());
  else if (aligned(4))
    launch(uint32_t());
  else if (aligned(2))
    launch(uint16_t());
  else
    launch(uint8_t());
}

} // namespace

void packRows(const void *x, size_t rowBytes, const int64_t *sendPos, int64_t T,
              int64_t k, void *send, cudaStream_t stream) {
  copyRows<RowMap::pack>(x, send, rowBytes, sendPos, T * k, k, stream);
}

namespace {

template <typename T>
__global__ void
packScaledKernel(const T *__restrict__ x, int64_t H,
                 const int64_t *__restrict__ sendPos, int64_t nA, int64_t k,
                 const float *__restrict__ weights, T *__restrict__ send) {
  for (int64_t a = blockIdx.x; a < nA; a += gridDim.x) {
    int64_t p = sendPos[a];
    if (p < 0)
      continue;
    const float w = weights[a];
    const T *from = x + (a / k) * H;
    T *to = send + p * H;
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x)
      to[h] = fromFloat<T>(w * toFloat(from[h]));
  }
}

} // namespace

void packScaledRows(const void *x, DType dt, int64_t H, const int64_t *sendPos,
                    int64_t T, int64_t k, const float *weights, void *send,
                    cudaStream_t stream) {
  if (T <= 0 || H <= 0)
    return;
  MOERT_CUDA_REQUIRE(k >= 1, "packScaledRows: top_k < 1");
  int threads = int(std::min<int64_t>(256, (H + 31) / 32 * 32));
  dispatchDType(dt, [&](auto tag) {
    using T_ = decltype(tag);
    packScaledKernel<T_>
        <<<blocksFor(T * k, 1, int64_t(1) << 20), threads, 0, stream>>>(
            static_cast<const T_ *>(x), H, sendPos, T * k, k, weights,
            static_cast<T_ *>(send));
  });
  MOERT_CUDA_CHECK_LAUNCH();
}

void gatherRowsByIndex(const void *src, size_t rowBytes, const int64_t *perm,
                       int64_t n, void *dst, cudaStream_t stream) {
  copyRows<RowMap::gather>(src, dst, rowBytes, perm, n, 1, stream);
}

void scatterRowsByIndex(const void *src, size_t rowBytes, const int64_t *perm,
                        int64_t n, void *dst, cudaStream_t stream) {
  copyRows<RowMap::scatter>(src, dst, rowBytes, perm, n, 1, stream);
}

//===----------------------------------------------------------------------===//
// expertMajorOrder
//===----------------------------------------------------------------------===//

namespace {

/// One thread: srcOff[s*slots+q] (source-major exclusive offsets) and
/// dstOff[q*G+s] (slot-major), dstOff[G*slots] = total; slotOffsets.
__global__ void orderOffsetsKernel(const int64_t *__restrict__ counts,
                                   int64_t G, int64_t slots, int64_t *srcOff,
                                   int64_t *dstOff, int64_t *slotOffsets) {
  int64_t acc = 0;
  for (int64_t i = 0; i < G * slots; ++i) {
    srcOff[i] = acc;
    acc += counts[i];
  }
  acc = 0;
  for (int64_t q = 0; q < slots; ++q) {
    slotOffsets[q] = acc;
    for (int64_t s = 0; s < G; ++s) {
      dstOff[q * G + s] = acc;
      acc += counts[s * slots + q];
    }
  }
  slotOffsets[slots] = acc;
  dstOff[G * slots] = acc;
}

__global__ void orderPermKernel(const int64_t *__restrict__ srcOff,
                                const int64_t *__restrict__ dstOff, int64_t G,
                                int64_t slots, int64_t maxRows, int64_t *perm) {
  const int64_t nb = G * slots, total = dstOff[nb];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < maxRows;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (i >= total) {
      perm[i] = -1;
      continue;
    }
    // Last block b with dstOff[b] <= i (empty blocks share offsets).
    int64_t lo = 0, hi = nb - 1;
    while (lo < hi) {
      int64_t mid = (lo + hi + 1) / 2;
      if (dstOff[mid] <= i)
        lo = mid;
      else
        hi = mid - 1;
    }
    int64_t q = lo / G, s = lo % G;
    perm[i] = srcOff[s * slots + q] + (i - dstOff[lo]);
  }
}

} // namespace

size_t expertMajorOrderWorkspace(int64_t groupSize, int64_t slots) {
  return size_t(2 * groupSize * slots + 1) * sizeof(int64_t);
}

void expertMajorOrder(const int64_t *recvCounts, int64_t groupSize,
                      int64_t slots, int64_t maxRows, int64_t *perm,
                      int64_t *slotOffsets, void *workspace,
                      size_t workspaceBytes, cudaStream_t stream) {
  MOERT_CUDA_REQUIRE(groupSize >= 1 && slots >= 0 && maxRows >= 0,
                     "expertMajorOrder: bad sizes");
  MOERT_CUDA_REQUIRE(workspaceBytes >=
                         expertMajorOrderWorkspace(groupSize, slots),
                     "expertMajorOrder: workspace too small");
  int64_t *srcOff = static_cast<int64_t *>(workspace);
  int64_t *dstOff = srcOff + groupSize * slots;
  orderOffsetsKernel<<<1, 1, 0, stream>>>(recvCounts, groupSize, slots, srcOff,
                                          dstOff, slotOffsets);
  MOERT_CUDA_CHECK_LAUNCH();
  if (maxRows == 0)
    return;
  if (slots == 0) {
    MOERT_CUDA_CHECK(
        cudaMemsetAsync(perm, 0xff, size_t(maxRows) * sizeof(int64_t), stream));
    return;
  }
  orderPermKernel<<<blocksFor(maxRows, 256), 256, 0, stream>>>(
      srcOff, dstOff, groupSize, slots, maxRows, perm);
  MOERT_CUDA_CHECK_LAUNCH();
}

//===----------------------------------------------------------------------===//
// combineRows
//===----------------------------------------------------------------------===//

namespace {

template <typename T>
__global__ void combineKernel(const T *__restrict__ back, int64_t H,
                              const int64_t *__restrict__ sendPos, int64_t Tn,
                              int64_t k, const float *__restrict__ weights,
                              T *__restrict__ out) {
  for (int64_t t = blockIdx.x; t < Tn; t += gridDim.x) {
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
      float acc = 0.f;
      for (int64_t j = 0; j < k; ++j) {
        int64_t p = sendPos[t * k + j];
        if (p >= 0)
          acc +=
              (weights ? weights[t * k + j] : 1.f) * toFloat(back[p * H + h]);
      }
      out[t * H + h] = fromFloat<T>(acc);
    }
  }
}

} // namespace

void combineRows(const void *back, DType dt, int64_t H, const int64_t *sendPos,
                 int64_t T, int64_t k, const float *weights, void *out,
                 cudaStream_t stream) {
  if (T <= 0 || H <= 0)
    return;
  MOERT_CUDA_REQUIRE(k >= 1, "combineRows: top_k < 1");
  int threads = int(std::min<int64_t>(256, (H + 31) / 32 * 32));
  dispatchDType(dt, [&](auto tag) {
    using T_ = decltype(tag);
    combineKernel<T_><<<blocksFor(T, 1), threads, 0, stream>>>(
        static_cast<const T_ *>(back), H, sendPos, T, k, weights,
        static_cast<T_ *>(out));
  });
  MOERT_CUDA_CHECK_LAUNCH();
}

//===----------------------------------------------------------------------===//
// sumSlices
//===----------------------------------------------------------------------===//

namespace {

template <typename T>
__global__ void sumSlicesKernel(const T *__restrict__ slices, int64_t G,
                                int64_t n, T *__restrict__ out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.f;
    for (int64_t r = 0; r < G; ++r)
      acc += toFloat(slices[r * n + i]);
    out[i] = fromFloat<T>(acc);
  }
}

} // namespace

void sumSlices(const void *slices, DType dt, int64_t G, int64_t n, void *out,
               cudaStream_t stream) {
  if (n <= 0)
    return;
  MOERT_CUDA_REQUIRE(G >= 1, "sumSlices: no slices");
  dispatchDType(dt, [&](auto tag) {
    using T_ = decltype(tag);
    sumSlicesKernel<T_><<<blocksFor(n, 256), 256, 0, stream>>>(
        static_cast<const T_ *>(slices), G, n, static_cast<T_ *>(out));
  });
  MOERT_CUDA_CHECK_LAUNCH();
}

} // namespace cuda
} // namespace moert
