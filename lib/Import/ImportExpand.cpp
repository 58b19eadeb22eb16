//===- ImportExpand.cpp - expand, tile and generator ONNX ops -------------===//
//
// Expand Tile ConstantOfShape Range: tensors of a shape (or length) that
// an input gives, known on the host or only at run time.
//
//===----------------------------------------------------------------------===//

#include "GraphImporter.h"
#include "ShapeHelpers.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include <cstdio>

using namespace mlir;
using namespace moec::onnximport;

namespace {

/// The target of a shape input: static entries where known; for runtime
/// entries, index values. `vals[d]` is null for static entries.
struct ShapeSpec {
  Shape dims;
  SmallVector<Value> vals;
};

FailureOr<ShapeSpec> shapeInput(GraphImporter &gi, unsigned i) {
  ShapeSpec s;
  if (const HostTensor *c = gi.inputConst(i)) {
    if (c->isFloat()) {
      (void)gi.fail("the shape input must be int64, not " +
                    onnxTypeName(c->dtype));
      return failure();
    }
    for (int64_t k = 0; k < c->size(); ++k) {
      if (c->asInt(k) < 0) {
        (void)gi.fail("the shape input's entry " + std::to_string(k) + " is " +
                      std::to_string(c->asInt(k)) + ": dims must be >= 0");
        return failure();
      }
      s.dims.push_back(c->asInt(k));
    }
    s.vals.assign(s.dims.size(), Value());
    return s;
  }
  RankedTensorType t = gi.inputType(i);
  if (t.getRank() != 1 || t.isDynamicDim(0)) {
    (void)gi.fail("the shape input must be a 1-D tensor of static length");
    return failure();
  }
  OpBuilder &b = gi.builder();
  Value v = gi.input(i);
  for (int64_t k = 0; k < t.getDimSize(0); ++k) {
    Value c = arith::ConstantIndexOp::create(b, gi.loc(), k);
    Value e = tensor::ExtractOp::create(b, gi.loc(), v, ValueRange{c});
    s.dims.push_back(ShapedType::kDynamic);
    s.vals.push_back(toIndex(gi, e));
  }
  return s;
}

/// Broadcasts `v` to the numpy broadcast of its shape and `spec`.
FailureOr<Value> broadcastTo(GraphImporter &gi, Value v,
                             const ShapeSpec &spec) {
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  auto t = cast<RankedTensorType>(v.getType());
  int64_t rank = std::max<int64_t>(t.getRank(), spec.dims.size());
  Shape shape(rank);
  SmallVector<Value> dyn;
  SmallVector<AffineExpr> exprs;
  for (int64_t d = 0; d < rank; ++d) {
    int64_t vd = d - (rank - t.getRank());
    int64_t sd = d - (rank - int64_t(spec.dims.size()));
    int64_t in = vd >= 0 ? t.getDimSize(vd) : 1;
    int64_t want = sd >= 0 ? spec.dims[sd] : 1;
    Value wantV = sd >= 0 ? spec.vals[sd] : Value();
    if (!isDyn(want) && !isDyn(in) && in != 1 && want != 1 && in != want) {
      (void)gi.fail("cannot expand a dim of size " + Twine(in) + " to " +
                    Twine(want));
      return failure();
    }
    if (!isDyn(want) && !isDyn(in))
      shape[d] = std::max(in, want);
    else if (!isDyn(in) && in != 1)
      shape[d] = in;
    else if (!isDyn(want) && want != 1 && !wantV)
      shape[d] = want;
    else
      shape[d] = ShapedType::kDynamic;
    if (isDyn(shape[d])) {
      // max(input size, target size): one of them is 1 or they are equal.
      Value a = vd >= 0 ? gi.dim(v, vd)
                        : Value(arith::ConstantIndexOp::create(b, loc, 1));
      Value w = wantV ? wantV
                      : Value(arith::ConstantIndexOp::create(
                            b, loc, isDyn(want) ? 1 : want));
      dyn.push_back(arith::MaxUIOp::create(b, loc, a, w));
    }
    if (vd >= 0) {
      // Input dims of size 1 broadcast; a dynamic one is assumed to match.
      exprs.push_back(in == 1 && shape[d] != 1 ? b.getAffineConstantExpr(0)
                                               : b.getAffineDimExpr(d));
    }
  }
  Value init = gi.emptyTensor(shape, t.getElementType(), dyn);
  SmallVector<AffineMap> maps = {AffineMap::get(rank, 0, exprs, gi.ctx()),
                                 b.getMultiDimIdentityMap(rank)};
  SmallVector<utils::IteratorType> iters(rank, utils::IteratorType::parallel);
  auto g = linalg::GenericOp::create(
      b, loc, TypeRange{init.getType()}, ValueRange{v}, ValueRange{init}, maps,
      iters, [](OpBuilder &bb, Location l, ValueRange args) {
        linalg::YieldOp::create(bb, l, args[0]);
      });
  return g.getResult(0);
}

/// Whether a constant of `shape` is small enough to fold while importing
/// (at most 2^20 elements); a larger one is computed at run time.
static bool foldable(ArrayRef<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && n > (int64_t(1) << 20) / d))
      return false;
    n *= d;
  }
  return true;
}

