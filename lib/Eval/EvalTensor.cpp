//===- EvalTensor.cpp - tensor ops ----------------------------------------===//
//
// The tensor dialect's ops on concrete tensors: shapes, reshapes, slices,
// concatenation, padding, generation, element access.
//
//===----------------------------------------------------------------------===//

#include "EvalInternal.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>

using namespace mlir;
using namespace moec;
using namespace moec::eval;
using namespace moec::eval::detail;

//===----------------------------------------------------------------------===//
// tensor
//===----------------------------------------------------------------------===//

LogicalResult
Interpreter::evalIndexBody(Operation *op, Block &body, ArrayRef<int64_t> shape,
                           Tensor &out,
                           function_ref<bool(ArrayRef<int64_t>)> skip) {
  // tensor.pad and tensor.generate: the body maps an index to an element.
  Plan plan;
  DenseMap<Value, int> slots;
  if (body.getNumArguments() != shape.size())
    return fail(op, "the body takes the wrong number of indices");
  plan.init.resize(shape.size());
  for (BlockArgument arg : body.getArguments())
    slots[arg] = int(arg.getArgNumber());
  if (failed(compileBody(body, plan, slots)))
    return failure();
  if (plan.yields.size() != 1)
    return fail(op, "the body must yield one value");
  std::vector<Scalar> regs = plan.init;
  SmallVector<int64_t> pos(shape.size(), 0);
  for (int64_t k = 0, n = out.numElements(); k < n; ++k) {
    int64_t rem = k;
    for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
      pos[d] = rem % shape[d];
      rem /= shape[d];
    }
    if (skip(pos))
      continue;
    for (size_t d = 0; d < shape.size(); ++d)
      regs[d].i = pos[d];
    if (failed(runPlan(plan, regs.data(), {})))
      return failure();
    const Scalar &s = regs[plan.yields[0]];
    if (out.isFloat())
      out.f[k] = s.f;
    else
      out.i[k] = s.i;
  }
  return success();
}

