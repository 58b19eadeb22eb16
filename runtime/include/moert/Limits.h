//===- Limits.h - limits the compiler and the runtime share -------*- C++
//-*-===//
//
// The one definition of each limit a plan must respect. moec checks them
// before it writes a plan (lib/Conversion/ToPlan.cpp; moe-outline-kernels
// builds no kernel past them), and the runtime's verifier (verifyPlan,
// runtime/core/Plan.cpp) and backends check them when a plan is loaded, so
// the compiler never writes a plan the runtime refuses. No LLVM or MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_LIMITS_H
#define MOERT_LIMITS_H

#include <cstdint>

namespace moert {

/// The most pointers (inputs, then results) a `kernel` step passes to its
/// generated kernel. The CPU entry `kernel_N(void **args)` takes any
/// number; the bound is the GPU's: a PTX entry takes one 8-byte parameter
/// per pointer, and 256 pointers leave half of kMaxLaunchParamBytes for
/// the launch's scalar parameters.
constexpr int kMaxKernelOperands = 256;

/// The most bytes of parameters one GPU launch of a generated kernel may
/// pass (CUDA's limit on a kernel's parameters, 4 KiB on every device and
/// toolkit; 8 bytes per pointer or i64, 4 per f32, each at its alignment).
constexpr int64_t kMaxLaunchParamBytes = 4096;

/// The most ranks a plan's mesh may have (the product of its axis sizes):
/// ranks are int32 everywhere, and the verifier loops over them.
constexpr int64_t kMaxRanks = int64_t(1) << 16;

/// The most bytes one tensor of a plan may have (its dims' product times
/// its element size, checked without overflow).
constexpr uint64_t kMaxTensorBytes = uint64_t(1) << 56;

} // namespace moert

#endif // MOERT_LIMITS_H
