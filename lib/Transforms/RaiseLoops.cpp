//===- RaiseLoops.cpp - per-expert loops for moe-raise-experts ------------===//
//
// The per-expert loop form of an MoE layer (torch.onnx's TorchScript
// exporter): per expert, the tokens routed to it are found with NonZero on
// the one-hot expert mask, gathered, run through the expert FFN, scaled by
// their routing weight and scattered (added) back into a [tokens, hidden]
// accumulator. The matcher works from the accumulator's add tree: every
// leaf scatter must be one expert of the same router.
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/IR/Matchers.h"

using namespace mlir;
using namespace moec;

namespace moec::raising {

namespace {

/// The tensor `scale` (through views) gathers elements of: the source of
/// the one tensor.extract of a one-input generic; null otherwise.
Value gatherSource(Value scale) {
  auto g = skipViews(scale).getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1)
    return {};
  Value src;
  unsigned extracts = 0;
  g.getBody()->walk([&](tensor::ExtractOp ex) {
    src = ex.getTensor();
    ++extracts;
  });
  return extracts == 1 ? skipViews(src) : Value();
}

/// True when `scale` (through views) gathers elements of `weights`.
bool isGatherOf(Value scale, Value weights) {
  Value src = gatherSource(scale);
  return src && src == skipViews(weights);
}

/// The value of a scalar index tensor: a constant, or (transformers 5.x,
/// which loops over the experts hit by the example) element `i` of the list
/// of hit experts, taken as expert `i`; the caller then requires that all
/// experts were hit, which makes the two the same.
std::optional<int64_t> scalarIndex(Value v) {
  v = skipViews(v);
  if (auto c = v.getDefiningOp<arith::ConstantOp>()) {
    auto d = dyn_cast<DenseIntElementsAttr>(c.getValue());
    if (d && d.getNumElements() == 1)
      return (*d.begin()).getSExtValue();
    return std::nullopt;
  }
  Value list;
  std::optional<int64_t> pos;
  if (auto sl = v.getDefiningOp<tensor::ExtractSliceOp>()) {
    // One element sliced out of the [n, 1] (transposed) list.
    auto src = cast<RankedTensorType>(sl.getSource().getType());
    if (sl.getType().getNumElements() != 1 ||
        llvm::any_of(sl.getStaticOffsets(), ShapedType::isDynamic))
      return std::nullopt;
    int64_t at = 0;
    for (int64_t d = 0; d < src.getRank(); ++d)
      if (src.getDimSize(d) != 1)
        at = sl.getStaticOffsets()[d];
    list = sl.getSource();
    pos = at;
  } else if (auto fe = v.getDefiningOp<tensor::FromElementsOp>()) {
    // One element read out of the list with a constant index.
    auto ex = fe.getElements().size() == 1
                  ? fe.getElements()[0].getDefiningOp<tensor::ExtractOp>()
                  : tensor::ExtractOp();
    if (!ex || ex.getIndices().size() != 1)
      return std::nullopt;
    APInt c;
    if (!matchPattern(ex.getIndices()[0], m_ConstantInt(&c)))
      return std::nullopt;
    list = ex.getTensor();
    pos = c.getSExtValue();
  } else {
    auto g = v.getDefiningOp<linalg::GenericOp>();
    if (!g || g.getNumDpsInputs() != 1 ||
        cast<RankedTensorType>(g.getResult(0).getType()).getRank() != 0)
      return std::nullopt;
    g.getBody()->walk([&](tensor::ExtractOp ex) { list = ex.getTensor(); });
    pos = scalarIndex(g.getDpsInputs()[0]);
  }
  if (!list || !pos)
    return std::nullopt;
  // The hit list may be cut into one-element slices, one per iteration.
  Value l = skipViews(list);
  int64_t offset = 0;
  if (auto sl = l.getDefiningOp<tensor::ExtractSliceOp>()) {
    if (ShapedType::isDynamic(sl.getStaticOffsets()[0]))
      return std::nullopt;
    offset = sl.getStaticOffsets()[0];
    l = sl.getSource();
  }
  for (Operation *op : sliceOf(l))
    if (isa<moe::NonZeroOp>(op))
      return offset + *pos;
  return std::nullopt;
}

/// Hand-written loops (`tok, pos = torch.where(idx == e)`): NonZero on the
/// comparison of the router's selected expert ids `indices` with a constant
/// `e`, either operand order. Returns e.
std::optional<int64_t> comparedExpertId(Value cond, Value indices) {
  auto g = skipViews(cond).getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumResults() != 1 || !indices)
    return std::nullopt;
  SmallVector<Operation *> ops = bodyOps(g);
  auto cmp =
      ops.size() == 1 ? dyn_cast<arith::CmpIOp>(ops[0]) : arith::CmpIOp();
  Block *b = g.getBody();
  if (!cmp || cmp.getPredicate() != arith::CmpIPredicate::eq ||
      b->getTerminator()->getOperand(0) != cmp.getResult())
    return std::nullopt;
  // The body value `x` as an input of the generic (or a captured constant).
  auto input = [&](Value x) -> Value {
    auto arg = dyn_cast<BlockArgument>(x);
    if (arg && arg.getOwner() == b && arg.getArgNumber() < g.getNumDpsInputs())
      return g.getDpsInputs()[arg.getArgNumber()];
    return {};
  };
  for (auto [i, c] : {std::pair(cmp.getLhs(), cmp.getRhs()),
                      std::pair(cmp.getRhs(), cmp.getLhs())}) {
    Value in = input(i);
    if (!in || skipViews(in) != indices ||
        !g.getMatchingIndexingMap(
              g.getDpsInputOperand(cast<BlockArgument>(i).getArgNumber()))
             .isIdentity())
      continue;
    if (Value cin = input(c))
      return constantInt(cin);
    return constantInt(c);
  }
  return std::nullopt;
}

