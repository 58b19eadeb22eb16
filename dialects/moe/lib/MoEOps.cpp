//===- MoEOps.cpp - moe dialect operations and verifiers ------------------===//

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"

#include <cmath>

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
    return emitOpError("top_k (")
           << k << ") exceeds the number of experts (" << numExperts << ")";
  for (Value res : {getWeights(), getIndices()}) {
    RankedTensorType t = rt(res);
    if (t.getRank() != 2 ||
        !compatible(t.getDimSize(0), logits.getDimSize(0)) ||
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
  double eps = getRenormEps().convertToDouble();
  if (!(eps >= 0.0 && std::isfinite(eps)))
    return emitOpError("renorm_eps must be finite and >= 0, got ") << eps;
  if (eps != 0.0 && !getRenormalize())
    return emitOpError("renorm_eps without renormalize");
  // Written so that NaN is rejected too.
  if (!(getScalingFactor().convertToDouble() > 0.0))
    return emitOpError("scaling_factor must be positive, got ")
           << getScalingFactor().convertToDouble();
  return success();
}

//===----------------------------------------------------------------------===//
// ExpertsOp
//===----------------------------------------------------------------------===//

/// The biases of an expert FFN stack of `n` experts (hidden h, width f):
/// bias_up only with w_up; b_gate, b_up [n, f], b_down [n, h].
static LogicalResult checkExpertBiases(Operation *op, int64_t n, int64_t h,
                                       int64_t f, Value wUp, Value bGate,
                                       Value bUp, Value bDown) {
  if (bUp && !wUp)
    return op->emitOpError("bias_up given without w_up");
  auto checkBias = [&](Value b, int64_t cols, StringRef name) -> LogicalResult {
    if (!b)
      return success();
    RankedTensorType t = rt(b);
    if (t.getRank() != 2 || !compatible(t.getDimSize(0), n) ||
        !compatible(t.getDimSize(1), cols))
      return op->emitOpError(name)
             << " must be [" << n << ", " << cols << "], got " << t;
    return success();
  };
  if (failed(checkBias(bGate, f, "bias_gate")) ||
      failed(checkBias(bUp, f, "bias_up")) ||
      failed(checkBias(bDown, h, "bias_down")))
    return failure();
  return success();
}

static std::optional<double> toDouble(std::optional<APFloat> f) {
  if (!f)
    return std::nullopt;
  return f->convertToDouble();
}

/// `alpha`, `beta` and `limit` parameterise `clamped_swiglu` only, which
/// needs `w_up`; a limit must be positive, every parameter finite.
static LogicalResult checkActivationParams(Operation *op, Activation act,
                                           Value wUp, double alpha, double beta,
                                           std::optional<double> limit) {
  if (act != Activation::clamped_swiglu) {
    if (alpha != 1.0 || beta != 0.0 || limit)
      return op->emitOpError("alpha, beta and limit are parameters of "
                             "clamped_swiglu, not of ")
             << stringifyActivation(act);
    return success();
  }
  if (!wUp)
    return op->emitOpError("clamped_swiglu needs w_up");
  if (!std::isfinite(alpha) || !std::isfinite(beta))
    return op->emitOpError("alpha and beta must be finite, got ")
           << alpha << " and " << beta;
  // Written so that NaN is rejected too.
  if (limit && !(*limit > 0.0 && std::isfinite(*limit)))
    return op->emitOpError("limit must be positive and finite, got ") << *limit;
  return success();
}

/// Expert weights and biases must share the rows' element type (the
/// runtimes' grouped GEMMs take one type; moe-lower-precision narrows both).
static LogicalResult checkWeightTypes(Operation *op, Type rows,
                                      ValueRange weights) {
  for (Value w : weights)
    if (w && rt(w).getElementType() != rows)
      return op->emitOpError("expert weights must have the element type of "
                             "the rows they multiply (")
             << rows << "), got " << rt(w);
  return success();
}

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
  int64_t e = gate.getDimSize(0), h = gate.getDimSize(1),
          f = gate.getDimSize(2);
  if (!compatible(h, tokens.getDimSize(1)))
    return emitOpError("w_gate hidden size ")
           << h << " does not match the tokens' " << tokens.getDimSize(1);
  if (!compatible(down.getDimSize(0), e) ||
      !compatible(down.getDimSize(1), f) || !compatible(down.getDimSize(2), h))
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
  if (failed(checkExpertBiases(*this, e, h, f, getWUp(), getBGate(), getBUp(),
                               getBDown())) ||
      failed(checkActivationParams(
          *this, getActivation(), getWUp(), getAlpha().convertToDouble(),
          getBeta().convertToDouble(), toDouble(getLimit()))))
    return failure();
  if (res.getRank() != 2 ||
      !compatible(res.getDimSize(0), tokens.getDimSize(0)) ||
      !compatible(res.getDimSize(1), h))
    return emitOpError("result must be [tokens, hidden], got ") << res;
  if (res.getElementType() != tokens.getElementType())
    return emitOpError("result must have the tokens' element type ")
           << tokens.getElementType() << ", got " << res.getElementType();
  if (failed(checkWeightTypes(*this, tokens.getElementType(),
                              {getWGate(), getWUp(), getWDown(), getBGate(),
                               getBUp(), getBDown()})))
    return failure();
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
    return emitOpError("k (")
           << k << ") exceeds the axis size " << in.getDimSize(axis);
  for (Value v : {getValues(), getIndices()}) {
    RankedTensorType t = rt(v);
    if (t.getRank() != rank)
      return emitOpError("results must have rank ") << rank;
    for (int64_t d = 0; d < rank; ++d)
      if (!compatible(t.getDimSize(d), d == axis ? k : in.getDimSize(d)))
        return emitOpError("result ")
               << t << " does not match input " << in << " with k=" << k;
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
    return emitOpError("result must be [")
           << in.getRank() << ", N], got " << res;
  if (in.hasStaticShape() && !ShapedType::isDynamic(res.getDimSize(1)) &&
      res.getDimSize(1) > in.getNumElements())
    return emitOpError("result has more columns than the input has elements");
  return success();
}

LogicalResult TokenCountOp::verify() {
  int64_t kind = int64_t(getKind());
  if (kind < 0 || kind > 2)
    return emitOpError("kind must be 0 (t), 1 (tb) or 2 (T), got ") << kind;
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
    return emitOpError("axis ") << axis << " is out of range for rank " << rank;
  if (idx.getRank() != rank || upd.getRank() != rank)
    return emitOpError("data, indices and updates must have the same rank");
  for (int64_t d = 0; d < rank; ++d)
    if (!compatible(idx.getDimSize(d), upd.getDimSize(d)))
      return emitOpError("indices ")
             << idx << " and updates " << upd << " must have the same shape";
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
    return emitOpError("updates must have rank ")
           << expectRank << ", got " << upd;
  for (int64_t d = 0; d < expectRank; ++d) {
    int64_t want = d < idx.getRank() - 1
                       ? idx.getDimSize(d)
                       : data.getDimSize(q + d - (idx.getRank() - 1));
    if (!compatible(upd.getDimSize(d), want))
      return emitOpError("updates ")
             << upd << " do not match indices " << idx << " and data " << data;
  }
  if (upd.getElementType() != data.getElementType() || res != data)
    return emitOpError("updates and result must match data ") << data;
  return success();
}

//===----------------------------------------------------------------------===//
// Expert parallelism
//===----------------------------------------------------------------------===//

int64_t PlacementAttr::numHeld(int64_t rank) const {
  int64_t n = 0;
  for (int64_t s = 0; s < getSlotsPerRank(); ++s)
    n += expertAt(rank, s) >= 0;
  return n;
}

LogicalResult
PlacementAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                      int64_t numExperts, int64_t ranks, int64_t slotsPerRank,
                      ArrayRef<int64_t> slots, StringRef strategy) {
  if (numExperts < 1 || ranks < 1 || slotsPerRank < 1)
    return emitError() << "placement needs num_experts, ranks and "
                          "slots_per_rank >= 1";
  if (int64_t(slots.size()) != ranks * slotsPerRank)
    return emitError() << "placement has " << slots.size()
                       << " slots, expected ranks * slots_per_rank = "
                       << ranks * slotsPerRank;
  std::vector<bool> held(numExperts, false);
  for (int64_t e : slots) {
    if (e < -1 || e >= numExperts)
      return emitError() << "placement slot holds expert " << e
                         << ", outside [-1, " << numExperts << ")";
    if (e >= 0)
      held[e] = true;
  }
  for (int64_t e = 0; e < numExperts; ++e)
    if (!held[e])
      return emitError() << "placement holds no replica of expert " << e;
  return success();
}

