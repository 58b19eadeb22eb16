//===- ImportMicrosoft.cpp - com.microsoft contrib ops --------------------===//
//
// com.microsoft.MoE, onnxruntime's fused MoE layer, maps one to one onto
// moe.route + moe.experts, so it is imported already raised.
//
// Semantics (checked against onnxruntime 1.32 CPU on random data, see
// examples/ort_moe/gen.py):
//   p = softmax(router_probs[t]) over the experts; the k largest win, and on
//   equal probabilities the HIGHER expert id wins (onnxruntime partial-sorts
//   (p, id) pairs with std::greater; moe.route prefers the lower id, so only
//   exact ties can differ);
//   weights = p at the winners, divided by their sum when
//   normalize_routing_weights == 1;
//   y[t] = sum_j w[t,j] * FFN_e(x[t]),
//   FFN_e(x) = act(x fc1[e]^T + b1[e]) fc2[e]^T + b2[e]
// with fc1 stored [E, F, H] and fc2 [E, H, F] (onnxruntime >= 1.22; older
// releases stored [E, H, F] and [E, F, H], accepted too when the shapes tell
// them apart). moec's layout is w_gate [E, H, F], w_down [E, F, H], so the
// weights are transposed here. Activations: relu, silu, identity, and gelu,
// which is the tanh approximation.
//
// activation_type = "swiglu" (gpt-oss style):
//   g = x Wg + bg, l = x Wl + bl,
//   swiglu = g * sigmoid(activation_alpha * g) * (l + activation_beta)
// (alpha defaults to 1, beta to 0). swiglu_fusion = 1 interleaves g and l in
// fc1's rows ([g0, l0, g1, l1, ...]; the only form onnxruntime's CPU kernel
// runs, checked), 2 concatenates them ([g | l]), 0 takes l from fc3. Since
// g * sigmoid(a g) = silu(a g) / a, it is a silu-gated moe.experts with
// w_gate = a Wg, b_gate = a bg, w_up = Wl / a, b_up = (bl + beta) / a.
// With swiglu_limit (clamping: g' = min(g, limit), l' = clamp(l, -limit,
// limit)) it is moe.experts' clamped_swiglu with alpha, beta and the limit.
// "geglu" (CUDA only, fused fc1 required) is gelu_tanh(g) * l.
// A separate fc3 with another activation gates it: act(x fc1^T) * (x fc3^T).
//
//===----------------------------------------------------------------------===//

#include "ImportMoE.h"

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

#include <cmath>

using namespace mlir;
using namespace moec;
using namespace moec::onnximport;

namespace {
/// A stacked expert weight `[E, A, B]` transposed to `[E, B, A]`.
HostTensor transposeLast2(const HostTensor &w) {
  HostTensor t;
  t.dtype = w.dtype;
  int64_t e = w.shape[0], a = w.shape[1], bdim = w.shape[2];
  t.shape = {e, bdim, a};
  t.f.resize(w.f.size());
  for (int64_t x = 0; x < e; ++x)
    for (int64_t i = 0; i < a; ++i)
      for (int64_t j = 0; j < bdim; ++j)
        t.f[(x * bdim + j) * a + i] = w.f[(x * a + i) * bdim + j];
  return t;
}

/// Rows `start, start + step, ...` (`count` of them) of every expert of a
/// `[E, R, H]` weight, transposed and scaled: `[E, H, count]`.
HostTensor pickRowsT(const HostTensor &w, int64_t start, int64_t step,
                     int64_t count, double scale) {
  HostTensor t;
  t.dtype = w.dtype;
  int64_t e = w.shape[0], r = w.shape[1], h = w.shape[2];
  t.shape = {e, h, count};
  t.f.resize(size_t(e * h * count));
  for (int64_t x = 0; x < e; ++x)
    for (int64_t j = 0; j < count; ++j)
      for (int64_t i = 0; i < h; ++i)
        t.f[(x * h + i) * count + j] =
            scale * w.f[(x * r + start + j * step) * h + i];
  return t;
}

/// The same selection of a `[E, R]` bias (or, when `b` is null, of zeros),
/// as `(b + add) * scale`: `[E, count]`.
HostTensor pickBias(const HostTensor *b, int32_t dtype, int64_t e, int64_t r,
                    int64_t start, int64_t step, int64_t count, double add,
                    double scale) {
  HostTensor t;
  t.dtype = b ? b->dtype : dtype;
  t.shape = {e, count};
  t.f.resize(size_t(e * count));
  for (int64_t x = 0; x < e; ++x)
    for (int64_t j = 0; j < count; ++j)
      t.f[x * count + j] =
          ((b ? b->f[x * r + start + j * step] : 0.0) + add) * scale;
  return t;
}
} // namespace

