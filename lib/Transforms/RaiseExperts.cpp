//===- RaiseExperts.cpp - exported MoE loops to moe.route/moe.experts -----===//
//
// An exported MoE layer is a router (scores -> top-k -> optional
// renormalisation) and, per expert, a data-dependent chain: the tokens routed
// to the expert are found with NonZero on the one-hot expert mask, gathered,
// run through the expert FFN, scaled by their routing weight and scattered
// (added) back into a [tokens, hidden] accumulator. The matcher works from
// the accumulator's add tree: every leaf scatter must be one expert of the
// same router, with the FFN weights as constants.
//
// The matchers, by family, are in Raise*.cpp (RaiseExpertsInternal.h): the
// router, the expert FFN, the per-expert loop and batched forms, the shared
// experts. This file holds the pass and the rewrite to moe.route +
// moe.experts.
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

#include "moec/Analysis/ConstantBytes.h"
#include "moec/Analysis/StaticShapes.h"
#include "moec/Transforms/Passes.h"

#include "mlir/Analysis/SliceAnalysis.h"

#include <cmath>
#include <cstring>

namespace moec {
#define GEN_PASS_DEF_MOERAISEEXPERTS
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;
using namespace moec::raising;

namespace {

/// Whether the ids a top-k or an ArgMax selects pick experts: they reach,
/// through any ops but another top-k, a NonZero (the per-expert loops) or
/// a gather of slabs of a constant [E, A, B] (the batched experts). Such a
/// selection that no router matcher recognises gets a warning instead of
/// passing silently.
bool selectsExperts(Value ids) {
  SetVector<Operation *> fwd;
  ForwardSliceOptions opts;
  getForwardSlice(ids, &fwd, opts);
  // A selection feeding another top-k (DeepSeek's group top-k) is part of
  // that router.
  if (llvm::any_of(fwd, [](Operation *op) { return isa<moe::TopKOp>(op); }))
    return false;
  for (Operation *op : fwd) {
    if (isa<moe::NonZeroOp>(op))
      return true;
    // The ids may be read inside the gather's body (a captured value): the
    // slice then holds the tensor.extract, not the generic.
    auto g = dyn_cast<linalg::GenericOp>(op);
    if (!g)
      g = op->getParentOfType<linalg::GenericOp>();
    if (!g)
      continue;
    bool slab = false;
    g.getBody()->walk([&](tensor::ExtractOp ex) {
      if (auto c = ex.getTensor().getDefiningOp<arith::ConstantOp>())
        slab |= cast<RankedTensorType>(c.getType()).getRank() == 3;
    });
    if (slab)
      return true;
  }
  return false;
}

/// Follows `v` forward through reshapes: every value that views it.
SmallVector<Value> viewsOf(Value v) {
  SmallVector<Value> out{v};
  for (size_t i = 0; i < out.size(); ++i)
    for (Operation *u : out[i].getUsers())
      if (isa<tensor::ExpandShapeOp, tensor::CollapseShapeOp,
              tensor::ReshapeOp>(u) &&
          u->getOperand(0) == out[i])
        out.push_back(u->getResult(0));
  return out;
}

/// Whether `v` (through views) is the ids of a selection: a moe.topk's
/// indices or an ArgMax's.
bool isPick(Value v) {
  v = skipViews(v);
  Operation *def = v.getDefiningOp();
  if (auto t = dyn_cast_or_null<moe::TopKOp>(def))
    return v == t.getIndices();
  auto g = dyn_cast_or_null<linalg::GenericOp>(def);
  return g && isFirstArgMaxLastDim(g) && v == g.getResult(1);
}

struct RaiseExperts : public moec::impl::MoERaiseExpertsBase<RaiseExperts> {
  using Base::Base;

