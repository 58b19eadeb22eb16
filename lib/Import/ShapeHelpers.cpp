//===- ShapeHelpers.cpp - shared by the shape op handlers -----------------===//

#include "ShapeHelpers.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/ReshapeOpsUtils.h"
#include "mlir/IR/Matchers.h"

using namespace mlir;

namespace moec::onnximport {

bool isDyn(int64_t d) { return ShapedType::isDynamic(d); }

/// Row-major strides of a shape.
Shape strides(ArrayRef<int64_t> shape) {
  Shape s(shape.size(), 1);
  for (int64_t i = int64_t(shape.size()) - 2; i >= 0; --i)
    s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/// Builds a host tensor of `shape` whose element at each position is the
/// element `src(position)` of `in` (a flat index).
HostTensor hostGather(const HostTensor &in, ArrayRef<int64_t> shape,
                      function_ref<int64_t(ArrayRef<int64_t>)> src) {
  HostTensor out;
  out.dtype = in.dtype;
  out.shape.assign(shape.begin(), shape.end());
  int64_t n = out.size();
  Shape pos(shape.size(), 0);
  for (int64_t k = 0; k < n; ++k) {
    int64_t rem = k;
    for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
      pos[d] = rem % shape[d];
      rem /= shape[d];
    }
    int64_t s = src(pos);
    if (in.isFloat())
      out.f.push_back(in.f[s]);
    else
      out.i.push_back(in.i[s]);
  }
  return out;
}

FailureOr<int64_t> normAxis(GraphImporter &gi, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank) {
    (void)gi.fail("axis " + Twine(axis) + " is out of range for rank " +
                  Twine(rank));
    return failure();
  }
  return axis < 0 ? axis + rank : axis;
}

/// The int64 values of a known input, or failure with a message.
FailureOr<std::vector<int64_t>> constInts(GraphImporter &gi, unsigned i,
                                          StringRef what) {
  const HostTensor *t = gi.inputConst(i);
  if (!t) {
    (void)gi.fail(what + " must be a constant (it is computed at run time)");
    return failure();
  }
  std::vector<int64_t> v;
  for (int64_t k = 0; k < t->size(); ++k)
    v.push_back(t->asInt(k));
  return v;
}

/// Int list given as input `i` (opset 13+) or, in older form, as attribute
/// `name`; empty when neither is there.
FailureOr<std::vector<int64_t>>
intsFromInputOrAttr(GraphImporter &gi, unsigned i, StringRef name) {
  if (gi.hasInput(i))
    return constInts(gi, i, name);
  return gi.intsAttr(name);
}

Value toIndex(GraphImporter &gi, Value i64) {
  return arith::IndexCastOp::create(gi.builder(), gi.loc(),
                                    gi.builder().getIndexType(), i64);
}

/// Reshapes a runtime tensor to `shape`, whose entries may be dynamic; the
/// dynamic ones take the sizes in `dyn` (index values). Rank-changing
/// reshapes that only merge or split adjacent dims become
/// tensor.collapse_shape / tensor.expand_shape; others tensor.reshape.
Value reshapeTo(GraphImporter &gi, Value v, ArrayRef<int64_t> shape,
                ValueRange dyn) {
  auto t = cast<RankedTensorType>(v.getType());
  auto resultType = RankedTensorType::get(shape, t.getElementType());
  if (resultType == t)
    return v;
  ArrayRef<int64_t> src = t.getShape();
  // The grouping is only unambiguous when the lower-rank side has at most
  // one dynamic dim: that dim's size then follows from the element count,
  // whichever grouping is picked.
  auto numDyn = [](ArrayRef<int64_t> s) { return llvm::count_if(s, isDyn); };
  OpBuilder &b = gi.builder();
  if (src.size() > shape.size() && numDyn(shape) <= 1) {
    if (auto re = getReassociationIndicesForCollapse(src, shape))
      return tensor::CollapseShapeOp::create(b, gi.loc(), resultType, v, *re);
  } else if (src.size() < shape.size() && numDyn(src) <= 1) {
    if (auto re = getReassociationIndicesForCollapse(shape, src)) {
      SmallVector<OpFoldResult> outShape;
      unsigned k = 0;
      for (int64_t s : shape)
        outShape.push_back(isDyn(s) ? OpFoldResult(dyn[k++])
                                    : OpFoldResult(b.getIndexAttr(s)));
      return tensor::ExpandShapeOp::create(b, gi.loc(), resultType, v, *re,
                                           outShape);
    }
  }
  return gi.reshape(v, shape, dyn);
}

/// Product of dims [from, to) of `v` as an index value.
Value dimProduct(GraphImporter &gi, Value v, int64_t from, int64_t to) {
  OpBuilder &b = gi.builder();
  Value p = arith::ConstantIndexOp::create(b, gi.loc(), 1);
  for (int64_t d = from; d < to; ++d)
    p = arith::MulIOp::create(b, gi.loc(), p, gi.dim(v, d));
  return p;
}

Entry elementAt(GraphImporter &gi, Value t, int64_t k) {
  Operation *def = t.getDefiningOp();
  auto tt = cast<RankedTensorType>(t.getType());
  if (auto f = dyn_cast_or_null<tensor::FromElementsOp>(def)) {
    Value e = f.getElements()[k];
    APInt c;
    if (matchPattern(e, m_ConstantInt(&c)))
      return {c.getSExtValue(), Value()};
    if (e.getType().isInteger(64))
      return {std::nullopt, e};
  } else if (auto c = dyn_cast_or_null<arith::ConstantOp>(def)) {
    if (auto d = dyn_cast<DenseIntElementsAttr>(c.getValue()))
      return {d.getValues<APInt>()[k].getSExtValue(), Value()};
  } else if (auto cat = dyn_cast_or_null<tensor::ConcatOp>(def)) {
    for (Value in : cat.getInputs()) {
      auto it = cast<RankedTensorType>(in.getType());
      if (it.isDynamicDim(0))
        break;
      if (k < it.getDimSize(0))
        return elementAt(gi, in, k);
      k -= it.getDimSize(0);
    }
  } else if (isa_and_nonnull<tensor::CollapseShapeOp, tensor::ExpandShapeOp,
                             tensor::ReshapeOp>(def)) {
    // Same element order; sources of rank <= 1 have the same linear index.
    Value src = def->getOperand(0);
    if (cast<RankedTensorType>(src.getType()).getRank() <= 1)
      return elementAt(gi, src, k);
  }
  OpBuilder &b = gi.builder();
  SmallVector<Value> idx;
  if (tt.getRank() == 1)
    idx.push_back(arith::ConstantIndexOp::create(b, gi.loc(), k));
  Value e = tensor::ExtractOp::create(b, gi.loc(), t, idx);
  if (!e.getType().isInteger(64))
    e = gi.convertScalar(b, gi.loc(), e, b.getI64Type());
  return {std::nullopt, e};
}

} // namespace moec::onnximport
