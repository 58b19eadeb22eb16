//===- RaiseEmbedding.cpp - product-key experts for moe-raise-experts -----===//
//
// Doge's CDMoE (transformers DogeCDMoE): its routed experts are rows of two
// [E, H] embedding tables picked by the selected ids, each an FFN of
// intermediate size 1:
//   h = down_embed[ids] @ x          [T, k]     (batch_matmul, [T,k,H] x
//   [T,H,1]) s = act(h) * w                   [T, k] y = s @ up_embed[ids] [T,
//   H]     (batch_matmul, [T,1,k] x [T,k,H])
// which is moe.experts with w_gate = down_embed as [E, H, 1], w_down =
// up_embed as [E, 1, H] and the activation ungated; the router (product
// keys: two top-k over halves of the logits, then a top-k of their sums)
// stays as the model's own ops and feeds it its ids and weights.
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

#include "moec/Analysis/ConstantBytes.h"

#include "mlir/IR/Matchers.h"

using namespace mlir;
using namespace moec;

namespace moec::raising {

namespace {

/// `embedding(ids)`: a generic gathering rows of a constant [E, H] table by
/// [T, k] int64 ids into [T, k, H]. Returns the table and the ids.
std::optional<std::pair<arith::ConstantOp, Value>> matchRowGather(Value v) {
  auto g = skipViews(v).getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1 || g.getNumResults() != 1)
    return std::nullopt;
  Value ids = g.getDpsInputs()[0];
  auto idsT = cast<RankedTensorType>(ids.getType());
  auto outT = cast<RankedTensorType>(g.getResult(0).getType());
  MLIRContext *ctx = g.getContext();
  if (outT.getRank() != 3 || idsT.getRank() != 2 ||
      !idsT.getElementType().isInteger(64) ||
      idsT.getShape() != outT.getShape().take_front(2) ||
      g.getMatchingIndexingMap(g.getDpsInputOperand(0)) !=
          AffineMap::get(
              3, 0, {getAffineDimExpr(0, ctx), getAffineDimExpr(1, ctx)}, ctx))
    return std::nullopt;
  SmallVector<tensor::ExtractOp> extracts;
  g.getBody()->walk([&](tensor::ExtractOp ex) { extracts.push_back(ex); });
  if (extracts.size() != 1)
    return std::nullopt;
  tensor::ExtractOp ex = extracts[0];
  auto table = ex.getTensor().getDefiningOp<arith::ConstantOp>();
  auto tableT =
      table ? cast<RankedTensorType>(table.getType()) : RankedTensorType();
  auto col = ex.getIndices().size() == 2
                 ? ex.getIndices()[1].getDefiningOp<linalg::IndexOp>()
                 : linalg::IndexOp();
  if (!table || tableT.getRank() != 2 ||
      tableT.getDimSize(1) != outT.getDimSize(2) || !col || col.getDim() != 2 ||
      g.getBody()->getTerminator()->getOperand(0) != ex.getResult())
    return std::nullopt;
  // The row: the id (the block's first argument) cast to an index, or
  // that wrapped if negative: select(c < 0, c + E, c).
  Value arg = g.getBody()->getArgument(0);
  auto isId = [&](Value c) {
    auto cast = c.getDefiningOp<arith::IndexCastOp>();
    return cast && cast.getIn() == arg;
  };
  auto isConst = [](Value v, int64_t n) {
    APInt c;
    return matchPattern(v, m_ConstantInt(&c)) && c.getSExtValue() == n;
  };
  Value row = ex.getIndices()[0];
  if (!isId(row)) {
    auto sel = row.getDefiningOp<arith::SelectOp>();
    auto lt = sel ? sel.getCondition().getDefiningOp<arith::CmpIOp>()
                  : arith::CmpIOp();
    auto add = sel ? sel.getTrueValue().getDefiningOp<arith::AddIOp>()
                   : arith::AddIOp();
    Value c = sel ? sel.getFalseValue() : Value();
    if (!sel || !lt || !add || !isId(c) ||
        lt.getPredicate() != arith::CmpIPredicate::slt || lt.getLhs() != c ||
        !isConst(lt.getRhs(), 0) ||
        !((add.getLhs() == c && isConst(add.getRhs(), tableT.getDimSize(0))) ||
          (add.getRhs() == c && isConst(add.getLhs(), tableT.getDimSize(0)))))
      return std::nullopt;
  }
  return std::make_pair(table, ids);
}

/// A batch_matmul into zeros: its two inputs.
std::optional<std::pair<Value, Value>> matchBatchMatmul(Value v) {
  auto bm = skipViews(v).getDefiningOp<linalg::BatchMatmulOp>();
  if (!bm || bm.hasUserDefinedMaps())
    return std::nullopt;
  auto fill = bm.getDpsInits()[0].getDefiningOp<linalg::FillOp>();
  std::optional<double> zero =
      fill ? scalarFloat(fill.getInputs()[0]) : std::nullopt;
  if (!zero || *zero != 0.0)
    return std::nullopt;
  return std::make_pair(bm.getDpsInputs()[0], bm.getDpsInputs()[1]);
}

/// One layer of product-key experts ending at the batch_matmul `up`.
struct EmbeddingLayer {
  Value root;   // [T, 1, H]
  Value tokens; // x, T * H elements
  Value ids;    // [T, k]
  Value weights;
  arith::ConstantOp down, up; // [E, H] tables
  moe::Activation act = moe::Activation::identity;
};

std::optional<EmbeddingLayer> matchEmbeddingLayer(linalg::BatchMatmulOp bm) {
  auto rootT = cast<RankedTensorType>(bm.getResult(0).getType());
  auto mm = matchBatchMatmul(bm.getResult(0));
  if (!mm || rootT.getRank() != 3 || rootT.getDimSize(1) != 1)
    return std::nullopt;
  auto upG = matchRowGather(mm->second);
  if (!upG)
    return std::nullopt;
  int64_t t = rootT.getDimSize(0);
  int64_t k = cast<RankedTensorType>(upG->second.getType()).getDimSize(1);
  Value s = skipViews(mm->first);
  auto sT = cast<RankedTensorType>(s.getType());
  if (!sT.hasStaticShape() || sT.getNumElements() != t * k)
    return std::nullopt;
  auto mul = matchBinary<arith::MulFOp>(s);
  if (!mul)
    return std::nullopt;
  for (auto [a, w] : {std::pair(mul->first, mul->second),
                      std::pair(mul->second, mul->first)}) {
    EmbeddingLayer l;
    Value u = matchActivation(a, l.act);
    auto dm = u ? matchBatchMatmul(u) : std::nullopt;
    auto downG = dm ? matchRowGather(dm->first) : std::nullopt;
    if (!downG || skipViews(downG->second) != skipViews(upG->second) ||
        cast<RankedTensorType>(downG->first.getType()) !=
            cast<RankedTensorType>(upG->first.getType()))
      continue;
    auto wT = cast<RankedTensorType>(w.getType());
    Value x = skipViews(dm->second);
    auto xT = cast<RankedTensorType>(x.getType());
    int64_t h = rootT.getDimSize(2);
    if (!wT.hasStaticShape() || wT.getNumElements() != t * k ||
        !xT.hasStaticShape() || xT.getNumElements() != t * h ||
        cast<RankedTensorType>(dm->second.getType()).getShape() !=
            ArrayRef<int64_t>{t, h, 1})
      continue;
    l.root = bm.getResult(0);
    l.tokens = x;
    l.ids = upG->second;
    l.weights = w;
    l.down = downG->first;
    l.up = upG->first;
    return l;
  }
  return std::nullopt;
}

} // namespace

