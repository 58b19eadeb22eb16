//===- RaiseRouter.cpp - routers for moe-raise-experts --------------------===//
//
// Reads the router of an MoE layer back from its selection: a top-k over
// softmax or sigmoid scores, with an optional selection bias, DeepSeek's
// group-limited selection, renormalisation and scaling; or Switch
// Transformer's top-1 ArgMax with its one-hot expert mask and expert
// capacity.
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

#include <cmath>

#include "moec/Analysis/ConstantBytes.h"

#include "mlir/IR/Matchers.h"

#include <cstring>
#include <limits>

using namespace mlir;
using namespace moec;

namespace moec::raising {

namespace {

/// A generic whose body is `arith.select` of its three inputs: returns them.
std::optional<std::array<Value, 3>> matchSelect(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 3 || g.getNumResults() != 1)
    return std::nullopt;
  SmallVector<Operation *> ops = bodyOps(g);
  Block *b = g.getBody();
  if (ops.size() != 1 || !isa<arith::SelectOp>(ops[0]) ||
      b->getTerminator()->getOperand(0) != ops[0]->getResult(0))
    return std::nullopt;
  for (unsigned i = 0; i < 3; ++i)
    if (ops[0]->getOperand(i) != b->getArgument(i))
      return std::nullopt;
  return std::array<Value, 3>{g.getDpsInputs()[0], g.getDpsInputs()[1],
                              g.getDpsInputs()[2]};
}

/// A one-input generic whose body is one op `OpTy(arg, C)` with C a scalar
/// constant (either operand order): returns the input and C.
template <typename OpTy>
std::optional<std::pair<Value, Attribute>> matchUnaryConst(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1 || g.getNumResults() != 1)
    return std::nullopt;
  SmallVector<Operation *> ops = bodyOps(g);
  Block *b = g.getBody();
  if (ops.size() != 1 || !isa<OpTy>(ops[0]) ||
      b->getTerminator()->getOperand(0) != ops[0]->getResult(0))
    return std::nullopt;
  for (unsigned i = 0; i < 2; ++i) {
    Attribute c;
    if (ops[0]->getOperand(i) == b->getArgument(0) &&
        matchPattern(ops[0]->getOperand(1 - i), m_Constant(&c)))
      return std::make_pair(g.getDpsInputs()[0], c);
  }
  return std::nullopt;
}

/// True for a float constant whose elements are all `value`.
bool isSplatConstant(Value v, double value) {
  auto c = skipViews(v).getDefiningOp<arith::ConstantOp>();
  if (!c)
    return false;
  if (auto f = dyn_cast<FloatAttr>(c.getValue()))
    return f.getValueAsDouble() == value;
  if (auto r = dyn_cast<DenseResourceElementsAttr>(c.getValue())) {
    FailureOr<std::vector<char>> bytes = constantBytes(c);
    if (failed(bytes) || !r.getElementType().isF32())
      return false;
    for (size_t i = 0; i + 4 <= bytes->size(); i += 4) {
      float f;
      std::memcpy(&f, bytes->data() + i, 4);
      if (f != value)
        return false;
    }
    return true;
  }
  auto d = dyn_cast<DenseFPElementsAttr>(c.getValue());
  return d && llvm::all_of(d.getValues<APFloat>(), [&](const APFloat &x) {
           return x.convertToDouble() == value;
         });
}

/// `x` reshaped from [T, E] into [T, G, E / G]: returns x.
Value matchGroupView(Value v, int64_t groups) {
  auto e = v.getDefiningOp<tensor::ExpandShapeOp>();
  if (!e)
    return {};
  auto t = cast<RankedTensorType>(e.getType());
  auto src = cast<RankedTensorType>(e.getSrc().getType());
  if (t.getRank() != 3 || src.getRank() != 2 || t.getDimSize(1) != groups ||
      t.getDimSize(0) != src.getDimSize(0))
    return {};
  return e.getSrc();
}

