//===- ImportGroupQueryAttention.cpp - com.microsoft.GroupQueryAttention --===//
//
// onnxruntime's fused attention with a KV cache, as onnxruntime-genai's
// model builder writes it (issue 18), expressed in standard ONNX ops
// (Expansion.h) with the shapes and the cache length known at compile time.
//
// Semantics (onnxruntime 1.32 CPU, checked on random data by
// test/moec/contrib-blocks.test; the probes are
// test/e2e/contrib_block_models.py):
//   inputs query [B,S,N*H] (or packed Q|K|V [B,S,(N+2K)*H] when key and
//   value are omitted), key/value [B,S,K*H], past_key/past_value [B,K,P,H],
//   seqlens_k [B] (total length - 1 per sequence), total_sequence_length T,
//   cos_cache/sin_cache [max positions, r/2], head_sink [N].
//   The past length is p = T - S (0 on the first prompt, S == T). New
//   positions are p .. p+S-1; with do_rotary the new q and k rotate by
//   them (the first r dims; halves, or even/odd pairs when
//   rotary_interleaved). One new token with seqlens_k known only when
//   running (a decode step) takes its position from seqlens_k (the cos
//   and sin rows gathered when running), so that a plan with a dynamic
//   cache length needs no constant folded from it.
//   Keys: the valid past then the new ones; query s sees the keys at
//   positions <= p + s and, with local_window_size W > 0, > p + s - W.
//   Head n uses KV head n / (N / K). scores = scale * q k^T (scale 0:
//   1/sqrt(H)), then softcap * tanh(scores / softcap) when softcap > 0;
//   softmax over the keys, with exp(head_sink[n]) (or exp(0) for
//   smooth_softmax) added to the denominator.
//   present_key/value: past then new, [B,K,P+S,H]; with
//   sliding_window_cache the cache keeps its capacity P: the last min(T,P)
//   keys from slot 0 on, zeros after them.
// Compile-time requirements, each an error naming the node otherwise: T
// is known (the builder computes it from the attention mask's shape: fix
// the shapes with --input-shape); the past holds exactly p positions
// (sliding_window_cache: at most P); no position_ids or attention_bias;
// seqlens_k, when known, is T - 1 for every sequence. When it is not known
// (the builder sums the attention mask) the plan checks it when it runs: a
// padded batch (a mask with zeros) stops the run with an error naming the
// check (it is not modelled).
//
//===----------------------------------------------------------------------===//

#include "Expansion.h"
#include "GraphImporter.h"

#include <cmath>

using namespace mlir;
using namespace moec::onnximport;

namespace {
using Attrs = Expansion::Attrs;

Attrs axesAttr(std::vector<int64_t> perm, const char *name = "perm") {
  return [=](onnx::NodeProto &n) { Expansion::setInts(n, name, perm); };
}
Attrs axisAttr(int64_t axis) {
  return [=](onnx::NodeProto &n) { Expansion::setInt(n, "axis", axis); };
}

/// x[..., lo:hi] along `axis` with constant bounds.
std::string slice(Expansion &ex, const std::string &x, int64_t axis, int64_t lo,
                  int64_t hi) {
  return ex.op("Slice", {x, ex.ints({lo}), ex.ints({hi}), ex.ints({axis})});
}

} // namespace

