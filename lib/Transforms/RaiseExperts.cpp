//===- RaiseExperts.cpp - exported MoE loops to moe.route/moe.experts -----===//
//
// An exported MoE layer is a router (scores -> top-k -> optional
// renormalisation) and, per expert, a data-dependent chain: the tokens routed
// to the expert are found with NonZero on the one-hot expert mask, gathered,
// run through the expert FFN, scaled by their routing weight and scattered
// (added) back into a [tokens, hidden] accumulator. The matcher works from
// the accumulator's add tree: every leaf scatter must be one expert of the
// same router, with the FFN weights as constants.
//
//===----------------------------------------------------------------------===//

#include "moec/Analysis/ConstantBytes.h"
#include "moec/Transforms/Passes.h"

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/SetVector.h"

#include <array>
#include <cstring>
#include <limits>
#include <map>

namespace moec {
#define GEN_PASS_DEF_MOERAISEEXPERTS
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {

/// Looks through ops that only change the view of a tensor.
Value skipViews(Value v) {
  while (Operation *def = v.getDefiningOp()) {
    if (auto r = dyn_cast<tensor::ReshapeOp>(def))
      v = r.getSource();
    else if (auto c = dyn_cast<tensor::CastOp>(def))
      v = c.getSource();
    else if (auto c = dyn_cast<tensor::CollapseShapeOp>(def))
      v = c.getSrc();
    else if (auto e = dyn_cast<tensor::ExpandShapeOp>(def))
      v = e.getSrc();
    else
      break;
  }
  return v;
}

/// The body ops of a single-result linalg.generic, terminator excluded.
SmallVector<Operation *> bodyOps(linalg::GenericOp g) {
  SmallVector<Operation *> ops;
  for (Operation &op : g.getBody()->without_terminator())
    ops.push_back(&op);
  return ops;
}

/// A two-input element-wise generic whose body is a single `OpTy` of the
/// two block arguments: returns the two inputs.
template <typename OpTy>
std::optional<std::pair<Value, Value>> matchBinary(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 2 || g.getNumResults() != 1)
    return std::nullopt;
  SmallVector<Operation *> ops = bodyOps(g);
  if (ops.size() != 1 || !isa<OpTy>(ops[0]))
    return std::nullopt;
  Block *b = g.getBody();
  Value y = b->getTerminator()->getOperand(0);
  if (y != ops[0]->getResult(0) || ops[0]->getOperand(0) != b->getArgument(0) ||
      ops[0]->getOperand(1) != b->getArgument(1))
    return std::nullopt;
  return std::make_pair(g.getDpsInputs()[0], g.getDpsInputs()[1]);
}

/// A one-input generic computing sigmoid (1 / (1 + exp(-x))): its input.
Value matchSigmoid(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1)
    return {};
  SmallVector<Operation *> ops = bodyOps(g);
  if (ops.size() != 4 || !isa<arith::NegFOp>(ops[0]) ||
      !isa<math::ExpOp>(ops[1]) || !isa<arith::AddFOp>(ops[2]) ||
      !isa<arith::DivFOp>(ops[3]) ||
      ops[0]->getOperand(0) != g.getBody()->getArgument(0))
    return {};
  return g.getDpsInputs()[0];
}

/// Where a MatMul's right-hand side [K, N] comes from: a constant, or the
/// slab of a stacked [E, A, B] constant picked by the expert id (transformers
/// 5.x `gate_up_proj[expert_idx]`), possibly transposed, possibly a column
/// range of it (a fused gate/up projection split in two).
struct WeightRef {
  arith::ConstantOp src;
  bool stacked = false;
  bool transposed = false;
  int64_t colBegin = 0, colEnd = -1; // of the [K, N] matrix; -1: all
  /// Batched form only: the [n] or [n, 1] expert ids that pick one slab per
  /// row (see matchBatchedLinear).
  Value ids;
};

/// Resolves the right-hand side of a MatMul to a WeightRef.
std::optional<WeightRef> resolveWeight(Value w) {
  WeightRef r;
  w = skipViews(w);
  if (auto t = w.getDefiningOp<linalg::TransposeOp>()) {
    if (t.getPermutation() != ArrayRef<int64_t>{1, 0})
      return std::nullopt;
    r.transposed = true;
    w = skipViews(t.getInput());
  }
  if (auto c = w.getDefiningOp<arith::ConstantOp>()) {
    if (cast<RankedTensorType>(c.getType()).getRank() != 2)
      return std::nullopt;
    r.src = c;
    return r;
  }
  // A gather of one [A, B] slab from a constant [E, A, B].
  auto g = w.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1)
    return std::nullopt;
  arith::ConstantOp src;
  g.getBody()->walk([&](tensor::ExtractOp ex) {
    src = ex.getTensor().getDefiningOp<arith::ConstantOp>();
  });
  if (!src || cast<RankedTensorType>(src.getType()).getRank() != 3 ||
      cast<RankedTensorType>(g.getDpsInputs()[0].getType()).getRank() != 0)
    return std::nullopt;
  r.src = src;
  r.stacked = true;
  return r;
}

/// A per-row gather of slabs of a constant [E, A, B]: out[i, a, b] =
/// W[ids[i], a, b] (ids [n] or [n, 1], negative ids wrapped), as the
/// importer writes GatherND(W, ids) or Gather(W, ids, axis 0). Returns {W,
/// ids}.
std::optional<std::pair<arith::ConstantOp, Value>>
matchRowGather(linalg::GenericOp g) {
  auto outT = cast<RankedTensorType>(g.getResult(0).getType());
  if (g.getNumResults() != 1 || outT.getRank() != 3 ||
      g.getNumDpsInputs() > 1 || !g.getIndexingMapsArray().back().isIdentity())
    return std::nullopt;
  auto isIndex = [](Value v, int64_t dim) {
    auto li = v.getDefiningOp<linalg::IndexOp>();
    return li && int64_t(li.getDim()) == dim;
  };
  tensor::ExtractOp wx;
  unsigned extracts = 0;
  g.getBody()->walk([&](tensor::ExtractOp ex) {
    ++extracts;
    if (ex.getTensor().getDefiningOp<arith::ConstantOp>())
      wx = ex;
  });
  if (!wx || wx.getIndices().size() != 3 || !isIndex(wx.getIndices()[1], 1) ||
      !isIndex(wx.getIndices()[2], 2) ||
      g.getBody()->getTerminator()->getOperand(0) != wx.getResult())
    return std::nullopt;
  auto src = wx.getTensor().getDefiningOp<arith::ConstantOp>();
  auto srcT = cast<RankedTensorType>(src.getType());
  if (srcT.getDimSize(1) != outT.getDimSize(1) ||
      srcT.getDimSize(2) != outT.getDimSize(2))
    return std::nullopt;
  // The row's id: idx, or select(idx < 0, idx + E, idx), of an index_cast.
  Value id = wx.getIndices()[0];
  if (auto sel = id.getDefiningOp<arith::SelectOp>())
    id = sel.getFalseValue();
  auto cast = id.getDefiningOp<arith::IndexCastOp>();
  if (!cast)
    return std::nullopt;
  Value e = cast.getIn();
  // From the generic's input (Gather: one id per row, map (d0)) ...
  if (g.getNumDpsInputs() == 1 && extracts == 1) {
    auto ba = dyn_cast<BlockArgument>(e);
    AffineMap in = g.getIndexingMapsArray()[0];
    if (ba && ba.getOwner() == g.getBody() && ba.getArgNumber() == 0 &&
        in.getNumResults() == 1 &&
        in.getResult(0) == getAffineDimExpr(0, g.getContext()))
      return std::make_pair(src, g.getDpsInputs()[0]);
    return std::nullopt;
  }
  // ... or read from the ids tensor at [d0] or [d0, 0] (GatherND).
  auto ix = e.getDefiningOp<tensor::ExtractOp>();
  if (g.getNumDpsInputs() != 0 || extracts != 2 || !ix ||
      ix.getIndices().empty() || ix.getIndices().size() > 2 ||
      !isIndex(ix.getIndices()[0], 0))
    return std::nullopt;
  if (ix.getIndices().size() == 2) {
    APInt zero;
    if (!matchPattern(ix.getIndices()[1], m_ConstantInt(&zero)) ||
        !zero.isZero())
      return std::nullopt;
  }
  return std::make_pair(src, ix.getTensor());
}