/// A test of a float tensor against zero, as exporters write a mask's
/// truth: `m != 0` (torch's `.bool()`, a Cast to bool), `m == 0`, or the
/// negation (`xor true`) of either, the zero a scalar constant in the body
/// or a zero tensor input (either operand order). Returns m and whether the
/// test is true where m is non-zero.
std::optional<std::pair<Value, bool>> matchZeroTest(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumResults() != 1)
    return std::nullopt;
  if (auto notOp = matchUnaryConst<arith::XOrIOp>(v)) {
    auto ia = dyn_cast<IntegerAttr>(notOp->second);
    auto ba = dyn_cast<BoolAttr>(notOp->second);
    if (!(ia && ia.getValue().isAllOnes()) && !(ba && ba.getValue()))
      return std::nullopt;
    auto inner = matchZeroTest(notOp->first);
    if (!inner)
      return std::nullopt;
    return std::make_pair(inner->first, !inner->second);
  }
  SmallVector<Operation *> ops = bodyOps(g);
  auto cmp =
      ops.size() == 1 ? dyn_cast<arith::CmpFOp>(ops[0]) : arith::CmpFOp();
  Block *b = g.getBody();
  if (!cmp || b->getTerminator()->getOperand(0) != cmp.getResult())
    return std::nullopt;
  bool nonZero;
  switch (cmp.getPredicate()) {
  case arith::CmpFPredicate::UNE:
  case arith::CmpFPredicate::ONE:
    nonZero = true;
    break;
  case arith::CmpFPredicate::OEQ:
  case arith::CmpFPredicate::UEQ:
    nonZero = false;
    break;
  default:
    return std::nullopt;
  }
  // Which operand is the mask, which the zero.
  auto isZero = [&](Value x) {
    APFloat f(0.0f);
    if (matchPattern(x, m_ConstantFloat(&f)))
      return f.isZero();
    if (auto arg = dyn_cast<BlockArgument>(x);
        arg && arg.getOwner() == b && arg.getArgNumber() < g.getNumDpsInputs())
      return isZeroConstant(g.getDpsInputs()[arg.getArgNumber()]);
    return false;
  };
  for (auto [m, z] : {std::pair(cmp.getLhs(), cmp.getRhs()),
                      std::pair(cmp.getRhs(), cmp.getLhs())}) {
    auto arg = dyn_cast<BlockArgument>(m);
    if (arg && arg.getOwner() == b &&
        arg.getArgNumber() < g.getNumDpsInputs() && isZero(z))
      return std::make_pair(Value(g.getDpsInputs()[arg.getArgNumber()]),
                            nonZero);
  }
  return std::nullopt;
}

/// Reads the group-limited selection of DeepSeek's routers: `sel` is
/// select(drop, fill, c) with `drop` true where the expanded group mask
/// scatter(zeros, topk(group_scores).indices, ones) is zero (`~m.bool()`,
/// `m == 0`), or select(keep, c, fill) with `keep` its negation
/// (`condIsDrop` says which). Fills `r` and returns c, or an empty value
/// with `why` set.
Value matchGroupLimited(Value cond, bool condIsDrop, Value fill, Value c,
                        Router &r, std::string &why) {
  why = "group-limited routing not recognised";
  std::optional<std::pair<Value, bool>> test = matchZeroTest(cond);
  if (!test) {
    why = "group-limited routing not recognised: the group mask is not "
          "tested against zero (`m != 0`, `m == 0`, `~m.bool()`)";
    return {};
  }
  // The condition must be true exactly where the expert is dropped.
  bool dropWhereNonZero = condIsDrop ? test->second : !test->second;
  if (dropWhereNonZero) {
    why = "group-limited routing not recognised: the group mask keeps the "
          "experts of the groups that were not selected";
    return {};
  }
  // [T, G, 1] -> [T, G, E/G] broadcast, collapsed to [T, E].
  Value bc = skipViews(test->first);
  auto bg = bc.getDefiningOp<linalg::GenericOp>();
  if (!bg || bg.getNumDpsInputs() != 1 || !bodyOps(bg).empty() ||
      bg.getBody()->getTerminator()->getOperand(0) !=
          bg.getBody()->getArgument(0))
    return {};
  auto inT = cast<RankedTensorType>(bg.getDpsInputs()[0].getType());
  auto outT = cast<RankedTensorType>(bg.getResult(0).getType());
  if (inT.getRank() != 3 || outT.getRank() != 3 || inT.getDimSize(2) != 1 ||
      inT.getDimSize(1) != outT.getDimSize(1))
    return {};
  int64_t groups = outT.getDimSize(1);
  auto sc =
      skipViews(bg.getDpsInputs()[0]).getDefiningOp<moe::ScatterElementsOp>();
  if (!sc || sc.getAxis() != 1 || sc.getReduction() != moe::Reduction::none ||
      !isZeroConstant(sc.getData()) || !isSplatConstant(sc.getUpdates(), 1.0))
    return {};
  auto gtop = sc.getIndices().getDefiningOp<moe::TopKOp>();
  if (!gtop || gtop.getIndices() != sc.getIndices() || gtop.getAxis() != 1 ||
      !gtop.getLargest())
    return {};
  // Group scores: max over the group (V2) or the sum of its top two (V3).
  Value gs = gtop.getInput();
  if (Value in = matchReduce<arith::MaximumFOp>(gs, 2)) {
    if (matchGroupView(in, groups) != c) {
      why = "the group scores are not the maxima of the selection scores";
      return {};
    }
    r.groupScore = moe::GroupScore::max;
  } else if (Value in = matchReduce<arith::AddFOp>(gs, 2)) {
    auto t2 = skipViews(in).getDefiningOp<moe::TopKOp>();
    if (!t2 || t2.getValues() != skipViews(in) || t2.getK() != 2 ||
        t2.getAxis() != 2 || !t2.getLargest() ||
        matchGroupView(t2.getInput(), groups) != c) {
      why = "the group scores are not the sums of the two best selection "
            "scores";
      return {};
    }
    r.groupScore = moe::GroupScore::top2_sum;
  } else {
    why = "the group scores are neither a max nor a top-2 sum";
    return {};
  }
  // Masked-out experts must never win: -inf, or 0 below positive scores.
  if (!isSplatConstant(fill, -std::numeric_limits<double>::infinity()) &&
      !isSplatConstant(fill, 0.0)) {
    why = "masked-out experts are filled with a value that could win";
    return {};
  }
  r.numGroups = groups;
  r.topkGroups = gtop.getK();
  return c;
}

