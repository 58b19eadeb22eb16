//===- TensorParallel.cpp - Megatron splits of the dense layers -----------===//
//
// Rewrites each region analyzeTensorParallel found to its per-rank form.
// Inside a region every value has its local shape; at its edges:
//   - a weight (constant) is cut per rank with moe.tp_slice (or sliced with
//     shard.all_slice when the split dims are merged),
//   - a function argument or a boundary op's result is sliced
//     (shard.all_slice: no data moves),
//   - a value a boundary op reads whole is all-gathered,
//   - a row-parallel matmul's partial sums are all-reduced.
//
//===----------------------------------------------------------------------===//

#include "TensorParallel.h"

#include "moec/Analysis/Mesh.h"
#include "moec/Analysis/TokenDims.h"
#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/SmallPtrSet.h"

using namespace mlir;
using namespace moec;

void moec::fixStaticShapes(func::FuncOp func,
                           function_ref<bool(Value)> isLocal) {
  OpBuilder b(func.getContext());
  func.walk([&](Operation *op) {
    if (auto e = dyn_cast<tensor::ExpandShapeOp>(op)) {
      if (isLocal(e.getResult()))
        e.setStaticOutputShape(e.getResultType().getShape());
    } else if (auto s = dyn_cast<tensor::ExtractSliceOp>(op)) {
      // Rank-preserving, the split dims whole (the analysis checked): the
      // sizes are the local result's.
      if (isLocal(s.getResult()))
        s.setStaticSizes(s.getResultType().getShape());
    } else if (auto r = dyn_cast<tensor::ReshapeOp>(op)) {
      if (!isLocal(r.getResult()))
        return;
      auto shapeT = cast<RankedTensorType>(r.getShape().getType());
      b.setInsertionPoint(r);
      SmallVector<int64_t> dims(r.getResultType().getShape());
      auto c = arith::ConstantOp::create(
          b, r.getLoc(),
          DenseIntElementsAttr::get(shapeT, ArrayRef<int64_t>(dims)));
      r.getShapeMutable().assign(c);
    }
  });
}

namespace {

/// One region's rewrite.
class RegionRewriter {
public:
  /// `index`: the program order of the function's ops before any rewrite.
  RegionRewriter(func::FuncOp func, const SplitRegion &region,
                 ArrayRef<int16_t> axes, int64_t tp,
                 const DenseMap<Operation *, int64_t> &index)
      : r(region), top(func.getBody().front()), b(func.getContext()),
        axes(axes), tp(tp), index(index) {}
  /// Rewrites the region; adds the values that now have local types to
  /// `local`.
  void run(DenseSet<Value> &local);

private:
  /// The shape in which the split dims of `d` are one dim ([outer, rest]
  /// or [rest], the split one at `dim`).
  static SmallVector<int64_t> viewShape(ArrayRef<int64_t> shape, TokenDims d,
                                        int64_t &dim);
  Value reshape(Location loc, Value v, ArrayRef<int64_t> shape);
  /// This rank's part of the whole value `v`, split as `d`.
  Value slice(Location loc, Value v, TokenDims d);
  /// The whole value of this rank's part `v` (global shape `full`).
  Value gather(Location loc, Value v, TokenDims d, RankedTensorType full);
  RankedTensorType localType(Type full, TokenDims d);
  bool atBoundary(OpOperand &u) {
    return r.boundaries.contains(top.findAncestorOpInBlock(*u.getOwner()));
  }

  const SplitRegion &r;
  Block &top;
  OpBuilder b;
  SmallVector<int16_t> axes;
  int64_t tp;
  const DenseMap<Operation *, int64_t> &index;
  SmallPtrSet<Operation *, 16> created; ///< the ops this rewrite made
  SmallVector<Operation *> sourceOps;   ///< the local copies of sources
};

} // namespace

SmallVector<int64_t> RegionRewriter::viewShape(ArrayRef<int64_t> shape,
                                               TokenDims d, int64_t &dim) {
  SmallVector<int64_t> v(shape.begin(), shape.begin() + d.start);
  int64_t merged = 1;
  for (int64_t k = d.start; k < d.start + d.count; ++k)
    merged *= shape[k];
  if (d.outer > 1) {
    v.push_back(d.outer);
    merged /= d.outer;
  }
  dim = int64_t(v.size());
  v.push_back(merged);
  v.append(shape.begin() + d.start + d.count, shape.end());
  return v;
}

Value RegionRewriter::reshape(Location loc, Value v, ArrayRef<int64_t> shape) {
  auto t = cast<RankedTensorType>(v.getType());
  if (t.getShape() == shape)
    return v;
  auto shapeT = RankedTensorType::get({int64_t(shape.size())}, b.getI64Type());
  auto c = arith::ConstantOp::create(b, loc,
                                     DenseIntElementsAttr::get(shapeT, shape));
  auto op = tensor::ReshapeOp::create(
      b, loc, RankedTensorType::get(shape, t.getElementType()), v, c);
  created.insert(c);
  created.insert(op);
  return op;
}

RankedTensorType RegionRewriter::localType(Type full, TokenDims d) {
  auto t = cast<RankedTensorType>(full);
  std::string why;
  // The analysis only keeps facts whose split comes out even.
  SmallVector<int64_t> shape = *localShape(t.getShape(), d, tp, why);
  return RankedTensorType::get(shape, t.getElementType(), t.getEncoding());
}

