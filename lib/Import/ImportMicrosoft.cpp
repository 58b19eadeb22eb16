//===- ImportMicrosoft.cpp - com.microsoft contrib ops --------------------===//
//
// com.microsoft.MoE, onnxruntime's fused MoE layer, maps one to one onto
// moe.route + moe.experts, so it is imported already raised.
//
// Semantics (checked against onnxruntime 1.32 CPU on random data):
//   p = softmax(router_probs); the k largest win (ties: lower expert id);
//   weights = p at the winners, divided by their sum when
//   normalize_routing_weights = 1;
//   y[t] = sum_j w[t,j] * (act(x[t] fc1[e]^T + b1[e]) [* (x[t] fc3[e]^T + b3[e])])
//          fc2[e]^T + b2[e]
// with fc1/fc3 stored [E, F, H] and fc2 [E, H, F] (onnxruntime >= 1.22; older
// releases stored [E, H, F] and [E, F, H], which is accepted too when the
// shapes tell them apart). activation_type gelu is the tanh approximation.
//
//===----------------------------------------------------------------------===//

#include "GraphImporter.h"

#include "moec/Dialect/MoE/MoEOps.h"

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
} // namespace

static LogicalResult importMoE(GraphImporter &gi) {
  enum { kInput, kRouter, kFc1, kB1, kFc2, kB2, kFc3, kB3 };
  if (!gi.hasInput(kInput) || !gi.hasInput(kRouter) || !gi.hasInput(kFc1) ||
      !gi.hasInput(kFc2))
    return gi.fail("needs input, router_probs, fc1_experts_weights and "
                   "fc2_experts_weights");
  if (gi.numInputs() > kB3 + 1)
    return gi.fail("has " + Twine(gi.numInputs()) +
                   " inputs; quantized MoE variants are not supported");
  if (gi.intAttr("use_sparse_mixer", 0) != 0)
    return gi.fail("attribute use_sparse_mixer=1 (SparseMixer routing) is "
                   "not supported");
  std::string act = gi.strAttr("activation_type", "relu");
  moe::Activation activation;
  if (act == "relu")
    activation = moe::Activation::relu;
  else if (act == "gelu")
    activation = moe::Activation::gelu_tanh;
  else if (act == "silu")
    activation = moe::Activation::silu;
  else if (act == "identity")
    activation = moe::Activation::identity;
  else
    return gi.fail("activation_type '" + act +
                   "' is not supported (relu, gelu, silu, identity are)");

  RankedTensorType inT = gi.inputType(kInput), rT = gi.inputType(kRouter);
  if (inT.getRank() != 2 && inT.getRank() != 3)
    return gi.fail("input must be [tokens, hidden] or [batch, seq, hidden]");
  if (!inT.hasStaticShape() || !rT.hasStaticShape() || rT.getRank() != 2)
    return gi.fail("input and router_probs must have static shapes, "
                   "router_probs [tokens, experts]");
  int64_t h = inT.getShape().back();
  int64_t tokens = inT.getNumElements() / h;
  int64_t e = rT.getDimSize(1);
  if (rT.getDimSize(0) != tokens)
    return gi.fail("router_probs has " + Twine(rT.getDimSize(0)) +
                   " rows but the input has " + Twine(tokens) + " tokens");
  int64_t k = gi.intAttr("k", 1);
  if (k < 1 || k > e)
    return gi.fail("k=" + Twine(k) + " must be in [1, " + Twine(e) + "]");

  // Expert weights must be known: they are moved into moec's layout here.
  auto loadWeight = [&](unsigned i, const char *name) -> const HostTensor * {
    const HostTensor *w = gi.inputConst(i);
    if (!w)
      (void)gi.fail(Twine(name) + " must be an initializer (constant)");
    else if (w->shape.size() != 3 || w->shape[0] != e || !w->isFloat()) {
      (void)gi.fail(Twine(name) + " must be a float [" + Twine(e) +
                    ", ., .] tensor");
      return nullptr;
    }
    return w;
  };
  const HostTensor *fc1 = loadWeight(kFc1, "fc1_experts_weights");
  const HostTensor *fc2 = loadWeight(kFc2, "fc2_experts_weights");
  if (!fc1 || !fc2)
    return failure();
  // [E, F, H] (current onnxruntime) unless only [E, H, F] fits the shapes.
  bool legacy = fc1->shape[2] != h && fc1->shape[1] == h;
  if (!legacy && fc1->shape[2] != h)
    return gi.fail("fc1_experts_weights " + Twine(fc1->shape[1]) + "x" +
                   Twine(fc1->shape[2]) + " per expert does not match hidden "
                   "size " + Twine(h));
  int64_t f = legacy ? fc1->shape[2] : fc1->shape[1];
  auto expect = [&](const HostTensor &w, int64_t a, int64_t b,
                    const char *name) -> LogicalResult {
    if (w.shape[1] != a || w.shape[2] != b)
      return gi.fail(Twine(name) + " must be [" + Twine(e) + ", " + Twine(a) +
                     ", " + Twine(b) + "]");
    return success();
  };
  if (failed(expect(*fc2, legacy ? f : h, legacy ? h : f,
                    "fc2_experts_weights")))
    return failure();
  auto toGateLayout = [&](const HostTensor &w) {
    return legacy ? w : transposeLast2(w);
  };
  const HostTensor *fc3 = nullptr;
  if (gi.hasInput(kFc3)) {
    fc3 = loadWeight(kFc3, "fc3_experts_weights");
    if (!fc3 || failed(expect(*fc3, fc1->shape[1], fc1->shape[2],
                              "fc3_experts_weights")))
      return failure();
  }
  auto bias = [&](unsigned i, int64_t n, const char *name,
                  Value &out) -> LogicalResult {
    if (!gi.hasInput(i))
      return success();
    RankedTensorType t = gi.inputType(i);
    if (t.getRank() != 2 || t.getDimSize(0) != e || t.getDimSize(1) != n)
      return gi.fail(Twine(name) + " must be [" + Twine(e) + ", " + Twine(n) +
                     "]");
    out = gi.input(i);
    return success();
  };
  Value b1, b2, b3;
  if (failed(bias(kB1, f, "fc1_experts_bias", b1)) ||
      failed(bias(kB2, h, "fc2_experts_bias", b2)) ||
      failed(bias(kB3, f, "fc3_experts_bias", b3)))
    return failure();
  if (b3 && !fc3)
    return gi.fail("fc3_experts_bias given without fc3_experts_weights");

  std::string node = gi.node().name().empty() ? "moe" : gi.node().name();
  Value wGate = gi.weight(toGateLayout(*fc1), node + ".w_gate");
  Value wUp = fc3 ? gi.weight(toGateLayout(*fc3), node + ".w_up") : Value();
  Value wDown = gi.weight(legacy ? *fc2 : transposeLast2(*fc2),
                          node + ".w_down");

  OpBuilder &b = gi.builder();
  Type elt = inT.getElementType();
  Value x = gi.reshape(gi.input(kInput), {tokens, h});
  auto route = moe::RouteOp::create(
      b, gi.loc(), RankedTensorType::get({tokens, k}, rT.getElementType()),
      RankedTensorType::get({tokens, k}, b.getI64Type()), gi.input(kRouter),
      /*bias=*/Value(), b.getI64IntegerAttr(k),
      moe::ScoreFuncAttr::get(gi.ctx(), moe::ScoreFunc::softmax),
      b.getBoolAttr(gi.intAttr("normalize_routing_weights", 0) != 0),
      b.getF64FloatAttr(1.0), b.getI64IntegerAttr(1), b.getI64IntegerAttr(1),
      moe::GroupScoreAttr::get(gi.ctx(), moe::GroupScore::max));
  Value weights = route.getWeights();
  if (rT.getElementType() != elt)
    weights = gi.castTensor(weights, elt);
  auto experts = moe::ExpertsOp::create(
      b, gi.loc(), RankedTensorType::get({tokens, h}, elt), x,
      route.getIndices(), weights, wGate, wUp, wDown, b1, b3, b2,
      moe::ActivationAttr::get(gi.ctx(), activation), b.getI64IntegerAttr(0));
  gi.setOutput(0, gi.reshape(experts.getResult(), inT.getShape()));
  return success();
}

void moec::onnximport::addMicrosoftOps(OpTable &t) {
  t["com.microsoft::MoE"] = importMoE;
}
