//===- ImportIndexing.cpp - top-k, data-dependent and scatter ONNX ops ----===//
//
// TopK NonZero ScatterElements ScatterND OneHot. The first four have no
// upstream equivalent and become `moe` ops; OneHot is a linalg.generic.
//
//===----------------------------------------------------------------------===//

#include "GraphImporter.h"
#include "ShapeHelpers.h"

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include <algorithm>

using namespace mlir;
using namespace moec;
using namespace moec::onnximport;

/// Normalizes a possibly negative axis; fails with a diagnostic if out of
/// range.
static FailureOr<int64_t> normalizeAxis(GraphImporter &gi, int64_t axis,
                                        int64_t rank) {
  if (axis < -rank || axis >= rank) {
    (void)gi.fail("axis " + Twine(axis) + " is out of range for rank " +
                  Twine(rank));
    return failure();
  }
  return axis < 0 ? axis + rank : axis;
}

static FailureOr<moe::Reduction> parseReduction(GraphImporter &gi) {
  std::string r = gi.strAttr("reduction", "none");
  if (r == "none")
    return moe::Reduction::none;
  if (r == "add")
    return moe::Reduction::add;
  if (r == "mul")
    return moe::Reduction::mul;
  if (r == "max")
    return moe::Reduction::max;
  if (r == "min")
    return moe::Reduction::min;
  (void)gi.fail("unknown reduction '" + r + "'");
  return failure();
}

/// Checks the element type of an index operand of the moe ops (i32 or i64).
static LogicalResult checkIndexType(GraphImporter &gi, unsigned i,
                                    StringRef what) {
  Type t = gi.inputType(i).getElementType();
  if (!t.isInteger(32) && !t.isInteger(64))
    return gi.fail(what + " must be int32 or int64");
  return success();
}

static LogicalResult importTopK(GraphImporter &gi) {
  if (gi.numInputs() != 2)
    return gi.fail("expects 2 inputs (X, K)");
  const HostTensor *k = gi.inputConst(1);
  if (!k || k->size() != 1)
    return gi.fail("K must be a constant with one element (data-dependent K "
                   "is not supported)");
  int64_t kv = k->asInt(0);
  RankedTensorType in = gi.inputType(0);
  if (in.getRank() == 0)
    return gi.fail("input must have rank >= 1");
  FailureOr<int64_t> axis =
      normalizeAxis(gi, gi.intAttr("axis", -1), in.getRank());
  if (failed(axis))
    return failure();
  if (kv < 1)
    return gi.fail("K must be >= 1, got " + Twine(kv));
  if (!in.isDynamicDim(*axis) && kv > in.getDimSize(*axis))
    return gi.fail("K (" + Twine(kv) + ") exceeds the size of axis " +
                   Twine(*axis) + " (" + Twine(in.getDimSize(*axis)) + ")");
  SmallVector<int64_t> shape(in.getShape());
  shape[*axis] = kv;
  OpBuilder &b = gi.builder();
  auto op = moe::TopKOp::create(
      b, gi.loc(), RankedTensorType::get(shape, in.getElementType()),
      RankedTensorType::get(shape, b.getI64Type()), gi.input(0),
      b.getI64IntegerAttr(kv), b.getI64IntegerAttr(*axis),
      b.getBoolAttr(gi.intAttr("largest", 1) != 0),
      b.getBoolAttr(gi.intAttr("sorted", 1) != 0));
  gi.setOutput(0, op.getValues());
  gi.setOutput(1, op.getIndices());
  return success();
}

