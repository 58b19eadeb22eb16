//===- CudaBackendImpl.h - the CUDA backend's internals ---------*- C++ -*-===//
//
// Private to runtime/cuda (not under include/): the class behind
// moert/cuda/CudaBackend.h's createCudaBackend, its buffers and per-dispatch
// state, and the driver API entry points. Its members are defined by
// responsibility in
//   CudaBackend.cpp             device, arena, constants, host copies,
//                               operands, runStep, the entry points
//   CudaBackendDense.cpp        matmul, batch matmul, unary, binary,
//                               softmax and copy steps
//   CudaBackendMoE.cpp          route, dispatch, experts, combine steps
//   CudaBackendCollectives.cpp  transports (NCCL, device copies, host
//                               staging), the ragged row exchange,
//                               all-reduce, all-gather, all-slice,
//                               reduce-scatter
//   CudaBackendPtx.cpp          the driver API, the plan's PTX modules, the
//                               kernel step
//   CudaBackendIndex.cpp        topk and scatter_elements steps
//
// Every CUDA, cuBLAS, NCCL and driver call is checked (MOERT_CUDA_CHECK,
// MOERT_CUBLAS_CHECK, MOERT_NCCL_CHECK, MOERT_CU_CHECK).
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CUDA_CUDABACKENDIMPL_H
#define MOERT_CUDA_CUDABACKENDIMPL_H

#include "moert/Half.h"
#include "moert/cuda/CudaBackend.h"
#include "moert/cuda/Kernels.h"
#ifdef MOERT_HAVE_NCCL
#include "moert/cuda/Nccl.h"
#endif

// Driver API types only: the functions are looked up at run time through
// cudaGetDriverEntryPointByVersion, so that nothing links libcuda (moe-run
// must start on machines without a driver).
#include <cuda.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moert::cudaexec {

//===----------------------------------------------------------------------===//
// Errors and the driver API
//===----------------------------------------------------------------------===//

/// What the failure handler throws; runStep adds the step.
class CudaFailure : public RunError {
public:
  using RunError::RunError;
};

/// Makes moert::cuda's failure handler throw CudaFailure (once per process).
void installFailureHandler();

/// The driver entry points the backend uses.
struct Driver {
  decltype(&::cuModuleLoadDataEx) cuModuleLoadDataEx = nullptr;
  decltype(&::cuModuleGetFunction) cuModuleGetFunction = nullptr;
  decltype(&::cuModuleUnload) cuModuleUnload = nullptr;
  decltype(&::cuLaunchKernel) cuLaunchKernel = nullptr;
  decltype(&::cuGetErrorName) cuGetErrorName = nullptr;
  decltype(&::cuGetErrorString) cuGetErrorString = nullptr;
};

/// The driver entry points, looked up on first use.
const Driver &driver();
/// "NAME (text, code)" of a driver result.
std::string driverErrorText(CUresult r);
[[noreturn]] void failDriver(const char *file, int line, const char *call,
                             CUresult r, const std::string &extra = "");