LogicalResult importExpand(GraphImporter &gi) {
  if (gi.allInputsConst()) {
    const HostTensor *c = gi.inputConst(0), *s = gi.inputConst(1);
    int64_t rank = std::max<int64_t>(c->shape.size(), s->size());
    Shape shape(rank);
    for (int64_t d = 0; d < rank; ++d) {
      int64_t vd = d - (rank - int64_t(c->shape.size()));
      int64_t sd = d - (rank - s->size());
      int64_t in = vd >= 0 ? c->shape[vd] : 1, want = sd >= 0 ? s->i[sd] : 1;
      if (in != 1 && want != 1 && in != want)
        return gi.fail("cannot expand a dim of size " + Twine(in) + " to " +
                       Twine(want));
      shape[d] = std::max(in, want);
    }
    if (foldable(shape)) {
      Shape st = strides(c->shape);
      gi.setOutputConst(
          0, hostGather(*c, shape, [&](ArrayRef<int64_t> pos) {
            int64_t k = 0;
            for (int64_t d = 0; d < int64_t(c->shape.size()); ++d)
              k += (c->shape[d] == 1 ? 0 : pos[d + rank - c->shape.size()]) *
                   st[d];
            return k;
          }));
      return success();
    }
  }
  FailureOr<ShapeSpec> spec = shapeInput(gi, 1);
  if (failed(spec))
    return failure();
  FailureOr<Value> r = broadcastTo(gi, gi.input(0), *spec);
  if (failed(r))
    return failure();
  gi.setOutput(0, *r);
  return success();
}