static LogicalResult importNonZero(GraphImporter &gi) {
  if (gi.numInputs() != 1)
    return gi.fail("expects 1 input");
  RankedTensorType in = gi.inputType(0);
  // A scalar counts as a 1-element vector (as in onnxruntime): [1, N].
  int64_t rank = std::max<int64_t>(in.getRank(), 1);
  if (gi.allInputsConst()) {
    // A known input (a constant mask): the coordinates are known too.
    const HostTensor &x = *gi.inputConst(0);
    std::vector<int64_t> shape = x.shape;
    if (shape.empty())
      shape = {1};
    std::vector<int64_t> hits;
    for (int64_t k = 0; k < x.size(); ++k)
      if (x.asDouble(k) != 0)
        hits.push_back(k);
    HostTensor out;
    out.shape = {rank, int64_t(hits.size())};
    out.i.resize(rank * hits.size());
    for (size_t n = 0; n < hits.size(); ++n)
      for (int64_t d = rank - 1, k = hits[n]; d >= 0; --d) {
        out.i[d * hits.size() + n] = k % shape[d];
        k /= shape[d];
      }
    gi.setOutputConst(0, std::move(out));
    return success();
  }
  OpBuilder &b = gi.builder();
  Value x = gi.input(0);
  if (in.getRank() == 0)
    x = gi.reshape(x, {1});
  // The count is data dependent unless shape inference knows better.
  int64_t n = ShapedType::kDynamic;
  if (RankedTensorType inferred = gi.inferredOutputType(0);
      inferred && inferred.getRank() == 2 && !inferred.isDynamicDim(1) &&
      (!in.hasStaticShape() || inferred.getDimSize(1) <= in.getNumElements()))
    n = inferred.getDimSize(1);
  auto type = RankedTensorType::get({rank, n}, b.getI64Type());
  gi.setOutput(0, moe::NonZeroOp::create(b, gi.loc(), type, x));
  return success();
}

static Value insertBox(GraphImporter &gi, Value data, Value box,
                       ArrayRef<int64_t> start, ArrayRef<int64_t> size,
                       size_t d);

/// A ScatterElements whose constant indices write one box of `data`: along
/// `axis` the consecutive positions start, start + 1, ... (the same at
/// every other coordinate), the updates' extent elsewhere from 0 (torch's
/// select_scatter and slice_scatter, as the dynamo exporter writes them):
/// the updates put in place by slices and concatenations (insertBox), which
/// sharding and plans take. Null when the node is not of that form.
static Value scatterElementsAsBox(GraphImporter &gi, moe::Reduction red,
                                  int64_t axis) {
  RankedTensorType data = gi.inputType(0), idx = gi.inputType(1),
                   upd = gi.inputType(2);
  const HostTensor *ic = gi.inputConst(1);
  if (red != moe::Reduction::none || !ic || ic->size() == 0 ||
      !data.hasStaticShape() || !upd.hasStaticShape() ||
      idx.getShape() != upd.getShape())
    return {};
  int64_t rank = data.getRank(), dimA = data.getDimSize(axis);
  for (int64_t d = 0; d < rank; ++d)
    if (upd.getDimSize(d) > data.getDimSize(d))
      return {};
  auto wrap = [&](int64_t i) { return i < 0 ? i + dimA : i; };
  int64_t start = wrap(ic->asInt(0));
  // Position k of the indices (row-major over upd's shape) must hold
  // start + its coordinate along axis.
  int64_t inner = 1;
  for (int64_t d = axis + 1; d < rank; ++d)
    inner *= upd.getDimSize(d);
  for (int64_t k = 0; k < ic->size(); ++k) {
    int64_t along = (k / inner) % upd.getDimSize(axis);
    if (wrap(ic->asInt(size_t(k))) != start + along)
      return {};
  }
  if (start < 0 || start + upd.getDimSize(axis) > dimA)
    return {};
  SmallVector<int64_t> starts(rank, 0), sizes(upd.getShape());
  starts[axis] = start;
  return insertBox(gi, gi.input(0), gi.input(2), starts, sizes, 0);
}

