//===- ImportQuantized.cpp - com.microsoft.MatMulNBits and QMoE -----------===//
//
// onnxruntime-genai's model builder with `-p int4` writes the dense weights
// as MatMulNBits and the experts as QMoE (issue 18). Both store integer
// weights packed into uint8, block-wise along K (the input features):
//
//   w[n, k] = (q[n, k] - z[n, k / block_size]) * s[n, k / block_size]
//
// Layouts (onnxruntime 1.32 CPU, checked on random single-node models by
// test/e2e/quant_models.py):
//   * q is packed LSB first: with 4 bits, element 2i is the low nibble of
//     byte i and 2i+1 the high one; a row of K elements is K * bits / 8
//     bytes. MatMulNBits' B is [N, k_blocks, block_size * bits / 8]: the
//     same bytes, K rounded up to whole blocks (the padding is ignored).
//     QMoE's weights are [E, R, K * bits / 8] (R: rows of fc1, fc2, fc3,
//     onnxruntime's fp32 MoE layout [E, R, K] once unpacked).
//   * s: MatMulNBits [N, k_blocks] (or flat); QMoE block-wise
//     [E, R, K / block_size] when block_size is given, else one scale per
//     row [E, R].
//   * z, optional: uint8 packed like q along the blocks of a row
//     ([N, ceil(k_blocks * bits / 8)]; QMoE per-row: along the rows of an
//     expert, [E, ceil(R * bits / 8)]), or (MatMulNBits) floats shaped like
//     s. Without it, z = 2^(bits - 1): 8 for 4 bits, 128 for 8 bits.
// MatMulNBits: Y = A W^T (+ bias). QMoE: com.microsoft.MoE on the
// experts (ImportMoE.h): routing, activations and the swiglu
// forms are the MoE importer's, except that the top-k weights are always
// renormalized: onnxruntime 1.32's CPU QMoE ignores
// normalize_routing_weights=0 (test/Import/quantized.onnxtxt, k=1, through
// test/moec/e2e-onnxruntime.test).
//
// Packed: with f32 activations (and, for MatMulNBits, f32 scales) the
// weights stay packed as moe.dequantize of their codes: fused gate/up rows
// of QMoE's fc1 are split into two code tensors, alpha folds into the
// scales, zero points are unpacked to f32. Plans keep the codes and run a
// `dequantize` step before each GEMM; on ep meshes each rank holds the codes
// of its own experts. Other types, and every weight with
// `moec --packed-weights=expand`, are dequantized here into constants.
//
// accuracy_level 4 (the builder's int4 CPU models) is modelled as
// onnxruntime 1.32's CPU MatMulNBits computes it: A is quantized to int8
// per row and block of block_size along K, s = max|a| / 127 and
// q = round(a * (127 / max|a|)) (half to even; q = 0 where max|a| = 0),
// and Y is the GEMM of q * s with the weight. onnxruntime multiplies the
// int8 codes and scales after the integer dot: on the same A the two
// agree to float rounding (probed for 2, 4 and 8 bits, blocks 16-256,
// 1-130 rows, K not a multiple of the block, fp16 A; through whole models
// int8 rounding can amplify float differences upstream, see
// docs/importer.md). onnxruntime does this only with uint8
// (or default) zero points and weights it can prepack: float zero points,
// weights that are also graph inputs (initializers a run may override),
// and levels 0-3 multiply A exactly, as moec then does (and everywhere
// with `moec --int8-activations=off`). QMoE's block-wise 8-bit experts
// quantize their activations too (at every level); moec's experts do not,
// so those differ from onnxruntime by about 1e-2 relative.
//
//===----------------------------------------------------------------------===//

#include "Expansion.h"
#include "ImportMoE.h"

#include "moec/Dialect/MoE/MoEOps.h"

#include <cmath>
#include <functional>

using namespace mlir;
using namespace moec::onnximport;