  void runOnOperation() override {
    func::FuncOp func = getOperation();
    triedIds.clear();
    // Routers of layers raised already (product-key experts).
    SmallPtrSet<Operation *, 8> handled;
    raiseEmbeddingExperts(func, layerCounter, handled);
    LayerRaiser raiser(func, layerCounter);
    SmallVector<moe::TopKOp> topks;
    func.walk([&](moe::TopKOp t) { topks.push_back(t); });
    for (moe::TopKOp t : topks) {
      if (handled.contains(t))
        continue;
      std::string why;
      std::optional<FailureOr<Router>> r = matchRouter(t, why);
      bool picks = selectsExperts(t.getIndices());
      if (!r && !picks)
        continue; // not a router
      if (raised(raiser, r, picks, t, t.getIndices(), t.getInput(), why,
                 "its ids pick experts, but the router is none of the forms "
                 "docs/raising.md lists (a top-k of the softmax or sigmoid "
                 "of the logits, optionally biased or group-masked, or of "
                 "the logits followed by a softmax over the k values)"))
        continue;
      if (failed(notRaised(
              t, why,
              "MoE-like region (top-k over router scores) not raised: ")))
        return signalPassFailure();
    }
    // Switch Transformer: top-1 by ArgMax of the router probabilities.
    SmallVector<linalg::GenericOp> argmaxes;
    func.walk([&](linalg::GenericOp g) {
      if (isFirstArgMaxLastDim(g))
        argmaxes.push_back(g);
    });
    for (linalg::GenericOp g : argmaxes) {
      std::string why;
      Operation *diagOp = nullptr;
      std::optional<FailureOr<Router>> r = matchSwitchRouter(g, why, diagOp);
      bool picks = selectsExperts(g.getResult(1));
      if (!r && !picks)
        continue;
      // (A capacity that can drop tokens is not raised either way.)
      if (raised(raiser, r,
                 picks && !StringRef(why).starts_with("expert "
                                                      "capacity"),
                 g, g.getResult(1), g.getDpsInputs()[0], why,
                 "its ids pick experts, but it is not the argmax of a softmax "
                 "over the router logits with the max probability as weight "
                 "(docs/raising.md)"))
        continue;
      Operation *at = diagOp ? diagOp : g.getOperation();
      if (failed(notRaised(at, why,
                           StringRef(why).starts_with("expert capacity")
                               ? ""
                               : "MoE-like region (top-1 argmax over router "
                                 "probabilities) not raised: ")))
        return signalPassFailure();
    }
    densifyGroupedGemms(func);
  }

  enum class Generic { raised, tried, failed };

  /// Raises the layer of the selection `sel` (its ids `ids` over `scores`):
  /// with the matched router `r`, else (when its ids pick experts) with the
  /// router kept as the model's own ops. False with `why` set when the
  /// layer stays; `unknownWhy` is the reason when no matcher knew the
  /// router.
  bool raised(LayerRaiser &raiser, std::optional<FailureOr<Router>> &r,
              bool picks, Operation *sel, Value ids, Value scores,
              std::string &why, StringRef unknownWhy) {
    bool matched = r && succeeded(*r);
    if (matched && succeeded(raiser.raise(**r, why)))
      return true;
    if (!picks)
      return false;
    // A router that matched but whose experts read other weights (a
    // renormalisation of its own) is kept dense as well; the why of the
    // matched router then stays if that fails too.
    if (!r)
      why = unknownWhy.str();
    std::string matchedWhy = why;
    if (matched)
      why = "its experts read other weights than the router the matchers "
            "found";
    Generic gr = raiseGeneric(raiser, sel, ids, scores, why);
    if (gr == Generic::failed && matched)
      why = matchedWhy;
    return gr != Generic::failed;
  }