/// The batched form of an expert's linear layer (transformers' batched_mm
/// experts, torch.onnx dynamo): y[i] = W[ids[i]] x[i], written as
/// batch_matmul(gather(W, ids) [n, A, B], x [n, B, 1]) -> [n, A, 1] viewed
/// as [n, A]. W [E, out, in] is stacked and transposed. Returns {x, W}.
std::optional<std::pair<Value, WeightRef>> matchBatchedLinear(Value v) {
  auto bmm = skipViews(v).getDefiningOp<linalg::BatchMatmulOp>();
  if (!bmm)
    return std::nullopt;
  auto outT = cast<RankedTensorType>(bmm.getResult(0).getType());
  auto g = bmm.getDpsInputs()[0].getDefiningOp<linalg::GenericOp>();
  if (outT.getDimSize(2) != 1 || !g)
    return std::nullopt;
  auto gathered = matchRowGather(g);
  if (!gathered)
    return std::nullopt;
  // x [n, B] viewed as [n, B, 1].
  Value x = bmm.getDpsInputs()[1];
  if (auto e = x.getDefiningOp<tensor::ExpandShapeOp>())
    x = e.getSrc();
  else if (auto r = x.getDefiningOp<tensor::ReshapeOp>())
    x = r.getSource();
  auto xT = cast<RankedTensorType>(x.getType());
  if (xT.getRank() != 2 || xT.getDimSize(0) != outT.getDimSize(0))
    return std::nullopt;
  WeightRef r;
  r.src = gathered->first;
  r.stacked = true;
  r.transposed = true;
  r.ids = gathered->second;
  return std::make_pair(x, r);
}

/// `linalg.matmul(x, W)` with a resolvable constant W: returns {x, W}.
std::optional<std::pair<Value, WeightRef>> matchLinear(Value v) {
  if (auto batched = matchBatchedLinear(v))
    return batched;
  auto mm = skipViews(v).getDefiningOp<linalg::MatmulOp>();
  if (!mm)
    return std::nullopt;
  std::optional<WeightRef> w = resolveWeight(mm.getDpsInputs()[1]);
  if (!w)
    return std::nullopt;
  return std::make_pair(mm.getDpsInputs()[0], *w);
}

/// One column range [b, e) of a MatMul (a fused projection split with
/// extract_slice on the last dim): returns {x, W restricted to the range}.
std::optional<std::pair<Value, WeightRef>> matchLinearPart(Value v) {
  if (auto sl = skipViews(v).getDefiningOp<tensor::ExtractSliceOp>()) {
    auto t = cast<RankedTensorType>(sl.getSource().getType());
    if (t.getRank() != 2 || !sl.hasUnitStride() ||
        sl.getStaticOffsets()[0] != 0 ||
        ShapedType::isDynamic(sl.getStaticOffsets()[1]) ||
        ShapedType::isDynamic(sl.getStaticSizes()[1]))
      return std::nullopt;
    auto lin = matchLinear(sl.getSource());
    if (!lin)
      return std::nullopt;
    lin->second.colBegin = sl.getStaticOffsets()[1];
    lin->second.colEnd = lin->second.colBegin + sl.getStaticSizes()[1];
    return lin;
  }
  return matchLinear(v);
}

std::optional<double> scalarFloat(Value v);
template <typename OpTy>
std::optional<std::pair<Value, double>> matchScalarBinary(Value v);

/// GELU with erf as torch.onnx writes it: (u * (erf(u / sqrt(2)) + 1)) *
/// 0.5, or (u * 0.5) * (erf(u / sqrt(2)) + 1): returns u.
Value matchGeluErf(Value v) {
  auto near = [](double a, double b) {
    return std::abs(a - b) <= 1e-6 * std::abs(b);
  };
  // 1 + erf(u / sqrt(2)) with the same u.
  auto onePlusErf = [&](Value q) -> Value {
    auto add = matchScalarBinary<arith::AddFOp>(q);
    if (!add || add->second != 1.0)
      return {};
    auto g = add->first.getDefiningOp<linalg::GenericOp>();
    if (!g || g.getNumDpsInputs() != 1 || bodyOps(g).size() != 1 ||
        !isa<math::ErfOp>(bodyOps(g)[0]) ||
        bodyOps(g)[0]->getOperand(0) != g.getBody()->getArgument(0))
      return {};
    Value d = g.getDpsInputs()[0];
    if (auto div = matchBinary<arith::DivFOp>(d)) {
      std::optional<double> c = scalarFloat(div->second);
      if (c && near(*c, std::sqrt(2.0)))
        return div->first;
    }
    if (auto mul = matchScalarBinary<arith::MulFOp>(d);
        mul && near(mul->second, 1.0 / std::sqrt(2.0)))
      return mul->first;
    return {};
  };
  auto mul = matchBinary<arith::MulFOp>(v);
  if (!mul)
    return {};
  for (auto [a, b] : {std::pair(mul->first, mul->second),
                      std::pair(mul->second, mul->first)}) {
    // (u * (1 + erf)) * 0.5
    if (std::optional<double> half = scalarFloat(b); half && *half == 0.5)
      if (auto inner = matchBinary<arith::MulFOp>(a))
        for (auto [u, q] : {std::pair(inner->first, inner->second),
                            std::pair(inner->second, inner->first)})
          if (Value x = onePlusErf(q); x && x == u)
            return u;
    // (u * 0.5) * (1 + erf)
    if (auto uh = matchScalarBinary<arith::MulFOp>(a); uh && uh->second == 0.5)
      if (Value x = onePlusErf(b); x && x == uh->first)
        return x;
  }
  return {};
}

/// One expert's FFN, read back from its output.
struct ExpertFFN {
  Value input; // the gathered tokens [n, H]
  WeightRef gate, down;
  std::optional<WeightRef> up;
  moe::Activation act = moe::Activation::identity;
};

/// Matches down(act(gate(x)) [* up(x)]) on the FFN output `v`.
FailureOr<ExpertFFN> matchFFN(Value v, std::string &why) {
  ExpertFFN f;
  auto down = matchLinear(v);
  if (!down) {
    why = "the expert output is not a MatMul by a constant weight";
    return failure();
  }
  f.down = down->second;
  Value h = skipViews(down->first);
  // Gated: h = act(x W1) * (x W3), operands in either order.
  auto tryActivation = [&](Value a, moe::Activation &act) -> Value {
    if (auto mul = matchBinary<arith::MulFOp>(a)) {
      // silu: u * sigmoid(u)
      for (auto [u, s] : {std::pair(mul->first, mul->second),
                          std::pair(mul->second, mul->first)})
        if (Value sig = matchSigmoid(s); sig && sig == u) {
          act = moe::Activation::silu;
          return u;
        }
    }
    if (Value u = matchGeluErf(a)) {
      act = moe::Activation::gelu;
      return u;
    }
    if (auto g = a.getDefiningOp<linalg::GenericOp>();
        g && g.getNumDpsInputs() == 1) {
      SmallVector<Operation *> ops = bodyOps(g);
      if (ops.size() == 1 && isa<arith::MaximumFOp>(ops[0])) {
        act = moe::Activation::relu;
        return g.getDpsInputs()[0];
      }
    }
    return {};
  };
  if (auto mul = matchBinary<arith::MulFOp>(h)) {
    for (auto [a, b] : {std::pair(mul->first, mul->second),
                        std::pair(mul->second, mul->first)}) {
      moe::Activation act;
      Value u = tryActivation(a, act);
      if (!u)
        continue;
      auto gate = matchLinearPart(u), up = matchLinearPart(b);
      if (gate && up && gate->first == up->first) {
        f.input = gate->first;
        f.gate = gate->second;
        f.up = up->second;
        f.act = act;
        return f;
      }
    }
  }
  moe::Activation act;
  if (Value u = tryActivation(h, act)) {
    if (auto gate = matchLinearPart(u)) {
      f.input = gate->first;
      f.gate = gate->second;
      f.act = act;
      return f;
    }
  }
  why = "the expert FFN is not down(act(gate(x)) [* up(x)]) with constant "
        "weights and a SiLU, ReLU or GELU (erf) activation";
  return failure();
}

/// True when `v` is a constant tensor of zeros.
bool isZeroConstant(Value v) {
  auto c = skipViews(v).getDefiningOp<arith::ConstantOp>();
  if (!c)
    return false;
  if (auto r = dyn_cast<DenseResourceElementsAttr>(c.getValue())) {
    AsmResourceBlob *blob = r.getRawHandle().getBlob();
    return blob && llvm::all_of(blob->getData(), [](char b) { return b == 0; });
  }
  auto dense = dyn_cast<DenseElementsAttr>(c.getValue());
  return dense && dense.isSplat() &&
         (isa<FloatType>(dense.getElementType())
              ? dense.getSplatValue<APFloat>().isZero()
              : dense.getSplatValue<APInt>().isZero());
}

/// The backward slice of `v` (ops it depends on).
SetVector<Operation *> sliceOf(Value v) {
  SetVector<Operation *> slice;
  BackwardSliceOptions opts;
  opts.inclusive = true;
  // Gathers read their source inside the body (tensor.extract).
  opts.omitUsesFromAbove = false;
  (void)getBackwardSlice(v, &slice, opts);
  return slice;
}