static LogicalResult importScatterElements(GraphImporter &gi) {
  if (gi.numInputs() != 3)
    return gi.fail("expects 3 inputs (data, indices, updates)");
  RankedTensorType data = gi.inputType(0);
  FailureOr<int64_t> axis =
      normalizeAxis(gi, gi.intAttr("axis", 0), data.getRank());
  FailureOr<moe::Reduction> red = parseReduction(gi);
  if (failed(axis) || failed(red))
    return failure();
  if (gi.inputType(1).getRank() != data.getRank() ||
      gi.inputType(2).getRank() != data.getRank())
    return gi.fail("data, indices and updates must have the same rank");
  if (failed(checkIndexType(gi, 1, "indices")))
    return failure();
  if (gi.inputType(2).getElementType() != data.getElementType())
    return gi.fail("updates and data have different element types");
  for (auto [i, u] :
       llvm::zip(gi.inputType(1).getShape(), gi.inputType(2).getShape()))
    if (!ShapedType::isDynamic(i) && !ShapedType::isDynamic(u) && i != u)
      return gi.fail("indices and updates must have the same shape");
  if (Value v = scatterElementsAsBox(gi, *red, *axis)) {
    gi.setOutput(0, v);
    return success();
  }
  OpBuilder &b = gi.builder();
  auto op = moe::ScatterElementsOp::create(
      b, gi.loc(), data, gi.input(0), gi.input(1), gi.input(2),
      b.getI64IntegerAttr(*axis), moe::ReductionAttr::get(gi.ctx(), *red));
  gi.setOutput(0, op);
  return success();
}

/// `data` with the box at `start`/`size` replaced by `box` (a tensor of the
/// box's shape), within the part of data that is already the box's in the
/// dims before `d` and whole in the others: along the first dim from `d` on
/// that the box does not cover whole, slices of data before and after the
/// box joined with the box's part (built the same way from the next dim) by
/// tensor.concat.
static Value insertBox(GraphImporter &gi, Value data, Value box,
                       ArrayRef<int64_t> start, ArrayRef<int64_t> size,
                       size_t d) {
  auto t = cast<RankedTensorType>(data.getType());
  while (d < start.size() && start[d] == 0 && size[d] == t.getDimSize(d))
    ++d;
  if (d == start.size())
    return box;
  OpBuilder &b = gi.builder();
  int64_t end = start[d] + size[d], rest = t.getDimSize(d) - end;
  // The part of data with dims before d in the box and dim d in [from,
  // from + count).
  auto slice = [&](int64_t from, int64_t count) -> Value {
    SmallVector<int64_t> offsets(t.getRank(), 0), sizes(t.getShape()),
        steps(t.getRank(), 1);
    for (size_t j = 0; j < d; ++j) {
      offsets[j] = start[j];
      sizes[j] = size[j];
    }
    offsets[d] = from;
    sizes[d] = count;
    return tensor::ExtractSliceOp::create(
        b, gi.loc(), data, getAsIndexOpFoldResult(gi.ctx(), offsets),
        getAsIndexOpFoldResult(gi.ctx(), sizes),
        getAsIndexOpFoldResult(gi.ctx(), steps));
  };
  SmallVector<Value> pieces;
  if (start[d] > 0)
    pieces.push_back(slice(0, start[d]));
  pieces.push_back(insertBox(gi, data, box, start, size, d + 1));
  if (rest > 0)
    pieces.push_back(slice(end, rest));
  return tensor::ConcatOp::create(b, gi.loc(), d, pieces);
}

