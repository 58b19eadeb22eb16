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
// Here: the device, the arena and the uploaded constants, host copies,
// operand access, runStep and the entry points; the steps and collectives
// are in the other CudaBackend*.cpp files (see CudaBackendImpl.h).
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>

namespace {

using namespace moert;

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

} // namespace

namespace moert::cudaexec {

void installFailureHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    cuda::setFailureHandler(
        [](const std::string &message) { throw CudaFailure(message); });
  });
}

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
  for (DeviceBuffer *b : {&arena_, &consts_, &send_, &recvSrc_, &back_, &ffn_,
                          &tmp_, &gather_, &scatterStatus_})
    b->release();
  held_.clear();
  hostSend_.release();
  hostRecv_.release();
  scatterStatusHost_.release();
  if (stream_)
    report(cudaStreamDestroy(stream_), "cudaStreamDestroy");
}

//===----------------------------------------------------------------------===//
// Preparation
//===----------------------------------------------------------------------===//

void CudaBackend::prepare(ExecContext &ctx) {
  rank_ = ctx.rank();
  std::string who = "rank " + std::to_string(rank_) + ": ";
  // Before the device: a plan this backend cannot run is refused anywhere.
  for (const Value &v : ctx.plan().values)
    if (v.boxed)
      throw RunError(who + "value " + std::to_string(v.id) + " ('" + v.name +
                     "') is a KV cache kept in place (boxed), which the "
                     "CUDA backend does not take yet; dynamic plans with "
                     "generated kernels are CPU-only");
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
  // Large weights take a while to stage from the mapped plan (pageable
  // memory, read from disk on first touch): progress every 4 GiB.
  const uint64_t kReport = uint64_t(4) << 30;
  uint64_t done = 0, nextReport = kReport;
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
    done += v.byteSize();
    if (total >= kReport && done >= nextReport) {
      std::fprintf(stderr,
                   "moe-run: rank %d: %.1f of %.1f GiB of weights "
                   "on the GPU\n",
                   rank_, double(done) / (1 << 30), double(total) / (1 << 30));
      nextReport += kReport;
    }
  }
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

//===----------------------------------------------------------------------===//
// Host copies
//===----------------------------------------------------------------------===//

void CudaBackend::upload(const Value &v, const void *src, size_t bytes) {
  char *a = at(v, bytes);
  try {
    MOERT_CUDA_CHECK(cudaSetDevice(device_));
    MOERT_CUDA_CHECK(
        cudaMemcpyAsync(a, src, bytes, cudaMemcpyHostToDevice, stream_));
    MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (const CudaFailure &e) {
    throw RunError("rank " + std::to_string(rank_) + ": " + e.what());
  }
}

void CudaBackend::download(const Value &v, void *dst, size_t bytes) {
  char *a = at(v, bytes);
  try {
    MOERT_CUDA_CHECK(cudaSetDevice(device_));
    MOERT_CUDA_CHECK(
        cudaMemcpyAsync(dst, a, bytes, cudaMemcpyDeviceToHost, stream_));
    MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (const CudaFailure &e) {
    throw RunError("rank " + std::to_string(rank_) + ": " + e.what());
  }
}

void *CudaBackend::allocateHeld(size_t bytes) {
  try {
    MOERT_CUDA_CHECK(cudaSetDevice(device_));
    held_.push_back(std::make_unique<DeviceBuffer>());
    return held_.back()->ensure(bytes, stream_);
  } catch (const CudaFailure &e) {
    throw RunError("rank " + std::to_string(rank_) + ": " + e.what());
  }
}

/// A device-to-device copy of `bytes` on `stream`, waited for.
static void copyOnDevice(void *dst, const void *src, size_t bytes,
                         cudaStream_t stream) {
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void CudaBackend::saveHeld(const Value &v, void *p, size_t bytes) {
  char *a = at(v, bytes);
  try {
    MOERT_CUDA_CHECK(cudaSetDevice(device_));
    copyOnDevice(p, a, bytes, stream_);
  } catch (const CudaFailure &e) {
    throw RunError("rank " + std::to_string(rank_) + ": " + e.what());
  }
}

void CudaBackend::loadHeld(const Value &v, const void *p, size_t bytes) {
  char *a = at(v, bytes);
  try {
    MOERT_CUDA_CHECK(cudaSetDevice(device_));
    copyOnDevice(a, p, bytes, stream_);
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
// Operands and steps
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
  char *a = locate(v, arena_.get(), arenaSize_, v.byteSize());
  if (!a)
    throw ctx.error(index, std::string(role) + " lies outside its memory");
  return a;
}

char *CudaBackend::at(const Value &v, uint64_t bytes) const {
  char *a = locate(v, arena_.get(), arenaSize_, bytes);
  if (!a)
    throw RunError("rank " + std::to_string(rank_) + ": value '" + v.name +
                   "': " + std::to_string(bytes) +
                   " bytes lie outside its memory");
  return a;
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

} // namespace moert::cudaexec

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

bool moert::cudaBackendAvailable(std::string *why) {
  return cuda::deviceAvailable(why);
}

std::unique_ptr<Backend>
moert::createCudaBackend(const CudaBackendOptions &options) {
  return std::make_unique<cudaexec::CudaBackend>(options);
}
