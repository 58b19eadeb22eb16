//===- ImportLinearAttention.cpp - gated-delta linear attention ops -------===//
//
// The linear-attention layers of hybrid models (Qwen3.5's gated DeltaNet) as
// onnxruntime-genai's builder writes them (issue 18), expressed in standard
// ONNX ops (Expansion.h). Semantics as measured on onnxruntime 1.32 CPU
// (random single-node models against a numpy reference; checked by
// test/moec/contrib-blocks.test):
//
// com.microsoft.LinearAttention(q [B, S, Hq*dk], k [B, S, Hq*dk],
//   v [B, S, Hkv*dv], past_state [B, Hkv, dk, dv], decay [B, S, Hkv],
//   beta [B, S, Hkv]) -> (out [B, S, Hkv*dv], present_state), with
//   q_num_heads = Hq, kv_num_heads = Hkv (a multiple of Hq; value head h
//   reads query/key head h / (Hkv / Hq)). Per head, for t = 0 .. S-1, the
//   state M [dk, dv] is updated and read:
//     gated_delta: M = exp(decay_t) M; M += k_t^T ((v_t - k_t M) beta_t)
//     gated:       M = exp(decay_t) M; M += k_t^T v_t
//     delta:       M += k_t^T ((v_t - k_t M) beta_t)
//     linear:      M += k_t^T v_t
//     out_t = scale q_t M (scale 0 means 1 / sqrt(dk)).
//   The recurrence is unrolled over the S (static) tokens of the step.
// com.microsoft.LinearAttentionGate(a, dt_bias, decay_scale, b) ->
//   (decay_scale * softplus(a + dt_bias), sigmoid(b)).
// com.microsoft.GatedRMSNorm(x [..., D], scale [G], z [..., D]) {epsilon}:
//   RMS-normalizes each group of G channels of x (G divides D), times scale,
//   times silu(z).
// com.microsoft.GatedAdd(x, y, gate [..., 1]) = x + gate * y (gate of x's
//   rank, its last dim 1).
// LpNormalization {axis, p 1 or 2} (standard ONNX): x / ||x||_p along axis,
//   0 where the norm is 0.
//
//===----------------------------------------------------------------------===//

#include "Expansion.h"
#include "GraphImporter.h"

#include <cmath>

using namespace mlir;
using namespace moec::onnximport;

