//===- Partition.cpp - moe-partition: the per-rank SPMD program -----------===//
//
// Gives every tensor that carries tokens its local shape (token dims split
// dp x ep ways into contiguous blocks), updates the static shapes ops carry
// as attributes or operands, and drops the shard.shard annotations. The
// grid gets a `moe.partitioned` unit attribute.
//
//===----------------------------------------------------------------------===//

#include "moec/Dialect/MoE/MoEOps.h"
#include "moec/Transforms/Mesh.h"
#include "moec/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"

namespace moec {
#define GEN_PASS_DEF_MOEPARTITION
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {
struct MoEPartitionPass : moec::impl::MoEPartitionBase<MoEPartitionPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    shard::GridOp grid = getMeshGrid(module);
    if (!grid) {
      module.emitError("moe-partition needs the device grid: run moe-shard "
                       "first");
      return signalPassFailure();
    }
    if (grid->hasAttr("moe.partitioned")) {
      module.emitError("the module is partitioned already");
      return signalPassFailure();
    }
    int64_t n = meshSpecOf(grid).tokenSplit();
    for (auto func : module.getOps<func::FuncOp>()) {
      if (func.isExternal())
        continue;
      // Annotations are not needed once shapes are local.
      func.walk([](shard::ShardOp op) {
        op.getResult().replaceAllUsesWith(op.getSrc());
        op.erase();
      });
      func.walk([](shard::ShardingOp op) {
        if (op->use_empty())
          op.erase();
      });
      auto facts = analyzeTokenDims(func);
      if (failed(facts))
        return signalPassFailure();
      // The plan writer needs the global shapes of the model's inputs and
      // outputs (local shapes do not determine them).
      OpBuilder ab(&getContext());
      for (BlockArgument a : func.getArguments())
        func.setArgAttr(a.getArgNumber(), "moe.global_shape",
                        ab.getDenseI64ArrayAttr(
                            cast<ShapedType>(a.getType()).getShape()));
      for (auto [i, t] : llvm::enumerate(func.getResultTypes()))
        func.setResultAttr(i, "moe.global_shape",
                           ab.getDenseI64ArrayAttr(
                               cast<ShapedType>(t).getShape()));
      for (auto &[v, dims] : *facts) {
        auto t = cast<RankedTensorType>(v.getType());
        std::string why;
        auto shape = localShape(t.getShape(), dims, n, why);
        if (failed(shape)) {
          Operation *at = v.getDefiningOp() ? v.getDefiningOp()
                                            : func.getOperation();
          at->emitError("cannot partition: ") << why;
          return signalPassFailure();
        }
        v.setType(RankedTensorType::get(*shape, t.getElementType(),
                                        t.getEncoding()));
      }
      // Static shapes held by ops.
      OpBuilder b(&getContext());
      WalkResult fixed = func.walk([&](Operation *op) {
        if (auto e = dyn_cast<tensor::ExpandShapeOp>(op)) {
          e.setStaticOutputShape(e.getResultType().getShape());
        } else if (auto r = dyn_cast<tensor::ReshapeOp>(op)) {
          if (!facts->count(r.getResult()))
            return WalkResult::advance();
          auto shapeT = cast<RankedTensorType>(r.getShape().getType());
          b.setInsertionPoint(r);
          SmallVector<int64_t> dims(r.getResultType().getShape());
          auto c = arith::ConstantOp::create(
              b, r.getLoc(),
              DenseIntElementsAttr::get(shapeT, ArrayRef<int64_t>(dims)));
          r.getShapeMutable().assign(c);
        }
        return WalkResult::advance();
      });
      if (fixed.wasInterrupted())
        return signalPassFailure();
      func.setType(FunctionType::get(
          &getContext(), func.getBody().getArgumentTypes(),
          func.getBody().back().getTerminator()->getOperandTypes()));
    }
    grid->setAttr("moe.partitioned", UnitAttr::get(&getContext()));
  }
};
} // namespace