LogicalResult importTile(GraphImporter &gi) {
  RankedTensorType in = gi.inputType(0);
  int64_t rank = in.getRank();
  FailureOr<std::vector<int64_t>> reps = constInts(gi, 1, "repeats");
  if (failed(reps))
    return failure();
  if (int64_t(reps->size()) != rank)
    return gi.fail("repeats has " + Twine(reps->size()) + " entries for rank " +
                   Twine(rank));
  Shape shape;
  for (int64_t d = 0; d < rank; ++d) {
    if ((*reps)[d] < 0)
      return gi.fail("negative repeats");
    shape.push_back(in.isDynamicDim(d) ? ShapedType::kDynamic
                                       : in.getDimSize(d) * (*reps)[d]);
  }
  if (const HostTensor *c = gi.inputConst(0);
      c && c->size() <= (1 << 16) && foldable(shape)) {
    Shape st = strides(c->shape);
    gi.setOutputConst(0, hostGather(*c, shape, [&](ArrayRef<int64_t> pos) {
                        int64_t k = 0;
                        for (int64_t d = 0; d < rank; ++d)
                          k += (pos[d] % c->shape[d]) * st[d];
                        return k;
                      }));
    return success();
  }
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value v = gi.input(0);
  SmallVector<Value> dyn, sizes;
  for (int64_t d = 0; d < rank; ++d) {
    sizes.push_back(gi.dim(v, d));
    if (isDyn(shape[d]))
      dyn.push_back(arith::MulIOp::create(
          b, loc, sizes[d],
          arith::ConstantIndexOp::create(b, loc, (*reps)[d])));
  }
  Value init = gi.emptyTensor(shape, in.getElementType(), dyn);
  SmallVector<AffineMap> maps = {b.getMultiDimIdentityMap(rank)};
  SmallVector<utils::IteratorType> iters(rank, utils::IteratorType::parallel);
  auto g = linalg::GenericOp::create(
      b, loc, TypeRange{init.getType()}, ValueRange{}, ValueRange{init}, maps,
      iters, [&](OpBuilder &bb, Location l, ValueRange) {
        SmallVector<Value> coords;
        for (int64_t d = 0; d < rank; ++d)
          coords.push_back(arith::RemUIOp::create(
              bb, l, linalg::IndexOp::create(bb, l, d), sizes[d]));
        linalg::YieldOp::create(
            bb, l, Value(tensor::ExtractOp::create(bb, l, v, coords)));
      });
  gi.setOutput(0, g.getResult(0));
  return success();
}

LogicalResult importConstantOfShape(GraphImporter &gi) {
  HostTensor value = HostTensor::splat(onnx::TensorProto_DataType_FLOAT, {}, 0);
  if (const onnx::AttributeProto *a = gi.attr("value")) {
    FailureOr<HostTensor> t = gi.decodeTensor(a->t());
    if (failed(t) || t->size() != 1)
      return gi.fail("value must be a one-element tensor");
    value = *t;
  }
  Type elt = gi.elementType(value.dtype);
  if (!elt)
    return gi.fail("value has unsupported dtype " + onnxTypeName(value.dtype));
  FailureOr<ShapeSpec> spec = shapeInput(gi, 0);
  if (failed(spec))
    return failure();
  // A known shape of at most kFoldElements elements folds to a host
  // constant (shape arithmetic); a larger one is filled at run time, never
  // allocated here.
  constexpr int64_t kFoldElements = 1 << 20;
  if (gi.inputConst(0)) {
    int64_t n = 1;
    for (int64_t d : spec->dims)
      if (n > 0 && (d > kFoldElements || (n *= d) > kFoldElements))
        n = kFoldElements + 1;
    if (n <= kFoldElements) {
      std::vector<int64_t> shape(spec->dims.begin(), spec->dims.end());
      gi.setOutputConst(
          0, HostTensor::splat(value.dtype, shape, value.asDouble(0)));
      return success();
    }
  }
  SmallVector<Value> dyn(spec->vals.begin(), spec->vals.end());
  Value init = gi.emptyTensor(spec->dims, elt, dyn);
  Value fill = gi.scalar(elt, value.asDouble(0));
  gi.setOutput(0, linalg::FillOp::create(gi.builder(), gi.loc(),
                                         ValueRange{fill}, ValueRange{init})
                      .getResult(0));
  return success();
}