LogicalResult moec::onnximport::importMoELayer(
    GraphImporter &gi, function_ref<LogicalResult(MoELayerInputs &)> load) {
  const unsigned kInput = 0, kRouter = 1;
  if (gi.intAttr("use_sparse_mixer", 0) != 0)
    return gi.fail("attribute use_sparse_mixer=1 (SparseMixer routing) is "
                   "not supported");
  std::string act = gi.strAttr("activation_type", "relu");
  moe::Activation activation;
  bool swiglu = act == "swiglu", geglu = act == "geglu";
  if (act == "relu")
    activation = moe::Activation::relu;
  else if (act == "gelu" || geglu)
    activation = moe::Activation::gelu_tanh;
  else if (act == "silu" || swiglu)
    activation = moe::Activation::silu;
  else if (act == "identity")
    activation = moe::Activation::identity;
  else
    return gi.fail("activation_type '" + act +
                   "' is not supported (relu, gelu, silu, identity, swiglu, "
                   "geglu are)");
  int64_t fusion = gi.intAttr("swiglu_fusion", 0);
  double alpha = gi.floatAttr("activation_alpha", 1.0);
  double beta = gi.floatAttr("activation_beta", 0.0);
  if (swiglu || geglu) {
    if (fusion < 0 || fusion > 2)
      return gi.fail("attribute swiglu_fusion=" + Twine(fusion) +
                     " is not one of 0, 1, 2");
    if (geglu && fusion == 0)
      return gi.fail("activation_type 'geglu' needs swiglu_fusion 1 or 2");
  }
  // swiglu_limit clamps gate and up (GPT-OSS): moe.experts' clamped_swiglu
  // takes alpha, beta and the limit as they are.
  std::optional<double> limit;
  if (swiglu) {
    if (gi.hasAttr("swiglu_limit")) {
      limit = gi.floatAttr("swiglu_limit", 0.0);
      // Written so that NaN is rejected too.
      if (!(*limit > 0.0 && std::isfinite(*limit)))
        return gi.fail("attribute swiglu_limit=" + std::to_string(*limit) +
                       " must be positive and finite");
      activation = moe::Activation::clamped_swiglu;
    } else if (alpha == 0.0) {
      return gi.fail("attribute activation_alpha=0 is not supported");
    }
  } else {
    alpha = 1.0;
    beta = 0.0;
  }

  // The weights after the attributes: an unsupported attribute is the
  // error, whatever the weights.
  MoELayerInputs in;
  if (failed(load(in)))
    return failure();
  const unsigned kB1 = in.b1, kB2 = in.b2, kB3 = in.b3;
  RankedTensorType inT = gi.inputType(kInput), rT = gi.inputType(kRouter);
  if (inT.getRank() != 2 && inT.getRank() != 3)
    return gi.fail("input must be [tokens, hidden] or [batch, seq, hidden]");
  if (rT.getRank() != 2)
    return gi.fail("router_probs must be [tokens, experts]");
  if (inT.isDynamicDim(inT.getRank() - 1))
    return gi.fail("the hidden size (last dim of input) must be static");
  int64_t h = inT.getShape().back();
  // Tokens: the product of the leading dims, dynamic when any of them is.
  int64_t tokens = 1;
  for (int64_t d = 0; d + 1 < inT.getRank(); ++d)
    tokens = inT.isDynamicDim(d) || ShapedType::isDynamic(tokens)
                 ? ShapedType::kDynamic
                 : tokens * inT.getDimSize(d);
  if (!ShapedType::isDynamic(tokens) && !rT.isDynamicDim(0) &&
      rT.getDimSize(0) != tokens)
    return gi.fail("router_probs has " + Twine(rT.getDimSize(0)) +
                   " rows but the input has " + Twine(tokens) + " tokens");

  const HostTensor *fc1 = in.fc1, *fc2 = in.fc2;
  int64_t e = fc1->shape[0];
  if (!rT.isDynamicDim(1) && rT.getDimSize(1) != e)
    return gi.fail("router_probs has " + Twine(rT.getDimSize(1)) +
                   " experts but fc1_experts_weights has " + Twine(e));
  int64_t k = gi.intAttr("k", 1);
  if (k < 1 || k > e)
    return gi.fail("k=" + Twine(k) + " must be in [1, " + Twine(e) + "]");

  // fc1 in onnxruntime's current layout [E, R, H], R = fusion * F.
  bool legacy = fc1->shape[2] != h && fc1->shape[1] == h;
  if (!legacy && fc1->shape[2] != h)
    return gi.fail("fc1_experts_weights " + Twine(fc1->shape[1]) + "x" +
                   Twine(fc1->shape[2]) +
                   " per expert does not match hidden size " + Twine(h));
  std::optional<HostTensor> fc1Legacy;
  if (legacy)
    fc1Legacy = transposeLast2(*fc1);
  const HostTensor &w1 = legacy ? *fc1Legacy : *fc1;
  int64_t rows = w1.shape[1];
  bool fused = (swiglu || geglu) && fusion != 0;
  if (fused && rows % 2 != 0)
    return gi.fail("fc1_experts_weights has " + Twine(rows) +
                   " rows per expert; fused gate/up needs an even count");
  int64_t f = fused ? rows / 2 : rows;
  auto expect = [&](const HostTensor &w, int64_t a, int64_t b,
                    const char *name) -> LogicalResult {
    if (w.shape[0] != e || w.shape[1] != a || w.shape[2] != b)
      return gi.fail(Twine(name) + " must be [" + Twine(e) + ", " + Twine(a) +
                     ", " + Twine(b) + "]");
    return success();
  };
  if (failed(
          expect(*fc2, legacy ? f : h, legacy ? h : f, "fc2_experts_weights")))
    return failure();
  const HostTensor *fc3 = nullptr;
  std::optional<HostTensor> fc3Legacy;
  if (in.fc3) {
    if (fused)
      return gi.fail("fc3_experts_weights given with swiglu_fusion=" +
                     Twine(fusion) + " (gate and up are both in fc1)");
    fc3 = in.fc3;
    if (failed(
            expect(*fc3, fc1->shape[1], fc1->shape[2], "fc3_experts_weights")))
      return failure();
    if (legacy) {
      fc3Legacy = transposeLast2(*fc3);
      fc3 = &*fc3Legacy;
    }
  } else if (gi.hasInput(kB3)) {
    return gi.fail("fc3_experts_bias given without fc3_experts_weights");
  }
  if (swiglu && !fused && !fc3)
    return gi.fail("activation_type 'swiglu' with swiglu_fusion=0 needs "
                   "fc3_experts_weights");

  auto checkBias = [&](unsigned i, int64_t n, const char *name) {
    if (!gi.hasInput(i))
      return success();
    RankedTensorType t = gi.inputType(i);
    if (t.getRank() != 2 || t.getDimSize(0) != e || t.getDimSize(1) != n)
      return gi.fail(Twine(name) + " must be [" + Twine(e) + ", " + Twine(n) +
                     "]");
    return success();
  };
  if (failed(checkBias(kB1, rows, "fc1_experts_bias")) ||
      failed(checkBias(kB2, h, "fc2_experts_bias")) ||
      failed(checkBias(kB3, f, "fc3_experts_bias")))
    return failure();

  std::string node = gi.node().name().empty() ? "moe" : gi.node().name();
  Value wGate, wUp, bGate, bUp;
  // Fused gate/up rows: interleaved (fusion 1) or [gate | up] (fusion 2).
  int64_t gateStart = 0, upStart = fused ? (fusion == 1 ? 1 : f) : 0;
  int64_t step = fused && fusion == 1 ? 2 : 1;
  // Biases are rewritten on the host when split or rescaled; else they are
  // used as they are (and may then be computed values).
  // Without a limit, alpha and beta fold into the weights (see the top).
  double gScale = limit ? 1.0 : alpha, upAdd = limit ? 0.0 : beta;
  bool hostBias = fused || gScale != 1.0 || upAdd != 0.0;
  auto hostBiasOf = [&](unsigned i, const char *name,
                        const HostTensor *&out) -> LogicalResult {
    out = nullptr;
    if (!gi.hasInput(i))
      return success();
    out = gi.inputConst(i);
    if (!out || !out->isFloat())
      return gi.fail(Twine(name) +
                     " must be a float initializer (constant) "
                     "with activation_type '" +
                     act + "'");
    return success();
  };
  if (fused || fc3) {
    const HostTensor &up = fused ? w1 : *fc3;
    if (in.packed) {
      wGate = in.packed(0, gateStart, step, f, gScale);
      wUp = in.packed(fused ? 0 : 2, upStart, step, f, 1.0 / gScale);
    } else {
      wGate = gi.weight(pickRowsT(w1, gateStart, step, f, gScale),
                        node + ".w_gate");
      wUp = gi.weight(pickRowsT(up, upStart, step, f, 1.0 / gScale),
                      node + ".w_up");
    }
    if (hostBias) {
      const HostTensor *b1 = nullptr, *b3 = nullptr;
      if (failed(hostBiasOf(kB1, "fc1_experts_bias", b1)) ||
          failed(hostBiasOf(kB3, "fc3_experts_bias", b3)))
        return failure();
      if (b1)
        bGate = gi.weight(
            pickBias(b1, w1.dtype, e, rows, gateStart, step, f, 0.0, gScale),
            node + ".b_gate");
      const HostTensor *bu = fused ? b1 : b3;
      if (bu || upAdd != 0.0)
        bUp = gi.weight(pickBias(bu, w1.dtype, e, fused ? rows : f, upStart,
                                 step, f, upAdd, 1.0 / gScale),
                        node + ".b_up");
    } else {
      if (gi.hasInput(kB1))
        bGate = gi.input(kB1);
      if (gi.hasInput(kB3))
        bUp = gi.input(kB3);
    }
  } else {
    wGate = in.packed ? in.packed(0, 0, 1, rows, 1.0)
                      : gi.weight(legacy ? *fc1 : transposeLast2(*fc1),
                                  node + ".w_gate");
    if (gi.hasInput(kB1))
      bGate = gi.input(kB1);
  }
  Value wDown = in.packed ? in.packed(1, 0, 1, h, 1.0)
                          : gi.weight(legacy ? *fc2 : transposeLast2(*fc2),
                                      node + ".w_down");
  Value bDown = gi.hasInput(kB2) ? gi.input(kB2) : Value();

  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Type elt = inT.getElementType();
  Value input = gi.input(kInput);
  // Dynamic leading dims of the input, and their product.
  SmallVector<Value> inDyn;
  for (int64_t d = 0; d < inT.getRank(); ++d)
    if (inT.isDynamicDim(d))
      inDyn.push_back(gi.dim(input, d));
  Value x = input;
  if (inT.getRank() == 3) {
    SmallVector<Value> dyn;
    if (ShapedType::isDynamic(tokens)) {
      Value n =
          arith::MulIOp::create(b, loc, gi.dim(input, 0), gi.dim(input, 1));
      dyn.push_back(n);
    }
    x = gi.reshape(input, {tokens, h}, dyn);
  }
  int64_t routeRows = rT.getDimSize(0);
  if (ShapedType::isDynamic(routeRows))
    routeRows = tokens;
  // The router runs in f32 whatever the model's type (an fp16 model's
  // logits are widened), as in --precision plans: the plan's route step
  // and its routing weights are f32.
  Value logits = gi.input(kRouter);
  if (!rT.getElementType().isF32())
    logits = gi.castTensor(logits, b.getF32Type());
  auto route = moe::RouteOp::create(
      b, loc, RankedTensorType::get({routeRows, k}, b.getF32Type()),
      RankedTensorType::get({routeRows, k}, b.getI64Type()), logits,
      /*bias=*/Value(), b.getI64IntegerAttr(k),
      moe::ScoreFuncAttr::get(gi.ctx(), moe::ScoreFunc::softmax),
      b.getBoolAttr(in.alwaysNormalize ||
                    gi.intAttr("normalize_routing_weights", 0) == 1),
      b.getF64FloatAttr(1.0), b.getI64IntegerAttr(1), b.getI64IntegerAttr(1),
      moe::GroupScoreAttr::get(gi.ctx(), moe::GroupScore::max),
      b.getF64FloatAttr(0.0));
  Value weights = route.getWeights();
  auto experts = moe::ExpertsOp::create(
      b, loc, RankedTensorType::get({tokens, h}, elt), x, route.getIndices(),
      weights, wGate, wUp, wDown, bGate, bUp, bDown,
      moe::ActivationAttr::get(gi.ctx(), activation), b.getI64IntegerAttr(0),
      b.getF64FloatAttr(limit ? alpha : 1.0),
      b.getF64FloatAttr(limit ? beta : 0.0),
      limit ? b.getF64FloatAttr(*limit) : FloatAttr());
  Value y = experts.getResult();
  if (inT.getRank() == 3)
    y = gi.reshape(y, inT.getShape(), inDyn);
  gi.setOutput(0, y);
  return success();
}