/// The [K, N] matrix a WeightRef denotes for expert `e`, as raw bytes.
FailureOr<std::vector<char>> realize(WeightRef w, int64_t e,
                                     SmallVectorImpl<int64_t> &shape) {
  FailureOr<std::vector<char>> all = constantBytes(w.src);
  if (failed(all))
    return failure();
  auto t = cast<RankedTensorType>(w.src.getType());
  unsigned eb = t.getElementTypeBitWidth() / 8;
  int64_t rows = t.getDimSize(t.getRank() - 2),
          cols = t.getDimSize(t.getRank() - 1);
  const char *base = all->data();
  if (w.stacked) {
    if (e >= t.getDimSize(0))
      return failure();
    base += e * rows * cols * eb;
  }
  int64_t k = w.transposed ? cols : rows, n = w.transposed ? rows : cols;
  int64_t cb = w.colBegin, ce = w.colEnd < 0 ? n : w.colEnd;
  if (ce > n || cb >= ce)
    return failure();
  std::vector<char> out;
  out.reserve(k * (ce - cb) * eb);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = cb; j < ce; ++j) {
      int64_t src = w.transposed ? j * cols + i : i * cols + j;
      out.insert(out.end(), base + src * eb, base + (src + 1) * eb);
    }
  shape.assign({k, ce - cb});
  return out;
}

/// Stacks the experts' [K, N] matrices into one [E, K, N] weight blob.
FailureOr<Value> stack(OpBuilder &b, Location loc,
                       ArrayRef<std::pair<int64_t, WeightRef>> parts,
                       StringRef name) {
  std::vector<char> all;
  SmallVector<int64_t> shape, first;
  for (auto &[e, w] : parts) {
    FailureOr<std::vector<char>> bytes = realize(w, e, shape);
    if (failed(bytes) || (!first.empty() && shape != first))
      return failure();
    first = shape;
    all.insert(all.end(), bytes->begin(), bytes->end());
  }
  Type elt = cast<RankedTensorType>(parts[0].second.src->getResult(0).getType())
                 .getElementType();
  auto type =
      RankedTensorType::get({int64_t(parts.size()), first[0], first[1]}, elt);
  return makeBlobConstant(b, loc, type, all, name);
}

/// The router of one MoE layer, read from its selection top-k (or, for
/// Switch Transformer, its top-1 ArgMax).
struct Router {
  /// The op that selects the experts: a moe.topk, or the ArgMax generic.
  Operation *select = nullptr;
  int64_t k = 1;
  /// The expert mask the loop must read (Switch: the one-hot, or the one-hot
  /// times its expert-capacity mask); null when not checked.
  Value expertMask;
  /// [..., E]; leading dims are the tokens.
  Value logits;
  /// The scores s = score_func(logits) the weights are read from.
  Value scores;
  moe::ScoreFunc score = moe::ScoreFunc::softmax;
  /// Selection-only bias (DeepSeek-V3's e_score_correction_bias), [E].
  Value bias;
  int64_t numGroups = 1, topkGroups = 1;
  moe::GroupScore groupScore = moe::GroupScore::max;
  /// The routing weights the experts are scaled by: the top-k values (or
  /// the scores gathered at the top-k indices), possibly renormalised and
  /// scaled.
  Value weights;
  bool renormalize = false;
  double scaling = 1.0;
};

/// A generic whose body is `arith.select` of its three inputs: returns them.
std::optional<std::array<Value, 3>> matchSelect(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 3 || g.getNumResults() != 1)
    return std::nullopt;
  SmallVector<Operation *> ops = bodyOps(g);
  Block *b = g.getBody();
  if (ops.size() != 1 || !isa<arith::SelectOp>(ops[0]) ||
      b->getTerminator()->getOperand(0) != ops[0]->getResult(0))
    return std::nullopt;
  for (unsigned i = 0; i < 3; ++i)
    if (ops[0]->getOperand(i) != b->getArgument(i))
      return std::nullopt;
  return std::array<Value, 3>{g.getDpsInputs()[0], g.getDpsInputs()[1],
                              g.getDpsInputs()[2]};
}

/// A one-input generic whose body is one op `OpTy(arg, C)` with C a scalar
/// constant (either operand order): returns the input and C.
template <typename OpTy>
std::optional<std::pair<Value, Attribute>> matchUnaryConst(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1 || g.getNumResults() != 1)
    return std::nullopt;
  SmallVector<Operation *> ops = bodyOps(g);
  Block *b = g.getBody();
  if (ops.size() != 1 || !isa<OpTy>(ops[0]) ||
      b->getTerminator()->getOperand(0) != ops[0]->getResult(0))
    return std::nullopt;
  for (unsigned i = 0; i < 2; ++i) {
    Attribute c;
    if (ops[0]->getOperand(i) == b->getArgument(0) &&
        matchPattern(ops[0]->getOperand(1 - i), m_Constant(&c)))
      return std::make_pair(g.getDpsInputs()[0], c);
  }
  return std::nullopt;
}

/// The value of a scalar float constant (a rank-0 or splat tensor constant,
/// or a scalar constant).
std::optional<double> scalarFloat(Value v) {
  auto c = skipViews(v).getDefiningOp<arith::ConstantOp>();
  if (!c)
    return std::nullopt;
  if (auto f = dyn_cast<FloatAttr>(c.getValue()))
    return f.getValueAsDouble();
  auto d = dyn_cast<DenseFPElementsAttr>(c.getValue());
  if (!d || (!d.isSplat() && d.getNumElements() != 1))
    return std::nullopt;
  return (*d.getValues<APFloat>().begin()).convertToDouble();
}

/// An element-wise binary generic `x OP c` (either order) with `c` a scalar
/// constant: returns x and the constant.
template <typename OpTy>
std::optional<std::pair<Value, double>> matchScalarBinary(Value v) {
  auto bin = matchBinary<OpTy>(v);
  if (!bin)
    return std::nullopt;
  if (std::optional<double> c = scalarFloat(bin->second))
    return std::make_pair(bin->first, *c);
  if (std::optional<double> c = scalarFloat(bin->first))
    return std::make_pair(bin->second, *c);
  return std::nullopt;
}

/// True for a float constant whose elements are all `value`.
bool isSplatConstant(Value v, double value) {
  auto c = skipViews(v).getDefiningOp<arith::ConstantOp>();
  if (!c)
    return false;
  if (auto f = dyn_cast<FloatAttr>(c.getValue()))
    return f.getValueAsDouble() == value;
  if (auto r = dyn_cast<DenseResourceElementsAttr>(c.getValue())) {
    FailureOr<std::vector<char>> bytes = constantBytes(c);
    if (failed(bytes) || !r.getElementType().isF32())
      return false;
    for (size_t i = 0; i + 4 <= bytes->size(); i += 4) {
      float f;
      std::memcpy(&f, bytes->data() + i, 4);
      if (f != value)
        return false;
    }
    return true;
  }
  auto d = dyn_cast<DenseFPElementsAttr>(c.getValue());
  return d && llvm::all_of(d.getValues<APFloat>(), [&](const APFloat &x) {
           return x.convertToDouble() == value;
         });
}

/// A reduction over `dim` of a single input with a single-op body `OpTy`:
/// returns the input.
template <typename OpTy> Value matchReduce(Value v, int64_t dim) {
  auto red = skipViews(v).getDefiningOp<linalg::ReduceOp>();
  if (!red || red.getInputs().size() != 1 ||
      red.getDimensions() != ArrayRef<int64_t>{dim})
    return {};
  Block &body = red.getCombiner().front();
  if (body.getOperations().size() != 2 || !isa<OpTy>(body.front()))
    return {};
  return red.getInputs()[0];
}

/// `x` reshaped from [T, E] into [T, G, E / G]: returns x.
Value matchGroupView(Value v, int64_t groups) {
  auto e = v.getDefiningOp<tensor::ExpandShapeOp>();
  if (!e)
    return {};
  auto t = cast<RankedTensorType>(e.getType());
  auto src = cast<RankedTensorType>(e.getSrc().getType());
  if (t.getRank() != 3 || src.getRank() != 2 || t.getDimSize(1) != groups ||
      t.getDimSize(0) != src.getDimSize(0))
    return {};
  return e.getSrc();
}

