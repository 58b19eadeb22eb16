//===- ImportSlice.cpp - transpose, concat, split, slice ONNX ops ---------===//
//
// Transpose Concat Split Slice, and sliceAxis (GraphImporter.h).
//
//===----------------------------------------------------------------------===//

#include "GraphImporter.h"
#include "ShapeHelpers.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Matchers.h"

using namespace mlir;
using namespace moec::onnximport;

namespace {

LogicalResult importTranspose(GraphImporter &gi) {
  RankedTensorType in = gi.inputType(0);
  int64_t rank = in.getRank();
  std::vector<int64_t> perm = gi.intsAttr("perm");
  if (perm.empty())
    for (int64_t d = rank - 1; d >= 0; --d)
      perm.push_back(d);
  if (int64_t(perm.size()) != rank)
    return gi.fail("perm has " + Twine(perm.size()) + " entries for rank " +
                   Twine(rank));
  SmallVector<bool> seen(rank, false);
  for (int64_t p : perm) {
    if (p < 0 || p >= rank || seen[p])
      return gi.fail("perm is not a permutation");
    seen[p] = true;
  }
  Shape shape;
  for (int64_t p : perm)
    shape.push_back(in.getDimSize(p));
  if (gi.allInputsConst()) {
    const HostTensor *c = gi.inputConst(0);
    Shape st = strides(c->shape);
    gi.setOutputConst(0, hostGather(*c, shape, [&](ArrayRef<int64_t> pos) {
                        int64_t s = 0;
                        for (int64_t d = 0; d < rank; ++d)
                          s += pos[d] * st[perm[d]];
                        return s;
                      }));
    return success();
  }
  Value v = gi.input(0);
  SmallVector<Value> dyn;
  for (int64_t d = 0; d < rank; ++d)
    if (isDyn(shape[d]))
      dyn.push_back(gi.dim(v, perm[d]));
  Value init = gi.emptyTensor(shape, in.getElementType(), dyn);
  auto op = linalg::TransposeOp::create(gi.builder(), gi.loc(), v, init, perm);
  gi.setOutput(0, op.getResult()[0]);
  return success();
}

LogicalResult importConcat(GraphImporter &gi) {
  unsigned n = gi.numInputs();
  if (n == 0)
    return gi.fail("needs at least one input");
  int64_t rank = gi.inputType(0).getRank();
  FailureOr<int64_t> axis = normAxis(gi, gi.intAttr("axis", 0), rank);
  if (failed(axis))
    return failure();
  // The inputs agree in rank, element type and every dim but the axis.
  RankedTensorType t0 = gi.inputType(0);
  for (unsigned i = 1; i < n; ++i) {
    RankedTensorType t = gi.inputType(i);
    std::string which = "input " + std::to_string(i) + " ";
    if (t.getRank() != rank)
      return gi.fail(which + "has rank " + std::to_string(t.getRank()) +
                     ", input 0 has rank " + std::to_string(rank));
    if (t.getElementType() != t0.getElementType())
      return gi.fail(which + "has another element type than input 0");
    for (int64_t d = 0; d < rank; ++d)
      if (d != *axis && !isDyn(t.getDimSize(d)) && !isDyn(t0.getDimSize(d)) &&
          t.getDimSize(d) != t0.getDimSize(d))
        return gi.fail(which + "has size " + std::to_string(t.getDimSize(d)) +
                       " in dim " + std::to_string(d) + ", input 0 has " +
                       std::to_string(t0.getDimSize(d)));
  }
  if (gi.allInputsConst()) {
    HostTensor out;
    out.dtype = gi.inputConst(0)->dtype;
    out.shape = gi.inputConst(0)->shape;
    out.shape[*axis] = 0;
    for (unsigned i = 0; i < n; ++i)
      out.shape[*axis] += gi.inputConst(i)->shape[*axis];
    int64_t outer = 1;
    for (int64_t d = 0; d < *axis; ++d)
      outer *= out.shape[d];
    for (int64_t o = 0; o < outer; ++o)
      for (unsigned i = 0; i < n; ++i) {
        const HostTensor *c = gi.inputConst(i);
        int64_t chunk = outer ? c->size() / outer : 0;
        for (int64_t k = 0; k < chunk; ++k) {
          if (out.isFloat())
            out.f.push_back(c->f[o * chunk + k]);
          else
            out.i.push_back(c->i[o * chunk + k]);
        }
      }
    gi.setOutputConst(0, std::move(out));
    return success();
  }
  SmallVector<Value> ins;
  for (unsigned i = 0; i < n; ++i) {
    // Empty inputs (size 0 along the axis) are dropped, as ONNX allows.
    if (gi.inputType(i).getDimSize(*axis) == 0)
      continue;
    ins.push_back(gi.input(i));
  }
  if (ins.size() <= 1) {
    gi.setOutput(0, ins.empty() ? gi.input(0) : ins[0]);
    return success();
  }
  gi.setOutput(0, tensor::ConcatOp::create(gi.builder(), gi.loc(), *axis, ins));
  return success();
}

} // namespace