/// A per-expert scale read at the selected ids (Gemma 4's
/// `per_expert_scale[top_k_index]`): a generic over the [T, k] ids yielding
/// `tensor.extract %c[id]` (negative ids wrapped) of a constant [E]; null
/// otherwise.
arith::ConstantOp expertScaleSource(Value v, Value ids, int64_t numExperts) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1 || g.getNumResults() != 1 ||
      skipViews(g.getDpsInputs()[0]) != ids ||
      !g.getIndexingMapsArray()[0].isIdentity())
    return {};
  auto y = g.getBody()
               ->getTerminator()
               ->getOperand(0)
               .getDefiningOp<tensor::ExtractOp>();
  if (!y || y.getIndices().size() != 1)
    return {};
  auto c = y.getTensor().getDefiningOp<arith::ConstantOp>();
  auto cT = c ? cast<RankedTensorType>(c.getType()) : RankedTensorType();
  if (!cT || cT.getRank() != 1 || cT.getDimSize(0) != numExperts)
    return {};
  // The index: index_cast(id), or select(id < 0, id + E, id) of it.
  Value idx = y.getIndices()[0];
  if (auto sel = idx.getDefiningOp<arith::SelectOp>())
    idx = sel.getFalseValue();
  auto cast = idx.getDefiningOp<arith::IndexCastOp>();
  if (!cast || cast.getIn() != g.getBody()->getArgument(0))
    return {};
  return c;
}

/// Scaling: the weights times a scalar (routed_scaling_factor) become the
/// router's weights and `scaling`; then times a per-expert scale at the
/// selected ids, `expertScale` (folded into the experts' down projections).
void matchScaling(Router &r) {
  for (Operation *user : r.weights.getUsers()) {
    if (user->getNumResults() != 1)
      continue;
    auto mul = matchScalarBinary<arith::MulFOp>(user->getResult(0));
    if (mul && mul->first == r.weights) {
      r.weights = user->getResult(0);
      r.scaling = mul->second;
      break;
    }
  }
  auto topk = dyn_cast_or_null<moe::TopKOp>(r.select);
  if (!topk || r.dense)
    return;
  int64_t e =
      cast<RankedTensorType>(topk.getInput().getType()).getShape().back();
  for (Operation *user : r.weights.getUsers()) {
    if (user->getNumResults() != 1)
      continue;
    auto mul = matchBinary<arith::MulFOp>(user->getResult(0));
    if (!mul)
      continue;
    for (auto [w, s] : {std::pair(mul->first, mul->second),
                        std::pair(mul->second, mul->first)})
      if (w == r.weights) {
        if (arith::ConstantOp c = expertScaleSource(s, topk.getIndices(), e)) {
          r.weights = user->getResult(0);
          r.expertScale = c;
          return;
        }
      }
  }
}