/// Reads the group-limited selection of DeepSeek's routers: `sel` is
/// select(!expand(scatter(zeros, topk(group_scores).indices, ones)), fill,
/// c). Fills `r` and returns c, or an empty value with `why` set.
Value matchGroupLimited(Value maskV, Value fill, Value c, Router &r,
                        std::string &why) {
  why = "group-limited routing not recognised";
  // mask = !(group_mask_expanded != 0)
  auto notOp = matchUnaryConst<arith::XOrIOp>(maskV);
  if (!notOp || !isa<BoolAttr, IntegerAttr>(notOp->second))
    return {};
  if (auto ia = dyn_cast<IntegerAttr>(notOp->second);
      ia && !ia.getValue().isAllOnes())
    return {};
  if (auto ba = dyn_cast<BoolAttr>(notOp->second); ba && !ba.getValue())
    return {};
  auto cmpG = notOp->first.getDefiningOp<linalg::GenericOp>();
  if (!cmpG || cmpG.getNumDpsInputs() != 1)
    return {};
  SmallVector<Operation *> cops = bodyOps(cmpG);
  auto cmp =
      cops.size() == 1 ? dyn_cast<arith::CmpFOp>(cops[0]) : arith::CmpFOp();
  APFloat zero(0.0f);
  if (!cmp || cmp.getPredicate() != arith::CmpFPredicate::UNE ||
      cmp.getLhs() != cmpG.getBody()->getArgument(0) ||
      !matchPattern(cmp.getRhs(), m_ConstantFloat(&zero)) || !zero.isZero())
    return {};
  // [T, G, 1] -> [T, G, E/G] broadcast, collapsed to [T, E].
  Value bc = skipViews(cmpG.getDpsInputs()[0]);
  auto bg = bc.getDefiningOp<linalg::GenericOp>();
  if (!bg || bg.getNumDpsInputs() != 1 || !bodyOps(bg).empty() ||
      bg.getBody()->getTerminator()->getOperand(0) !=
          bg.getBody()->getArgument(0))
    return {};
  auto inT = cast<RankedTensorType>(bg.getDpsInputs()[0].getType());
  auto outT = cast<RankedTensorType>(bg.getResult(0).getType());
  if (inT.getRank() != 3 || outT.getRank() != 3 || inT.getDimSize(2) != 1 ||
      inT.getDimSize(1) != outT.getDimSize(1))
    return {};
  int64_t groups = outT.getDimSize(1);
  auto sc =
      skipViews(bg.getDpsInputs()[0]).getDefiningOp<moe::ScatterElementsOp>();
  if (!sc || sc.getAxis() != 1 || sc.getReduction() != moe::Reduction::none ||
      !isZeroConstant(sc.getData()) || !isSplatConstant(sc.getUpdates(), 1.0))
    return {};
  auto gtop = sc.getIndices().getDefiningOp<moe::TopKOp>();
  if (!gtop || gtop.getIndices() != sc.getIndices() || gtop.getAxis() != 1 ||
      !gtop.getLargest())
    return {};
  // Group scores: max over the group (V2) or the sum of its top two (V3).
  Value gs = gtop.getInput();
  if (Value in = matchReduce<arith::MaximumFOp>(gs, 2)) {
    if (matchGroupView(in, groups) != c) {
      why = "the group scores are not the maxima of the selection scores";
      return {};
    }
    r.groupScore = moe::GroupScore::max;
  } else if (Value in = matchReduce<arith::AddFOp>(gs, 2)) {
    auto t2 = skipViews(in).getDefiningOp<moe::TopKOp>();
    if (!t2 || t2.getValues() != skipViews(in) || t2.getK() != 2 ||
        t2.getAxis() != 2 || !t2.getLargest() ||
        matchGroupView(t2.getInput(), groups) != c) {
      why = "the group scores are not the sums of the two best selection "
            "scores";
      return {};
    }
    r.groupScore = moe::GroupScore::top2_sum;
  } else {
    why = "the group scores are neither a max nor a top-2 sum";
    return {};
  }
  // Masked-out experts must never win: -inf, or 0 below positive scores.
  if (!isSplatConstant(fill, -std::numeric_limits<double>::infinity()) &&
      !isSplatConstant(fill, 0.0)) {
    why = "masked-out experts are filled with a value that could win";
    return {};
  }
  r.numGroups = groups;
  r.topkGroups = gtop.getK();
  return c;
}

/// Scaling: the weights times a scalar (routed_scaling_factor) become the
/// router's weights and `scaling`.
void matchScaling(Router &r) {
  for (Operation *user : r.weights.getUsers()) {
    if (user->getNumResults() != 1)
      continue;
    auto mul = matchScalarBinary<arith::MulFOp>(user->getResult(0));
    if (mul && mul->first == r.weights) {
      r.weights = user->getResult(0);
      r.scaling = mul->second;
      return;
    }
  }
}

/// Matches the router that ends at the selection top-k `topk`. Returns
/// nullopt when `topk` is not over router scores at all; otherwise a Router,
/// or a failure with `why` set (a router that cannot be raised).
std::optional<FailureOr<Router>> matchRouter(moe::TopKOp topk,
                                             std::string &why) {
  auto in = cast<RankedTensorType>(topk.getInput().getType());
  if (in.getRank() != 2 || topk.getAxis() != 1 || !topk.getLargest())
    return std::nullopt;
  Router r;
  r.select = topk;
  r.k = topk.getK();
  Value c = skipViews(topk.getInput());
  if (auto sel = matchSelect(c)) {
    std::string groupWhy;
    Value inner = skipViews((*sel)[2]);
    // Only a select over scores counts as a router.
    Value probe = inner;
    if (auto add = matchBinary<arith::AddFOp>(probe))
      probe = skipViews(add->first);
    if (!probe.getDefiningOp<linalg::SoftmaxOp>() && !matchSigmoid(probe))
      return std::nullopt;
    c = matchGroupLimited((*sel)[0], (*sel)[1], inner, r, groupWhy);
    if (!c) {
      why = groupWhy;
      return FailureOr<Router>(failure());
    }
  }
  // Top-k over the logits themselves, then a softmax over the k values
  // (GPT-OSS, Granite-MoE): softmax is monotonic, so these are the experts
  // of the largest softmax scores, and a softmax over k of the logits is
  // the full softmax renormalised over those k.
  if (r.numGroups == 1 && !c.getDefiningOp<linalg::SoftmaxOp>() &&
      !matchSigmoid(c)) {
    for (Operation *user : topk.getValues().getUsers()) {
      auto sm = dyn_cast<linalg::SoftmaxOp>(user);
      if (!sm || sm.getDimension() != 1)
        continue;
      r.logits = c;
      r.scores = c;
      r.score = moe::ScoreFunc::softmax;
      r.weights = sm.getResult()[0];
      r.renormalize = true;
      matchScaling(r);
      return FailureOr<Router>(r);
    }
  }
  // Selection scores: s, or s + bias with a constant [E] bias.
  Value s = c;
  if (auto add = matchBinary<arith::AddFOp>(c)) {
    for (auto [a, b] : {std::pair(add->first, add->second),
                        std::pair(add->second, add->first)}) {
      auto bc = skipViews(b).getDefiningOp<arith::ConstantOp>();
      auto bt = bc ? cast<RankedTensorType>(bc.getType()) : RankedTensorType();
      if (bt && bt.getRank() == 1 && bt.getDimSize(0) == in.getDimSize(1)) {
        s = skipViews(a);
        r.bias = bc;
        break;
      }
    }
    if (!r.bias)
      return std::nullopt;
  }
  if (auto sm = s.getDefiningOp<linalg::SoftmaxOp>();
      sm && sm.getDimension() == 1) {
    r.logits = sm.getInput();
  } else if (Value x = matchSigmoid(s)) {
    r.logits = x;
    r.score = moe::ScoreFunc::sigmoid;
  } else {
    return std::nullopt;
  }
  r.scores = s;
  if (r.numGroups > 1 &&
      (in.getDimSize(1) % r.numGroups != 0 ||
       int64_t(topk.getK()) >
           r.topkGroups * (in.getDimSize(1) / r.numGroups))) {
    why = "top-k exceeds the experts of the selected groups";
    return FailureOr<Router>(failure());
  }
  // The weights: the top-k values when they are the scores themselves (no
  // bias), else the scores gathered at the top-k indices.
  Value base;
  if (!r.bias)
    base = topk.getValues();
  for (Operation *user : topk.getIndices().getUsers()) {
    auto g = dyn_cast<linalg::GenericOp>(user);
    if (!g || g.getNumDpsInputs() != 1 ||
        g.getDpsInputs()[0] != topk.getIndices() || g.getNumResults() != 1)
      continue;
    // out[t, j] = s[t, idx[t, j]]
    Value src;
    bool rowIsD0 = false;
    g.getBody()->walk([&](tensor::ExtractOp ex) {
      src = ex.getTensor();
      if (ex.getIndices().size() == 2)
        if (auto li = ex.getIndices()[0].getDefiningOp<linalg::IndexOp>())
          rowIsD0 = li.getDim() == 0;
    });
    if (src && skipViews(src) == s && rowIsD0 &&
        g.getIndexingMapsArray()[0].isIdentity() &&
        g.getIndexingMapsArray()[1].isIdentity())
      base = g.getResult(0);
  }
  if (!base) {
    why = "the routing weights are not the scores of the selected experts "
          "(a selection bias must not reach the weights)";
    return FailureOr<Router>(failure());
  }
  r.weights = base;
  // Renormalisation: w / (sum(w, axis 1, keepdims) [+ eps]).
  for (Operation *user : base.getUsers()) {
    if (user->getNumResults() != 1)
      continue;
    auto div = matchBinary<arith::DivFOp>(user->getResult(0));
    if (!div || div->first != base)
      continue;
    Value den = skipViews(div->second);
    if (auto eps = matchScalarBinary<arith::AddFOp>(den)) {
      // DeepSeek-V3 adds 1e-20 to the sum: below float resolution for any
      // sum of scores that is not itself ~0.
      if (std::abs(eps->second) > 1e-12)
        continue;
      den = skipViews(eps->first);
    } else if (auto floor = matchScalarBinary<arith::MaximumFOp>(den)) {
      // ERNIE 4.5 clamps the sum from below (norm_min, 1e-12): softmax
      // scores of the top-k sum to at least 1/E, so a floor up to 1/E never
      // applies.
      if (r.score != moe::ScoreFunc::softmax ||
          floor->second > 1.0 / double(in.getDimSize(1)))
        continue;
      den = skipViews(floor->first);
    }
    Value red = matchReduce<arith::AddFOp>(den, 1);
    if (red && red == base) {
      r.weights = user->getResult(0);
      r.renormalize = true;
      break;
    }
  }
  matchScaling(r);
  return FailureOr<Router>(r);
}

