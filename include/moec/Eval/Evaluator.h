//===- Evaluator.h - reference interpreter for moec's IR --------*- C++ -*-===//
//
// A plain C++ interpreter of the IR the importer and the passes produce:
// arith, math, linalg (every structured op, named or generic, plus
// linalg.softmax), tensor and moe ops on tensors, in a func.func. It is the
// independent check that moec's IR computes the same function as onnxruntime
// on the original ONNX file (see moe-eval and test/e2e/check_onnx.py).
//
// Semantics:
//  - Every tensor value is concrete: dynamic dimensions take their run-time
//    sizes, and each result is checked against the static dims of its type.
//  - Float elements are held as double but rounded to the element type after
//    every operation (f32 ops give the f32 result; f16/bf16 round through
//    APFloat), so the values are exactly those of the element type. Integer
//    elements are held as int64, wrapped to their bit width (sign-extended);
//    i1 is 0 or 1; index is 64-bit.
//  - linalg structured ops iterate their loop space (ranges from the run-time
//    operand shapes) in lexicographic order and interpret the body per point;
//    reductions accumulate in the output's element type in that order.
//  - moe ops follow the descriptions in MoEOps.td.
//
// Anything it cannot evaluate (an unsupported op, out-of-bounds accesses,
// shapes that contradict the types, integer division by zero) is an error
// naming the op and its location, never a crash.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_EVAL_EVALUATOR_H
#define MOEC_EVAL_EVALUATOR_H

#include "mlir/IR/Types.h"
#include "mlir/Support/LLVM.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir::func {
class FuncOp;
} // namespace mlir::func

namespace moec::eval {

/// A concrete tensor value in row-major (C) order. Float elements live in `f`
/// (values of the element type's precision), integer, index and bool
/// elements in `i`; the other vector is empty.
struct Tensor {
  std::vector<int64_t> shape;
  mlir::Type elementType;
  std::vector<double> f;
  std::vector<int64_t> i;

  /// A zero-filled tensor.
  static Tensor zeros(llvm::ArrayRef<int64_t> shape, mlir::Type elementType);

  int64_t numElements() const;
  bool isFloat() const;
  /// Element `k` (flat index) as a double.
  double at(int64_t k) const { return isFloat() ? f[k] : double(i[k]); }
};

/// Runs `func` on `inputs` (one per argument; element types must match the
/// argument types and shapes their static dims). Returns the values of the
/// func.return operands, or failure with `error` naming the op that could not
/// be evaluated and why.
mlir::FailureOr<std::vector<Tensor>> evaluate(mlir::func::FuncOp func,
                                              llvm::ArrayRef<Tensor> inputs,
                                              std::string &error);

} // namespace moec::eval

#endif // MOEC_EVAL_EVALUATOR_H