void raiseEmbeddingExperts(func::FuncOp func, unsigned &layerCounter,
                           SmallPtrSetImpl<Operation *> &routers) {
  SmallVector<linalg::BatchMatmulOp> bms;
  func.walk([&](linalg::BatchMatmulOp bm) { bms.push_back(bm); });
  for (linalg::BatchMatmulOp bm : bms) {
    std::optional<EmbeddingLayer> l = matchEmbeddingLayer(bm);
    if (!l)
      continue;
    FailureOr<std::vector<char>> down = constantBytes(l->down),
                                 up = constantBytes(l->up);
    if (failed(down) || failed(up))
      continue;
    auto rootT = cast<RankedTensorType>(l->root.getType());
    int64_t t = rootT.getDimSize(0), h = rootT.getDimSize(2);
    auto tableT = cast<RankedTensorType>(l->down.getType());
    int64_t e = tableT.getDimSize(0),
            k = cast<RankedTensorType>(l->ids.getType()).getDimSize(1);
    OpBuilder b(bm);
    b.setInsertionPointAfter(bm);
    Location loc = bm.getLoc();
    std::string prefix = "moe" + std::to_string(layerCounter++);
    Type elt = tableT.getElementType();
    // Row e of each table is expert e's one-column w_gate and one-row
    // w_down: the same bytes, seen as [E, H, 1] and [E, 1, H].
    Value wg = makeBlobConstant(b, loc, RankedTensorType::get({e, h, 1}, elt),
                                *down, prefix + ".w_gate");
    Value wd = makeBlobConstant(b, loc, RankedTensorType::get({e, 1, h}, elt),
                                *up, prefix + ".w_down");
    Value x = reshapeTo(b, loc, l->tokens, {t, h});
    auto ex = moe::ExpertsOp::create(
        b, loc, x.getType(), x, reshapeTo(b, loc, l->ids, {t, k}),
        reshapeTo(b, loc, l->weights, {t, k}), wg, Value(), wd, Value(),
        Value(), Value(), moe::ActivationAttr::get(b.getContext(), l->act),
        b.getI64IntegerAttr(0), b.getF64FloatAttr(1.0), b.getF64FloatAttr(0.0),
        FloatAttr());
    auto back = tensor::ExpandShapeOp::create(
        b, loc, rootT, ex.getResult(),
        SmallVector<ReassociationIndices>{{0}, {1, 2}});
    l->root.replaceAllUsesWith(back.getResult());
    // Its router's top-k ops are this layer's, not layers of their own.
    for (Operation *op : sliceOf(l->ids))
      if (isa<moe::TopKOp>(op))
        routers.insert(op);
    ex->emitRemark() << "MoE layer of product-key experts (rows of " << e
                     << " x " << h
                     << " tables picked by the selected ids: FFNs of "
                        "intermediate size 1) raised with its router kept as "
                        "the model's own ops";
  }
}

} // namespace moec::raising
