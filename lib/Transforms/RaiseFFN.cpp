//===- RaiseFFN.cpp - expert FFNs for moe-raise-experts -------------------===//
//
// Reads an expert FFN, down(act(gate(x)) [* up(x)]), back from its output:
// the linear layers and where their weights come from (constants, slabs
// of stacked weights, per-row gathers of the batched form, batch_matmuls
// over all experts of the dense form, column ranges of fused
// projections), the activation (SiLU, ReLU, GELU with erf); and stacks the
// experts' weights into the [E, K, N] blobs of moe.experts.
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

#include "moec/Analysis/ConstantBytes.h"
#include "moec/Analysis/Weights.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Matchers.h"

using namespace mlir;
using namespace moec;

namespace moec::raising {

namespace {

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

/// The dense form of an expert's linear layer (Llama 4: every token through
/// every expert): y[e] = x[e] W[e] over all experts at once, written as
/// batch_matmul(x [E, M, K], W [E, K, N]) with W a constant (or a constant
/// [E, N, K] transposed to it). Expert e's matrix is slab e. Returns {x, W}.
std::optional<std::pair<Value, WeightRef>> matchDenseLinear(Value v) {
  auto bmm = skipViews(v).getDefiningOp<linalg::BatchMatmulOp>();
  if (!bmm || bmm.hasUserDefinedMaps())
    return std::nullopt;
  WeightRef r;
  Value w = skipViews(bmm.getDpsInputs()[1]);
  if (auto t = w.getDefiningOp<linalg::TransposeOp>()) {
    if (t.getPermutation() != ArrayRef<int64_t>{0, 2, 1})
      return std::nullopt;
    r.transposed = true;
    w = skipViews(t.getInput());
  }
  auto c = w.getDefiningOp<arith::ConstantOp>();
  Value x = bmm.getDpsInputs()[0];
  if (!c || cast<RankedTensorType>(c.getType()).getRank() != 3 ||
      cast<RankedTensorType>(c.getType()).getDimSize(0) !=
          cast<RankedTensorType>(x.getType()).getDimSize(0))
    return std::nullopt;
  r.src = c;
  r.stacked = true;
  r.dense = true;
  return std::make_pair(x, r);
}

} // namespace

/// `linalg.matmul(x, W)` with a resolvable constant W: returns {x, W}.
std::optional<std::pair<Value, WeightRef>> matchLinear(Value v) {
  if (auto batched = matchBatchedLinear(v))
    return batched;
  if (auto dense = matchDenseLinear(v))
    return dense;
  auto mm = skipViews(v).getDefiningOp<linalg::MatmulOp>();
  if (!mm)
    return std::nullopt;
  std::optional<WeightRef> w = resolveWeight(mm.getDpsInputs()[1]);
  if (!w)
    return std::nullopt;
  return std::make_pair(mm.getDpsInputs()[0], *w);
}

namespace {

/// One column range [b, e) of a MatMul (a fused projection split with
/// extract_slice on the last dim): returns {x, W restricted to the range}.
std::optional<std::pair<Value, WeightRef>> matchLinearPart(Value v) {
  if (auto sl = skipViews(v).getDefiningOp<tensor::ExtractSliceOp>()) {
    // Rows [M, N], or the dense form's [E, M, N]: whole but the last dim.
    auto t = cast<RankedTensorType>(sl.getSource().getType());
    int64_t last = t.getRank() - 1;
    if ((t.getRank() != 2 && t.getRank() != 3) || !sl.hasUnitStride() ||
        ShapedType::isDynamic(sl.getStaticOffsets()[last]) ||
        ShapedType::isDynamic(sl.getStaticSizes()[last]))
      return std::nullopt;
    for (int64_t d = 0; d < last; ++d)
      if (sl.getStaticOffsets()[d] != 0 ||
          (t.getRank() == 3 && sl.getStaticSizes()[d] != t.getDimSize(d)))
        return std::nullopt;
    auto lin = matchLinear(sl.getSource());
    if (!lin || lin->second.dense != (t.getRank() == 3))
      return std::nullopt;
    lin->second.colBegin = sl.getStaticOffsets()[last];
    lin->second.colEnd = lin->second.colBegin + sl.getStaticSizes()[last];
    return lin;
  }
  return matchLinear(v);
}

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

} // namespace

/// Matches down(act(gate(x)) [* up(x)]) on the FFN output `v`.
namespace {

/// `y + b` with `b` a constant [N] (or [1, N]) broadcast over the rows of a
/// [M, N] `y` (nn.Linear's bias; torch.onnx's Gemm): returns y, and b in
/// `bias`; `v` itself when there is no such add.
Value stripBias(Value v, arith::ConstantOp &bias) {
  auto add = matchBinary<arith::AddFOp>(v);
  if (!add)
    return v;
  auto g = v.getDefiningOp<linalg::GenericOp>();
  auto yT = dyn_cast<RankedTensorType>(v.getType());
  if (!yT || yT.getRank() != 2)
    return v;
  for (unsigned i = 0; i < 2; ++i) {
    Value b = g.getDpsInputs()[i];
    auto c = skipViews(b).getDefiningOp<arith::ConstantOp>();
    auto cT = c ? cast<RankedTensorType>(c.getType()) : RankedTensorType();
    if (!cT || cT.getNumElements() != yT.getDimSize(1) ||
        ShapedType::isDynamic(yT.getDimSize(1)) ||
        !g.getIndexingMapsArray()[1 - i].isIdentity())
      continue;
    // The bias is indexed by the column only.
    AffineMap m = g.getIndexingMapsArray()[i];
    auto bT = cast<RankedTensorType>(b.getType());
    bool byColumn =
        (bT.getRank() == 1 && m.getNumResults() == 1 &&
         m.getResult(0) == getAffineDimExpr(1, g.getContext())) ||
        (bT.getRank() == 2 && bT.getDimSize(0) == 1 && m.getNumResults() == 2 &&
         m.getResult(1) == getAffineDimExpr(1, g.getContext()));
    if (!byColumn)
      continue;
    bias = c;
    return i == 0 ? add->second : add->first;
  }
  return v;
}

} // namespace

FailureOr<ExpertFFN> matchFFN(Value v, std::string &why) {
  ExpertFFN f;
  v = stripBias(skipViews(v), f.bDown);
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
      arith::ConstantOp bGate, bUp;
      auto gate = matchLinearPart(stripBias(u, bGate)),
           up = matchLinearPart(stripBias(b, bUp));
      if (gate && up && gate->first == up->first) {
        f.input = gate->first;
        f.gate = gate->second;
        f.up = up->second;
        f.act = act;
        f.bGate = bGate;
        f.bUp = bUp;
        return f;
      }
    }
  }
  moe::Activation act;
  if (Value u = tryActivation(h, act)) {
    if (auto gate = matchLinearPart(stripBias(u, f.bGate))) {
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

namespace {

/// The [K, N] matrix a WeightRef denotes for expert `e`, as raw bytes;
/// `all` holds the bytes of `w.src` (constantBytes).
FailureOr<std::vector<char>> realize(WeightRef w, int64_t e, ArrayRef<char> all,
                                     SmallVectorImpl<int64_t> &shape) {
  auto t = cast<RankedTensorType>(w.src.getType());
  unsigned eb = t.getElementTypeBitWidth() / 8;
  int64_t rows = t.getDimSize(t.getRank() - 2),
          cols = t.getDimSize(t.getRank() - 1);
  const char *base = all.data();
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

} // namespace

/// The parts of a lazy stack of `parts` (moec/Analysis/Weights.h), when
/// every source is a blob in memory or mapped; its [K, N] shape in `shape`.
static std::optional<LazyWeight>
lazyStack(ArrayRef<std::pair<int64_t, WeightRef>> parts,
          SmallVectorImpl<int64_t> &shape) {
  LazyWeight lw;
  for (auto &[e, w] : parts) {
    arith::ConstantOp src = w.src;
    std::optional<ArrayRef<char>> view = constantView(src.getValue());
    auto t = cast<RankedTensorType>(src.getType());
    if (!view || t.getElementTypeBitWidth() % 8 != 0)
      return std::nullopt;
    unsigned eb = t.getElementTypeBitWidth() / 8;
    LazyWeight::Part p;
    p.rows = t.getDimSize(t.getRank() - 2);
    p.cols = t.getDimSize(t.getRank() - 1);
    uint64_t bytes = uint64_t(p.rows) * p.cols * eb;
    uint64_t at = w.stacked ? uint64_t(e) * bytes : 0;
    if ((w.stacked && e >= t.getDimSize(0)) || at + bytes > view->size())
      return std::nullopt;
    p.src = view->slice(at, bytes);
    p.transposed = w.transposed;
    int64_t n = w.transposed ? p.rows : p.cols;
    p.colBegin = w.colBegin;
    p.colEnd = w.colEnd < 0 ? n : w.colEnd;
    if (p.colEnd > n || p.colBegin >= p.colEnd)
      return std::nullopt;
    SmallVector<int64_t> s = {p.outRows(), p.outCols()};
    if (!lw.parts.empty() &&
        (s[0] != shape[0] || s[1] != shape[1] || eb != lw.srcEltBytes))
      return std::nullopt;
    shape.assign(s.begin(), s.end());
    lw.srcEltBytes = eb;
    lw.parts.push_back(p);
  }
  return lw;
}

/// Stacks the experts' [K, N] matrices into one [E, K, N] weight: lazily
/// (read when the plan is written, never held whole) when the sources are
/// blobs and the stack is at least lazyWeightThreshold() bytes, else into
/// a new blob.
FailureOr<Value> stack(OpBuilder &b, Location loc,
                       ArrayRef<std::pair<int64_t, WeightRef>> parts,
                       StringRef name) {
  Type eltType =
      cast<RankedTensorType>(parts[0].second.src->getResult(0).getType())
          .getElementType();
  SmallVector<int64_t> kn;
  if (std::optional<LazyWeight> lw = lazyStack(parts, kn)) {
    uint64_t bytes = 0;
    for (size_t k = 0; k < lw->parts.size(); ++k)
      bytes += lw->partBytes(k);
    if (bytes >= lazyWeightThreshold()) {
      auto type =
          RankedTensorType::get({int64_t(parts.size()), kn[0], kn[1]}, eltType);
      return makeLazyConstant(b, loc, type, std::move(*lw), name);
    }
  }
  std::vector<char> all;
  SmallVector<int64_t> shape, first;
  // The experts of a batched layer are slabs of one [E, K, N] constant:
  // read it once, not once per expert (E times its size per layer).
  arith::ConstantOp read;
  std::vector<char> src;
  for (auto &[e, w] : parts) {
    if (w.src != read) {
      FailureOr<std::vector<char>> bytes = constantBytes(w.src);
      if (failed(bytes))
        return failure();
      read = w.src;
      src = std::move(*bytes);
    }
    FailureOr<std::vector<char>> bytes = realize(w, e, src, shape);
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

/// Stacks the experts' [N] biases into one [E, N] blob.
FailureOr<Value> stackBiases(OpBuilder &b, Location loc,
                             ArrayRef<arith::ConstantOp> parts,
                             StringRef name) {
  std::vector<char> all;
  auto t0 = cast<RankedTensorType>(parts[0]->getResult(0).getType());
  for (arith::ConstantOp c : parts) {
    auto t = cast<RankedTensorType>(c.getType());
    if (t.getNumElements() != t0.getNumElements() ||
        t.getElementType() != t0.getElementType())
      return failure();
    FailureOr<std::vector<char>> bytes = constantBytes(c);
    if (failed(bytes))
      return failure();
    all.insert(all.end(), bytes->begin(), bytes->end());
  }
  auto type = RankedTensorType::get(
      {int64_t(parts.size()), t0.getNumElements()}, t0.getElementType());
  return makeBlobConstant(b, loc, type, all, name);
}

} // namespace moec::raising
