//===- ImportReshape.cpp - reshape ONNX ops -------------------------------===//
//
// Reshape Flatten Squeeze Unsqueeze: on the host when the input is known,
// else tensor.collapse_shape / expand_shape / reshape.
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

HostTensor hostReshape(const HostTensor &in, ArrayRef<int64_t> shape) {
  HostTensor out = in;
  out.shape.assign(shape.begin(), shape.end());
  return out;
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
        if (!isDyn(spec[i]) && __builtin_mul_overflow(known, spec[i], &known))
          return gi.fail("the target shape has more than 2^63 elements");
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
      if (__builtin_mul_overflow(total, s, &total))
        return gi.fail("the target shape has more than 2^63 elements");
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

} // namespace

void moec::onnximport::addReshapeOps(OpTable &t) {
  t["Reshape"] = importReshape;
  t["Flatten"] = importFlatten;
  t["Squeeze"] = [](GraphImporter &gi) { return importSqueeze(gi, false); };
  t["Unsqueeze"] = [](GraphImporter &gi) { return importSqueeze(gi, true); };
}
