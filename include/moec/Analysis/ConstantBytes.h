//===- ConstantBytes.h - the bytes of a constant tensor ---------*- C++ -*-===//
//
// Reading and making the weight constants the passes rewrite: the importer
// writes them as `dense_resource` blobs (or small `dense` attributes).
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_ANALYSIS_CONSTANTBYTES_H
#define MOEC_ANALYSIS_CONSTANTBYTES_H

#include "mlir/Dialect/Arith/IR/Arith.h"

#include <vector>

namespace moec {

/// Every element of a dense or dense_resource tensor attribute, row major,
/// splats expanded, i1 as one byte (0 or 1) per element; failure when its
/// data is not readable (an elided blob) or of another sub-byte type.
mlir::FailureOr<std::vector<char>> constantBytes(mlir::Attribute a);
inline mlir::FailureOr<std::vector<char>>
constantBytes(mlir::arith::ConstantOp c) {
  return constantBytes(c.getValue());
}

/// A dense_resource constant of `type` holding `bytes` (row major), in a
/// new blob named `name`.
mlir::Value makeBlobConstant(mlir::OpBuilder &b, mlir::Location loc,
                             mlir::RankedTensorType type,
                             const std::vector<char> &bytes,
                             llvm::StringRef name);

} // namespace moec

#endif // MOEC_ANALYSIS_CONSTANTBYTES_H
