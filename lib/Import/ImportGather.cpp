//===- ImportGather.cpp - gather ONNX ops ---------------------------------===//
//
// Gather GatherND GatherElements: on the host when the inputs are known,
// else a linalg.generic that reads its source with tensor.extract.
//
//===----------------------------------------------------------------------===//

#include "GraphImporter.h"
#include "ShapeHelpers.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace moec::onnximport;

namespace {

/// An index element (any int type) as `index`, negative values wrapped by
/// adding `size`.
Value wrapIndex(OpBuilder &b, Location l, Value idx, Value size) {
  Value i = idx;
  if (!i.getType().isIndex())
    i = arith::IndexCastOp::create(b, l, b.getIndexType(), i);
  Value zero = arith::ConstantIndexOp::create(b, l, 0);
  Value neg = arith::CmpIOp::create(b, l, arith::CmpIPredicate::slt, i, zero);
  return arith::SelectOp::create(b, l, neg,
                                 arith::AddIOp::create(b, l, i, size), i);
}

LogicalResult importGather(GraphImporter &gi) {
  RankedTensorType data = gi.inputType(0), idx = gi.inputType(1);
  int64_t r = data.getRank(), q = idx.getRank();
  FailureOr<int64_t> axis = normAxis(gi, gi.intAttr("axis", 0), r);
  if (failed(axis))
    return failure();
  Shape shape(data.getShape().begin(), data.getShape().begin() + *axis);
  shape.append(idx.getShape().begin(), idx.getShape().end());
  shape.append(data.getShape().begin() + *axis + 1, data.getShape().end());
  if (gi.allInputsConst()) {
    const HostTensor *d = gi.inputConst(0), *ix = gi.inputConst(1);
    Shape st = strides(d->shape), ist = strides(ix->shape);
    int64_t dimA = d->shape[*axis];
    for (int64_t k = 0; k < ix->size(); ++k)
      if (ix->i[k] < -dimA || ix->i[k] >= dimA)
        return gi.fail("index " + Twine(ix->i[k]) +
                       " is out of range for an "
                       "axis of size " +
                       Twine(dimA));
    gi.setOutputConst(0, hostGather(*d, shape, [&](ArrayRef<int64_t> pos) {
                        int64_t ik = 0;
                        for (int64_t j = 0; j < q; ++j)
                          ik += pos[*axis + j] * ist[j];
                        int64_t a =
                            ix->i[ik] < 0 ? ix->i[ik] + dimA : ix->i[ik];
                        int64_t k = 0;
                        for (int64_t dd = 0; dd < *axis; ++dd)
                          k += pos[dd] * st[dd];
                        k += a * st[*axis];
                        for (int64_t dd = *axis + 1; dd < r; ++dd)
                          k += pos[dd - 1 + q] * st[dd];
                        return k;
                      }));
    return success();
  }
  OpBuilder &b = gi.builder();
  // Entries of a runtime shape tensor (Gather of Shape(x) for a dynamic x):
  // picked directly, so the shape arithmetic stays scalar.
  const HostTensor *ci = gi.inputConst(1);
  if (r == 1 && ci && ci->size() <= 16 && !data.isDynamicDim(0) &&
      data.getElementType().isInteger(64)) {
    int64_t n = data.getDimSize(0);
    Value dv = gi.input(0);
    SmallVector<Value> elts;
    for (int64_t k = 0; k < ci->size(); ++k) {
      int64_t ix = ci->asInt(k);
      if (ix < -n || ix >= n)
        return gi.fail("index " + Twine(ix) +
                       " is out of range for an axis of size " + Twine(n));
      Entry e = elementAt(gi, dv, ix < 0 ? ix + n : ix);
      elts.push_back(e.c ? Value(arith::ConstantOp::create(
                               b, gi.loc(), b.getI64IntegerAttr(*e.c)))
                         : e.v);
    }
    gi.setOutput(0,
                 tensor::FromElementsOp::create(
                     b, gi.loc(),
                     RankedTensorType::get(ci->shape, b.getI64Type()), elts));
    return success();
  }
  Value dv = gi.input(0), iv = gi.input(1);
  int64_t outRank = int64_t(shape.size());
  SmallVector<Value> dyn;
  for (int64_t d = 0; d < outRank; ++d) {
    if (!isDyn(shape[d]))
      continue;
    if (d < *axis)
      dyn.push_back(gi.dim(dv, d));
    else if (d < *axis + q)
      dyn.push_back(gi.dim(iv, d - *axis));
    else
      dyn.push_back(gi.dim(dv, d - q + 1));
  }
  Value init = gi.emptyTensor(shape, data.getElementType(), dyn);
  Value axisSize = gi.dim(dv, *axis);
  SmallVector<AffineExpr> idxExprs;
  for (int64_t j = 0; j < q; ++j)
    idxExprs.push_back(b.getAffineDimExpr(*axis + j));
  SmallVector<AffineMap> maps = {AffineMap::get(outRank, 0, idxExprs, gi.ctx()),
                                 b.getMultiDimIdentityMap(outRank)};
  SmallVector<utils::IteratorType> iters(outRank,
                                         utils::IteratorType::parallel);
  auto generic = linalg::GenericOp::create(
      b, gi.loc(), TypeRange{init.getType()}, ValueRange{iv}, ValueRange{init},
      maps, iters, [&](OpBuilder &bb, Location l, ValueRange args) {
        SmallVector<Value> coords;
        for (int64_t d = 0; d < *axis; ++d)
          coords.push_back(linalg::IndexOp::create(bb, l, d));
        coords.push_back(wrapIndex(bb, l, args[0], axisSize));
        for (int64_t d = *axis + 1; d < r; ++d)
          coords.push_back(linalg::IndexOp::create(bb, l, d - 1 + q));
        linalg::YieldOp::create(
            bb, l, Value(tensor::ExtractOp::create(bb, l, dv, coords)));
      });
  gi.setOutput(0, generic.getResult(0));
  return success();
}

/// GatherND with batch_dims = 0: out[i..., r...] = data[idx[i..., 0], ...,
/// idx[i..., q-1], r...] (negative indices wrapped). torch.onnx's dynamo
/// exporter writes it for `weight[expert_ids]` (transformers' batched_mm
/// experts).
LogicalResult importGatherND(GraphImporter &gi) {
  if (gi.numInputs() != 2)
    return gi.fail("expects 2 inputs (data, indices)");
  if (gi.intAttr("batch_dims", 0) != 0)
    return gi.fail("batch_dims = " + Twine(gi.intAttr("batch_dims", 0)) +
                   " is not supported (only 0)");
  RankedTensorType data = gi.inputType(0), idx = gi.inputType(1);
  int64_t r = data.getRank(), m = idx.getRank();
  if (m < 1 || idx.isDynamicDim(m - 1))
    return gi.fail("the last dimension of indices must be static");
  if (!idx.getElementType().isInteger(64))
    return gi.fail("indices must be int64");
  int64_t q = idx.getDimSize(m - 1);
  if (q < 1 || q > r)
    return gi.fail("index tuples of length " + Twine(q) + " for data of rank " +
                   Twine(r));
  Shape shape(idx.getShape().begin(), idx.getShape().end() - 1);
  shape.append(data.getShape().begin() + q, data.getShape().end());
  int64_t outRank = int64_t(shape.size());
  OpBuilder &b = gi.builder();
  Value dv = gi.input(0), iv = gi.input(1);
  SmallVector<Value> dyn;
  for (int64_t d = 0; d < outRank; ++d)
    if (isDyn(shape[d]))
      dyn.push_back(d < m - 1 ? gi.dim(iv, d) : gi.dim(dv, d - (m - 1) + q));
  Value init = gi.emptyTensor(shape, data.getElementType(), dyn);
  SmallVector<Value> sizes;
  for (int64_t j = 0; j < q; ++j)
    sizes.push_back(gi.dim(dv, j));
  SmallVector<AffineMap> maps = {b.getMultiDimIdentityMap(outRank)};
  SmallVector<utils::IteratorType> iters(outRank,
                                         utils::IteratorType::parallel);
  auto generic = linalg::GenericOp::create(
      b, gi.loc(), TypeRange{init.getType()}, ValueRange{}, ValueRange{init},
      maps, iters, [&](OpBuilder &bb, Location l, ValueRange) {
        SmallVector<Value> at, coords;
        for (int64_t d = 0; d < m - 1; ++d)
          at.push_back(linalg::IndexOp::create(bb, l, d));
        for (int64_t j = 0; j < q; ++j) {
          SmallVector<Value> ij = at;
          ij.push_back(arith::ConstantIndexOp::create(bb, l, j));
          Value e = tensor::ExtractOp::create(bb, l, iv, ij);
          coords.push_back(wrapIndex(bb, l, e, sizes[j]));
        }
        for (int64_t d = q; d < r; ++d)
          coords.push_back(linalg::IndexOp::create(bb, l, d - q + (m - 1)));
        linalg::YieldOp::create(
            bb, l, Value(tensor::ExtractOp::create(bb, l, dv, coords)));
      });
  gi.setOutput(0, generic.getResult(0));
  return success();
}

LogicalResult importGatherElements(GraphImporter &gi) {
  RankedTensorType data = gi.inputType(0), idx = gi.inputType(1);
  int64_t r = data.getRank();
  if (idx.getRank() != r)
    return gi.fail("data and indices must have the same rank");
  FailureOr<int64_t> axis = normAxis(gi, gi.intAttr("axis", 0), r);
  if (failed(axis))
    return failure();
  if (gi.allInputsConst()) {
    const HostTensor *d = gi.inputConst(0), *ix = gi.inputConst(1);
    int64_t dimA = d->shape[*axis];
    for (int64_t k = 0; k < ix->size(); ++k)
      if (ix->i[k] < -dimA || ix->i[k] >= dimA)
        return gi.fail("index " + Twine(ix->i[k]) +
                       " is out of range for an axis of size " + Twine(dimA));
    Shape st = strides(d->shape), ist = strides(ix->shape);
    gi.setOutputConst(0, hostGather(*d, ix->shape, [&](ArrayRef<int64_t> pos) {
                        int64_t ik = 0, k = 0;
                        for (int64_t dd = 0; dd < r; ++dd)
                          ik += pos[dd] * ist[dd];
                        for (int64_t dd = 0; dd < r; ++dd) {
                          int64_t p = pos[dd];
                          if (dd == *axis)
                            p = ix->i[ik] < 0 ? ix->i[ik] + dimA : ix->i[ik];
                          k += p * st[dd];
                        }
                        return k;
                      }));
    return success();
  }
  OpBuilder &b = gi.builder();
  Value dv = gi.input(0), iv = gi.input(1);
  Value init =
      gi.emptyLike(idx.getShape(), data.getElementType(), ValueRange{iv});
  Value axisSize = gi.dim(dv, *axis);
  SmallVector<AffineMap> maps(2, b.getMultiDimIdentityMap(r));
  SmallVector<utils::IteratorType> iters(r, utils::IteratorType::parallel);
  auto generic = linalg::GenericOp::create(
      b, gi.loc(), TypeRange{init.getType()}, ValueRange{iv}, ValueRange{init},
      maps, iters, [&](OpBuilder &bb, Location l, ValueRange args) {
        SmallVector<Value> coords;
        for (int64_t d = 0; d < r; ++d)
          coords.push_back(d == *axis
                               ? wrapIndex(bb, l, args[0], axisSize)
                               : Value(linalg::IndexOp::create(bb, l, d)));
        linalg::YieldOp::create(
            bb, l, Value(tensor::ExtractOp::create(bb, l, dv, coords)));
      });
  gi.setOutput(0, generic.getResult(0));
  return success();
}

} // namespace

void moec::onnximport::addGatherOps(OpTable &t) {
  t["Gather"] = importGather;
  t["GatherElements"] = importGatherElements;
  t["GatherND"] = importGatherND;
}