/// True when `g` is the importer's ArgMax over the last dim of a single
/// input that picks the first of equal maxima (outputs: values, i64 indices).
bool isFirstArgMaxLastDim(linalg::GenericOp g) {
  if (g.getNumDpsInputs() != 1 || g.getNumResults() != 2 ||
      !cast<RankedTensorType>(g.getResult(1).getType())
           .getElementType()
           .isInteger(64))
    return false;
  auto in = cast<RankedTensorType>(g.getDpsInputs()[0].getType());
  SmallVector<utils::IteratorType> iters = g.getIteratorTypesArray();
  for (int64_t d = 0; d < in.getRank(); ++d)
    if ((iters[d] == utils::IteratorType::reduction) != (d == in.getRank() - 1))
      return false;
  bool ogt = false, lastWins = false;
  g.getBody()->walk([&](Operation *op) {
    if (auto c = dyn_cast<arith::CmpFOp>(op))
      ogt |= c.getPredicate() == arith::CmpFPredicate::OGT;
    if (auto c = dyn_cast<arith::CmpIOp>(op))
      lastWins |= c.getPredicate() == arith::CmpIPredicate::sgt;
  });
  return ogt && !lastWins;
}

/// An integer scalar that is a constant, or an element of a constant tensor
/// read at constant indices.
std::optional<int64_t> constantScalarInt(Value v) {
  APInt c;
  if (matchPattern(v, m_ConstantInt(&c)))
    return c.getSExtValue();
  auto ex = v.getDefiningOp<tensor::ExtractOp>();
  DenseIntElementsAttr d;
  if (!ex || !matchPattern(ex.getTensor(), m_Constant(&d)))
    return std::nullopt;
  SmallVector<uint64_t> at;
  for (Value i : ex.getIndices()) {
    if (!matchPattern(i, m_ConstantInt(&c)))
      return std::nullopt;
    at.push_back(c.getZExtValue());
  }
  return d.getValues<APInt>()[at].getSExtValue();
}

/// The importer's one-hot of `indices` along the last dim with off/on values
/// 0 and 1 (as imported, or canonicalized to an extui of the comparison):
/// the generic, or null.
linalg::GenericOp matchOneHot(Operation *user, Value indices) {
  auto g = dyn_cast<linalg::GenericOp>(user);
  if (!g || g.getNumDpsInputs() != 1 || g.getNumResults() != 1 ||
      skipViews(g.getDpsInputs()[0]) != indices ||
      !isa<IntegerType>(getElementTypeOrSelf(g.getResult(0).getType())))
    return {};
  int64_t rank = cast<RankedTensorType>(g.getResult(0).getType()).getRank();
  arith::CmpIOp hit;
  g.getBody()->walk([&](arith::CmpIOp c) {
    if (c.getPredicate() != arith::CmpIPredicate::eq)
      return;
    for (Value o : c->getOperands()) {
      if (auto ic = o.getDefiningOp<arith::IndexCastOp>())
        o = ic.getIn();
      if (auto li = o.getDefiningOp<linalg::IndexOp>();
          li && int64_t(li.getDim()) == rank - 1)
        hit = c;
    }
  });
  if (!hit)
    return {};
  Value y = g.getBody()->getTerminator()->getOperand(0);
  if (auto ext = y.getDefiningOp<arith::ExtUIOp>();
      ext && ext.getIn() == hit.getResult())
    return g;
  auto sel = y.getDefiningOp<arith::SelectOp>();
  if (sel && sel.getCondition() == hit.getResult() &&
      constantScalarInt(sel.getTrueValue()) == 1 &&
      constantScalarInt(sel.getFalseValue()) == 0)
    return g;
  return {};
}

/// The importer's CumSum generic over `v`: its axis and whether it is
/// exclusive, or nullopt.
std::optional<std::pair<int64_t, bool>> matchCumSum(Operation *user, Value v) {
  auto g = dyn_cast<linalg::GenericOp>(user);
  if (!g || g.getNumDpsInputs() != 1 || g.getNumResults() != 1 ||
      g.getDpsInputs()[0] != v)
    return std::nullopt;
  int64_t rank = cast<RankedTensorType>(v.getType()).getRank();
  AffineMap in = g.getIndexingMapsArray()[0];
  if (g.getNumLoops() != unsigned(rank + 1) || in.getNumResults() != rank)
    return std::nullopt;
  std::optional<int64_t> axis;
  for (int64_t d = 0; d < rank; ++d)
    if (in.getResult(d) == getAffineDimExpr(rank, g.getContext()))
      axis = d;
  std::optional<bool> exclusive;
  g.getBody()->walk([&](arith::CmpIOp c) {
    switch (c.getPredicate()) {
    case arith::CmpIPredicate::ule:
    case arith::CmpIPredicate::uge:
      exclusive = false;
      break;
    case arith::CmpIPredicate::ult:
    case arith::CmpIPredicate::ugt:
      exclusive = true;
      break;
    default:
      break;
    }
  });
  if (!axis || !exclusive)
    return std::nullopt;
  return std::make_pair(*axis, *exclusive);
}

/// The scalar value of an integer constant (rank 0, one element or splat).
std::optional<int64_t> scalarInt(Value v) {
  DenseIntElementsAttr d;
  if (!matchPattern(skipViews(v), m_Constant(&d)) ||
      (!d.isSplat() && d.getNumElements() != 1))
    return std::nullopt;
  return (*d.begin()).getSExtValue();
}

