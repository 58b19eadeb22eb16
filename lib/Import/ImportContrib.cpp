//===- ImportContrib.cpp - onnxruntime contrib ops ------------------------===//
//
// The onnxruntime contrib ops that onnxruntime-genai's model builder writes
// (issue 18), decomposed into the linalg forms the other handlers build.
// Semantics as onnxruntime 1.32's CPU kernels compute them (checked on
// random data, see test/moec/Inputs/make_contrib_models.py):
//
//  * SimplifiedLayerNormalization (default domain, as onnxruntime registers
//    it, and com.microsoft): RMS normalization over dims axis..rank-1,
//      inv_std_var = 1 / sqrt(mean(x^2) + epsilon), Y = x * inv_std_var *
//      scale,
//    computed in stash_type (float by default); inv_std_var keeps the
//    normalized dims as size 1.
//  * SkipSimplifiedLayerNormalization (com.microsoft): s = input + skip
//    (+ bias), output = RMSNorm(s) * gamma over the last dim; outputs
//    output, mean (not computed by RMS normalization: refused), inv_std_var,
//    input_skip_bias_sum = s.
//  * SkipLayerNormalization (com.microsoft): s as above, output =
//    (s - mean) * inv_std_var * gamma (+ beta); all four outputs.
//    Both skip ops: epsilon defaults to 1e-12, skip may be [B, S, H],
//    [1, S, H] or [S, H] (it broadcasts to the input's shape).
//  * FastGelu: y = 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))), v = x
//    (+ bias); BiasGelu and Gelu (com.microsoft): the erf form of a + b and
//    of x; QuickGelu: x * sigmoid(alpha x), alpha = 1.702 by default.
//  * RotaryEmbedding (com.microsoft): see importRotary.
//
//===----------------------------------------------------------------------===//

#include "GraphImporter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include "onnx/defs/schema.h"
#include "onnx/defs/shape_inference.h"

#include <cmath>

using namespace mlir;
using namespace moec::onnximport;

