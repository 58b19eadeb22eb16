//===- KernelCodegen.h - generated kernels for CPU and CUDA -----*- C++ -*-===//
//
// Compiles the `moe.kernel` functions (from moe-outline-kernels) ahead of
// time: to a shared object for the host CPU, or to PTX for NVIDIA GPUs. The
// plan embeds the result; `kernel` steps call the functions by name.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_CONVERSION_KERNELCODEGEN_H
#define MOEC_CONVERSION_KERNELCODEGEN_H

#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace moec {

/// One GPU kernel launch of a generated kernel (static geometry).
struct GpuLaunch {
  int module = 0;       ///< index of the PTX module
  std::string function; ///< the PTX entry
  int64_t grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  /// Kernel parameters in order, as (kind, value) pairs: kind 0 = the
  /// kernel's pointer argument number `value`, 1 = an i64 constant, 2 = an
  /// f32 constant (its bits in `value`).
  std::vector<std::pair<int, int64_t>> args;
};

struct KernelInfo {
  std::string name;
  int numArgs = 0; ///< one pointer per input, then one per output
  std::vector<GpuLaunch> launches; ///< CUDA: the launches, in order
};

/// Host machine code: `kernel_N(const float *in..., float *out...)` in a
/// shared object (the bytes of the .so). No kernels: success, empty output.
mlir::LogicalResult compileKernelsForCPU(mlir::ModuleOp module,
                                         std::vector<char> &sharedObject,
                                         std::vector<KernelInfo> &kernels,
                                         std::string &error);

/// PTX for `chip` (e.g. "sm_90") through gpu -> NVVM -> LLVM NVPTX: one
/// PTX module per GPU kernel, in `ptx`; `kernels[i].launches` say how to
/// launch them.
mlir::LogicalResult compileKernelsToPTX(mlir::ModuleOp module,
                                        llvm::StringRef chip,
                                        std::vector<std::string> &ptx,
                                        std::vector<KernelInfo> &kernels,
                                        std::string &error);

} // namespace moec

#endif // MOEC_CONVERSION_KERNELCODEGEN_H
