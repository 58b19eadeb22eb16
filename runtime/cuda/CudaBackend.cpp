//===- CudaBackend.cpp - plan steps on a CUDA device ----------------------===//
//
// Runs each step of docs/plan-format.md on one GPU: the kernels of
// moert/cuda/Kernels.h on a device arena, one stream per rank, cuBLAS for
// matmul and the grouped expert FFN, the plan's PTX through the CUDA driver
// API. Dispatch and combine exchange their counts over the step's
// communicator on the host (the sizes are needed there anyway) and their
// rows through NCCL (every rank of the group on a GPU of its own), through
// device-to-device copies (the ranks are threads of this process, e.g.
// several ranks on one GPU: each pulls its rows from its peers' buffers),
// or through pinned host staging buffers and the communicator (anything
// else). See docs/cuda.md.
//
// Every CUDA, cuBLAS, NCCL and driver call is checked; failures reach the
// moert::cuda failure handler, which this backend sets to throw, and
// runStep turns them into a RunError naming the rank and the step.
//
//===----------------------------------------------------------------------===//

#include "moert/cuda/CudaBackend.h"
#include "moert/Half.h"
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
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

using namespace moert;

namespace {

//===----------------------------------------------------------------------===//
// Errors and the driver API
//===----------------------------------------------------------------------===//

/// What the failure handler throws; runStep adds the step.
class CudaFailure : public RunError {
public:
  using RunError::RunError;
};

void installFailureHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    cuda::setFailureHandler(
        [](const std::string &message) { throw CudaFailure(message); });
  });
}

/// The driver entry points the backend uses.
struct Driver {
  decltype(&::cuModuleLoadDataEx) cuModuleLoadDataEx = nullptr;
  decltype(&::cuModuleGetFunction) cuModuleGetFunction = nullptr;
  decltype(&::cuModuleUnload) cuModuleUnload = nullptr;
  decltype(&::cuLaunchKernel) cuLaunchKernel = nullptr;
  decltype(&::cuGetErrorName) cuGetErrorName = nullptr;
  decltype(&::cuGetErrorString) cuGetErrorString = nullptr;
};

template <typename F> void lookup(const char *symbol, F &fn) {
  void *p = nullptr;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  MOERT_CUDA_CHECK(cudaGetDriverEntryPointByVersion(symbol, &p, 12000,
                                                    cudaEnableDefault, &q));
  if (q != cudaDriverEntryPointSuccess || !p)
    cuda::fail("CUDA driver error", __FILE__, __LINE__, symbol,
               "no such driver entry point (driver too old?)");
  fn = reinterpret_cast<F>(p);
}

const Driver &driver() {
  static Driver d;
  static std::once_flag once;
  std::call_once(once, [] {
    Driver x;
    lookup("cuModuleLoadDataEx", x.cuModuleLoadDataEx);
    lookup("cuModuleGetFunction", x.cuModuleGetFunction);
    lookup("cuModuleUnload", x.cuModuleUnload);
    lookup("cuLaunchKernel", x.cuLaunchKernel);
    lookup("cuGetErrorName", x.cuGetErrorName);
    lookup("cuGetErrorString", x.cuGetErrorString);
    d = x;
  });
  return d;
}

std::string driverErrorText(CUresult r) {
  const Driver &d = driver();
  const char *name = nullptr, *text = nullptr;
  if (d.cuGetErrorName(r, &name) != CUDA_SUCCESS || !name)
    name = "CUresult";
  if (d.cuGetErrorString(r, &text) != CUDA_SUCCESS || !text)
    text = "unknown error";
  return std::string(name) + " (" + text + ", " + std::to_string(int(r)) + ")";
}

[[noreturn]] void failDriver(const char *file, int line, const char *call,
                             CUresult r, const std::string &extra = "") {
  cuda::fail("CUDA driver error", file, line, call,
             driverErrorText(r) + (extra.empty() ? "" : ": " + extra));
}