namespace {
using Shape = SmallVector<int64_t>;

Value fconst(OpBuilder &b, Location l, Type t, double v) {
  return arith::ConstantOp::create(b, l, FloatAttr::get(t, v));
}

/// `a op b` element by element (numpy broadcasting).
/// fn(a, b) broadcast element by element; null (the node's error reported)
/// when the shapes do not broadcast.
Value binary(GraphImporter &gi, Value a, Value b, Type elt,
             function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
  FailureOr<Value> r = gi.elementwise(
      ValueRange{a, b}, elt, [&](OpBuilder &bb, Location l, ValueRange v) {
        return fn(bb, l, v[0], v[1]);
      });
  return succeeded(r) ? *r : Value();
}

Value addF(OpBuilder &b, Location l, Value x, Value y) {
  return arith::AddFOp::create(b, l, x, y);
}
Value subF(OpBuilder &b, Location l, Value x, Value y) {
  return arith::SubFOp::create(b, l, x, y);
}
Value mulF(OpBuilder &b, Location l, Value x, Value y) {
  return arith::MulFOp::create(b, l, x, y);
}

/// 1 / sqrt(m + eps) element by element.
Value invSqrt(GraphImporter &gi, Value m, Type st, double eps) {
  return *gi.elementwise(
      ValueRange{m}, st, [&](OpBuilder &bb, Location l, ValueRange a) {
        return Value(math::RsqrtOp::create(
            bb, l, arith::AddFOp::create(bb, l, a[0], fconst(bb, l, st, eps))));
      });
}

/// Fails naming the output when output `i` is used: `why` says why it is
/// not computed.
LogicalResult refuseOutput(GraphImporter &gi, unsigned i, StringRef name,
                           StringRef why) {
  if (!gi.hasOutput(i))
    return success();
  return gi.fail("output " + Twine(i) + " ('" + name + "') is used, but " +
                 why);
}

/// The type normalization statistics are computed in: float for 16-bit
/// inputs (as onnxruntime's kernels do), else the input's type.
Type statType(GraphImporter &gi, Type elt) {
  if (elt.isF16() || elt.isBF16())
    return gi.builder().getF32Type();
  return elt;
}

/// Checks that `name` (input `i`) is a 1-D [hidden] tensor of `elt`.
LogicalResult checkVector(GraphImporter &gi, unsigned i, StringRef name,
                          int64_t hidden, Type elt) {
  RankedTensorType t = gi.inputType(i);
  if (t.getElementType() != elt)
    return gi.fail(name + " has a different element type than the input");
  if (t.getRank() != 1 ||
      (!t.isDynamicDim(0) && !ShapedType::isDynamic(hidden) &&
       t.getDimSize(0) != hidden))
    return gi.fail(name + " must be a 1-D tensor of the hidden size " +
                   Twine(hidden));
  return success();
}

LogicalResult importSimplifiedLayerNorm(GraphImporter &gi) {
  if (gi.numInputs() != 2 || !gi.hasInputs(2))
    return gi.fail("expects 2 inputs (X, scale)");
  if (gi.numOutputs() > 2)
    return gi.fail("has " + Twine(gi.numOutputs()) +
                   " outputs; SimplifiedLayerNormalization has Y and "
                   "inv_std_var only");
  RankedTensorType t = gi.inputType(0);
  int64_t rank = t.getRank();
  Type elt = t.getElementType();
  if (!isa<FloatType>(elt))
    return gi.fail("only float inputs are supported");
  if (gi.inputType(1).getElementType() != elt)
    return gi.fail("scale has a different element type than X");
  int64_t axis = gi.intAttr("axis", -1);
  if (rank == 0 || axis < -rank || axis >= rank)
    return gi.fail("attribute axis=" + Twine(axis) +
                   " is out of range for rank " + Twine(rank));
  if (axis < 0)
    axis += rank;
  int64_t stash = gi.intAttr("stash_type", 1);
  Type st = gi.elementType(int32_t(stash));
  if (!st || !isa<FloatType>(st))
    return gi.fail("attribute stash_type=" + Twine(stash) +
                   " is not a float type");
  double eps = gi.floatAttr("epsilon", 1e-5);
  SmallVector<int64_t> axes;
  for (int64_t d = axis; d < rank; ++d)
    axes.push_back(d);
  Value x = gi.castTensor(gi.input(0), st);
  Value sq = binary(gi, x, x, st, mulF);
  Value inv = invSqrt(gi, reduceMeanKeepDims(gi, sq, axes), st, eps);
  Value y = gi.castTensor(binary(gi, x, inv, st, mulF), elt);
  FailureOr<Value> out =
      gi.elementwise(ValueRange{y, gi.input(1)}, elt,
                     [](OpBuilder &bb, Location l, ValueRange a) {
                       return mulF(bb, l, a[0], a[1]);
                     });
  if (failed(out))
    return failure();
  auto ot = cast<RankedTensorType>(out->getType());
  bool same = ot.getRank() == rank;
  for (int64_t d = 0; same && d < rank; ++d)
    same = t.isDynamicDim(d) || ot.getDimSize(d) == t.getDimSize(d);
  if (!same)
    return gi.fail("scale would broadcast X to a larger shape");
  gi.setOutput(0, *out);
  gi.setOutput(1, inv);
  return success();
}

/// SkipLayerNormalization (`simplified` false) and
/// SkipSimplifiedLayerNormalization (true).
LogicalResult importSkipLayerNorm(GraphImporter &gi, bool simplified) {
  // Inputs: input, skip, gamma, [beta] (not in the simplified op), [bias].
  unsigned kBias = simplified ? 3 : 4, kBeta = 3;
  if (!gi.hasInputs(3) || gi.numInputs() > kBias + 1)
    return gi.fail(simplified
                       ? "expects 3 or 4 inputs (input, skip, gamma, [bias])"
                       : "expects 3 to 5 inputs (input, skip, gamma, [beta], "
                         "[bias])");
  if (gi.numOutputs() > 4)
    return gi.fail("has " + Twine(gi.numOutputs()) +
                   " outputs; the op has at most 4 (output, mean, "
                   "inv_std_var, input_skip_bias_sum)");
  if (simplified &&
      failed(refuseOutput(gi, 1, "mean",
                          "RMS normalization computes no mean (onnxruntime "
                          "leaves it unspecified)")))
    return failure();
  RankedTensorType t = gi.inputType(0);
  Type elt = t.getElementType();
  if (!isa<FloatType>(elt))
    return gi.fail("only float inputs are supported");
  int64_t rank = t.getRank();
  if (rank < 2)
    return gi.fail("input must have rank 2 or 3, got " + Twine(rank));
  int64_t hidden = t.getDimSize(rank - 1);
  RankedTensorType skT = gi.inputType(1);
  if (skT.getElementType() != elt)
    return gi.fail("skip has a different element type than the input");
  if (skT.getRank() > rank)
    return gi.fail("skip has a higher rank than the input");
  if (failed(checkVector(gi, 2, "gamma", hidden, elt)))
    return failure();
  bool haveBeta = !simplified && gi.hasInput(kBeta);
  bool haveBias = gi.hasInput(kBias);
  if (haveBeta && failed(checkVector(gi, kBeta, "beta", hidden, elt)))
    return failure();
  if (haveBias && failed(checkVector(gi, kBias, "bias", hidden, elt)))
    return failure();
  double eps = gi.floatAttr("epsilon", 1e-12);

  // input + skip: independent graph inputs, whose shapes may not broadcast.
  Value s = binary(gi, gi.input(0), gi.input(1), elt, addF);
  if (!s)
    return failure();
  auto sT = cast<RankedTensorType>(s.getType());
  bool same = sT.getRank() == rank;
  for (int64_t d = 0; same && d < rank; ++d)
    same = t.isDynamicDim(d) || sT.getDimSize(d) == t.getDimSize(d);
  if (!same)
    return gi.fail("skip does not broadcast to the input's shape");
  if (haveBias)
    s = binary(gi, s, gi.input(kBias), elt, addF);
  Type st = statType(gi, elt);
  Value x = gi.castTensor(s, st);
  SmallVector<int64_t> axes = {rank - 1};
  Value mean, centered = x;
  if (!simplified) {
    mean = reduceMeanKeepDims(gi, x, axes);
    centered = binary(gi, x, mean, st, subF);
  }
  Value sq = binary(gi, centered, centered, st, mulF);
  Value inv = invSqrt(gi, reduceMeanKeepDims(gi, sq, axes), st, eps);
  Value y = gi.castTensor(binary(gi, centered, inv, st, mulF), elt);
  y = binary(gi, y, gi.input(2), elt, mulF);
  if (haveBeta)
    y = binary(gi, y, gi.input(kBeta), elt, addF);
  gi.setOutput(0, y);
  if (mean)
    gi.setOutput(1, mean);
  gi.setOutput(2, inv);
  gi.setOutput(3, s);
  return success();
}

//===----------------------------------------------------------------------===//
// Gelu variants
//===----------------------------------------------------------------------===//

/// 0.5 v (1 + erf(v / sqrt(2))).
Value geluErf(OpBuilder &b, Location l, Value v) {
  Type ty = v.getType();
  Value e = math::ErfOp::create(
      b, l, arith::MulFOp::create(b, l, v, fconst(b, l, ty, M_SQRT1_2)));
  Value p = arith::AddFOp::create(b, l, e, fconst(b, l, ty, 1.0));
  return arith::MulFOp::create(
      b, l, arith::MulFOp::create(b, l, v, fconst(b, l, ty, 0.5)), p);
}

/// 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))).
Value geluTanh(OpBuilder &b, Location l, Value v) {
  Type ty = v.getType();
  Value v3 = arith::MulFOp::create(b, l, arith::MulFOp::create(b, l, v, v), v);
  Value in = arith::AddFOp::create(
      b, l, v, arith::MulFOp::create(b, l, v3, fconst(b, l, ty, 0.044715)));
  Value th = math::TanhOp::create(
      b, l,
      arith::MulFOp::create(b, l, in,
                            fconst(b, l, ty, 0.79788456080286535588)));
  Value p = arith::AddFOp::create(b, l, th, fconst(b, l, ty, 1.0));
  return arith::MulFOp::create(
      b, l, arith::MulFOp::create(b, l, v, fconst(b, l, ty, 0.5)), p);
}

/// An activation of input 0, plus input 1 first when given (`bias`: 0 no,
/// 1 optional, 2 required).
LogicalResult
importActivation(GraphImporter &gi, int bias,
                 function_ref<Value(OpBuilder &, Location, Value)> fn) {
  unsigned maxIn = bias ? 2 : 1, minIn = bias == 2 ? 2 : 1;
  if (!gi.hasInputs(minIn) || gi.numInputs() > maxIn)
    return gi.fail(bias == 2   ? "expects 2 inputs"
                   : bias == 1 ? "expects 1 or 2 inputs (X, [bias])"
                               : "expects 1 input");
  RankedTensorType t = gi.inputType(0);
  Type elt = t.getElementType();
  if (!isa<FloatType>(elt))
    return gi.fail("only float inputs are supported");
  SmallVector<Value> ins = {gi.input(0)};
  if (gi.numInputs() == 2) {
    RankedTensorType bt = gi.inputType(1);
    if (bt.getElementType() != elt)
      return gi.fail("the bias has a different element type than the input");
    if (bt.getRank() != 1 ||
        (!bt.isDynamicDim(0) && t.getRank() > 0 &&
         !t.isDynamicDim(t.getRank() - 1) &&
         bt.getDimSize(0) != t.getDimSize(t.getRank() - 1)))
      return gi.fail("the bias must be a 1-D tensor of the input's last dim");
    ins.push_back(gi.input(1));
  }
  FailureOr<Value> r =
      gi.elementwise(ins, elt, [&](OpBuilder &b, Location l, ValueRange a) {
        Value v = a.size() == 2 ? addF(b, l, a[0], a[1]) : a[0];
        return fn(b, l, v);
      });
  if (failed(r))
    return failure();
  gi.setOutput(0, *r);
  return success();
}

LogicalResult importQuickGelu(GraphImporter &gi) {
  double alpha = gi.floatAttr("alpha", 1.702);
  if (!std::isfinite(alpha))
    return gi.fail("attribute alpha=" + std::to_string(alpha) +
                   " must be finite");
  return importActivation(gi, 0, [&](OpBuilder &b, Location l, Value v) {
    Type ty = v.getType();
    Value one = fconst(b, l, ty, 1.0);
    Value ax = arith::MulFOp::create(b, l, v, fconst(b, l, ty, alpha));
    Value e = math::ExpOp::create(b, l, arith::NegFOp::create(b, l, ax));
    Value sig =
        arith::DivFOp::create(b, l, one, arith::AddFOp::create(b, l, one, e));
    return Value(arith::MulFOp::create(b, l, v, sig));
  });
}

//===----------------------------------------------------------------------===//
// RotaryEmbedding
//===----------------------------------------------------------------------===//

/// com.microsoft.RotaryEmbedding(input, position_ids, cos_cache, sin_cache).
/// The input is [B, S, N * H] or [B, N, S, H]; the first `rot` lanes of
/// every head (rotary_embedding_dim, or all H) rotate, the rest pass
/// through. With p the position (position_ids[0] + s for a one-element
/// position_ids, else position_ids[b, s]), c = cos_cache[p], d =
/// sin_cache[p] (rot / 2 entries each), and h = rot / 2:
///   halves (interleaved = 0): y[i] = x[i] c[i] - x[i + h] d[i] and
///     y[i + h] = x[i + h] c[i] + x[i] d[i], for i < h;
///   interleaved = 1: y[2k] = x[2k] c[k] - x[2k+1] d[k] and
///     y[2k+1] = x[2k+1] c[k] + x[2k] d[k].
/// One linalg.generic over the output; it reads the partner lane, the
/// position and the caches with tensor.extract. Positions outside the cache
/// (undefined in onnxruntime) are clamped into it. `scale` only matters
/// when onnxruntime would extend the caches, which its CPU kernel does not
/// do: it is accepted and has no effect, as there.
LogicalResult importRotaryEmbedding(GraphImporter &gi) {
  enum { kInput, kPos, kCos, kSin };
  if (gi.numInputs() != 4 || !gi.hasInput(kPos))
    return gi.fail("expects 4 inputs (input, position_ids, cos_cache, "
                   "sin_cache)");
  int64_t interleaved = gi.intAttr("interleaved", 0);
  if (interleaved != 0 && interleaved != 1)
    return gi.fail("attribute interleaved=" + Twine(interleaved) +
                   " is not 0 or 1");
  if (int64_t packed = gi.intAttr("is_packed_batching", 0); packed != 0)
    return gi.fail("attribute is_packed_batching=" + Twine(packed) +
                   " (ragged batches) is not supported");
  int64_t numHeads = gi.intAttr("num_heads", 0);
  int64_t rotAttr = gi.intAttr("rotary_embedding_dim", 0);
  if (numHeads < 0)
    return gi.fail("attribute num_heads=" + Twine(numHeads) +
                   " must not be negative");
  if (rotAttr < 0)
    return gi.fail("attribute rotary_embedding_dim=" + Twine(rotAttr) +
                   " must not be negative");
  if (rotAttr > 0 && numHeads == 0)
    return gi.fail("attribute rotary_embedding_dim needs num_heads");
  if (!std::isfinite(gi.floatAttr("scale", 1.0)))
    return gi.fail("attribute scale must be finite");

  RankedTensorType xT = gi.inputType(kInput), pT = gi.inputType(kPos),
                   cT = gi.inputType(kCos), sT = gi.inputType(kSin);
  Type elt = xT.getElementType();
  if (!isa<FloatType>(elt))
    return gi.fail("only float inputs are supported");
  if (cT.getElementType() != elt || sT.getElementType() != elt)
    return gi.fail("cos_cache and sin_cache must have the input's element "
                   "type");
  int64_t rank = xT.getRank();
  if (rank != 3 && rank != 4)
    return gi.fail("input must be [batch, seq, hidden] or [batch, heads, "
                   "seq, head_size], got rank " +
                   Twine(rank));
  if (xT.isDynamicDim(rank - 1) || (rank == 4 && xT.isDynamicDim(1)))
    return gi.fail("the input's head and hidden dims must be static");
  if (cT.getRank() != 2 || sT.getRank() != 2 || cT.isDynamicDim(1) ||
      cT.getShape() != sT.getShape())
    return gi.fail("cos_cache and sin_cache must be [max_seq, dim / 2] "
                   "tensors of one shape, the last dim static");
  int64_t half = cT.getDimSize(1);
  int64_t headSize;
  if (rank == 4) {
    int64_t heads = xT.getDimSize(1);
    headSize = xT.getDimSize(3);
    if (numHeads != 0 && numHeads != heads)
      return gi.fail("attribute num_heads=" + Twine(numHeads) +
                     " differs from the input's " + Twine(heads) + " heads");
  } else {
    int64_t hidden = xT.getDimSize(2);
    headSize = rotAttr > 0 ? (numHeads ? hidden / numHeads : 0) : 2 * half;
    if (headSize == 0 || hidden % headSize != 0 ||
        (numHeads != 0 && numHeads * headSize != hidden))
      return gi.fail(
          "hidden size " + Twine(hidden) + " does not split into " +
          (numHeads ? std::to_string(numHeads) : std::string("whole")) +
          " heads of size " + Twine(headSize));
  }
  int64_t rot = rotAttr > 0 ? rotAttr : headSize;
  if (rot > headSize || rot % 2 != 0)
    return gi.fail("rotary_embedding_dim " + Twine(rot) +
                   " must be even and at most the head size " +
                   Twine(headSize));
  if (half != rot / 2)
    return gi.fail("cos_cache has " + Twine(half) +
                   " entries per position; rotating " + Twine(rot) +
                   " lanes takes " + Twine(rot / 2));
  if (!pT.getElementType().isInteger(64))
    return gi.fail("position_ids must be int64");
  bool offset =
      pT.hasStaticShape() && pT.getNumElements() == 1 && pT.getRank() <= 1;
  int64_t seqDim = rank == 4 ? 2 : 1;
  if (!offset) {
    auto matches = [&](int64_t pd, int64_t xd) {
      return pT.isDynamicDim(pd) || xT.isDynamicDim(xd) ||
             pT.getDimSize(pd) == xT.getDimSize(xd);
    };
    if (pT.getRank() != 2 || !matches(0, 0) || !matches(1, seqDim))
      return gi.fail("position_ids must hold one element (an offset) or be "
                     "[batch, seq]");
  }

  OpBuilder &b = gi.builder();
  Location loc = gi.loc();
  Value x = gi.input(kInput), pos = gi.input(kPos), cosC = gi.input(kCos),
        sinC = gi.input(kSin);
  Value maxPos = gi.dim(cosC, 0);
  Value init = gi.emptyLike(xT.getShape(), elt, ValueRange{x});
  SmallVector<AffineMap> maps(2, b.getMultiDimIdentityMap(rank));
  SmallVector<utils::IteratorType> iters(rank, utils::IteratorType::parallel);
  auto g = linalg::GenericOp::create(
      b, loc, TypeRange{init.getType()}, ValueRange{x}, ValueRange{init}, maps,
      iters, [&](OpBuilder &bb, Location l, ValueRange args) {
        auto cidx = [&](int64_t v) {
          return Value(arith::ConstantIndexOp::create(bb, l, v));
        };
        SmallVector<Value> idx;
        for (int64_t d = 0; d < rank; ++d)
          idx.push_back(linalg::IndexOp::create(bb, l, d));
        Value lastIdx = idx[rank - 1];
        // The lane within the head.
        Value lane =
            rank == 4
                ? lastIdx
                : Value(arith::RemUIOp::create(bb, l, lastIdx, cidx(headSize)));
        Value inRot = arith::CmpIOp::create(bb, l, arith::CmpIPredicate::ult,
                                            lane, cidx(rot));
        Value cacheIdx, partner, negate;
        if (interleaved) {
          cacheIdx = arith::DivUIOp::create(bb, l, lane, cidx(2));
          Value odd = arith::RemUIOp::create(bb, l, lane, cidx(2));
          negate = arith::CmpIOp::create(bb, l, arith::CmpIPredicate::eq, odd,
                                         cidx(0));
          partner = arith::SelectOp::create(
              bb, l, negate, arith::AddIOp::create(bb, l, lane, cidx(1)),
              arith::SubIOp::create(bb, l, lane, cidx(1)));
        } else {
          negate = arith::CmpIOp::create(bb, l, arith::CmpIPredicate::ult, lane,
                                         cidx(half));
          cacheIdx = arith::SelectOp::create(
              bb, l, negate, lane,
              arith::SubIOp::create(bb, l, lane, cidx(half)));
          partner = arith::SelectOp::create(
              bb, l, negate, arith::AddIOp::create(bb, l, lane, cidx(half)),
              arith::SubIOp::create(bb, l, lane, cidx(half)));
        }
        // Lanes past `rot` pass through: read something in range.
        cacheIdx = arith::SelectOp::create(bb, l, inRot, cacheIdx, cidx(0));
        partner = arith::SelectOp::create(bb, l, inRot, partner, lane);
        SmallVector<Value> pidx(idx);
        pidx[rank - 1] = arith::AddIOp::create(
            bb, l, arith::SubIOp::create(bb, l, lastIdx, lane), partner);
        Value other = tensor::ExtractOp::create(bb, l, x, pidx);
        // The position, clamped into the cache.
        Value p;
        if (offset) {
          SmallVector<Value> zeros(pT.getRank(), cidx(0));
          p = arith::IndexCastOp::create(
              bb, l, bb.getIndexType(),
              tensor::ExtractOp::create(bb, l, pos, zeros));
          p = arith::AddIOp::create(bb, l, p, idx[seqDim]);
        } else {
          p = arith::IndexCastOp::create(
              bb, l, bb.getIndexType(),
              tensor::ExtractOp::create(bb, l, pos,
                                        ValueRange{idx[0], idx[seqDim]}));
        }
        p = arith::MaxSIOp::create(bb, l, p, cidx(0));
        p = arith::MinSIOp::create(
            bb, l, p, arith::SubIOp::create(bb, l, maxPos, cidx(1)));
        Value c =
            tensor::ExtractOp::create(bb, l, cosC, ValueRange{p, cacheIdx});
        Value s =
            tensor::ExtractOp::create(bb, l, sinC, ValueRange{p, cacheIdx});
        Value signedOther = arith::SelectOp::create(
            bb, l, negate, arith::NegFOp::create(bb, l, other), other);
        Value r = arith::AddFOp::create(
            bb, l, arith::MulFOp::create(bb, l, args[0], c),
            arith::MulFOp::create(bb, l, signedOther, s));
        linalg::YieldOp::create(
            bb, l, Value(arith::SelectOp::create(bb, l, inRot, r, args[0])));
      });
  gi.setOutput(0, g.getResult(0));
  return success();
}
} // namespace