/// Llama 4's router: the top-k over the logits `c`, its values scattered
/// at their ids into a -inf filled [T, E], then a sigmoid: the sigmoid
/// scores of the selected experts and 0 elsewhere, as one dense [T, E].
/// Sigmoid is monotonic, so the experts are those of the k largest sigmoid
/// scores (moe.route, sigmoid, not renormalised). Nullopt when the top-k
/// values are not scattered.
std::optional<FailureOr<Router>>
matchScatteredSigmoid(moe::TopKOp topk, Value c, Router &r, std::string &why) {
  auto sc = llvm::find_if(topk.getValues().getUsers(), [&](Operation *u) {
    auto s = dyn_cast<moe::ScatterElementsOp>(u);
    return s && s.getUpdates() == topk.getValues();
  });
  if (sc == topk.getValues().getUsers().end())
    return std::nullopt;
  auto scatter = cast<moe::ScatterElementsOp>(*sc);
  if (scatter.getIndices() != topk.getIndices() || scatter.getAxis() != 1 ||
      scatter.getReduction() != moe::Reduction::none ||
      scatter.getType() != topk.getInput().getType() ||
      !isSplatConstant(scatter.getData(),
                       -std::numeric_limits<double>::infinity())) {
    why = "the top-k router logits are scattered, but not at their expert "
          "ids into a -inf filled [tokens, experts]";
    return FailureOr<Router>(failure());
  }
  // The sigmoid, possibly through views (torch's .float() casts are no-ops).
  SmallVector<Value> vals{scatter.getResult()};
  for (size_t i = 0; i < vals.size(); ++i)
    for (Operation *u : vals[i].getUsers()) {
      if (isa<tensor::ReshapeOp, tensor::CastOp, tensor::CollapseShapeOp,
              tensor::ExpandShapeOp>(u)) {
        vals.push_back(u->getResult(0));
        continue;
      }
      if (u->getNumResults() != 1 || matchSigmoid(u->getResult(0)) != vals[i])
        continue;
      r.logits = c;
      r.scores = u->getResult(0);
      r.score = moe::ScoreFunc::sigmoid;
      r.weights = r.scores;
      r.dense = true;
      return FailureOr<Router>(r);
    }
  why = "the top-k router logits scattered into -inf do not go through a "
        "sigmoid";
  return FailureOr<Router>(failure());
}

} // namespace

