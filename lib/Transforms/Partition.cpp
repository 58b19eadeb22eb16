//===- Partition.cpp - moe-partition: the per-rank SPMD program -----------===//
//
// Gives every tensor that carries tokens its local shape (token dims split
// dp x ep ways into contiguous blocks), updates the static shapes ops carry
// as attributes or operands, and drops the shard.shard annotations. The
// grid gets a `moe.partitioned` unit attribute.
//
//===----------------------------------------------------------------------===//

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

/// A linalg.generic that is elementwise (all loops parallel, identity maps
/// on every operand of the result's rank).
bool isElementwise(linalg::GenericOp g) {
  if (g.getNumDpsInits() != 1 ||
      llvm::any_of(g.getIteratorTypesArray(), [](utils::IteratorType t) {
        return t != utils::IteratorType::parallel;
      }))
    return false;
  return llvm::all_of(g.getIndexingMapsArray(),
                      [](AffineMap m) { return m.isIdentity(); });
}

/// Megatron-style tensor parallelism of the dense shared-expert FFNs: the
/// first matmuls' weight columns and the last matmul's weight rows are cut
/// over the tp axis (moe.tp_slice), the elementwise ops between them work on
/// the rank's columns, and the last matmul's partial sums are all-reduced.
/// A shared expert whose shape does not fit this is left replicated.
void splitSharedExperts(func::FuncOp func, int64_t tpAxis, int64_t tp) {
  SmallVector<linalg::MatmulOp> shared;
  func.walk([&](linalg::MatmulOp m) {
    if (m->hasAttr("moe.shared_expert"))
      shared.push_back(m);
  });
  for (linalg::MatmulOp down : shared) {
    // Walk back from the down projection's input through elementwise ops to
    // the up/gate matmuls.
    // Elementwise generics and reshapes that keep the FFN dim innermost
    // (DeepSeek's exports go [T, F] -> [B, S, F] -> [T, F] around the
    // activation).
    SmallVector<Operation *> between;
    SetVector<linalg::MatmulOp> ups;
    SmallVector<Value> work{down.getInputs()[0]};
    bool ok = true;
    auto lastDim = [](Value v) {
      auto t = cast<RankedTensorType>(v.getType());
      return t.getRank() ? t.getDimSize(t.getRank() - 1) : int64_t(-1);
    };
    while (!work.empty() && ok) {
      Value v = work.pop_back_val();
      Operation *def = v.getDefiningOp();
      if (auto m = dyn_cast_or_null<linalg::MatmulOp>(def)) {
        ok = m->hasAttr("moe.shared_expert") && m != down;
        ups.insert(m);
      } else if (auto g = dyn_cast_or_null<linalg::GenericOp>(def)) {
        ok = isElementwise(g);
        if (!llvm::is_contained(between, def)) {
          between.push_back(def);
          for (Value in : g.getDpsInputs())
            work.push_back(in);
        }
      } else if (isa_and_nonnull<tensor::ReshapeOp, tensor::CollapseShapeOp,
                                 tensor::ExpandShapeOp>(def)) {
        Value src = def->getOperand(0);
        auto rt = cast<RankedTensorType>(def->getResult(0).getType());
        ok = rt.hasStaticShape() && lastDim(src) == lastDim(def->getResult(0));
        if (auto c = dyn_cast<tensor::CollapseShapeOp>(def))
          ok &= c.getReassociationIndices().back().size() == 1;
        if (auto e = dyn_cast<tensor::ExpandShapeOp>(def))
          ok &= e.getReassociationIndices().back().size() == 1;
        if (ok && !llvm::is_contained(between, def)) {
          between.push_back(def);
          work.push_back(src);
        }
      } else {
        ok = false;
      }
    }
    if (!ok || ups.empty())
      continue;
    auto constB = [](linalg::MatmulOp m) {
      return m.getInputs()[1].getDefiningOp<arith::ConstantOp>();
    };
    int64_t f =
        cast<RankedTensorType>(down.getInputs()[0].getType()).getDimSize(1);
    ok = constB(down) && f % tp == 0;
    for (linalg::MatmulOp u : ups)
      ok &= bool(constB(u));
    // Every value between must stay inside the expert: no other users.
    for (Operation *g : between)
      ok &= llvm::all_of(g->getUsers(), [&](Operation *u) {
        return u == down || llvm::is_contained(between, u);
      });
    for (linalg::MatmulOp u : ups)
      ok &= llvm::all_of(u->getUsers(), [&](Operation *x) {
        return llvm::is_contained(between, x) || x == down;
      });
    if (!ok)
      continue;

    OpBuilder b(func.getContext());
    Location loc = down.getLoc();
    IRMapping map;
    auto slice = [&](Value w, int64_t dim) -> Value {
      auto t = cast<RankedTensorType>(w.getType());
      SmallVector<int64_t> shape(t.getShape());
      shape[dim] /= tp;
      return moe::TpSliceOp::create(
          b, loc, RankedTensorType::get(shape, t.getElementType()), w,
          kGridName, uint64_t(tpAxis), uint64_t(dim));
    };
    auto zeroInit = [&](RankedTensorType t) -> Value {
      Value e =
          tensor::EmptyOp::create(b, loc, t.getShape(), t.getElementType());
      Value z =
          arith::ConstantOp::create(b, loc, b.getZeroAttr(t.getElementType()));
      return linalg::FillOp::create(b, loc, z, e).getResult(0);
    };
    auto splitType = [&](Type t) {
      auto r = cast<RankedTensorType>(t);
      SmallVector<int64_t> shape(r.getShape());
      shape.back() /= tp;
      return RankedTensorType::get(shape, r.getElementType());
    };
    // Column-split the up/gate matmuls (in program order).
    SmallVector<Operation *> order(ups.begin(), ups.end());
    order.append(between.begin(), between.end());
    llvm::sort(order, [](Operation *a, Operation *c) {
      return a->isBeforeInBlock(c);
    });
    for (Operation *op : order) {
      b.setInsertionPoint(op);
      if (auto u = dyn_cast<linalg::MatmulOp>(op)) {
        auto t = splitType(u.getResult(0).getType());
        auto m = linalg::MatmulOp::create(
            b, loc, ValueRange{u.getInputs()[0], slice(u.getInputs()[1], 1)},
            ValueRange{zeroInit(t)});
        m->setAttrs(u->getDiscardableAttrDictionary());
        map.map(u.getResult(0), m.getResult(0));
        continue;
      }
      if (isa<tensor::ReshapeOp, tensor::CollapseShapeOp,
              tensor::ExpandShapeOp>(op)) {
        auto t = splitType(op->getResult(0).getType());
        Value src = map.lookupOrDefault(op->getOperand(0));
        Value r;
        if (auto c = dyn_cast<tensor::CollapseShapeOp>(op)) {
          r = tensor::CollapseShapeOp::create(b, loc, t, src,
                                              c.getReassociationIndices());
        } else if (auto e = dyn_cast<tensor::ExpandShapeOp>(op)) {
          r = tensor::ExpandShapeOp::create(b, loc, t, src,
                                            e.getReassociationIndices());
        } else {
          auto rs = cast<tensor::ReshapeOp>(op);
          auto shapeT = cast<RankedTensorType>(rs.getShape().getType());
          Value shape = arith::ConstantOp::create(
              b, loc,
              DenseIntElementsAttr::get(shapeT,
                                        ArrayRef<int64_t>(t.getShape())));
          r = tensor::ReshapeOp::create(b, loc, t, src, shape);
        }
        map.map(op->getResult(0), r);
        continue;
      }
      auto g = cast<linalg::GenericOp>(op);
      auto t = splitType(g.getResult(0).getType());
      Value init =
          tensor::EmptyOp::create(b, loc, t.getShape(), t.getElementType());
      map.map(g.getDpsInits()[0], init);
      Operation *c = b.clone(*g, map);
      c->getResult(0).setType(t);
      map.map(g.getResult(0), c->getResult(0));
    }
    // Row-split the down matmul; all-reduce its partial sums.
    b.setInsertionPoint(down);
    auto outT = cast<RankedTensorType>(down.getResult(0).getType());
    auto m =
        linalg::MatmulOp::create(b, loc,
                                 ValueRange{map.lookup(down.getInputs()[0]),
                                            slice(down.getInputs()[1], 0)},
                                 ValueRange{zeroInit(outT)});
    m->setAttrs(down->getDiscardableAttrDictionary());
    Value sum = shard::AllReduceOp::create(b, loc, outT, kGridName.str(),
                                           ArrayRef<int16_t>{int16_t(tpAxis)},
                                           m.getResult(0));
    down.getResult(0).replaceAllUsesWith(sum);
    down->erase();
    for (Operation *op : llvm::reverse(order))
      if (op->use_empty())
        op->erase();
  }
}

