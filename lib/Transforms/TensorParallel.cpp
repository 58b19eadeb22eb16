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
#include "llvm/Support/MathExtras.h"

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
        axes(axes), tp(tp), index(index),
        attr(region.rows ? kSequenceParallelAttr : kTensorParallelAttr) {}
  /// Rewrites the region; adds the values that now have local types to
  /// `local`.
  void run(DenseSet<Value> &local);
  /// The ops this rewrite made.
  const SmallPtrSet<Operation *, 16> &createdOps() const { return created; }

private:
  /// The shape in which the split dims of `d` are one dim ([outer, rest]
  /// or [rest], the split one at `dim`).
  static SmallVector<int64_t> viewShape(ArrayRef<int64_t> shape, TokenDims d,
                                        int64_t &dim);
  Value reshape(Location loc, Value v, ArrayRef<int64_t> shape);
  /// This rank's part of the whole value `v`, split as `d`, made by the
  /// collective `make` builds on `v` viewed with the split dims as one
  /// (`dim`), of local type `type` in that view.
  Value
  toLocal(Location loc, Value v, TokenDims d,
          function_ref<Operation *(RankedTensorType type, Value x, int64_t dim)>
              make);
  /// This rank's part of the whole value `v`, split as `d`.
  Value slice(Location loc, Value v, TokenDims d);
  /// The whole value of this rank's part `v` (global shape `full`).
  Value gather(Location loc, Value v, TokenDims d, RankedTensorType full);
  /// This rank's part of the sum over the ranks of `v` (whole partial
  /// sums), split as `d`.
  Value reduceScatter(Location loc, Value v, TokenDims d);
  /// A source of a rows region that is not sliced: this rank's block of a
  /// reduce-scattered all-reduce or of a replaced row all-gather.
  Value rowsEdge(Location loc, Operation *def, Value v, TokenDims d);
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
  StringRef attr; ///< marks the collectives this rewrite makes
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

Value RegionRewriter::toLocal(
    Location loc, Value v, TokenDims d,
    function_ref<Operation *(RankedTensorType, Value, int64_t)> make) {
  auto t = cast<RankedTensorType>(v.getType());
  int64_t dim;
  SmallVector<int64_t> view = viewShape(t.getShape(), d, dim);
  Value x = reshape(loc, v, view);
  view[dim] /= tp;
  Operation *op = make(RankedTensorType::get(view, t.getElementType()), x, dim);
  op->setAttr(attr, b.getUnitAttr());
  created.insert(op);
  return reshape(loc, op->getResult(0), localType(t, d).getShape());
}

Value RegionRewriter::slice(Location loc, Value v, TokenDims d) {
  return toLocal(loc, v, d, [&](RankedTensorType type, Value x, int64_t dim) {
    return shard::AllSliceOp::create(b, loc, type, x, kGridName,
                                     ArrayRef<int16_t>(axes), dim)
        .getOperation();
  });
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
  g->setAttr(attr, b.getUnitAttr());
  created.insert(g);
  return reshape(loc, g, full.getShape());
}

Value RegionRewriter::reduceScatter(Location loc, Value v, TokenDims d) {
  return toLocal(loc, v, d, [&](RankedTensorType type, Value x, int64_t dim) {
    return shard::ReduceScatterOp::create(
               b, loc, type, kGridName, ArrayRef<int16_t>(axes), x,
               shard::ReductionKind::Sum, APInt(64, dim))
        .getOperation();
  });
}

Value RegionRewriter::rowsEdge(Location loc, Operation *def, Value v,
                               TokenDims d) {
  if (r.reduceScatters.contains(def))
    return reduceScatter(loc, cast<shard::AllReduceOp>(def).getInput(), d);
  if (!r.rowGathers.contains(def))
    return nullptr;
  // The gathered rows are this rank's block already.
  return reshape(loc, cast<shard::AllGatherOp>(def).getInput(),
                 localType(v.getType(), d).getShape());
}