/// Matches the router that ends at the selection top-k `topk`. Returns
/// nullopt when `topk` is not over router scores at all; otherwise a Router,
/// or a failure with `why` set (a router that cannot be raised).
std::optional<FailureOr<Router>> matchRouter(moe::TopKOp topk,
                                             std::string &why) {
  auto in = cast<RankedTensorType>(topk.getInput().getType());
  if (in.getRank() != 2 || topk.getAxis() != 1 || !topk.getLargest())
    return std::nullopt;
  Router r;
  r.select = topk;
  r.k = topk.getK();
  Value c = skipViews(topk.getInput());
  if (auto sel = matchSelect(c)) {
    // masked_fill(drop, fill) is select(drop, fill, c); torch.where(keep,
    // c, fill) is select(keep, c, fill). The scores are the operand that is
    // not a splat constant.
    bool condIsDrop = !isa_and_nonnull<arith::ConstantOp>(
        skipViews((*sel)[2]).getDefiningOp());
    Value fill = condIsDrop ? (*sel)[1] : (*sel)[2];
    Value inner = skipViews(condIsDrop ? (*sel)[2] : (*sel)[1]);
    // Only a select over scores counts as a router.
    Value probe = inner;
    if (auto add = matchBinary<arith::AddFOp>(probe))
      probe = skipViews(add->first);
    if (!probe.getDefiningOp<linalg::SoftmaxOp>() && !matchSigmoid(probe))
      return std::nullopt;
    std::string groupWhy;
    c = matchGroupLimited((*sel)[0], condIsDrop, fill, inner, r, groupWhy);
    if (!c) {
      why = groupWhy;
      return FailureOr<Router>(failure());
    }
  }
  if (r.numGroups == 1 && !c.getDefiningOp<linalg::SoftmaxOp>() &&
      !matchSigmoid(c))
    if (std::optional<FailureOr<Router>> dense =
            matchScatteredSigmoid(topk, c, r, why))
      return dense;
  // Top-k over the logits themselves, then a softmax over the k values
  // (GPT-OSS, Granite-MoE): softmax is monotonic, so these are the experts
  // of the largest softmax scores, and a softmax over k of the logits is
  // the full softmax renormalised over those k.
  if (r.numGroups == 1 && !c.getDefiningOp<linalg::SoftmaxOp>() &&
      !matchSigmoid(c)) {
    for (Operation *user : topk.getValues().getUsers()) {
      auto sm = dyn_cast<linalg::SoftmaxOp>(user);
      if (!sm || sm.getDimension() != 1)
        continue;
      r.logits = c;
      r.scores = c;
      r.score = moe::ScoreFunc::softmax;
      r.weights = sm.getResult()[0];
      r.renormalize = true;
      matchScaling(r);
      return FailureOr<Router>(r);
    }
  }
  // Selection scores: s, or s + bias with a constant [E] bias.
  Value s = c;
  if (auto add = matchBinary<arith::AddFOp>(c)) {
    for (auto [a, b] : {std::pair(add->first, add->second),
                        std::pair(add->second, add->first)}) {
      auto bc = skipViews(b).getDefiningOp<arith::ConstantOp>();
      auto bt = bc ? cast<RankedTensorType>(bc.getType()) : RankedTensorType();
      if (bt && bt.getRank() == 1 && bt.getDimSize(0) == in.getDimSize(1)) {
        s = skipViews(a);
        r.bias = bc;
        break;
      }
    }
    if (!r.bias)
      return std::nullopt;
  }
  if (auto sm = s.getDefiningOp<linalg::SoftmaxOp>();
      sm && sm.getDimension() == 1) {
    r.logits = sm.getInput();
  } else if (Value x = matchSigmoid(s)) {
    r.logits = x;
    r.score = moe::ScoreFunc::sigmoid;
  } else {
    return std::nullopt;
  }
  r.scores = s;
  if (r.numGroups > 1 &&
      (in.getDimSize(1) % r.numGroups != 0 ||
       int64_t(topk.getK()) >
           r.topkGroups * (in.getDimSize(1) / r.numGroups))) {
    why = "top-k exceeds the experts of the selected groups";
    return FailureOr<Router>(failure());
  }
  // The weights: the top-k values when they are the scores themselves (no
  // bias), else the scores gathered at the top-k indices.
  Value base;
  if (!r.bias)
    base = topk.getValues();
  for (Operation *user : topk.getIndices().getUsers()) {
    auto g = dyn_cast<linalg::GenericOp>(user);
    if (!g || g.getNumDpsInputs() != 1 ||
        g.getDpsInputs()[0] != topk.getIndices() || g.getNumResults() != 1)
      continue;
    // out[t, j] = s[t, idx[t, j]]
    Value src;
    bool rowIsD0 = false;
    g.getBody()->walk([&](tensor::ExtractOp ex) {
      src = ex.getTensor();
      if (ex.getIndices().size() == 2)
        if (auto li = ex.getIndices()[0].getDefiningOp<linalg::IndexOp>())
          rowIsD0 = li.getDim() == 0;
    });
    if (src && skipViews(src) == s && rowIsD0 &&
        g.getIndexingMapsArray()[0].isIdentity() &&
        g.getIndexingMapsArray()[1].isIdentity())
      base = g.getResult(0);
  }
  if (!base) {
    why = "the routing weights are not the scores of the selected experts "
          "(a selection bias must not reach the weights)";
    return FailureOr<Router>(failure());
  }
  r.weights = base;
  // Renormalisation: w / (sum(w, axis 1, keepdims) [+ eps]).
  for (Operation *user : base.getUsers()) {
    if (user->getNumResults() != 1)
      continue;
    auto div = matchBinary<arith::DivFOp>(user->getResult(0));
    if (!div || div->first != base)
      continue;
    Value den = skipViews(div->second);
    double eps = 0.0;
    if (auto add = matchScalarBinary<arith::AddFOp>(den)) {
      // An epsilon added to the sum: DeepSeek-V3's 1e-20, LFM2's 1e-6
      // (the route's renorm_eps).
      if (!(add->second >= 0.0 && std::isfinite(add->second)))
        continue;
      eps = add->second;
      den = skipViews(add->first);
    } else if (auto floor = matchScalarBinary<arith::MaximumFOp>(den)) {
      // ERNIE 4.5 clamps the sum from below (norm_min, 1e-12): softmax
      // scores of the top-k sum to at least 1/E, so a floor up to 1/E never
      // applies.
      if (r.score != moe::ScoreFunc::softmax ||
          floor->second > 1.0 / double(in.getDimSize(1)))
        continue;
      den = skipViews(floor->first);
    }
    Value red = matchReduce<arith::AddFOp>(den, 1);
    if (red && red == base) {
      r.weights = user->getResult(0);
      r.renormalize = true;
      // DeepSeek-V3's 1e-20 is below float resolution for any sum of
      // scores that is not itself ~0: not recorded.
      r.renormEps = eps > 1e-12 ? eps : 0.0;
      break;
    }
  }
  matchScaling(r);
  return FailureOr<Router>(r);
}