/// Checks that `grid` names a shard.grid whose rank covers `axes`, when the
/// symbol can be resolved (ops verified outside a module are not checked).
static LogicalResult verifyGridAxes(Operation *op, FlatSymbolRefAttr grid,
                                    ArrayRef<int16_t> axes) {
  for (int16_t a : axes)
    if (a < 0)
      return op->emitOpError("grid axis must be >= 0, got ") << a;
  Operation *sym = SymbolTable::lookupNearestSymbolFrom(op, grid);
  if (!sym)
    return op->emitOpError("grid ") << grid << " is not defined";
  auto shape = sym->getAttrOfType<DenseI64ArrayAttr>("shape");
  if (sym->getName().getStringRef() != "shard.grid" || !shape)
    return op->emitOpError("grid ") << grid << " is not a shard.grid";
  for (int16_t a : axes)
    if (a >= int64_t(shape.size()))
      return op->emitOpError("grid axis ")
             << a << " is out of range for grid " << grid << " of rank "
             << shape.size();
  return success();
}

/// The EP group over `axes` of `grid` must have the placement's ranks.
static LogicalResult verifyPlacementRanks(Operation *op, FlatSymbolRefAttr grid,
                                          ArrayRef<int16_t> axes,
                                          PlacementAttr p) {
  if (failed(verifyGridAxes(op, grid, axes)))
    return failure();
  auto shape = SymbolTable::lookupNearestSymbolFrom(op, grid)
                   ->getAttrOfType<DenseI64ArrayAttr>("shape");
  int64_t n = 1;
  for (int16_t a : axes) {
    if (ShapedType::isDynamic(shape[a]))
      return success(); // known when the grid is
    n *= shape[a];
  }
  if (n != p.getRanks()) {
    std::string list;
    for (int16_t a : axes)
      list += (list.empty() ? "" : ", ") + std::to_string(a);
    return op->emitOpError("the placement is for ")
           << p.getRanks() << " ranks, but the EP group over grid axes ["
           << list << "] has " << n;
  }
  return success();
}