#define MOERT_CU_CHECK(call)                                                   \
  do {                                                                         \
    CUresult moertCuRes_ = (call);                                             \
    if (moertCuRes_ != CUDA_SUCCESS)                                           \
      ::moert::cudaexec::failDriver(__FILE__, __LINE__, #call, moertCuRes_);   \
  } while (0)

/// Teardown: reports a failed call on stderr, never throws.
inline void report(cudaError_t e, const char *what) {
  if (e != cudaSuccess)
    std::fprintf(stderr, "moert: %s: %s (%s)\n", what, cudaGetErrorName(e),
                 cudaGetErrorString(e));
}

//===----------------------------------------------------------------------===//
// Buffers
//===----------------------------------------------------------------------===//

/// Memory that grows on demand (sizes are fixed per step, so it grows during
/// the first run only): device memory, or pinned host memory for the
/// staging copies. Rule of use for the pinned kind: the host writes into it
/// only after a cudaStreamSynchronize that follows every copy that reads
/// it.
template <bool Pinned> class GrowingBuffer {
public:
  GrowingBuffer() = default;
  GrowingBuffer(const GrowingBuffer &) = delete;
  GrowingBuffer &operator=(const GrowingBuffer &) = delete;
  ~GrowingBuffer() { release(); }

  /// At least `bytes` (>= 256); waits for `stream` before freeing a smaller
  /// buffer that queued work may still use.
  char *ensure(size_t bytes, cudaStream_t stream) {
    bytes = std::max<size_t>((bytes + 255) / 256 * 256, 256);
    if (bytes <= size_)
      return p_;
    if (p_) {
      MOERT_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (Pinned)
        MOERT_CUDA_CHECK(cudaFreeHost(p_));
      else
        MOERT_CUDA_CHECK(cudaFree(p_));
      p_ = nullptr;
      size_ = 0;
    }
    if (Pinned)
      MOERT_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void **>(&p_), bytes));
    else
      MOERT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void **>(&p_), bytes));
    size_ = bytes;
    return p_;
  }
  char *get() const { return p_; }
  size_t size() const { return size_; }
  void release() {
    if (p_)
      report(Pinned ? cudaFreeHost(p_) : cudaFree(p_),
             Pinned ? "cudaFreeHost" : "cudaFree");
    p_ = nullptr;
    size_ = 0;
  }

private:
  char *p_ = nullptr;
  size_t size_ = 0;
};
using DeviceBuffer = GrowingBuffer<false>;
using PinnedBuffer = GrowingBuffer<true>;

/// What a dispatch step leaves for its experts and combine steps.
struct DispatchState {
  bool valid = false;
  Comm *comm = nullptr;
  std::string axes;
  int64_t H = 0, S = 0, G = 0, T = 0, k = 0, E = 0;
  size_t rowBytes = 0;
  std::unique_ptr<cuda::DevicePlacement> placement;
  /// Device: sendPos [T*k], sendCounts [G*S], stats [3], recvCounts [G*S],
  /// perm [Rmax], slotOffsets [S+1], workspaces.
  DeviceBuffer sendPos, sendCounts, stats, recvCounts, perm, slotOffsets,
      planWs, orderWs;
  /// Pinned: stats [3], sendCounts [G*S], recvCounts [G*S], ids [T*k].
  PinnedBuffer meta;
  std::vector<int64_t> hostSlotOffsets; ///< [S+1] for groupedFFN
  int64_t sendRows = 0, recvRows = 0;
  /// Per peer bytes and offsets of the dispatch send and receive buffers.
  std::vector<int64_t> sendBytes, sendOffs, recvBytes, recvOffs;
};

/// One launch of a generated kernel, resolved.
struct Launch {
  CUfunction fn = nullptr;
  unsigned grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  std::vector<int64_t> args; ///< (kind, value) pairs
};

//===----------------------------------------------------------------------===//
// The backend
//===----------------------------------------------------------------------===//

class CudaBackend : public Backend {
public:
  explicit CudaBackend(const CudaBackendOptions &o) : options_(o) {}
  ~CudaBackend() override;
  const char *name() const override { return "cuda"; }