/// The ids a loop's expert picks its tokens by, for a router kept dense
/// (whose own ops may remap the selected ids before the loop: LongCat-
/// Flash): the ids compared with the expert's number (`torch.where(idx ==
/// e)`), or the input of the one-hot expert mask (`one_hot(idx)`, ONNX
/// OneHot: a generic comparing each id with the index of a new last dim).
Value loopIds(moe::NonZeroOp nz) {
  auto g = skipViews(nz.getInput()).getDefiningOp<linalg::GenericOp>();
  if (g && g.getNumDpsInputs() >= 1) {
    for (Value in : g.getDpsInputs())
      if (isa<IntegerType>(getElementTypeOrSelf(in.getType())) &&
          cast<RankedTensorType>(in.getType()).getRank() >= 1 &&
          comparedExpertId(nz.getInput(), skipViews(in)))
        return skipViews(in);
  }
  for (Operation *op : sliceOf(nz.getInput())) {
    auto oh = dyn_cast<linalg::GenericOp>(op);
    if (!oh || oh.getNumDpsInputs() != 1 || oh.getNumResults() != 1)
      continue;
    auto inT = cast<RankedTensorType>(oh.getDpsInputs()[0].getType());
    auto outT = cast<RankedTensorType>(oh.getResult(0).getType());
    if (!inT.getElementType().isInteger(64) ||
        outT.getRank() != inT.getRank() + 1)
      continue;
    bool index = false, eq = false;
    oh.getBody()->walk([&](Operation *b) {
      if (auto i = dyn_cast<linalg::IndexOp>(b))
        index |= int64_t(i.getDim()) == inT.getRank();
      if (auto c = dyn_cast<arith::CmpIOp>(b))
        eq |= c.getPredicate() == arith::CmpIPredicate::eq;
    });
    if (index && eq)
      return skipViews(oh.getDpsInputs()[0]);
  }
  return {};
}

/// The expert id of the chain that selected the tokens of one expert: the
/// index of the row of the [experts, k, tokens] expert mask fed to NonZero,
/// or the constant the selected ids are compared with.
std::optional<int64_t> expertId(moe::NonZeroOp nz, Value indices,
                                int64_t numExperts) {
  // (Ids are in [0, E): `idx == -1` selects nothing, no wrapping here.)
  if (std::optional<int64_t> e = comparedExpertId(nz.getInput(), indices))
    return e;
  for (Operation *op : sliceOf(nz.getInput())) {
    auto g = dyn_cast<linalg::GenericOp>(op);
    if (!g || g.getNumDpsInputs() != 1 ||
        cast<RankedTensorType>(g.getDpsInputs()[0].getType())
                .getNumElements() != 1)
      continue;
    Value mask;
    g.getBody()->walk([&](tensor::ExtractOp ex) { mask = ex.getTensor(); });
    if (!mask || cast<RankedTensorType>(mask.getType()).getRank() != 3)
      continue;
    std::optional<int64_t> e = scalarIndex(g.getDpsInputs()[0]);
    if (!e)
      return std::nullopt;
    return *e < 0 ? *e + numExperts : *e;
  }
  return std::nullopt;
}