#define MOERT_CU_CHECK(call)                                                   \
  do {                                                                         \
    CUresult moertCuRes_ = (call);                                             \
    if (moertCuRes_ != CUDA_SUCCESS)                                           \
      failDriver(__FILE__, __LINE__, #call, moertCuRes_);                      \
  } while (0)

/// Teardown: reports a failed call on stderr, never throws.
void report(cudaError_t e, const char *what) {
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

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

bool toCudaType(DType t, cuda::DType &out) {
  switch (t) {
  case DType::f32:
    out = cuda::DType::f32;
    return true;
  case DType::bf16:
    out = cuda::DType::bf16;
    return true;
  case DType::f16:
    out = cuda::DType::f16;
    return true;
  default:
    return false;
  }
}

/// The rank's index among the ranks of its node, from the MPI launcher's
/// environment; -1 when none says.
int launcherLocalRank() {
  for (const char *v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                        "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"})
    if (const char *s = std::getenv(v); s && *s)
      return std::atoi(s);
  return -1;
}

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
  /// Selects this rank's device, runs the step's kind, and turns CUDA
  /// failures into RunErrors naming the step.
  void runStep(ExecContext &ctx, size_t index) override;
  void matmul(ExecContext &ctx, size_t index, const fb::MatmulT &at) override;
  void batchMatmul(ExecContext &ctx, size_t index,
                   const fb::BatchMatmulT &at) override;
  void route(ExecContext &ctx, size_t index, const fb::RouteT &at) override;
  void dispatch(ExecContext &ctx, size_t index,
                const fb::DispatchT &at) override;
  void experts(ExecContext &ctx, size_t index,
               const fb::ExpertsT &at) override;
  void combine(ExecContext &ctx, size_t index,
               const fb::CombineT &at) override;
  void unary(ExecContext &ctx, size_t index, const fb::UnaryT &at) override;
  void binary(ExecContext &ctx, size_t index, const fb::BinaryT &at) override;
  void softmax(ExecContext &ctx, size_t index,
               const fb::SoftmaxT &at) override;
  void copy(ExecContext &ctx, size_t index, const fb::CopyT &at) override;
  void allReduce(ExecContext &ctx, size_t index,
                 const fb::AllReduceT &at) override;
  void allGather(ExecContext &ctx, size_t index,
                 const fb::AllGatherT &at) override;
  void kernel(ExecContext &ctx, size_t index, const fb::KernelT &at) override;
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

  /// The device bytes of value `id` (arena or uploaded constant); with
  /// `want`, its dtype is checked.
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
  uint64_t arenaSize_ = 0;
  std::vector<char *> constPtr_; ///< per value id; null: not a constant here
  std::vector<CUmodule> modules_;
  std::map<std::string, std::vector<Launch>> kernels_;
  std::vector<std::unique_ptr<DispatchState>> states_;
  DeviceBuffer send_, recvSrc_, back_, ffn_, tmp_, gather_;
  PinnedBuffer hostSend_, hostRecv_;
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

CudaBackend::~CudaBackend() {
  if (device_ < 0)
    return;
  // Teardown reports failures and goes on (no throwing from here).
  report(cudaSetDevice(device_), "cudaSetDevice");
#ifdef MOERT_HAVE_NCCL
  // Unwinding from a failure: NCCL work queued to peers that have failed
  // (or will not come) never completes, and ncclCommDestroy and the stream
  // sync below would wait for it. ncclCommAbort ends it.
  if (std::uncaught_exceptions() > 0)
    for (auto &[axes, comm] : nccl_)
      comm->abort();
#endif
  if (stream_)
    report(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  if (!modules_.empty()) {
    const Driver &d = driver();
    for (CUmodule m : modules_) {
      CUresult r = d.cuModuleUnload(m);
      if (r != CUDA_SUCCESS)
        std::fprintf(stderr, "moert: cuModuleUnload: %s\n",
                     driverErrorText(r).c_str());
    }
  }
#ifdef MOERT_HAVE_NCCL
  nccl_.clear();
#endif
  blas_.reset();
  states_.clear();
  for (DeviceBuffer *b :
       {&arena_, &consts_, &send_, &recvSrc_, &back_, &ffn_, &tmp_, &gather_})
    b->release();
  hostSend_.release();
  hostRecv_.release();
  if (stream_)
    report(cudaStreamDestroy(stream_), "cudaStreamDestroy");
}

//===----------------------------------------------------------------------===//
// Preparation
//===----------------------------------------------------------------------===//

void CudaBackend::prepare(ExecContext &ctx) {
  rank_ = ctx.rank();
  std::string who = "rank " + std::to_string(rank_) + ": ";
  installFailureHandler();
  std::string why;
  if (!cuda::deviceAvailable(&why))
    throw RunError(who + "no CUDA device: " + why);
  try {
    prepareDevice(ctx);
    uploadConstants(ctx);
    loadKernels(ctx);
    setupTransports(ctx);
  } catch (const CudaFailure &e) {
    throw RunError(who + e.what());
  }
}

void CudaBackend::prepareDevice(ExecContext &ctx) {
  int count = 0;
  MOERT_CUDA_CHECK(cudaGetDeviceCount(&count));
  int dev = options_.device;
  if (dev < 0) {
    // Thread ranks share the process, and so the launcher's local rank:
    // they spread over the GPUs by rank instead.
    bool threads = std::string(ctx.world().kind()) == "threads";
    int local = threads ? -1 : launcherLocalRank();
    dev = (local >= 0 ? local : ctx.rank()) % count;
  }
  if (dev >= count)
    throw RunError("rank " + std::to_string(rank_) + ": CUDA device " +
                   std::to_string(dev) + " requested, " +
                   std::to_string(count) + " present");
  MOERT_CUDA_CHECK(cudaSetDevice(dev));
  device_ = dev;
  if (!stream_)
    MOERT_CUDA_CHECK(
        cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  if (!blas_)
    blas_ = std::make_unique<cuda::Blas>(stream_);
  arenaSize_ = (ctx.plan().arenaBytes + 255) / 256 * 256;
  char *a = arena_.ensure(arenaSize_, stream_);
  MOERT_CUDA_CHECK(cudaMemsetAsync(a, 0, arena_.size(), stream_));
  states_.clear();
  states_.resize(ctx.plan().steps.size());
}

void CudaBackend::uploadConstants(ExecContext &ctx) {
  const Plan &p = ctx.plan();
  constPtr_.assign(p.values.size(), nullptr);
  std::vector<uint64_t> offs(p.values.size(), 0);
  uint64_t total = 0;
  for (const Value &v : p.values) {
    if (v.kind != ValueKind::constant || !ctx.loaded().constantData(v))
      continue;
    offs[size_t(v.id)] = total;
    total += (v.byteSize() + 255) / 256 * 256;
  }
  char *base = consts_.ensure(total, stream_);
  for (const Value &v : p.values) {
    const void *src =
        v.kind == ValueKind::constant ? ctx.loaded().constantData(v) : nullptr;
    if (!src)
      continue;
    constPtr_[size_t(v.id)] = base + offs[size_t(v.id)];
    // From the mapped plan (pageable memory): the call returns once the
    // bytes are staged, so the mapping may go away afterwards.
    if (v.byteSize())
      MOERT_CUDA_CHECK(cudaMemcpyAsync(constPtr_[size_t(v.id)], src,
                                       v.byteSize(), cudaMemcpyHostToDevice,
                                       stream_));
  }
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::loadKernels(ExecContext &ctx) {
  const Plan &p = ctx.plan();
  if (p.kernels.empty() || !kernels_.empty())
    return;
  std::string who = "rank " + std::to_string(rank_) + ": ";
  const char *bytes = ctx.loaded().codeData(p.ptxCode);
  if (p.ptxCode.segment < 0 || !bytes)
    throw RunError(who + "the plan has generated kernels but no PTX "
                         "(compile it with moec --target=cuda)");
  std::vector<std::string> ptx;
  for (uint64_t i = 0; i < p.ptxCode.bytes;) {
    uint64_t j = i;
    while (j < p.ptxCode.bytes && bytes[j] != '\0')
      ++j;
    if (j > i)
      ptx.emplace_back(bytes + i, bytes + j);
    i = j + 1;
  }
  const Driver &d = driver();
  for (size_t m = 0; m < ptx.size(); ++m) {
    char log[8192] = {0};
    CUjit_option opts[2] = {CU_JIT_ERROR_LOG_BUFFER,
                            CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *vals[2] = {log, reinterpret_cast<void *>(uintptr_t(sizeof(log)))};
    CUmodule mod = nullptr;
    CUresult r = d.cuModuleLoadDataEx(&mod, ptx[m].c_str(), 2, opts, vals);
    if (r != CUDA_SUCCESS)
      failDriver(__FILE__, __LINE__, "cuModuleLoadDataEx(PTX module)", r,
                 "PTX module " + std::to_string(m) + ": " + log);
    modules_.push_back(mod);
  }
  for (const KernelCode &k : p.kernels) {
    if (k.launches.empty())
      throw RunError(who + "generated kernel '" + k.name +
                     "' has no GPU launches (compile the plan with moec "
                     "--target=cuda)");
    std::vector<Launch> ls;
    for (const GpuLaunchCode &g : k.launches) {
      if (g.module < 0 || size_t(g.module) >= modules_.size())
        throw RunError(who + "kernel '" + k.name + "' launches '" + g.function +
                       "' of PTX module " + std::to_string(g.module) +
                       ", the plan has " + std::to_string(modules_.size()));
      if (g.args.size() % 2)
        throw RunError(who + "kernel '" + k.name +
                       "': odd (kind, value) parameter list");
      Launch l;
      // The device's limits: grid x < 2^31, y and z <= 65535; block x, y
      // <= 1024, z <= 64, at most 1024 threads in all.
      const int64_t maxGrid[3] = {INT32_MAX, 65535, 65535};
      const int64_t maxBlock[3] = {1024, 1024, 64};
      int64_t threads = 1;
      for (int i = 0; i < 3; ++i) {
        if (g.grid[i] < 1 || g.grid[i] > maxGrid[i] || g.block[i] < 1 ||
            g.block[i] > maxBlock[i])
          throw RunError(who + "kernel '" + k.name + "': launch geometry " +
                         std::to_string(g.grid[i]) + "/" +
                         std::to_string(g.block[i]) + " (grid/block dim " +
                         std::to_string(i) + ") out of range");
        threads *= g.block[i];
        l.grid[i] = unsigned(g.grid[i]);
        l.block[i] = unsigned(g.block[i]);
      }
      if (threads > 1024)
        throw RunError(who + "kernel '" + k.name + "': blocks of " +
                       std::to_string(threads) + " threads (at most 1024)");
      MOERT_CU_CHECK(d.cuModuleGetFunction(&l.fn, modules_[size_t(g.module)],
                                           g.function.c_str()));
      l.args = g.args;
      ls.push_back(std::move(l));
    }
    kernels_[k.name] = std::move(ls);
  }
}

void CudaBackend::setupTransports(ExecContext &ctx) {
  if (!transport_.empty())
    return;
  const char *env = std::getenv("MOERT_NCCL");
  const char *copiesEnv = std::getenv("MOERT_DEVICE_COPIES");
  bool wantCopies = options_.allowDeviceCopies &&
                    !(copiesEnv && std::string(copiesEnv) == "0");
#ifdef MOERT_HAVE_NCCL
  bool wantNccl = options_.allowNccl && !(env && std::string(env) == "0");
  // MOERT_NCCL=force: one-rank groups get a one-rank NCCL communicator too
  // (rows sent to self through ncclSend/ncclRecv), so that the NCCL path
  // runs on a machine with one GPU.
  bool force = wantNccl && env && std::string(env) == "force";
#else
  bool wantNccl = false, force = false;
  if (env && std::string(env) == "force")
    throw RunError("MOERT_NCCL=force, but this moe-run was built without "
                   "NCCL (nccl.h/libnccl not found at configure time)");
#endif
  cudaDeviceProp prop;
  MOERT_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  int devices = 0;
  MOERT_CUDA_CHECK(cudaGetDeviceCount(&devices));
  // Every rank decides alike: from what all ranks of the group report.
  struct Info {
    char uuid[16];
    int32_t wantNccl, wantCopies;
  };
  std::set<std::string> axesUsed;
  for (const Step &s : ctx.plan().steps)
    if (!s.axes().empty())
      axesUsed.insert(s.axes());
  for (const std::string &axes : axesUsed) {
    Comm &c = ctx.group(axes);
    Transport t = Transport::hostStaging;
    if (c.size() <= 1) {
      t = force ? Transport::nccl : Transport::local;
    } else {
      Info mine;
      std::memset(&mine, 0, sizeof(mine));
      std::memcpy(mine.uuid, &prop.uuid, sizeof(mine.uuid));
      mine.wantNccl = wantNccl;
      mine.wantCopies = wantCopies;
      std::vector<Info> all(size_t(c.size()));
      c.allGather(&mine, sizeof(Info), all.data());
      bool nccl = true, copies = true;
      std::set<std::string> uuids;
      for (const Info &i : all) {
        nccl = nccl && i.wantNccl;
        copies = copies && i.wantCopies;
        uuids.insert(std::string(i.uuid, sizeof(i.uuid)));
      }
      // NCCL cannot have two ranks of a communicator on one GPU. Thread
      // ranks use it only when every rank of the world has a GPU of its
      // own: communicators of different groups sharing GPUs, driven from
      // different threads, can deadlock. Device pointers are shared by the
      // threads of one process (every kind of a group is the same on all
      // its ranks).
      if (std::string(c.kind()) == "threads" &&
          devices < ctx.plan().worldSize())
        nccl = false;
      if (nccl && int(uuids.size()) == c.size())
        t = Transport::nccl;
      else if (copies && std::string(c.kind()) == "threads")
        t = Transport::deviceCopies;
    }
    transport_[axes] = t;
#ifdef MOERT_HAVE_NCCL
    if (t != Transport::nccl)
      continue;
    if (c.size() <= 1) {
      nccl_[axes] = std::make_unique<cuda::NcclComm>(
          1, 0, cuda::ncclNewUniqueId(), device_);
      continue;
    }
    ncclUniqueId id;
    std::memset(&id, 0, sizeof(id));
    if (c.rank() == 0)
      id = cuda::ncclNewUniqueId();
    std::vector<ncclUniqueId> ids(size_t(c.size()));
    c.allGather(&id, sizeof(id), ids.data());
    nccl_[axes] =
        std::make_unique<cuda::NcclComm>(c.size(), c.rank(), ids[0], device_);
#endif
  }
}

std::string CudaBackend::transport(const std::string &axes,
                                   const Comm &group) const {
  auto it = transport_.find(axes);
  if (it == transport_.end())
    return Backend::transport(axes, group);
  switch (it->second) {
  case Transport::local:
    return "local";
  case Transport::nccl:
    return "nccl";
  case Transport::deviceCopies:
    return "device copies";
  case Transport::hostStaging:
    return std::string("host staging (") + group.kind() + ")";
  }
  return "?";
}

//===----------------------------------------------------------------------===//
// Host copies
//===----------------------------------------------------------------------===//

void CudaBackend::upload(const Value &v, const void *src, size_t bytes) {
  if (v.offset + bytes > arenaSize_)
    throw RunError("rank " + std::to_string(rank_) + ": value '" + v.name +
                   "' lies outside the arena");
  try {
    MOERT_CUDA_CHECK(cudaSetDevice(device_));
    MOERT_CUDA_CHECK(cudaMemcpyAsync(arena_.get() + v.offset, src, bytes,
                                     cudaMemcpyHostToDevice, stream_));
    MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (const CudaFailure &e) {
    throw RunError("rank " + std::to_string(rank_) + ": " + e.what());
  }
}

void CudaBackend::download(const Value &v, void *dst, size_t bytes) {
  if (v.offset + bytes > arenaSize_)
    throw RunError("rank " + std::to_string(rank_) + ": value '" + v.name +
                   "' lies outside the arena");
  try {
    MOERT_CUDA_CHECK(cudaSetDevice(device_));
    MOERT_CUDA_CHECK(cudaMemcpyAsync(dst, arena_.get() + v.offset, bytes,
                                     cudaMemcpyDeviceToHost, stream_));
    MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (const CudaFailure &e) {
    throw RunError("rank " + std::to_string(rank_) + ": " + e.what());
  }
}

void CudaBackend::synchronize() {
  try {
    MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (const CudaFailure &e) {
    throw RunError("rank " + std::to_string(rank_) + ": " + e.what());
  }
}

//===----------------------------------------------------------------------===//
// Steps
//===----------------------------------------------------------------------===//

char *CudaBackend::ptr(ExecContext &ctx, size_t index, int32_t id,
                       const char *role, const DType *want) {
  const Plan &p = ctx.plan();
  if (id < 0 || id >= int32_t(p.values.size()))
    throw ctx.error(index, std::string("missing operand (") + role + ")");
  const Value &v = p.values[size_t(id)];
  if (want && v.dtype != *want)
    throw ctx.error(index, std::string(role) + " v" + std::to_string(id) +
                               " has dtype " + dtypeName(v.dtype) +
                               ", expected " + dtypeName(*want));
  if (v.kind == ValueKind::constant) {
    char *d = constPtr_[size_t(id)];
    if (!d)
      throw ctx.error(index, std::string(role) + " v" + std::to_string(id) +
                                 " ('" + v.name +
                                 "') is not mapped on this rank");
    return d;
  }
  if (v.offset + v.byteSize() > arenaSize_)
    throw ctx.error(index, std::string(role) + " lies outside the arena");
  return arena_.get() + v.offset;
}

cuda::DType CudaBackend::gpuType(ExecContext &ctx, size_t index, int32_t id,
                                 const char *role) {
  const Value &v = ctx.plan().values[size_t(id)];
  cuda::DType t;
  if (!toCudaType(v.dtype, t))
    throw ctx.error(index, std::string(role) + " v" + std::to_string(id) +
                               " has dtype " + dtypeName(v.dtype) +
                               " (f32, bf16 or f16 expected)");
  return t;
}

DispatchState &CudaBackend::stateFor(ExecContext &ctx, size_t index,
                                     int64_t d) {
  if (d < 0 || d >= int64_t(states_.size()) || !states_[size_t(d)] ||
      !states_[size_t(d)]->valid)
    throw ctx.error(index,
                    "its dispatch step " + std::to_string(d) + " has not run");
  return *states_[size_t(d)];
}

void CudaBackend::moveBytes(char *dst, const char *src, size_t bytes) {
  if (dst == src || bytes == 0)
    return;
  if (dst < src + bytes && src < dst + bytes) { // overlap: through a temp
    char *t = tmp_.ensure(bytes, stream_);
    MOERT_CUDA_CHECK(
        cudaMemcpyAsync(t, src, bytes, cudaMemcpyDeviceToDevice, stream_));
    src = t;
  }
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::runStep(ExecContext &ctx, size_t index) {
  try {
    MOERT_CUDA_CHECK(cudaSetDevice(device_));
    Backend::runStep(ctx, index);
  } catch (const CudaFailure &e) {
    throw ctx.error(index, e.what());
  }
}

void CudaBackend::matmul(ExecContext &ctx, size_t index,
                        const fb::MatmulT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[size_t(id)]; };
  MatmulDims d = checkMatmulStep(ctx, index);
  const Value &c = val(s.outputs[0]);
  cuda::DType in = gpuType(ctx, index, s.inputs[0], "A");
  cuda::DType out = gpuType(ctx, index, s.outputs[0], "C");
  const void *bias = nullptr;
  if (s.inputs.size() > 2 && s.inputs[2] >= 0)
    bias = ptr(ctx, index, s.inputs[2], "bias", &c.dtype);
  cuda::matmul(*blas_, in, ptr(ctx, index, s.inputs[0], "A"),
               ptr(ctx, index, s.inputs[1], "B"), bias, out,
               ptr(ctx, index, s.outputs[0], "C"), d.M, d.K, d.N, d.transB);
}

void CudaBackend::batchMatmul(ExecContext &ctx, size_t index,
                        const fb::BatchMatmulT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  BatchMatmulDims d = checkBatchMatmulStep(ctx, index);
  cuda::batchMatmul(*blas_, f32(ctx, index, s.inputs[0], "A"),
                    f32(ctx, index, s.inputs[1], "B"),
                    f32(ctx, index, s.outputs[0], "C"), d.batch, d.M, d.K,
                    d.N);
}

void CudaBackend::route(ExecContext &ctx, size_t index,
                        const fb::RouteT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  int64_t T = 0, E = 0;
  RouteParams rp = checkRouteStep(ctx, index, T, E);
  std::string bad = cuda::checkRoute(E, rp);
  need(bad.empty(), bad);
  DType i64 = DType::i64;
  cuda::route(
      f32(ctx, index, s.inputs[0], "logits"),
      optF32(ctx, index, s, 1, "bias"), T, E, rp,
      f32(ctx, index, s.outputs[0], "weights"),
      reinterpret_cast<int64_t *>(ptr(ctx, index, s.outputs[1], "ids", &i64)),
      stream_);
}

void CudaBackend::unary(ExecContext &ctx, size_t index,
                        const fb::UnaryT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  cpu::Unary fn;
  int64_t n = checkUnaryStep(ctx, index, fn);
  cuda::unary(fn, f32(ctx, index, s.inputs[0], "x"),
              f32(ctx, index, s.outputs[0], "y"), n, stream_);
}

void CudaBackend::binary(ExecContext &ctx, size_t index,
                        const fb::BinaryT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[size_t(id)]; };
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  cpu::Binary fn;
  std::vector<int64_t> as, bs;
  checkBinaryStep(ctx, index, fn, as, bs);
  const Value &c = val(s.outputs[0]);
  need(c.shape.size() <= 8, "results of more than 8 dims are not supported");
  cuda::binary(fn, f32(ctx, index, s.inputs[0], "a"), as,
               f32(ctx, index, s.inputs[1], "b"), bs,
               f32(ctx, index, s.outputs[0], "c"), c.shape, stream_);
}

void CudaBackend::softmax(ExecContext &ctx, size_t index,
                        const fb::SoftmaxT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[size_t(id)]; };
  auto lastDim = [](const Value &v) -> int64_t {
    return v.shape.empty() ? 1 : v.shape.back();
  };
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &x = val(s.inputs[0]);
  int64_t n = lastDim(x);
  need(val(s.outputs[0]).numElements() == x.numElements(),
       "x and y differ in size");
  cuda::softmax(f32(ctx, index, s.inputs[0], "x"),
                f32(ctx, index, s.outputs[0], "y"),
                n ? x.numElements() / n : 0, n, stream_);
}

void CudaBackend::copy(ExecContext &ctx, size_t index,
                        const fb::CopyT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[size_t(id)]; };
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &x = val(s.inputs[0]), &y = val(s.outputs[0]);
  need(x.byteSize() == y.byteSize() && x.dtype == y.dtype,
       "x " + shapeString(x.shape) + " and y " + shapeString(y.shape) +
           " differ in size or dtype");
  moveBytes(ptr(ctx, index, s.outputs[0], "y"),
            ptr(ctx, index, s.inputs[0], "x"), x.byteSize());
}

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

void CudaBackend::gatherFromPeers(Comm &comm, const void *mine, size_t bytes,
                                  char *g) {
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  int64_t G = comm.size();
  int64_t p = int64_t(reinterpret_cast<uintptr_t>(mine));
  std::vector<int64_t> all(static_cast<size_t>(G), 0);
  comm.allGather(&p, sizeof(p), all.data());
  for (int64_t r = 0; r < G; ++r)
    MOERT_CUDA_CHECK(cudaMemcpyAsync(
        g + size_t(r) * bytes,
        reinterpret_cast<const char *>(uintptr_t(all[size_t(r)])), bytes,
        cudaMemcpyDefault, stream_));
  endPeerReads(comm);
}

void CudaBackend::endPeerReads(Comm &comm) {
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  comm.barrier();
}

void CudaBackend::copyExchange(Comm &comm, const char *src,
                               const std::vector<int64_t> &sendBytes,
                               const std::vector<int64_t> &sendOffs, char *dst,
                               const std::vector<int64_t> &recvBytes,
                               const std::vector<int64_t> &recvOffs) {
  // Each rank tells each peer where its rows for that peer lie and how many
  // bytes they are (after its stream has written them), then pulls its own
  // rows from every peer on its stream. Same process: device pointers are
  // valid in every rank's thread; cudaMemcpyDefault also covers peers on
  // another GPU of this process.
  int64_t G = comm.size();
  std::vector<int64_t> mine(static_cast<size_t>(2 * G)),
      theirs(static_cast<size_t>(2 * G));
  for (int64_t q = 0; q < G; ++q) {
    mine[size_t(2 * q)] =
        int64_t(reinterpret_cast<uintptr_t>(src + sendOffs[size_t(q)]));
    mine[size_t(2 * q + 1)] = sendBytes[size_t(q)];
  }
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  comm.allToAll(mine.data(), theirs.data(), 2);
  for (int64_t q = 0; q < G; ++q)
    if (theirs[size_t(2 * q + 1)] != recvBytes[size_t(q)])
      throw CommError("device copies: rank " + std::to_string(q) + " sends " +
                      std::to_string(theirs[size_t(2 * q + 1)]) +
                      " bytes, rank " + std::to_string(comm.rank()) +
                      " expects " + std::to_string(recvBytes[size_t(q)]));
  for (int64_t q = 0; q < G; ++q)
    if (recvBytes[size_t(q)])
      MOERT_CUDA_CHECK(cudaMemcpyAsync(
          dst + recvOffs[size_t(q)],
          reinterpret_cast<const char *>(uintptr_t(theirs[size_t(2 * q)])),
          size_t(recvBytes[size_t(q)]), cudaMemcpyDefault, stream_));
  endPeerReads(comm);
}

void CudaBackend::exchange(const std::string &axes, Comm &comm, const char *src,
                           const std::vector<int64_t> &sendBytes,
                           const std::vector<int64_t> &sendOffs, char *dst,
                           const std::vector<int64_t> &recvBytes,
                           const std::vector<int64_t> &recvOffs,
                           size_t rowBytes) {
  int64_t G = comm.size();
  int64_t sTotal = 0, rTotal = 0;
  for (int64_t q = 0; q < G; ++q) {
    sTotal += sendBytes[size_t(q)];
    rTotal += recvBytes[size_t(q)];
  }
#ifdef MOERT_HAVE_NCCL
  // (A one-rank group has a communicator only under MOERT_NCCL=force.)
  if (auto *nc = static_cast<cuda::NcclComm *>(ncclFor(axes))) {
    std::vector<int64_t> sRows(static_cast<size_t>(G), 0),
        rRows(static_cast<size_t>(G), 0);
    for (int64_t q = 0; q < G; ++q) {
      sRows[size_t(q)] = sendBytes[size_t(q)] / int64_t(rowBytes);
      rRows[size_t(q)] = recvBytes[size_t(q)] / int64_t(rowBytes);
    }
    nc->allToAllV(src, sRows, dst, rRows, rowBytes, stream_);
    return;
  }
#else
  (void)axes;
  (void)rowBytes;
#endif
  if (G == 1) { // the rows stay here
    if (sTotal)
      MOERT_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(sTotal),
                                       cudaMemcpyDeviceToDevice, stream_));
    return;
  }
  if (transportOf(axes) == Transport::deviceCopies) {
    copyExchange(comm, src, sendBytes, sendOffs, dst, recvBytes, recvOffs);
    return;
  }
  // Host staging: device -> pinned, the communicator, pinned -> device.
  char *hs = hostSend_.ensure(size_t(sTotal), stream_);
  char *hr = hostRecv_.ensure(size_t(rTotal), stream_);
  if (sTotal)
    MOERT_CUDA_CHECK(cudaMemcpyAsync(hs, src, size_t(sTotal),
                                     cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  comm.allToAllV(hs, sendBytes.data(), sendOffs.data(), hr, recvBytes.data(),
                 recvOffs.data());
  if (rTotal)
    MOERT_CUDA_CHECK(cudaMemcpyAsync(dst, hr, size_t(rTotal),
                                     cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::allReduce(ExecContext &ctx, size_t index,
                        const fb::AllReduceT &at) {
  const Step &s = ctx.plan().steps[index];
  if (at.reduction != fb::Reduction::sum)
    throw ctx.error(index, std::string("unsupported reduction '") +
                               fb::EnumNameReduction(at.reduction) + "'");
  const Value &x = ctx.plan().values[size_t(s.inputs[0])];
  if (ctx.plan().values[size_t(s.outputs[0])].numElements() != x.numElements())
    throw ctx.error(index, "x and y differ in size");
  const std::string &axes = at.axes;
  Comm &comm = ctx.group(axes);
  // f32, or the 16-bit partial sums of a --precision plan with tp > 1.
  DType dt = x.dtype;
  cuda::DType gt = gpuType(ctx, index, s.inputs[0], "x");
  char *xp = ptr(ctx, index, s.inputs[0], "x", &dt);
  char *yp = ptr(ctx, index, s.outputs[0], "y", &dt);
  size_t bytes = x.byteSize();
  size_t n = size_t(x.numElements());
  int64_t G = comm.size();
  // Device copies, and 16-bit partial sums over NCCL (ncclAllReduce would
  // round to 16 bits at every hop of its ring): every rank's x into
  // g [G][n], then the sum in rank order (fp32 accumulation, one rounding),
  // the same bits on every rank.
  if (G > 1 && bytes &&
      (transportOf(axes) == Transport::deviceCopies ||
       (transportOf(axes) == Transport::nccl && gt != cuda::DType::f32))) {
    char *g = gatherBlocks(axes, comm, xp, bytes);
    cuda::sumSlices(g, gt, G, int64_t(n), yp, stream_);
    return;
  }
  moveBytes(yp, xp, bytes);
  if (bytes == 0)
    return;
#ifdef MOERT_HAVE_NCCL
  if (auto *nc = static_cast<cuda::NcclComm *>(ncclFor(axes))) {
    nc->allReduceSum(yp, yp, n, gt, stream_);
    return;
  }
#endif
  if (comm.size() == 1)
    return;
  char *h = hostSend_.ensure(bytes, stream_);
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(h, yp, bytes, cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (gt == cuda::DType::f32) {
    comm.allReduceSum(reinterpret_cast<float *>(h), int64_t(n));
  } else {
    // Host staging: summed in fp32 (as the CPU backend), rounded once.
    Half16 h16 = gt == cuda::DType::bf16 ? Half16::bf16 : Half16::f16;
    std::vector<float> wide(n);
    toF32(h16, reinterpret_cast<const uint16_t *>(h), wide.data(), n);
    comm.allReduceSum(wide.data(), int64_t(n));
    fromF32(h16, wide.data(), reinterpret_cast<uint16_t *>(h), n);
  }
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(yp, h, bytes, cudaMemcpyHostToDevice, stream_));
}

char *CudaBackend::gatherBlocks(const std::string &axes, Comm &comm,
                                const char *mine, size_t bytes) {
  int64_t G = comm.size();
  char *g = gather_.ensure(size_t(G) * bytes, stream_);
#ifdef MOERT_HAVE_NCCL
  if (auto *nc = static_cast<cuda::NcclComm *>(ncclFor(axes))) {
    MOERT_NCCL_CHECK(
        ncclAllGather(mine, g, bytes, ncclUint8, nc->get(), stream_));
    return g;
  }
#endif
  if (transportOf(axes) == Transport::deviceCopies) {
    gatherFromPeers(comm, mine, bytes, g);
    return g;
  }
  char *hs = hostSend_.ensure(bytes, stream_);
  char *hr = hostRecv_.ensure(size_t(G) * bytes, stream_);
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(hs, mine, bytes, cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  comm.allGather(hs, int64_t(bytes), hr);
  MOERT_CUDA_CHECK(cudaMemcpyAsync(g, hr, size_t(G) * bytes,
                                   cudaMemcpyHostToDevice, stream_));
  return g;
}

void CudaBackend::allGather(ExecContext &ctx, size_t index,
                        const fb::AllGatherT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  const Value &x = p.values[size_t(s.inputs[0])];
  const std::string &axes = at.axes;
  Comm &comm = ctx.group(axes);
  int64_t G = comm.size();
  int64_t outer = checkAllGatherStep(ctx, index, G);
  size_t xBytes = x.byteSize();
  size_t inner = outer ? xBytes / size_t(outer) : 0;
  char *xp = ptr(ctx, index, s.inputs[0], "x");
  char *yp = ptr(ctx, index, s.outputs[0], "y");
  if (xBytes == 0)
    return;
  if (G == 1) {
    moveBytes(yp, xp, xBytes);
    return;
  }
  char *g = gatherBlocks(axes, comm, xp, xBytes);
  // y[o][r] = g[r][o]: one strided copy per rank.
  for (int64_t r = 0; r < G; ++r)
    MOERT_CUDA_CHECK(cudaMemcpy2DAsync(
        yp + size_t(r) * inner, size_t(G) * inner, g + size_t(r) * xBytes,
        inner, inner, size_t(outer), cudaMemcpyDeviceToDevice, stream_));
}

//===----------------------------------------------------------------------===//
// Generated kernels
//===----------------------------------------------------------------------===//

void CudaBackend::kernel(ExecContext &ctx, size_t index,
                        const fb::KernelT &at) {
  const Step &s = ctx.plan().steps[index];
  const std::string &kname = at.name;
  auto it = kernels_.find(kname);
  if (it == kernels_.end())
    throw ctx.error(index, "kernel '" + kname + "' was not loaded");
  std::vector<char *> operands;
  for (int32_t id : s.inputs)
    operands.push_back(ptr(ctx, index, id, "operand"));
  for (int32_t id : s.outputs)
    operands.push_back(ptr(ctx, index, id, "result"));
  const Driver &d = driver();
  for (const Launch &l : it->second) {
    size_t n = l.args.size() / 2;
    std::vector<uint64_t> storage(n, 0);
    std::vector<void *> params(n, nullptr);
    for (size_t i = 0; i < n; ++i) {
      int64_t kind = l.args[2 * i], v = l.args[2 * i + 1];
      if (kind == 0) {
        if (v < 0 || v >= int64_t(operands.size()))
          throw ctx.error(index, "kernel '" + kname + "': parameter " +
                                     std::to_string(i) + " is operand " +
                                     std::to_string(v) + " of " +
                                     std::to_string(operands.size()));
        storage[i] = uint64_t(reinterpret_cast<uintptr_t>(operands[size_t(v)]));
      } else if (kind == 1) {
        storage[i] = uint64_t(v);
      } else if (kind == 2) {
        uint32_t bits = uint32_t(v);
        std::memcpy(&storage[i], &bits, 4); // the f32 in the first 4 bytes
      } else {
        throw ctx.error(index, "kernel '" + kname + "': parameter kind " +
                                   std::to_string(kind) + " is unknown");
      }
      params[i] = &storage[i];
    }
    MOERT_CU_CHECK(d.cuLaunchKernel(l.fn, l.grid[0], l.grid[1], l.grid[2],
                                    l.block[0], l.block[1], l.block[2], 0,
                                    stream_, params.data(), nullptr));
  }
}

//===----------------------------------------------------------------------===//
// Dispatch, experts, combine
//===----------------------------------------------------------------------===//

void CudaBackend::dispatch(ExecContext &ctx, size_t index,
                        const fb::DispatchT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  int64_t H = 0, k = 0, T = 0;
  checkDispatchStep(ctx, index, H, k, T);
  const Value &tok = p.values[size_t(s.inputs[0])];
  const Value &recv = p.values[size_t(s.outputs[0])];
  gpuType(ctx, index, s.inputs[0], "tokens");
  const std::string &axes = at.axes;
  Comm &comm = ctx.group(axes);
  int64_t G = comm.size();

  std::unique_ptr<DispatchState> &slot = states_[index];
  if (!slot || !slot->placement) {
    Placement pl = dispatchPlacement(ctx, index, G);
    slot = std::make_unique<DispatchState>();
    slot->placement = std::make_unique<cuda::DevicePlacement>(pl, stream_);
    slot->E = pl.numExperts;
    slot->S = pl.slotsPerRank;
  }
  DispatchState &st = *slot;
  st.valid = false;
  st.comm = &comm;
  st.axes = axes;
  st.H = H;
  st.G = G;
  st.T = T;
  st.k = k;
  st.rowBytes = size_t(H) * dtypeSize(tok.dtype);
  const int64_t S = st.S, GS = G * S, nA = T * k;

  // The send layout on the device, then stats, counts and ids to the host.
  DType i64 = DType::i64;
  const int64_t *idp = reinterpret_cast<const int64_t *>(
      ptr(ctx, index, s.inputs[1], "ids", &i64));
  int64_t *sendPos =
      reinterpret_cast<int64_t *>(st.sendPos.ensure(size_t(nA) * 8, stream_));
  int64_t *sendCounts = reinterpret_cast<int64_t *>(
      st.sendCounts.ensure(size_t(GS) * 8, stream_));
  int64_t *stats = reinterpret_cast<int64_t *>(st.stats.ensure(3 * 8, stream_));
  size_t wsBytes = cuda::planDispatchWorkspace(T, k, *st.placement);
  void *ws = st.planWs.ensure(wsBytes, stream_);
  cuda::planDispatch(idp, T, k, *st.placement, at.capacity,
                     sendPos, sendCounts, stats, ws, st.planWs.size(), stream_);
  int64_t *meta = reinterpret_cast<int64_t *>(
      st.meta.ensure(size_t(3 + 2 * GS + nA) * 8, stream_));
  int64_t *hStats = meta, *hSend = meta + 3, *hRecv = meta + 3 + GS,
          *hIds = meta + 3 + 2 * GS;
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(hStats, stats, 24, cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaMemcpyAsync(hSend, sendCounts, size_t(GS) * 8,
                                   cudaMemcpyDeviceToHost, stream_));
  if (nA)
    MOERT_CUDA_CHECK(cudaMemcpyAsync(hIds, idp, size_t(nA) * 8,
                                     cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (hStats[2] != 0) {
    // The CPU kernel's message: the first bad assignment.
    for (int64_t a = 0; a < nA; ++a)
      if (hIds[a] < 0 || hIds[a] >= st.E)
        throw ctx.error(index, "expert id " + std::to_string(hIds[a]) +
                                   " of token " + std::to_string(a / k) +
                                   " (choice " + std::to_string(a % k) +
                                   ") outside [0, " + std::to_string(st.E) +
                                   ")");
    throw ctx.error(index, std::to_string(hStats[2]) +
                               " assignments to experts without a replica");
  }
  st.sendRows = hStats[0];

  // Count exchange on the host, then the rows.
  comm.allToAll(hSend, hRecv, S);
  int64_t rowBytes = int64_t(st.rowBytes);
  st.sendBytes.assign(size_t(G), 0);
  st.sendOffs.assign(size_t(G), 0);
  st.recvBytes.assign(size_t(G), 0);
  st.recvOffs.assign(size_t(G), 0);
  int64_t sOff = 0, rOff = 0;
  for (int64_t q = 0; q < G; ++q) {
    int64_t sr = 0, rr = 0;
    for (int64_t sl = 0; sl < S; ++sl) {
      sr += hSend[q * S + sl];
      rr += hRecv[q * S + sl];
    }
    st.sendOffs[size_t(q)] = sOff;
    st.sendBytes[size_t(q)] = sr * rowBytes;
    st.recvOffs[size_t(q)] = rOff;
    st.recvBytes[size_t(q)] = rr * rowBytes;
    sOff += sr * rowBytes;
    rOff += rr * rowBytes;
  }
  st.recvRows = rowBytes ? rOff / rowBytes : 0;
  bool over = st.recvRows > recv.shape[0];
#ifdef MOERT_HAVE_NCCL
  if (G > 1 && ncclFor(axes)) {
    // NCCL work queued to a rank that has thrown would never finish (its
    // peers would wait in a stream sync no abort reaches): every rank
    // learns whether any of the group is over its bound first.
    int32_t mine = over, anyOver = 0;
    std::vector<int32_t> all(static_cast<size_t>(G));
    comm.allGather(&mine, sizeof(mine), all.data());
    for (int64_t q = 0; q < G; ++q)
      if (all[size_t(q)] && !anyOver)
        anyOver = int32_t(q) + 1;
    if (anyOver && !over)
      throw ctx.error(index, "rank " + std::to_string(anyOver - 1) +
                                 " of the group receives more rows than its "
                                 "bound");
  }
#endif
  if (over)
    throw ctx.error(index, "receives " + std::to_string(st.recvRows) +
                               " rows, more than the bound of " +
                               std::to_string(recv.shape[0]));
  char *send = send_.ensure(size_t(sOff), stream_);
  cuda::packRows(ptr(ctx, index, s.inputs[0], "tokens"), st.rowBytes, sendPos,
                 T, k, send, stream_);
  char *recvSrc = recvSrc_.ensure(size_t(rOff), stream_);
  exchange(axes, comm, send, st.sendBytes, st.sendOffs, recvSrc, st.recvBytes,
           st.recvOffs, st.rowBytes);

  // Slot-major order on the device; the slot offsets on the host as well
  // (cuBLAS needs the problem sizes there).
  int64_t *dRecv = reinterpret_cast<int64_t *>(
      st.recvCounts.ensure(size_t(GS) * 8, stream_));
  MOERT_CUDA_CHECK(cudaMemcpyAsync(dRecv, hRecv, size_t(GS) * 8,
                                   cudaMemcpyHostToDevice, stream_));
  int64_t maxRows = recv.shape[0];
  int64_t *perm =
      reinterpret_cast<int64_t *>(st.perm.ensure(size_t(maxRows) * 8, stream_));
  int64_t *slotOffsets = reinterpret_cast<int64_t *>(
      st.slotOffsets.ensure(size_t(S + 1) * 8, stream_));
  size_t owsBytes = cuda::expertMajorOrderWorkspace(G, S);
  void *ows = st.orderWs.ensure(owsBytes, stream_);
  cuda::expertMajorOrder(dRecv, G, S, maxRows, perm, slotOffsets, ows,
                         st.orderWs.size(), stream_);
  cuda::gatherRowsByIndex(recvSrc, st.rowBytes, perm, st.recvRows,
                          ptr(ctx, index, s.outputs[0], "recv"), stream_);
  st.hostSlotOffsets.assign(size_t(S + 1), 0);
  for (int64_t sl = 0; sl < S; ++sl) {
    int64_t rows = 0;
    for (int64_t q = 0; q < G; ++q)
      rows += hRecv[q * S + sl];
    st.hostSlotOffsets[size_t(sl + 1)] = st.hostSlotOffsets[size_t(sl)] + rows;
  }
  st.valid = true;

  // Stats (as the CPU backend).
  MoELayerStats &l = ctx.layer(int64_t(index));
  l.tokensPerExpert.assign(size_t(st.E), 0);
  for (int64_t a = 0; a < nA; ++a)
    if (hIds[a] >= 0 && hIds[a] < st.E)
      ++l.tokensPerExpert[size_t(hIds[a])];
  std::vector<int32_t> ranks = p.group(ctx.rank(), splitAxes(axes));
  l.peers.assign(size_t(G), PeerTraffic());
  for (int64_t q = 0; q < G; ++q) {
    PeerTraffic &t = l.peers[size_t(q)];
    t.peer = q < int64_t(ranks.size()) ? ranks[size_t(q)] : int32_t(q);
    t.rowsSent = st.sendBytes[size_t(q)] / rowBytes;
    t.rowsRecv = st.recvBytes[size_t(q)] / rowBytes;
    t.bytesSent = st.sendBytes[size_t(q)];
    t.bytesRecv = st.recvBytes[size_t(q)];
  }
  l.dropped = hStats[1];
  l.rowsReceived = st.recvRows;
}

void CudaBackend::experts(ExecContext &ctx, size_t index,
                        const fb::ExpertsT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  DispatchState &st = stateFor(ctx, index, at.dispatch);
  auto opt = [&](size_t i) -> const Value * {
    return i < s.inputs.size() && s.inputs[i] >= 0
               ? &p.values[size_t(s.inputs[i])]
               : nullptr;
  };
  int64_t H = st.H;
  int64_t F = checkExpertsStep(ctx, index, H, st.S, st.recvRows);
  // Activations and weights share one dtype (f32, bf16 or f16).
  DType dt = p.values[size_t(s.inputs[0])].dtype;
  cuda::DeviceExpertWeights w;
  w.dtype = gpuType(ctx, index, s.inputs[0], "recv");
  auto optPtr = [&](size_t i, const char *role) -> const void * {
    return opt(i) ? ptr(ctx, index, s.inputs[i], role, &dt) : nullptr;
  };
  w.wGate = ptr(ctx, index, s.inputs[1], "w_gate", &dt);
  w.wUp = optPtr(2, "w_up");
  w.wDown = ptr(ctx, index, s.inputs[3], "w_down", &dt);
  w.bGate = optPtr(4, "b_gate");
  w.bUp = optPtr(5, "b_up");
  w.bDown = optPtr(6, "b_down");
  w.H = H;
  w.F = F;
  w.act = at.activation;
  size_t bytes = cuda::groupedFFNScratch(st.recvRows, w);
  char *scratch = ffn_.ensure(bytes, stream_);
  cuda::groupedFFN(
      *blas_, ptr(ctx, index, s.inputs[0], "recv", &dt), st.hostSlotOffsets, w,
      ptr(ctx, index, s.outputs[0], "y", &dt), scratch, ffn_.size());
}

void CudaBackend::combine(ExecContext &ctx, size_t index,
                        const fb::CombineT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  DispatchState &st = stateFor(ctx, index, at.dispatch);
  int64_t H = st.H, T = st.T, k = st.k;
  checkCombineStep(ctx, index, H, T, k, st.recvRows);
  const Value &y = p.values[size_t(s.inputs[0])];
  need(size_t(H) * dtypeSize(y.dtype) == st.rowBytes,
       "y, out and the dispatched rows differ in dtype");
  cuda::DType dt = gpuType(ctx, index, s.inputs[0], "y");
  // Back to source-major order, then home.
  int64_t rTotal = st.recvRows * int64_t(st.rowBytes);
  int64_t sTotal = st.sendRows * int64_t(st.rowBytes);
  char *back = back_.ensure(size_t(rTotal), stream_);
  cuda::scatterRowsByIndex(ptr(ctx, index, s.inputs[0], "y"), st.rowBytes,
                           reinterpret_cast<const int64_t *>(st.perm.get()),
                           st.recvRows, back, stream_);
  char *home = send_.ensure(size_t(sTotal), stream_);
  exchange(st.axes, *st.comm, back, st.recvBytes, st.recvOffs, home,
           st.sendBytes, st.sendOffs, st.rowBytes);
  cuda::combineRows(home, dt, H,
                    reinterpret_cast<const int64_t *>(st.sendPos.get()), T, k,
                    f32(ctx, index, s.inputs[1], "weights"),
                    ptr(ctx, index, s.outputs[0], "out"), stream_);
  MoELayerStats &l = ctx.layer(at.dispatch);
  for (size_t q = 0; q < l.peers.size(); ++q) {
    l.peers[q].bytesSent += st.recvBytes[q];
    l.peers[q].bytesRecv += st.sendBytes[q];
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

bool moert::cudaBackendAvailable(std::string *why) {
  return cuda::deviceAvailable(why);
}

std::unique_ptr<Backend>
moert::createCudaBackend(const CudaBackendOptions &options) {
  return std::make_unique<CudaBackend>(options);
}