  void prepare(ExecContext &ctx) override;
  void upload(const Value &v, const void *src, size_t bytes) override;
  void download(const Value &v, void *dst, size_t bytes) override;
  /// Device memory (cudaMalloc) and device-to-device copies on the stream.
  void *allocateHeld(size_t bytes) override;
  void saveHeld(const Value &v, void *p, size_t bytes) override;
  void loadHeld(const Value &v, const void *p, size_t bytes) override;
  /// Selects this rank's device, runs the step's kind, and turns CUDA
  /// failures into RunErrors naming the step.
  void runStep(ExecContext &ctx, size_t index) override;
  void matmul(ExecContext &ctx, size_t index, const fb::MatmulT &at) override;
  void batchMatmul(ExecContext &ctx, size_t index,
                   const fb::BatchMatmulT &at) override;
  void route(ExecContext &ctx, size_t index, const fb::RouteT &at) override;
  void dispatch(ExecContext &ctx, size_t index,
                const fb::DispatchT &at) override;
  void experts(ExecContext &ctx, size_t index, const fb::ExpertsT &at) override;
  void combine(ExecContext &ctx, size_t index, const fb::CombineT &at) override;
  void unary(ExecContext &ctx, size_t index, const fb::UnaryT &at) override;
  void binary(ExecContext &ctx, size_t index, const fb::BinaryT &at) override;
  void softmax(ExecContext &ctx, size_t index, const fb::SoftmaxT &at) override;
  void copy(ExecContext &ctx, size_t index, const fb::CopyT &at) override;
  void allReduce(ExecContext &ctx, size_t index,
                 const fb::AllReduceT &at) override;
  void allGather(ExecContext &ctx, size_t index,
                 const fb::AllGatherT &at) override;
  void allSlice(ExecContext &ctx, size_t index,
                const fb::AllSliceT &a) override;
  void reduceScatter(ExecContext &ctx, size_t index,
                     const fb::ReduceScatterT &at) override;
  void kernel(ExecContext &ctx, size_t index, const fb::KernelT &at) override;
  void topk(ExecContext &ctx, size_t index, const fb::TopKT &at) override;
  void dequantize(ExecContext &ctx, size_t index,
                  const fb::DequantizeT &a) override;
  /// Waits for the scatter to read its device error status (an index out of
  /// range stops the run as on the CPU).
  void scatterElements(ExecContext &ctx, size_t index,
                       const fb::ScatterElementsT &at) override;
  void synchronize() override;
  /// "local", "nccl", "device copies" or "host staging (KIND)".
  std::string transport(const std::string &axes,
                        const Comm &group) const override;

private:
  void prepareDevice(ExecContext &ctx);
  void uploadConstants(ExecContext &ctx);
  void loadKernels(ExecContext &ctx);
  void setupTransports(ExecContext &ctx);

  /// How a group's collectives move data (setupTransports decides).
  enum class Transport { local, nccl, deviceCopies, hostStaging };
  Transport transportOf(const std::string &axes) const {
    auto it = transport_.find(axes);
    return it == transport_.end() ? Transport::hostStaging : it->second;
  }
  /// Device copies between thread ranks: g[r] (`bytes` each) = rank r's
  /// `mine`, for every rank of `comm` in rank order. Waits for this rank's
  /// queued work first (its buffer is complete) and, after pulling, for
  /// every rank's copies (a barrier), so that buffers may be reused.
  void gatherFromPeers(Comm &comm, const void *mine, size_t bytes, char *g);
  /// Device copies between thread ranks, as gatherFromPeers: g[r] (rows x
  /// width bytes, packed) = the `rows` runs of `width` bytes, `pitch` bytes
  /// apart, that start at byte `offset` of rank r's `mine`.
  void pullFromPeers(Comm &comm, const void *mine, size_t offset, size_t width,
                     size_t pitch, size_t rows, char *g);
  /// Every rank's `bytes` at `mine`, in rank order, into gather_ ([G][bytes])
  /// through the group's transport; returns it.
  char *gatherBlocks(const std::string &axes, Comm &comm, const char *mine,
                     size_t bytes);
  /// Device copies: waits until this rank's copies from its peers are done,
  /// then for every rank's (a barrier), so that buffers may be reused.
  void endPeerReads(Comm &comm);
  void copyExchange(Comm &comm, const char *src,
                    const std::vector<int64_t> &sendBytes,
                    const std::vector<int64_t> &sendOffs, char *dst,
                    const std::vector<int64_t> &recvBytes,
                    const std::vector<int64_t> &recvOffs);

