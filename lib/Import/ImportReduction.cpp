//===- ImportReduction.cpp - reductions, contractions, normalization ------===//
//
// MatMul Gemm ReduceSum ReduceMean ReduceMax ArgMax Softmax
// LayerNormalization Trilu CumSum. Contractions become linalg.matmul /
// linalg.batch_matmul (the forms the lowering maps to BLAS/cuBLAS), leading
// dims collapsed; reductions linalg.reduce; Softmax linalg.softmax.
//
//===----------------------------------------------------------------------===//

#include "GraphImporter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include <limits>

using namespace mlir;
using namespace moec::onnximport;

namespace {
using Shape = SmallVector<int64_t>;

bool isDyn(int64_t d) { return ShapedType::isDynamic(d); }

/// Reshape with dynamic dims given as the product of source dims: each
/// result dim d is the product of `groups[d]` dims of `v`.
Value regroup(GraphImporter &gi, Value v,
              ArrayRef<SmallVector<int64_t>> groups) {
  OpBuilder &b = gi.builder();
  auto t = cast<RankedTensorType>(v.getType());
  Shape shape;
  SmallVector<Value> dyn;
  for (const auto &g : groups) {
    int64_t p = 1;
    bool d = false;
    for (int64_t s : g) {
      if (t.isDynamicDim(s))
        d = true;
      else
        p *= t.getDimSize(s);
    }
    if (!d) {
      shape.push_back(p);
      continue;
    }
    shape.push_back(ShapedType::kDynamic);
    Value prod = arith::ConstantIndexOp::create(b, gi.loc(), 1);
    for (int64_t s : g)
      prod = arith::MulIOp::create(b, gi.loc(), prod, gi.dim(v, s));
    dyn.push_back(prod);
  }
  return gi.reshape(v, shape, dyn);
}

Value zeroFilled(GraphImporter &gi, ArrayRef<int64_t> shape, Type elt,
                 ValueRange dyn, double value = 0.0) {
  Value init = gi.emptyTensor(shape, elt, dyn);
  Value c = gi.scalar(elt, value);
  return linalg::FillOp::create(gi.builder(), gi.loc(), ValueRange{c},
                                ValueRange{init})
      .getResult(0);
}

/// [M, K] x [K, N] -> [M, N].
Value matmul2d(GraphImporter &gi, Value a, Value b) {
  auto at = cast<RankedTensorType>(a.getType());
  auto bt = cast<RankedTensorType>(b.getType());
  Shape shape = {at.getDimSize(0), bt.getDimSize(1)};
  SmallVector<Value> dyn;
  if (isDyn(shape[0]))
    dyn.push_back(gi.dim(a, 0));
  if (isDyn(shape[1]))
    dyn.push_back(gi.dim(b, 1));
  Value init = zeroFilled(gi, shape, at.getElementType(), dyn);
  return linalg::MatmulOp::create(gi.builder(), gi.loc(), ValueRange{a, b},
                                  ValueRange{init})
      .getResult(0);
}

/// [B, M, K] x [B, K, N] -> [B, M, N].
Value batchMatmul(GraphImporter &gi, Value a, Value b) {
  auto at = cast<RankedTensorType>(a.getType());
  auto bt = cast<RankedTensorType>(b.getType());
  Shape shape = {at.getDimSize(0), at.getDimSize(1), bt.getDimSize(2)};
  SmallVector<Value> dyn;
  if (isDyn(shape[0]))
    dyn.push_back(gi.dim(a, 0));
  if (isDyn(shape[1]))
    dyn.push_back(gi.dim(a, 1));
  if (isDyn(shape[2]))
    dyn.push_back(gi.dim(b, 2));
  Value init = zeroFilled(gi, shape, at.getElementType(), dyn);
  return linalg::BatchMatmulOp::create(gi.builder(), gi.loc(), ValueRange{a, b},
                                       ValueRange{init})
      .getResult(0);
}

/// Broadcasts `v` to `shape` (numpy rules; dynamic dims of `shape` are
/// taken from `v` or `other`).
Value broadcastValue(GraphImporter &gi, Value v, ArrayRef<int64_t> shape,
                     ValueRange like) {
  auto t = cast<RankedTensorType>(v.getType());
  if (t.getShape() == shape)
    return v;
  Value init = gi.emptyLike(shape, t.getElementType(), like);
  OpBuilder &b = gi.builder();
  int64_t rank = shape.size();
  SmallVector<AffineExpr> exprs;
  for (int64_t d = 0; d < t.getRank(); ++d) {
    int64_t od = d + rank - t.getRank();
    exprs.push_back(t.getDimSize(d) == 1 && shape[od] != 1
                        ? b.getAffineConstantExpr(0)
                        : b.getAffineDimExpr(od));
  }
  SmallVector<AffineMap> maps = {AffineMap::get(rank, 0, exprs, gi.ctx()),
                                 b.getMultiDimIdentityMap(rank)};
  SmallVector<utils::IteratorType> iters(rank, utils::IteratorType::parallel);
  return linalg::GenericOp::create(
             b, gi.loc(), TypeRange{init.getType()}, ValueRange{v},
             ValueRange{init}, maps, iters,
             [](OpBuilder &bb, Location l, ValueRange args) {
               linalg::YieldOp::create(bb, l, args[0]);
             })
      .getResult(0);
}

LogicalResult importMatMul(GraphImporter &gi) {
  if (gi.numInputs() != 2)
    return gi.fail("expects 2 inputs");
  RankedTensorType at = gi.inputType(0), bt = gi.inputType(1);
  if (!isa<FloatType>(at.getElementType()) ||
      at.getElementType() != bt.getElementType())
    return gi.fail("only float operands of one element type are supported");
  Value a = gi.input(0), b = gi.input(1);
  int64_t ra = at.getRank(), rb = bt.getRank();
  if (ra == 0 || rb == 0)
    return gi.fail("operands must have rank >= 1");
  // 1-D operands become matrices and the added dim is dropped at the end.
  bool vecA = ra == 1, vecB = rb == 1;
  if (vecA)
    a = gi.reshape(a, {1, at.getDimSize(0)},
                   at.isDynamicDim(0) ? ValueRange{gi.dim(a, 0)}
                                      : ValueRange{});
  if (vecB)
    b = gi.reshape(b, {bt.getDimSize(0), 1},
                   bt.isDynamicDim(0) ? ValueRange{gi.dim(b, 0)}
                                      : ValueRange{});
  at = cast<RankedTensorType>(a.getType());
  bt = cast<RankedTensorType>(b.getType());
  ra = at.getRank();
  rb = bt.getRank();
  int64_t k = at.getDimSize(ra - 1), kb = bt.getDimSize(rb - 2);
  if (!isDyn(k) && !isDyn(kb) && k != kb)
    return gi.fail("contraction sizes differ: " + Twine(k) + " vs " +
                   Twine(kb));
  Value out;
  Shape outShape;
  SmallVector<Value> outDyn;
  if (rb == 2) {
    // [..., M, K] x [K, N]: collapse the leading dims into M.
    SmallVector<SmallVector<int64_t>> groups(2);
    for (int64_t d = 0; d < ra - 1; ++d)
      groups[0].push_back(d);
    groups[1].push_back(ra - 1);
    Value a2 = regroup(gi, a, groups);
    out = matmul2d(gi, a2, b);
    for (int64_t d = 0; d < ra - 1; ++d) {
      outShape.push_back(at.getDimSize(d));
      if (at.isDynamicDim(d))
        outDyn.push_back(gi.dim(a, d));
    }
    outShape.push_back(bt.getDimSize(1));
  } else {
    // Batched: broadcast the batch dims, collapse them into one.
    Shape batchA(at.getShape().begin(), at.getShape().end() - 2);
    Shape batchB(bt.getShape().begin(), bt.getShape().end() - 2);
    auto ta = RankedTensorType::get(batchA, at.getElementType());
    auto tb = RankedTensorType::get(batchB, bt.getElementType());
    FailureOr<Shape> batch = gi.broadcastShape({ta, tb});
    if (failed(batch))
      return failure();
    int64_t nb = batch->size();
    Shape fullA(*batch), fullB(*batch);
    fullA.append({at.getDimSize(ra - 2), k});
    fullB.append({kb, bt.getDimSize(rb - 1)});
    a = broadcastValue(gi, a, fullA, ValueRange{a, b});
    b = broadcastValue(gi, b, fullB, ValueRange{b, a});
    SmallVector<SmallVector<int64_t>> groups(3);
    for (int64_t d = 0; d < nb; ++d)
      groups[0].push_back(d);
    groups[1] = {nb};
    groups[2] = {nb + 1};
    Value a3 = regroup(gi, a, groups), b3 = regroup(gi, b, groups);
    out = batchMatmul(gi, a3, b3);
    auto fa = cast<RankedTensorType>(a.getType());
    for (int64_t d = 0; d < nb + 1; ++d) {
      outShape.push_back(fa.getDimSize(d));
      if (fa.isDynamicDim(d))
        outDyn.push_back(gi.dim(a, d));
    }
    outShape.push_back(cast<RankedTensorType>(b.getType()).getDimSize(nb + 1));
  }
  if (isDyn(outShape.back()))
    outDyn.push_back(
        gi.dim(out, cast<RankedTensorType>(out.getType()).getRank() - 1));
  // Drop the dims added for 1-D operands.
  Shape finalShape;
  SmallVector<Value> finalDyn;
  unsigned di = 0;
  int64_t n = outShape.size();
  for (int64_t d = 0; d < n; ++d) {
    Value dv = isDyn(outShape[d]) ? outDyn[di++] : Value();
    if ((vecA && d == n - 2) || (vecB && d == n - 1))
      continue;
    finalShape.push_back(outShape[d]);
    if (dv)
      finalDyn.push_back(dv);
  }
  gi.setOutput(0, gi.reshape(out, finalShape, finalDyn));
  return success();
}

LogicalResult importGemm(GraphImporter &gi) {
  if (gi.numInputs() < 2)
    return gi.fail("expects A and B");
  Value a = gi.input(0), b = gi.input(1);
  RankedTensorType at = gi.inputType(0), bt = gi.inputType(1);
  if (at.getRank() != 2 || bt.getRank() != 2)
    return gi.fail("A and B must be matrices");
  if (!isa<FloatType>(at.getElementType()) ||
      at.getElementType() != bt.getElementType())
    return gi.fail("only float operands of one element type are supported");
  bool transA = gi.intAttr("transA", 0) != 0;
  bool transB = gi.intAttr("transB", 0) != 0;
  int64_t m = at.getDimSize(transA ? 1 : 0), ka = at.getDimSize(transA ? 0 : 1);
  int64_t kb = bt.getDimSize(transB ? 1 : 0), n = bt.getDimSize(transB ? 0 : 1);
  if (!isDyn(ka) && !isDyn(kb) && ka != kb)
    return gi.fail("contraction sizes differ: " + Twine(ka) + " vs " +
                   Twine(kb));
  if (gi.hasInput(2)) {
    // C must broadcast to [M, N] without growing it.
    RankedTensorType ct = gi.inputType(2);
    if (ct.getElementType() != at.getElementType())
      return gi.fail("C has a different element type than A and B");
    if (ct.getRank() > 2)
      return gi.fail("C must have rank <= 2, got " + Twine(ct.getRank()));
    int64_t want[2] = {m, n};
    for (int64_t d = 0; d < ct.getRank(); ++d) {
      int64_t c = ct.getDimSize(d), w = want[d + 2 - ct.getRank()];
      if (c != 1 && !isDyn(c) && !isDyn(w) && c != w)
        return gi.fail("C does not broadcast to the [" + Twine(m) + ", " +
                       Twine(n) + "] result");
    }
  }
  auto transpose = [&](Value v) {
    auto t = cast<RankedTensorType>(v.getType());
    Shape s = {t.getDimSize(1), t.getDimSize(0)};
    SmallVector<Value> dyn;
    if (isDyn(s[0]))
      dyn.push_back(gi.dim(v, 1));
    if (isDyn(s[1]))
      dyn.push_back(gi.dim(v, 0));
    Value init = gi.emptyTensor(s, t.getElementType(), dyn);
    return linalg::TransposeOp::create(gi.builder(), gi.loc(), v, init,
                                       ArrayRef<int64_t>{1, 0})
        .getResult()[0];
  };
  if (transA)
    a = transpose(a);
  if (transB)
    b = transpose(b);
  Value y = matmul2d(gi, a, b);
  double alpha = gi.floatAttr("alpha", 1.0), beta = gi.floatAttr("beta", 1.0);
  Type elt = at.getElementType();
  if (alpha != 1.0) {
    FailureOr<Value> r = gi.elementwise(
        ValueRange{y}, elt, [&](OpBuilder &bb, Location l, ValueRange args) {
          Value c =
              arith::ConstantOp::create(bb, l, FloatAttr::get(elt, alpha));
          return Value(arith::MulFOp::create(bb, l, args[0], c));
        });
    y = *r;
  }
  if (gi.hasInput(2) && beta != 0.0) {
    FailureOr<Value> r = gi.elementwise(
        ValueRange{y, gi.input(2)}, elt,
        [&](OpBuilder &bb, Location l, ValueRange args) {
          Value c = args[1];
          if (beta != 1.0)
            c = arith::MulFOp::create(
                bb, l, c,
                arith::ConstantOp::create(bb, l, FloatAttr::get(elt, beta)));
          return Value(arith::AddFOp::create(bb, l, args[0], c));
        });
    if (failed(r))
      return failure();
    y = *r;
  }
  gi.setOutput(0, y);
  return success();
}

//===----------------------------------------------------------------------===//
// Reductions
//===----------------------------------------------------------------------===//

enum class ReduceKind { Sum, Mean, Max };

/// Reduces `v` over `axes` (sorted, unique); with `keepDims` the reduced dims
/// stay as size 1.
Value reduce(GraphImporter &gi, Value v, ArrayRef<int64_t> axes,
             ReduceKind kind, bool keepDims) {
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  auto t = cast<RankedTensorType>(v.getType());
  Type elt = t.getElementType();
  bool isF = isa<FloatType>(elt);
  Shape shape;
  SmallVector<Value> dyn;
  for (int64_t d = 0; d < t.getRank(); ++d) {
    if (llvm::is_contained(axes, d))
      continue;
    shape.push_back(t.getDimSize(d));
    if (t.isDynamicDim(d))
      dyn.push_back(gi.dim(v, d));
  }
  double initV = 0.0;
  if (kind == ReduceKind::Max)
    initV = isF ? -std::numeric_limits<double>::infinity()
                : double(std::numeric_limits<int64_t>::min());
  Value init = gi.emptyTensor(shape, elt, dyn);
  Value c;
  if (kind == ReduceKind::Max && !isF)
    c = arith::ConstantOp::create(
        b, loc,
        IntegerAttr::get(
            elt, APInt::getSignedMinValue(elt.getIntOrFloatBitWidth())));
  else
    c = gi.scalar(elt, initV);
  init = linalg::FillOp::create(b, loc, ValueRange{c}, ValueRange{init})
             .getResult(0);
  auto red = linalg::ReduceOp::create(
      b, loc, ValueRange{v}, ValueRange{init}, axes,
      [&](OpBuilder &bb, Location l, ValueRange args) {
        Value r;
        if (kind == ReduceKind::Max)
          r = isF ? Value(arith::MaximumFOp::create(bb, l, args[0], args[1]))
                  : Value(arith::MaxSIOp::create(bb, l, args[0], args[1]));
        else
          r = isF ? Value(arith::AddFOp::create(bb, l, args[0], args[1]))
                  : Value(arith::AddIOp::create(bb, l, args[0], args[1]));
        linalg::YieldOp::create(bb, l, r);
      });
  Value out = red.getResult(0);
  if (kind == ReduceKind::Mean) {
    Value count = arith::ConstantIndexOp::create(b, loc, 1);
    for (int64_t a : axes)
      count = arith::MulIOp::create(b, loc, count, gi.dim(v, a));
    Value countI = arith::IndexCastOp::create(b, loc, b.getI64Type(), count);
    Value countE = countI;
    if (isF)
      countE = arith::SIToFPOp::create(b, loc, elt, countI);
    else if (elt.getIntOrFloatBitWidth() < 64)
      countE = arith::TruncIOp::create(b, loc, elt, countI);
    out = *gi.elementwise(
        ValueRange{out}, elt, [&](OpBuilder &bb, Location l, ValueRange args) {
          return isF ? Value(arith::DivFOp::create(bb, l, args[0], countE))
                     : Value(arith::DivSIOp::create(bb, l, args[0], countE));
        });
  }
  if (!keepDims)
    return out;
  Shape kept;
  SmallVector<Value> keptDyn;
  for (int64_t d = 0; d < t.getRank(); ++d) {
    bool r = llvm::is_contained(axes, d);
    kept.push_back(r ? 1 : t.getDimSize(d));
    if (!r && t.isDynamicDim(d))
      keptDyn.push_back(gi.dim(v, d));
  }
  return gi.reshape(out, kept, keptDyn);
}

/// Axes of a Reduce* node: the `axes` input (ReduceSum since opset 13, the
/// other Reduce* since 18) or, in older opsets, the `axes` attribute.
FailureOr<SmallVector<int64_t>> reduceAxes(GraphImporter &gi) {
  int64_t rank = gi.inputType(0).getRank();
  std::vector<int64_t> raw;
  if (gi.hasInput(1)) {
    const HostTensor *c = gi.inputConst(1);
    if (!c) {
      (void)gi.fail("axes must be a constant");
      return failure();
    }
    for (int64_t k = 0; k < c->size(); ++k)
      raw.push_back(c->asInt(k));
  } else {
    raw = gi.intsAttr("axes");
  }
  SmallVector<int64_t> axes;
  if (raw.empty()) {
    if (gi.intAttr("noop_with_empty_axes", 0))
      return axes; // identity
    for (int64_t d = 0; d < rank; ++d)
      axes.push_back(d);
    return axes;
  }
  for (int64_t a : raw) {
    if (a < -rank || a >= rank) {
      (void)gi.fail("axis " + Twine(a) + " is out of range for rank " +
                    Twine(rank));
      return failure();
    }
    int64_t n = a < 0 ? a + rank : a;
    if (!llvm::is_contained(axes, n))
      axes.push_back(n);
  }
  llvm::sort(axes);
  return axes;
}

LogicalResult importReduce(GraphImporter &gi, ReduceKind kind) {
  FailureOr<SmallVector<int64_t>> axes = reduceAxes(gi);
  if (failed(axes))
    return failure();
  Value v = gi.input(0);
  if (axes->empty()) {
    gi.setOutput(0, v);
    return success();
  }
  gi.setOutput(0, reduce(gi, v, *axes, kind, gi.intAttr("keepdims", 1) != 0));
  return success();
}

LogicalResult importArgMax(GraphImporter &gi) {
  RankedTensorType t = gi.inputType(0);
  int64_t rank = t.getRank();
  int64_t axis = gi.intAttr("axis", 0);
  if (axis < -rank || axis >= rank)
    return gi.fail("axis " + Twine(axis) + " is out of range");
  if (axis < 0)
    axis += rank;
  bool last = gi.intAttr("select_last_index", 0) != 0;
  Type elt = t.getElementType();
  bool isF = isa<FloatType>(elt);
  if (!isF && (!isa<IntegerType>(elt) || elt.isInteger(1)))
    return gi.fail("only float and integer inputs are supported");
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value v = gi.input(0);
  Shape shape;
  SmallVector<Value> dyn;
  SmallVector<AffineExpr> outExprs;
  for (int64_t d = 0; d < rank; ++d) {
    if (d == axis)
      continue;
    shape.push_back(t.getDimSize(d));
    outExprs.push_back(b.getAffineDimExpr(d));
    if (t.isDynamicDim(d))
      dyn.push_back(gi.dim(v, d));
  }
  // The initial value never wins (the initial index -1 marks it); any
  // constant of the element type does.
  Value vals = zeroFilled(gi, shape, elt, dyn,
                          isF ? -std::numeric_limits<double>::infinity() : 0.0);
  Value idxs = zeroFilled(gi, shape, b.getI64Type(), dyn, -1);
  SmallVector<AffineMap> maps = {b.getMultiDimIdentityMap(rank),
                                 AffineMap::get(rank, 0, outExprs, gi.ctx()),
                                 AffineMap::get(rank, 0, outExprs, gi.ctx())};
  SmallVector<utils::IteratorType> iters(rank, utils::IteratorType::parallel);
  iters[axis] = utils::IteratorType::reduction;
  auto g = linalg::GenericOp::create(
      b, loc, TypeRange{vals.getType(), idxs.getType()}, ValueRange{v},
      ValueRange{vals, idxs}, maps, iters,
      [&](OpBuilder &bb, Location l, ValueRange args) {
        Value x = args[0], best = args[1], bestI = args[2];
        Value i = arith::IndexCastOp::create(
            bb, l, bb.getI64Type(), linalg::IndexOp::create(bb, l, axis));
        // Order-independent: larger value wins; on ties the first (or last)
        // index; the initial index -1 always loses.
        Value gt = isF ? Value(arith::CmpFOp::create(
                             bb, l, arith::CmpFPredicate::OGT, x, best))
                       : Value(arith::CmpIOp::create(
                             bb, l, arith::CmpIPredicate::sgt, x, best));
        Value eq = isF ? Value(arith::CmpFOp::create(
                             bb, l, arith::CmpFPredicate::OEQ, x, best))
                       : Value(arith::CmpIOp::create(
                             bb, l, arith::CmpIPredicate::eq, x, best));
        Value none = arith::CmpIOp::create(
            bb, l, arith::CmpIPredicate::slt, bestI,
            arith::ConstantOp::create(bb, l, bb.getI64IntegerAttr(0)));
        Value tieWins = arith::CmpIOp::create(
            bb, l, last ? arith::CmpIPredicate::sgt : arith::CmpIPredicate::slt,
            i, bestI);
        Value take =
            arith::OrIOp::create(bb, l, arith::OrIOp::create(bb, l, gt, none),
                                 arith::AndIOp::create(bb, l, eq, tieWins));
        linalg::YieldOp::create(
            bb, l,
            ValueRange{arith::SelectOp::create(bb, l, take, x, best),
                       arith::SelectOp::create(bb, l, take, i, bestI)});
      });
  Value out = g.getResult(1);
  if (gi.intAttr("keepdims", 1)) {
    Shape kept(t.getShape());
    kept[axis] = 1;
    out = gi.reshape(out, kept, dyn);
  }
  gi.setOutput(0, out);
  return success();
}

LogicalResult importSoftmax(GraphImporter &gi) {
  RankedTensorType t = gi.inputType(0);
  int64_t rank = t.getRank();
  int64_t axis = gi.intAttr("axis", -1);
  if (axis < -rank || axis >= rank)
    return gi.fail("axis " + Twine(axis) + " is out of range");
  if (axis < 0)
    axis += rank;
  if (!isa<FloatType>(t.getElementType()))
    return gi.fail("only float inputs are supported");
  Value v = gi.input(0);
  Value init = gi.emptyLike(t.getShape(), t.getElementType(), ValueRange{v});
  auto op = linalg::SoftmaxOp::create(gi.builder(), gi.loc(), t, v, init, axis);
  gi.setOutput(0, op.getResult()[0]);
  return success();
}

LogicalResult importLayerNorm(GraphImporter &gi) {
  if (gi.numInputs() < 1)
    return gi.fail("expects X");
  RankedTensorType t = gi.inputType(0);
  int64_t rank = t.getRank();
  int64_t axis = gi.intAttr("axis", -1);
  if (axis < -rank || axis >= rank)
    return gi.fail("axis " + Twine(axis) + " is out of range");
  if (axis < 0)
    axis += rank;
  Type elt = t.getElementType();
  if (!isa<FloatType>(elt))
    return gi.fail("only float inputs are supported");
  for (unsigned i = 1; i < 3; ++i)
    if (gi.hasInput(i) && gi.inputType(i).getElementType() != elt)
      return gi.fail(Twine(i == 1 ? "Scale" : "B") +
                     " has a different element type than X");
  // stash_type 1 (the default) computes mean and variance in f32; Mean and
  // InvStdDev have that type.
  int64_t stash = gi.intAttr("stash_type", 1);
  Type st = gi.elementType(int32_t(stash));
  if (!st || !isa<FloatType>(st))
    return gi.fail("stash_type " + Twine(stash) + " is not a float type");
  double eps = gi.floatAttr("epsilon", 1e-5);
  SmallVector<int64_t> axes;
  for (int64_t d = axis; d < rank; ++d)
    axes.push_back(d);
  Value x = gi.castTensor(gi.input(0), st);
  Value mean = reduce(gi, x, axes, ReduceKind::Mean, true);
  Value centered = *gi.elementwise(
      ValueRange{x, mean}, st, [](OpBuilder &bb, Location l, ValueRange a) {
        return Value(arith::SubFOp::create(bb, l, a[0], a[1]));
      });
  Value sq = *gi.elementwise(
      ValueRange{centered}, st, [](OpBuilder &bb, Location l, ValueRange a) {
        return Value(arith::MulFOp::create(bb, l, a[0], a[0]));
      });
  Value var = reduce(gi, sq, axes, ReduceKind::Mean, true);
  Value invStd = *gi.elementwise(
      ValueRange{var}, st, [&](OpBuilder &bb, Location l, ValueRange a) {
        Value e = arith::ConstantOp::create(bb, l, FloatAttr::get(st, eps));
        return Value(math::RsqrtOp::create(
            bb, l, arith::AddFOp::create(bb, l, a[0], e)));
      });
  Value out =
      *gi.elementwise(ValueRange{centered, invStd}, st,
                      [](OpBuilder &bb, Location l, ValueRange a) {
                        return Value(arith::MulFOp::create(bb, l, a[0], a[1]));
                      });
  out = gi.castTensor(out, elt);
  if (gi.hasInput(1)) {
    FailureOr<Value> s =
        gi.elementwise(ValueRange{out, gi.input(1)}, elt,
                       [](OpBuilder &bb, Location l, ValueRange a) {
                         return Value(arith::MulFOp::create(bb, l, a[0], a[1]));
                       });
    if (failed(s))
      return failure();
    out = *s;
  }
  if (gi.hasInput(2)) {
    FailureOr<Value> s =
        gi.elementwise(ValueRange{out, gi.input(2)}, elt,
                       [](OpBuilder &bb, Location l, ValueRange a) {
                         return Value(arith::AddFOp::create(bb, l, a[0], a[1]));
                       });
    if (failed(s))
      return failure();
    out = *s;
  }
  auto ot = cast<RankedTensorType>(out.getType());
  bool same = ot.getRank() == rank;
  for (int64_t d = 0; same && d < rank; ++d)
    same = t.isDynamicDim(d) || ot.getDimSize(d) == t.getDimSize(d);
  if (!same)
    return gi.fail("Scale or B would broadcast X to a larger shape");
  gi.setOutput(0, out);
  gi.setOutput(1, mean);
  gi.setOutput(2, invStd);
  return success();
}

LogicalResult importTrilu(GraphImporter &gi) {
  RankedTensorType t = gi.inputType(0);
  int64_t rank = t.getRank();
  if (rank < 2)
    return gi.fail("input must have rank >= 2");
  int64_t k = 0;
  // A k known only at run time is read with tensor.extract.
  Value kRuntime;
  OpBuilder &b = gi.builder();
  if (gi.hasInput(1)) {
    RankedTensorType kt = gi.inputType(1);
    if (kt.getRank() > 1 || !kt.hasStaticShape() || kt.getNumElements() != 1 ||
        !kt.getElementType().isInteger(64))
      return gi.fail("k must be an int64 scalar");
    if (const HostTensor *c = gi.inputConst(1)) {
      k = c->asInt(0);
    } else {
      SmallVector<Value> zeros(kt.getRank(),
                               arith::ConstantIndexOp::create(b, gi.loc(), 0));
      kRuntime = tensor::ExtractOp::create(b, gi.loc(), gi.input(1), zeros);
    }
  }
  bool upper = gi.intAttr("upper", 1) != 0;
  Type elt = t.getElementType();
  Value v = gi.input(0);
  Value init = gi.emptyLike(t.getShape(), elt, ValueRange{v});
  SmallVector<AffineMap> maps(2, b.getMultiDimIdentityMap(rank));
  SmallVector<utils::IteratorType> iters(rank, utils::IteratorType::parallel);
  auto g = linalg::GenericOp::create(
      b, gi.loc(), TypeRange{init.getType()}, ValueRange{v}, ValueRange{init},
      maps, iters, [&](OpBuilder &bb, Location l, ValueRange args) {
        auto idx = [&](int64_t d) {
          return arith::IndexCastOp::create(bb, l, bb.getI64Type(),
                                            linalg::IndexOp::create(bb, l, d));
        };
        // Keep element (i, j) when j - i >= k (upper) or j - i <= k (lower).
        Value col = idx(rank - 1), row = idx(rank - 2);
        Value diff = arith::SubIOp::create(bb, l, col, row);
        Value kc = kRuntime ? kRuntime
                            : Value(arith::ConstantOp::create(
                                  bb, l, bb.getI64IntegerAttr(k)));
        Value keep = arith::CmpIOp::create(bb, l,
                                           upper ? arith::CmpIPredicate::sge
                                                 : arith::CmpIPredicate::sle,
                                           diff, kc);
        Value zero = isa<FloatType>(elt)
                         ? Value(arith::ConstantOp::create(
                               bb, l, FloatAttr::get(elt, 0.0)))
                         : Value(arith::ConstantOp::create(
                               bb, l, IntegerAttr::get(elt, 0)));
        linalg::YieldOp::create(
            bb, l, Value(arith::SelectOp::create(bb, l, keep, args[0], zero)));
      });
  gi.setOutput(0, g.getResult(0));
  return success();
}
/// CumSum (opsets 11 and 14): the running sum along a constant axis,
/// `exclusive` (element i sums the elements before i) and `reverse` (from the
/// end). Folded on the host for constant data; otherwise a linalg.generic
/// whose extra reduction dim j sums the elements of the axis that precede i
/// (j <= i, j < i exclusive; j >= i, j > i reversed), in ascending j.
LogicalResult importCumSum(GraphImporter &gi) {
  RankedTensorType t = gi.inputType(0);
  int64_t rank = t.getRank();
  if (rank < 1)
    return gi.fail("input must have rank >= 1");
  const HostTensor *axisC = gi.inputConst(1);
  if (!axisC || axisC->size() != 1)
    return gi.fail("axis must be a constant scalar");
  int64_t axis = axisC->asInt(0);
  if (axis < -rank || axis >= rank)
    return gi.fail("axis " + Twine(axis) + " is out of range");
  if (axis < 0)
    axis += rank;
  bool exclusive = gi.intAttr("exclusive", 0) != 0;
  bool reverse = gi.intAttr("reverse", 0) != 0;
  Type elt = t.getElementType();
  bool isF = isa<FloatType>(elt);
  if (!isF && (!isa<IntegerType>(elt) || elt.isInteger(1)))
    return gi.fail("only float and integer inputs are supported");

  if (gi.allInputsConst()) {
    HostTensor in = *gi.inputConst(0);
    HostTensor out = in;
    int64_t n = in.shape[axis], inner = 1, outer = 1;
    for (int64_t d = axis + 1; d < rank; ++d)
      inner *= in.shape[d];
    for (int64_t d = 0; d < axis; ++d)
      outer *= in.shape[d];
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t k = 0; k < inner; ++k) {
        double fs = 0;
        int64_t is = 0;
        for (int64_t step = 0; step < n; ++step) {
          int64_t i = reverse ? n - 1 - step : step;
          size_t at = (o * n + i) * inner + k;
          if (in.isFloat()) {
            double x = in.f[at];
            out.f[at] = exclusive ? fs : fs + x;
            fs += x;
          } else {
            int64_t x = in.i[at];
            out.i[at] = exclusive ? is : is + x;
            is += x;
          }
        }
      }
    gi.setOutputConst(0, std::move(out));
    return success();
  }

  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value v = gi.input(0);
  SmallVector<Value> dyn;
  for (int64_t d = 0; d < rank; ++d)
    if (t.isDynamicDim(d))
      dyn.push_back(gi.dim(v, d));
  Value init = zeroFilled(gi, t.getShape(), elt, dyn);
  // Dims 0..rank-1 index the output, dim `rank` (j) runs along the axis.
  SmallVector<AffineExpr> inExprs;
  for (int64_t d = 0; d < rank; ++d)
    inExprs.push_back(b.getAffineDimExpr(d == axis ? rank : d));
  SmallVector<AffineExpr> outExprs;
  for (int64_t d = 0; d < rank; ++d)
    outExprs.push_back(b.getAffineDimExpr(d));
  SmallVector<AffineMap> maps = {
      AffineMap::get(rank + 1, 0, inExprs, gi.ctx()),
      AffineMap::get(rank + 1, 0, outExprs, gi.ctx())};
  SmallVector<utils::IteratorType> iters(rank + 1,
                                         utils::IteratorType::parallel);
  iters[rank] = utils::IteratorType::reduction;
  arith::CmpIPredicate pred =
      reverse
          ? (exclusive ? arith::CmpIPredicate::ugt : arith::CmpIPredicate::uge)
          : (exclusive ? arith::CmpIPredicate::ult : arith::CmpIPredicate::ule);
  auto g = linalg::GenericOp::create(
      b, loc, TypeRange{init.getType()}, ValueRange{v}, ValueRange{init}, maps,
      iters, [&](OpBuilder &bb, Location l, ValueRange args) {
        Value j = linalg::IndexOp::create(bb, l, rank);
        Value i = linalg::IndexOp::create(bb, l, axis);
        Value in = arith::CmpIOp::create(bb, l, pred, j, i);
        Value sum = isF ? Value(arith::AddFOp::create(bb, l, args[1], args[0]))
                        : Value(arith::AddIOp::create(bb, l, args[1], args[0]));
        linalg::YieldOp::create(
            bb, l, Value(arith::SelectOp::create(bb, l, in, sum, args[1])));
      });
  gi.setOutput(0, g.getResult(0));
  return success();
}
} // namespace

Value moec::onnximport::reduceMeanKeepDims(GraphImporter &gi, Value v,
                                           ArrayRef<int64_t> axes) {
  return reduce(gi, v, axes, ReduceKind::Mean, /*keepDims=*/true);
}

void moec::onnximport::addReductionOps(OpTable &t) {
  t["MatMul"] = importMatMul;
  t["Gemm"] = importGemm;
  t["ReduceSum"] = [](GraphImporter &gi) {
    return importReduce(gi, ReduceKind::Sum);
  };
  t["ReduceMean"] = [](GraphImporter &gi) {
    return importReduce(gi, ReduceKind::Mean);
  };
  t["ReduceMax"] = [](GraphImporter &gi) {
    return importReduce(gi, ReduceKind::Max);
  };
  t["ArgMax"] = importArgMax;
  t["Softmax"] = importSoftmax;
  t["LayerNormalization"] = importLayerNorm;
  t["Trilu"] = importTrilu;
  t["CumSum"] = importCumSum;
}