/// True when `g` is the importer's ArgMax over the last dim of a single
/// input that picks the first of equal maxima (outputs: values, i64 indices).
bool isFirstArgMaxLastDim(linalg::GenericOp g) {
  if (g.getNumDpsInputs() != 1 || g.getNumResults() != 2 ||
      !cast<RankedTensorType>(g.getResult(1).getType())
           .getElementType()
           .isInteger(64))
    return false;
  auto in = cast<RankedTensorType>(g.getDpsInputs()[0].getType());
  SmallVector<utils::IteratorType> iters = g.getIteratorTypesArray();
  for (int64_t d = 0; d < in.getRank(); ++d)
    if ((iters[d] == utils::IteratorType::reduction) != (d == in.getRank() - 1))
      return false;
  bool ogt = false, lastWins = false;
  g.getBody()->walk([&](Operation *op) {
    if (auto c = dyn_cast<arith::CmpFOp>(op))
      ogt |= c.getPredicate() == arith::CmpFPredicate::OGT;
    if (auto c = dyn_cast<arith::CmpIOp>(op))
      lastWins |= c.getPredicate() == arith::CmpIPredicate::sgt;
  });
  return ogt && !lastWins;
}

namespace {

/// An integer scalar that is a constant, or an element of a constant tensor
/// read at constant indices.
std::optional<int64_t> constantScalarInt(Value v) {
  APInt c;
  if (matchPattern(v, m_ConstantInt(&c)))
    return c.getSExtValue();
  auto ex = v.getDefiningOp<tensor::ExtractOp>();
  DenseIntElementsAttr d;
  if (!ex || !matchPattern(ex.getTensor(), m_Constant(&d)))
    return std::nullopt;
  SmallVector<uint64_t> at;
  for (Value i : ex.getIndices()) {
    if (!matchPattern(i, m_ConstantInt(&c)))
      return std::nullopt;
    at.push_back(c.getZExtValue());
  }
  return d.getValues<APInt>()[at].getSExtValue();
}

/// The importer's one-hot of `indices` along the last dim with off/on values
/// 0 and 1 (as imported, or canonicalized to an extui of the comparison):
/// the generic, or null.
linalg::GenericOp matchOneHot(Operation *user, Value indices) {
  auto g = dyn_cast<linalg::GenericOp>(user);
  if (!g || g.getNumDpsInputs() != 1 || g.getNumResults() != 1 ||
      skipViews(g.getDpsInputs()[0]) != indices ||
      !isa<IntegerType>(getElementTypeOrSelf(g.getResult(0).getType())))
    return {};
  int64_t rank = cast<RankedTensorType>(g.getResult(0).getType()).getRank();
  arith::CmpIOp hit;
  g.getBody()->walk([&](arith::CmpIOp c) {
    if (c.getPredicate() != arith::CmpIPredicate::eq)
      return;
    for (Value o : c->getOperands()) {
      if (auto ic = o.getDefiningOp<arith::IndexCastOp>())
        o = ic.getIn();
      if (auto li = o.getDefiningOp<linalg::IndexOp>();
          li && int64_t(li.getDim()) == rank - 1)
        hit = c;
    }
  });
  if (!hit)
    return {};
  Value y = g.getBody()->getTerminator()->getOperand(0);
  if (auto ext = y.getDefiningOp<arith::ExtUIOp>();
      ext && ext.getIn() == hit.getResult())
    return g;
  auto sel = y.getDefiningOp<arith::SelectOp>();
  if (sel && sel.getCondition() == hit.getResult() &&
      constantScalarInt(sel.getTrueValue()) == 1 &&
      constantScalarInt(sel.getFalseValue()) == 0)
    return g;
  return {};
}

/// The importer's CumSum generic over `v`: its axis and whether it is
/// exclusive, or nullopt.
std::optional<std::pair<int64_t, bool>> matchCumSum(Operation *user, Value v) {
  auto g = dyn_cast<linalg::GenericOp>(user);
  if (!g || g.getNumDpsInputs() != 1 || g.getNumResults() != 1 ||
      g.getDpsInputs()[0] != v)
    return std::nullopt;
  int64_t rank = cast<RankedTensorType>(v.getType()).getRank();
  AffineMap in = g.getIndexingMapsArray()[0];
  if (g.getNumLoops() != unsigned(rank + 1) || in.getNumResults() != rank)
    return std::nullopt;
  std::optional<int64_t> axis;
  for (int64_t d = 0; d < rank; ++d)
    if (in.getResult(d) == getAffineDimExpr(rank, g.getContext()))
      axis = d;
  std::optional<bool> exclusive;
  g.getBody()->walk([&](arith::CmpIOp c) {
    switch (c.getPredicate()) {
    case arith::CmpIPredicate::ule:
    case arith::CmpIPredicate::uge:
      exclusive = false;
      break;
    case arith::CmpIPredicate::ult:
    case arith::CmpIPredicate::ugt:
      exclusive = true;
      break;
    default:
      break;
    }
  });
  if (!axis || !exclusive)
    return std::nullopt;
  return std::make_pair(*axis, *exclusive);
}

/// The scalar value of an integer constant (rank 0, one element or splat).
std::optional<int64_t> scalarInt(Value v) {
  DenseIntElementsAttr d;
  if (!matchPattern(skipViews(v), m_Constant(&d)) ||
      (!d.isSplat() && d.getNumElements() != 1))
    return std::nullopt;
  return (*d.begin()).getSExtValue();
}

} // namespace

