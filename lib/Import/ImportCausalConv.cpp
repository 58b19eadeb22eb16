//===- ImportCausalConv.cpp - com.microsoft.CausalConvWithState -----------===//
//
// The short causal convolution of hybrid models (LFM2's conv blocks,
// Qwen3.5's gated-delta layers) as onnxruntime-genai's builder writes it
// (issue 18), with its state carried between calls. Semantics (onnxruntime
// 1.32 CPU, checked on random data by test/moec/contrib-blocks.test):
//   input [B, C, S], weight [C, 1, K] (depthwise), optional bias [C],
//   optional past_state [B, C, K-1] (zeros when omitted);
//   xx = concat(past_state, input) along time;
//   output[b, c, t] = act(sum_j weight[c, 0, j] xx[b, c, t + j] + bias[c]),
//   act none or silu; present_state = the last K-1 steps of xx.
// Expressed in standard ONNX ops (Expansion.h): Concat, a grouped Conv
// (group = C, no padding), the activation and a Slice.
//
//===----------------------------------------------------------------------===//

#include "Expansion.h"
#include "GraphImporter.h"

using namespace mlir;
using namespace moec::onnximport;

namespace {
LogicalResult importCausalConvWithState(GraphImporter &gi) {
  if (!gi.hasInputs(2))
    return gi.fail("needs input and weight");
  int64_t ndim = gi.intAttr("ndim", 1);
  if (ndim != 1)
    return gi.fail("attribute ndim=" + Twine(ndim) +
                   " is not supported (1-D convolutions only)");
  std::string act = gi.strAttr("activation", "none");
  if (act != "none" && act != "silu" && act != "swish")
    return gi.fail("attribute activation='" + act +
                   "' is not supported (none, silu)");
  if (int64_t w = gi.intAttr("state_window", 0); w != 0)
    return gi.fail("attribute state_window=" + Twine(w) + " is not supported");
  RankedTensorType xt = gi.inputType(0), wt = gi.inputType(1);
  if (xt.getRank() != 3 || !xt.hasStaticShape())
    return gi.fail("input must be [batch, channels, time] with static dims "
                   "(fix them with --input-shape)");
  int64_t b = xt.getDimSize(0), c = xt.getDimSize(1), s = xt.getDimSize(2);
  if (wt.getRank() != 3 || wt.getDimSize(0) != c || wt.getDimSize(1) != 1 ||
      wt.isDynamicDim(2) || wt.getDimSize(2) < 1)
    return gi.fail("weight must be [" + Twine(c) + ", 1, kernel]");
  int64_t k = wt.getDimSize(2);
  if (gi.hasInput(2)) {
    RankedTensorType bt = gi.inputType(2);
    if (bt.getRank() != 1 || bt.getDimSize(0) != c)
      return gi.fail("bias must be [" + Twine(c) + "]");
  }
  if (gi.hasInput(3)) {
    RankedTensorType st = gi.inputType(3);
    if (st.getRank() != 3 || st.getDimSize(0) != b || st.getDimSize(1) != c ||
        st.getDimSize(2) != k - 1)
      return gi.fail("past_state must be [" + Twine(b) + ", " + Twine(c) +
                     ", " + Twine(k - 1) + "] (kernel - 1 steps)");
  }
  int32_t dt = GraphImporter::onnxType(xt.getElementType());
  Expansion ex(gi);
  std::string state =
      gi.hasInput(3) ? ex.in(3) : ex.splat(dt, {b, c, k - 1}, 0);
  std::string xx =
      k > 1 ? ex.op("Concat", {state, ex.in(0)},
                    [](onnx::NodeProto &n) { Expansion::setInt(n, "axis", 2); })
            : ex.in(0);
  std::vector<std::string> convIn = {xx, ex.in(1)};
  if (gi.hasInput(2))
    convIn.push_back(ex.in(2));
  std::string y = ex.op("Conv", convIn, [&](onnx::NodeProto &n) {
    Expansion::setInt(n, "group", c);
    Expansion::setInts(n, "kernel_shape", {k});
  });
  if (act != "none" && !y.empty())
    y = ex.op("Mul", {y, ex.op("Sigmoid", {y})});
  if (y.empty() || failed(ex.output(0, y)))
    return failure();
  if (gi.hasOutput(1)) {
    int64_t len = k - 1 + s;
    std::string present = k > 1 ? ex.op("Slice", {xx, ex.ints({len - (k - 1)}),
                                                  ex.ints({len}), ex.ints({2})})
                                : ex.splat(dt, {b, c, 0}, 0);
    if (present.empty() || failed(ex.output(1, present)))
      return failure();
  }
  return success();
}
} // namespace

void moec::onnximport::addCausalConvOps(OpTable &t) {
  t["com.microsoft::CausalConvWithState"] = importCausalConvWithState;
}
