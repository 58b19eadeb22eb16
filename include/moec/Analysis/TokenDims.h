//===- TokenDims.h - which dims of each tensor carry tokens -----*- C++ -*-===//
//
// The analysis that finds which dimensions of every tensor carry tokens, for
// the token split over dp x ep of a mesh (Mesh.h). Used by moe-shard and
// moe-partition.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_ANALYSIS_TOKENDIMS_H
#define MOEC_ANALYSIS_TOKENDIMS_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

#include <string>

namespace moec {

/// The dims of a tensor that the token split cuts: `count` consecutive dims
/// from `start`, split as one merged dim (contiguous blocks of rows). Only
/// the leading token dims the split needs are kept: with tokens [B, S] split
/// n ways and n dividing B, that is B alone (whole sequences per rank), so
/// ops may move S or reduce over it (attention).
struct TokenDims {
  int64_t start = 0;
  int64_t count = 1;
  bool operator==(const TokenDims &o) const {
    return start == o.start && count == o.count;
  }
  bool operator!=(const TokenDims &o) const { return !(*this == o); }
};

/// Finds the token dims of every value of `func` that carries tokens, for
/// a split of the tokens `n` ways, starting from the MoE ops and following
/// the dense ops both ways. Emits an error naming the op and returns
/// failure when an op cannot be split along tokens (a reduction over the
/// split dims, a constant with a token dim, an op moec does not know how to
/// split). First gives every use of a tensor.empty (or of a constant fill
/// of one) its own op, so that values sharing a CSE'd init are not tied.
mlir::FailureOr<llvm::DenseMap<mlir::Value, TokenDims>>
analyzeTokenDims(mlir::func::FuncOp func, int64_t n);

/// True when every block of `c` along `dims` (for each index of the
/// leading dims) holds the same bytes: such a constant is the same on every
/// rank after the token split.
bool isUniformAlong(mlir::arith::ConstantOp c, TokenDims dims);

/// The local shape of `shape` when its token dims are split `n` ways into
/// contiguous blocks of rows. Fails (with `why`) when a block is not a box
/// or a token dim is dynamic.
mlir::FailureOr<llvm::SmallVector<int64_t>>
localShape(llvm::ArrayRef<int64_t> shape, TokenDims dims, int64_t n,
           std::string &why);

} // namespace moec

#endif // MOEC_ANALYSIS_TOKENDIMS_H
