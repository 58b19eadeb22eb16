//===- ImportShape.cpp - constant and shape ONNX ops ----------------------===//
//
// Constant Identity Shape Size. Known (small) inputs fold on the host, so
// shape arithmetic never reaches the IR (ShapeHelpers.h has the helpers the
// shape and data-movement handlers share). Runtime data may have dynamic
// dims (token counts after NonZero in torch.onnx expert loops); sizes then
// come from tensor.dim.
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

/// Index value of dim `d` of `v` as i64.
Value dimI64(GraphImporter &gi, Value v, int64_t d) {
  return arith::IndexCastOp::create(gi.builder(), gi.loc(),
                                    gi.builder().getI64Type(), gi.dim(v, d));
}

LogicalResult importConstant(GraphImporter &gi) {
  if (const onnx::AttributeProto *a = gi.attr("value")) {
    FailureOr<HostTensor> t = gi.decodeTensor(a->t());
    if (failed(t)) {
      return gi.fail(gi.error());
    }
    gi.setOutputConst(0, std::move(*t));
    return success();
  }
  HostTensor t;
  if (const onnx::AttributeProto *a = gi.attr("value_float")) {
    t.dtype = onnx::TensorProto_DataType_FLOAT;
    t.f = {a->f()};
  } else if (const onnx::AttributeProto *a = gi.attr("value_floats")) {
    t.dtype = onnx::TensorProto_DataType_FLOAT;
    t.f.assign(a->floats().begin(), a->floats().end());
    t.shape = {int64_t(t.f.size())};
  } else if (const onnx::AttributeProto *a = gi.attr("value_int")) {
    t.i = {a->i()};
  } else if (const onnx::AttributeProto *a = gi.attr("value_ints")) {
    t.i.assign(a->ints().begin(), a->ints().end());
    t.shape = {int64_t(t.i.size())};
  } else {
    return gi.fail("only the value, value_float(s) and value_int(s) "
                   "attributes are supported");
  }
  gi.setOutputConst(0, std::move(t));
  return success();
}

LogicalResult importIdentity(GraphImporter &gi) {
  if (const HostTensor *c = gi.inputConst(0)) {
    gi.setOutputConst(0, *c);
    return success();
  }
  gi.setOutput(0, gi.input(0));
  return success();
}

LogicalResult importShape(GraphImporter &gi) {
  RankedTensorType t = gi.inputType(0);
  int64_t rank = t.getRank();
  int64_t start = gi.intAttr("start", 0), end = gi.intAttr("end", rank);
  if (start < 0)
    start += rank;
  if (end < 0)
    end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, start, rank);
  bool known = true;
  for (int64_t d = start; d < end; ++d)
    known &= !t.isDynamicDim(d);
  if (known) {
    gi.setOutputConst(
        0, HostTensor::ints(std::vector<int64_t>(t.getShape().begin() + start,
                                                 t.getShape().begin() + end)));
    return success();
  }
  Value v = gi.input(0);
  OpBuilder &b = gi.builder();
  SmallVector<Value> dims;
  for (int64_t d = start; d < end; ++d)
    dims.push_back(
        t.isDynamicDim(d)
            ? dimI64(gi, v, d)
            : Value(arith::ConstantOp::create(
                  b, gi.loc(), b.getI64IntegerAttr(t.getDimSize(d)))));
  gi.setOutput(0,
               tensor::FromElementsOp::create(
                   b, gi.loc(),
                   RankedTensorType::get({end - start}, b.getI64Type()), dims));
  return success();
}

/// Size: the element count, a constant when the shape is static.
LogicalResult importSize(GraphImporter &gi) {
  RankedTensorType t = gi.inputType(0);
  if (t.hasStaticShape()) {
    HostTensor n;
    n.shape = {};
    n.i = {t.getNumElements()};
    gi.setOutputConst(0, std::move(n));
    return success();
  }
  OpBuilder &b = gi.builder();
  Value p = dimProduct(gi, gi.input(0), 0, t.getRank());
  Value n = arith::IndexCastOp::create(b, gi.loc(), b.getI64Type(), p);
  gi.setOutput(0, tensor::FromElementsOp::create(
                      b, gi.loc(), RankedTensorType::get({}, b.getI64Type()),
                      ValueRange{n}));
  return success();
}

} // namespace

void moec::onnximport::addShapeOps(OpTable &t) {
  t["Constant"] = importConstant;
  t["Identity"] = importIdentity;
  t["Shape"] = importShape;
  t["Size"] = importSize;
}