/// ScatterND whose constant indices name, in row-major order, every
/// position of a box of data's first q dims (consecutive indices in each
/// dim), as torch's exporters write a slice assignment (`x[..., a:b] = y`:
/// one index tuple per element of the box, or one per row after moving the
/// sliced dim to the front): the updates reshaped to the box, put in place
/// by slices of data and concatenations (insertBox). Sharding and the plan
/// take those; a moe.scatter_nd only runs in moe-eval. Null when the node
/// is not of that form.
static Value scatterBoxAsSlices(GraphImporter &gi, moe::Reduction red,
                                int64_t q) {
  RankedTensorType data = gi.inputType(0), upd = gi.inputType(2);
  const HostTensor *ic = gi.inputConst(1);
  if (red != moe::Reduction::none || q < 1 || !ic || ic->size() == 0 ||
      !data.hasStaticShape() || !upd.hasStaticShape())
    return {};
  int64_t n = ic->size() / q;
  auto at = [&](int64_t k, int64_t j) {
    int64_t i = ic->asInt(size_t(k * q + j)), dim = data.getDimSize(j);
    return i < 0 ? i + dim : i;
  };
  // The box: from the first tuple to the largest index in each dim.
  SmallVector<int64_t> start(q), size(q, 1);
  for (int64_t j = 0; j < q; ++j)
    start[j] = at(0, j);
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < q; ++j) {
      int64_t i = at(k, j);
      if (i < 0 || i < start[j] || i >= data.getDimSize(j))
        return {};
      size[j] = std::max(size[j], i - start[j] + 1);
    }
  int64_t count = 1;
  for (int64_t s : size)
    count *= s;
  if (count != n)
    return {};
  // Tuple k must be start + (k unravelled over the box's sizes): then the
  // tuples are the box's positions, each once, in row-major order.
  SmallVector<int64_t> pos(q, 0);
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t j = 0; j < q; ++j)
      if (at(k, j) != start[j] + pos[j])
        return {};
    for (int64_t j = q - 1; j >= 0 && ++pos[j] == size[j]; --j)
      pos[j] = 0;
  }
  SmallVector<int64_t> boxShape(size);
  llvm::append_range(boxShape, data.getShape().drop_front(q));
  int64_t gridRank = upd.getRank() - (data.getRank() - q), grid = 1;
  for (int64_t s : upd.getShape().take_front(gridRank))
    grid *= s;
  if (grid != n ||
      upd.getShape().drop_front(gridRank) != data.getShape().drop_front(q))
    return {};
  Value box = gi.input(2);
  if (upd.getShape() != ArrayRef<int64_t>(boxShape))
    box = reshapeTo(gi, box, boxShape, {});
  return insertBox(gi, gi.input(0), box, start, size, 0);
}

static LogicalResult importScatterND(GraphImporter &gi) {
  if (gi.numInputs() != 3)
    return gi.fail("expects 3 inputs (data, indices, updates)");
  FailureOr<moe::Reduction> red = parseReduction(gi);
  if (failed(red))
    return failure();
  RankedTensorType data = gi.inputType(0), idx = gi.inputType(1),
                   upd = gi.inputType(2);
  if (idx.getRank() < 1 || idx.isDynamicDim(idx.getRank() - 1))
    return gi.fail("the last dimension of indices must be static");
  int64_t q = idx.getDimSize(idx.getRank() - 1);
  if (q > data.getRank())
    return gi.fail("index tuples of length " + Twine(q) +
                   " exceed the data rank " + Twine(data.getRank()));
  if (upd.getRank() != idx.getRank() - 1 + data.getRank() - q)
    return gi.fail("updates have rank " + Twine(upd.getRank()) + ", expected " +
                   Twine(idx.getRank() - 1 + data.getRank() - q));
  if (failed(checkIndexType(gi, 1, "indices")))
    return failure();
  if (upd.getElementType() != data.getElementType())
    return gi.fail("updates and data have different element types");
  OpBuilder &b = gi.builder();
  if (Value v = scatterBoxAsSlices(gi, *red, q)) {
    gi.setOutput(0, v);
    return success();
  }
  auto op = moe::ScatterNDOp::create(b, gi.loc(), data, gi.input(0),
                                     gi.input(1), gi.input(2),
                                     moe::ReductionAttr::get(gi.ctx(), *red));
  gi.setOutput(0, op);
  return success();
}

