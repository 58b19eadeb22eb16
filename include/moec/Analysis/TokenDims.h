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
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/SmallVector.h"

#include <string>

namespace moec {

/// The dims of a tensor that the token split cuts: `count` consecutive dims
/// from `start`, split as one merged dim (contiguous blocks of rows). Only
/// the leading token dims the split needs are kept: with tokens [B, S] split
/// n ways and n dividing B, that is B alone (whole sequences per rank), so
/// ops may move S or reduce over it (attention).
///
/// The tensor-parallel split (heads, FFN columns) also reaches dims that
/// merge an unsplit outer dim with the split one ([B, H] -> [B * H] with H
/// split): `outer` > 1 says the merged dim is [outer, rest] with `rest`
/// split (then `count` is 1). The token split always has `outer` 1.
struct TokenDims {
  int64_t start = 0;
  int64_t count = 1;
  int64_t outer = 1;
  bool operator==(const TokenDims &o) const {
    return start == o.start && count == o.count && outer == o.outer;
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

/// A connected part of a function that runs split `n` ways over the tp
/// axis (Megatron tensor parallelism), grown from one column-split matmul.
struct SplitRegion {
  /// The split dims of every value the region computes on locally.
  llvm::DenseMap<mlir::Value, TokenDims> facts;
  /// Ops that see whole values: their split operands are all-gathered,
  /// their split results sliced (func.return, norms over a split dim, the
  /// MoE ops, GQA's repeat of too few KV heads).
  llvm::SetVector<mlir::Operation *> boundaries;
  /// Contractions over a split dim (row-parallel matmuls): their results
  /// are partial sums, all-reduced over tp.
  llvm::SetVector<mlir::Operation *> partials;
  /// The ops that run on local values (the partials among them).
  llvm::SetVector<mlir::Operation *> ops;
  /// Sequence-parallel regions (analyzeSequenceParallel) only: the MoE
  /// layers' row slices whose input the region computes (they go away),
  /// their row all-gathers whose result it reads (it reads their input
  /// instead) and the all-reduces whose result it reads (reduce-scattered
  /// instead). The rows are split over the region's axes, not tp.
  bool rows = false;
  llvm::SetVector<mlir::Operation *> rowSlices, rowGathers, reduceScatters;
};

/// The tensor-parallel regions of `func` for `n` = tp ranks: each linalg
/// matmul with a weight (a constant, or a transpose of one) of
/// columns divisible by `n` seeds a region, grown through the ops that can
/// run on a split of their dims; the region is kept when it ends in a
/// row-parallel matmul (attention's Q/K/V then output projection, an MLP's
/// up then down projection) or only at the function's results (the LM
/// head, whose logits are gathered). Regions do not share values.
llvm::SmallVector<SplitRegion, 0> analyzeTensorParallel(mlir::func::FuncOp func,
                                                        int64_t n);

/// Megatron sequence parallelism on the rank-local program, after the
/// tensor-parallel split: the region that can run on this rank's block of
/// the rows (`n` ways over grid `axes`, the dense layers' tp axes, which
/// the MoE layers' rows are sliced over too), grown from the rows entering
/// the MoE layers' row slices over `axes` and the rows their all-gathers
/// return (not when those are padded). It
/// ends at the ops of the tensor-parallel regions (`tpOps`), at ops that
/// mix rows (attention), at the results, and at the MoE ops; it takes in
/// the all-reduces over `axes` (row-parallel partial sums) and the MoE
/// layers' row all-gathers whose results it reads. Empty (no facts) when
/// there is nothing to grow from.
SplitRegion
analyzeSequenceParallel(mlir::func::FuncOp func, int64_t n,
                        llvm::ArrayRef<int16_t> axes,
                        const llvm::DenseSet<mlir::Operation *> &tpOps);

/// True when every block of `c` along `dims` (for each index of the
/// leading dims) holds the same bytes: such a constant is the same on every
/// rank after the token split.
bool isUniformAlong(mlir::arith::ConstantOp c, TokenDims dims);

/// The local shape of `shape` when its token dims are split `n` ways into
/// contiguous blocks of rows (of the inner part, with `outer` > 1). Fails (with
/// `why`) when a block is not a box or a token dim is dynamic.
mlir::FailureOr<llvm::SmallVector<int64_t>>
localShape(llvm::ArrayRef<int64_t> shape, TokenDims dims, int64_t n,
           std::string &why);

} // namespace moec

#endif // MOEC_ANALYSIS_TOKENDIMS_H
