//===- StaticShapes.h - data-dependent shapes the plans cannot hold -*- C++
//-*-===//
//
// Plans hold static shapes (the ragged rows of dispatch are bounded by
// max_rows). A data-dependent shape outside a raised MoE layer (NonZero in
// an exported per-expert loop that moe-raise-experts did not raise) cannot
// be partitioned, lowered or run; this check finds it up front.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_ANALYSIS_STATICSHAPES_H
#define MOEC_ANALYSIS_STATICSHAPES_H

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace moec {

/// Set by moe-raise-experts on the op that routes an MoE-like region it
/// could not raise (the top-k, or the Switch argmax): why it was not raised
/// (the warning's text), so that checkStaticShapes can say why the layer's
/// data-dependent shapes are left.
constexpr llvm::StringLiteral kNotRaisedAttr = "moe.not_raised";

/// Emits one error at the first op of `func` that makes a data-dependent
/// shape (a dynamic dim from static operands) and fails; `forWhat` names
/// what needed static shapes ("mesh ep=8"). The error names the router of
/// the unraised layer the op depends on and why it was not raised
/// (kNotRaisedAttr), when there is one.
mlir::LogicalResult checkStaticShapes(mlir::func::FuncOp func,
                                      llvm::StringRef forWhat);

} // namespace moec

#endif // MOEC_ANALYSIS_STATICSHAPES_H
