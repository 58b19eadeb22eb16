//===- Evaluator.h - reference interpreter for moec's IR --------*- C++ -*-===//
//
// A plain C++ interpreter of the IR the importer and the passes produce
// (arith, math, linalg, tensor and moe ops on tensors). It is the independent
// check that moec's IR computes the same function as onnxruntime on the
// original ONNX file; it is written for clarity, not speed.
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

/// A tensor value. Float elements live in `f` (rounded to the element type's
/// precision after every operation), integer, index and bool elements in `i`.
struct Tensor {
  std::vector<int64_t> shape;
  mlir::Type elementType;
  std::vector<double> f;
  std::vector<int64_t> i;

  int64_t numElements() const;
  bool isFloat() const;
};

/// Runs `func` on `inputs` (one per argument, shapes matching the argument
/// types). Returns the results, or std::nullopt with `error` naming the op
/// that could not be evaluated and why.
std::optional<std::vector<Tensor>> evaluate(mlir::func::FuncOp func,
                                            llvm::ArrayRef<Tensor> inputs,
                                            std::string &error);

} // namespace moec::eval

#endif // MOEC_EVAL_EVALUATOR_H