namespace {
/// The zero point of `row` (a row of the whole weight, experts included)
/// and `block`.
using ZeroPointFn = std::function<double(int64_t row, int64_t block)>;

/// Element `idx` of a row of packed `bits`-wide unsigned integers.
int64_t unpackAt(const HostTensor &q, int64_t rowStart, int64_t idx,
                 int64_t bits) {
  int64_t perByte = 8 / bits;
  int64_t byte = q.i[rowStart + idx / perByte];
  return (byte >> (bits * (idx % perByte))) & ((int64_t(1) << bits) - 1);
}

/// Dequantizes `rows` rows of `k` elements: row r of `q` starts at byte
/// r * rowBytes, its scales at r * blocks of `s`.
HostTensor dequantizeRows(const HostTensor &q, int64_t rows, int64_t rowBytes,
                          const HostTensor &s, int64_t blocks,
                          const ZeroPointFn &zp, int64_t bits,
                          int64_t blockSize, int64_t k,
                          std::vector<int64_t> shape) {
  HostTensor w;
  w.dtype = s.dtype;
  w.shape = std::move(shape);
  w.f.resize(size_t(rows * k));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < k; ++c) {
      int64_t blk = c / blockSize;
      double v = double(unpackAt(q, r * rowBytes, c, bits)) - zp(r, blk);
      w.f[r * k + c] = v * s.f[r * blocks + blk];
    }
  return w;
}

/// A uint8 zero-point tensor packed like the weights: `perGroup` entries
/// of `bits` each per group of `groupBytes` bytes.
ZeroPointFn packedZeroPoints(const HostTensor *z, int64_t bits,
                             int64_t groupBytes, bool perRow,
                             int64_t rowsPerGroup) {
  if (!z)
    return
        [bits](int64_t, int64_t) { return double(int64_t(1) << (bits - 1)); };
  if (perRow)
    // One zero point per row, packed along the rows of each group (expert).
    return [=](int64_t row, int64_t) {
      return double(unpackAt(*z, (row / rowsPerGroup) * groupBytes,
                             row % rowsPerGroup, bits));
    };
  return [=](int64_t row, int64_t blk) {
    return double(unpackAt(*z, row * groupBytes, blk, bits));
  };
}

bool isUint8(const HostTensor *t) {
  return t && t->dtype == onnx::TensorProto_DataType_UINT8;
}

/// Transposes a `[n, k]` tensor to `[k, n]`.
HostTensor transpose2(const HostTensor &w) {
  HostTensor t;
  t.dtype = w.dtype;
  int64_t n = w.shape[0], k = w.shape[1];
  t.shape = {k, n};
  t.f.resize(w.f.size());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c)
      t.f[c * n + r] = w.f[r * k + c];
  return t;
}
/// MatMulNBits' weight as `moe.dequantize` of the packed codes `q` (f32
/// scales `s`; the zero points, when given, unpacked into f32 [n, blocks]).
Value packedWeight(GraphImporter &gi, const HostTensor &q, const HostTensor &s,
                   const ZeroPointFn *zp, int64_t n, int64_t blocks,
                   int64_t blob, int64_t bits, int64_t bs, int64_t k) {
  HostTensor codes = q;
  codes.shape = {n, blocks, blob};
  HostTensor scales = s;
  scales.shape = {n, blocks};
  Value zv;
  if (zp) {
    HostTensor z =
        HostTensor::splat(onnx::TensorProto_DataType_FLOAT, {n, blocks}, 0.0);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < blocks; ++c)
        z.f[r * blocks + c] = (*zp)(r, c);
    zv = gi.constant(z);
  }
  OpBuilder &b = gi.builder();
  return moec::moe::DequantizeOp::create(
      b, gi.loc(), RankedTensorType::get({k, n}, b.getF32Type()),
      gi.weight(codes, gi.node().name() + ".codes"),
      gi.weight(scales, gi.node().name() + ".scales"), zv, Value(),
      b.getI64IntegerAttr(bits), b.getI64IntegerAttr(bs),
      b.getI64IntegerAttr(k));
}
} // namespace