LogicalResult Interpreter::evalTensorOp(Operation *op) {
  auto dynShape = [&](RankedTensorType type, ValueRange dyn,
                      SmallVectorImpl<int64_t> &shape) -> LogicalResult {
    unsigned k = 0;
    for (int64_t d : type.getShape()) {
      int64_t s = ShapedType::isDynamic(d) ? idx(dyn[k++]) : d;
      if (s < 0)
        return fail(op, "negative size " + Twine(s));
      shape.push_back(s);
    }
    return success();
  };
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](tensor::EmptyOp e) -> LogicalResult {
        SmallVector<int64_t> shape;
        if (failed(dynShape(e.getType(), e.getDynamicSizes(), shape)))
          return failure();
        setTensor(e, Tensor::zeros(shape, e.getType().getElementType()));
        return success();
      })
      .Case([&](tensor::SplatOp s) -> LogicalResult {
        SmallVector<int64_t> shape;
        if (failed(dynShape(s.getType(), s.getDynamicSizes(), shape)))
          return failure();
        Tensor t = Tensor::zeros(shape, s.getType().getElementType());
        Scalar v = S(s.getInput());
        std::fill(t.f.begin(), t.f.end(), v.f);
        std::fill(t.i.begin(), t.i.end(), v.i);
        setTensor(s, std::move(t));
        return success();
      })
      .Case([&](tensor::DimOp d) -> LogicalResult {
        const Tensor &t = T(d.getSource());
        int64_t i = idx(d.getIndex());
        if (i < 0 || i >= int64_t(t.shape.size()))
          return fail(op, "dim index " + Twine(i) + " out of range");
        scalars[d] = Scalar{0, t.shape[i]};
        return success();
      })
      .Case([&](tensor::ExtractOp e) -> LogicalResult {
        Plan plan;
        DenseMap<Value, int> slots;
        if (failed(compileOp(op, plan, slots)))
          return failure();
        std::vector<Scalar> regs = plan.init;
        if (failed(runPlan(plan, regs.data(), {})))
          return failure();
        scalars[e] = regs[slots[e]];
        return success();
      })
      .Case([&](tensor::FromElementsOp f) -> LogicalResult {
        auto type = f.getType();
        Tensor t = Tensor::zeros(type.getShape(), type.getElementType());
        if (int64_t(f.getElements().size()) != t.numElements())
          return fail(op, "wrong number of elements");
        for (auto [k, v] : llvm::enumerate(f.getElements())) {
          if (t.isFloat())
            t.f[k] = S(v).f;
          else
            t.i[k] = S(v).i;
        }
        setTensor(f, std::move(t));
        return success();
      })
      .Case([&](tensor::ReshapeOp r) -> LogicalResult {
        const Tensor &s = T(r.getShape());
        if (s.isFloat() || s.shape.size() != 1)
          return fail(op, "the shape operand must be a 1-d integer tensor");
        std::vector<int64_t> shape(s.i.begin(), s.i.end());
        for (int64_t d : shape)
          if (d < 0)
            return fail(op, "negative size in shape " + shapeStr(shape));
        Tensor t = take(r.getSource(), op);
        if (product(shape) != t.numElements())
          return fail(op, "cannot reshape " + shapeStr(t.shape) + " to " +
                              shapeStr(shape));
        t.shape = std::move(shape);
        setTensor(r, std::move(t));
        return success();
      })
      .Case([&](tensor::CastOp c) {
        setTensor(c, take(c.getSource(), op));
        return success();
      })
      .Case([&](tensor::CollapseShapeOp c) -> LogicalResult {
        Tensor t = take(c.getSrc(), op);
        SmallVector<int64_t> shape;
        size_t seen = 0;
        for (const auto &group : c.getReassociationIndices()) {
          int64_t p = 1;
          for (int64_t d : group)
            p *= d < int64_t(t.shape.size()) ? t.shape[d] : 0;
          seen += group.size();
          shape.push_back(p);
        }
        if (seen != t.shape.size())
          return fail(op, "reassociation does not match the source rank");
        t.shape.assign(shape.begin(), shape.end());
        setTensor(c, std::move(t));
        return success();
      })
      .Case([&](tensor::ExpandShapeOp e) -> LogicalResult {
        Tensor t = take(e.getSrc(), op);
        SmallVector<int64_t> shape = values(e.getMixedOutputShape());
        auto groups = e.getReassociationIndices();
        if (groups.size() != t.shape.size())
          return fail(op, "reassociation does not match the source rank");
        for (auto [g, group] : llvm::enumerate(groups)) {
          int64_t p = 1;
          for (int64_t d : group)
            p *= shape[d];
          if (p != t.shape[g])
            return fail(op, "cannot expand " + shapeStr(t.shape) + " to " +
                                shapeStr(shape));
        }
        t.shape.assign(shape.begin(), shape.end());
        setTensor(e, std::move(t));
        return success();
      })
      .Case([&](tensor::ExtractSliceOp s) -> LogicalResult {
        const Tensor &src = T(s.getSource());
        SmallVector<int64_t> offs = values(s.getMixedOffsets()),
                             sizes = values(s.getMixedSizes()),
                             steps = values(s.getMixedStrides());
        if (offs.size() != src.shape.size())
          return fail(op, "rank mismatch");
        for (size_t d = 0; d < offs.size(); ++d) {
          int64_t last = offs[d] + (sizes[d] - 1) * steps[d];
          if (sizes[d] < 0 ||
              (sizes[d] > 0 && (offs[d] < 0 || offs[d] >= src.shape[d] ||
                                last < 0 || last >= src.shape[d])))
            return fail(op, "slice out of bounds in dim " + Twine(d) +
                                " (offset " + Twine(offs[d]) + ", size " +
                                Twine(sizes[d]) + ", stride " +
                                Twine(steps[d]) + ", source " +
                                shapeStr(src.shape) + ")");
        }
        SmallVector<int64_t> st = stridesOf(src.shape);
        Tensor out = Tensor::zeros(sizes, s.getType().getElementType());
        forEachSliceElement(
            sizes, offs, steps, st,
            [&](int64_t k, int64_t flat) { copyElt(src, flat, out, k); });
        if (s.getType().getRank() != int64_t(sizes.size())) {
          // Rank-reducing: the dropped unit dims go, the data order stays.
          llvm::SmallBitVector dropped = s.getDroppedDims();
          std::vector<int64_t> kept;
          for (size_t d = 0; d < sizes.size(); ++d)
            if (!dropped.test(d))
              kept.push_back(sizes[d]);
          out.shape = std::move(kept);
        }
        setTensor(s, std::move(out));
        return success();
      })
      .Case([&](tensor::InsertSliceOp s) -> LogicalResult {
        const Tensor &src = T(s.getSource());
        SmallVector<int64_t> offs = values(s.getMixedOffsets()),
                             sizes = values(s.getMixedSizes()),
                             steps = values(s.getMixedStrides());
        Tensor dst = take(s.getDest(), op);
        if (offs.size() != dst.shape.size())
          return fail(op, "rank mismatch");
        if (product(sizes) != src.numElements())
          return fail(op, "source " + shapeStr(src.shape) +
                              " does not fill the slice " + shapeStr(sizes));
        for (size_t d = 0; d < offs.size(); ++d) {
          int64_t last = offs[d] + (sizes[d] - 1) * steps[d];
          if (sizes[d] < 0 ||
              (sizes[d] > 0 && (offs[d] < 0 || offs[d] >= dst.shape[d] ||
                                last < 0 || last >= dst.shape[d])))
            return fail(op, "slice out of bounds in dim " + Twine(d));
        }
        SmallVector<int64_t> st = stridesOf(dst.shape);
        forEachSliceElement(
            sizes, offs, steps, st,
            [&](int64_t k, int64_t flat) { copyElt(src, k, dst, flat); });
        setTensor(s, std::move(dst));
        return success();
      })
      .Case([&](tensor::ConcatOp c) -> LogicalResult {
        int64_t axis = c.getDim();
        SmallVector<const Tensor *> ins;
        for (Value v : c.getInputs())
          ins.push_back(&T(v));
        std::vector<int64_t> shape = ins[0]->shape;
        if (axis < 0 || axis >= int64_t(shape.size()))
          return fail(op, "axis out of range");
        shape[axis] = 0;
        for (const Tensor *t : ins) {
          bool ok = t->shape.size() == shape.size();
          for (size_t d = 0; ok && d < shape.size(); ++d)
            ok = int64_t(d) == axis || t->shape[d] == shape[d];
          if (!ok)
            return fail(op, "operand shapes " + shapeStr(ins[0]->shape) +
                                " and " + shapeStr(t->shape) +
                                " cannot be concatenated");
          shape[axis] += t->shape[axis];
        }
        Tensor out = Tensor::zeros(shape, c.getType().getElementType());
        int64_t outer = product(ArrayRef<int64_t>(shape).take_front(axis));
        int64_t k = 0;
        for (int64_t o = 0; o < outer; ++o)
          for (const Tensor *t : ins) {
            int64_t chunk = t->numElements() / outer;
            for (int64_t j = 0; j < chunk; ++j, ++k)
              copyElt(*t, o * chunk + j, out, k);
          }
        setTensor(c, std::move(out));
        return success();
      })
      .Case([&](tensor::PadOp p) -> LogicalResult {
        const Tensor &src = T(p.getSource());
        SmallVector<int64_t> low = values(p.getMixedLowPad()),
                             high = values(p.getMixedHighPad());
        SmallVector<int64_t> shape;
        for (size_t d = 0; d < src.shape.size(); ++d) {
          if (low[d] < 0 || high[d] < 0)
            return fail(op, "negative padding");
          shape.push_back(low[d] + src.shape[d] + high[d]);
        }
        Tensor out = Tensor::zeros(shape, p.getType().getElementType());
        auto inside = [&](ArrayRef<int64_t> pos) {
          for (size_t d = 0; d < pos.size(); ++d)
            if (pos[d] < low[d] || pos[d] >= low[d] + src.shape[d])
              return false;
          return true;
        };
        if (failed(
                evalIndexBody(op, p.getRegion().front(), shape, out, inside)))
          return failure();
        SmallVector<int64_t> st = stridesOf(shape), pos(shape.size());
        for (int64_t k = 0, n = src.numElements(); k < n; ++k) {
          int64_t rem = k, flat = 0;
          for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
            pos[d] = rem % src.shape[d];
            rem /= src.shape[d];
          }
          for (size_t d = 0; d < shape.size(); ++d)
            flat += (pos[d] + low[d]) * st[d];
          copyElt(src, k, out, flat);
        }
        setTensor(p, std::move(out));
        return success();
      })
      .Case([&](tensor::GenerateOp g) -> LogicalResult {
        SmallVector<int64_t> shape;
        if (failed(dynShape(g.getType(), g.getDynamicExtents(), shape)))
          return failure();
        Tensor out = Tensor::zeros(shape, g.getType().getElementType());
        if (failed(evalIndexBody(op, g.getBody().front(), shape, out,
                                 [](ArrayRef<int64_t>) { return false; })))
          return failure();
        setTensor(g, std::move(out));
        return success();
      })
      .Default([&](Operation *) { return fail(op, "unsupported op"); });
}