/// Matches Switch Transformer's router (transformers
/// SwitchTransformersTop1Router) from its ArgMax `am`: probs =
/// softmax(logits); idx = argmax(probs); mask = one_hot(idx) [* (cumsum(
/// one_hot, tokens) <= capacity)]; weight = max(probs). Nullopt when `am`
/// is not such a router; a failure with `why` (and `diagOp`) when it cannot
/// be raised.
std::optional<FailureOr<Router>>
matchSwitchRouter(linalg::GenericOp am, std::string &why, Operation *&diagOp) {
  if (!isFirstArgMaxLastDim(am))
    return std::nullopt;
  Value probs = skipViews(am.getDpsInputs()[0]);
  auto sm = probs.getDefiningOp<linalg::SoftmaxOp>();
  auto pt = cast<RankedTensorType>(probs.getType());
  if (!sm || int64_t(sm.getDimension()) != pt.getRank() - 1 ||
      !pt.hasStaticShape())
    return std::nullopt;
  Value idx = am.getResult(1);
  linalg::GenericOp oneHot;
  for (Operation *user : idx.getUsers())
    if ((oneHot = matchOneHot(user, idx)))
      break;
  if (!oneHot)
    return std::nullopt;
  auto ohT = cast<RankedTensorType>(oneHot.getResult(0).getType());
  if (ohT.getShape() != pt.getShape())
    return std::nullopt;
  Router r;
  r.select = am;
  r.k = 1;
  r.logits = sm.getInput();
  r.scores = probs;
  r.expertMask = oneHot.getResult(0);
  // The routing weight: max(probs) over the experts, i.e. probs at idx.
  for (Operation *op : probs.getUsers())
    for (Value res : op->getResults())
      if (matchReduce<arith::MaximumFOp>(res, pt.getRank() - 1) == probs)
        r.weights = res;
  if (!r.weights) {
    why = "the routing weight is not the largest router probability";
    diagOp = am;
    return FailureOr<Router>(failure());
  }
  // Expert capacity: cumsum(one_hot) along the tokens of a sequence,
  // compared with the capacity; the one-hot masked with it.
  for (Operation *user : r.expertMask.getUsers()) {
    std::optional<std::pair<int64_t, bool>> cs =
        matchCumSum(user, r.expertMask);
    if (!cs)
      continue;
    diagOp = user;
    int64_t n = ohT.getDimSize(cs->first);
    // A 0/1 vector of n entries sums to at most n (n - 1 exclusive).
    int64_t bound = cs->second ? n - 1 : n;
    Value cum = user->getResult(0);
    std::optional<int64_t> capacity;
    bool strictLess = false;
    Value cmpRes;
    for (Operation *cu : cum.getUsers()) {
      auto g = dyn_cast<linalg::GenericOp>(cu);
      if (!g || g.getNumDpsInputs() != 2 || g.getNumResults() != 1)
        continue;
      SmallVector<Operation *> ops = bodyOps(g);
      auto cmp =
          ops.size() == 1 ? dyn_cast<arith::CmpIOp>(ops[0]) : arith::CmpIOp();
      if (!cmp || cmp.getLhs() != g.getBody()->getArgument(0) ||
          cmp.getRhs() != g.getBody()->getArgument(1))
        continue;
      // cum <= C, cum < C, or C >= cum, C > cum.
      arith::CmpIPredicate p = cmp.getPredicate();
      Value other;
      if (g.getDpsInputs()[0] == cum &&
          (p == arith::CmpIPredicate::sle || p == arith::CmpIPredicate::slt)) {
        other = g.getDpsInputs()[1];
        strictLess = p == arith::CmpIPredicate::slt;
      } else if (g.getDpsInputs()[1] == cum &&
                 (p == arith::CmpIPredicate::sge ||
                  p == arith::CmpIPredicate::sgt)) {
        other = g.getDpsInputs()[0];
        strictLess = p == arith::CmpIPredicate::sgt;
      }
      if (!other || !(capacity = scalarInt(other)))
        continue;
      cmpRes = g.getResult(0);
      break;
    }
    if (!cmpRes) {
      why = "expert capacity can drop tokens; not raised: the capacity "
            "mask is not the running count compared with a constant";
      return FailureOr<Router>(failure());
    }
    // Counts up to `keepUpTo` pass the mask.
    int64_t keepUpTo = strictLess ? *capacity - 1 : *capacity;
    if (bound > keepUpTo) {
      why = "expert capacity can drop tokens; not raised: capacity " +
            std::to_string(keepUpTo) + " is below the " + std::to_string(n) +
            " tokens per sequence";
      return FailureOr<Router>(failure());
    }
    // Always true: the mask is one_hot * ext(true). Find that product.
    Value keep = cmpRes;
    for (Operation *ku : cmpRes.getUsers())
      if (auto g = dyn_cast<linalg::GenericOp>(ku);
          g && g.getNumDpsInputs() == 1 && g.getNumResults() == 1 &&
          bodyOps(g).size() == 1 &&
          isa<arith::ExtUIOp, arith::UIToFPOp>(bodyOps(g)[0]))
        keep = g.getResult(0);
    Value masked;
    for (Operation *mu : keep.getUsers()) {
      if (mu->getNumResults() != 1)
        continue;
      auto mul = matchBinary<arith::MulIOp>(mu->getResult(0));
      if (mul && ((mul->first == r.expertMask && mul->second == keep) ||
                  (mul->second == r.expertMask && mul->first == keep)))
        masked = mu->getResult(0);
    }
    if (!masked) {
      why = "expert capacity can drop tokens; not raised: the capacity mask "
            "is not applied to the one-hot expert mask by a product";
      return FailureOr<Router>(failure());
    }
    r.expertMask = masked;
    diagOp = nullptr;
    break;
  }
  return FailureOr<Router>(r);
}

/// True when `scale` (through views) gathers elements of `weights`.
bool isGatherOf(Value scale, Value weights) {
  auto g = skipViews(scale).getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1)
    return false;
  Value src;
  unsigned extracts = 0;
  g.getBody()->walk([&](tensor::ExtractOp ex) {
    src = ex.getTensor();
    ++extracts;
  });
  return extracts == 1 && skipViews(src) == skipViews(weights);
}

/// The value of a scalar index tensor: a constant, or (transformers 5.x,
/// which loops over the experts hit by the example) element `i` of the list
/// of hit experts, taken as expert `i`; the caller then requires that all
/// experts were hit, which makes the two the same.
std::optional<int64_t> scalarIndex(Value v) {
  v = skipViews(v);
  if (auto c = v.getDefiningOp<arith::ConstantOp>()) {
    auto d = dyn_cast<DenseIntElementsAttr>(c.getValue());
    if (d && d.getNumElements() == 1)
      return (*d.begin()).getSExtValue();
    return std::nullopt;
  }
  Value list;
  std::optional<int64_t> pos;
  if (auto sl = v.getDefiningOp<tensor::ExtractSliceOp>()) {
    // One element sliced out of the [n, 1] (transposed) list.
    auto src = cast<RankedTensorType>(sl.getSource().getType());
    if (sl.getType().getNumElements() != 1 ||
        llvm::any_of(sl.getStaticOffsets(), ShapedType::isDynamic))
      return std::nullopt;
    int64_t at = 0;
    for (int64_t d = 0; d < src.getRank(); ++d)
      if (src.getDimSize(d) != 1)
        at = sl.getStaticOffsets()[d];
    list = sl.getSource();
    pos = at;
  } else if (auto fe = v.getDefiningOp<tensor::FromElementsOp>()) {
    // One element read out of the list with a constant index.
    auto ex = fe.getElements().size() == 1
                  ? fe.getElements()[0].getDefiningOp<tensor::ExtractOp>()
                  : tensor::ExtractOp();
    if (!ex || ex.getIndices().size() != 1)
      return std::nullopt;
    APInt c;
    if (!matchPattern(ex.getIndices()[0], m_ConstantInt(&c)))
      return std::nullopt;
    list = ex.getTensor();
    pos = c.getSExtValue();
  } else {
    auto g = v.getDefiningOp<linalg::GenericOp>();
    if (!g || g.getNumDpsInputs() != 1 ||
        cast<RankedTensorType>(g.getResult(0).getType()).getRank() != 0)
      return std::nullopt;
    g.getBody()->walk([&](tensor::ExtractOp ex) { list = ex.getTensor(); });
    pos = scalarIndex(g.getDpsInputs()[0]);
  }
  if (!list || !pos)
    return std::nullopt;
  // The hit list may be cut into one-element slices, one per iteration.
  Value l = skipViews(list);
  int64_t offset = 0;
  if (auto sl = l.getDefiningOp<tensor::ExtractSliceOp>()) {
    if (ShapedType::isDynamic(sl.getStaticOffsets()[0]))
      return std::nullopt;
    offset = sl.getStaticOffsets()[0];
    l = sl.getSource();
  }
  for (Operation *op : sliceOf(l))
    if (isa<moe::NonZeroOp>(op))
      return offset + *pos;
  return std::nullopt;
}

/// The expert id of the chain that selected the tokens of one expert: the
/// index of the row of the [experts, k, tokens] expert mask fed to NonZero.
std::optional<int64_t> expertId(moe::NonZeroOp nz, int64_t numExperts) {
  for (Operation *op : sliceOf(nz.getInput())) {
    auto g = dyn_cast<linalg::GenericOp>(op);
    if (!g || g.getNumDpsInputs() != 1 ||
        cast<RankedTensorType>(g.getDpsInputs()[0].getType())
                .getNumElements() != 1)
      continue;
    Value mask;
    g.getBody()->walk([&](tensor::ExtractOp ex) { mask = ex.getTensor(); });
    if (!mask || cast<RankedTensorType>(mask.getType()).getRank() != 3)
      continue;
    std::optional<int64_t> e = scalarIndex(g.getDpsInputs()[0]);
    if (!e)
      return std::nullopt;
    return *e < 0 ? *e + numExperts : *e;
  }
  return std::nullopt;
}

struct RaiseExperts : public moec::impl::MoERaiseExpertsBase<RaiseExperts> {
  using Base::Base;

