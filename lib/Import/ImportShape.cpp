//===- ImportShape.cpp - data movement and shape ONNX ops -----------------===//
//
// Constant Identity Shape Reshape Flatten Squeeze Unsqueeze Transpose Concat
// Split Slice Gather GatherElements Expand Tile ConstantOfShape Range.
//
// Known (small) inputs fold on the host, so shape arithmetic never reaches
// the IR. Runtime data may have dynamic dims (token counts after NonZero in
// torch.onnx expert loops); sizes then come from tensor.dim.
//
//===----------------------------------------------------------------------===//

#include "GraphImporter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/ReshapeOpsUtils.h"
#include "mlir/IR/Matchers.h"

using namespace mlir;
using namespace moec::onnximport;

namespace {
using Shape = SmallVector<int64_t>;

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

HostTensor hostReshape(const HostTensor &in, ArrayRef<int64_t> shape) {
  HostTensor out = in;
  out.shape.assign(shape.begin(), shape.end());
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

/// Index value of dim `d` of `v` as i64.
Value dimI64(GraphImporter &gi, Value v, int64_t d) {
  return arith::IndexCastOp::create(gi.builder(), gi.loc(),
                                    gi.builder().getI64Type(), gi.dim(v, d));
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

//===----------------------------------------------------------------------===//
// Constant, Identity, Shape
//===----------------------------------------------------------------------===//

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

//===----------------------------------------------------------------------===//
// Reshape family
//===----------------------------------------------------------------------===//

/// Element `k` of a 1-D (or scalar) integer tensor built at run time, looked
/// up through its producers: a constant when they show one, else an i64
/// value (tensor.extract when nothing simpler is visible).
struct Entry {
  std::optional<int64_t> c;
  Value v;
};

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

/// Reshape of input 0 to a target given with ONNX's 0 (copy) and -1 (infer)
/// conventions. `runtime[i]`, when given and non-null, is an i64 value for an
/// entry known only at run time (`spec[i]` is then ignored): a real size.
LogicalResult reshapeWithSpec(GraphImporter &gi, std::vector<int64_t> spec,
                              bool allowZero, ArrayRef<Value> runtime = {}) {
  RankedTensorType in = gi.inputType(0);
  int64_t inRank = in.getRank();
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  auto isRuntime = [&](size_t i) { return i < runtime.size() && runtime[i]; };
  int inferAt = -1;
  for (size_t i = 0; i < spec.size(); ++i) {
    if (isRuntime(i)) {
      spec[i] = ShapedType::kDynamic;
    } else if (spec[i] == 0 && !allowZero) {
      if (int64_t(i) >= inRank)
        return gi.fail("shape entry " + Twine(i) +
                       " is 0 (copy) but the input has rank " + Twine(inRank));
      spec[i] = in.getDimSize(i); // may be dynamic
    } else if (spec[i] == -1) {
      if (inferAt >= 0)
        return gi.fail("shape has more than one -1");
      inferAt = int(i);
    } else if (spec[i] < -1) {
      return gi.fail("shape entry " + Twine(spec[i]) + " is invalid");
    }
  }
  if (const HostTensor *c = gi.inputConst(0); c && runtime.empty()) {
    int64_t known = 1;
    for (size_t i = 0; i < spec.size(); ++i)
      if (int(i) != inferAt)
        known *= spec[i];
    if (inferAt >= 0)
      spec[inferAt] = known ? c->size() / known : 0;
    int64_t total = 1;
    for (int64_t s : spec)
      total *= s;
    if (total != c->size())
      return gi.fail("cannot reshape " + Twine(c->size()) + " elements");
    gi.setOutputConst(0, hostReshape(*c, spec));
    return success();
  }
  Value v = gi.input(0);
  Shape shape(spec.begin(), spec.end());
  // Index value of each dynamic spec entry other than the -1.
  auto entryValue = [&](size_t j) -> Value {
    if (isRuntime(j))
      return toIndex(gi, runtime[j]);
    if (isDyn(spec[j]))
      return gi.dim(v, j); // a 0 entry copying a dynamic dim
    return arith::ConstantIndexOp::create(b, loc, spec[j]);
  };
  bool inStatic = in.hasStaticShape();
  if (inferAt >= 0) {
    int64_t known = 1;
    bool knownStatic = true;
    for (size_t i = 0; i < spec.size(); ++i)
      if (int(i) != inferAt) {
        knownStatic &= !isDyn(spec[i]);
        if (!isDyn(spec[i]))
          known *= spec[i];
      }
    if (inStatic && knownStatic) {
      if (known == 0 || in.getNumElements() % known)
        return gi.fail("cannot reshape " + Twine(in.getNumElements()) +
                       " elements with -1");
      shape[inferAt] = in.getNumElements() / known;
    } else {
      shape[inferAt] = ShapedType::kDynamic;
    }
  } else if (inStatic && llvm::none_of(shape, isDyn)) {
    int64_t total = 1;
    for (int64_t s : shape)
      total *= s;
    if (total != in.getNumElements())
      return gi.fail("cannot reshape " + Twine(in.getNumElements()) +
                     " elements to " + Twine(total));
  }
  // Static sizes that shape inference knows for runtime entries.
  SmallVector<bool> fromInference(shape.size(), false);
  if (RankedTensorType inf = gi.inferredOutputType(0);
      inf && inf.getRank() == int64_t(shape.size()))
    for (size_t i = 0; i < shape.size(); ++i)
      if (isDyn(shape[i]) && !inf.isDynamicDim(i)) {
        shape[i] = inf.getDimSize(i);
        fromInference[i] = true;
      }
  // Sizes of the dynamic result dims.
  SmallVector<Value> dyn;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (!isDyn(shape[i]))
      continue;
    if (int(i) != inferAt) {
      dyn.push_back(entryValue(i));
      continue;
    }
    // numel(input) / product of the other target dims.
    Value total = dimProduct(gi, v, 0, inRank);
    Value other = arith::ConstantIndexOp::create(b, loc, 1);
    for (size_t j = 0; j < spec.size(); ++j) {
      if (int(j) == inferAt)
        continue;
      Value s = fromInference[j]
                    ? Value(arith::ConstantIndexOp::create(b, loc, shape[j]))
                    : entryValue(j);
      other = arith::MulIOp::create(b, loc, other, s);
    }
    dyn.push_back(arith::DivUIOp::create(b, loc, total, other));
  }
  gi.setOutput(0, reshapeTo(gi, v, shape, dyn));
  return success();
}

LogicalResult importReshape(GraphImporter &gi) {
  if (gi.numInputs() != 2)
    return gi.fail("expects 2 inputs (data, shape)");
  bool allowZero = gi.intAttr("allowzero", 0) != 0;
  if (gi.inputConst(1)) {
    FailureOr<std::vector<int64_t>> spec = constInts(gi, 1, "shape");
    return reshapeWithSpec(gi, *spec, allowZero);
  }
  // A shape computed at run time (torch's x.view(x.size(0), -1) on a
  // dynamic x). Entries visible as constants keep their 0 / -1 meaning;
  // the others are sizes.
  RankedTensorType st = gi.inputType(1);
  if (st.getRank() != 1 || st.isDynamicDim(0))
    return gi.fail("a runtime shape must be a 1-D tensor of static length");
  Value shapeV = gi.input(1);
  std::vector<int64_t> spec;
  SmallVector<Value> runtime;
  for (int64_t k = 0; k < st.getDimSize(0); ++k) {
    Entry e = elementAt(gi, shapeV, k);
    spec.push_back(e.c ? *e.c : 0);
    runtime.push_back(e.v);
  }
  return reshapeWithSpec(gi, spec, allowZero, runtime);
}

LogicalResult importFlatten(GraphImporter &gi) {
  RankedTensorType in = gi.inputType(0);
  int64_t rank = in.getRank();
  int64_t axis = gi.intAttr("axis", 1);
  if (axis < -rank || axis > rank)
    return gi.fail("axis " + Twine(axis) + " is out of range");
  if (axis < 0)
    axis += rank;
  int64_t outer = 1, inner = 1;
  bool outerDyn = false, innerDyn = false;
  for (int64_t d = 0; d < rank; ++d) {
    int64_t s = in.getDimSize(d);
    bool &dyn = d < axis ? outerDyn : innerDyn;
    int64_t &p = d < axis ? outer : inner;
    if (isDyn(s))
      dyn = true;
    else
      p *= s;
  }
  if (const HostTensor *c = gi.inputConst(0)) {
    gi.setOutputConst(0, hostReshape(*c, {outer, inner}));
    return success();
  }
  Value v = gi.input(0);
  SmallVector<Value> dyn;
  if (outerDyn)
    dyn.push_back(dimProduct(gi, v, 0, axis));
  if (innerDyn)
    dyn.push_back(dimProduct(gi, v, axis, rank));
  Shape shape = {outerDyn ? ShapedType::kDynamic : outer,
                 innerDyn ? ShapedType::kDynamic : inner};
  gi.setOutput(0, reshapeTo(gi, v, shape, dyn));
  return success();
}

/// Squeeze/Unsqueeze: a reshape that drops or inserts size-1 dims.
LogicalResult importSqueeze(GraphImporter &gi, bool unsqueeze) {
  RankedTensorType in = gi.inputType(0);
  int64_t rank = in.getRank();
  if (unsqueeze && !gi.hasInput(1) && !gi.hasAttr("axes"))
    return gi.fail("axes are required");
  FailureOr<std::vector<int64_t>> axesOr = intsFromInputOrAttr(gi, 1, "axes");
  if (failed(axesOr))
    return failure();
  std::vector<int64_t> axes = std::move(*axesOr);
  int64_t outRank = unsqueeze ? rank + int64_t(axes.size()) : rank;
  SmallVector<bool> marked(outRank, false);
  for (int64_t a : axes) {
    FailureOr<int64_t> n = normAxis(gi, a, outRank);
    if (failed(n))
      return failure();
    if (marked[*n])
      return gi.fail("axis " + Twine(a) + " is repeated");
    marked[*n] = true;
  }
  Shape shape;
  SmallVector<int64_t> srcDim; // input dim of each result dim, -1 if new
  if (unsqueeze) {
    int64_t k = 0;
    for (int64_t d = 0; d < outRank; ++d) {
      shape.push_back(marked[d] ? 1 : in.getDimSize(k));
      srcDim.push_back(marked[d] ? -1 : k++);
    }
  } else {
    for (int64_t d = 0; d < rank; ++d) {
      bool drop = axes.empty() ? in.getDimSize(d) == 1 : marked[d];
      if (drop && in.getDimSize(d) != 1 && !in.isDynamicDim(d))
        return gi.fail("cannot squeeze dim " + Twine(d) + " of size " +
                       Twine(in.getDimSize(d)));
      if (drop)
        continue;
      shape.push_back(in.getDimSize(d));
      srcDim.push_back(d);
    }
  }
  if (const HostTensor *c = gi.inputConst(0)) {
    gi.setOutputConst(0, hostReshape(*c, shape));
    return success();
  }
  Value v = gi.input(0);
  SmallVector<Value> dyn;
  for (size_t d = 0; d < shape.size(); ++d)
    if (isDyn(shape[d]))
      dyn.push_back(gi.dim(v, srcDim[d]));
  gi.setOutput(0, reshapeTo(gi, v, shape, dyn));
  return success();
}

//===----------------------------------------------------------------------===//
// Transpose, Concat, Split, Slice
//===----------------------------------------------------------------------===//

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

LogicalResult importSplit(GraphImporter &gi) {
  RankedTensorType in = gi.inputType(0);
  FailureOr<int64_t> axis = normAxis(gi, gi.intAttr("axis", 0), in.getRank());
  if (failed(axis))
    return failure();
  unsigned outs = gi.numOutputs();
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
      offs[*ax] = s;
      sizes[*ax] = e > s ? (e - s + step - 1) / step : 0;
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

//===----------------------------------------------------------------------===//
// Gather, GatherElements
//===----------------------------------------------------------------------===//

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

//===----------------------------------------------------------------------===//
// Expand, Tile, ConstantOfShape, Range
//===----------------------------------------------------------------------===//

/// The target of a shape input: static entries where known; for runtime
/// entries, index values. `vals[d]` is null for static entries.
struct ShapeSpec {
  Shape dims;
  SmallVector<Value> vals;
};

FailureOr<ShapeSpec> shapeInput(GraphImporter &gi, unsigned i) {
  ShapeSpec s;
  if (const HostTensor *c = gi.inputConst(i)) {
    for (int64_t k = 0; k < c->size(); ++k)
      s.dims.push_back(c->asInt(k));
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
  if (const HostTensor *c = gi.inputConst(0); c && c->size() <= (1 << 16)) {
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
  if (const HostTensor *s = gi.inputConst(0)) {
    std::vector<int64_t> shape;
    for (int64_t k = 0; k < s->size(); ++k)
      shape.push_back(s->asInt(k));
    gi.setOutputConst(0,
                      HostTensor::splat(value.dtype, shape, value.asDouble(0)));
    return success();
  }
  FailureOr<ShapeSpec> spec = shapeInput(gi, 0);
  if (failed(spec))
    return failure();
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

LogicalResult importRange(GraphImporter &gi) {
  if (!gi.allInputsConst())
    return importRuntimeRange(gi);
  const HostTensor *s = gi.inputConst(0), *l = gi.inputConst(1),
                   *d = gi.inputConst(2);
  double start = s->asDouble(0), limit = l->asDouble(0), delta = d->asDouble(0);
  if (delta == 0)
    return gi.fail("delta is 0");
  int64_t n = std::max<int64_t>(int64_t(std::ceil((limit - start) / delta)), 0);
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

void moec::onnximport::addShapeOps(OpTable &t) {
  t["Constant"] = importConstant;
  t["Identity"] = importIdentity;
  t["Shape"] = importShape;
  t["Size"] = importSize;
  t["Reshape"] = importReshape;
  t["Flatten"] = importFlatten;
  t["Squeeze"] = [](GraphImporter &gi) { return importSqueeze(gi, false); };
  t["Unsqueeze"] = [](GraphImporter &gi) { return importSqueeze(gi, true); };
  t["Transpose"] = importTranspose;
  t["Concat"] = importConcat;
  t["Split"] = importSplit;
  t["Slice"] = importSlice;
  t["Gather"] = importGather;
  t["GatherElements"] = importGatherElements;
  t["GatherND"] = importGatherND;
  t["Expand"] = importExpand;
  t["Tile"] = importTile;
  t["ConstantOfShape"] = importConstantOfShape;
  t["Range"] = importRange;
}