/// Column `c` of NonZero's coordinate list: `v` (through views, and the
/// broadcast a ScatterElements' indices go through) is column c of the
/// transposed [n, rank] list. Returns c.
std::optional<int64_t> nonZeroColumn(Value v, moe::NonZeroOp nz) {
  v = skipViews(v);
  if (auto g = v.getDefiningOp<linalg::GenericOp>();
      g && g.getNumDpsInputs() == 1 && bodyOps(g).empty() &&
      g.getBody()->getTerminator()->getOperand(0) ==
          g.getBody()->getArgument(0))
    v = skipViews(g.getDpsInputs()[0]);
  int64_t col = 0;
  if (auto sl = v.getDefiningOp<tensor::ExtractSliceOp>()) {
    if (sl.getSourceType().getRank() != 2 || !sl.hasUnitStride() ||
        sl.getStaticOffsets()[0] != 0 ||
        ShapedType::isDynamic(sl.getStaticOffsets()[1]) ||
        sl.getStaticSizes()[1] != 1)
      return std::nullopt;
    col = sl.getStaticOffsets()[1];
    v = skipViews(sl.getSource());
  }
  auto tr = v.getDefiningOp<linalg::TransposeOp>();
  if (!tr || tr.getPermutation() != ArrayRef<int64_t>{1, 0} ||
      skipViews(tr.getInput()) != nz.getResult())
    return std::nullopt;
  return col;
}

/// For `tok, pos = torch.where(idx == e)` (`tokCol` 0: NonZero of the
/// [T, k] comparison) or `pos, tok = torch.where(mask[e])` (`tokCol` 1:
/// NonZero of the one-hot mask's [k, T] slab): the expert's rows are
/// gathered at `tok` (`rows`), scattered back at `tok` (`scatterIdx`), and
/// scaled by `w[tok, pos]` (`scale`, a gather of the [T, k] weights
/// flattened, at `tok * k + pos`; at `tok` when the ids are [T], top-1).
bool readsSelectedPairs(moe::NonZeroOp nz, Value rows, Value scatterIdx,
                        Value scale, const Router &r, int64_t tokCol = 0) {
  int64_t posCol = 1 - tokCol;
  if (nonZeroColumn(rows, nz) != tokCol ||
      nonZeroColumn(scatterIdx, nz) != tokCol)
    return false;
  auto g = skipViews(scale).getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1)
    return false;
  Value at = g.getDpsInputs()[0];
  int64_t rank = cast<RankedTensorType>(nz.getInput().getType()).getRank();
  if (rank == 1)
    return tokCol == 0 && nonZeroColumn(at, nz) == 0;
  auto wT = cast<RankedTensorType>(r.weights.getType());
  if (rank != 2 || wT.getRank() != 2 || wT.getDimSize(1) != r.k)
    return false;
  auto add = matchBinary<arith::AddIOp>(skipViews(at));
  if (!add)
    return false;
  for (auto [p, m] : {std::pair(add->first, add->second),
                      std::pair(add->second, add->first)}) {
    auto mul = matchBinary<arith::MulIOp>(skipViews(m));
    if (!mul || nonZeroColumn(p, nz) != posCol)
      continue;
    for (auto [t, k] : {std::pair(mul->first, mul->second),
                        std::pair(mul->second, mul->first)})
      if (nonZeroColumn(t, nz) == tokCol && constantInt(k) == r.k)
        return true;
  }
  return false;
}

/// Collects the leaves of the add tree that ends at `root`.
void addLeaves(Value v, SmallVectorImpl<Value> &leaves) {
  if (auto add = matchBinary<arith::AddFOp>(v)) {
    addLeaves(add->first, leaves);
    addLeaves(add->second, leaves);
    return;
  }
  leaves.push_back(v);
}

} // namespace

