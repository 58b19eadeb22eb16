//===- ImportConv.cpp - ONNX Conv
//------------------------------------------===//
//
// Conv (1-D, 2-D, any rank; groups, strides, dilations, explicit or
// auto_pad padding, optional bias): the short causal convolutions of
// hybrid models (Mamba, Qwen3-Next, LFM2, Jamba: depthwise 1-D, groups =
// channels). Zero padding is a concatenation with zero blocks; the
// convolution one linalg.generic over [N, G, M/G, out...] with reduction
// loops over the group's channels and the kernel window:
//   y[n, g, m, o] += x[n, g, c, o * stride + k * dilation] * w[g, m, c, k]
//
//===----------------------------------------------------------------------===//

#include "GraphImporter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace moec::onnximport;

namespace {

/// `x` with `before[i]` / `after[i]` zeros around spatial dim i (dims 2..).
Value padSpatial(GraphImporter &gi, Value x, ArrayRef<int64_t> before,
                 ArrayRef<int64_t> after) {
  OpBuilder &b = gi.builder();
  for (size_t i = 0; i < before.size(); ++i) {
    if (before[i] == 0 && after[i] == 0)
      continue;
    auto t = cast<RankedTensorType>(x.getType());
    int64_t d = int64_t(i) + 2;
    SmallVector<Value> parts;
    auto zeros = [&](int64_t n) {
      SmallVector<int64_t> shape(t.getShape());
      shape[d] = n;
      auto zt = RankedTensorType::get(shape, t.getElementType());
      return arith::ConstantOp::create(
          b, gi.loc(),
          DenseElementsAttr::get(zt, b.getZeroAttr(t.getElementType())));
    };
    if (before[i])
      parts.push_back(zeros(before[i]));
    parts.push_back(x);
    if (after[i])
      parts.push_back(zeros(after[i]));
    x = tensor::ConcatOp::create(b, gi.loc(), d, parts);
  }
  return x;
}

LogicalResult importConv(GraphImporter &gi) {
  if (gi.numInputs() < 2 || gi.numInputs() > 3)
    return gi.fail("expects 2 or 3 inputs (X, W, optional B)");
  RankedTensorType xt = gi.inputType(0), wt = gi.inputType(1);
  if (!xt.hasStaticShape() || !wt.hasStaticShape())
    return gi.fail("needs static input and weight shapes");
  Type elt = xt.getElementType();
  if (!isa<FloatType>(elt) || wt.getElementType() != elt)
    return gi.fail("supports floating-point X and W of one type");
  int64_t rank = xt.getRank(), sp = rank - 2;
  if (sp < 1 || wt.getRank() != rank)
    return gi.fail("expects X [N, C, spatial...] and W [M, C/group, "
                   "kernel...] of the same rank");
  int64_t n = xt.getDimSize(0), c = xt.getDimSize(1), m = wt.getDimSize(0);
  int64_t groups = gi.intAttr("group", 1);
  if (groups < 1 || c % groups || m % groups || wt.getDimSize(1) != c / groups)
    return gi.fail("group " + Twine(groups) + " does not divide the " +
                   Twine(c) + " input channels and " + Twine(m) +
                   " filters (W dim 1 must be C/group)");
  int64_t cg = c / groups, mg = m / groups;
  auto list = [&](StringRef name, int64_t size, int64_t dflt) {
    std::vector<int64_t> v = gi.intsAttr(name);
    if (v.empty())
      v.assign(size_t(size), dflt);
    return v;
  };
  std::vector<int64_t> kernel(wt.getShape().begin() + 2, wt.getShape().end());
  std::vector<int64_t> strides = list("strides", sp, 1);
  std::vector<int64_t> dil = list("dilations", sp, 1);
  std::vector<int64_t> pads = list("pads", 2 * sp, 0);
  std::vector<int64_t> ks = gi.intsAttr("kernel_shape");
  if (int64_t(strides.size()) != sp || int64_t(dil.size()) != sp ||
      int64_t(pads.size()) != 2 * sp || (!ks.empty() && ks != kernel))
    return gi.fail("strides, dilations, pads or kernel_shape do not match "
                   "the " +
                   Twine(sp) + " spatial dims of W");
  std::string autoPad = gi.strAttr("auto_pad", "NOTSET");
  SmallVector<int64_t> out;
  for (int64_t i = 0; i < sp; ++i) {
    int64_t in = xt.getDimSize(2 + i);
    int64_t span = (kernel[i] - 1) * dil[i] + 1;
    if (strides[i] < 1 || dil[i] < 1)
      return gi.fail("strides and dilations must be positive");
    if (autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER") {
      int64_t o = (in + strides[i] - 1) / strides[i];
      int64_t total = std::max<int64_t>(0, (o - 1) * strides[i] + span - in);
      int64_t small = total / 2, big = total - small;
      pads[i] = autoPad == "SAME_UPPER" ? small : big;
      pads[sp + i] = autoPad == "SAME_UPPER" ? big : small;
    } else if (autoPad == "VALID") {
      pads[i] = pads[sp + i] = 0;
    } else if (autoPad != "NOTSET") {
      return gi.fail("auto_pad '" + autoPad + "' is not supported");
    }
    if (pads[i] < 0 || pads[sp + i] < 0)
      return gi.fail("negative pads are not supported");
    int64_t padded = in + pads[i] + pads[sp + i];
    if (padded < span)
      return gi.fail("the kernel window is larger than the padded input");
    out.push_back((padded - span) / strides[i] + 1);
  }
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value x = padSpatial(gi, gi.input(0), ArrayRef<int64_t>(pads).take_front(sp),
                       ArrayRef<int64_t>(pads).drop_front(sp));
  auto padded = cast<RankedTensorType>(x.getType());
  // x [N, G, C/G, S...], w [G, M/G, C/G, K...], y [N, G, M/G, O...].
  SmallVector<int64_t> xs = {n, groups, cg}, ws = {groups, mg, cg},
                       ys = {n, groups, mg};
  xs.append(padded.getShape().begin() + 2, padded.getShape().end());
  ws.append(kernel.begin(), kernel.end());
  ys.append(out.begin(), out.end());
  Value xg = gi.reshape(x, xs), wg = gi.reshape(gi.input(1), ws);
  Value init = linalg::FillOp::create(b, loc, ValueRange{gi.scalar(elt, 0.0)},
                                      ValueRange{gi.emptyTensor(ys, elt, {})})
                   .getResult(0);
  // Loops: n, g, m, o_0.., c, k_0...
  unsigned loops = 4 + 2 * unsigned(sp);
  auto d = [&](unsigned i) { return b.getAffineDimExpr(i); };
  unsigned cLoop = 3 + unsigned(sp);
  SmallVector<AffineExpr> xe = {d(0), d(1), d(cLoop)},
                          we = {d(1), d(2), d(cLoop)}, ye = {d(0), d(1), d(2)};
  for (int64_t i = 0; i < sp; ++i) {
    AffineExpr o = d(3 + unsigned(i)), k = d(cLoop + 1 + unsigned(i));
    xe.push_back(o * strides[i] + k * dil[i]);
    we.push_back(k);
    ye.push_back(o);
  }
  SmallVector<AffineMap> maps = {AffineMap::get(loops, 0, xe, b.getContext()),
                                 AffineMap::get(loops, 0, we, b.getContext()),
                                 AffineMap::get(loops, 0, ye, b.getContext())};
  SmallVector<utils::IteratorType> iters(loops, utils::IteratorType::parallel);
  for (unsigned i = cLoop; i < loops; ++i)
    iters[i] = utils::IteratorType::reduction;
  Value y = linalg::GenericOp::create(
                b, loc, TypeRange{init.getType()}, ValueRange{xg, wg},
                ValueRange{init}, maps, iters,
                [](OpBuilder &bb, Location l, ValueRange a) {
                  Value p = arith::MulFOp::create(bb, l, a[0], a[1]);
                  linalg::YieldOp::create(
                      bb, l, ValueRange{arith::AddFOp::create(bb, l, a[2], p)});
                })
                .getResult(0);
  SmallVector<int64_t> flat = {n, m};
  flat.append(out.begin(), out.end());
  y = gi.reshape(y, flat);
  if (gi.numInputs() == 3 && gi.hasInput(2)) {
    RankedTensorType bt = gi.inputType(2);
    if (bt.getRank() != 1 || bt.getDimSize(0) != m ||
        bt.getElementType() != elt)
      return gi.fail("bias B must be [" + Twine(m) + "] of X's type");
    // B [M] broadcast as [M, 1, ...] against [N, M, O...].
    SmallVector<int64_t> bs = {m};
    bs.append(size_t(sp), 1);
    FailureOr<Value> r =
        gi.elementwise(ValueRange{y, gi.reshape(gi.input(2), bs)}, elt,
                       [](OpBuilder &bb, Location l, ValueRange a) -> Value {
                         return arith::AddFOp::create(bb, l, a[0], a[1]);
                       });
    if (failed(r))
      return failure();
    y = *r;
  }
  gi.setOutput(0, y);
  return success();
}

} // namespace

void moec::onnximport::addConvOps(OpTable &t) { t["Conv"] = importConv; }