Value RegionRewriter::slice(Location loc, Value v, TokenDims d) {
  auto t = cast<RankedTensorType>(v.getType());
  int64_t dim;
  SmallVector<int64_t> view = viewShape(t.getShape(), d, dim);
  Value x = reshape(loc, v, view);
  view[dim] /= tp;
  auto s = shard::AllSliceOp::create(
      b, loc, RankedTensorType::get(view, t.getElementType()), x, kGridName,
      ArrayRef<int16_t>(axes), dim);
  s->setAttr(kTensorParallelAttr, b.getUnitAttr());
  created.insert(s);
  return reshape(loc, s, localType(t, d).getShape());
}

Value RegionRewriter::gather(Location loc, Value v, TokenDims d,
                             RankedTensorType full) {
  int64_t dim;
  SmallVector<int64_t> view = viewShape(full.getShape(), d, dim);
  SmallVector<int64_t> local(view);
  local[dim] /= tp;
  Value x = reshape(loc, v, local);
  auto g = shard::AllGatherOp::create(
      b, loc, RankedTensorType::get(view, full.getElementType()), kGridName,
      ArrayRef<int16_t>(axes), x, APInt(64, dim));
  g->setAttr(kTensorParallelAttr, b.getUnitAttr());
  created.insert(g);
  return reshape(loc, g, full.getShape());
}

void RegionRewriter::run(DenseSet<Value> &local) {
  // Partial sums: all-reduced right after the matmul.
  for (Operation *p : r.partials) {
    Value res = p->getResult(0);
    b.setInsertionPointAfter(p);
    auto sum = shard::AllReduceOp::create(
        b, p->getLoc(), res.getType(), kGridName, ArrayRef<int16_t>(axes), res);
    sum->setAttr(kTensorParallelAttr, b.getUnitAttr());
    res.replaceAllUsesExcept(sum, sum);
  }
  // Values that come whole into the region (weights, arguments, boundary
  // results) and values it computes on locally.
  SmallVector<std::pair<Value, TokenDims>> sources, computed;
  for (auto &[v, d] : r.facts) {
    Operation *def = v.getDefiningOp();
    if (!def || isa<arith::ConstantOp>(def) || !r.ops.contains(def))
      sources.push_back({v, d});
    else
      computed.push_back({v, d});
  }
  // In program order, so that the output does not depend on pointers.
  auto key = [&](Value v) {
    if (auto a = dyn_cast<BlockArgument>(v))
      return std::make_pair(int64_t(0), int64_t(a.getArgNumber()));
    return std::make_pair(index.lookup(v.getDefiningOp()),
                          int64_t(cast<OpResult>(v).getResultNumber()));
  };
  auto byOrder = [&](const std::pair<Value, TokenDims> &x,
                     const std::pair<Value, TokenDims> &y) {
    return key(x.first) < key(y.first);
  };
  llvm::sort(sources, byOrder);
  llvm::sort(computed, byOrder);
  for (auto &[v, d] : sources) {
    Location loc = v.getLoc();
    b.setInsertionPointAfterValue(v);
    Value local;
    auto c = v.getDefiningOp<arith::ConstantOp>();
    auto dense = c ? dyn_cast<DenseElementsAttr>(c.getValue()) : nullptr;
    if (dense && dense.isSplat()) {
      local = arith::ConstantOp::create(
          b, loc, dense.resizeSplat(localType(v.getType(), d)));
    } else if (c && d.count == 1 && d.outer == 1) {
      local = moe::TpSliceOp::create(b, loc, localType(v.getType(), d), v,
                                     kGridName, axes, uint64_t(d.start));
    } else {
      local = slice(loc, v, d);
    }
    created.insert(local.getDefiningOp());
    sourceOps.push_back(local.getDefiningOp());
    v.replaceUsesWithIf(local, [&](OpOperand &u) {
      return !created.contains(u.getOwner()) &&
             r.ops.contains(top.findAncestorOpInBlock(*u.getOwner()));
    });
  }
  // Local types, then whole values for the boundary ops that read them.
  SmallVector<RankedTensorType> fullTypes;
  for (auto &[v, d] : computed) {
    fullTypes.push_back(cast<RankedTensorType>(v.getType()));
    v.setType(localType(v.getType(), d));
    local.insert(v);
  }
  for (auto [i, vd] : llvm::enumerate(computed)) {
    auto [v, d] = vd;
    SmallVector<OpOperand *> whole;
    for (OpOperand &u : v.getUses())
      if (!created.contains(u.getOwner()) && atBoundary(u))
        whole.push_back(&u);
    if (whole.empty())
      continue;
    b.setInsertionPointAfterValue(v);
    Value g = gather(v.getLoc(), v, d, fullTypes[i]);
    for (OpOperand *u : whole)
      u->set(g);
  }
  // A source whose users all became boundaries needs no local copy.
  for (Operation *op : llvm::reverse(sourceOps)) {
    while (op && op->use_empty()) {
      Operation *in =
          op->getNumOperands() ? op->getOperand(0).getDefiningOp() : nullptr;
      op->erase();
      op = in && created.contains(in) ? in : nullptr;
    }
  }
}

void moec::splitTensorParallel(func::FuncOp func, ArrayRef<int16_t> tpAxes,
                               int64_t tp) {
  SmallVector<SplitRegion> regions = analyzeTensorParallel(func, tp);
  if (regions.empty())
    return;
  // Block arguments sort first (0); the regions' values are all defined by
  // ops that exist before the rewrites.
  DenseMap<Operation *, int64_t> index;
  for (Operation &op : func.getBody().front())
    index[&op] = int64_t(index.size()) + 1;
  DenseSet<Value> local;
  for (const SplitRegion &region : regions)
    RegionRewriter(func, region, tpAxes, tp, index).run(local);
  fixStaticShapes(func, [&](Value v) { return local.contains(v); });
}
