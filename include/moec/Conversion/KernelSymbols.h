//===- KernelSymbols.h - generated kernels at a dynamic token count -*- C++
//-*-===//
//
// Generated kernels of a plan with a dynamic token count (increment 2 of
// docs/design/dynamic-tokens.md). A kernel keeps the static bare-pointer
// ABI of the maximum's shapes; a kernel whose operands have symbolic dims
// takes one more pointer, to the call's counts int64 {t, tb, T}, and views
// each such operand at its actual sizes with packed strides
// (memref.reinterpret_cast) before its linalg ops, which then run to the
// actual extents. Plan values are packed at their actual shapes, so inner
// symbolic dims ([B, h, S, d]) read right too.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_CONVERSION_KERNELSYMBOLS_H
#define MOEC_CONVERSION_KERNELSYMBOLS_H

#include "moert/Plan.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moec {

/// One compiled copy of kernel function `source`, named `name`, for
/// operands (inputs then outputs) with the symbolic dims `operands`.
/// `boxed[i]`: operand i is viewed at the strides of `box[i]` (a box of it)
/// rather than packed: a constant cut at the count (its maximum), or a KV
/// cache kept in place (moert::Value::boxed: the plan value's shape).
struct KernelVariant {
  std::string name;
  std::string source;
  std::vector<std::vector<moert::SymDim>> operands;
  std::vector<bool> boxed;
  std::vector<std::vector<int64_t>> box;
  /// A concatenation that appends operand `appendRows` to boxed operand
  /// `appendPast` in place (moec::appendsToCache): the kernel writes only
  /// the new rows of its output, whose other rows are past's own. -1: no.
  int appendPast = -1, appendRows = -1;
  /// The kernel computes with the count itself (moe.token_count).
  bool readsCount = false;
  /// It takes the counts operand: symbolic operands or readsCount.
  bool symbolic() const;
};

/// The kernel copies `plan`'s kernel steps need: one per kernel and
/// signature of symbolic dims. A step whose signature differs from an
/// earlier call of the same kernel is renamed to a copy ("kernel_3_t1").
/// With `module`, a kernel function there that holds moe.token_count reads
/// the count (KernelVariant::readsCount).
std::vector<KernelVariant> kernelVariants(moert::Plan &plan,
                                          mlir::ModuleOp module = {});

/// The same model's module and plan at the maximum (`max`, `plan`) and at
/// other counts (`others[i]`, `otherPlans[i]` at `counts[i]` tokens, plans
/// of the same structure): the kernel each kernel step calls must have the
/// same ops and hold the same constants (scalars, splats) at every count,
/// or it computed something from the count. An index constant that is an
/// operand's size plus a fixed offset at every count (a concat's offset,
/// a clamp at size - 1, a negative index's wrap) is rewritten in `max` to
/// read that size (tensor.dim), which the kernel's views make the actual
/// one; another integer constant that is a * X + b at every count (X the
/// global count T, or this rank's t when the token split has several
/// blocks) to compute that from moe.token_count. `minCount`: the least
/// count at which none of these is negative (count - 4, a sliding window's
/// start, is an index from 4 tokens on; three counts at or above it cannot
/// tell what the model does below). False with `error` naming the step, its
/// ONNX node and both constants.
bool checkKernelConstants(mlir::ModuleOp max, const moert::Plan &plan,
                          int64_t maxTokens,
                          llvm::ArrayRef<mlir::ModuleOp> others,
                          llvm::ArrayRef<const moert::Plan *> otherPlans,
                          llvm::ArrayRef<int64_t> counts, int64_t &minCount,
                          std::string &error);

/// Rewrites bufferized kernel `f` (memref operands, inputs then outputs) for
/// `variant`: appends the counts operand (memref<3xi64>), replaces each
/// moe.token_count by a load from it and each
/// symbolic operand by its view at the actual sizes, min(a*X+b, max),
/// packed (boxed operands: at their box's strides); an append variant
/// writes only its rows, after past's. Negative indices
/// into such operands wrap around their actual sizes. Fails with `error` when
/// an operand is used other than by linalg ops, loads and stores, or a linalg
/// loop runs over a symbolic dim of one operand and a fixed dim of another.
mlir::LogicalResult dynamizeKernel(mlir::func::FuncOp f,
                                   const KernelVariant &variant,
                                   std::string &error);

} // namespace moec

#endif // MOEC_CONVERSION_KERNELSYMBOLS_H
