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

#include <cstring>

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
/// importer writes GatherND(W, ids) or Gather(W, ids, axis 0); or of rows
/// of a constant [E, N] (per-row biases: out[i, c] = b[ids[i], c]).
/// Returns {W, ids}.
std::optional<std::pair<arith::ConstantOp, Value>>
matchRowGather(linalg::GenericOp g) {
  auto outT = cast<RankedTensorType>(g.getResult(0).getType());
  int64_t rank = outT.getRank();
  if (g.getNumResults() != 1 || (rank != 3 && rank != 2) ||
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
  if (!wx || int64_t(wx.getIndices().size()) != rank ||
      g.getBody()->getTerminator()->getOperand(0) != wx.getResult())
    return std::nullopt;
  auto src = wx.getTensor().getDefiningOp<arith::ConstantOp>();
  auto srcT = cast<RankedTensorType>(src.getType());
  for (int64_t d = 1; d < rank; ++d)
    if (!isIndex(wx.getIndices()[d], d) ||
        srcT.getDimSize(d) != outT.getDimSize(d))
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
  // Either W [E, out, in] (transformers' default): bmm(gather(W, ids)
  // [n, out, in], x [n, in, 1]) -> [n, out, 1]; or W [E, in, out]
  // (is_transposed experts, GPT-OSS): bmm(x [n, 1, in], gather(W, ids)
  // [n, in, out]) -> [n, 1, out].
  bool inOut = outT.getDimSize(1) == 1;
  if (!inOut && outT.getDimSize(2) != 1)
    return std::nullopt;
  Value gw = bmm.getDpsInputs()[inOut ? 1 : 0];
  auto g = gw.getDefiningOp<linalg::GenericOp>();
  auto gathered = g ? matchRowGather(g) : std::nullopt;
  if (!gathered ||
      cast<RankedTensorType>(g.getResult(0).getType()).getRank() != 3)
    return std::nullopt;
  // x [n, in] viewed as [n, 1, in] or [n, in, 1].
  Value x = bmm.getDpsInputs()[inOut ? 0 : 1];
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
  r.transposed = !inOut;
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

/// The columns an extract_slice keeps of the last dim, whole in the others:
/// {offset, size, stride} (static, stride > 0) of rows [M, N] or of the
/// dense form's [E, M, N]; nullopt for other slices.
std::optional<std::array<int64_t, 3>> columnSlice(tensor::ExtractSliceOp sl) {
  auto t = cast<RankedTensorType>(sl.getSource().getType());
  int64_t last = t.getRank() - 1;
  if ((t.getRank() != 2 && t.getRank() != 3) ||
      ShapedType::isDynamic(sl.getStaticOffsets()[last]) ||
      ShapedType::isDynamic(sl.getStaticSizes()[last]) ||
      ShapedType::isDynamic(sl.getStaticStrides()[last]) ||
      sl.getStaticStrides()[last] <= 0)
    return std::nullopt;
  for (int64_t d = 0; d < last; ++d)
    if (sl.getStaticOffsets()[d] != 0 || sl.getStaticStrides()[d] != 1 ||
        (t.getRank() == 3 && sl.getStaticSizes()[d] != t.getDimSize(d)))
      return std::nullopt;
  return std::array<int64_t, 3>{sl.getStaticOffsets()[last],
                                sl.getStaticSizes()[last],
                                sl.getStaticStrides()[last]};
}

} // namespace

/// Matches down(act(gate(x)) [* up(x)]) on the FFN output `v`.
namespace {

/// The constant [E, N] whose row a gather picks by a scalar expert id
/// (`bias[expert_idx]`): a generic of one rank-0 input (the id) yielding
/// `tensor.extract %c[id, d0]` into [N]; null otherwise.
arith::ConstantOp stackedBiasSource(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  auto outT = g ? dyn_cast<RankedTensorType>(g.getResult(0).getType())
                : RankedTensorType();
  if (!g || g.getNumResults() != 1 || g.getNumDpsInputs() != 1 || !outT ||
      outT.getRank() != 1 ||
      cast<RankedTensorType>(g.getDpsInputs()[0].getType()).getRank() != 0)
    return {};
  tensor::ExtractOp ex;
  g.getBody()->walk([&](tensor::ExtractOp e) { ex = e; });
  if (!ex || g.getBody()->getTerminator()->getOperand(0) != ex.getResult() ||
      ex.getIndices().size() != 2)
    return {};
  auto c = ex.getTensor().getDefiningOp<arith::ConstantOp>();
  auto li = ex.getIndices()[1].getDefiningOp<linalg::IndexOp>();
  if (!c || !li || li.getDim() != 0 ||
      cast<RankedTensorType>(c.getType()).getDimSize(1) != outT.getDimSize(0))
    return {};
  return c;
}

/// `y + b` with `b` a bias [N] (or [1, N]; a constant or a stacked row,
/// see BiasRef) broadcast over the rows of a [M, N] `y` (nn.Linear's bias;
/// torch.onnx's Gemm): returns y, and b in `bias`; `v` itself when there is
/// no such add.
Value stripBias(Value v, BiasRef &bias) {
  auto add = matchBinary<arith::AddFOp>(v);
  if (!add)
    return v;
  auto g = v.getDefiningOp<linalg::GenericOp>();
  auto yT = dyn_cast<RankedTensorType>(v.getType());
  if (!yT || yT.getRank() != 2 || ShapedType::isDynamic(yT.getDimSize(1)))
    return v;
  for (unsigned i = 0; i < 2; ++i) {
    Value b = g.getDpsInputs()[i];
    BiasRef ref;
    if (auto c = skipViews(b).getDefiningOp<arith::ConstantOp>()) {
      if (cast<RankedTensorType>(c.getType()).getNumElements() ==
          yT.getDimSize(1))
        ref.src = c;
    } else if (arith::ConstantOp c = stackedBiasSource(skipViews(b))) {
      ref.src = c;
      ref.stacked = true;
    } else if (auto rg = skipViews(b).getDefiningOp<linalg::GenericOp>()) {
      // A bias per row, gathered by the batched form's ids: [n, N].
      auto gathered = matchRowGather(rg);
      auto rgT = cast<RankedTensorType>(rg.getResult(0).getType());
      if (gathered && rgT.getRank() == 2 && rgT.getShape() == yT.getShape() &&
          g.getIndexingMapsArray()[i].isIdentity() &&
          g.getIndexingMapsArray()[1 - i].isIdentity()) {
        ref.src = gathered->first;
        ref.stacked = true;
        ref.ids = gathered->second;
        bias = ref;
        return i == 0 ? add->second : add->first;
      }
    }
    if (!ref || !g.getIndexingMapsArray()[1 - i].isIdentity())
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
    bias = ref;
    return i == 0 ? add->second : add->first;
  }
  return v;
}

/// An affine map of the expert's input: `x W [+ b]`, or columns of it (a
/// fused projection split with extract_slice on the last dim, before or
/// after the bias): returns {x, W restricted to the columns}, the bias in
/// `bias`.
std::optional<std::pair<Value, WeightRef>> matchAffine(Value v, BiasRef &bias) {
  v = stripBias(skipViews(v), bias);
  auto sl = skipViews(v).getDefiningOp<tensor::ExtractSliceOp>();
  if (!sl)
    return matchLinear(v);
  std::optional<std::array<int64_t, 3>> cols = columnSlice(sl);
  if (!cols)
    return std::nullopt;
  auto [begin, size, step] = *cols;
  Value src = skipViews(sl.getSource());
  if (!bias) {
    // A bias added before the slice: the slice picks its columns too.
    src = stripBias(src, bias);
    if (bias) {
      bias.colBegin = begin;
      bias.colEnd = begin + (size - 1) * step + 1;
      bias.colStep = step;
    }
  }
  auto lin = matchLinear(src);
  // Rank-3 slices are of the dense form's batch_matmuls, or of a [B, S, N]
  // view of a [B * S, N] MatMul (GraniteMoeShared's shared MLP chunks its
  // fused projection after the reshape): the columns are the same.
  auto slT = cast<RankedTensorType>(sl.getSource().getType());
  bool rank3 = slT.getRank() == 3;
  if (!lin)
    return std::nullopt;
  if (lin->second.dense != rank3) {
    auto srcT = cast<RankedTensorType>(src.getType());
    if (lin->second.dense || srcT.getRank() != 2 ||
        slT.getDimSize(2) != srcT.getDimSize(1))
      return std::nullopt;
  }
  WeightRef &w = lin->second;
  w.colBegin = begin;
  w.colEnd = begin + (size - 1) * step + 1;
  w.colStep = step;
  return lin;
}

} // namespace

Value matchActivation(Value a, moe::Activation &act) {
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
  if (Value u = matchGeluTanh(a)) {
    act = moe::Activation::gelu_tanh;
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
}

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
  if (auto mul = matchBinary<arith::MulFOp>(h)) {
    for (auto [a, b] : {std::pair(mul->first, mul->second),
                        std::pair(mul->second, mul->first)}) {
      moe::Activation act;
      Value u = matchActivation(a, act);
      if (!u)
        continue;
      BiasRef bGate, bUp;
      auto gate = matchAffine(u, bGate), up = matchAffine(b, bUp);
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
  if (std::optional<ClampedSwiglu> c = matchClampedSwiglu(h)) {
    BiasRef bGate, bUp;
    auto gate = matchAffine(c->gate, bGate), up = matchAffine(c->up, bUp);
    if (gate && up && gate->first == up->first) {
      f.input = gate->first;
      f.gate = gate->second;
      f.up = up->second;
      f.bGate = bGate;
      f.bUp = bUp;
      // Without clamps, alpha 1 and beta 0 it is SwiGLU.
      bool plain = c->limit < 0 && c->alpha == 1.0 && c->beta == 0.0;
      f.act = plain ? moe::Activation::silu : moe::Activation::clamped_swiglu;
      f.alpha = c->alpha;
      f.beta = c->beta;
      f.limit = c->limit;
      return f;
    }
  }
  moe::Activation act;
  if (Value u = matchActivation(h, act)) {
    if (auto gate = matchAffine(u, f.bGate)) {
      f.input = gate->first;
      f.gate = gate->second;
      f.act = act;
      return f;
    }
  }
  why = "the expert FFN is not down(act(gate(x)) [* up(x)]) with constant "
        "weights and a SiLU, ReLU or GELU (erf or tanh) activation, or "
        "GPT-OSS's clamped SwiGLU";
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
  int64_t cb = w.colBegin, ce = w.colEnd < 0 ? n : w.colEnd, step = w.colStep;
  if (ce > n || cb >= ce || step <= 0)
    return failure();
  int64_t count = (ce - cb + step - 1) / step;
  std::vector<char> out;
  out.reserve(k * count * eb);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = cb; j < ce; j += step) {
      int64_t src = w.transposed ? j * cols + i : i * cols + j;
      out.insert(out.end(), base + src * eb, base + (src + 1) * eb);
    }
  shape.assign({k, count});
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
    p.colStep = w.colStep;
    if (p.colEnd > n || p.colBegin >= p.colEnd || p.colStep <= 0)
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
/// Multiplies the f32 values in `bytes` by `s`.
static void scaleF32(std::vector<char> &bytes, float s) {
  for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
    float v;
    std::memcpy(&v, bytes.data() + i, 4);
    v *= s;
    std::memcpy(bytes.data() + i, &v, 4);
  }
}

FailureOr<Value> stack(OpBuilder &b, Location loc,
                       ArrayRef<std::pair<int64_t, WeightRef>> parts,
                       StringRef name, const std::vector<float> *scales) {
  Type eltType =
      cast<RankedTensorType>(parts[0].second.src->getResult(0).getType())
          .getElementType();
  if (scales && !eltType.isF32())
    return failure();
  SmallVector<int64_t> kn;
  if (std::optional<LazyWeight> lw =
          scales ? std::nullopt : lazyStack(parts, kn)) {
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
    if (failed(bytes) || (!first.empty() && shape != first) ||
        (scales && e >= int64_t(scales->size())))
      return failure();
    if (scales)
      scaleF32(*bytes, (*scales)[e]);
    first = shape;
    all.insert(all.end(), bytes->begin(), bytes->end());
  }
  Type elt = cast<RankedTensorType>(parts[0].second.src->getResult(0).getType())
                 .getElementType();
  auto type =
      RankedTensorType::get({int64_t(parts.size()), first[0], first[1]}, elt);
  return makeBlobConstant(b, loc, type, all, name);
}

/// Stacks the experts' [N] biases (expert id, bias) into one [E, N] blob.
FailureOr<Value> stackBiases(OpBuilder &b, Location loc,
                             ArrayRef<std::pair<int64_t, BiasRef>> parts,
                             StringRef name, const std::vector<float> *scales) {
  std::vector<char> all;
  arith::ConstantOp first = parts[0].second.src;
  auto t0 = cast<RankedTensorType>(first.getType());
  Type elt = t0.getElementType();
  if (elt.getIntOrFloatBitWidth() % 8 != 0)
    return failure();
  unsigned eb = elt.getIntOrFloatBitWidth() / 8;
  int64_t width = -1;
  arith::ConstantOp read;
  std::vector<char> src;
  for (auto [e, bias] : parts) {
    auto t = cast<RankedTensorType>(bias.src.getType());
    if (t.getElementType() != elt)
      return failure();
    if (bias.src != read) {
      FailureOr<std::vector<char>> bytes = constantBytes(bias.src);
      if (failed(bytes))
        return failure();
      read = bias.src;
      src = std::move(*bytes);
    }
    // The bias row: row e of a stacked [E, N], or the whole constant.
    int64_t n = bias.stacked ? t.getDimSize(1) : t.getNumElements();
    const char *row = src.data();
    if (bias.stacked) {
      if (e >= t.getDimSize(0))
        return failure();
      row += e * n * eb;
    }
    int64_t cb = bias.colBegin, ce = bias.colEnd < 0 ? n : bias.colEnd;
    if (ce > n || cb >= ce || bias.colStep <= 0)
      return failure();
    if (scales && (!elt.isF32() || e >= int64_t(scales->size())))
      return failure();
    int64_t count = 0;
    for (int64_t j = cb; j < ce; j += bias.colStep, ++count) {
      std::vector<char> v(row + j * eb, row + (j + 1) * eb);
      if (scales)
        scaleF32(v, (*scales)[e]);
      all.insert(all.end(), v.begin(), v.end());
    }
    if (width >= 0 && count != width)
      return failure();
    width = count;
  }
  auto type = RankedTensorType::get({int64_t(parts.size()), width}, elt);
  return makeBlobConstant(b, loc, type, all, name);
}

} // namespace moec::raising