  void runOnOperation() override {
    func::FuncOp func = getOperation();
    SmallVector<moe::TopKOp> topks;
    func.walk([&](moe::TopKOp t) { topks.push_back(t); });
    for (moe::TopKOp t : topks) {
      std::string why;
      std::optional<FailureOr<Router>> r = matchRouter(t, why);
      if (!r)
        continue; // not a router
      if (succeeded(*r) && succeeded(raise(**r, why)))
        continue;
      InFlightDiagnostic d = strict ? t.emitError() : t.emitWarning();
      d << "MoE-like region (top-k over router scores) not raised: " << why;
      if (strict)
        return signalPassFailure();
    }
    // Switch Transformer: top-1 by ArgMax of the router probabilities.
    SmallVector<linalg::GenericOp> argmaxes;
    func.walk([&](linalg::GenericOp g) {
      if (isFirstArgMaxLastDim(g))
        argmaxes.push_back(g);
    });
    for (linalg::GenericOp g : argmaxes) {
      std::string why;
      Operation *diagOp = nullptr;
      std::optional<FailureOr<Router>> r = matchSwitchRouter(g, why, diagOp);
      if (!r)
        continue;
      if (succeeded(*r) && succeeded(raise(**r, why)))
        continue;
      Operation *at = diagOp ? diagOp : g.getOperation();
      InFlightDiagnostic d = strict ? at->emitError() : at->emitWarning();
      if (StringRef(why).starts_with("expert capacity"))
        d << why;
      else
        d << "MoE-like region (top-1 argmax over router probabilities) not "
             "raised: "
          << why;
      if (strict)
        return signalPassFailure();
    }
  }

  /// Collects the leaves of the add tree that ends at `root`.
  void addLeaves(Value v, SmallVectorImpl<Value> &leaves) {
    if (auto add = matchBinary<arith::AddFOp>(v)) {
      addLeaves(add->first, leaves);
      addLeaves(add->second, leaves);
      return;
    }
    leaves.push_back(v);
  }

  LogicalResult raise(Router &r, std::string &why) {
    auto logitsT = cast<RankedTensorType>(r.logits.getType());
    int64_t e = logitsT.getDimSize(logitsT.getRank() - 1), tokens = 1;
    for (int64_t d = 0; d + 1 < logitsT.getRank(); ++d)
      tokens = ShapedType::isDynamic(logitsT.getDimSize(d)) ||
                       ShapedType::isDynamic(tokens)
                   ? ShapedType::kDynamic
                   : tokens * logitsT.getDimSize(d);
    // The scatters that consume this router's weights.
    SmallVector<Operation *> scatters;
    getOperation().walk([&](Operation *op) {
      if (!isa<moe::ScatterElementsOp, moe::ScatterNDOp>(op))
        return;
      if (sliceOf(op->getOperand(2)).contains(r.select))
        scatters.push_back(op);
    });
    if (scatters.empty()) {
      bool found = false;
      LogicalResult batched = raiseBatched(r, why, found);
      if (found)
        return batched;
      why = "no expert loop (scatter of weighted expert outputs) and no "
            "batched experts (per-row gathered weights) use its routing "
            "weights";
      return failure();
    }
    // The accumulator: the add tree above the scatters, up to its root.
    Value root = scatters.front()->getResult(0);
    for (bool grew = true; grew;) {
      grew = false;
      for (Operation *user : root.getUsers()) {
        if (user->getNumResults() != 1)
          continue;
        auto add = matchBinary<arith::AddFOp>(user->getResult(0));
        // Terms that do not depend on the routing (a shared expert, a
        // residual) are added after the layer, not part of it.
        Value other = add && add->first == root ? add->second
                      : add                     ? add->first
                                                : Value();
        if (add &&
            (isZeroConstant(other) || sliceOf(other).contains(r.select))) {
          root = user->getResult(0);
          grew = true;
          break;
        }
      }
    }
    SmallVector<Value> leaves;
    addLeaves(root, leaves);
    std::map<int64_t, ExpertFFN> experts;
    Value tokensV;
    for (Value leaf : leaves) {
      if (isZeroConstant(leaf))
        continue;
      Operation *sc = leaf.getDefiningOp();
      if (!sc || !llvm::is_contained(scatters, sc)) {
        why = "the expert outputs are accumulated with something other than "
              "scatters of expert outputs";
        return failure();
      }
      if (!isZeroConstant(sc->getOperand(0))) {
        why = "a scatter does not start from zeros";
        return failure();
      }
      if (auto se = dyn_cast<moe::ScatterElementsOp>(sc);
          se &&
          (se.getAxis() != 0 || se.getReduction() == moe::Reduction::mul ||
           se.getReduction() == moe::Reduction::max ||
           se.getReduction() == moe::Reduction::min)) {
        why = "a ScatterElements is not an index_add over tokens";
        return failure();
      }
      // updates = FFN(x_e) * w_e, either operand order.
      auto mul = matchBinary<arith::MulFOp>(skipViews(sc->getOperand(2)));
      if (!mul) {
        why = "the scattered values are not expert outputs times routing "
              "weights";
        return failure();
      }
      Value scale = mul->second;
      FailureOr<ExpertFFN> f = matchFFN(mul->first, why);
      if (failed(f)) {
        scale = mul->first;
        f = matchFFN(mul->second, why);
      }
      if (failed(f))
        return failure();
      if (!isGatherOf(scale, r.weights)) {
        why = "an expert output is not scaled by its tokens' routing weights";
        return failure();
      }
      // The FFN input gathers rows of the tokens selected by NonZero.
      auto gather = skipViews(f->input).getDefiningOp<linalg::GenericOp>();
      if (!gather || gather.getNumDpsInputs() != 1) {
        why = "an expert's input is not a gather of tokens";
        return failure();
      }
      Value src;
      gather.getBody()->walk(
          [&](tensor::ExtractOp ex) { src = ex.getTensor(); });
      SetVector<Operation *> rows = sliceOf(gather.getDpsInputs()[0]);
      moe::NonZeroOp nz;
      for (Operation *op : rows)
        if (auto n = dyn_cast<moe::NonZeroOp>(op))
          nz = n;
      if (!src || !nz ||
          !sliceOf(sc->getOperand(1)).contains(nz.getOperation()) ||
          !sliceOf(nz.getInput()).contains(r.select) ||
          (r.expertMask &&
           !sliceOf(nz.getInput()).contains(r.expertMask.getDefiningOp()))) {
        why = "an expert's tokens are not selected by NonZero on the router's "
              "expert mask";
        return failure();
      }
      Value base = skipViews(src);
      if (tokensV && base != tokensV) {
        why = "experts read different token tensors";
        return failure();
      }
      tokensV = base;
      std::optional<int64_t> id = expertId(nz, e);
      if (!id || *id < 0 || *id >= e || experts.count(*id)) {
        why = "cannot tell which expert a loop iteration computes";
        return failure();
      }
      experts[*id] = *f;
    }
    if (int64_t(experts.size()) != e) {
      why = "found " + std::to_string(experts.size()) + " of " +
            std::to_string(e) +
            " experts: the exporter unrolled a loop over the experts its "
            "example input hit, baking that routing into the graph; "
            "re-export with an input that routes tokens to every expert";
      return failure();
    }
    return emitLayer(r, root, tokensV, experts, why);
  }

