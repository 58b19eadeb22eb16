//===- ImportPad.cpp - ONNX Pad -------------------------------------------===//
//
// Pad (opsets 13 to 22: pads and constant_value as inputs; the axes of 18
// are spread over all dims by the opset adaptation) with
// every mode: constant, edge, reflect, wrap. Pads must be known when the
// model is imported; negative pads crop. One linalg.generic reads, for
// each output position o along dim d, the input at s = o - begin[d]:
// constant mode yields the value where s is outside [0, n) (reading a
// clamped index, so the read stays in bounds), edge clamps s, reflect
// mirrors it about the ends without repeating them (numpy "reflect"), wrap
// takes it modulo n.
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

enum class PadMode { constant, edge, reflect, wrap };

LogicalResult importPad(GraphImporter &gi) {
  RankedTensorType in = gi.inputType(0);
  int64_t rank = in.getRank();
  std::string modeName = gi.strAttr("mode", "constant");
  PadMode mode;
  if (modeName == "constant")
    mode = PadMode::constant;
  else if (modeName == "edge")
    mode = PadMode::edge;
  else if (modeName == "reflect")
    mode = PadMode::reflect;
  else if (modeName == "wrap")
    mode = PadMode::wrap;
  else
    return gi.fail("mode '" + modeName +
                   "' is not one of constant, edge, reflect, wrap");
  if (!gi.hasInput(1))
    return gi.fail("needs the pads input");
  FailureOr<std::vector<int64_t>> pads = constInts(gi, 1, "pads");
  if (failed(pads))
    return failure();
  // Pad-18's axes were spread over all dims by the opset adaptation
  // (OnnxImporter.cpp): begins, then ends, one per dim.
  if (int64_t(pads->size()) != 2 * rank)
    return gi.fail("pads has " + Twine(pads->size()) + " entries; " +
                   Twine(2 * rank) + " expected (begin and end per dim)");
  std::vector<int64_t> begin(pads->begin(), pads->begin() + rank),
      end(pads->begin() + rank, pads->end());
  Shape shape;
  for (int64_t d = 0; d < rank; ++d) {
    if (in.isDynamicDim(d)) {
      if (begin[d] || end[d])
        return gi.fail("padding dim " + Twine(d) +
                       ", whose size is only known at run time, is not "
                       "supported");
      shape.push_back(ShapedType::kDynamic);
      continue;
    }
    int64_t n = in.getDimSize(d), out = n + begin[d] + end[d];
    if (out < 0 || (out > 0 && n == 0))
      return gi.fail("pads " + Twine(begin[d]) + ", " + Twine(end[d]) +
                     " do not fit dim " + Twine(d) + " of size " + Twine(n));
    // reflect needs 2 or more entries and mirrors at most n - 1 of them.
    if (mode == PadMode::reflect && (begin[d] || end[d]) &&
        (n < 2 || begin[d] > n - 1 || end[d] > n - 1))
      return gi.fail("reflect pads " + Twine(begin[d]) + ", " + Twine(end[d]) +
                     " exceed dim " + Twine(d) + " of size " + Twine(n) +
                     " (at most size - 1 each)");
    shape.push_back(out);
  }
  Type elt = in.getElementType();
  Value fill;
  if (mode == PadMode::constant) {
    if (gi.hasInput(2)) {
      const HostTensor *c = gi.inputConst(2);
      if (!c || c->size() != 1)
        return gi.fail("constant_value must be a known scalar");
      fill = gi.scalar(elt, c->asDouble(0));
    } else {
      fill = gi.scalar(elt, 0.0);
    }
  }
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value v = gi.input(0);
  SmallVector<Value> dyn;
  for (int64_t d = 0; d < rank; ++d)
    if (ShapedType::isDynamic(shape[d]))
      dyn.push_back(gi.dim(v, d));
  Value init = gi.emptyTensor(shape, elt, dyn);
  SmallVector<AffineMap> maps = {b.getMultiDimIdentityMap(rank)};
  SmallVector<utils::IteratorType> iters(rank, utils::IteratorType::parallel);
  auto g = linalg::GenericOp::create(
      b, loc, TypeRange{init.getType()}, ValueRange{}, ValueRange{init}, maps,
      iters, [&](OpBuilder &bb, Location l, ValueRange) {
        auto idx = [&](int64_t c) -> Value {
          return arith::ConstantIndexOp::create(bb, l, c);
        };
        Value inside;
        SmallVector<Value> coords;
        for (int64_t d = 0; d < rank; ++d) {
          Value o = linalg::IndexOp::create(bb, l, d);
          if (!begin[d] && !end[d]) {
            coords.push_back(o);
            continue;
          }
          int64_t n = in.getDimSize(d);
          Value s = arith::SubIOp::create(bb, l, o, idx(begin[d]));
          Value zero = idx(0), last = idx(n - 1);
          auto clamp = [&](Value x) -> Value {
            return arith::MinSIOp::create(
                bb, l, arith::MaxSIOp::create(bb, l, x, zero), last);
          };
          switch (mode) {
          case PadMode::constant: {
            Value ok = arith::AndIOp::create(
                bb, l,
                arith::CmpIOp::create(bb, l, arith::CmpIPredicate::sge, s,
                                      zero),
                arith::CmpIOp::create(bb, l, arith::CmpIPredicate::sle, s,
                                      last));
            inside = inside ? arith::AndIOp::create(bb, l, inside, ok) : ok;
            s = clamp(s);
            break;
          }
          case PadMode::edge:
            s = clamp(s);
            break;
          case PadMode::reflect: {
            // |s| mirrors the start, 2 (n - 1) - s the end.
            Value neg = arith::SubIOp::create(bb, l, zero, s);
            s = arith::MaxSIOp::create(bb, l, s, neg);
            Value far = arith::SubIOp::create(bb, l, idx(2 * (n - 1)), s);
            s = arith::MinSIOp::create(bb, l, s, far);
            break;
          }
          case PadMode::wrap: {
            // ((s mod n) + n) mod n, non-negative.
            Value nn = idx(n);
            Value r = arith::RemSIOp::create(bb, l, s, nn);
            s = arith::RemSIOp::create(bb, l,
                                       arith::AddIOp::create(bb, l, r, nn), nn);
            break;
          }
          }
          coords.push_back(s);
        }
        Value x = tensor::ExtractOp::create(bb, l, v, coords);
        if (inside)
          x = arith::SelectOp::create(bb, l, inside, x, fill);
        linalg::YieldOp::create(bb, l, x);
      });
  gi.setOutput(0, g.getResult(0));
  return success();
}

} // namespace

void moec::onnximport::addPadOps(OpTable &t) { t["Pad"] = importPad; }