  /// A selection whose ids pick experts but whose router no matcher
  /// recognises: raises the experts with the router kept as the model's own
  /// ops (moe.experts then reads its ids and weights). `tried` when another
  /// pick of the same ids (PhiMoE's second ArgMax) was already tried;
  /// `failed` with `why` saying why the experts do not raise.
  Generic raiseGeneric(LayerRaiser &raiser, Operation *sel, Value ids,
                       Value scores, std::string &why) {
    // Picks concatenated along the last dim (PhiMoE's sparsemixer: two
    // ArgMax picks, [T, 1] each): the layer's ids are the concatenation.
    for (Value v : viewsOf(ids))
      for (Operation *u : v.getUsers())
        if (auto c = dyn_cast<tensor::ConcatOp>(u);
            c && int64_t(c.getDim()) == c.getResultType().getRank() - 1 &&
            llvm::all_of(c.getInputs(), isPick))
          ids = c.getResult();
    std::optional<Router> g = genericRouter(ids, scores);
    if (!g)
      return Generic::failed;
    if (!triedIds.insert(ids).second)
      return Generic::tried;
    std::string routerWhy = why, expertsWhy;
    if (failed(raiser.raise(*g, expertsWhy))) {
      why = routerWhy + "; with the router kept as the model's own ops, " +
            "the experts do not raise either: " + expertsWhy;
      return Generic::failed;
    }
    sel->emitRemark() << "MoE layer raised with its router kept as the "
                         "model's own ops (not one moe.route expresses: "
                      << routerWhy << ")";
    return Generic::raised;
  }

  /// Marks `at` with why its layer was not raised and warns (`prefix` +
  /// why; strict: an error, and fails).
  LogicalResult notRaised(Operation *at, const std::string &why,
                          StringRef prefix) {
    at->setAttr(kNotRaisedAttr, StringAttr::get(&getContext(), why));
    (strict ? at->emitError() : at->emitWarning()) << prefix << why;
    return failure(strict);
  }

