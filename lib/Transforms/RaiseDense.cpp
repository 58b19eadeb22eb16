//===- RaiseDense.cpp - dense experts for moe-raise-experts ---------------===//
//
// The dense form of an MoE layer (transformers' Llama4TextMoe): every token
// goes through every expert, scaled by its router score, which is 0 for
// the experts it did not select:
//
//   scores = sigmoid(full(-inf).scatter(1, top_i, top_v))     # [T, E]
//   xin    = x.repeat(E, 1) * scores.T.reshape(E * T, 1)      # [E*T, H]
//   y      = FFN(xin.view(E, T, H))   # batch_matmuls by [E, H, 2F], [E, F, H]
//   out    = y.view(E, T, H).sum(0)
//
// With no biases FFN_e(0) = 0 (every activation maps 0 to 0), so the
// unselected experts add nothing and the layer is
// out[t] = sum_j FFN_{idx[t, j]}(w[t, j] * x[t]): moe.experts with
// `weight_input`.
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

#include "mlir/IR/Matchers.h"

using namespace mlir;
using namespace moec;

namespace moec::raising {

namespace {

/// `linalg.index d`, or `linalg.index d` modulo `n` (remui by a constant).
bool isIndexModulo(Value v, int64_t d, int64_t n, bool plainOk) {
  std::optional<int64_t> mod;
  if (auto rem = v.getDefiningOp<arith::RemUIOp>()) {
    APInt c;
    if (!matchPattern(rem.getRhs(), m_ConstantInt(&c)))
      return false;
    mod = c.getSExtValue();
    v = rem.getLhs();
  }
  auto li = v.getDefiningOp<linalg::IndexOp>();
  if (!li || int64_t(li.getDim()) != d)
    return false;
  return mod ? *mod == n : plainOk;
}

/// The importer's Tile of `x` [T, H] by (E, 1): a generic with no inputs
/// whose [E * T, H] result reads x[i mod T, j (mod H)]. Returns x.
Value matchRepeatRows(Value v, int64_t e) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 0 || g.getNumResults() != 1 ||
      !g.getIndexingMapsArray()[0].isIdentity())
    return {};
  auto ex = g.getBody()
                ->getTerminator()
                ->getOperand(0)
                .getDefiningOp<tensor::ExtractOp>();
  if (!ex || ex.getIndices().size() != 2)
    return {};
  auto xT = dyn_cast<RankedTensorType>(ex.getTensor().getType());
  auto outT = cast<RankedTensorType>(v.getType());
  if (!xT || !xT.hasStaticShape() || xT.getRank() != 2 || outT.getRank() != 2 ||
      outT.getDimSize(0) != e * xT.getDimSize(0) ||
      outT.getDimSize(1) != xT.getDimSize(1) ||
      !isIndexModulo(ex.getIndices()[0], 0, xT.getDimSize(0), e == 1) ||
      !isIndexModulo(ex.getIndices()[1], 1, xT.getDimSize(1), true))
    return {};
  return ex.getTensor();
}

/// The dense experts' input: xin [E * T, H] = repeat(x, E) * s with s the
/// [E * T, 1] view of the transposed router scores `scores` [T, E],
/// broadcast over H (row e * T + t is x[t] * scores[t, e]). Returns x, or
/// an empty value with `why` set.
Value matchScaledRepeat(Value v, Value scores, int64_t e, std::string &why) {
  why = "the dense experts' input is not the tokens repeated once per "
        "expert (x.repeat(E, 1)) times the transposed router scores";
  auto g = v.getDefiningOp<linalg::GenericOp>();
  auto mul = matchBinary<arith::MulFOp>(v);
  if (!g || !mul || !g.getIndexingMapsArray()[2].isIdentity())
    return {};
  auto vT = cast<RankedTensorType>(v.getType());
  MLIRContext *ctx = v.getContext();
  AffineMap bcast = AffineMap::get(
      2, 0, {getAffineDimExpr(0, ctx), getAffineConstantExpr(0, ctx)}, ctx);
  for (unsigned i = 0; i < 2; ++i) {
    Value rep = g.getDpsInputs()[i], scale = g.getDpsInputs()[1 - i];
    auto sT = cast<RankedTensorType>(scale.getType());
    Value x = matchRepeatRows(rep, e);
    if (!x || !g.getIndexingMapsArray()[i].isIdentity() || sT.getRank() != 2 ||
        sT.getDimSize(0) != vT.getDimSize(0) || sT.getDimSize(1) != 1 ||
        g.getIndexingMapsArray()[1 - i] != bcast)
      continue;
    // Views keep the row-major order: [E, T] -> [E * T, 1].
    auto tr = skipViews(scale).getDefiningOp<linalg::TransposeOp>();
    if (!tr || tr.getPermutation() != ArrayRef<int64_t>{1, 0} ||
        skipViews(tr.getInput()) != scores) {
      why = "the dense experts' tokens are not scaled by the transposed "
            "router scores (scores.transpose(0, 1).reshape(-1, 1))";
      return {};
    }
    return x;
  }
  return {};
}

} // namespace

