//===- ToPlan.h - lowering the per-rank program to a .moeplan ---*- C++ -*-===//
//
// The last compiler stage: a module partitioned by moe-partition becomes a
// plan (docs/plan-format.md): values with arena offsets from a liveness-based
// memory plan, one step per op, and the weights, split into a segment shared
// by every rank and one segment per rank (its experts, its tp slices).
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_CONVERSION_TOPLAN_H
#define MOEC_CONVERSION_TOPLAN_H

#include "mlir/IR/BuiltinOps.h"
#include "moert/Plan.h"

namespace moec {

struct KernelVariant;

struct PlanOptions {
  /// Compile the generated kernels for the host CPU.
  bool cpuCode = true;
  /// Also compile them to PTX for this chip ("sm_90"); empty: no PTX.
  std::string cudaChip;
  /// When set: per plan value, the value whose arena bytes it shares (itself
  /// unless it is a view of another; -1 for constants). Used to infer the
  /// symbolic dims of a plan with a dynamic token count (SymbolCheck.h).
  std::vector<int32_t> *valueRoots = nullptr;
  /// Keep the roots of the KV cache's pairs (moert::cachePairs: each past*
  /// input and its present* output) outside the arena (moert::Value::
  /// outside): the executor allocates them and swaps them between decode
  /// steps. Plans with a dynamic token count only (roots are recorded).
  bool cacheOutsideArena = false;
  /// Check the plan with moert::verifyPlan. Off only for plans made to be
  /// compared (SymbolCheck.h's samples, without kernel code).
  bool verify = true;
};

/// Compiles `module`'s generated kernels as `options` say (host code, PTX)
/// into `plan` and `data`: every kernel, or with `variants` (a plan with a
/// dynamic token count, KernelSymbols.h) each variant. buildPlan calls it
/// without variants.
mlir::LogicalResult addKernelCode(mlir::ModuleOp module,
                                  const PlanOptions &options,
                                  llvm::ArrayRef<KernelVariant> variants,
                                  moert::Plan &plan, moert::PlanData &data);

/// Builds the plan of `module` (emits an error naming the op and fails when
/// an op has no plan lowering). `source` is recorded as the plan's source.
mlir::LogicalResult buildPlan(mlir::ModuleOp module, llvm::StringRef source,
                              const PlanOptions &options, moert::Plan &plan,
                              moert::PlanData &data);

} // namespace moec

#endif // MOEC_CONVERSION_TOPLAN_H