void moec::onnximport::registerContribSchemas() {
  // onnxruntime registers SimplifiedLayerNormalization in the default
  // domain, where ONNX has no such op: without a schema the ONNX checker
  // rejects the model and shape inference stops at the node. This one
  // mirrors onnxruntime's (version 1), with its shape inference.
  static const bool once = [] {
    const std::vector<std::string> floats = {"tensor(float)", "tensor(double)",
                                             "tensor(float16)",
                                             "tensor(bfloat16)"};
    onnx::OpSchema s;
    s.SetName("SimplifiedLayerNormalization")
        .SetDomain("")
        .SinceVersion(1)
        .SetDoc("onnxruntime's RMS normalization (see ImportContrib.cpp)")
        .Attr("axis", "first normalized dim", onnx::AttributeProto::INT,
              int64_t(-1))
        .Attr("epsilon", "added to the mean square",
              onnx::AttributeProto::FLOAT, 1e-5f)
        .Attr("stash_type", "type of inv_std_var", onnx::AttributeProto::INT,
              int64_t(1))
        .Input(0, "X", "input", "T")
        .Input(1, "scale", "scale", "V")
        .Output(0, "Y", "output", "V")
        .Output(1, "inv_std_var", "1 / RMS", "U", onnx::OpSchema::Optional)
        .TypeConstraint("T", floats, "input type")
        .TypeConstraint("U", floats, "stash type")
        .TypeConstraint("V", floats, "scale and output type")
        .TypeAndShapeInferenceFunction([](onnx::InferenceContext &ctx) {
          onnx::propagateElemTypeFromInputToOutput(ctx, 1, 0);
          if (!onnx::hasInputShape(ctx, 0))
            return;
          onnx::propagateShapeFromInputToOutput(ctx, 0, 0);
          if (ctx.getNumOutputs() < 2)
            return;
          const auto *stash = ctx.getAttribute("stash_type");
          ctx.getOutputType(1)->mutable_tensor_type()->set_elem_type(
              int32_t(stash ? stash->i() : 1));
          const auto &in = ctx.getInputType(0)->tensor_type().shape();
          int64_t rank = in.dim_size();
          const auto *axisA = ctx.getAttribute("axis");
          int64_t axis = axisA ? axisA->i() : -1;
          if (axis < -rank || axis >= rank)
            return;
          if (axis < 0)
            axis += rank;
          auto *out =
              ctx.getOutputType(1)->mutable_tensor_type()->mutable_shape();
          out->clear_dim();
          for (int64_t d = 0; d < rank; ++d) {
            if (d < axis)
              *out->add_dim() = in.dim(int(d));
            else
              out->add_dim()->set_dim_value(1);
          }
        });
    onnx::RegisterSchema(std::move(s));
    return true;
  }();
  (void)once;
}

void moec::onnximport::addContribOps(OpTable &t) {
  t["SimplifiedLayerNormalization"] = importSimplifiedLayerNorm;
  t["com.microsoft::SimplifiedLayerNormalization"] = importSimplifiedLayerNorm;
  t["com.microsoft::SkipSimplifiedLayerNormalization"] = [](GraphImporter &gi) {
    return importSkipLayerNorm(gi, /*simplified=*/true);
  };
  t["com.microsoft::SkipLayerNormalization"] = [](GraphImporter &gi) {
    return importSkipLayerNorm(gi, /*simplified=*/false);
  };
  t["com.microsoft::FastGelu"] = [](GraphImporter &gi) {
    return importActivation(gi, 1, geluTanh);
  };
  t["com.microsoft::BiasGelu"] = [](GraphImporter &gi) {
    return importActivation(gi, 2, geluErf);
  };
  t["com.microsoft::Gelu"] = [](GraphImporter &gi) {
    return importActivation(gi, 0, geluErf);
  };
  t["com.microsoft::QuickGelu"] = importQuickGelu;
  t["com.microsoft::RotaryEmbedding"] = importRotaryEmbedding;
}