/// Hybrid token split: each dp group holds whole sequences (the local
/// shapes above); every MoE layer's rows are padded and sliced over ep
/// (dispatch's tokens and indices, combine's routing weights), and the
/// combined rows (after the tp all-reduce, if any) all-gathered over ep.
LogicalResult sliceHybridRows(func::FuncOp func, const MeshSpec &spec) {
  int64_t ep = spec.size("ep");
  SmallVector<int16_t> axes{int16_t(spec.index("ep"))};
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
      return d.emitError("cannot slice the MoE layer's rows over ep: ")
             << (combine ? "dynamic token count" : "no combine");
    OpBuilder b(d);
    Location loc = d.getLoc();
    d.getTokensMutable().assign(
        sliceRows(b, loc, d.getTokens(), ep, axes, experts));
    d.getIndicesMutable().assign(
        sliceRows(b, loc, d.getIndices(), ep, axes, experts));
    b.setInsertionPoint(combine);
    combine.getWeightsMutable().assign(
        sliceRows(b, loc, combine.getWeights(), ep, axes, experts));
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
      OpBuilder b(&getContext());
      WalkResult fixed = func.walk([&](Operation *op) {
        if (auto e = dyn_cast<tensor::ExpandShapeOp>(op)) {
          e.setStaticOutputShape(e.getResultType().getShape());
        } else if (auto s = dyn_cast<tensor::ExtractSliceOp>(op)) {
          // Rank-preserving (the analysis checked): the sizes are the
          // local result's.
          if (facts->count(s.getResult()))
            s.setStaticSizes(s.getResultType().getShape());
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
      MeshSpec spec = meshSpecOf(grid);
      if (isTokenHybrid(grid) && failed(sliceHybridRows(func, spec)))
        return signalPassFailure();
      if (spec.size("tp") > 1)
        splitSharedExperts(func, spec.index("tp"), spec.size("tp"));
      func.setType(FunctionType::get(
          &getContext(), func.getBody().getArgumentTypes(),
          func.getBody().back().getTerminator()->getOperandTypes()));
    }
    grid->setAttr("moe.partitioned", UnitAttr::get(&getContext()));
  }
};
} // namespace