  /// Where `bytes` bytes of arena value v start (Backend::locate: the arena
  /// or held memory bound to its root), or a RunError naming it.
  char *at(const Value &v, uint64_t bytes) const;
  /// The device bytes of value `id` (arena, bound held memory or uploaded
  /// constant); with `want`, its dtype is checked.
  char *ptr(ExecContext &ctx, size_t index, int32_t id, const char *role,
            const DType *want = nullptr);
  float *f32(ExecContext &ctx, size_t index, int32_t id, const char *role) {
    DType t = DType::f32;
    return reinterpret_cast<float *>(ptr(ctx, index, id, role, &t));
  }
  float *optF32(ExecContext &ctx, size_t index, const Step &s, size_t i,
                const char *role) {
    if (i >= s.inputs.size() || s.inputs[i] < 0)
      return nullptr;
    return f32(ctx, index, s.inputs[i], role);
  }
  cuda::DType gpuType(ExecContext &ctx, size_t index, int32_t id,
                      const char *role);

  /// The state dispatch step `dispatchStep` left for an experts or combine
  /// step.
  DispatchState &stateFor(ExecContext &ctx, size_t index, int64_t dispatchStep);

  // Packed dense weights (CudaBackendIndex.cpp). A dequantize step whose
  // only readers are f32 matmuls (B, not transposed) with at most
  // cuda::kPackedGemvRows rows of A (decode) writes nothing: those matmuls
  // run cuda::packedGemv on its codes.
  /// Whether dequantize step `index` is left to its matmuls.
  bool gemvDequantize(const Plan &p, size_t index);
  /// Matmul step `index`'s B as a packed weight when its dequantize step
  /// was left to it.
  std::optional<cpu::PackedWeight> packedB(ExecContext &ctx, int32_t b);
  std::vector<int8_t> gemvDeferred_;  ///< per step: -1 not known yet
  std::map<int32_t, size_t> gemvSrc_; ///< value -> its dequantize step

  /// Ragged exchange of device rows: sendBytes[p] bytes at
  /// src + sendOffs[p] to peer p, recvBytes[q] bytes from peer q at
  /// dst + recvOffs[q] (packed in peer order on both sides).
  void exchange(const std::string &axes, Comm &comm, const char *src,
                const std::vector<int64_t> &sendBytes,
                const std::vector<int64_t> &sendOffs, char *dst,
                const std::vector<int64_t> &recvBytes,
                const std::vector<int64_t> &recvOffs, size_t rowBytes);
  /// A device-to-device copy that tolerates overlapping ranges.
  void moveBytes(char *dst, const char *src, size_t bytes);

  CudaBackendOptions options_;
  int rank_ = 0;
  int device_ = -1;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::Blas> blas_;
  DeviceBuffer arena_, consts_;
  /// allocateHeld's memory.
  std::vector<std::unique_ptr<DeviceBuffer>> held_;
  uint64_t arenaSize_ = 0;
  std::vector<char *> constPtr_; ///< per value id; null: not a constant here
  std::vector<CUmodule> modules_;
  std::map<std::string, std::vector<Launch>> kernels_;
  std::vector<std::unique_ptr<DispatchState>> states_;
  DeviceBuffer send_, recvSrc_, back_, ffn_, tmp_, gather_, pack_;
  PinnedBuffer hostSend_, hostRecv_;
  /// scatter_elements: the device status (bad index count, least bad
  /// position) and its host copy.
  DeviceBuffer scatterStatus_;
  PinnedBuffer scatterStatusHost_;
  std::map<std::string, Transport> transport_;
#ifdef MOERT_HAVE_NCCL
  std::map<std::string, std::unique_ptr<cuda::NcclComm>> nccl_;
#endif
  /// The NCCL communicator of `axes`, or null (host staging).
  void *ncclFor(const std::string &axes) const {
#ifdef MOERT_HAVE_NCCL
    auto it = nccl_.find(axes);
    return it == nccl_.end() ? nullptr : it->second.get();
#else
    (void)axes;
    return nullptr;
#endif
  }
};

} // namespace moert::cudaexec

#endif // MOERT_CUDA_CUDABACKENDIMPL_H