Value moec::onnximport::sliceAxis(GraphImporter &gi, Value v, int64_t axis,
                                  OpFoldResult offset, OpFoldResult size,
                                  int64_t step) {
  OpBuilder &b = gi.builder();
  auto t = cast<RankedTensorType>(v.getType());
  SmallVector<OpFoldResult> offsets, sizes, steps;
  for (int64_t d = 0; d < t.getRank(); ++d) {
    if (d == axis) {
      offsets.push_back(offset);
      sizes.push_back(size);
      steps.push_back(b.getIndexAttr(step));
    } else {
      offsets.push_back(b.getIndexAttr(0));
      sizes.push_back(t.isDynamicDim(d) ? OpFoldResult(gi.dim(v, d))
                                        : b.getIndexAttr(t.getDimSize(d)));
      steps.push_back(b.getIndexAttr(1));
    }
  }
  return tensor::ExtractSliceOp::create(b, gi.loc(), v, offsets, sizes, steps);
}

namespace {

/// Split by sizes computed at run time (JetMoE's `inputs.split(expert_size)`
/// of tokens sorted by expert): output o is the slice [off_o, off_o + n_o)
/// of `axis`, n_o = sizes[o] read with tensor.extract and off_o the running
/// sum n_0 + ... + n_{o-1} (0 for the first). The shapes are data-
/// dependent: only a raised MoE layer (moe-raise-experts' grouped form)
/// makes them static again; elsewhere moe-shard stops at them with an error.
LogicalResult importSplitBySizesAtRunTime(GraphImporter &gi, int64_t axis) {
  RankedTensorType sizesT = gi.inputType(1);
  unsigned outs = gi.numOutputs();
  if (sizesT.getRank() != 1 || !sizesT.getElementType().isInteger(64) ||
      sizesT.getDimSize(0) != int64_t(outs))
    return gi.fail("split computed at run time must be an int64 [" +
                   Twine(outs) + "] tensor, one size per output");
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value v = gi.input(0), sizes = gi.input(1);
  Value off = arith::ConstantIndexOp::create(b, loc, 0);
  for (unsigned o = 0; o < outs; ++o) {
    Value at = arith::ConstantIndexOp::create(b, loc, o);
    Value n = toIndex(gi, tensor::ExtractOp::create(b, loc, sizes, at));
    gi.setOutput(o, sliceAxis(gi, v, axis, off, n, 1));
    off = arith::AddIOp::create(b, loc, off, n);
  }
  return success();
}

LogicalResult importSplit(GraphImporter &gi) {
  RankedTensorType in = gi.inputType(0);
  FailureOr<int64_t> axis = normAxis(gi, gi.intAttr("axis", 0), in.getRank());
  if (failed(axis))
    return failure();
  unsigned outs = gi.numOutputs();
  if (gi.hasInput(1) && !gi.inputConst(1))
    return importSplitBySizesAtRunTime(gi, *axis);
  FailureOr<std::vector<int64_t>> sizesOr = intsFromInputOrAttr(gi, 1, "split");
  if (failed(sizesOr))
    return failure();
  std::vector<int64_t> sizes = std::move(*sizesOr);
  int64_t dim = in.getDimSize(*axis);
  if (!sizes.empty()) {
    if (sizes.size() != outs)
      return gi.fail("split has " + Twine(sizes.size()) + " sizes for " +
                     Twine(outs) + " outputs");
    int64_t total = 0;
    for (int64_t s : sizes)
      total += s;
    if (!isDyn(dim) && total != dim)
      return gi.fail("split sizes add up to " + Twine(total) +
                     ", the axis has " + Twine(dim));
  } else if (!isDyn(dim) && gi.hasAttr("num_outputs")) {
    // Opset 18: ceil(dim / n) per output, the last one smaller.
    int64_t chunk = (dim + outs - 1) / outs;
    for (unsigned o = 0; o < outs; ++o)
      sizes.push_back(std::clamp<int64_t>(dim - chunk * o, 0, chunk));
  } else if (!isDyn(dim)) {
    if (dim % outs)
      return gi.fail("axis of size " + Twine(dim) + " does not split into " +
                     Twine(outs) + " equal parts");
    sizes.assign(outs, dim / outs);
  }
  if (const HostTensor *c = gi.inputConst(0);
      c && !sizes.empty() && c->size() <= (1 << 16)) {
    Shape st = strides(c->shape);
    int64_t off = 0;
    for (unsigned o = 0; o < outs; ++o) {
      Shape shape(c->shape.begin(), c->shape.end());
      shape[*axis] = sizes[o];
      gi.setOutputConst(o, hostGather(*c, shape, [&](ArrayRef<int64_t> pos) {
                          int64_t k = 0;
                          for (size_t d = 0; d < pos.size(); ++d)
                            k += (pos[d] + (int64_t(d) == *axis ? off : 0)) *
                                 st[d];
                          return k;
                        }));
      off += sizes[o];
    }
    return success();
  }
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value v = gi.input(0);
  if (sizes.empty()) {
    // Equal parts of a dynamic axis.
    Value part = arith::DivUIOp::create(
        b, loc, gi.dim(v, *axis), arith::ConstantIndexOp::create(b, loc, outs));
    for (unsigned o = 0; o < outs; ++o) {
      Value off = arith::MulIOp::create(
          b, loc, part, arith::ConstantIndexOp::create(b, loc, o));
      gi.setOutput(o, sliceAxis(gi, v, *axis, off, part, 1));
    }
    return success();
  }
  int64_t off = 0;
  for (unsigned o = 0; o < outs; ++o) {
    gi.setOutput(o, sliceAxis(gi, v, *axis, b.getIndexAttr(off),
                              b.getIndexAttr(sizes[o]), 1));
    off += sizes[o];
  }
  return success();
}

LogicalResult importSlice(GraphImporter &gi) {
  RankedTensorType in = gi.inputType(0);
  int64_t rank = in.getRank();
  FailureOr<std::vector<int64_t>> starts = constInts(gi, 1, "starts");
  FailureOr<std::vector<int64_t>> ends = constInts(gi, 2, "ends");
  if (failed(starts) || failed(ends))
    return failure();
  std::vector<int64_t> axes, steps;
  if (gi.hasInput(3)) {
    FailureOr<std::vector<int64_t>> a = constInts(gi, 3, "axes");
    if (failed(a))
      return failure();
    axes = *a;
  } else {
    for (size_t i = 0; i < starts->size(); ++i)
      axes.push_back(int64_t(i));
  }
  if (gi.hasInput(4)) {
    FailureOr<std::vector<int64_t>> s = constInts(gi, 4, "steps");
    if (failed(s))
      return failure();
    steps = *s;
  } else {
    steps.assign(starts->size(), 1);
  }
  if (starts->size() != ends->size() || axes.size() != starts->size() ||
      steps.size() != starts->size())
    return gi.fail("starts, ends, axes and steps differ in length");
  // Per dim: offset, size, step (dynamic sizes as index values).
  Shape offs(rank, 0), sizes(in.getShape()), stps(rank, 1);
  SmallVector<Value> dynSize(rank), dynOff(rank);
  bool anyNegative = false;
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value v;
  for (size_t i = 0; i < axes.size(); ++i) {
    FailureOr<int64_t> ax = normAxis(gi, axes[i], rank);
    if (failed(ax))
      return failure();
    int64_t step = steps[i];
    if (step == 0)
      return gi.fail("step 0 is invalid (axis " + Twine(*ax) + ")");
    if (step < 0)
      anyNegative = true;
    int64_t d = in.getDimSize(*ax), s = (*starts)[i], e = (*ends)[i];
    if (isDyn(d)) {
      // Clamp at run time: negative bounds count from the end, then both
      // are clamped to [0, size] (step > 0) or start to [0, size - 1] and
      // end to [-1, size - 1] (step < 0); the length is
      // ceil(max(end - start, 0) / step).
      if (!v)
        v = gi.input(0);
      Value dimV = gi.dim(v, *ax);
      auto cst = [&](int64_t x) -> Value {
        return arith::ConstantIndexOp::create(b, loc, x);
      };
      // Clamped to [lo, size + hiAdj].
      auto bound = [&](int64_t x, int64_t lo, int64_t hiAdj) -> Value {
        Value hi = hiAdj
                       ? Value(arith::AddIOp::create(b, loc, dimV, cst(hiAdj)))
                       : dimV;
        if (x >= (int64_t(1) << 31))
          return hi; // "to the end"
        if (x >= 0)
          return arith::MinSIOp::create(b, loc, cst(x), hi);
        Value w = arith::MaxSIOp::create(
            b, loc, arith::AddIOp::create(b, loc, dimV, cst(x)), cst(lo));
        return hiAdj ? Value(arith::MinSIOp::create(b, loc, w, hi)) : w;
      };
      Value start, len;
      if (step > 0) {
        start = s == 0 ? cst(0) : bound(s, 0, 0);
        len = arith::SubIOp::create(b, loc, bound(e, 0, 0), start);
      } else {
        start = bound(s, 0, -1);
        len = arith::SubIOp::create(b, loc, start, bound(e, -1, -1));
      }
      len = arith::MaxSIOp::create(b, loc, len, cst(0));
      int64_t absStep = step > 0 ? step : -step;
      if (absStep != 1)
        len = arith::DivUIOp::create(
            b, loc, arith::AddIOp::create(b, loc, len, cst(absStep - 1)),
            cst(absStep));
      if (s != 0 || step < 0)
        dynOff[*ax] = start;
      offs[*ax] = 0;
      stps[*ax] = step;
      sizes[*ax] = ShapedType::kDynamic;
      dynSize[*ax] = len;
      continue;
    }
    if (s < 0)
      s += d;
    if (e < 0)
      e += d;
    stps[*ax] = step;
    if (step > 0) {
      s = std::clamp<int64_t>(s, 0, d);
      e = std::clamp<int64_t>(e, 0, d);
      sizes[*ax] = e > s ? (e - s + step - 1) / step : 0;
      // An empty slice starts at 0 (an offset at the dim's end is out of
      // bounds for tensor.extract_slice).
      offs[*ax] = sizes[*ax] ? s : 0;
    } else {
      s = std::clamp<int64_t>(s, 0, std::max<int64_t>(d - 1, 0));
      e = std::clamp<int64_t>(e, -1, d - 1);
      offs[*ax] = s;
      sizes[*ax] = d > 0 && s > e ? (s - e - step - 1) / -step : 0;
    }
  }
  if (const HostTensor *c = gi.inputConst(0); c && c->size() <= (1 << 16)) {
    Shape st = strides(c->shape);
    gi.setOutputConst(0, hostGather(*c, sizes, [&](ArrayRef<int64_t> pos) {
                        int64_t k = 0;
                        for (int64_t d = 0; d < rank; ++d)
                          k += (offs[d] + pos[d] * stps[d]) * st[d];
                        return k;
                      }));
    return success();
  }
  if (!v)
    v = gi.input(0);
  if (anyNegative) {
    // tensor.extract_slice has no negative strides: a linalg.generic reads
    // element offset + i * step of each dim.
    SmallVector<Value> dyn, off(rank);
    for (int64_t d = 0; d < rank; ++d) {
      if (isDyn(sizes[d]))
        dyn.push_back(dynSize[d] ? dynSize[d] : gi.dim(v, d));
      if (dynOff[d])
        off[d] = dynOff[d];
      else if (offs[d] != 0)
        off[d] = arith::ConstantIndexOp::create(b, loc, offs[d]);
    }
    Value init = gi.emptyTensor(sizes, in.getElementType(), dyn);
    SmallVector<AffineMap> maps = {b.getMultiDimIdentityMap(rank)};
    SmallVector<utils::IteratorType> iters(rank, utils::IteratorType::parallel);
    auto g = linalg::GenericOp::create(
        b, loc, TypeRange{init.getType()}, ValueRange{}, ValueRange{init}, maps,
        iters, [&](OpBuilder &bb, Location l, ValueRange) {
          SmallVector<Value> coords;
          for (int64_t d = 0; d < rank; ++d) {
            Value i = linalg::IndexOp::create(bb, l, d);
            if (stps[d] != 1)
              i = arith::MulIOp::create(
                  bb, l, i, arith::ConstantIndexOp::create(bb, l, stps[d]));
            if (off[d])
              i = arith::AddIOp::create(bb, l, off[d], i);
            coords.push_back(i);
          }
          linalg::YieldOp::create(
              bb, l, Value(tensor::ExtractOp::create(bb, l, v, coords)));
        });
    gi.setOutput(0, g.getResult(0));
    return success();
  }
  SmallVector<OpFoldResult> o, s, st;
  for (int64_t d = 0; d < rank; ++d) {
    o.push_back(dynOff[d] ? OpFoldResult(dynOff[d])
                          : OpFoldResult(b.getIndexAttr(offs[d])));
    st.push_back(b.getIndexAttr(stps[d]));
    if (dynSize[d])
      s.push_back(dynSize[d]);
    else if (isDyn(sizes[d]))
      s.push_back(gi.dim(v, d));
    else
      s.push_back(b.getIndexAttr(sizes[d]));
  }
  gi.setOutput(0, tensor::ExtractSliceOp::create(b, loc, v, o, s, st));
  return success();
}

} // namespace

void moec::onnximport::addSliceOps(OpTable &t) {
  t["Transpose"] = importTranspose;
  t["Concat"] = importConcat;
  t["Split"] = importSplit;
  t["Slice"] = importSlice;
}