  DenseSet<Value> triedIds;
  unsigned layerCounter = 0;
};
} // namespace

namespace moec::raising {

std::optional<Router> genericRouter(Value ids, Value scores) {
  auto idsT = cast<RankedTensorType>(ids.getType());
  auto sT = cast<RankedTensorType>(scores.getType());
  if (!idsT.getElementType().isInteger(64) || !idsT.hasStaticShape() ||
      !sT.hasStaticShape() || sT.getRank() < 1)
    return std::nullopt;
  // ids: the scores' leading (token) dims, then k (or none: top-1).
  ArrayRef<int64_t> lead = sT.getShape().drop_back();
  Router r;
  if (idsT.getRank() == sT.getRank() && idsT.getShape().drop_back() == lead)
    r.k = idsT.getShape().back();
  else if (idsT.getShape() != lead)
    return std::nullopt;
  if (r.k < 1 || r.k > sT.getShape().back())
    return std::nullopt;
  r.generic = true;
  r.select = ids.getDefiningOp();
  if (!r.select)
    return std::nullopt;
  r.ids = ids;
  r.logits = r.scores = scores;
  return r;
}

/// Replaces the layer ending at `root` ([tokens, H]) with moe.route +
/// moe.experts whose weights are stacked from `experts`.
LogicalResult
LayerRaiser::emitLayer(Router &r, Value root, Value tokensV,
                       const std::map<int64_t, ExpertFFN> &experts,
                       std::string &why) {
  auto logitsT = cast<RankedTensorType>(r.logits.getType());
  int64_t tokens = 1;
  for (int64_t d = 0; d + 1 < logitsT.getRank(); ++d)
    tokens = ShapedType::isDynamic(logitsT.getDimSize(d)) ||
                     ShapedType::isDynamic(tokens)
                 ? ShapedType::kDynamic
                 : tokens * logitsT.getDimSize(d);
  bool gated = experts.begin()->second.up.has_value();
  moe::Activation act = experts.begin()->second.act;
  const ExpertFFN &f0 = experts.begin()->second;
  for (auto &[id, f] : experts)
    if (f.up.has_value() != gated || f.act != act || f.alpha != f0.alpha ||
        f.beta != f0.beta || f.limit != f0.limit ||
        bool(f.bGate) != bool(f0.bGate) || bool(f.bUp) != bool(f0.bUp) ||
        bool(f.bDown) != bool(f0.bDown)) {
      why = "the experts differ in structure";
      return failure();
    }
  auto rootT = cast<RankedTensorType>(root.getType());
  auto tokT = cast<RankedTensorType>(tokensV.getType());
  if (rootT.getRank() != 2 || rootT.getDimSize(0) != tokens ||
      tokT.getNumElements() != rootT.getNumElements()) {
    why = "the accumulator is not [tokens, hidden]";
    return failure();
  }

  if (r.generic) {
    auto wT = r.weights ? dyn_cast<RankedTensorType>(r.weights.getType())
                        : RankedTensorType();
    if (!wT || !wT.hasStaticShape() || wT.getNumElements() != tokens * r.k ||
        !isa<FloatType>(wT.getElementType())) {
      why = "the experts are not scaled by one routing weight per selected "
            "id";
      return failure();
    }
  }

  // Rewrite: route + experts replace the whole loop.
  OpBuilder b(root.getContext());
  b.setInsertionPointAfterValue(root);
  Location loc = r.select->getLoc();
  SmallVector<std::pair<int64_t, WeightRef>> gates, ups, downs;
  for (auto &[id, f] : experts) {
    gates.push_back({id, f.gate});
    downs.push_back({id, f.down});
    if (gated)
      ups.push_back({id, *f.up});
  }
  std::string prefix = "moe" + std::to_string(layerCounter++);
  // A per-expert scale of the routing weights (Gemma 4) multiplies expert
  // e's output, which is linear in its w_down and b_down: fold it there.
  std::optional<std::vector<float>> scales;
  if (r.expertScale) {
    auto sT = cast<RankedTensorType>(r.expertScale.getType());
    FailureOr<std::vector<char>> bytes = constantBytes(r.expertScale);
    if (!sT.getElementType().isF32() || failed(bytes)) {
      why = "the per-expert scale of the routing weights is not a readable "
            "f32 constant";
      return failure();
    }
    scales.emplace(bytes->size() / 4);
    std::memcpy(scales->data(), bytes->data(), scales->size() * 4);
  }
  const std::vector<float> *sc = scales ? &*scales : nullptr;
  FailureOr<Value> wg = stack(b, loc, gates, prefix + ".w_gate");
  FailureOr<Value> wd = stack(b, loc, downs, prefix + ".w_down", sc);
  FailureOr<Value> wu =
      gated ? stack(b, loc, ups, prefix + ".w_up") : FailureOr<Value>(Value());
  if (failed(wg) || failed(wd) || failed(wu)) {
    why = "the expert weights differ in shape or are not readable";
    return failure();
  }
  // Biases (nn.Linear with bias): [E, F] for gate and up, [E, H] for down.
  auto biases = [&](BiasRef ExpertFFN::*field, StringRef name,
                    const std::vector<float> *scale) -> FailureOr<Value> {
    if (!(f0.*field))
      return Value();
    SmallVector<std::pair<int64_t, BiasRef>> parts;
    for (auto &[id, f] : experts)
      parts.push_back({id, f.*field});
    return stackBiases(b, loc, parts, prefix + "." + name.str(), scale);
  };
  FailureOr<Value> bg = biases(&ExpertFFN::bGate, "b_gate", nullptr);
  FailureOr<Value> bu = biases(&ExpertFFN::bUp, "b_up", nullptr);
  FailureOr<Value> bd = biases(&ExpertFFN::bDown, "b_down", sc);
  if (failed(bg) || failed(bu) || failed(bd)) {
    why = "the expert biases differ in shape or are not readable";
    return failure();
  }
  // Rows of [tokens, k]: the route's results, or a generic router's ids
  // and weights reshaped.
  auto asRows = [&](Value v) -> Value {
    auto t = cast<RankedTensorType>(v.getType());
    auto rowsT = RankedTensorType::get({tokens, r.k}, t.getElementType());
    // A view [..., k] with the tokens in front (the batched form's weights
    // are [T * k, 1] views of [T, k]): merging its leading dims keeps the
    // token dims apart, which a split along tokens needs.
    for (Value u = v; u;) {
      auto ut = cast<RankedTensorType>(u.getType());
      if (ut == rowsT)
        return u;
      if (ut.getRank() > 2 && ut.hasStaticShape() &&
          ut.getShape().back() == r.k && ut.getNumElements() == tokens * r.k)
        return collapseLeading(b, loc, u);
      Operation *def = u.getDefiningOp();
      u = isa_and_nonnull<tensor::ExpandShapeOp, tensor::CollapseShapeOp,
                          tensor::ReshapeOp>(def)
              ? def->getOperand(0)
              : Value();
    }
    return reshapeTo(b, loc, v, rowsT.getShape());
  };
  moe::RouteOp route;
  Value ids, weights;
  if (r.generic) {
    ids = asRows(r.ids);
    weights = asRows(r.weights);
    // Keep the router's logits in fp32 under --precision (as moe.route's).
    if (Operation *def = r.scores.getDefiningOp())
      def->setAttr("moe.router_scores", b.getUnitAttr());
  } else {
    auto wT = RankedTensorType::get(
        {tokens, r.k},
        cast<RankedTensorType>(r.weights.getType()).getElementType());
    auto idxT = RankedTensorType::get({tokens, r.k}, b.getI64Type());
    Value logits = collapseLeading(b, loc, r.logits); // [B * S, E]
    route = moe::RouteOp::create(
        b, loc, wT, idxT, logits, r.bias, b.getI64IntegerAttr(r.k),
        moe::ScoreFuncAttr::get(b.getContext(), r.score),
        b.getBoolAttr(r.renormalize), b.getF64FloatAttr(r.scaling),
        b.getI64IntegerAttr(r.numGroups), b.getI64IntegerAttr(r.topkGroups),
        moe::GroupScoreAttr::get(b.getContext(), r.groupScore),
        b.getF64FloatAttr(r.renormEps));
    ids = route.getIndices();
    weights = route.getWeights();
  }
  Value x = reshapeTo(b, loc, tokensV, rootT.getShape());
  auto ex = moe::ExpertsOp::create(
      b, loc, rootT, x, ids, weights, *wg, gated ? *wu : Value(), *wd, *bg, *bu,
      *bd, moe::ActivationAttr::get(b.getContext(), act),
      b.getI64IntegerAttr(0), b.getF64FloatAttr(f0.alpha),
      b.getF64FloatAttr(f0.beta),
      f0.limit > 0 ? b.getF64FloatAttr(f0.limit) : FloatAttr());
  ex.setWeightInput(r.weightInput);
  root.replaceAllUsesWith(ex.getResult());
  // A positive scalar times the whole routed sum (Laguna's
  // moe_routed_scaling_factor, applied after the experts) is the same as
  // times every routing weight: the route's scaling. Not with weight_input,
  // where the weights scale the experts' input.
  if (route && !r.weightInput && ex.getResult().hasOneUse()) {
    Operation *user = *ex.getResult().getUsers().begin();
    auto mul = user->getNumResults() == 1
                   ? matchScalarBinary<arith::MulFOp>(user->getResult(0))
                   : std::nullopt;
    if (mul && mul->first == ex.getResult() && mul->second > 0 &&
        std::isfinite(mul->second) &&
        user->getResult(0).getType() == ex.getType()) {
      route.setScalingFactorAttr(b.getF64FloatAttr(r.scaling * mul->second));
      user->getResult(0).replaceAllUsesWith(ex.getResult());
    }
  }
  markSharedExperts(ex, tokensV);
  return success();
}

} // namespace moec::raising