// Declared in Expansion.h (MRotaryEmbedding uses it too).
std::string moec::onnximport::rotate(Expansion &ex, const std::string &x,
                                     const std::string &c, const std::string &s,
                                     int64_t b, int64_t n, int64_t seq,
                                     int64_t half, int64_t h,
                                     bool interleaved) {
  int64_t r = 2 * half;
  std::string xr = r == h ? x : slice(ex, x, 3, 0, r);
  std::string x1, x2, cc = c, ss = s;
  if (interleaved) {
    // Pairs (2i, 2i+1): [B, n, S, half, 2].
    xr = ex.op("Reshape", {xr, ex.ints({b, n, seq, half, 2})});
    x1 = slice(ex, xr, 4, 0, 1);
    x2 = slice(ex, xr, 4, 1, 2);
    cc = ex.op("Unsqueeze", {c, ex.ints({-1})});
    ss = ex.op("Unsqueeze", {s, ex.ints({-1})});
  } else {
    x1 = slice(ex, xr, 3, 0, half);
    x2 = slice(ex, xr, 3, half, r);
  }
  std::string y1 =
      ex.op("Sub", {ex.op("Mul", {x1, cc}), ex.op("Mul", {x2, ss})});
  std::string y2 =
      ex.op("Add", {ex.op("Mul", {x2, cc}), ex.op("Mul", {x1, ss})});
  std::string y = ex.op("Concat", {y1, y2}, axisAttr(interleaved ? 4 : 3));
  if (interleaved)
    y = ex.op("Reshape", {y, ex.ints({b, n, seq, r})});
  if (r == h)
    return y;
  return ex.op("Concat", {y, slice(ex, x, 3, r, h)}, axisAttr(3));
}

