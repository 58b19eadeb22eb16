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

#include "moec/Transforms/Passes.h"

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/SetVector.h"

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
  if (y != ops[0]->getResult(0) ||
      ops[0]->getOperand(0) != b->getArgument(0) ||
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

/// `linalg.matmul(x, W)` with a resolvable constant W: returns {x, W}.
std::optional<std::pair<Value, WeightRef>> matchLinear(Value v) {
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
        "weights and a SiLU or ReLU activation";
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

/// Raw little-endian bytes of a float constant.
FailureOr<std::vector<char>> constantBytes(arith::ConstantOp c) {
  Attribute a = c.getValue();
  if (auto r = dyn_cast<DenseResourceElementsAttr>(a)) {
    AsmResourceBlob *blob = r.getRawHandle().getBlob();
    if (!blob)
      return failure();
    ArrayRef<char> d = blob->getData();
    return std::vector<char>(d.begin(), d.end());
  }
  auto d = dyn_cast<DenseElementsAttr>(a);
  if (!d)
    return failure();
  auto t = cast<RankedTensorType>(d.getType());
  unsigned bytes = t.getElementTypeBitWidth() / 8;
  std::vector<char> out;
  ArrayRef<char> raw = d.getRawData();
  for (int64_t k = 0; k < t.getNumElements(); ++k)
    out.insert(out.end(), raw.begin() + (d.isSplat() ? 0 : k * bytes),
               raw.begin() + (d.isSplat() ? 0 : k * bytes) + bytes);
  return out;
}

/// The [K, N] matrix a WeightRef denotes for expert `e`, as raw bytes.
FailureOr<std::vector<char>> realize(WeightRef w, int64_t e,
                                     SmallVectorImpl<int64_t> &shape) {
  FailureOr<std::vector<char>> all = constantBytes(w.src);
  if (failed(all))
    return failure();
  auto t = cast<RankedTensorType>(w.src.getType());
  unsigned eb = t.getElementTypeBitWidth() / 8;
  int64_t rows = t.getDimSize(t.getRank() - 2), cols = t.getDimSize(t.getRank() - 1);
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
  auto type = RankedTensorType::get({int64_t(parts.size()), first[0], first[1]},
                                    elt);
  AsmResourceBlob blob = HeapAsmResourceBlob::allocateAndCopyWithAlign(
      ArrayRef<char>(all.data(), all.size()), alignof(uint64_t));
  auto attr = DenseResourceElementsAttr::get(type, name, std::move(blob));
  return arith::ConstantOp::create(b, loc, cast<TypedAttr>(attr)).getResult();
}

/// The router of one MoE layer, read from its top-k.
struct Router {
  moe::TopKOp topk;
  Value logits;
  moe::ScoreFunc score = moe::ScoreFunc::softmax;
  /// The routing weights the experts are scaled by: the top-k values, or
  /// their renormalised form.
  Value weights;
  bool renormalize = false;
};

std::optional<Router> matchRouter(moe::TopKOp topk) {
  auto in = cast<RankedTensorType>(topk.getInput().getType());
  if (in.getRank() != 2 || topk.getAxis() != 1 || !topk.getLargest())
    return std::nullopt;
  Router r;
  r.topk = topk;
  Value scores = skipViews(topk.getInput());
  if (auto sm = scores.getDefiningOp<linalg::SoftmaxOp>();
      sm && sm.getDimension() == 1) {
    r.logits = sm.getInput();
  } else if (Value x = matchSigmoid(scores)) {
    r.logits = x;
    r.score = moe::ScoreFunc::sigmoid;
  } else {
    return std::nullopt;
  }
  r.weights = topk.getValues();
  // Renormalisation: values / sum(values, axis 1, keepdims).
  for (Operation *user : topk.getValues().getUsers()) {
    if (user->getNumResults() != 1)
      continue;
    auto div = matchBinary<arith::DivFOp>(user->getResult(0));
    if (!div || div->first != topk.getValues())
      continue;
    auto red = skipViews(div->second).getDefiningOp<linalg::ReduceOp>();
    if (red && red.getInputs().size() == 1 &&
        red.getInputs()[0] == topk.getValues() &&
        red.getDimensions() == ArrayRef<int64_t>{1}) {
      r.weights = user->getResult(0);
      r.renormalize = true;
    }
  }
  return r;
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
  if (auto fe = v.getDefiningOp<tensor::FromElementsOp>()) {
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
        cast<RankedTensorType>(g.getDpsInputs()[0].getType()).getRank() != 0)
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

struct RaiseExperts
    : public moec::impl::MoERaiseExpertsBase<RaiseExperts> {
  using Base::Base;

  void runOnOperation() override {
    func::FuncOp func = getOperation();
    SmallVector<moe::TopKOp> topks;
    func.walk([&](moe::TopKOp t) { topks.push_back(t); });
    for (moe::TopKOp t : topks) {
      std::optional<Router> r = matchRouter(t);
      if (!r)
        continue; // not a router
      std::string why;
      if (succeeded(raise(*r, why)))
        continue;
      InFlightDiagnostic d =
          strict ? t.emitError() : t.emitWarning();
      d << "MoE-like region (top-k over router scores) not raised: " << why;
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
    int64_t tokens = logitsT.getDimSize(0), e = logitsT.getDimSize(1);
    // The scatters that consume this router's weights.
    SmallVector<Operation *> scatters;
    getOperation().walk([&](Operation *op) {
      if (!isa<moe::ScatterElementsOp, moe::ScatterNDOp>(op))
        return;
      if (sliceOf(op->getOperand(2)).contains(r.topk.getOperation()))
        scatters.push_back(op);
    });
    if (scatters.empty()) {
      why = "no expert loop (scatter of weighted expert outputs) uses its "
            "routing weights";
      return failure();
    }
    // The accumulator: the add tree above the scatters, up to its root.
    Value root = scatters.front()->getResult(0);
    for (bool grew = true; grew;) {
      grew = false;
      for (Operation *user : root.getUsers())
        if (user->getNumResults() == 1 && matchBinary<arith::AddFOp>(user->getResult(0))) {
          root = user->getResult(0);
          grew = true;
          break;
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
          se && (se.getAxis() != 0 ||
                 se.getReduction() == moe::Reduction::mul ||
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
      if (!sliceOf(scale).contains(r.weights.getDefiningOp())) {
        why = "an expert output is not scaled by the routing weights";
        return failure();
      }
      // The FFN input gathers rows of the tokens selected by NonZero.
      auto gather = skipViews(f->input).getDefiningOp<linalg::GenericOp>();
      if (!gather || gather.getNumDpsInputs() != 1) {
        why = "an expert's input is not a gather of tokens";
        return failure();
      }
      Value src;
      gather.getBody()->walk([&](tensor::ExtractOp ex) { src = ex.getTensor(); });
      SetVector<Operation *> rows = sliceOf(gather.getDpsInputs()[0]);
      moe::NonZeroOp nz;
      for (Operation *op : rows)
        if (auto n = dyn_cast<moe::NonZeroOp>(op))
          nz = n;
      if (!src || !nz || !sliceOf(sc->getOperand(1)).contains(nz.getOperation()) ||
          !sliceOf(nz.getInput()).contains(r.topk.getOperation())) {
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
    Location loc = r.topk.getLoc();
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
    auto wT = cast<RankedTensorType>(r.weights.getType());
    auto route = moe::RouteOp::create(
        b, loc, wT, cast<RankedTensorType>(r.topk.getIndices().getType()),
        r.logits, Value(), b.getI64IntegerAttr(r.topk.getK()),
        moe::ScoreFuncAttr::get(b.getContext(), r.score),
        b.getBoolAttr(r.renormalize), b.getF64FloatAttr(1.0),
        b.getI64IntegerAttr(1), b.getI64IntegerAttr(1),
        moe::GroupScoreAttr::get(b.getContext(), moe::GroupScore::max));
    Value x = tokensV;
    if (tokT != rootT) {
      auto shapeT = RankedTensorType::get({2}, b.getI64Type());
      auto shape = arith::ConstantOp::create(
          b, loc,
          DenseIntElementsAttr::get(shapeT, ArrayRef<int64_t>(rootT.getShape())));
      x = tensor::ReshapeOp::create(b, loc, rootT, x, shape);
    }
    auto ex = moe::ExpertsOp::create(
        b, loc, rootT, x, route.getIndices(), route.getWeights(), *wg,
        gated ? *wu : Value(), *wd, Value(), Value(), Value(),
        moe::ActivationAttr::get(b.getContext(), act), b.getI64IntegerAttr(0));
    root.replaceAllUsesWith(ex.getResult());
    return success();
  }

  unsigned layerCounter = 0;
};
} // namespace
