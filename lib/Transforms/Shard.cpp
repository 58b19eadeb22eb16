//===- Shard.cpp - moe-shard: the device grid and the token split ---------===//
//
// Creates `shard.grid @mesh` from the mesh spec, checks that the model can be
// split that way, and annotates it: model inputs and outputs get a
// `moe.token_split` attribute (their token dims), the tokens entering each
// MoE layer a `shard.shard` to a sharding split over dp x ep.
//
//===----------------------------------------------------------------------===//

#include "moec/Analysis/Mesh.h"
#include "moec/Analysis/TokenDims.h"
#include "moec/Dialect/MoE/MoEOps.h"
#include "moec/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"

namespace moec {
#define GEN_PASS_DEF_MOESHARD
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {

/// "model input 'x'" / "model output 'y'" from the importer's onnx.name.
std::string ioName(func::FuncOp f, unsigned i, bool result) {
  auto name = result ? f.getResultAttrOfType<StringAttr>(i, "onnx.name")
                     : f.getArgAttrOfType<StringAttr>(i, "onnx.name");
  std::string s = result ? "model output " : "model input ";
  return s + (name ? "'" + name.str() + "'" : "#" + std::to_string(i));
}

struct MoEShardPass : moec::impl::MoEShardBase<MoEShardPass> {
  using MoEShardBase::MoEShardBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MeshSpec spec;
    std::string err;
    if (!parseMeshSpec(mesh, spec, err)) {
      module.emitError(err);
      return signalPassFailure();
    }
    if (getMeshGrid(module)) {
      module.emitError("the module already has a grid @")
          << kGridName << " (moe-shard ran twice?)";
      return signalPassFailure();
    }
    MLIRContext *ctx = &getContext();
    OpBuilder b(ctx);
    b.setInsertionPointToStart(module.getBody());
    SmallVector<int64_t> shape;
    SmallVector<Attribute> names;
    for (auto &[name, size] : spec.axes) {
      shape.push_back(size);
      names.push_back(b.getStringAttr(name));
    }
    auto grid = shard::GridOp::create(b, module.getLoc(), kGridName, shape);
    grid->setAttr("moe.axes", b.getArrayAttr(names));

    int64_t n = spec.tokenSplit(), tp = spec.size("tp");
    SmallVector<int16_t> tokenAxes;
    for (StringRef a : {"dp", "ep"})
      if (spec.index(a) >= 0)
        tokenAxes.push_back(int16_t(spec.index(a)));

    for (auto func : module.getOps<func::FuncOp>()) {
      if (func.isExternal())
        continue;
      // Tensor parallelism splits each expert's FFN columns.
      WalkResult tpOk = func.walk([&](moe::ExpertsOp op) {
        int64_t f =
            cast<RankedTensorType>(op.getWGate().getType()).getDimSize(2);
        if (tp > 1 && (ShapedType::isDynamic(f) || f % tp != 0)) {
          op.emitError("tp=")
              << tp << " does not divide the expert FFN width " << f;
          return WalkResult::interrupt();
        }
        return WalkResult::advance();
      });
      if (tpOk.wasInterrupted())
        return signalPassFailure();

      auto facts = analyzeTokenDims(func, n);
      if (failed(facts))
        return signalPassFailure();
      auto check = [&](Value v, const std::string &what) -> LogicalResult {
        auto it = facts->find(v);
        if (it == facts->end())
          return success();
        std::string why;
        if (failed(localShape(cast<ShapedType>(v.getType()).getShape(),
                              it->second, n, why)))
          return func.emitError(what) << ": " << why << " (mesh " << spec.str()
                                      << " splits tokens " << n << " ways)";
        return success();
      };
      auto dimsAttr = [&](TokenDims d) {
        return b.getDenseI64ArrayAttr({d.start, d.count});
      };
      for (BlockArgument arg : func.getArguments()) {
        if (failed(check(arg, ioName(func, arg.getArgNumber(), false))))
          return signalPassFailure();
        if (auto it = facts->find(arg); it != facts->end())
          func.setArgAttr(arg.getArgNumber(), "moe.token_split",
                          dimsAttr(it->second));
      }
      auto ret = cast<func::ReturnOp>(func.getBody().back().getTerminator());
      for (OpOperand &res : ret->getOpOperands()) {
        if (failed(
                check(res.get(), ioName(func, res.getOperandNumber(), true))))
          return signalPassFailure();
        if (auto it = facts->find(res.get()); it != facts->end())
          func.setResultAttr(res.getOperandNumber(), "moe.token_split",
                             dimsAttr(it->second));
      }
      for (auto &[v, d] : *facts)
        if (failed(check(v, "a value carrying tokens")))
          return signalPassFailure();

      // Annotate the tokens entering each MoE layer.
      SmallVector<OpOperand *> annotate;
      func.walk([&](Operation *op) {
        if (auto r = dyn_cast<moe::RouteOp>(op))
          annotate.push_back(&r.getLogitsMutable());
        if (auto e = dyn_cast<moe::ExpertsOp>(op))
          annotate.push_back(&e.getTokensMutable());
      });
      for (OpOperand *operand : annotate) {
        b.setInsertionPoint(operand->getOwner());
        Location loc = operand->getOwner()->getLoc();
        auto sharding = shard::ShardingOp::create(
            b, loc, kGridName.str(),
            ArrayRef<shard::GridAxesAttr>{b.getDenseI16ArrayAttr(tokenAxes)});
        auto sh = shard::ShardOp::create(b, loc, operand->get(), sharding,
                                         /*annotate_for_users=*/true);
        operand->set(sh);
      }
    }
  }
};
} // namespace