/// `a` [..., k] (f32) as onnxruntime's accuracy_level 4 sees it (see the
/// file comment): each row's blocks of `bs` along k quantized to int8 and
/// back, q * s. A last block shorter than `bs` is quantized as if padded
/// with zeros.
static std::string int8Blocks(Expansion &ex, const std::string &a, int64_t rank,
                              int64_t k, int64_t bs) {
  constexpr int32_t f32 = onnx::TensorProto_DataType_FLOAT;
  int64_t blocks = (k + bs - 1) / bs;
  std::string x = a;
  if (blocks * bs != k) {
    std::vector<int64_t> pads(2 * rank, 0);
    pads[2 * rank - 1] = blocks * bs - k;
    x = ex.op("Pad", {x, ex.ints(pads)});
  }
  // [..., blocks, bs]: Reshape's 0 keeps a leading dim.
  std::vector<int64_t> shape(rank - 1, 0);
  shape.push_back(blocks);
  shape.push_back(bs);
  x = ex.op("Reshape", {x, ex.ints(shape)});
  std::string amax =
      ex.op("ReduceMax", {ex.op("Abs", {x}), ex.ints({-1})},
            [](onnx::NodeProto &n) { Expansion::setInt(n, "keepdims", 1); });
  // s = amax / 127; q = round(a * (127 / amax)), 0 where amax = 0.
  std::string c127 = ex.splat(f32, {}, 127);
  std::string zero = ex.splat(f32, {}, 0), one = ex.splat(f32, {}, 1);
  std::string scale = ex.op("Div", {amax, c127});
  std::string isZero = ex.op("Equal", {amax, zero});
  std::string inv = ex.op(
      "Where", {isZero, zero,
                ex.op("Div", {c127, ex.op("Where", {isZero, one, amax})})});
  std::string q = ex.op("Round", {ex.op("Mul", {x, inv})});
  x = ex.op("Mul", {q, scale});
  shape.resize(rank - 1);
  shape.push_back(blocks * bs);
  x = ex.op("Reshape", {x, ex.ints(shape)});
  if (blocks * bs != k)
    x = ex.op("Slice", {x, ex.ints({0}), ex.ints({k}), ex.ints({rank - 1})});
  return x;
}

