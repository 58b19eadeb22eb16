//===- TensorParallel.h - Megatron splits of the dense layers ---*- C++ -*-===//
//
// Tensor parallelism of attention, dense MLPs, shared experts and the LM
// head over the tp axis (docs/sharding.md), on the rank-local program of
// moe-partition.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_TRANSFORMS_TENSORPARALLEL_H
#define MOEC_TRANSFORMS_TENSORPARALLEL_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"

namespace moec {

/// Splits every tensor-parallel region of `func` (analyzeTensorParallel)
/// `tp` ways over grid axes `tpAxes` (row-major): weights cut per rank
/// (moe.tp_slice), values given their local shapes, shard.all_reduce after the
/// partial sums of row-parallel matmuls, shard.all_gather where a boundary op
/// needs a whole value and shard.all_slice where it makes one.
void splitTensorParallel(mlir::func::FuncOp func,
                         llvm::ArrayRef<int16_t> tpAxes, int64_t tp);

/// Updates the static shapes ops hold (expand_shape's output shape,
/// extract_slice's sizes, tensor.reshape's shape operand) for the ops whose
/// result `isLocal` says was given a local type.
void fixStaticShapes(mlir::func::FuncOp func,
                     llvm::function_ref<bool(mlir::Value)> isLocal);

} // namespace moec

#endif // MOEC_TRANSFORMS_TENSORPARALLEL_H
