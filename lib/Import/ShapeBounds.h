//===- ShapeBounds.h - shapes that can never agree at run time --*- C++ -*-===//
//
// A dim computed at run time (a data-dependent slice: a Split by sizes
// computed from the routing, a Slice with run-time bounds) is bounded by the
// tensor it is cut from. When a linalg op of the imported model needs that
// dim to equal a larger static size (a Gemm's contraction with a constant
// weight, an Add with a static operand), the model can never run; MLIR's
// canonicalization would make the static size explicit and leave a slice
// out of bounds, which the verifier rejects as an internal error. This check
// runs on the imported module and names the node instead (issue 17).
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_LIB_IMPORT_SHAPEBOUNDS_H
#define MOEC_LIB_IMPORT_SHAPEBOUNDS_H

#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace moec::onnximport {

/// "" when no linalg op of `module` needs a static size along a dim whose
/// run-time size is bounded below it; else one message naming the op's
/// location (its ONNX node), the size needed and the bound.
std::string unsatisfiableShapes(mlir::ModuleOp module);

} // namespace moec::onnximport

#endif // MOEC_LIB_IMPORT_SHAPEBOUNDS_H