LogicalResult LayerRaiser::raise(Router &r, std::string &why) {
  if (r.dense)
    return raiseDense(r, why);
  auto logitsT = cast<RankedTensorType>(r.logits.getType());
  int64_t e = logitsT.getDimSize(logitsT.getRank() - 1), tokens = 1;
  for (int64_t d = 0; d + 1 < logitsT.getRank(); ++d)
    tokens = ShapedType::isDynamic(logitsT.getDimSize(d)) ||
                     ShapedType::isDynamic(tokens)
                 ? ShapedType::kDynamic
                 : tokens * logitsT.getDimSize(d);
  // The scatters that consume this router's weights.
  SmallVector<Operation *> scatters;
  func.walk([&](Operation *op) {
    if (!isa<moe::ScatterElementsOp, moe::ScatterNDOp>(op))
      return;
    // A generic router's weights may not depend on the op that produces
    // its ids (PhiMoE: the concatenation of two picks), the tokens the
    // scatter writes to do.
    // The scatters of later layers depend on it too (through the
    // tokens), but they come later in the block; expert loops accumulate
    // into zeros (a router's own scatters, PhiMoE's -inf masks, do not).
    if (sliceOf(op->getOperand(2)).contains(r.select) ||
        (r.generic && isZeroConstant(op->getOperand(0)) &&
         sliceOf(op->getOperand(1)).contains(r.select)))
      scatters.push_back(op);
  });
  if (scatters.empty()) {
    bool found = false;
    LogicalResult batched = raiseBatched(r, why, found);
    if (found)
      return batched;
    why = "no expert loop (scatter of weighted expert outputs) and no "
          "batched experts (per-row gathered weights) use its routing "
          "weights";
    return failure();
  }
  // The accumulator: the add tree above the scatters, up to its root.
  // Terms that are not sums of scatters (a shared expert, a residual,
  // LongCat-Flash's identity term of its zero-computation experts) are
  // added after the layer, not part of it.
  auto scatterSum = [&](Value v) {
    SmallVector<Value> leaves;
    addLeaves(v, leaves);
    return llvm::all_of(leaves, [&](Value l) {
      return isZeroConstant(l) ||
             (l.getDefiningOp() &&
              llvm::is_contained(scatters, l.getDefiningOp()));
    });
  };
  Value root = scatters.front()->getResult(0);
  for (bool grew = true; grew;) {
    grew = false;
    for (Operation *user : root.getUsers()) {
      if (user->getNumResults() != 1)
        continue;
      auto add = matchBinary<arith::AddFOp>(user->getResult(0));
      Value other = add && add->first == root ? add->second
                    : add                     ? add->first
                                              : Value();
      if (add && scatterSum(other)) {
        root = user->getResult(0);
        grew = true;
        break;
      }
    }
  }
  SmallVector<Value> leaves;
  addLeaves(root, leaves);
  std::map<int64_t, ExpertFFN> experts;
  Value tokensV, loopIdsSeen;
  for (Value leaf : leaves) {
    if (isZeroConstant(leaf))
      continue;
    Operation *sc = leaf.getDefiningOp();
    if (!sc || !llvm::is_contained(scatters, sc)) {
      why = "the expert outputs are accumulated with something other than "
            "scatters of expert outputs";
      return failure();
    }
    if (!isZeroConstant(sc->getOperand(0))) {
      why = "a scatter does not start from zeros";
      return failure();
    }
    if (auto se = dyn_cast<moe::ScatterElementsOp>(sc);
        se && (se.getAxis() != 0 || se.getReduction() == moe::Reduction::mul ||
               se.getReduction() == moe::Reduction::max ||
               se.getReduction() == moe::Reduction::min)) {
      why = "a ScatterElements is not an index_add over tokens";
      return failure();
    }
    // updates = FFN(x_e) * w_e, either operand order.
    auto mul = matchBinary<arith::MulFOp>(skipViews(sc->getOperand(2)));
    if (!mul) {
      why = "the scattered values are not expert outputs times routing "
            "weights";
      return failure();
    }
    // The grouped form: one scatter of all experts' outputs, concatenated.
    if (leaves.size() == 1)
      for (auto [y, w] : {std::pair(mul->first, mul->second),
                          std::pair(mul->second, mul->first)})
        if (isGroupedExperts(y))
          return raiseGrouped(r, sc, root, y, w, why);
    Value scale = mul->second;
    FailureOr<ExpertFFN> f = matchFFN(mul->first, why);
    if (failed(f)) {
      // Report the operand that looked like an FFN (its output a MatMul).
      std::string whySecond;
      scale = mul->first;
      f = matchFFN(mul->second, whySecond);
      if (failed(f) && why.find("not a MatMul") != std::string::npos)
        why = whySecond;
    }
    if (failed(f))
      return failure();
    if (r.generic && !r.weights) {
      // The weights of a router kept dense: what the first expert's output
      // is scaled by, a gather of a [..., k] tensor; every other expert
      // must read the same one.
      r.weights = gatherSource(scale);
      auto wT = r.weights ? dyn_cast<RankedTensorType>(r.weights.getType())
                          : RankedTensorType();
      auto idsT = cast<RankedTensorType>(r.ids.getType());
      if (!wT || wT.getShape() != idsT.getShape()) {
        why = "an expert output is not scaled by a gather of routing "
              "weights shaped like the selected ids";
        r.weights = Value();
        return failure();
      }
    }
    if (!isGatherOf(scale, r.weights)) {
      why = "an expert output is not scaled by its tokens' routing weights";
      return failure();
    }
    // The FFN input gathers rows of the tokens selected by NonZero.
    auto gather = skipViews(f->input).getDefiningOp<linalg::GenericOp>();
    if (!gather || gather.getNumDpsInputs() != 1) {
      why = "an expert's input is not a gather of tokens";
      return failure();
    }
    Value src;
    gather.getBody()->walk([&](tensor::ExtractOp ex) { src = ex.getTensor(); });
    SetVector<Operation *> rows = sliceOf(gather.getDpsInputs()[0]);
    moe::NonZeroOp nz;
    for (Operation *op : rows)
      if (auto n = dyn_cast<moe::NonZeroOp>(op))
        nz = n;
    if (!src || !nz ||
        !sliceOf(sc->getOperand(1)).contains(nz.getOperation()) ||
        !sliceOf(nz.getInput()).contains(r.select) ||
        (r.expertMask &&
         !sliceOf(nz.getInput()).contains(r.expertMask.getDefiningOp()))) {
      why = "an expert's tokens are not selected by NonZero on the router's "
            "expert mask";
      return failure();
    }
    Value base = skipViews(src);
    if (tokensV && base != tokensV) {
      why = "experts read different token tensors";
      return failure();
    }
    tokensV = base;
    Value selected = r.ids; // a router kept dense: its ids
    if (r.generic) {
      // The ids the loop reads, which the router's own ops may have
      // computed from the selection: moe.experts takes those.
      Value used = loopIds(nz);
      if (!used || cast<RankedTensorType>(used.getType()).getShape() !=
                       cast<RankedTensorType>(r.ids.getType()).getShape()) {
        why = "cannot tell which ids an expert of the loop picks its tokens "
              "by";
        return failure();
      }
      if (!loopIdsSeen)
        loopIdsSeen = used;
      if (used != loopIdsSeen) {
        why = "the experts of the loop pick their tokens by different ids";
        return failure();
      }
      selected = used;
    }
    if (auto t = dyn_cast<moe::TopKOp>(r.select); t && !r.generic)
      selected = t.getIndices();
    else if (!r.generic && r.select->getNumResults() == 2)
      selected = r.select->getResult(1); // the ArgMax's indices
    // A router kept dense may pick from more ids than there are experts
    // (LongCat-Flash's zero-computation experts, remapped by its own ops
    // before the loop): with stacked weights, the experts are the slabs.
    // (An id past them stops the run with a message naming it.)
    if (r.generic && f->gate.stacked)
      e = cast<RankedTensorType>(f->gate.src.getType()).getDimSize(0);
    std::optional<int64_t> id = expertId(nz, selected, e);
    bool compared = comparedExpertId(nz.getInput(), selected).has_value();
    if (compared && !readsSelectedPairs(nz, gather.getDpsInputs()[0],
                                        sc->getOperand(1), scale, r)) {
      why = "an expert of a `torch.where(idx == e)` loop does not read its "
            "tokens at `tok` and its weights at `w[tok, pos]`";
      return failure();
    }
    // A router kept dense gives no other guarantee that its weights line
    // up with the loop's (token, choice) pairs: check the one-hot loop's
    // reads too (`pos, tok = torch.where(mask[e])`, mask [E, k, T]).
    if (r.generic && !compared &&
        !readsSelectedPairs(nz, gather.getDpsInputs()[0], sc->getOperand(1),
                            scale, r, /*tokCol=*/1)) {
      why = "an expert of the loop does not read its tokens at `tok` and its "
            "weights at `w[tok, pos]` of its `pos, tok = where(mask[e])`";
      return failure();
    }
    if (!id || *id < 0 || *id >= e || experts.count(*id)) {
      why = "cannot tell which expert a loop iteration computes";
      return failure();
    }
    experts[*id] = *f;
  }
  if (int64_t(experts.size()) != e) {
    why = "found " + std::to_string(experts.size()) + " of " +
          std::to_string(e) +
          " experts: the exporter unrolled a loop over the experts its "
          "example input hit, baking that routing into the graph; "
          "re-export with an input that routes tokens to every expert";
    return failure();
  }
  if (r.generic)
    r.ids = loopIdsSeen;
  return emitLayer(r, root, tokensV, experts, why);
}

} // namespace moec::raising