static LogicalResult importMoE(GraphImporter &gi) {
  enum { kInput, kRouter, kFc1, kB1, kFc2, kB2, kFc3, kB3 };
  if (!gi.hasInput(kInput) || !gi.hasInput(kRouter) || !gi.hasInput(kFc1) ||
      !gi.hasInput(kFc2))
    return gi.fail("needs input, router_probs, fc1_experts_weights and "
                   "fc2_experts_weights");
  if (gi.numInputs() > kB3 + 1)
    return gi.fail("has " + Twine(gi.numInputs()) +
                   " inputs; quantized MoE variants are not supported");
  // Expert weights must be known: they are moved into moec's layout here.
  auto loadWeight = [&](unsigned i, const char *name) -> const HostTensor * {
    const HostTensor *w = gi.inputConst(i);
    if (!w) {
      (void)gi.fail(Twine(name) + " must be an initializer (constant)");
      return nullptr;
    }
    if (w->shape.size() != 3 || !w->isFloat()) {
      (void)gi.fail(Twine(name) + " must be a float [experts, ., .] tensor");
      return nullptr;
    }
    return w;
  };
  return importMoELayer(gi, [&](MoELayerInputs &in) -> LogicalResult {
    in.fc1 = loadWeight(kFc1, "fc1_experts_weights");
    in.fc2 = loadWeight(kFc2, "fc2_experts_weights");
    if (!in.fc1 || !in.fc2)
      return failure();
    if (gi.hasInput(kFc3) &&
        !(in.fc3 = loadWeight(kFc3, "fc3_experts_weights")))
      return failure();
    in.b1 = kB1;
    in.b2 = kB2;
    in.b3 = kB3;
    return success();
  });
}

void moec::onnximport::addMicrosoftOps(OpTable &t) {
  t["com.microsoft::MoE"] = importMoE;
  addQuantizedOps(t);
}
