//===- TokenDimsAnalysis.h - the token-dims analysis, internal ---*- C++
//-*-===//
//
// The analysis behind analyzeTokenDims (TokenDims.cpp) and
// analyzeTensorParallel (TensorParallelRegions.cpp); not installed.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_LIB_ANALYSIS_TOKENDIMSANALYSIS_H
#define MOEC_LIB_ANALYSIS_TOKENDIMSANALYSIS_H

#include "moec/Analysis/TokenDims.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SetVector.h"

#include <string>

namespace moec::detail {
using namespace mlir;

class TokenDimsAnalysis {
public:
  explicit TokenDimsAnalysis(int64_t n) : n(n) {}
  LogicalResult run(func::FuncOp func);
  /// Tensor-parallel mode: grows a region from `seed` split as `dims`. An
  /// op that cannot run on the split (its visit fails) keeps no fact the
  /// visit set and becomes a boundary; values in `claimed` (other regions)
  /// are never split again.
  void grow(func::FuncOp func, Value seed, TokenDims dims,
            const DenseSet<Value> &claimed, const DenseSet<Value> &shared);
  /// Sequence-parallel (rows) mode: grows the region that runs on this
  /// rank's block of the rows, split `n` ways over grid `axes`, from the
  /// rows `seeds` (what the MoE layers' row slices read). The ops in
  /// `tpOps` (the tensor-parallel regions) and ops that cannot run on a
  /// block of the rows are boundaries; the MoE layers' row slices
  /// (rowSlices), row all-gathers (rowGathers) and the all-reduces over
  /// `axes` (reduceScatters) whose values the region reaches join it as
  /// its edges.
  void growRows(func::FuncOp func, ArrayRef<Value> seeds,
                ArrayRef<int16_t> axes, const DenseSet<Operation *> &tpOps,
                const DenseSet<Value> &shared);
  /// Rows mode, after growRows: which of the region's ops run on the rows
  /// and which whole, by the minimum cut of the bytes gathered between
  /// them (GQA's whole K/V projections read the rows the Q projection
  /// gathers anyway, rather than gathering K and V).
  void cutRows(func::FuncOp func);
  DenseMap<Value, TokenDims> facts;
  SetVector<Operation *> boundaries, partials, members;
  /// Rows mode: the edges of the region (growRows).
  SetVector<Operation *> rowSlices, rowGathers, reduceScatters;
  /// Set when a region grew more partial sums than it can close.
  bool aborted = false;
  /// The member matmuls that split their weight by columns.
  int64_t columnSplits() const;
  /// The bytes of the weights (constants) the region splits.
  int64_t splitWeightBytes() const;

private:
  /// Records `dims` for `v` (after widening over leading unit dims); errors
  /// at `at` on a conflict.
  LogicalResult set(Value v, TokenDims dims, Operation *at);
  LogicalResult visit(Operation *op);
  LogicalResult visitLinalg(linalg::LinalgOp op);
  /// Gives the token dims to the operands of `op` indexed by the token
  /// `loops` (after visitLinalg found them).
  LogicalResult applyLoops(linalg::LinalgOp op, ArrayRef<unsigned> loops,
                           int64_t outer, bool reduces);
  /// A tensor.extract in a generic's body reading a captured value that
  /// carries tokens (a gather along the experts: GatherElements).
  LogicalResult visitGather(tensor::ExtractOp ex);
  LogicalResult visitReshape(Operation *op, Value src, Value res);
  /// Rows mode: the collectives at the region's edges and the ops it stops
  /// at. Returns true when it handled `op` (its result in `result`).
  bool visitRowsEdge(Operation *op, LogicalResult &result);
  /// The growth loop of grow and growRows: visits the ops around the
  /// worklist's values; a failed visit makes a boundary.
  void expand(func::FuncOp func, const DenseSet<Value> &shared);
  /// In tensor-parallel mode: fails on a body that reads a split value
  /// from above or the index of a split loop.
  LogicalResult checkBody(linalg::LinalgOp op, ArrayRef<unsigned> loops);

  SmallVector<Value> worklist;
  int64_t n; ///< ways the tokens are split
  bool tp = false;
  /// Rows (sequence-parallel) mode.
  bool rows = false;
  SmallVector<int16_t> rowAxes;
  const DenseSet<Operation *> *tpOps = nullptr;
  const DenseSet<Value> *claimed = nullptr;
  DenseSet<Value> partialResults;
  SmallVector<Value> journal;          ///< facts the current visit set
  Operation *pendingPartial = nullptr; ///< a partial sum the visit found
  /// Why an op that mixes tokens (attention) may still fail.
  std::string hint() const {
    if (tp || rows)
      return "";
    return " (the mesh splits the tokens " + std::to_string(n) +
           " ways; ops that mix the tokens of a sequence, such as attention, "
           "need whole sequences per rank: a batch divisible by " +
           std::to_string(n) + ")";
  }
};

/// Gives every use of a tensor.empty (or of a constant fill of one) its own
/// op, so that values sharing a CSE'd init are not tied.
void unshareInits(func::FuncOp func);

/// Values of `func` computed from constants alone (`constantLike`), and
/// those of them, other than constants and tensor.empty, that more than one
/// op reads (`shared`): a region slices those per use.
void constantLikeValues(func::FuncOp func, DenseSet<Value> &constantLike,
                        DenseSet<Value> &shared);
} // namespace moec::detail

#endif // MOEC_LIB_ANALYSIS_TOKENDIMSANALYSIS_H