/// Matches Switch Transformer's router (transformers
/// SwitchTransformersTop1Router) from its ArgMax `am`: probs =
/// softmax(logits); idx = argmax(probs); mask = one_hot(idx) [* (cumsum(
/// one_hot, tokens) <= capacity)]; weight = max(probs). Nullopt when `am`
/// is not such a router; a failure with `why` (and `diagOp`) when it cannot
/// be raised.
std::optional<FailureOr<Router>>
matchSwitchRouter(linalg::GenericOp am, std::string &why, Operation *&diagOp) {
  if (!isFirstArgMaxLastDim(am))
    return std::nullopt;
  Value probs = skipViews(am.getDpsInputs()[0]);
  auto sm = probs.getDefiningOp<linalg::SoftmaxOp>();
  auto pt = cast<RankedTensorType>(probs.getType());
  if (!sm || int64_t(sm.getDimension()) != pt.getRank() - 1 ||
      !pt.hasStaticShape())
    return std::nullopt;
  Value idx = am.getResult(1);
  linalg::GenericOp oneHot;
  for (Operation *user : idx.getUsers())
    if ((oneHot = matchOneHot(user, idx)))
      break;
  // Without a one-hot, hand-written loops compare the ids with each expert
  // (`torch.where(idx == e)`); the loop matcher reads those comparisons.
  bool compared = false;
  for (Operation *user : idx.getUsers())
    if (auto g = dyn_cast<linalg::GenericOp>(user);
        g && g.getNumResults() == 1 && bodyOps(g).size() == 1)
      if (auto c = dyn_cast<arith::CmpIOp>(bodyOps(g)[0]))
        compared |= c.getPredicate() == arith::CmpIPredicate::eq;
  if (!oneHot && !compared)
    return std::nullopt;
  if (oneHot &&
      cast<RankedTensorType>(oneHot.getResult(0).getType()).getShape() !=
          pt.getShape())
    return std::nullopt;
  Router r;
  r.select = am;
  r.k = 1;
  r.logits = sm.getInput();
  r.scores = probs;
  // The routing weight: max(probs) over the experts, i.e. probs at idx
  // (torch's `p.max(dim=-1)` exports as this ReduceMax and the ArgMax).
  for (Operation *op : probs.getUsers())
    for (Value res : op->getResults())
      if (matchReduce<arith::MaximumFOp>(res, pt.getRank() - 1) == probs)
        r.weights = res;
  if (!r.weights) {
    why = "the routing weight is not the largest router probability";
    diagOp = am;
    return FailureOr<Router>(failure());
  }
  if (!oneHot)
    return FailureOr<Router>(r);
  auto ohT = cast<RankedTensorType>(oneHot.getResult(0).getType());
  r.expertMask = oneHot.getResult(0);
  // Expert capacity: cumsum(one_hot) along the tokens of a sequence,
  // compared with the capacity; the one-hot masked with it.
  for (Operation *user : r.expertMask.getUsers()) {
    std::optional<std::pair<int64_t, bool>> cs =
        matchCumSum(user, r.expertMask);
    if (!cs)
      continue;
    diagOp = user;
    int64_t n = ohT.getDimSize(cs->first);
    // A 0/1 vector of n entries sums to at most n (n - 1 exclusive).
    int64_t bound = cs->second ? n - 1 : n;
    Value cum = user->getResult(0);
    std::optional<int64_t> capacity;
    bool strictLess = false;
    Value cmpRes;
    for (Operation *cu : cum.getUsers()) {
      auto g = dyn_cast<linalg::GenericOp>(cu);
      if (!g || g.getNumDpsInputs() != 2 || g.getNumResults() != 1)
        continue;
      SmallVector<Operation *> ops = bodyOps(g);
      auto cmp =
          ops.size() == 1 ? dyn_cast<arith::CmpIOp>(ops[0]) : arith::CmpIOp();
      if (!cmp || cmp.getLhs() != g.getBody()->getArgument(0) ||
          cmp.getRhs() != g.getBody()->getArgument(1))
        continue;
      // cum <= C, cum < C, or C >= cum, C > cum.
      arith::CmpIPredicate p = cmp.getPredicate();
      Value other;
      if (g.getDpsInputs()[0] == cum &&
          (p == arith::CmpIPredicate::sle || p == arith::CmpIPredicate::slt)) {
        other = g.getDpsInputs()[1];
        strictLess = p == arith::CmpIPredicate::slt;
      } else if (g.getDpsInputs()[1] == cum &&
                 (p == arith::CmpIPredicate::sge ||
                  p == arith::CmpIPredicate::sgt)) {
        other = g.getDpsInputs()[0];
        strictLess = p == arith::CmpIPredicate::sgt;
      }
      if (!other || !(capacity = scalarInt(other)))
        continue;
      cmpRes = g.getResult(0);
      break;
    }
    if (!cmpRes) {
      why = "expert capacity can drop tokens; not raised: the capacity "
            "mask is not the running count compared with a constant";
      return FailureOr<Router>(failure());
    }
    // Counts up to `keepUpTo` pass the mask.
    int64_t keepUpTo = strictLess ? *capacity - 1 : *capacity;
    if (bound > keepUpTo) {
      why = "expert capacity can drop tokens; not raised: capacity " +
            std::to_string(keepUpTo) + " is below the " + std::to_string(n) +
            " tokens per sequence";
      return FailureOr<Router>(failure());
    }
    // Always true: the mask is one_hot * ext(true). Find that product.
    Value keep = cmpRes;
    for (Operation *ku : cmpRes.getUsers())
      if (auto g = dyn_cast<linalg::GenericOp>(ku);
          g && g.getNumDpsInputs() == 1 && g.getNumResults() == 1 &&
          bodyOps(g).size() == 1 &&
          isa<arith::ExtUIOp, arith::UIToFPOp>(bodyOps(g)[0]))
        keep = g.getResult(0);
    Value masked;
    for (Operation *mu : keep.getUsers()) {
      if (mu->getNumResults() != 1)
        continue;
      auto mul = matchBinary<arith::MulIOp>(mu->getResult(0));
      if (mul && ((mul->first == r.expertMask && mul->second == keep) ||
                  (mul->second == r.expertMask && mul->first == keep)))
        masked = mu->getResult(0);
    }
    if (!masked) {
      why = "expert capacity can drop tokens; not raised: the capacity mask "
            "is not applied to the one-hot expert mask by a product";
      return FailureOr<Router>(failure());
    }
    r.expertMask = masked;
    diagOp = nullptr;
    break;
  }
  return FailureOr<Router>(r);
}

} // namespace moec::raising
