//===- Kernels.h - CUDA kernels of the moe runtime ----------------*- C++
//-*-===//
//
// The device counterparts of moert/cpu/Kernels.h, with the same semantics
// (the CPU header is the specification; runtime/test/CudaKernelsTest.cpp
// checks every kernel against a plain loop). Differences, all forced by the
// device:
//   * Pointers are device pointers unless a parameter is a std::vector or is
//     documented as host memory. Every call is asynchronous on the stream it
//     is given (one stream per rank); nothing synchronises unless stated.
//   * Sizes that the host does not know without a synchronisation (rows per
//     slot, rows sent) stay on the device (planDispatch writes them there);
//     the executor copies what it needs to the host (it needs the counts
//     anyway to post the NCCL sends and receives).
//   * Row movement (pack, gather, scatter) is dtype-agnostic (rows of bytes);
//     combine and the GEMMs take fp32, bf16 or fp16 with fp32 accumulation.
//     Routing, elementwise ops, softmax and topk are fp32.
// Every CUDA and cuBLAS call is checked (moert/cuda/Check.h); invalid
// arguments are reported through the same failure handler.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CUDA_KERNELS_H
#define MOERT_CUDA_KERNELS_H

#include "moert/cpu/Kernels.h"
#include "moert/cuda/Check.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <library_types.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moert {
namespace cuda {

using cpu::Binary;
using cpu::Unary;

/// Element types of activations and weights on the GPU.
enum class DType { f32, bf16, f16 };
size_t dtypeSize(DType t);
const char *dtypeName(DType t);
bool parseDType(const std::string &s, DType &out); // "f32", "bf16", "f16"
cudaDataType_t cudaDataTypeOf(DType t);

/// Whether a usable CUDA device is present; fills `why` when not.
bool deviceAvailable(std::string *why = nullptr);

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

/// "" when `p` is valid for E experts, else why not (the evaluator's rules:
/// 1 <= top_k <= E, E divisible by num_groups, 1 <= topk_groups <=
/// num_groups, the kept groups hold >= top_k experts, top2_sum needs two
/// experts per group), or when E is too large for the kernel's shared memory.
std::string checkRoute(int64_t E, const RouteParams &p);

/// cpu::route on the device: logits [T,E] fp32, bias [E] or null ->
/// weights [T,k] fp32, ids [T,k] int64, in rank order (best first; ties to
/// the lower expert id, and to the lower group id when choosing groups).
/// One warp per token; the CPU's arithmetic (double where it uses double,
/// the same order), so ids and weights equal cpu::route's bit for bit.
void route(const float *logits, const float *bias, int64_t T, int64_t E,
           const RouteParams &p, float *weights, int64_t *ids,
           cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Dispatch and combine
//===----------------------------------------------------------------------===//

/// A Placement uploaded to the device: for expert e, replicas
/// repBuckets[repOffsets[e] .. repOffsets[e+1]), each bucket = rank *
/// slotsPerRank + slot. Built once per layer; owns its device memory.
class DevicePlacement {
public:
  /// Validates `p` (ranks and slots in range) and uploads it on `stream`
  /// (synchronises the stream once; the host copy is not needed afterwards).
  DevicePlacement(const Placement &p, cudaStream_t stream);
  ~DevicePlacement();
  DevicePlacement(const DevicePlacement &) = delete;
  DevicePlacement &operator=(const DevicePlacement &) = delete;

  int64_t numExperts() const { return numExperts_; }
  int64_t groupSize() const { return groupSize_; }
  int64_t slotsPerRank() const { return slotsPerRank_; }
  int64_t buckets() const { return groupSize_ * slotsPerRank_; }
  const int32_t *repOffsets() const { return repOffsets_; }
  const int32_t *repBuckets() const { return repBuckets_; }

private:
  int64_t numExperts_ = 0, groupSize_ = 1, slotsPerRank_ = 0;
  int32_t *repOffsets_ = nullptr, *repBuckets_ = nullptr;
};

/// Bytes of device workspace `planDispatch` needs.
size_t planDispatchWorkspace(int64_t T, int64_t k, const DevicePlacement &pl);

/// cpu::planDispatch on the device. ids [T*k] int64 -> sendPos [T*k] int64
/// (-1: dropped), sendCounts [buckets] int64 (rows per (rank, slot)), and
/// stats [3] int64 = {sendRows, dropped (over capacity), invalid}: `invalid`
/// counts ids outside [0, numExperts) or experts without replicas (the CPU
/// kernel's error; those assignments get sendPos -1, and the executor must
/// check stats[2] == 0 once it has the stats on the host). Stable: rows of
/// a (rank, slot) keep the assignment order (CUB radix sort), bucket
/// offsets come from CUB exclusive scans. `workspace` holds
/// planDispatchWorkspace(T, k, pl) bytes.
void planDispatch(const int64_t *ids, int64_t T, int64_t k,
                  const DevicePlacement &pl, int64_t capacity, int64_t *sendPos,
                  int64_t *sendCounts, int64_t *stats, void *workspace,
                  size_t workspaceBytes, cudaStream_t stream);

/// send[sendPos[a]] = x[a / k] for a < T*k with sendPos[a] >= 0. Rows are
/// `rowBytes` bytes (H * dtypeSize).
void packRows(const void *x, size_t rowBytes, const int64_t *sendPos, int64_t T,
              int64_t k, void *send, cudaStream_t stream);

/// cpu::packScaledRows: send[sendPos[a]] = weights[a] * x[a / k] for a <
/// T*k with sendPos[a] >= 0 (a dispatch with routing weights); rows of H
/// elements of type `dt`, scaled in fp32, weights fp32.
void packScaledRows(const void *x, DType dt, int64_t H, const int64_t *sendPos,
                    int64_t T, int64_t k, const float *weights, void *send,
                    cudaStream_t stream);

/// cpu::expertMajorOrder on the device. recvCounts [groupSize*slots] int64
/// (device) -> perm [maxRows] (perm[i] = -1 for i >= the received total),
/// slotOffsets [slots+1] int64 (device). `workspace` holds
/// expertMajorOrderWorkspace(groupSize, slots) bytes. Fails (through the
/// handler, at the next check) if more than maxRows rows were received:
/// the rows past maxRows are not ordered; check slotOffsets[slots] <=
/// maxRows on the host.
size_t expertMajorOrderWorkspace(int64_t groupSize, int64_t slots);
void expertMajorOrder(const int64_t *recvCounts, int64_t groupSize,
                      int64_t slots, int64_t maxRows, int64_t *perm,
                      int64_t *slotOffsets, void *workspace,
                      size_t workspaceBytes, cudaStream_t stream);

/// dst[i] = src[perm[i]] for i < n; rows with perm[i] < 0 are left as they
/// are.
void gatherRowsByIndex(const void *src, size_t rowBytes, const int64_t *perm,
                       int64_t n, void *dst, cudaStream_t stream);
/// dst[perm[i]] = src[i] for i < n; perm[i] < 0 is skipped.
void scatterRowsByIndex(const void *src, size_t rowBytes, const int64_t *perm,
                        int64_t n, void *dst, cudaStream_t stream);

/// cpu::combineRows: out[t] = sum_j weights[t,j] * back[sendPos[t*k+j]]
/// over non-dropped assignments (0 when all were dropped), j in order,
/// fp32 accumulation; back and out have type `dt`, weights fp32 (null:
/// weight 1, the dispatch scaled the rows).
void combineRows(const void *back, DType dt, int64_t H, const int64_t *sendPos,
                 int64_t T, int64_t k, const float *weights, void *out,
                 cudaStream_t stream);

/// out[i] = sum over r = 0..G-1 of slices[r*n + i], in that order, with
/// fp32 accumulation, rounded once to `dt` (f32, bf16 or f16): the sum of
/// the all-reduce between ranks that share one process (every rank adds the
/// same slices in the same order, so all get the same bits).
void sumSlices(const void *slices, DType dt, int64_t G, int64_t n, void *out,
               cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Elementwise, softmax (fp32)
//===----------------------------------------------------------------------===//

void unary(Unary op, const float *x, float *y, int64_t n, cudaStream_t stream);
/// out = a op b with numpy broadcasting; shapes right-aligned with the
/// output's rank (at most 8 dims).
void binary(Binary op, const float *a, const std::vector<int64_t> &aShape,
            const float *b, const std::vector<int64_t> &bShape, float *out,
            const std::vector<int64_t> &outShape, cudaStream_t stream);
/// Softmax over the last dim of x [rows, n]; one warp per row.
void softmax(const float *x, float *y, int64_t rows, int64_t n,
             cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Packed weights: dequantize (Quant.cu)
//===----------------------------------------------------------------------===//

/// cpu::dequantize on the device (one thread per output element), into
/// `out` of `outType` (f32, or f16/bf16: each weight rounded once).
void dequantize(const uint8_t *codes, const float *scales,
                const float *zeroPoints, int64_t batch, int64_t n, int64_t k,
                int64_t bits, int64_t blockSize, void *out, DType outType,
                cudaStream_t stream);

/// Rows of A one packedGemv launch takes (more: one launch per 8 rows).
constexpr int64_t kPackedGemvRows = 8;
/// C[M, n] = A[M, k] * W (+ bias[n] when non-null, + C when accumulate)
/// for a packed weight W (cpu::PackedWeight, device pointers), reading the
/// codes: one warp per column of C, fp32 accumulation. For decode-sized M;
/// larger GEMMs expand W (dequantize) and use cuBLAS.
void packedGemv(const float *A, int64_t M, const cpu::PackedWeight &w,
                const float *bias, float *C, bool accumulate,
                cudaStream_t stream);

//===----------------------------------------------------------------------===//
// Index steps: topk, scatter_elements (Index.cu)
//===----------------------------------------------------------------------===//

/// cpu::topk on the device: x [rows, n] fp32 -> values [rows, k] fp32 and
/// indices [rows, k] int64, 1 <= k <= n: the CPU's elements in the CPU's
/// order (the same total order: NaN largest, ties to the lower index). One
/// block per row makes k passes over it, each picking the best element
/// after the previous pick.
void topk(const float *x, int64_t rows, int64_t n, int64_t k, bool largest,
          float *values, int64_t *indices, cudaStream_t stream);
/// The same over int64 elements (sorting ids: JetMoE's grouped experts).
void topk(const int64_t *x, int64_t rows, int64_t n, int64_t k, bool largest,
          int64_t *values, int64_t *indices, cudaStream_t stream);

/// The most dims of a scatter_elements geometry (after cpu::scatterShape
/// merged what it can).
constexpr int kMaxScatterRank = 8;

/// cpu::scatterElements on the device into `out`, which holds a copy of
/// data: one thread per index position. An index outside [-size, size) is
/// not written; `status` (2 int64 of device memory, reset on the stream
/// first) receives their count and the least position of one, and the
/// caller must check status[0] == 0 once it has them on the host (the CPU
/// kernel's error). Where ONNX leaves the result undefined the device
/// differs from the CPU: duplicate indices with `none` keep one writer's
/// element (any of them), and `add` (atomicAdd) and `mul` (a
/// compare-and-swap loop) combine duplicates in the order the threads come,
/// so their sums and products may differ from the CPU's in the last bits;
/// `max` and `min` (compare-and-swap loops) give the CPU's result. `none`
/// moves elements of `eltBytes` (1, 2, 4 or 8) bytes, the reductions fp32.
void scatterElements(const cpu::ScatterShape &g, const void *indices,
                     bool indices64, const void *updates, size_t eltBytes,
                     cpu::ScatterReduction r, void *out, int64_t *status,
                     cudaStream_t stream);

//===----------------------------------------------------------------------===//
// GEMMs (cuBLAS)
//===----------------------------------------------------------------------===//

/// The cuBLAS state of one rank: a handle bound to the rank's stream and a
/// pinned staging buffer for the grouped GEMMs' pointer arrays. Not
/// thread-safe; one per stream.
class Blas {
public:
  /// How grouped GEMMs run: one cublasGemmGroupedBatchedEx call, or a loop
  /// of cublasGemmEx calls (used automatically when cuBLAS reports
  /// CUBLAS_STATUS_NOT_SUPPORTED for the grouped call; selectable for
  /// benchmarks).
  enum class GroupedMode { grouped, loop };

  explicit Blas(cudaStream_t stream);
  ~Blas();
  Blas(const Blas &) = delete;
  Blas &operator=(const Blas &) = delete;

  cublasHandle_t handle() const { return handle_; }
  cudaStream_t stream() const { return stream_; }
  GroupedMode groupedMode() const { return mode_; }
  void setGroupedMode(GroupedMode m) { mode_ = m; }
  /// True once a grouped call fell back to the loop (NOT_SUPPORTED).
  bool fellBack() const { return fellBack_; }

  /// Copies `bytes` of host memory to a device buffer in stream order and
  /// returns it. The buffer is valid for work enqueued before the next
  /// stage() call. Internal to the kernels; public for tests.
  void *stage(const void *host, size_t bytes);

  /// Internal: records that the grouped call is not supported.
  void markFellBack() {
    fellBack_ = true;
    mode_ = GroupedMode::loop;
  }

private:
  cudaStream_t stream_;
  cublasHandle_t handle_ = nullptr;
  GroupedMode mode_ = GroupedMode::grouped;
  bool fellBack_ = false;
  void *hostStage_ = nullptr, *devStage_ = nullptr;
  size_t stageCap_ = 0;
  cudaEvent_t stageFree_ = nullptr;
};

/// C[M,N] = A[M,K] * B (+ bias[N]); B is [K,N], or [N,K] when transB; all
/// row-major and contiguous. A and B have type `in`, C and bias type `out`:
/// (f32, f32), (bf16, bf16), (bf16, f32), (f16, f16), (f16, f32). fp32
/// accumulation (CUBLAS_COMPUTE_32F: no TF32 for fp32 inputs).
void matmul(Blas &blas, DType in, const void *A, const void *B,
            const void *bias, DType out, void *C, int64_t M, int64_t K,
            int64_t N, bool transB);

/// C[b] = A[b] * B[b] for b < batch: A [batch,M,K], B [batch,K,N] (transB:
/// [batch,N,K], C[b] = A[b] * B[b]^T), C [batch,M,N], fp32, row-major and
/// contiguous; one cublasGemmStridedBatchedEx call (CUBLAS_COMPUTE_32F, no
/// TF32).
void batchMatmul(Blas &blas, const float *A, const float *B, float *C,
                 int64_t batch, int64_t M, int64_t K, int64_t N,
                 bool transB = false);

/// One row-major problem of a grouped GEMM: C[m,n] = A[m,k] * B, B [k,n]
/// (or [n,k] when transB), contiguous rows.
struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  const void *A = nullptr, *B = nullptr;
  void *C = nullptr;
  bool transB = false;
};

/// Runs every problem (A, B, C of type `dt`, fp32 accumulation) with one
/// cublasGemmGroupedBatchedEx call: consecutive problems of the same shape
/// form one cuBLAS group. Problems with m, n or k = 0 are skipped (C is
/// left untouched). bf16/f16 pointers that miss the alignment cuBLAS
/// assumes for them (16 bytes when k % 8 == 0, 4 when k % 2 == 0) make
/// that call a loop of cublasGemmEx.
void groupedGemm(Blas &blas, DType dt, const std::vector<GemmProblem> &probs);

/// The local experts' weights on the device, all of type `dtype`, stacked
/// over slots like cpu::ExpertWeights: wGate, wUp [slots,H,F]; wDown
/// [slots,F,H]; bGate, bUp [slots,F]; bDown [slots,H]. wUp and the biases
/// may be null.
struct DeviceExpertWeights {
  const void *wGate = nullptr, *wUp = nullptr, *wDown = nullptr;
  const void *bGate = nullptr, *bUp = nullptr, *bDown = nullptr;
  int64_t H = 0, F = 0;
  Activation act = Activation::silu;
  /// clamped_swiglu's parameters (as cpu::ExpertWeights).
  float alpha = 1.0f, beta = 0.0f, limit = INFINITY;
  DType dtype = DType::f32;
};

/// Bytes of scratch `groupedFFN` needs for `rows` rows.
size_t groupedFFNScratch(int64_t rows, const DeviceExpertWeights &w);

/// cpu::groupedFFN on the device. For each slot s, rows slotOffsets[s] ..
/// slotOffsets[s+1] (host vector, slots+1 entries) of x [R,H] go through
/// expert s: y = (act(x Wg + bg) [* (x Wu + bu)]) Wd + bd. x, y, weights of
/// type w.dtype. The gate and up GEMMs are one grouped call (one cuBLAS
/// group of two problems per non-empty slot), then one fused kernel
/// computes act(g + bg) * (u + bu) in fp32 and stores it in w.dtype, then
/// the down GEMMs are a second grouped call. Rows of y outside
/// [slotOffsets[0], slotOffsets[slots]) are untouched. `scratch` holds
/// groupedFFNScratch(slotOffsets.back() - slotOffsets.front(), w) bytes.
void groupedFFN(Blas &blas, const void *x,
                const std::vector<int64_t> &slotOffsets,
                const DeviceExpertWeights &w, void *y, void *scratch,
                size_t scratchBytes);

} // namespace cuda
} // namespace moert

#endif // MOERT_CUDA_KERNELS_H
