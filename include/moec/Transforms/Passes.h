//===- Passes.h - moec transformation passes --------------------*- C++ -*-===//

#ifndef MOEC_TRANSFORMS_PASSES_H
#define MOEC_TRANSFORMS_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Pass/Pass.h"
#include "moec/Dialect/MoE/MoEDialect.h"

namespace moec {

#define GEN_PASS_DECL
#include "moec/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "moec/Transforms/Passes.h.inc"

/// Whether `op` (a linalg.batch_matmul) reads B transposed, [batch, n, k]:
/// moe-fold-kv-repeat's product for attention's keys, which stays a plan
/// step (`batch_matmul` with trans_b). The one definition of those maps.
bool isBatchMatmulTransB(mlir::Operation *op);

} // namespace moec

#endif // MOEC_TRANSFORMS_PASSES_H
