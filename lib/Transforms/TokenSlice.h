//===- TokenSlice.h - slicing MoE rows over ranks ---------------*- C++ -*-===//
//
// Sequence-parallel MoE (docs/sharding.md): the rows entering a MoE layer are
// padded to a multiple of the ranks and sliced, the layer's result rows
// all-gathered back. Shared by moe-shard (rows sliced over dp x ep before
// the experts are rewritten) and moe-partition (hybrid: rows of each dp
// group sliced over ep, on the rank-local shapes).
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_TRANSFORMS_TOKENSLICE_H
#define MOEC_TRANSFORMS_TOKENSLICE_H

#include "mlir/IR/Builders.h"

namespace moec {

/// Rows of a [t, ...] tensor sliced `n` ways: t padded to a multiple of n.
inline int64_t paddedRows(int64_t t, int64_t n) { return (t + n - 1) / n * n; }

/// This rank's block of `v` ([t, ...]) over the grid `axes` (`n` ranks):
/// `v` padded to paddedRows(t, n) rows (zero rows for floats; for integer
/// expert ids, padding row r and column j get (r * cols + j) mod `experts`,
/// k distinct experts per row, spread over the experts), then
/// shard.all_slice along dim 0.
mlir::Value sliceRows(mlir::OpBuilder &b, mlir::Location loc, mlir::Value v,
                      int64_t n, llvm::ArrayRef<int16_t> axes, int64_t experts);

/// The type of this rank's block of a [t, ...] tensor sliced `n` ways:
/// [paddedRows(t, n) / n, ...].
mlir::RankedTensorType localRowsType(mlir::Type rows, int64_t n);

/// The inverse of sliceRows: replaces every use of `rows` (this rank's
/// block, [paddedRows(t, n) / n, ...]) with its shard.all_gather over
/// `axes` along dim 0, inserted after its definition and cut to the first
/// `t` rows when padded.
void gatherRowUses(mlir::Value rows, int64_t n, int64_t t,
                   llvm::ArrayRef<int16_t> axes);

} // namespace moec

#endif // MOEC_TRANSFORMS_TOKENSLICE_H
