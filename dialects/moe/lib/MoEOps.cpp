//===- MoEOps.cpp - moe dialect operations and verifiers ------------------===//

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace moec::moe;

#define GET_OP_CLASSES
#include "moec/Dialect/MoE/MoEOps.cpp.inc"

static RankedTensorType rt(Value v) {
  return cast<RankedTensorType>(v.getType());
}

/// True when two dims may be equal (either is dynamic or they match).
static bool compatible(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

//===----------------------------------------------------------------------===//
// RouteOp
//===----------------------------------------------------------------------===//

LogicalResult RouteOp::verify() {
  RankedTensorType logits = rt(getLogits());
  if (logits.getRank() != 2)
    return emitOpError("logits must be [tokens, experts], got rank ")
           << logits.getRank();
  int64_t numExperts = logits.getDimSize(1);
  int64_t k = getTopK();
  if (k < 1)
    return emitOpError("top_k must be >= 1, got ") << k;
  if (!ShapedType::isDynamic(numExperts) && k > numExperts)
    return emitOpError("top_k (") << k << ") exceeds the number of experts ("
                                  << numExperts << ")";
  for (Value res : {getWeights(), getIndices()}) {
    RankedTensorType t = rt(res);
    if (t.getRank() != 2 || !compatible(t.getDimSize(0), logits.getDimSize(0)) ||
        !compatible(t.getDimSize(1), k))
      return emitOpError("results must be [tokens, top_k] = [")
             << logits.getDimSize(0) << ", " << k << "], got " << t;
  }
  if (Value bias = getBias()) {
    RankedTensorType b = rt(bias);
    if (b.getRank() != 1 || !compatible(b.getDimSize(0), numExperts))
      return emitOpError("bias must be [experts] = [")
             << numExperts << "], got " << b;
  }
  int64_t groups = getNumGroups(), topkGroups = getTopkGroups();
  if (groups < 1 || topkGroups < 1 || topkGroups > groups)
    return emitOpError("need 1 <= topk_groups <= num_groups, got topk_groups=")
           << topkGroups << " num_groups=" << groups;
  if (groups > 1 && !ShapedType::isDynamic(numExperts)) {
    if (numExperts % groups != 0)
      return emitOpError("num_groups (")
             << groups << ") must divide the number of experts (" << numExperts
             << ")";
    int64_t perGroup = numExperts / groups;
    if (k > topkGroups * perGroup)
      return emitOpError("top_k (") << k << ") exceeds the experts in the "
                                    << topkGroups << " selected groups";
    if (getGroupScore() == GroupScore::top2_sum && perGroup < 2)
      return emitOpError("group_score top2_sum needs >= 2 experts per group");
  }
  // Written so that NaN is rejected too.
  if (!(getScalingFactor().convertToDouble() > 0.0))
    return emitOpError("scaling_factor must be positive, got ")
           << getScalingFactor().convertToDouble();
  return success();
}

//===----------------------------------------------------------------------===//
// ExpertsOp
//===----------------------------------------------------------------------===//

LogicalResult ExpertsOp::verify() {
  RankedTensorType tokens = rt(getTokens()), idx = rt(getIndices()),
                   w = rt(getWeights()), gate = rt(getWGate()),
                   down = rt(getWDown()), res = rt(getResult());
  if (tokens.getRank() != 2)
    return emitOpError("tokens must be [tokens, hidden], got ") << tokens;
  if (idx.getRank() != 2 || w.getRank() != 2 ||
      !compatible(idx.getDimSize(0), w.getDimSize(0)) ||
      !compatible(idx.getDimSize(1), w.getDimSize(1)))
    return emitOpError("indices and weights must both be [tokens, top_k], got ")
           << idx << " and " << w;
  if (!compatible(idx.getDimSize(0), tokens.getDimSize(0)))
    return emitOpError("indices have ")
           << idx.getDimSize(0) << " rows but there are "
           << tokens.getDimSize(0) << " tokens";
  if (gate.getRank() != 3 || down.getRank() != 3)
    return emitOpError("w_gate must be [E, H, F] and w_down [E, F, H]");
  int64_t e = gate.getDimSize(0), h = gate.getDimSize(1), f = gate.getDimSize(2);
  if (!compatible(h, tokens.getDimSize(1)))
    return emitOpError("w_gate hidden size ")
           << h << " does not match the tokens' " << tokens.getDimSize(1);
  if (!compatible(down.getDimSize(0), e) || !compatible(down.getDimSize(1), f) ||
      !compatible(down.getDimSize(2), h))
    return emitOpError("w_down must be [E, F, H] = [")
           << e << ", " << f << ", " << h << "], got " << down;
  if (Value up = getWUp()) {
    RankedTensorType u = rt(up);
    bool same = u.getRank() == 3;
    for (int64_t d = 0; same && d < 3; ++d)
      same = compatible(u.getDimSize(d), gate.getDimSize(d));
    if (!same)
      return emitOpError("w_up must have the shape of w_gate ")
             << gate << ", got " << u;
  }
  if (getBUp() && !getWUp())
    return emitOpError("bias_up given without w_up");
  auto checkBias = [&](Value b, int64_t n, StringRef name) -> LogicalResult {
    if (!b)
      return success();
    RankedTensorType t = rt(b);
    if (t.getRank() != 2 || !compatible(t.getDimSize(0), e) ||
        !compatible(t.getDimSize(1), n))
      return emitOpError(name) << " must be [" << e << ", " << n << "], got "
                               << t;
    return success();
  };
  if (failed(checkBias(getBGate(), f, "bias_gate")) ||
      failed(checkBias(getBUp(), f, "bias_up")) ||
      failed(checkBias(getBDown(), h, "bias_down")))
    return failure();
  if (res.getRank() != 2 || !compatible(res.getDimSize(0), tokens.getDimSize(0)) ||
      !compatible(res.getDimSize(1), h))
    return emitOpError("result must be [tokens, hidden], got ") << res;
  if (res.getElementType() != tokens.getElementType())
    return emitOpError("result must have the tokens' element type ")
           << tokens.getElementType() << ", got " << res.getElementType();
  if (int64_t(getExpertOffset()) < 0)
    return emitOpError("expert_offset must be >= 0");
  return success();
}

//===----------------------------------------------------------------------===//
// TopKOp
//===----------------------------------------------------------------------===//

LogicalResult TopKOp::verify() {
  RankedTensorType in = rt(getInput());
  int64_t rank = in.getRank(), axis = getAxis(), k = getK();
  if (axis < 0 || axis >= rank)
    return emitOpError("axis ") << axis << " is out of range for rank " << rank;
  if (k < 1)
    return emitOpError("k must be >= 1, got ") << k;
  if (!ShapedType::isDynamic(in.getDimSize(axis)) && k > in.getDimSize(axis))
    return emitOpError("k (") << k << ") exceeds the axis size "
                              << in.getDimSize(axis);
  for (Value v : {getValues(), getIndices()}) {
    RankedTensorType t = rt(v);
    if (t.getRank() != rank)
      return emitOpError("results must have rank ") << rank;
    for (int64_t d = 0; d < rank; ++d)
      if (!compatible(t.getDimSize(d), d == axis ? k : in.getDimSize(d)))
        return emitOpError("result ") << t << " does not match input " << in
                                      << " with k=" << k;
  }
  if (rt(getValues()).getElementType() != in.getElementType())
    return emitOpError("values must have the input's element type");
  return success();
}

//===----------------------------------------------------------------------===//
// NonZeroOp
//===----------------------------------------------------------------------===//

LogicalResult NonZeroOp::verify() {
  RankedTensorType in = rt(getInput()), res = rt(getResult());
  if (res.getRank() != 2 || !compatible(res.getDimSize(0), in.getRank()))
    return emitOpError("result must be [") << in.getRank() << ", N], got "
                                           << res;
  if (in.hasStaticShape() && !ShapedType::isDynamic(res.getDimSize(1)) &&
      res.getDimSize(1) > in.getNumElements())
    return emitOpError("result has more columns than the input has elements");
  return success();
}

//===----------------------------------------------------------------------===//
// Scatter ops
//===----------------------------------------------------------------------===//

LogicalResult ScatterElementsOp::verify() {
  RankedTensorType data = rt(getData()), idx = rt(getIndices()),
                   upd = rt(getUpdates()), res = rt(getResult());
  int64_t rank = data.getRank(), axis = getAxis();
  if (axis < 0 || axis >= rank)
    return emitOpError("axis ") << axis << " is out of range for rank "
                                << rank;
  if (idx.getRank() != rank || upd.getRank() != rank)
    return emitOpError("data, indices and updates must have the same rank");
  for (int64_t d = 0; d < rank; ++d)
    if (!compatible(idx.getDimSize(d), upd.getDimSize(d)))
      return emitOpError("indices ") << idx << " and updates " << upd
                                     << " must have the same shape";
  // Off the axis, an index position is also a position in data (ONNX and
  // onnxruntime require indices.shape[d] <= data.shape[d]).
  for (int64_t d = 0; d < rank; ++d)
    if (d != axis && !ShapedType::isDynamic(idx.getDimSize(d)) &&
        !ShapedType::isDynamic(data.getDimSize(d)) &&
        idx.getDimSize(d) > data.getDimSize(d))
      return emitOpError("indices dim ")
             << d << " (" << idx.getDimSize(d) << ") exceeds data dim " << d
             << " (" << data.getDimSize(d) << ") off the axis";
  if (upd.getElementType() != data.getElementType() || res != data)
    return emitOpError("updates and result must match data ") << data;
  return success();
}

LogicalResult ScatterNDOp::verify() {
  RankedTensorType data = rt(getData()), idx = rt(getIndices()),
                   upd = rt(getUpdates()), res = rt(getResult());
  if (idx.getRank() < 1)
    return emitOpError("indices must have rank >= 1");
  int64_t q = idx.getDimSize(idx.getRank() - 1);
  if (ShapedType::isDynamic(q))
    return emitOpError("the last dimension of indices must be static");
  if (q > data.getRank())
    return emitOpError("index tuples of length ")
           << q << " exceed the data rank " << data.getRank();
  int64_t expectRank = idx.getRank() - 1 + data.getRank() - q;
  if (upd.getRank() != expectRank)
    return emitOpError("updates must have rank ") << expectRank << ", got "
                                                  << upd;
  for (int64_t d = 0; d < expectRank; ++d) {
    int64_t want = d < idx.getRank() - 1
                       ? idx.getDimSize(d)
                       : data.getDimSize(q + d - (idx.getRank() - 1));
    if (!compatible(upd.getDimSize(d), want))
      return emitOpError("updates ") << upd << " do not match indices " << idx
                                     << " and data " << data;
  }
  if (upd.getElementType() != data.getElementType() || res != data)
    return emitOpError("updates and result must match data ") << data;
  return success();
}