  /// transformers' batched_mm experts, as torch.onnx's dynamo exporter
  /// writes them: every (token, choice) row a = t * k + j gathers its
  /// expert's weights (GatherND by the flattened top-k ids) and multiplies
  /// them with its copy of the token (batch_matmul); the rows are scaled by
  /// the flattened routing weights and summed over the k choices:
  ///   out[t] = sum_j w[t, j] * FFN_{ids[t, j]}(x[t]).
  /// `found` is set once such a layer reads this router; failures after
  /// that say why it was not raised.
  LogicalResult raiseBatched(Router &r, std::string &why, bool &found) {
    auto topk = dyn_cast<moe::TopKOp>(r.select);
    if (!topk)
      return failure();
    Value ids = topk.getIndices();
    auto logitsT = cast<RankedTensorType>(r.logits.getType());
    int64_t e = logitsT.getDimSize(logitsT.getRank() - 1);
    SmallVector<linalg::ReduceOp> reds;
    getOperation().walk([&](linalg::ReduceOp red) {
      if (red.getNumResults() == 1 &&
          matchReduce<arith::AddFOp>(red.getResult(0), 1))
        reds.push_back(red);
    });
    for (linalg::ReduceOp red : reds) {
      Value in = red.getInputs()[0];
      auto inT = cast<RankedTensorType>(in.getType());
      if (inT.getRank() != 3 || inT.getDimSize(1) != r.k)
        continue;
      auto mul = matchBinary<arith::MulFOp>(skipViews(in));
      if (!mul)
        continue;
      for (auto [y, w] : {std::pair(mul->first, mul->second),
                          std::pair(mul->second, mul->first)}) {
        if (skipViews(w) != skipViews(r.weights))
          continue;
        std::string ffnWhy;
        FailureOr<ExpertFFN> f = matchFFN(y, ffnWhy);
        if (failed(f) || !f->gate.ids)
          continue;
        found = true;
        for (WeightRef *ref : {&f->gate, &f->down, f->up ? &*f->up : &f->gate})
          if (!ref->ids || skipViews(ref->ids) != ids ||
              cast<RankedTensorType>(ref->src.getType()).getDimSize(0) != e) {
            why = "the batched experts' weights are not gathered by the "
                  "router's top-k ids, or do not hold one slab per expert";
            return failure();
          }
        // The FFN input: the tokens repeated k times ([T, 1, H] broadcast
        // to [T, k, H]).
        auto rep = skipViews(f->input).getDefiningOp<linalg::GenericOp>();
        auto repT = rep ? cast<RankedTensorType>(rep.getResult(0).getType())
                        : RankedTensorType();
        if (!rep || rep.getNumDpsInputs() != 1 || !bodyOps(rep).empty() ||
            rep.getBody()->getTerminator()->getOperand(0) !=
                rep.getBody()->getArgument(0) ||
            repT.getRank() != 3 || repT.getDimSize(1) != r.k ||
            cast<RankedTensorType>(rep.getDpsInputs()[0].getType())
                    .getDimSize(1) != 1) {
          why = "the batched experts' input is not the tokens repeated once "
                "per choice";
          return failure();
        }
        std::map<int64_t, ExpertFFN> experts;
        for (int64_t i = 0; i < e; ++i)
          experts[i] = *f;
        return emitLayer(r, red.getResult(0), skipViews(rep.getDpsInputs()[0]),
                         experts, why);
      }
    }
    return failure();
  }

  /// Replaces the layer ending at `root` ([tokens, H]) with moe.route +
  /// moe.experts whose weights are stacked from `experts`.
  LogicalResult emitLayer(Router &r, Value root, Value tokensV,
                          const std::map<int64_t, ExpertFFN> &experts,
                          std::string &why) {
    auto logitsT = cast<RankedTensorType>(r.logits.getType());
    int64_t tokens = 1;
    for (int64_t d = 0; d + 1 < logitsT.getRank(); ++d)
      tokens = ShapedType::isDynamic(logitsT.getDimSize(d)) ||
                       ShapedType::isDynamic(tokens)
                   ? ShapedType::kDynamic
                   : tokens * logitsT.getDimSize(d);
    bool gated = experts.begin()->second.up.has_value();
    moe::Activation act = experts.begin()->second.act;
    for (auto &[id, f] : experts)
      if (f.up.has_value() != gated || f.act != act) {
        why = "the experts differ in structure";
        return failure();
      }
    auto rootT = cast<RankedTensorType>(root.getType());
    auto tokT = cast<RankedTensorType>(tokensV.getType());
    if (rootT.getRank() != 2 || rootT.getDimSize(0) != tokens ||
        tokT.getNumElements() != rootT.getNumElements()) {
      why = "the accumulator is not [tokens, hidden]";
      return failure();
    }

    // Rewrite: route + experts replace the whole loop.
    OpBuilder b(root.getContext());
    b.setInsertionPointAfterValue(root);
    Location loc = r.select->getLoc();
    SmallVector<std::pair<int64_t, WeightRef>> gates, ups, downs;
    for (auto &[id, f] : experts) {
      gates.push_back({id, f.gate});
      downs.push_back({id, f.down});
      if (gated)
        ups.push_back({id, *f.up});
    }
    std::string prefix = "moe" + std::to_string(layerCounter++);
    FailureOr<Value> wg = stack(b, loc, gates, prefix + ".w_gate");
    FailureOr<Value> wd = stack(b, loc, downs, prefix + ".w_down");
    FailureOr<Value> wu = gated ? stack(b, loc, ups, prefix + ".w_up")
                                : FailureOr<Value>(Value());
    if (failed(wg) || failed(wd) || failed(wu)) {
      why = "the expert weights differ in shape or are not readable";
      return failure();
    }
    auto wT = RankedTensorType::get(
        {tokens, r.k},
        cast<RankedTensorType>(r.weights.getType()).getElementType());
    auto idxT = RankedTensorType::get({tokens, r.k}, b.getI64Type());
    Value logits = r.logits;
    if (logitsT.getRank() != 2) {
      // [B, S, E] -> [B * S, E]
      SmallVector<ReassociationIndices> groups(2);
      for (int64_t d = 0; d + 1 < logitsT.getRank(); ++d)
        groups[0].push_back(d);
      groups[1].push_back(logitsT.getRank() - 1);
      logits = tensor::CollapseShapeOp::create(b, loc, logits, groups);
    }
    auto route = moe::RouteOp::create(
        b, loc, wT, idxT, logits, r.bias, b.getI64IntegerAttr(r.k),
        moe::ScoreFuncAttr::get(b.getContext(), r.score),
        b.getBoolAttr(r.renormalize), b.getF64FloatAttr(r.scaling),
        b.getI64IntegerAttr(r.numGroups), b.getI64IntegerAttr(r.topkGroups),
        moe::GroupScoreAttr::get(b.getContext(), r.groupScore));
    Value x = tokensV;
    if (tokT != rootT) {
      auto shapeT = RankedTensorType::get({2}, b.getI64Type());
      auto shape = arith::ConstantOp::create(
          b, loc,
          DenseIntElementsAttr::get(shapeT,
                                    ArrayRef<int64_t>(rootT.getShape())));
      x = tensor::ReshapeOp::create(b, loc, rootT, x, shape);
    }
    auto ex = moe::ExpertsOp::create(
        b, loc, rootT, x, route.getIndices(), route.getWeights(), *wg,
        gated ? *wu : Value(), *wd, Value(), Value(), Value(),
        moe::ActivationAttr::get(b.getContext(), act), b.getI64IntegerAttr(0));
    root.replaceAllUsesWith(ex.getResult());
    markSharedExperts(ex, tokensV);
    return success();
  }

  /// Shared experts (Qwen2-MoE, DeepSeek) are dense FFNs of the same tokens
  /// added to the routed experts' output, Qwen2's scaled by a sigmoid gate.
  /// They stay dense; their ops get `moe.shared_expert = i` (the i-th
  /// shared expert added to this layer).
  void markSharedExperts(moe::ExpertsOp ex, Value tokens) {
    // Follow the layer output through views to the adds that consume it.
    SmallVector<Value> outs{ex.getResult()};
    int64_t next = 0;
    for (size_t i = 0; i < outs.size(); ++i) {
      for (Operation *user : outs[i].getUsers()) {
        if (isa<tensor::ReshapeOp, tensor::CollapseShapeOp,
                tensor::ExpandShapeOp, tensor::CastOp>(user)) {
          outs.push_back(user->getResult(0));
          continue;
        }
        if (user->getNumResults() != 1)
          continue;
        auto add = matchBinary<arith::AddFOp>(user->getResult(0));
        if (!add)
          continue;
        Value other = add->first == outs[i] ? add->second : add->first;
        if (!isSharedExpert(other, tokens))
          continue;
        markSlice(other, tokens, next++);
        outs.push_back(user->getResult(0));
      }
    }
  }

  /// True when `v` is FFN(tokens) or sigmoid(tokens @ Wg) * FFN(tokens).
  static bool isSharedExpert(Value v, Value tokens) {
    std::string why;
    auto ffnOf = [&](Value f) {
      FailureOr<ExpertFFN> ffn = matchFFN(f, why);
      return succeeded(ffn) && skipViews(ffn->input) == tokens;
    };
    if (ffnOf(v))
      return true;
    auto mul = matchBinary<arith::MulFOp>(skipViews(v));
    if (!mul)
      return false;
    for (auto [g, f] : {std::pair(mul->first, mul->second),
                        std::pair(mul->second, mul->first)}) {
      Value x = matchSigmoid(skipViews(g));
      if (!x)
        continue;
      auto lin = matchLinear(x);
      if (lin && skipViews(lin->first) == tokens && ffnOf(f))
        return true;
    }
    return false;
  }

  /// Marks the compute ops (MatMuls, element-wise generics) that compute
  /// `v` from `tokens`.
  static void markSlice(Value v, Value tokens, int64_t id) {
    SetVector<Operation *> shared = sliceOf(v);
    SetVector<Operation *> common = sliceOf(tokens);
    Builder b(v.getContext());
    for (Operation *op : shared)
      if (!common.contains(op) && isa<linalg::MatmulOp, linalg::GenericOp>(op))
        op->setAttr("moe.shared_expert", b.getI64IntegerAttr(id));
  }

  unsigned layerCounter = 0;
};
} // namespace
