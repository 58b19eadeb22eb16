//===- TensorParallel.h - Megatron splits of the dense layers ---*- C++ -*-===//
//
// Tensor parallelism of attention, dense MLPs, shared experts and the LM
// head over the tp axis (docs/sharding.md), on the rank-local program of
// moe-partition.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_TRANSFORMS_TENSORPARALLEL_H
#define MOEC_TRANSFORMS_TENSORPARALLEL_H

#include "moec/Analysis/TokenDims.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLFunctionalExtras.h"

namespace moec {

/// Splits every tensor-parallel region of `func` (analyzeTensorParallel)
/// `tp` ways over grid axes `tpAxes` (row-major): weights cut per rank
/// (moe.tp_slice), values given their local shapes, shard.all_reduce after the
/// partial sums of row-parallel matmuls, shard.all_gather where a boundary op
/// needs a whole value and shard.all_slice where it makes one.
/// With `tpOps`, adds the ops of the regions (those that now run on
/// local values and those the rewrite made) to it.
void splitTensorParallel(mlir::func::FuncOp func,
                         llvm::ArrayRef<int16_t> tpAxes, int64_t tp,
                         llvm::DenseSet<mlir::Operation *> *tpOps = nullptr);

/// What Megatron sequence parallelism changes in the bytes one rank moves,
/// in whole values (each collective over n ranks moves (n-1)/n of its
/// value per rank, a ring all-reduce twice that): `saved` counts an
/// all-reduce turned reduce-scatter and an MoE row all-gather dropped,
/// `added` the all-gathers of the rows before the ops that need them whole
/// (and a reduce-scatter beside an all-reduce that stays).
struct SequenceParallelGain {
  int64_t saved = 0, added = 0;
  int64_t reduceScatters = 0, gathers = 0;
  bool applied = false;
};
SequenceParallelGain sequenceParallelGain(mlir::func::FuncOp func,
                                          const SplitRegion &region);

/// Megatron sequence parallelism (docs/sharding.md) after the tensor-parallel
/// split (`tpOps` from splitTensorParallel): the region analyzeSequenceParallel
/// finds runs on this rank's block of the rows over `axes` (`n` ranks) when
/// that moves fewer bytes: the all-reduces it reads become reduce-scatters,
/// the MoE layers' row slices and row all-gathers inside it go away, and
/// the ops after it that need whole rows (attention's projections, the LM
/// head) read an all-gather.
SequenceParallelGain
splitSequenceParallel(mlir::func::FuncOp func, llvm::ArrayRef<int16_t> axes,
                      int64_t n,
                      const llvm::DenseSet<mlir::Operation *> &tpOps);

/// Updates the static shapes ops hold (expand_shape's output shape,
/// extract_slice's sizes, tensor.reshape's shape operand) for the ops whose
/// result `isLocal` says was given a local type.
void fixStaticShapes(mlir::func::FuncOp func,
                     llvm::function_ref<bool(mlir::Value)> isLocal);

} // namespace moec

#endif // MOEC_TRANSFORMS_TENSORPARALLEL_H