LogicalResult DispatchOp::verify() {
  RankedTensorType tokens = rt(getTokens()), idx = rt(getIndices()),
                   recv = rt(getRecv());
  if (tokens.getRank() != 2 || idx.getRank() != 2 || recv.getRank() != 2)
    return emitOpError("tokens [T, H], indices [T, k] and recv [R, H] must be "
                       "rank 2");
  if (!compatible(tokens.getDimSize(0), idx.getDimSize(0)))
    return emitOpError("indices have ")
           << idx.getDimSize(0) << " rows but there are "
           << tokens.getDimSize(0) << " tokens";
  if (!compatible(recv.getDimSize(1), tokens.getDimSize(1)) ||
      recv.getElementType() != tokens.getElementType())
    return emitOpError("recv must hold rows of the tokens' type and width, "
                       "got ")
           << recv;
  if (Value wv = getWeights()) {
    RankedTensorType w = rt(wv);
    if (w.getRank() != 2 || !compatible(w.getDimSize(0), idx.getDimSize(0)) ||
        !compatible(w.getDimSize(1), idx.getDimSize(1)))
      return emitOpError("weights must be shaped like the indices ")
             << idx << ", got " << w;
  }
  if (getGridAxes().empty())
    return emitOpError("needs at least one grid axis");
  if (int64_t(getMaxRows()) < 0)
    return emitOpError("max_rows must be >= 0");
  if (int64_t(getCapacity()) < -1)
    return emitOpError("capacity must be -1 (dropless) or >= 0");
  return verifyPlacementRanks(*this, getGridAttr(), getGridAxes(),
                              getPlacement());
}