static LogicalResult importMatMulNBits(GraphImporter &gi) {
  enum { kA, kB, kScales, kZeroPoints, kGIdx, kBias };
  if (!gi.hasInput(kA) || !gi.hasInput(kB) || !gi.hasInput(kScales))
    return gi.fail("needs A, B and scales");
  int64_t k = gi.intAttr("K", -1), n = gi.intAttr("N", -1);
  int64_t bits = gi.intAttr("bits", 4), bs = gi.intAttr("block_size", -1);
  if (k <= 0 || n <= 0)
    return gi.fail("attributes K and N must be given and positive");
  if (bits != 2 && bits != 4 && bits != 8)
    return gi.fail("attribute bits=" + Twine(bits) +
                   " is not supported (2, 4 and 8 are)");
  if (bs < 16 || (bs & (bs - 1)) != 0)
    return gi.fail("attribute block_size=" + Twine(bs) +
                   " must be a power of two, at least 16");
  if (gi.intAttr("weight_prepacked", 0) != 0)
    return gi.fail("attribute weight_prepacked=" +
                   Twine(gi.intAttr("weight_prepacked", 0)) +
                   " (an execution provider's layout) is not supported");
  int64_t blocks = (k + bs - 1) / bs, blob = bs * bits / 8;
  const HostTensor *q = gi.inputConst(kB);
  const HostTensor *s = gi.inputConst(kScales);
  if (!isUint8(q) || q->size() != n * blocks * blob)
    return gi.fail("B must be a uint8 initializer of [" + Twine(n) + ", " +
                   Twine(blocks) + ", " + Twine(blob) + "] bytes");
  RankedTensorType aT = gi.inputType(kA);
  if (!aT.getRank() || aT.getShape().back() != k)
    return gi.fail("A's last dim must be K=" + Twine(k));
  if (!s || !s->isFloat() || s->size() != n * blocks ||
      gi.elementType(s->dtype) != aT.getElementType())
    return gi.fail("scales must be an initializer of " + Twine(n * blocks) +
                   " elements of A's type");
  const HostTensor *z = nullptr;
  if (gi.hasInput(kZeroPoints)) {
    z = gi.inputConst(kZeroPoints);
    int64_t zBytes = (blocks * bits + 7) / 8;
    if (!z || !(isUint8(z) ? z->size() == n * zBytes
                           : z->isFloat() && z->size() == n * blocks))
      return gi.fail("zero_points must be an initializer: uint8 [" + Twine(n) +
                     ", " + Twine(zBytes) + "] (packed) or [" + Twine(n) +
                     ", " + Twine(blocks) + "] of the scales' type");
  }
  if (gi.hasInput(kGIdx)) {
    // g_idx (deprecated) maps each k to its block; only the plain mapping
    // k / block_size is the layout above.
    const HostTensor *g = gi.inputConst(kGIdx);
    bool trivial = g && g->size() == k;
    for (int64_t c = 0; trivial && c < k; ++c)
      trivial = g->asInt(c) == c / bs;
    if (!trivial)
      return gi.fail("g_idx (act-order block indices) is not supported "
                     "unless it is k / block_size for every k");
  }
  ZeroPointFn zp;
  if (z && !isUint8(z))
    zp = [z, blocks](int64_t row, int64_t blk) {
      return z->f[row * blocks + blk];
    };
  else
    zp = packedZeroPoints(z, bits, (blocks * bits + 7) / 8, false, 1);

  Expansion ex(gi);
  std::string weight, a = ex.in(kA);
  // 16-bit A and scales (the builder's fp16 models): the weight stays
  // packed too, with its scales widened to f32; A is widened and the
  // product narrowed back, so the GEMM runs in f32 like the f32 models'.
  int32_t narrow = 0;
  if (s->dtype == onnx::TensorProto_DataType_FLOAT16 ||
      s->dtype == onnx::TensorProto_DataType_BFLOAT16)
    narrow = s->dtype;
  auto cast = [&](const std::string &x, int32_t to) {
    return ex.op("Cast", {x}, [to](onnx::NodeProto &node) {
      Expansion::setInt(node, "to", to);
    });
  };
  if ((s->dtype == onnx::TensorProto_DataType_FLOAT || narrow) &&
      gi.keepPackedWeights()) {
    // moe.dequantize on the codes, which plans keep as bytes and run as a
    // `dequantize` step (or as GEMMs on the codes).
    HostTensor s32 = *s;
    s32.dtype = onnx::TensorProto_DataType_FLOAT;
    weight = gi.node().name() + "/moec.dequantize";
    gi.defineValue(weight, packedWeight(gi, *q, s32, z ? &zp : nullptr, n,
                                        blocks, blob, bits, bs, k));
    if (narrow)
      a = cast(a, onnx::TensorProto_DataType_FLOAT);
  } else {
    // Dequantized here into a constant of the scales' type.
    HostTensor w = dequantizeRows(*q, n, blocks * blob, *s, blocks, zp, bits,
                                  bs, k, {n, k});
    weight = ex.constant(transpose2(w));
    narrow = 0;
  }
  // accuracy_level 4: int8 activations (onnxruntime's CPU kernels), in
  // f32 whatever A's type.
  // onnxruntime prepacks B for this only when B, the scales and the zero
  // points are initializers a run cannot override (not also graph inputs).
  bool fixedWeights = true;
  for (unsigned i : {kB, kScales, kZeroPoints})
    fixedWeights &=
        !gi.hasInput(i) || !gi.isOverridableInitializer(gi.node().input(i));
  if (gi.intAttr("accuracy_level", 0) == 4 && gi.int8Activations() &&
      (!z || isUint8(z)) && fixedWeights) {
    int32_t at = GraphImporter::onnxType(aT.getElementType());
    bool wide = narrow || at == onnx::TensorProto_DataType_FLOAT;
    std::string x = wide ? a : cast(a, onnx::TensorProto_DataType_FLOAT);
    x = int8Blocks(ex, x, aT.getRank(), k, bs);
    a = wide ? x : cast(x, at);
    if (a.empty())
      return failure();
  }
  std::string y = ex.op("MatMul", {a, weight});
  if (narrow && !y.empty())
    y = cast(y, narrow);
  if (y.empty())
    return failure();
  if (gi.hasInput(kBias)) {
    RankedTensorType bT = gi.inputType(kBias);
    if (bT.getRank() != 1 || bT.getDimSize(0) != n)
      return gi.fail("bias must be [" + Twine(n) + "]");
    y = ex.op("Add", {y, ex.in(kBias)});
    if (y.empty())
      return failure();
  }
  return ex.output(0, y);
}

