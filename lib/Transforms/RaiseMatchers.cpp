//===- RaiseMatchers.cpp - matchers shared by moe-raise-experts -----------===//
//
// The small matchers the router, expert FFN and layer matchers of
// moe-raise-experts build on: views, element-wise generics, constants,
// backward slices.
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/IR/Matchers.h"

using namespace mlir;
using namespace moec;

namespace moec::raising {

/// Looks through ops that only change the view of a tensor.
Value skipViews(Value v) {
  while (Operation *def = v.getDefiningOp()) {
    if (auto r = dyn_cast<tensor::ReshapeOp>(def))
      v = r.getSource();
    else if (auto c = dyn_cast<tensor::CastOp>(def))
      v = c.getSource();
    else if (auto c = dyn_cast<tensor::CollapseShapeOp>(def))
      v = c.getSrc();
    else if (auto e = dyn_cast<tensor::ExpandShapeOp>(def))
      v = e.getSrc();
    else
      break;
  }
  return v;
}

/// The body ops of a single-result linalg.generic, terminator excluded.
SmallVector<Operation *> bodyOps(linalg::GenericOp g) {
  SmallVector<Operation *> ops;
  for (Operation &op : g.getBody()->without_terminator())
    ops.push_back(&op);
  return ops;
}

/// A one-input generic computing sigmoid (1 / (1 + exp(-x))): its input.
Value matchSigmoid(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1)
    return {};
  SmallVector<Operation *> ops = bodyOps(g);
  if (ops.size() != 4 || !isa<arith::NegFOp>(ops[0]) ||
      !isa<math::ExpOp>(ops[1]) || !isa<arith::AddFOp>(ops[2]) ||
      !isa<arith::DivFOp>(ops[3]) ||
      ops[0]->getOperand(0) != g.getBody()->getArgument(0))
    return {};
  return g.getDpsInputs()[0];
}

/// The value of a scalar float constant (a rank-0 or splat tensor constant,
/// or a scalar constant).
std::optional<double> scalarFloat(Value v) {
  auto c = skipViews(v).getDefiningOp<arith::ConstantOp>();
  if (!c)
    return std::nullopt;
  if (auto f = dyn_cast<FloatAttr>(c.getValue()))
    return f.getValueAsDouble();
  auto d = dyn_cast<DenseFPElementsAttr>(c.getValue());
  if (!d || (!d.isSplat() && d.getNumElements() != 1))
    return std::nullopt;
  return (*d.getValues<APFloat>().begin()).convertToDouble();
}

/// True when `v` is a constant tensor of zeros.
bool isZeroConstant(Value v) {
  auto c = skipViews(v).getDefiningOp<arith::ConstantOp>();
  if (!c)
    return false;
  if (auto r = dyn_cast<DenseResourceElementsAttr>(c.getValue())) {
    AsmResourceBlob *blob = r.getRawHandle().getBlob();
    return blob && llvm::all_of(blob->getData(), [](char b) { return b == 0; });
  }
  auto dense = dyn_cast<DenseElementsAttr>(c.getValue());
  return dense && dense.isSplat() &&
         (isa<FloatType>(dense.getElementType())
              ? dense.getSplatValue<APFloat>().isZero()
              : dense.getSplatValue<APInt>().isZero());
}

/// An integer constant: a scalar, or a one-element tensor.
std::optional<int64_t> constantInt(Value v) {
  APInt c;
  if (matchPattern(v, m_ConstantInt(&c)))
    return c.getSExtValue();
  DenseIntElementsAttr d;
  if (matchPattern(skipViews(v), m_Constant(&d)) && d.getNumElements() == 1)
    return (*d.begin()).getSExtValue();
  return std::nullopt;
}

/// The backward slice of `v` (ops it depends on).
SetVector<Operation *> sliceOf(Value v) {
  SetVector<Operation *> slice;
  BackwardSliceOptions opts;
  opts.inclusive = true;
  // Gathers read their source inside the body (tensor.extract).
  opts.omitUsesFromAbove = false;
  (void)getBackwardSlice(v, &slice, opts);
  return slice;
}

Value reshapeTo(OpBuilder &b, Location loc, Value v, ArrayRef<int64_t> shape) {
  auto t = cast<RankedTensorType>(v.getType());
  auto to = RankedTensorType::get(shape, t.getElementType());
  if (t == to)
    return v;
  auto shapeT = RankedTensorType::get({int64_t(shape.size())}, b.getI64Type());
  auto c = arith::ConstantOp::create(b, loc,
                                     DenseIntElementsAttr::get(shapeT, shape));
  return tensor::ReshapeOp::create(b, loc, to, v, c);
}

Value collapseLeading(OpBuilder &b, Location loc, Value v) {
  auto t = cast<RankedTensorType>(v.getType());
  if (t.getRank() == 2)
    return v;
  SmallVector<ReassociationIndices> groups(2);
  for (int64_t d = 0; d + 1 < t.getRank(); ++d)
    groups[0].push_back(d);
  groups[1].push_back(t.getRank() - 1);
  return tensor::CollapseShapeOp::create(b, loc, v, groups);
}

} // namespace moec::raising