/// Range with start, limit or delta known only at run time: a
/// linalg.generic computing start + i * delta over a dynamic length.
LogicalResult importRuntimeRange(GraphImporter &gi) {
  Type elt = gi.inputType(0).getElementType();
  bool isF = isa<FloatType>(elt);
  if (!isF && !isa<IntegerType>(elt))
    return gi.fail("unsupported element type");
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value sc[3];
  for (unsigned i = 0; i < 3; ++i) {
    if (gi.inputType(i).getRank() != 0 ||
        gi.inputType(i).getElementType() != elt)
      return gi.fail("start, limit and delta must be scalars of one type");
    sc[i] = tensor::ExtractOp::create(b, loc, gi.input(i), ValueRange{});
  }
  // n = max(ceil((limit - start) / delta), 0)
  Value n;
  if (isF) {
    Value q = arith::DivFOp::create(
        b, loc, arith::SubFOp::create(b, loc, sc[1], sc[0]), sc[2]);
    // ceil without math.ceil: truncate, then add 1 when below q.
    Value t = arith::FPToSIOp::create(b, loc, b.getI64Type(), q);
    Value below =
        arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT,
                              arith::SIToFPOp::create(b, loc, elt, t), q);
    n = arith::AddIOp::create(
        b, loc, t, arith::ExtUIOp::create(b, loc, b.getI64Type(), below));
  } else {
    n = arith::CeilDivSIOp::create(
        b, loc, arith::SubIOp::create(b, loc, sc[1], sc[0]), sc[2]);
    n = gi.convertScalar(b, loc, n, b.getI64Type());
  }
  n = arith::MaxSIOp::create(
      b, loc, n,
      arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(0)).getResult());
  Shape shape = {ShapedType::kDynamic};
  SmallVector<Value> dyn = {toIndex(gi, n)};
  if (RankedTensorType inf = gi.inferredOutputType(0);
      inf && inf.getRank() == 1 && !inf.isDynamicDim(0)) {
    shape = {inf.getDimSize(0)};
    dyn.clear();
  }
  Value init = gi.emptyTensor(shape, elt, dyn);
  SmallVector<AffineMap> maps = {b.getMultiDimIdentityMap(1)};
  auto g = linalg::GenericOp::create(
      b, loc, TypeRange{init.getType()}, ValueRange{}, ValueRange{init}, maps,
      SmallVector<utils::IteratorType>{utils::IteratorType::parallel},
      [&](OpBuilder &bb, Location l, ValueRange) {
        Value i = arith::IndexCastOp::create(bb, l, bb.getI64Type(),
                                             linalg::IndexOp::create(bb, l, 0));
        i = gi.convertScalar(bb, l, i, elt);
        Value r =
            isF ? Value(arith::AddFOp::create(
                      bb, l, sc[0], arith::MulFOp::create(bb, l, i, sc[2])))
                : Value(arith::AddIOp::create(
                      bb, l, sc[0], arith::MulIOp::create(bb, l, i, sc[2])));
        linalg::YieldOp::create(bb, l, r);
      });
  gi.setOutput(0, g.getResult(0));
  return success();
}

/// `v` as printf's %g writes it (1e+12, 0.5).
static std::string shortDouble(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

LogicalResult importRange(GraphImporter &gi) {
  if (!gi.allInputsConst())
    return importRuntimeRange(gi);
  const HostTensor *s = gi.inputConst(0), *l = gi.inputConst(1),
                   *d = gi.inputConst(2);
  double start = s->asDouble(0), limit = l->asDouble(0), delta = d->asDouble(0);
  if (delta == 0)
    return gi.fail("delta is 0");
  // Folded into a host constant: bounded (a position range is far below),
  // and computed without overflow (a huge or NaN count saturates).
  constexpr int64_t kMaxRange = int64_t(1) << 24;
  int64_t n =
      std::max<int64_t>(saturatingInt(std::ceil((limit - start) / delta)), 0);
  if (n > kMaxRange)
    return gi.fail("start " + shortDouble(start) + ", limit " +
                   shortDouble(limit) + " and delta " + shortDouble(delta) +
                   " make more than 2^24 elements");
  HostTensor out;
  out.dtype = s->dtype;
  out.shape = {n};
  for (int64_t k = 0; k < n; ++k) {
    if (out.isFloat())
      out.f.push_back(start + double(k) * delta);
    else
      out.i.push_back(s->i[0] + k * d->i[0]);
  }
  gi.setOutputConst(0, std::move(out));
  return success();
}

} // namespace

void moec::onnximport::addExpandOps(OpTable &t) {
  t["Expand"] = importExpand;
  t["Tile"] = importTile;
  t["ConstantOfShape"] = importConstantOfShape;
  t["Range"] = importRange;
}
