//===- ImportMRope.cpp - com.microsoft.MRotaryEmbedding -------------------===//
//
// Multimodal rotary embedding (Qwen2-VL / Qwen3.5 MRoPE) as onnxruntime-
// genai's builder writes it (issue 18). Semantics as measured on
// onnxruntime 1.32 CPU (random single-node models against a numpy
// reference; checked by test/moec/contrib-blocks.test):
//   input [B, S, N*D] (num_heads = N) or [B, N, S, D], position_ids
//   [3, B, S] (temporal, height, width), cos_cache and sin_cache
//   [positions, R/2] with R = rotary_embedding_dim (0: the head dim D).
//   Rotary frequency j (0 <= j < R/2) takes its angle from the position of
//   one axis: mrope_layout 0 gives the axes consecutive runs of
//   mrope_section[0], [1], [2] frequencies; mrope_layout 1 (interleaved)
//   gives axis a (1 or 2) frequencies a, a+3, .. below 3 mrope_section[a]
//   and axis 0 the rest. The sections sum to R/2. The first R dims of each
//   head rotate like RotaryEmbedding: pairs (j, j + R/2), or (2j, 2j+1)
//   with interleaved=1; the rest pass through.
// Expressed in standard ONNX ops (Expansion.h): the caches gathered at the
// three position rows, one axis picked per frequency (a constant one-hot
// mask and a sum), and the rotation GroupQueryAttention uses.
//
//===----------------------------------------------------------------------===//

#include "Expansion.h"
#include "GraphImporter.h"

using namespace mlir;
using namespace moec::onnximport;

namespace {
LogicalResult importMRotaryEmbedding(GraphImporter &gi) {
  if (!gi.hasInputs(4))
    return gi.fail("needs input, position_ids, cos_cache and sin_cache");
  if (int64_t p = gi.intAttr("is_packed_batching", 0); p != 0)
    return gi.fail("attribute is_packed_batching=" + Twine(p) +
                   " is not supported");
  int64_t layout = gi.intAttr("mrope_layout", 0);
  if (layout != 0 && layout != 1)
    return gi.fail("attribute mrope_layout=" + Twine(layout) +
                   " is not supported (0, 1)");
  bool interleaved = gi.intAttr("interleaved", 0) != 0;
  std::vector<int64_t> section = gi.intsAttr("mrope_section");
  if (section.size() != 3)
    return gi.fail("attribute mrope_section must have 3 values");
  RankedTensorType xt = gi.inputType(0), pt = gi.inputType(1),
                   ct = gi.inputType(2);
  if (!xt.hasStaticShape() || (xt.getRank() != 3 && xt.getRank() != 4))
    return gi.fail("input must be [batch, sequence, heads*head] or [batch, "
                   "heads, sequence, head] with static dims (fix them with "
                   "--input-shape)");
  bool flat = xt.getRank() == 3;
  int64_t b = xt.getDimSize(0), n, s, d;
  if (flat) {
    n = gi.intAttr("num_heads", 0);
    s = xt.getDimSize(1);
    if (n <= 0 || xt.getDimSize(2) % n != 0)
      return gi.fail("attribute num_heads=" + Twine(n) +
                     " must divide the input's last dim (" +
                     Twine(xt.getDimSize(2)) + ")");
    d = xt.getDimSize(2) / n;
  } else {
    n = xt.getDimSize(1), s = xt.getDimSize(2), d = xt.getDimSize(3);
  }
  int64_t r = gi.intAttr("rotary_embedding_dim", 0);
  if (r == 0)
    r = d;
  int64_t half = r / 2;
  if (r % 2 != 0 || r > d)
    return gi.fail("attribute rotary_embedding_dim=" + Twine(r) +
                   " must be even and at most the head dim (" + Twine(d) + ")");
  for (int64_t v : section)
    if (v < 0)
      return gi.fail("attribute mrope_section has an invalid value " +
                     Twine(v));
  if (section[0] + section[1] + section[2] != half)
    return gi.fail("attribute mrope_section must sum to rotary_embedding_dim "
                   "/ 2 (" +
                   Twine(half) + ")");
  if (pt.getRank() != 3 || pt.getDimSize(0) != 3 || pt.getDimSize(1) != b ||
      pt.getDimSize(2) != s)
    return gi.fail("position_ids must be [3, " + Twine(b) + ", " + Twine(s) +
                   "]");
  if (ct.getRank() != 2 || ct.getDimSize(1) != half || gi.inputType(3) != ct)
    return gi.fail("cos_cache and sin_cache must be [positions, " +
                   Twine(half) + "]");
  // The axis of each frequency.
  std::vector<int64_t> axis(half, 0);
  if (layout == 0) {
    for (int64_t j = 0, a = 0; a < 3; ++a)
      for (int64_t k = 0; k < section[a]; ++k)
        axis[j++] = a;
  } else {
    for (int64_t a = 1; a < 3; ++a)
      for (int64_t j = a; j < 3 * section[a] && j < half; j += 3)
        axis[j] = a;
  }
  int32_t dt = GraphImporter::onnxType(ct.getElementType());
  HostTensor mask = HostTensor::splat(dt, {3, 1, 1, half}, 0);
  for (int64_t j = 0; j < half; ++j)
    mask.f[axis[j] * half + j] = 1;

  Expansion ex(gi);
  std::string m = ex.constant(mask);
  // [3, B, S, half] -> [B, S, half], each frequency from its axis.
  auto pick = [&](const std::string &cache) {
    std::string g = ex.op("Gather", {cache, ex.in(1)});
    return ex.op(
        "ReduceSum", {ex.op("Mul", {g, m}), ex.ints({0})},
        [](onnx::NodeProto &p) { Expansion::setInt(p, "keepdims", 0); });
  };
  // rotate() takes [B, n, S, H] with angles [.., .., S, half]: a flat input
  // goes as [B, S, N, D] (its "n" the sequence) with angles [B, S, 1, half].
  std::vector<int64_t> cshape = flat ? std::vector<int64_t>{b, s, 1, half}
                                     : std::vector<int64_t>{b, 1, s, half};
  std::string c = ex.op("Reshape", {pick(ex.in(2)), ex.ints(cshape)});
  std::string sn = ex.op("Reshape", {pick(ex.in(3)), ex.ints(cshape)});
  std::string x = ex.in(0);
  if (flat)
    x = ex.op("Reshape", {x, ex.ints({b, s, n, d})});
  std::string y = flat ? rotate(ex, x, c, sn, b, s, n, half, d, interleaved)
                       : rotate(ex, x, c, sn, b, n, s, half, d, interleaved);
  if (flat)
    y = ex.op("Reshape", {y, ex.ints({b, s, n * d})});
  if (y.empty())
    return failure();
  return ex.output(0, y);
}
} // namespace

void moec::onnximport::addMRopeOps(OpTable &t) {
  t["com.microsoft::MRotaryEmbedding"] = importMRotaryEmbedding;
}