static LogicalResult importOneHot(GraphImporter &gi) {
  if (gi.numInputs() != 3)
    return gi.fail("expects 3 inputs (indices, depth, values)");
  const HostTensor *depth = gi.inputConst(1);
  if (!depth || depth->size() != 1)
    return gi.fail("depth must be a constant scalar");
  int64_t d = depth->asInt(0);
  if (d < 1)
    return gi.fail("depth must be >= 1, got " + Twine(d));
  RankedTensorType idx = gi.inputType(0), vals = gi.inputType(2);
  if (vals.getRank() != 1 || vals.getDimSize(0) != 2)
    return gi.fail("values must be [off_value, on_value]");
  int64_t outRank = idx.getRank() + 1;
  FailureOr<int64_t> axis = normalizeAxis(gi, gi.intAttr("axis", -1), outRank);
  if (failed(axis))
    return failure();
  SmallVector<int64_t> shape(idx.getShape());
  shape.insert(shape.begin() + *axis, d);
  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value indices = gi.input(0), values = gi.input(2);
  SmallVector<Value> dyn;
  for (int64_t i = 0; i < idx.getRank(); ++i)
    if (idx.isDynamicDim(i))
      dyn.push_back(gi.dim(indices, i));
  Type elt = vals.getElementType();
  Value init = gi.emptyTensor(shape, elt, dyn);
  // The indices are read at every output position except along `axis`.
  SmallVector<AffineExpr> idxExprs;
  for (int64_t i = 0; i < outRank; ++i)
    if (i != *axis)
      idxExprs.push_back(b.getAffineDimExpr(i));
  SmallVector<AffineMap> maps = {AffineMap::get(outRank, 0, idxExprs, gi.ctx()),
                                 b.getMultiDimIdentityMap(outRank)};
  SmallVector<utils::IteratorType> iters(outRank,
                                         utils::IteratorType::parallel);
  Type idxElt = idx.getElementType();
  auto generic = linalg::GenericOp::create(
      b, loc, TypeRange{init.getType()}, ValueRange{indices}, ValueRange{init},
      maps, iters, [&](OpBuilder &bb, Location l, ValueRange args) {
        Value pos = linalg::IndexOp::create(bb, l, *axis);
        Value i = args[0];
        if (isa<FloatType>(idxElt))
          i = arith::FPToSIOp::create(bb, l, bb.getI64Type(), i);
        else if (!idxElt.isInteger(64))
          i = arith::ExtSIOp::create(bb, l, bb.getI64Type(), i);
        // Negative indices count from the end: i + depth when i < 0.
        Value depthV =
            arith::ConstantOp::create(bb, l, bb.getI64IntegerAttr(d));
        Value zero = arith::ConstantOp::create(bb, l, bb.getI64IntegerAttr(0));
        Value neg =
            arith::CmpIOp::create(bb, l, arith::CmpIPredicate::slt, i, zero);
        Value wrapped = arith::AddIOp::create(bb, l, i, depthV);
        i = arith::SelectOp::create(bb, l, neg, wrapped, i);
        Value posI = arith::IndexCastOp::create(bb, l, bb.getI64Type(), pos);
        Value hit =
            arith::CmpIOp::create(bb, l, arith::CmpIPredicate::eq, i, posI);
        Value c0 = arith::ConstantIndexOp::create(bb, l, 0);
        Value c1 = arith::ConstantIndexOp::create(bb, l, 1);
        Value off = tensor::ExtractOp::create(bb, l, values, ValueRange{c0});
        Value on = tensor::ExtractOp::create(bb, l, values, ValueRange{c1});
        linalg::YieldOp::create(
            bb, l, Value(arith::SelectOp::create(bb, l, hit, on, off)));
      });
  gi.setOutput(0, generic.getResult(0));
  return success();
}

void moec::onnximport::addIndexingOps(OpTable &t) {
  t["TopK"] = importTopK;
  t["NonZero"] = importNonZero;
  t["ScatterElements"] = importScatterElements;
  t["ScatterND"] = importScatterND;
  t["OneHot"] = importOneHot;
}
