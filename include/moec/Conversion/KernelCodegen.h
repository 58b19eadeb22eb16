//===- KernelCodegen.h - generated kernels for CPU and CUDA -----*- C++ -*-===//
//
// Compiles the `moe.kernel` functions (from moe-outline-kernels) ahead of
// time: to a shared object for the host CPU, or to PTX for NVIDIA GPUs. The
// plan embeds the result; `kernel` steps call the functions by name.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_CONVERSION_KERNELCODEGEN_H
#define MOEC_CONVERSION_KERNELCODEGEN_H

#include "moert/Plan.h"

#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace moec {

struct KernelVariant;

/// The kernel records are the plan's (moert::KernelCode, GpuLaunchCode).
using KernelInfo = moert::KernelCode;

/// Host machine code: `void kernel_N(void **args)` in a shared object (the
/// bytes of the .so), `args` the kernel's pointers, inputs then outputs
/// (plan version 3). No kernels: success, empty output. With `variants`
/// (a plan with a dynamic token count, KernelSymbols.h): one function per
/// variant, the symbolic ones taking the counts as args[numArgs].
mlir::LogicalResult compileKernelsForCPU(mlir::ModuleOp module,
                                         llvm::ArrayRef<KernelVariant> variants,
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
