//===- TokenSlice.cpp - slicing MoE rows over ranks -----------------------===//

#include "TokenSlice.h"

#include "moec/Analysis/Mesh.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace moec;

Value moec::sliceRows(OpBuilder &b, Location loc, Value v, int64_t n,
                      ArrayRef<int16_t> axes, int64_t experts) {
  auto vt = cast<RankedTensorType>(v.getType());
  SmallVector<int64_t> shape(vt.getShape());
  int64_t t = shape[0], padded = paddedRows(t, n);
  if (padded != t) {
    shape[0] = padded - t;
    auto zt = RankedTensorType::get(shape, vt.getElementType());
    DenseElementsAttr pad;
    if (auto it = dyn_cast<IntegerType>(vt.getElementType())) {
      SmallVector<APInt> ids;
      for (int64_t i = 0; i < zt.getNumElements(); ++i)
        ids.push_back(APInt(it.getWidth(), i % experts));
      pad = DenseElementsAttr::get(zt, ids);
    } else {
      pad = DenseElementsAttr::get(zt, b.getZeroAttr(vt.getElementType()));
    }
    Value rows = arith::ConstantOp::create(b, loc, pad);
    v = tensor::ConcatOp::create(b, loc, /*dim=*/0, ValueRange{v, rows});
  }
  shape[0] = padded / n;
  return shard::AllSliceOp::create(
      b, loc, RankedTensorType::get(shape, vt.getElementType()), v, kGridName,
      axes, /*sliceAxis=*/0);
}

RankedTensorType moec::localRowsType(Type rows, int64_t n) {
  auto rt = cast<RankedTensorType>(rows);
  SmallVector<int64_t> shape(rt.getShape());
  shape[0] = paddedRows(shape[0], n) / n;
  return RankedTensorType::get(shape, rt.getElementType());
}

void moec::gatherRowUses(Value rows, int64_t n, int64_t t,
                         ArrayRef<int16_t> axes) {
  OpBuilder b(rows.getContext());
  b.setInsertionPointAfterValue(rows);
  Location loc = rows.getLoc();
  auto rt = cast<RankedTensorType>(rows.getType());
  SmallVector<int64_t> shape(rt.getShape());
  int64_t padded = paddedRows(t, n);
  shape[0] = padded;
  auto gather = shard::AllGatherOp::create(
      b, loc, RankedTensorType::get(shape, rt.getElementType()), kGridName,
      axes, rows, APInt(64, 0));
  Value all = gather;
  if (padded != t) {
    shape[0] = t;
    SmallVector<OpFoldResult> offsets(shape.size(), b.getIndexAttr(0)),
        strides(shape.size(), b.getIndexAttr(1)), sizes;
    for (int64_t d : shape)
      sizes.push_back(b.getIndexAttr(d));
    all = tensor::ExtractSliceOp::create(
        b, loc, RankedTensorType::get(shape, rt.getElementType()), gather,
        offsets, sizes, strides);
  }
  rows.replaceAllUsesExcept(all, gather);
}
