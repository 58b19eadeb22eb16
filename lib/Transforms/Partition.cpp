//===- Partition.cpp - moe-partition: the per-rank SPMD program -----------===//
//
// Gives every tensor that carries tokens its local shape (token dims split
// dp x ep ways into contiguous blocks), updates the static shapes ops carry
// as attributes or operands, and drops the shard.shard annotations. The
// grid gets a `moe.partitioned` unit attribute.
//
//===----------------------------------------------------------------------===//

#include "TensorParallel.h"
#include "TokenSlice.h"

#include "moec/Analysis/ConstantBytes.h"
#include "moec/Analysis/Mesh.h"
#include "moec/Analysis/TokenDims.h"
#include "moec/Dialect/MoE/MoEOps.h"
#include "moec/Transforms/Passes.h"

#include "mlir/IR/DialectResourceBlobManager.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/SetVector.h"

namespace moec {
#define GEN_PASS_DEF_MOEPARTITION
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {

/// Hybrid token split: each dp group (the attention's dp on a folded grid)
/// holds whole sequences (the local shapes above); every MoE layer's rows
/// are padded and sliced over `axes` (the MoE ranks that hold the same
/// tokens: ep, or on a folded grid the attention's tp ranks among the MoE's
/// dp x ep): dispatch's tokens and indices, the routing weights (the
/// combine's, or the dispatch's for weight_input experts); the combined rows
/// (after the tp all-reduce, if any) are all-gathered back.
LogicalResult sliceHybridRows(func::FuncOp func, const MeshSpec &spec,
                              ArrayRef<int16_t> axes) {
  int64_t ep = axesSize(spec, axes);
  SmallVector<moe::DispatchOp> dispatches;
  func.walk([&](moe::DispatchOp d) { dispatches.push_back(d); });
  for (moe::DispatchOp d : dispatches) {
    moe::CombineOp combine;
    for (Operation *u : d.getHandle().getUsers())
      if (auto c = dyn_cast<moe::CombineOp>(u))
        combine = c;
    int64_t experts = d.getPlacement().getNumExperts();
    auto tokensT = cast<RankedTensorType>(d.getTokens().getType());
    int64_t t = tokensT.getDimSize(0);
    if (!combine || ShapedType::isDynamic(t))
      return d.emitError("cannot slice the MoE layer's rows: ")
             << (combine ? "dynamic token count" : "no combine");
    OpBuilder b(d);
    Location loc = d.getLoc();
    d.getTokensMutable().assign(
        sliceRows(b, loc, d.getTokens(), ep, axes, experts));
    d.getIndicesMutable().assign(
        sliceRows(b, loc, d.getIndices(), ep, axes, experts));
    if (Value w = d.getWeights())
      d.getWeightsMutable().assign(sliceRows(b, loc, w, ep, axes, experts));
    b.setInsertionPoint(combine);
    if (Value w = combine.getWeights())
      combine.getWeightsMutable().assign(
          sliceRows(b, loc, w, ep, axes, experts));
    Value rows = combine.getResult();
    RankedTensorType localT = localRowsType(rows.getType(), ep);
    rows.setType(localT);
    if (rows.hasOneUse())
      if (auto ar = dyn_cast<shard::AllReduceOp>(*rows.getUsers().begin())) {
        ar.getResult().setType(localT);
        rows = ar.getResult();
      }
    gatherRowUses(rows, ep, t, axes);
  }
  return success();
}

struct MoEPartitionPass : moec::impl::MoEPartitionBase<MoEPartitionPass> {
  using Base::Base;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (denseTp != "megatron" && denseTp != "replicated") {
      module.emitError("moe-partition: dense-tp '")
          << denseTp << "': expected megatron or replicated";
      return signalPassFailure();
    }
    if (sequenceParallel != "auto" && sequenceParallel != "off") {
      module.emitError("moe-partition: sequence-parallel '")
          << sequenceParallel << "': expected auto or off";
      return signalPassFailure();
    }
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
    int64_t n = modelTokenSplit(grid);
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
      // Sequence-parallel MoE layers: moe-shard sliced their rows, the rest
      // is replicated and keeps its shapes.
      FailureOr<DenseMap<Value, TokenDims>> facts =
          DenseMap<Value, TokenDims>();
      if (!isTokenSliced(grid))
        facts = analyzeTokenDims(func, n);
      if (failed(facts))
        return signalPassFailure();
      // The plan writer needs the global shapes of the model's inputs and
      // outputs (local shapes do not determine them).
      OpBuilder ab(&getContext());
      for (BlockArgument a : func.getArguments())
        func.setArgAttr(
            a.getArgNumber(), "moe.global_shape",
            ab.getDenseI64ArrayAttr(cast<ShapedType>(a.getType()).getShape()));
      for (auto [i, t] : llvm::enumerate(func.getResultTypes()))
        func.setResultAttr(
            i, "moe.global_shape",
            ab.getDenseI64ArrayAttr(cast<ShapedType>(t).getShape()));
      struct LocalConstant {
        arith::ConstantOp op;
        TokenDims dims;
        SmallVector<int64_t> local;
      };
      SmallVector<LocalConstant> constants;
      for (auto &[v, dims] : *facts) {
        auto t = cast<RankedTensorType>(v.getType());
        std::string why;
        auto shape = localShape(t.getShape(), dims, n, why);
        if (failed(shape)) {
          Operation *at =
              v.getDefiningOp() ? v.getDefiningOp() : func.getOperation();
          at->emitError("cannot partition: ") << why;
          return signalPassFailure();
        }
        if (auto c = v.getDefiningOp<arith::ConstantOp>()) {
          constants.push_back({c, dims, *shape});
          continue;
        }
        v.setType(
            RankedTensorType::get(*shape, t.getElementType(), t.getEncoding()));
      }
      // Constants the same for every token block (the analysis checked):
      // the first block of the local shape.
      for (auto &[c, dims, local] : constants) {
        auto t = cast<RankedTensorType>(c.getType());
        auto lt = RankedTensorType::get(local, t.getElementType());
        OpBuilder cb(c);
        Value nc;
        if (auto d = dyn_cast<DenseElementsAttr>(c.getValue());
            d && d.isSplat()) {
          nc = arith::ConstantOp::create(cb, c.getLoc(), d.resizeSplat(lt));
        } else {
          FailureOr<std::vector<char>> bytes = constantBytes(c);
          if (failed(bytes)) {
            c.emitError("cannot partition: the constant's data is not "
                        "readable");
            return signalPassFailure();
          }
          int64_t outer = 1, mid = 1, lmid = 1;
          for (int64_t d = 0; d < dims.start; ++d)
            outer *= t.getDimSize(d);
          for (int64_t d = dims.start; d < dims.start + dims.count; ++d) {
            mid *= t.getDimSize(d);
            lmid *= local[d];
          }
          size_t inner = bytes->size() / size_t(outer * mid);
          std::vector<char> out;
          out.reserve(size_t(outer * lmid) * inner);
          for (int64_t o = 0; o < outer; ++o)
            out.insert(out.end(), bytes->begin() + o * mid * inner,
                       bytes->begin() + (o * mid + lmid) * inner);
          std::string name = "local";
          if (auto r = dyn_cast<DenseResourceElementsAttr>(c.getValue()))
            name = r.getRawHandle().getKey().str();
          nc = makeBlobConstant(cb, c.getLoc(), lt, out, name + ".local");
        }
        c.getResult().replaceAllUsesWith(nc);
        c.erase();
      }
      // Static shapes held by ops.
      fixStaticShapes(func, [&](Value v) { return facts->count(v) > 0; });
      MeshSpec spec = meshSpecOf(grid);
      if (isTokenHybrid(grid) &&
          failed(sliceHybridRows(func, spec, moeSliceAxes(grid))))
        return signalPassFailure();
      SmallVector<int16_t> tpAxes = denseTpAxes(grid);
      DenseSet<Operation *> tpOps;
      if (!tpAxes.empty() && denseTp == "megatron")
        splitTensorParallel(func, tpAxes, axesSize(spec, tpAxes), &tpOps);
      // Sequence parallelism where the MoE rows are sliced over the tp
      // ranks (a folded grid with attention tp).
      if (!tpOps.empty() && sequenceParallel == "auto" &&
          moeSliceAxes(grid) == tpAxes)
        splitSequenceParallel(func, tpAxes, axesSize(spec, tpAxes), tpOps);
      func.setType(FunctionType::get(
          &getContext(), func.getBody().getArgumentTypes(),
          func.getBody().back().getTerminator()->getOperandTypes()));
    }
    grid->setAttr("moe.partitioned", UnitAttr::get(&getContext()));
  }
};
} // namespace