LogicalResult ExpertComputeOp::verify() {
  RankedTensorType recv = rt(getRecv()), gate = rt(getWGate()),
                   down = rt(getWDown()), res = rt(getResult());
  if (recv.getRank() != 2 || gate.getRank() != 3 || down.getRank() != 3)
    return emitOpError("recv must be [R, H], w_gate [S, H, F], w_down [S, F, "
                       "H]");
  int64_t s = gate.getDimSize(0), h = gate.getDimSize(1),
          f = gate.getDimSize(2);
  if (!compatible(h, recv.getDimSize(1)))
    return emitOpError("w_gate hidden size ")
           << h << " does not match recv's " << recv.getDimSize(1);
  if (!compatible(down.getDimSize(0), s) ||
      !compatible(down.getDimSize(1), f) || !compatible(down.getDimSize(2), h))
    return emitOpError("w_down must be [S, F, H] = [")
           << s << ", " << f << ", " << h << "], got " << down;
  if (Value up = getWUp())
    if (rt(up).getShape() != gate.getShape())
      return emitOpError("w_up must have the shape of w_gate ")
             << gate << ", got " << rt(up);
  if (failed(checkExpertBiases(*this, s, h, f, getWUp(), getBGate(), getBUp(),
                               getBDown())) ||
      failed(checkActivationParams(
          *this, getActivation(), getWUp(), getAlpha().convertToDouble(),
          getBeta().convertToDouble(), toDouble(getLimit()))))
    return failure();
  if (res.getRank() != 2 ||
      !compatible(res.getDimSize(0), recv.getDimSize(0)) ||
      !compatible(res.getDimSize(1), h))
    return emitOpError("result must be [R, H] like recv, got ") << res;
  if (res.getElementType() != recv.getElementType())
    return emitOpError("result must have recv's element type ")
           << recv.getElementType() << ", got " << res.getElementType();
  if (failed(checkWeightTypes(*this, recv.getElementType(),
                              {getWGate(), getWUp(), getWDown(), getBGate(),
                               getBUp(), getBDown()})))
    return failure();
  if (auto d = getHandle().getDefiningOp<DispatchOp>()) {
    int64_t slots = d.getPlacement().getSlotsPerRank();
    if (!ShapedType::isDynamic(s) && s != slots)
      return emitOpError("weights stack ")
             << s << " experts but the dispatch's placement has " << slots
             << " slots per rank";
  }
  return success();
}

LogicalResult CombineOp::verify() {
  RankedTensorType y = rt(getY()), res = rt(getResult());
  RankedTensorType w = getWeights() ? rt(getWeights()) : RankedTensorType();
  if (y.getRank() != 2 || (w && w.getRank() != 2) || res.getRank() != 2)
    return emitOpError("y [R, H], weights [T, k] and result [T, H] must be "
                       "rank 2");
  if ((w && !compatible(res.getDimSize(0), w.getDimSize(0))) ||
      !compatible(res.getDimSize(1), y.getDimSize(1)))
    return emitOpError("result must be [T, H] = [")
           << (w ? w.getDimSize(0) : res.getDimSize(0)) << ", "
           << y.getDimSize(1) << "], got " << res;
  if (auto d = getHandle().getDefiningOp<DispatchOp>()) {
    // The routing weight is applied once: by the dispatch (weight_input
    // experts) or here.
    if (bool(w) == bool(d.getWeights()))
      return emitOpError(w ? "takes weights, but its dispatch scaled the rows "
                             "it sent by the routing weights already"
                           : "needs the routing weights: its dispatch sent "
                             "unscaled rows");
    RankedTensorType idx = rt(d.getIndices());
    if (w && (!compatible(idx.getDimSize(0), w.getDimSize(0)) ||
              !compatible(idx.getDimSize(1), w.getDimSize(1))))
      return emitOpError("weights must be shaped like the dispatch's indices ")
             << idx << ", got " << w;
    if (!compatible(res.getDimSize(0), idx.getDimSize(0)))
      return emitOpError("result has ")
             << res.getDimSize(0) << " rows but the dispatch has "
             << idx.getDimSize(0) << " tokens";
  }
  return success();
}

LogicalResult LocalWeightsOp::verify() {
  RankedTensorType in = rt(getWeights()), res = rt(getResult());
  PlacementAttr p = getPlacement();
  if (in.getRank() < 2 || res.getRank() != in.getRank())
    return emitOpError("weights must be stacked [E, ...] and the result of "
                       "the same rank");
  if (in.getElementType() != res.getElementType())
    return emitOpError("result must have the weights' element type");
  if (!compatible(in.getDimSize(0), p.getNumExperts()))
    return emitOpError("weights stack ")
           << in.getDimSize(0) << " experts, the placement "
           << p.getNumExperts();
  if (!compatible(res.getDimSize(0), p.getSlotsPerRank()))
    return emitOpError("result must have ")
           << p.getSlotsPerRank() << " slots, got " << res.getDimSize(0);
  int64_t splitDim = int64_t(getSplitDim());
  bool split = !getSplitAxes().empty();
  if (split && (splitDim < 1 || splitDim >= in.getRank()))
    return emitOpError("split_dim must be a non-expert dim of the weights");
  for (int64_t d = 1; d < in.getRank(); ++d) {
    if (split && d == splitDim)
      continue;
    if (!compatible(in.getDimSize(d), res.getDimSize(d)))
      return emitOpError("dim ") << d << " must be kept, got " << res;
  }
  if (getEpAxes().empty())
    return emitOpError("needs at least one ep grid axis");
  SmallVector<int16_t> axes(getEpAxes());
  llvm::append_range(axes, getSplitAxes());
  for (auto [i, a] : llvm::enumerate(axes))
    if (llvm::is_contained(ArrayRef<int16_t>(axes).take_front(i), a))
      return emitOpError("grid axis ") << a << " is used twice";
  if (failed(verifyGridAxes(*this, getGridAttr(), axes)))
    return failure();
  return verifyPlacementRanks(*this, getGridAttr(), getEpAxes(), p);
}