void RegionRewriter::run(DenseSet<Value> &local) {
  // Partial sums: all-reduced right after the matmul.
  for (Operation *p : r.partials) {
    Value res = p->getResult(0);
    b.setInsertionPointAfter(p);
    auto sum = shard::AllReduceOp::create(
        b, p->getLoc(), res.getType(), kGridName, ArrayRef<int16_t>(axes), res);
    sum->setAttr(attr, b.getUnitAttr());
    res.replaceAllUsesExcept(sum, sum);
  }
  // Values that come whole into the region (weights, arguments, boundary
  // results) and values it computes on locally.
  SmallVector<std::pair<Value, TokenDims>> sources, computed;
  for (auto &[v, d] : r.facts) {
    Operation *def = v.getDefiningOp();
    // A packed weight (moe.dequantize) comes whole like a constant: each
    // rank dequantizes all of it and takes its block (shard.all_slice).
    if (!def || isa<arith::ConstantOp, moe::DequantizeOp>(def) ||
        !r.ops.contains(def) || r.rowGathers.contains(def) ||
        r.reduceScatters.contains(def))
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
    Value edge = r.rows ? rowsEdge(loc, v.getDefiningOp(), v, d) : Value();
    if (edge) {
      local = edge;
    } else if (dense && dense.isSplat()) {
      local = arith::ConstantOp::create(
          b, loc, dense.resizeSplat(localType(v.getType(), d)));
    } else if (c && !r.rows && d.count == 1 && d.outer == 1) {
      // Weights are cut at compile time; a rows region's constants
      // (rotary tables) are sliced at run time (no data moves).
      local = moe::TpSliceOp::create(b, loc, localType(v.getType(), d), v,
                                     kGridName, axes, uint64_t(d.start));
    } else {
      local = slice(loc, v, d);
    }
    // An edge may be a value of the program itself (the input of a
    // replaced all-gather): only the ops made here are the rewrite's.
    Operation *op = local.getDefiningOp();
    if (op && !edge)
      created.insert(op);
    if (op && created.contains(op))
      sourceOps.push_back(op);
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
  // The MoE layers' row slices: their input is this rank's block now.
  for (Operation *op : r.rowSlices) {
    auto s = cast<shard::AllSliceOp>(op);
    b.setInsertionPoint(s);
    Value block =
        reshape(s.getLoc(), s.getInput(), s.getResult().getType().getShape());
    s.getResult().replaceAllUsesWith(block);
    s.erase();
  }
  // Reduce-scattered all-reduces and replaced all-gathers nothing else
  // reads.
  for (Operation *op :
       llvm::concat<Operation *const>(r.reduceScatters, r.rowGathers))
    if (op->use_empty())
      op->erase();
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
                               int64_t tp, DenseSet<Operation *> *tpOps) {
  SmallVector<SplitRegion, 0> regions = analyzeTensorParallel(func, tp);
  if (regions.empty())
    return;
  // Block arguments sort first (0); the regions' values are all defined by
  // ops that exist before the rewrites.
  DenseMap<Operation *, int64_t> index;
  for (Operation &op : func.getBody().front())
    index[&op] = int64_t(index.size()) + 1;
  DenseSet<Value> local;
  for (const SplitRegion &region : regions) {
    RegionRewriter rw(func, region, tpAxes, tp, index);
    rw.run(local);
    if (!tpOps)
      continue;
    tpOps->insert(region.ops.begin(), region.ops.end());
    tpOps->insert(rw.createdOps().begin(), rw.createdOps().end());
  }
  fixStaticShapes(func, [&](Value v) { return local.contains(v); });
}

/// The bytes of a static tensor type.
static int64_t bytesOf(Type t) {
  auto r = cast<RankedTensorType>(t);
  return r.getNumElements() *
         int64_t(llvm::divideCeil(r.getElementTypeBitWidth(), 8));
}

SequenceParallelGain moec::sequenceParallelGain(func::FuncOp func,
                                                const SplitRegion &r) {
  Block &top = func.getBody().front();
  auto inRegion = [&](OpOperand &u) {
    return r.ops.contains(top.findAncestorOpInBlock(*u.getOwner()));
  };
  auto onlyRegion = [&](Operation *op) {
    return llvm::all_of(op->getResult(0).getUses(), inRegion);
  };
  // Every collective over the n ranks moves (n-1)/n of its whole value per
  // rank (a ring all-reduce twice that): compared in whole values.
  SequenceParallelGain g;
  for (Operation *ar : r.reduceScatters) {
    int64_t bytes = bytesOf(ar->getResult(0).getType());
    if (onlyRegion(ar))
      g.saved += bytes; // all-reduce (2) -> reduce-scatter (1)
    else
      g.added += bytes; // both
    ++g.reduceScatters;
  }
  for (Operation *ag : r.rowGathers)
    if (onlyRegion(ag))
      g.saved += bytesOf(ag->getResult(0).getType());
  for (auto &[v, d] : r.facts) {
    Operation *def = v.getDefiningOp();
    if (!def || !r.ops.contains(def) || r.rowGathers.contains(def) ||
        r.reduceScatters.contains(def))
      continue;
    if (llvm::any_of(v.getUses(), [&](OpOperand &u) {
          return r.boundaries.contains(
              top.findAncestorOpInBlock(*u.getOwner()));
        })) {
      g.added += bytesOf(v.getType());
      ++g.gathers;
    }
  }
  return g;
}

SequenceParallelGain
moec::splitSequenceParallel(func::FuncOp func, ArrayRef<int16_t> axes,
                            int64_t n, const DenseSet<Operation *> &tpOps) {
  SplitRegion region = analyzeSequenceParallel(func, n, axes, tpOps);
  SequenceParallelGain g;
  if (region.reduceScatters.empty())
    return g;
  g = sequenceParallelGain(func, region);
  if (g.saved <= g.added)
    return g;
  DenseMap<Operation *, int64_t> index;
  for (Operation &op : func.getBody().front())
    index[&op] = int64_t(index.size()) + 1;
  DenseSet<Value> local;
  RegionRewriter(func, region, axes, n, index).run(local);
  fixStaticShapes(func, [&](Value v) { return local.contains(v); });
  g.applied = true;
  return g;
}