namespace {
LogicalResult importGroupQueryAttention(GraphImporter &gi) {
  if (gi.numInputs() < 7 || !gi.hasInput(0) || !gi.hasInput(5) ||
      !gi.hasInput(6))
    return gi.fail("needs query, key, value, past_key, past_value, "
                   "seqlens_k and total_sequence_length (key and value may "
                   "be empty: packed QKV)");
  for (const char *a : {"qk_output", "kv_share_buffer_with_past"})
    if (gi.intAttr(a, 0) != 0)
      return gi.fail(std::string("attribute ") + a + "=" +
                     std::to_string(gi.intAttr(a, 0)) + " is not supported");
  if (gi.hasInput(9))
    return gi.fail("position_ids (input 9) is not supported: positions are "
                   "taken from the past length");
  if (gi.hasInput(10))
    return gi.fail("attention_bias (input 10) is not supported");
  int64_t nh = gi.intAttr("num_heads", 0), kvh = gi.intAttr("kv_num_heads", 0);
  if (nh <= 0 || kvh <= 0 || nh % kvh != 0)
    return gi.fail("num_heads=" + Twine(nh) +
                   " must be a positive multiple "
                   "of kv_num_heads=" +
                   Twine(kvh));
  RankedTensorType qt = gi.inputType(0);
  if (qt.getRank() != 3 || !qt.hasStaticShape())
    return gi.fail("query must be [batch, sequence, hidden] with static dims "
                   "(fix them with --input-shape)");
  auto elt = dyn_cast<FloatType>(qt.getElementType());
  if (!elt || !elt.isF32())
    return gi.fail("only float32 attention is supported");
  int32_t dt = GraphImporter::onnxType(elt);
  int64_t b = qt.getDimSize(0), seq = qt.getDimSize(1), hid = qt.getDimSize(2);
  bool packed = !gi.hasInput(1);
  if (packed != !gi.hasInput(2))
    return gi.fail("key and value must both be given or both be empty");
  int64_t h = packed ? hid / (nh + 2 * kvh) : hid / nh;
  if (h <= 0 || (packed ? h * (nh + 2 * kvh) : h * nh) != hid)
    return gi.fail("query's last dim " + Twine(hid) + " is not " +
                   (packed ? "(num_heads + 2 kv_num_heads)" : "num_heads") +
                   " x head size");
  for (unsigned i : {1u, 2u})
    if (!packed) {
      RankedTensorType t = gi.inputType(i);
      if (t.getRank() != 3 || !t.hasStaticShape() || t.getDimSize(0) != b ||
          t.getDimSize(1) != seq || t.getDimSize(2) != kvh * h ||
          t.getElementType() != elt)
        return gi.fail(Twine(i == 1 ? "key" : "value") + " must be [" +
                       Twine(b) + ", " + Twine(seq) + ", " + Twine(kvh * h) +
                       "] float32");
    }
  // The past: [B, K, P, H] (P may be 0), or none.
  int64_t cap = 0;
  bool hasPast = gi.hasInput(3);
  if (hasPast != gi.hasInput(4))
    return gi.fail("past_key and past_value must both be given or both be "
                   "empty");
  if (hasPast)
    for (unsigned i : {3u, 4u}) {
      RankedTensorType t = gi.inputType(i);
      if (t.getRank() != 4 || !t.hasStaticShape() || t.getDimSize(0) != b ||
          t.getDimSize(1) != kvh || t.getDimSize(3) != h ||
          t.getElementType() != elt)
        return gi.fail(Twine(i == 3 ? "past_key" : "past_value") +
                       " must be [" + Twine(b) + ", " + Twine(kvh) +
                       ", past, " + Twine(h) +
                       "] float32 with static dims (fix them with "
                       "--input-shape)");
      cap = t.getDimSize(2);
    }
  const HostTensor *totalT = gi.inputConst(6);
  if (!totalT || totalT->size() != 1)
    return gi.fail("total_sequence_length must be known when compiling (the "
                   "builder computes it from the attention mask's shape: fix "
                   "the shapes with --input-shape)");
  int64_t total = totalT->asInt(0), past = total - seq;
  if (past < 0)
    return gi.fail("total_sequence_length " + Twine(total) +
                   " is less than the sequence length " + Twine(seq));
  if (const HostTensor *sl = gi.inputConst(5))
    for (int64_t i = 0; i < sl->size(); ++i)
      if (sl->asInt(i) != total - 1)
        return gi.fail("seqlens_k[" + Twine(i) + "] = " + Twine(sl->asInt(i)) +
                       " but total_sequence_length - 1 "
                       "= " +
                       Twine(total - 1) +
                       ": padded sequences are not supported");
  bool windowCache = gi.intAttr("sliding_window_cache", 0) != 0;
  int64_t valid = windowCache ? std::min(past, cap) : past;
  if (!windowCache && cap != past)
    return gi.fail("past_key holds " + Twine(cap) +
                   " positions but total_sequence_length - sequence length "
                   "is " +
                   Twine(past) +
                   " (a shared past/present buffer is not supported)");
  int64_t window = gi.intAttr("local_window_size", -1);
  // onnxruntime refuses a sliding-window cache smaller than the window
  // ("KV cache capacity (0) must be at least local_window_size (4)").
  if (windowCache && window > 0 && cap < window)
    return gi.fail("sliding_window_cache: past_key holds " + Twine(cap) +
                   " positions, fewer than local_window_size " + Twine(window) +
                   " (the cache's capacity; onnxruntime refuses it too)");
  double softcap = gi.floatAttr("softcap", 0.0);
  double scale = gi.floatAttr("scale", 0.0);
  if (scale == 0.0)
    scale = 1.0 / std::sqrt(double(h));
  bool rotary = gi.intAttr("do_rotary", 0) != 0;
  bool interleaved = gi.intAttr("rotary_interleaved", 0) != 0;
  bool smooth = gi.intAttr("smooth_softmax", 0) != 0;
  int64_t half = 0;
  if (rotary) {
    if (!gi.hasInput(7) || !gi.hasInput(8))
      return gi.fail("do_rotary=1 needs cos_cache and sin_cache");
    RankedTensorType ct = gi.inputType(7);
    if (ct.getRank() != 2 || !ct.hasStaticShape() || ct != gi.inputType(8) ||
        ct.getElementType() != elt)
      return gi.fail("cos_cache and sin_cache must be [positions, rotary "
                     "dim / 2] float32 of one shape");
    half = ct.getDimSize(1);
    if (half <= 0 || 2 * half > h)
      return gi.fail("the rotary dim 2 x " + Twine(half) +
                     " exceeds the head size " + Twine(h));
    if (ct.getDimSize(0) < total)
      return gi.fail("cos_cache has " + Twine(ct.getDimSize(0)) +
                     " positions, fewer than total_sequence_length " +
                     Twine(total));
  }
  if (gi.hasInput(11)) {
    RankedTensorType st = gi.inputType(11);
    if (st.getRank() != 1 || st.getDimSize(0) != nh ||
        st.getElementType() != elt)
      return gi.fail("head_sink must be [" + Twine(nh) + "] float32");
  }

  Expansion ex(gi);
  auto heads = [&](const std::string &x, int64_t n) {
    std::string r = ex.op("Reshape", {x, ex.ints({b, seq, n, h})});
    return ex.op("Transpose", {r}, axesAttr({0, 2, 1, 3}));
  };
  std::string q, k, v;
  if (packed) {
    std::vector<std::string> qkv =
        ex.ops("Split", {ex.in(0), ex.ints({nh * h, kvh * h, kvh * h})}, 3,
               axisAttr(2));
    if (qkv.empty())
      return failure();
    q = qkv[0], k = qkv[1], v = qkv[2];
  } else {
    q = ex.in(0), k = ex.in(1), v = ex.in(2);
  }
  q = heads(q, nh);
  k = heads(k, kvh);
  v = heads(v, kvh);
  if (rotary) {
    std::string c, s;
    if (seq == 1 && !gi.inputConst(5)) {
      // One new token (a decode step) at position seqlens_k[b]: the rows
      // are gathered when running, so that the position is data, not a
      // constant folded from the cache's length (a plan with a dynamic
      // cache length serves every position).
      std::string pos = ex.op("Cast", {ex.in(5)}, [](onnx::NodeProto &n) {
        Expansion::setInt(n, "to", onnx::TensorProto_DataType_INT64);
      });
      auto rows = [&](const std::string &cache) {
        std::string g = ex.op("Gather", {cache, pos}, axisAttr(0));
        return ex.op("Reshape", {g, ex.ints({b, 1, 1, half})});
      };
      c = rows(ex.in(7));
      s = rows(ex.in(8));
    } else {
      c = slice(ex, ex.in(7), 0, past, total);
      s = slice(ex, ex.in(8), 0, past, total);
    }
    q = moec::onnximport::rotate(ex, q, c, s, b, nh, seq, half, h, interleaved);
    k = moec::onnximport::rotate(ex, k, c, s, b, kvh, seq, half, h,
                                 interleaved);
  }
  // Keys and values: the valid past slots, then the new ones.
  int64_t len = valid + seq;
  std::string keys = k, vals = v;
  if (valid > 0) {
    std::string pk = ex.in(3), pv = ex.in(4);
    if (valid < cap) {
      pk = slice(ex, pk, 2, 0, valid);
      pv = slice(ex, pv, 2, 0, valid);
    }
    keys = ex.op("Concat", {pk, k}, axisAttr(2));
    vals = ex.op("Concat", {pv, v}, axisAttr(2));
  }
  std::string presentK = keys, presentV = vals;
  if (windowCache) {
    int64_t keep = std::min(len, cap);
    if (keep < len) {
      presentK = slice(ex, keys, 2, len - keep, len);
      presentV = slice(ex, vals, 2, len - keep, len);
    }
    if (keep < cap) {
      std::string z = ex.splat(dt, {b, kvh, cap - keep, h}, 0.0);
      presentK = ex.op("Concat", {presentK, z}, axisAttr(2));
      presentV = ex.op("Concat", {presentV, z}, axisAttr(2));
    }
  }
  // Query heads share KV heads in groups of N / K.
  if (nh != kvh) {
    int64_t g = nh / kvh;
    auto expand = [&](const std::string &x) {
      std::string u = ex.op("Unsqueeze", {x, ex.ints({2})});
      std::string e = ex.op("Expand", {u, ex.ints({b, kvh, g, len, h})});
      return ex.op("Reshape", {e, ex.ints({b, nh, len, h})});
    };
    keys = expand(keys);
    vals = expand(vals);
  }
  std::string kt = ex.op("Transpose", {keys}, axesAttr({0, 1, 3, 2}));
  std::string scores = ex.op("MatMul", {q, kt});
  scores = ex.op("Mul", {scores, ex.splat(dt, {}, scale)});
  if (softcap > 0) {
    scores = ex.op("Mul", {scores, ex.splat(dt, {}, 1.0 / softcap)});
    scores = ex.op("Tanh", {scores});
    scores = ex.op("Mul", {scores, ex.splat(dt, {}, softcap)});
  }
  // Causal (and windowed) visibility of key i (position past - valid + i)
  // from query s (position past + s), as an additive bias.
  HostTensor mask = HostTensor::splat(dt, {seq, len}, 0.0);
  bool masked = false;
  for (int64_t s = 0; s < seq; ++s)
    for (int64_t i = 0; i < len; ++i) {
      int64_t me = past + s, pos = past - valid + i;
      bool see = pos <= me && (window <= 0 || pos > me - window);
      if (!see) {
        mask.f[size_t(s * len + i)] = -1e30;
        masked = true;
      }
    }
  if (masked)
    scores = ex.op("Add", {scores, ex.constant(mask)});
  std::string probs;
  if (gi.hasInput(11) || smooth) {
    // The sink: one more logit per head that takes part in the softmax's
    // denominator only.
    std::string sink = gi.hasInput(11) ? ex.in(11) : ex.splat(dt, {nh}, 0.0);
    sink = ex.op("Reshape", {sink, ex.ints({1, nh, 1, 1})});
    sink = ex.op("Expand", {sink, ex.ints({b, nh, seq, 1})});
    std::string all = ex.op("Concat", {scores, sink}, axisAttr(3));
    probs = slice(ex, ex.op("Softmax", {all}, axisAttr(3)), 3, 0, len);
  } else {
    probs = ex.op("Softmax", {scores}, axisAttr(3));
  }
  std::string out = ex.op("MatMul", {probs, vals});
  out = ex.op("Transpose", {out}, axesAttr({0, 2, 1, 3}));
  out = ex.op("Reshape", {out, ex.ints({b, seq, nh * h})});
  if (gi.hasInput(5) && !gi.inputConst(5) && !out.empty()) {
    // seqlens_k known only when running: check that it is T - 1 for every
    // sequence. A ScatterElements into one element at index 2 * (seqlens_k
    // - (T - 1)) is in range only when it is 0; otherwise the run stops
    // with an index error at this step, whose name says why. Its result
    // (a zero) is added to the output so that the check stays in the plan.
    std::string d = ex.op("Cast", {ex.in(5)}, [](onnx::NodeProto &n) {
      Expansion::setInt(n, "to", onnx::TensorProto_DataType_INT64);
    });
    d = ex.op("Sub", {d, ex.ints({total - 1})});
    d = ex.op("Mul", {d, ex.ints({2})});
    std::string name = gi.node().name() +
                       "/moec.check: seqlens_k must be total_sequence_length "
                       "- 1 (padded batches are not supported)";
    std::string zero = ex.op(
        "ScatterElements", {ex.splat(dt, {1}, 0.0), d, ex.splat(dt, {b}, 0.0)},
        [&](onnx::NodeProto &n) { n.set_name(name); });
    out = ex.op("Add", {out, zero});
  }
  if (out.empty() || presentK.empty() || presentV.empty())
    return failure();
  if (failed(ex.output(0, out)))
    return failure();
  if (gi.hasOutput(1) && failed(ex.output(1, presentK)))
    return failure();
  if (gi.hasOutput(2) && failed(ex.output(2, presentV)))
    return failure();
  if (gi.hasOutput(3))
    return gi.fail("output 3 (output_qk) is not supported");
  return success();
}
} // namespace

void moec::onnximport::addAttentionOps(OpTable &t) {
  t["com.microsoft::GroupQueryAttention"] = importGroupQueryAttention;
}