static LogicalResult importQMoE(GraphImporter &gi) {
  enum {
    kInput,
    kRouter,
    kFc1,
    kS1,
    kB1,
    kFc2,
    kS2,
    kB2,
    kFc3,
    kS3,
    kB3,
    kZ1,
    kZ2,
    kZ3,
    kRouterWeights
  };
  if (!gi.hasInput(kInput) || !gi.hasInput(kRouter) || !gi.hasInput(kFc1) ||
      !gi.hasInput(kFc2) || !gi.hasInput(kS1) || !gi.hasInput(kS2))
    return gi.fail("needs input, router_probs, fc1/fc2 weights and scales");
  for (unsigned i = kRouterWeights; i < gi.numInputs(); ++i)
    if (gi.hasInput(i))
      return gi.fail("input " + Twine(i) +
                     " (router_weights, global or activation scales) is not "
                     "supported");
  std::string qt = gi.strAttr("quant_type", "int");
  if (qt != "int")
    return gi.fail("quant_type '" + qt + "' is not supported ('int' is)");
  int64_t prepacked = gi.intAttr("weights_prepacked", -1);
  if (prepacked != -1 && prepacked != 0)
    return gi.fail("attribute weights_prepacked=" + Twine(prepacked) +
                   " (an execution provider's layout) is not supported");
  if (gi.intAttr("swiglu_limit_after_activation", 0) != 0)
    return gi.fail("attribute swiglu_limit_after_activation=1 is not "
                   "supported");
  int64_t bitsAll = gi.intAttr("expert_weight_bits", 4);
  int64_t bs = gi.intAttr("block_size", 0);
  if (bs != 0 && (bs < 16 || (bs & (bs - 1)) != 0))
    return gi.fail("attribute block_size=" + Twine(bs) +
                   " must be a power of two, at least 16");
  RankedTensorType inT = gi.inputType(kInput);
  if (inT.getRank() < 1 || inT.isDynamicDim(inT.getRank() - 1))
    return gi.fail("the hidden size (last dim of input) must be static");
  int64_t h = inT.getShape().back();

  // The experts stay packed (moe.dequantize of rows of the codes,
  // ImportMoE.h), expanding to the activations' type (f32, or f16/bf16:
  // the builder's fp16 models); --packed-weights=expand dequantizes here.
  Type actElt = inT.getElementType();
  bool keepPacked = (actElt.isF32() || actElt.isF16() || actElt.isBF16()) &&
                    gi.keepPackedWeights();
  int32_t actType = GraphImporter::onnxType(actElt);
  struct Packed {
    const HostTensor *q = nullptr, *s = nullptr;
    ZeroPointFn zp;
    bool hasZp = false;
    int64_t bits = 0, blockSize = 0, blocks = 0, k = 0;
  } packed[3];
  // Dequantizes fc`idx` ([E, R, K * bits / 8]), or with keepPacked records
  // it and returns its shape only; null after an error.
  std::optional<HostTensor> deq[3];
  auto load = [&](int idx, unsigned wi, unsigned si, unsigned zi,
                  int64_t kdim) -> const HostTensor * {
    std::string name = "fc" + std::to_string(idx + 1);
    int64_t bits = gi.intAttr(name + "_expert_weight_bits", bitsAll);
    if (bits != 4 && bits != 8) {
      (void)gi.fail(name + " weight bits " + std::to_string(bits) +
                    " not supported (4 and 8 are)");
      return nullptr;
    }
    const HostTensor *q = gi.inputConst(wi);
    if (!isUint8(q) || q->shape.size() != 3 || q->shape[2] * 8 != kdim * bits) {
      (void)gi.fail(name +
                    "_experts_weights must be a uint8 initializer "
                    "[experts, rows, " +
                    std::to_string(kdim * bits / 8) + "]");
      return nullptr;
    }
    int64_t e = q->shape[0], r = q->shape[1];
    if (bs && kdim % bs != 0) {
      (void)gi.fail(name + ": " + std::to_string(kdim) +
                    " input features are not a multiple of block_size");
      return nullptr;
    }
    int64_t blocks = bs ? kdim / bs : 1;
    const HostTensor *s = gi.hasInput(si) ? gi.inputConst(si) : nullptr;
    std::vector<int64_t> sShape = {e, r};
    if (bs)
      sShape.push_back(blocks);
    if (!s || !s->isFloat() || s->shape != sShape) {
      (void)gi.fail(name + "_scales must be a float initializer of shape [" +
                    std::to_string(e) + ", " + std::to_string(r) +
                    (bs ? ", " + std::to_string(blocks) : "") + "]");
      return nullptr;
    }
    const HostTensor *z = nullptr;
    int64_t zBytes = bs ? (blocks * bits + 7) / 8 : (r * bits + 7) / 8;
    if (gi.hasInput(zi)) {
      z = gi.inputConst(zi);
      std::vector<int64_t> zShape = {e, bs ? r : zBytes};
      if (bs)
        zShape.push_back(zBytes);
      if (!isUint8(z) || z->shape != zShape) {
        (void)gi.fail(name + "_zero_points must be a uint8 initializer of " +
                      std::to_string(zShape.size()) +
                      " dims, packed like the weights");
        return nullptr;
      }
    }
    ZeroPointFn zp = packedZeroPoints(z, bits, zBytes, bs == 0, r);
    if (keepPacked) {
      packed[idx] = {q,      s,   zp, z != nullptr, bits, bs ? bs : kdim,
                     blocks, kdim};
      deq[idx] = HostTensor();
      deq[idx]->dtype = actType;
      deq[idx]->shape = {e, r, kdim};
      return &*deq[idx];
    }
    deq[idx] = dequantizeRows(*q, e * r, q->shape[2], *s, blocks, zp, bits,
                              bs ? bs : kdim, kdim, {e, r, kdim});
    return &*deq[idx];
  };
  // Rows start, start + step, ... of packed fc`idx` as moe.dequantize
  // [E, K, count]: the codes' rows are moved whole, the scales scaled.
  auto packedRows = [&](int idx, int64_t start, int64_t step, int64_t count,
                        double scale) -> Value {
    const Packed &p = packed[idx];
    int64_t e = p.q->shape[0], r = p.q->shape[1], rowBytes = p.q->shape[2];
    int64_t blocks = p.blocks, blob = rowBytes / blocks;
    HostTensor codes;
    codes.dtype = onnx::TensorProto_DataType_UINT8;
    codes.shape = {e, count, blocks, blob};
    codes.i.resize(size_t(e * count * rowBytes));
    HostTensor scales = HostTensor::splat(onnx::TensorProto_DataType_FLOAT,
                                          {e, count, blocks}, 0.0);
    std::optional<HostTensor> zps;
    if (p.hasZp)
      zps = HostTensor::splat(onnx::TensorProto_DataType_FLOAT,
                              {e, count, blocks}, 0.0);
    for (int64_t x = 0; x < e; ++x)
      for (int64_t j = 0; j < count; ++j) {
        int64_t src = x * r + start + j * step, dst = x * count + j;
        std::copy_n(p.q->i.begin() + src * rowBytes, rowBytes,
                    codes.i.begin() + dst * rowBytes);
        for (int64_t c = 0; c < blocks; ++c) {
          scales.f[dst * blocks + c] = p.s->f[src * blocks + c] * scale;
          if (zps)
            zps->f[dst * blocks + c] = p.zp(src, c);
        }
      }
    std::string name = gi.node().name() + "/fc" + std::to_string(idx + 1) +
                       "." + std::to_string(start);
    OpBuilder &b = gi.builder();
    return moec::moe::DequantizeOp::create(
        b, gi.loc(), RankedTensorType::get({e, p.k, count}, actElt),
        gi.weight(codes, name + ".codes"), gi.weight(scales, name + ".scales"),
        zps ? gi.weight(*zps, name + ".zero_points") : Value(), Value(),
        b.getI64IntegerAttr(p.bits), b.getI64IntegerAttr(p.blockSize),
        b.getI64IntegerAttr(p.k));
  };
  return importMoELayer(gi, [&](MoELayerInputs &in) -> LogicalResult {
    in.fc1 = load(0, kFc1, kS1, kZ1, h);
    if (!in.fc1)
      return failure();
    // fc2 is [E, H, F * bits / 8]: F from fc1's rows (halved when fused).
    std::string act = gi.strAttr("activation_type", "relu");
    bool fused = (act == "swiglu" || act == "geglu") &&
                 gi.intAttr("swiglu_fusion", 0) != 0;
    int64_t f = in.fc1->shape[1] / (fused ? 2 : 1);
    in.fc2 = load(1, kFc2, kS2, kZ2, f);
    if (!in.fc2)
      return failure();
    if (gi.hasInput(kFc3) && !(in.fc3 = load(2, kFc3, kS3, kZ3, h)))
      return failure();
    in.b1 = kB1;
    in.b2 = kB2;
    in.b3 = kB3;
    in.alwaysNormalize = true;
    if (keepPacked)
      in.packed = packedRows;
    return success();
  });
}

void moec::onnximport::addQuantizedOps(OpTable &t) {
  t["com.microsoft::MatMulNBits"] = importMatMulNBits;
  t["com.microsoft::QMoE"] = importQMoE;
}