/// Llama 4's experts: a sum over dim 0 of [E, T, H] FFN outputs whose
/// linear layers are batch_matmuls over all E experts, of the tokens
/// repeated E times and scaled by the router's dense scores (see the file
/// comment). Raised to moe.experts with weight_input.
LogicalResult LayerRaiser::raiseDense(Router &r, std::string &why) {
  auto sT = cast<RankedTensorType>(r.weights.getType());
  int64_t t = sT.getDimSize(0), e = sT.getDimSize(1);
  if (!sT.hasStaticShape()) {
    why = "the dense form needs a static token count (give --input-shape)";
    return failure();
  }
  SmallVector<linalg::ReduceOp> reds;
  func.walk([&](linalg::ReduceOp red) {
    if (red.getNumResults() == 1 &&
        matchReduce<arith::AddFOp>(red.getResult(0), 0))
      reds.push_back(red);
  });
  for (linalg::ReduceOp red : reds) {
    Value in = red.getInputs()[0];
    auto inT = cast<RankedTensorType>(in.getType());
    if (inT.getRank() != 3 || inT.getDimSize(0) != e ||
        inT.getDimSize(1) != t || !sliceOf(in).contains(r.select))
      continue;
    // This layer's sum over the experts: from here on, say why not.
    // An FFN ends in a linear layer: a product here is a scaling.
    if (auto mul = matchBinary<arith::MulFOp>(skipViews(in))) {
      Operation *s = r.weights.getDefiningOp();
      if (sliceOf(mul->first).contains(s) != sliceOf(mul->second).contains(s)) {
        why = "the router scores scale the dense experts' outputs; only the "
              "form that scales their input (Llama 4) is recognised";
        return failure();
      }
    }
    std::string ffnWhy;
    FailureOr<ExpertFFN> f = matchFFN(in, ffnWhy);
    if (failed(f) || !f->gate.dense || !f->down.dense ||
        (f->up && !f->up->dense)) {
      why = "the sum over all experts of the dense form is not of expert "
            "FFNs whose linear layers are batch_matmuls by constant [E, in, "
            "out] weights" +
            (failed(f) ? ": " + ffnWhy : std::string());
      return failure();
    }
    if (f->bGate || f->bUp || f->bDown) {
      why = "the dense experts have biases: an expert a token did not select "
            "would add FFN(0) != 0";
      return failure();
    }
    // The FFN input: [E * T, H] viewed as [E, T, H].
    auto xinT = cast<RankedTensorType>(f->input.getType());
    Value xin = skipViews(f->input);
    auto flatT = cast<RankedTensorType>(xin.getType());
    if (xinT.getRank() != 3 || xinT.getDimSize(0) != e ||
        xinT.getDimSize(1) != t || flatT.getRank() != 2 ||
        flatT.getDimSize(0) != e * t) {
      why = "the dense experts' input is not [E * T, H] viewed as [E, T, H]";
      return failure();
    }
    Value tokens = matchScaledRepeat(xin, r.weights, e, why);
    if (!tokens)
      return failure();
    std::map<int64_t, ExpertFFN> experts;
    for (int64_t i = 0; i < e; ++i)
      experts[i] = *f;
    r.weightInput = true;
    return emitLayer(r, red.getResult(0), skipViews(tokens), experts, why);
  }
  why = "its dense router scores (the sigmoid of the top-k logits scattered "
        "into -inf) feed no sum over all experts of expert FFNs (the dense "
        "form of Llama 4's experts)";
  return failure();
}

} // namespace moec::raising