namespace {
using Attrs = Expansion::Attrs;

Attrs permAttr(std::vector<int64_t> perm) {
  return [=](onnx::NodeProto &n) { Expansion::setInts(n, "perm", perm); };
}
Attrs axisAttr(int64_t axis) {
  return [=](onnx::NodeProto &n) { Expansion::setInt(n, "axis", axis); };
}
std::string slice(Expansion &ex, const std::string &x, int64_t axis, int64_t lo,
                  int64_t hi) {
  return ex.op("Slice", {x, ex.ints({lo}), ex.ints({hi}), ex.ints({axis})});
}

bool isShape(RankedTensorType t, std::vector<int64_t> shape) {
  return t.hasStaticShape() && t.getShape() == ArrayRef<int64_t>(shape);
}
std::string shapeStr(const std::vector<int64_t> &s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i)
    r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

LogicalResult importLinearAttention(GraphImporter &gi) {
  if (!gi.hasInputs(3))
    return gi.fail("needs query, key and value");
  std::string rule = gi.strAttr("update_rule", "gated_delta");
  bool gated = rule == "gated_delta" || rule == "gated";
  bool delta = rule == "gated_delta" || rule == "delta";
  if (!gated && !delta && rule != "linear")
    return gi.fail("attribute update_rule='" + rule +
                   "' is not supported (linear, gated, delta, gated_delta)");
  if (int64_t w = gi.intAttr("state_window", 0); w != 0)
    return gi.fail("attribute state_window=" + Twine(w) + " is not supported");
  int64_t hq = gi.intAttr("q_num_heads", 0),
          hkv = gi.intAttr("kv_num_heads", 0);
  if (hq <= 0 || hkv <= 0 || hkv % hq != 0)
    return gi.fail("attributes q_num_heads=" + Twine(hq) +
                   ", kv_num_heads=" + Twine(hkv) +
                   " are not supported (positive, kv_num_heads "
                   "a multiple of q_num_heads)");
  RankedTensorType qt = gi.inputType(0), kt = gi.inputType(1),
                   vt = gi.inputType(2);
  if (qt.getRank() != 3 || !qt.hasStaticShape() || vt.getRank() != 3 ||
      !vt.hasStaticShape())
    return gi.fail("query and value must be [batch, sequence, heads*dim] with "
                   "static dims (fix them with --input-shape)");
  int64_t b = qt.getDimSize(0), s = qt.getDimSize(1);
  if (qt.getDimSize(2) % hq != 0 || vt.getDimSize(2) % hkv != 0)
    return gi.fail("query's last dim must be a multiple of q_num_heads and "
                   "value's of kv_num_heads");
  int64_t dk = qt.getDimSize(2) / hq, dv = vt.getDimSize(2) / hkv;
  if (!isShape(kt, {b, s, hq * dk}) || !isShape(vt, {b, s, hkv * dv}))
    return gi.fail("key must be " + shapeStr({b, s, hq * dk}) + " and value " +
                   shapeStr({b, s, hkv * dv}));
  std::vector<int64_t> stateShape = {b, hkv, dk, dv}, gateShape = {b, s, hkv};
  if (gi.hasInput(3) && !isShape(gi.inputType(3), stateShape))
    return gi.fail("past_state must be " + shapeStr(stateShape));
  if (gated && (!gi.hasInput(4) || !isShape(gi.inputType(4), gateShape)))
    return gi.fail("update_rule '" + rule + "' needs decay " +
                   shapeStr(gateShape));
  if (delta && (!gi.hasInput(5) || !isShape(gi.inputType(5), gateShape)))
    return gi.fail("update_rule '" + rule + "' needs beta " +
                   shapeStr(gateShape));
  double scale = gi.floatAttr("scale", 0.0);
  if (scale == 0.0)
    scale = 1.0 / std::sqrt(double(dk));
  int32_t dt = GraphImporter::onnxType(qt.getElementType());

  Expansion ex(gi);
  // [B, S, n*d] -> [B, n, S, d]; query/key heads repeated for the value
  // heads that share them.
  auto heads = [&](const std::string &x, int64_t n, int64_t d) {
    std::string y = ex.op("Reshape", {x, ex.ints({b, s, n, d})});
    y = ex.op("Transpose", {y}, permAttr({0, 2, 1, 3}));
    if (n == hkv)
      return y;
    std::vector<int64_t> idx;
    for (int64_t h = 0; h < hkv; ++h)
      idx.push_back(h / (hkv / hq));
    return ex.op("Gather", {y, ex.ints(idx)}, axisAttr(1));
  };
  std::string q = heads(ex.in(0), hq, dk);
  std::string kT = ex.op("Transpose", {heads(ex.in(1), hq, dk)},
                         permAttr({0, 1, 3, 2})); // [B, H, dk, S]
  std::string v = heads(ex.in(2), hkv, dv);
  // Gates [B, S, H] -> [B, H, S, 1].
  auto gate = [&](const std::string &x) {
    return ex.op("Unsqueeze",
                 {ex.op("Transpose", {x}, permAttr({0, 2, 1})), ex.ints({3})});
  };
  std::string decay = gated ? ex.op("Exp", {gate(ex.in(4))}) : "";
  std::string beta = delta ? gate(ex.in(5)) : "";
  std::string m = gi.hasInput(3) ? ex.in(3) : ex.splat(dt, stateShape, 0);
  std::string scaleC = ex.splat(dt, {}, scale);
  std::vector<std::string> outs;
  for (int64_t t = 0; t < s; ++t) {
    std::string kc = slice(ex, kT, 3, t, t + 1); // [dk, 1]
    std::string kr =
        ex.op("Transpose", {kc}, permAttr({0, 1, 3, 2})); // [1, dk]
    std::string vr = slice(ex, v, 2, t, t + 1);           // [1, dv]
    if (gated)
      m = ex.op("Mul", {m, slice(ex, decay, 2, t, t + 1)});
    std::string upd = vr;
    if (delta) {
      std::string err = ex.op("Sub", {vr, ex.op("MatMul", {kr, m})});
      upd = ex.op("Mul", {err, slice(ex, beta, 2, t, t + 1)});
    }
    m = ex.op("Add", {m, ex.op("MatMul", {kc, upd})});
    std::string o = ex.op("MatMul", {slice(ex, q, 2, t, t + 1), m});
    outs.push_back(ex.op("Mul", {o, scaleC}));
    if (m.empty() || outs.back().empty())
      return failure();
  }
  std::string out = s == 1 ? outs[0] : ex.op("Concat", outs, axisAttr(2));
  out = ex.op("Transpose", {out}, permAttr({0, 2, 1, 3}));
  out = ex.op("Reshape", {out, ex.ints({b, s, hkv * dv})});
  if (out.empty() || failed(ex.output(0, out)))
    return failure();
  if (gi.hasOutput(1) && failed(ex.output(1, m)))
    return failure();
  return success();
}

LogicalResult importLinearAttentionGate(GraphImporter &gi) {
  if (!gi.hasInputs(4))
    return gi.fail("needs a, dt_bias, decay_scale and b");
  Expansion ex(gi);
  std::string sp = ex.op("Softplus", {ex.op("Add", {ex.in(0), ex.in(1)})});
  std::string decay = ex.op("Mul", {ex.in(2), sp});
  if (decay.empty() || failed(ex.output(0, decay)))
    return failure();
  if (gi.hasOutput(1)) {
    std::string beta = ex.op("Sigmoid", {ex.in(3)});
    if (beta.empty() || failed(ex.output(1, beta)))
      return failure();
  }
  return success();
}

LogicalResult importGatedRMSNorm(GraphImporter &gi) {
  if (!gi.hasInputs(3))
    return gi.fail("needs input, scale and gate");
  RankedTensorType xt = gi.inputType(0), wt = gi.inputType(1);
  if (!xt.hasStaticShape() || xt.getRank() < 1)
    return gi.fail("input must have static dims (fix them with "
                   "--input-shape)");
  int64_t d = xt.getShape().back();
  if (wt.getRank() != 1 || wt.isDynamicDim(0) || d % wt.getDimSize(0) != 0)
    return gi.fail("scale must be 1-D with a size that divides the input's "
                   "last dim (" +
                   Twine(d) + ")");
  if (!isShape(gi.inputType(2), std::vector<int64_t>(xt.getShape())))
    return gi.fail("gate must have the input's shape");
  int64_t g = wt.getDimSize(0);
  double eps = gi.floatAttr("epsilon", 1e-5);
  std::vector<int64_t> grouped(xt.getShape().begin(), xt.getShape().end());
  grouped.back() = d / g;
  grouped.push_back(g);
  Expansion ex(gi);
  std::string x = ex.in(0);
  if (g != d)
    x = ex.op("Reshape", {x, ex.ints(grouped)});
  std::string n = ex.op("SimplifiedLayerNormalization", {x, ex.in(1)},
                        [&](onnx::NodeProto &p) {
                          Expansion::setInt(p, "axis", -1);
                          Expansion::setFloat(p, "epsilon", eps);
                        });
  if (g != d)
    n = ex.op("Reshape", {n, ex.ints(std::vector<int64_t>(xt.getShape()))});
  std::string z = ex.in(2);
  std::string y = ex.op("Mul", {n, ex.op("Mul", {z, ex.op("Sigmoid", {z})})});
  if (y.empty())
    return failure();
  return ex.output(0, y);
}

LogicalResult importGatedAdd(GraphImporter &gi) {
  if (!gi.hasInputs(3))
    return gi.fail("needs input, scaled input and gate");
  RankedTensorType xt = gi.inputType(0), gt = gi.inputType(2);
  if (gt.getRank() != xt.getRank() || gt.getRank() < 1 ||
      gt.getShape().back() != 1)
    return gi.fail("gate must have the input's rank and a last dim of 1");
  Expansion ex(gi);
  std::string y = ex.op("Add", {ex.in(0), ex.op("Mul", {ex.in(2), ex.in(1)})});
  if (y.empty())
    return failure();
  return ex.output(0, y);
}

LogicalResult importLpNormalization(GraphImporter &gi) {
  int64_t p = gi.intAttr("p", 2), axis = gi.intAttr("axis", -1);
  if (p != 1 && p != 2)
    return gi.fail("attribute p=" + Twine(p) + " is not supported (1, 2)");
  RankedTensorType xt = gi.inputType(0);
  int32_t dt = GraphImporter::onnxType(xt.getElementType());
  Expansion ex(gi);
  std::string x = ex.in(0);
  std::string mag = p == 1 ? ex.op("Abs", {x}) : ex.op("Mul", {x, x});
  std::string norm =
      ex.op("ReduceSum", {mag, ex.ints({axis})},
            [](onnx::NodeProto &n) { Expansion::setInt(n, "keepdims", 1); });
  if (p == 2)
    norm = ex.op("Sqrt", {norm});
  // A zero norm divides by one: the zero vector stays zero.
  std::string zero = ex.splat(dt, {}, 0), one = ex.splat(dt, {}, 1);
  norm = ex.op("Where", {ex.op("Equal", {norm, zero}), one, norm});
  std::string y = ex.op("Div", {x, norm});
  if (y.empty())
    return failure();
  return ex.output(0, y);
}
} // namespace

void moec::onnximport::addLinearAttentionOps(OpTable &t) {
  t["com.microsoft::LinearAttention"] = importLinearAttention;
  t["com.microsoft::LinearAttentionGate"] = importLinearAttentionGate;
  t["com.microsoft::GatedRMSNorm"] = importGatedRMSNorm;
  t["com.microsoft::GatedAdd"] = importGatedAdd;
  t["LpNormalization"] = importLpNormalization;
}
