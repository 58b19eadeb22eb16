//===- CudaBackendPtx.cpp - the plan's PTX on a CUDA device ---------------===//
//
// The driver API (entry points looked up through cudart, so that nothing
// links libcuda), the plan's PTX modules loaded at prepare, and the kernel
// step, which launches their functions with the plan's geometry.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"

#include <cstring>
#include <mutex>

namespace moert::cudaexec {

//===----------------------------------------------------------------------===//
// The driver API
//===----------------------------------------------------------------------===//

namespace {

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

} // namespace

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
                             CUresult r, const std::string &extra) {
  cuda::fail("CUDA driver error", file, line, call,
             driverErrorText(r) + (extra.empty() ? "" : ": " + extra));
}

//===----------------------------------------------------------------------===//
// PTX modules
//===----------------------------------------------------------------------===//

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

} // namespace moert::cudaexec