LogicalResult TpSliceOp::verify() {
  RankedTensorType in = rt(getWeights()), res = rt(getResult());
  int64_t dim = int64_t(getDim());
  if (in.getRank() != res.getRank() || dim < 0 || dim >= in.getRank())
    return emitOpError("dim ") << dim
                               << " must be a dim of the weights and "
                                  "the result must have their rank";
  for (int64_t d = 0; d < in.getRank(); ++d)
    if (d != dim && !compatible(in.getDimSize(d), res.getDimSize(d)))
      return emitOpError("dim ") << d << " must be kept, got " << res;
  if (getGridAxes().empty())
    return emitOpError("needs at least one grid axis");
  if (failed(verifyGridAxes(*this, getGridAttr(), getGridAxes())))
    return failure();
  if (Operation *sym =
          SymbolTable::lookupNearestSymbolFrom(*this, getGridAttr())) {
    int64_t n = 1;
    for (int16_t a : getGridAxes())
      n *= sym->getAttrOfType<DenseI64ArrayAttr>("shape")[a];
    if (!ShapedType::isDynamic(in.getDimSize(dim)) &&
        (in.getDimSize(dim) % n != 0 ||
         res.getDimSize(dim) * n != in.getDimSize(dim)))
      return emitOpError("dim ")
             << dim << " of size " << in.getDimSize(dim) << " must split into "
             << n << " blocks of " << res.getDimSize(dim);
  }
  return success();
}

LogicalResult DequantizeOp::verify() {
  int64_t bits = getBits(), bs = getBlockSize(), k = getK();
  if (bits != 2 && bits != 4 && bits != 8)
    return emitOpError("bits ") << bits << " must be 2, 4 or 8";
  if (bs < 1 || bs * bits % 8 != 0)
    return emitOpError("block_size ")
           << bs << " must be positive and fill whole bytes";
  if (k <= 0)
    return emitOpError("k ") << k << " must be positive";
  RankedTensorType codes = rt(getCodes()), scales = rt(getScales()),
                   res = rt(getResult());
  if (!codes.hasStaticShape() || !scales.hasStaticShape() ||
      !res.hasStaticShape())
    return emitOpError("needs static shapes");
  int64_t blocks = (k + bs - 1) / bs, blob = bs * bits / 8;
  int64_t rank = codes.getRank();
  if (rank < 3 || codes.getDimSize(rank - 2) != blocks ||
      codes.getDimSize(rank - 1) != blob)
    return emitOpError("codes must be [..., N, ")
           << blocks << ", " << blob << "] for k " << k << ", block_size " << bs
           << " and bits " << bits << ", got " << codes;
  // Leading dims (stacked experts) are kept: [..., N, blocks] scales,
  // [..., k, N] result.
  ArrayRef<int64_t> lead = codes.getShape().drop_back(3);
  int64_t n = codes.getDimSize(rank - 3);
  SmallVector<int64_t> sShape(lead), rShape(lead);
  sShape.append({n, blocks});
  rShape.append({k, n});
  if (scales.getShape() != ArrayRef<int64_t>(sShape))
    return emitOpError("scales must be [")
           << llvm::make_range(sShape.begin(), sShape.end()) << "]";
  if (Value z = getZeroPoints(); z && rt(z).getShape() != scales.getShape())
    return emitOpError("zero_points must be shaped like the scales");
  if (res.getShape() != ArrayRef<int64_t>(rShape))
    return emitOpError("result must be [")
           << llvm::make_range(rShape.begin(), rShape.end()) << "]";
  if (Value h = getDispatch()) {
    if (rank != 4)
      return emitOpError("with a dispatch, codes must be one rank's stacked "
                         "experts [slots, N, blocks, blob]");
    if (auto d = h.getDefiningOp<DispatchOp>();
        d && d.getPlacement().getSlotsPerRank() != codes.getDimSize(0))
      return emitOpError("codes stack ")
             << codes.getDimSize(0) << " experts; the dispatch's ranks hold "
             << d.getPlacement().getSlotsPerRank();
  }
  return success();
}
