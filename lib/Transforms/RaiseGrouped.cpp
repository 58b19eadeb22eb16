//===- RaiseGrouped.cpp - grouped experts for moe-raise-experts
//------------===//
//
// The grouped form of an MoE layer (JetMoE's JetMoeMoE, ScatterMoE and
// MegaBlocks style), as torch.onnx's dynamo exporter writes it:
//
//   flat = ids.flatten()                           [T * k]
//   _, perm = flat.sort()                          (TopK, largest = 0)
//   counts = zeros[T, E].scatter(1, ids, 1).sum(0) (tokens per expert)
//   xs = x[perm // k]                              (rows sorted by expert)
//   h = cat([xs_e @ W1[e].T for xs_e in xs.split(counts)])
//   h = act(h[:, :F]) * h[:, F:]                   (row-wise)
//   y = cat([h_e @ W2[e].T for h_e in h.split(counts)])
//   out = zeros[T, H].index_add(0, perm // k, y * w.flatten()[perm][:, None])
//
// Row r of the sorted rows is pair perm[r] = (t, j) = (perm[r] // k,
// perm[r] % k), and chunk e of the split holds exactly the pairs whose
// expert is e (the rows are sorted by expert id and counts[e] is the
// number of pairs with id e), so
//   out[t] = sum_j w[t, j] * FFN_{ids[t, j]}(x[t])
// which is moe.experts. The matcher checks each of these facts on the IR:
// the sort, the counts, the split boundaries (the same sizes, chunk e at
// their running sum), the rows each chunk reads, the weight slab each chunk
// multiplies, and that the scale and the scatter read the same pairs.
//
// The Split by sizes computed at run time imports as extract_slices of
// data-dependent size (ImportSlice.cpp); the row-wise ops between the two
// splits are first pushed into each chunk, so that every chunk is one
// expert's FFN that matchFFN reads.
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

#include "moec/Analysis/ConstantBytes.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"

#include <cstring>

using namespace mlir;
using namespace moec;

namespace moec::raising {

namespace {

/// A one-input generic whose body is a single `OpTy` of its argument: the
/// input.
template <typename OpTy> Value matchUnary(Value v) {
  auto g = skipViews(v).getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1 || g.getNumResults() != 1)
    return {};
  SmallVector<Operation *> ops = bodyOps(g);
  if (ops.size() != 1 || !isa<OpTy>(ops[0]) ||
      ops[0]->getOperand(0) != g.getBody()->getArgument(0) ||
      g.getBody()->getTerminator()->getOperand(0) != ops[0]->getResult(0))
    return {};
  return g.getDpsInputs()[0];
}

/// Element `pos` of the rank-1 tensor `t`, followed back through
/// concatenations, from_elements of extracted scalars, static slices and
/// reshapes (which keep the row-major order): {tensor, position}.
std::pair<Value, int64_t> elementOf(Value t, int64_t pos) {
  for (int guard = 0; guard < 64; ++guard) {
    Operation *def = t.getDefiningOp();
    auto type = cast<RankedTensorType>(t.getType());
    if (!def || !type.hasStaticShape())
      break;
    if (isa<tensor::CollapseShapeOp, tensor::ExpandShapeOp, tensor::ReshapeOp,
            tensor::CastOp>(def)) {
      Value src = def->getOperand(0);
      if (!cast<RankedTensorType>(src.getType()).hasStaticShape())
        break;
      t = src;
      continue;
    }
    if (auto c = dyn_cast<tensor::ConcatOp>(def)) {
      if (type.getRank() != 1)
        break;
      Value next;
      for (Value in : c.getInputs()) {
        int64_t n = cast<RankedTensorType>(in.getType()).getDimSize(0);
        if (pos < n) {
          next = in;
          break;
        }
        pos -= n;
      }
      if (!next)
        break;
      t = next;
      continue;
    }
    if (auto s = dyn_cast<tensor::ExtractSliceOp>(def)) {
      if (type.getRank() != 1 || s.getSourceType().getRank() != 1 ||
          !s.hasUnitStride() || ShapedType::isDynamic(s.getStaticOffsets()[0]))
        break;
      pos += s.getStaticOffsets()[0];
      t = s.getSource();
      continue;
    }
    if (auto fe = dyn_cast<tensor::FromElementsOp>(def)) {
      auto ex = fe.getElements()[pos].getDefiningOp<tensor::ExtractOp>();
      if (!ex)
        break;
      auto srcT = cast<RankedTensorType>(ex.getTensor().getType());
      if (!srcT.hasStaticShape())
        break;
      int64_t lin = 0;
      for (auto [i, d] : llvm::zip(ex.getIndices(), srcT.getShape())) {
        std::optional<int64_t> c = constantInt(i);
        if (!c)
          return {t, pos};
        lin = lin * d + *c;
      }
      t = ex.getTensor();
      pos = lin;
      continue;
    }
    break;
  }
  return {t, pos};
}

/// One chunk of a split by sizes known at run time: `source` rows
/// [sizes[0] + ... + sizes[index - 1], + sizes[index]).
struct Chunk {
  Value source, sizes;
  int64_t index = -1;
};

/// `n` = index_cast(sizes[c]): {sizes, c}.
std::optional<std::pair<Value, int64_t>> chunkSize(Value n) {
  auto cast = n.getDefiningOp<arith::IndexCastOp>();
  auto ex = cast ? cast.getIn().getDefiningOp<tensor::ExtractOp>()
                 : tensor::ExtractOp();
  if (!ex || ex.getIndices().size() != 1)
    return std::nullopt;
  std::optional<int64_t> c = constantInt(ex.getIndices()[0]);
  if (!c)
    return std::nullopt;
  return std::make_pair(ex.getTensor(), *c);
}

/// The chunk sizes that `off` adds up (0 for none): their positions.
bool offsetTerms(Value off, Value sizes, SmallVectorImpl<int64_t> &terms) {
  if (std::optional<int64_t> c = constantInt(off))
    return *c == 0;
  if (auto add = off.getDefiningOp<arith::AddIOp>())
    return offsetTerms(add.getLhs(), sizes, terms) &&
           offsetTerms(add.getRhs(), sizes, terms);
  std::optional<std::pair<Value, int64_t>> n = chunkSize(off);
  if (!n || n->first != sizes)
    return false;
  terms.push_back(n->second);
  return true;
}

/// A chunk along dim 0 of a rank-2 tensor: tensor.extract_slice with unit
/// strides, all columns, size sizes[e] and offset sizes[0] + ... +
/// sizes[e - 1].
std::optional<Chunk> matchChunk(Value v) {
  auto s = v.getDefiningOp<tensor::ExtractSliceOp>();
  if (!s || s.getSourceType().getRank() != 2 || !s.hasUnitStride())
    return std::nullopt;
  SmallVector<OpFoldResult> offs = s.getMixedOffsets(),
                            sizes = s.getMixedSizes();
  std::optional<int64_t> col0 = getConstantIntValue(offs[1]);
  if (!col0 || *col0 != 0 ||
      getConstantIntValue(sizes[1]) != s.getSourceType().getDimSize(1) ||
      !isa<Value>(sizes[0]))
    return std::nullopt;
  std::optional<std::pair<Value, int64_t>> n = chunkSize(cast<Value>(sizes[0]));
  if (!n)
    return std::nullopt;
  SmallVector<int64_t> terms;
  if (auto c = getConstantIntValue(offs[0])) {
    if (*c != 0)
      return std::nullopt;
  } else if (!offsetTerms(cast<Value>(offs[0]), n->first, terms)) {
    return std::nullopt;
  }
  llvm::sort(terms);
  for (auto [i, t] : llvm::enumerate(terms))
    if (t != int64_t(i))
      return std::nullopt;
  if (int64_t(terms.size()) != n->second)
    return std::nullopt;
  return Chunk{s.getSource(), n->first, n->second};
}

/// Whether `g` is element-wise over rank-2 tensors: parallel iterators,
/// identity maps.
bool isRowWise(linalg::GenericOp g) {
  if (g.getNumResults() != 1 || g.getNumDpsInits() != 1 ||
      llvm::any_of(g.getIteratorTypesArray(),
                   [](utils::IteratorType t) {
                     return t != utils::IteratorType::parallel;
                   }) ||
      cast<RankedTensorType>(g.getResult(0).getType()).getRank() != 2)
    return false;
  for (AffineMap m : g.getIndexingMapsArray())
    if (!m.isIdentity())
      return false;
  bool reads = false;
  g.getBody()->walk([&](Operation *op) {
    reads |= isa<tensor::ExtractOp, linalg::IndexOp>(op);
  });
  return !reads;
}

/// A slice of columns of all rows of a rank-2 tensor: row offset 0, unit
/// strides, and as many rows as the source (static, or its tensor.dim).
bool isColumnSlice(tensor::ExtractSliceOp s) {
  auto srcT = s.getSourceType();
  if (srcT.getRank() != 2 || !s.hasUnitStride() ||
      getConstantIntValue(s.getMixedOffsets()[0]) != 0)
    return false;
  if (!srcT.isDynamicDim(0))
    return s.getType().getDimSize(0) == srcT.getDimSize(0);
  auto d = dyn_cast<Value>(s.getMixedSizes()[0]);
  auto dim = d ? d.getDefiningOp<tensor::DimOp>() : tensor::DimOp();
  return dim && dim.getSource() == s.getSource() &&
         getConstantIntValue(dim.getIndex()) == 0;
}

/// The chunk the rows of `v` are, through ops that keep each row where it
/// is (a MatMul's left operand, row-wise generics, column slices).
std::optional<Chunk> rowsChunk(Value v) {
  for (int guard = 0; guard < 64; ++guard) {
    if (std::optional<Chunk> c = matchChunk(v))
      return c;
    Operation *def = v.getDefiningOp();
    if (auto mm = dyn_cast_or_null<linalg::MatmulOp>(def)) {
      v = mm.getDpsInputs()[0];
    } else if (auto g = dyn_cast_or_null<linalg::GenericOp>(def);
               g && isRowWise(g) && g.getNumDpsInputs() >= 1) {
      v = g.getDpsInputs()[0];
    } else if (auto s = dyn_cast_or_null<tensor::ExtractSliceOp>(def);
               s && isColumnSlice(s)) {
      v = s.getSource();
    } else {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

Value chunkOfUncached(OpBuilder &b, Value m, const Chunk &c,
                      DenseMap<Value, Value> &done);

/// Chunk `c` of `m`, where `m` is computed row-wise from the concatenation
/// of the chunks of an earlier split by the same sizes: the same row-wise
/// ops on that concatenation's operand c.index. Null when `m` is not.
/// `done` holds the chunks made so far (a value read twice, as silu's x
/// in x * sigmoid(x), gets one chunk).
Value chunkOf(OpBuilder &b, Value m, const Chunk &c,
              DenseMap<Value, Value> &done) {
  if (Value v = done.lookup(m))
    return v;
  Value v = chunkOfUncached(b, m, c, done);
  if (v)
    done[m] = v;
  return v;
}

Value chunkOfUncached(OpBuilder &b, Value m, const Chunk &c,
                      DenseMap<Value, Value> &done) {
  Operation *def = m.getDefiningOp();
  if (auto cat = dyn_cast_or_null<tensor::ConcatOp>(def)) {
    if (cat.getDim() != 0 ||
        int64_t(cat.getInputs().size()) !=
            cast<RankedTensorType>(c.sizes.getType()).getDimSize(0))
      return {};
    Value part = cat.getInputs()[c.index];
    std::optional<Chunk> rows = rowsChunk(part);
    if (!rows || rows->sizes != c.sizes || rows->index != c.index)
      return {};
    return part;
  }
  if (auto s = dyn_cast_or_null<tensor::ExtractSliceOp>(def)) {
    if (!isColumnSlice(s) || s.getType().isDynamicDim(1))
      return {};
    Value src = chunkOf(b, s.getSource(), c, done);
    if (!src)
      return {};
    Location loc = s.getLoc();
    Value rows = tensor::DimOp::create(b, loc, src, 0);
    SmallVector<OpFoldResult> offs = {b.getIndexAttr(0),
                                      s.getMixedOffsets()[1]};
    SmallVector<OpFoldResult> sizes = {rows, s.getMixedSizes()[1]};
    SmallVector<OpFoldResult> strides = {b.getIndexAttr(1), b.getIndexAttr(1)};
    return tensor::ExtractSliceOp::create(b, loc, src, offs, sizes, strides);
  }
  auto g = dyn_cast_or_null<linalg::GenericOp>(def);
  if (!g || !isRowWise(g))
    return {};
  IRMapping map;
  Value rows;
  for (Value in : g.getDpsInputs()) {
    Value part = chunkOf(b, in, c, done);
    if (!part)
      return {};
    map.map(in, part);
    if (!rows)
      rows = tensor::DimOp::create(b, g.getLoc(), part, 0);
  }
  if (!rows)
    return {};
  auto outT = cast<RankedTensorType>(g.getResult(0).getType());
  Value init = tensor::EmptyOp::create(
      b, g.getLoc(),
      SmallVector<OpFoldResult>{rows, b.getIndexAttr(outT.getDimSize(1))},
      outT.getElementType());
  map.map(g.getDpsInits()[0], init);
  Operation *clone = b.clone(*g, map);
  clone->getResult(0).setType(cast<RankedTensorType>(init.getType()));
  return clone->getResult(0);
}

/// A row gather as the importer writes Gather/GatherND of rows: out[i,
/// ...] = data[idx[i], ...] (negative indices wrapped): {data, idx}.
std::optional<std::pair<Value, Value>> matchRowGather(Value v) {
  auto g = skipViews(v).getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumResults() != 1 || g.getNumDpsInputs() != 0)
    return std::nullopt;
  auto ex = g.getBody()
                ->getTerminator()
                ->getOperand(0)
                .getDefiningOp<tensor::ExtractOp>();
  auto outT = cast<RankedTensorType>(g.getResult(0).getType());
  if (!ex || ex.getIndices().size() != size_t(outT.getRank()))
    return std::nullopt;
  auto isIndex = [](Value x, int64_t d) {
    auto i = x.getDefiningOp<linalg::IndexOp>();
    return i && int64_t(i.getDim()) == d;
  };
  for (int64_t d = 1; d < outT.getRank(); ++d)
    if (!isIndex(ex.getIndices()[d], d))
      return std::nullopt;
  // The row: index_cast(idx[i(, 0)]), or that wrapped when negative.
  Value row = ex.getIndices()[0];
  if (auto sel = row.getDefiningOp<arith::SelectOp>()) {
    auto cmp = sel.getCondition().getDefiningOp<arith::CmpIOp>();
    auto add = sel.getTrueValue().getDefiningOp<arith::AddIOp>();
    if (!cmp || cmp.getPredicate() != arith::CmpIPredicate::slt || !add ||
        cmp.getLhs() != sel.getFalseValue() || constantInt(cmp.getRhs()) != 0 ||
        (add.getLhs() != sel.getFalseValue() &&
         add.getRhs() != sel.getFalseValue()))
      return std::nullopt;
    row = sel.getFalseValue();
  }
  auto cast = row.getDefiningOp<arith::IndexCastOp>();
  auto idxEx = cast ? cast.getIn().getDefiningOp<tensor::ExtractOp>()
                    : tensor::ExtractOp();
  if (!idxEx || idxEx.getIndices().empty() ||
      !isIndex(idxEx.getIndices()[0], 0))
    return std::nullopt;
  for (Value i : llvm::drop_begin(idxEx.getIndices()))
    if (constantInt(i) != 0)
      return std::nullopt;
  return std::make_pair(ex.getTensor(), idxEx.getTensor());
}

/// `x // c` of non-negative integers x, with c a constant: an integer
/// division, or torch's trunc division as the dynamo exporter writes it in
/// floats (sign(q) * floor(|q|), q = float(x) / c; exact below 2^24), or a
/// floor of q. Returns {x, c}.
std::optional<std::pair<Value, int64_t>> matchDivByConst(Value v) {
  v = skipViews(v);
  if (auto d = matchBinary<arith::DivSIOp>(v)) {
    if (std::optional<int64_t> c = constantInt(d->second))
      return std::make_pair(d->first, *c);
    return std::nullopt;
  }
  Value f = matchUnary<arith::FPToSIOp>(v);
  if (!f)
    return std::nullopt;
  Value q;
  if (Value fl = matchUnary<math::FloorOp>(f)) {
    q = fl;
  } else if (auto mul = matchBinary<arith::MulFOp>(skipViews(f))) {
    for (auto [a, s] : {std::pair(mul->first, mul->second),
                        std::pair(mul->second, mul->first)}) {
      Value abs = matchUnary<math::FloorOp>(a);
      Value in = abs ? matchUnary<math::AbsFOp>(abs) : Value();
      // The importer's Sign: a one-input generic of q comparing it with 0.
      auto sg = skipViews(s).getDefiningOp<linalg::GenericOp>();
      if (!in || !sg || sg.getNumDpsInputs() != 1 ||
          skipViews(sg.getDpsInputs()[0]) != skipViews(in))
        continue;
      unsigned cmps = 0, sels = 0;
      for (Operation *op : bodyOps(sg)) {
        cmps += isa<arith::CmpFOp>(op);
        sels += isa<arith::SelectOp>(op);
      }
      if (cmps == 2 && sels == 2 && bodyOps(sg).size() == 4)
        q = in;
    }
  }
  if (!q)
    return std::nullopt;
  auto div = matchBinary<arith::DivFOp>(skipViews(q));
  if (!div)
    return std::nullopt;
  std::optional<double> c = scalarFloat(div->second);
  Value x = matchUnary<arith::SIToFPOp>(div->first);
  if (!c || !x || *c != std::floor(*c) || *c < 1)
    return std::nullopt;
  return std::make_pair(skipViews(x), int64_t(*c));
}

/// True when `v` is an f32 constant whose elements are all 1.
bool isOnesConstant(Value v) {
  auto c = skipViews(v).getDefiningOp<arith::ConstantOp>();
  if (!c || !cast<RankedTensorType>(c.getType()).getElementType().isF32())
    return false;
  FailureOr<std::vector<char>> bytes = constantBytes(c);
  if (failed(bytes) || bytes->empty() || bytes->size() % 4)
    return false;
  for (size_t i = 0; i < bytes->size(); i += 4) {
    float f;
    std::memcpy(&f, bytes->data() + i, 4);
    if (f != 1.0f)
      return false;
  }
  return true;
}

/// The ids whose tokens per expert `counts` holds: zeros[T, E].scatter(1,
/// ids, 1).long().sum(0) with ids [T, k] (distinct per token, as a top-k
/// picks them). Null when `counts` is not that.
Value countedIds(Value counts, int64_t e) {
  Value in = matchReduce<arith::AddIOp>(counts, 0);
  Value oneHot = in ? matchUnary<arith::FPToSIOp>(in) : Value();
  auto sc = oneHot ? skipViews(oneHot).getDefiningOp<moe::ScatterElementsOp>()
                   : moe::ScatterElementsOp();
  if (!sc || sc.getAxis() != 1 || sc.getReduction() != moe::Reduction::none ||
      !isZeroConstant(sc.getData()) || !isOnesConstant(sc.getUpdates()))
    return {};
  auto t = cast<RankedTensorType>(sc.getData().getType());
  Value ids = skipViews(sc.getIndices());
  auto sel = ids.getDefiningOp<moe::TopKOp>();
  if (t.getRank() != 2 || t.getDimSize(1) != e || !sel ||
      sel.getIndices() != ids || sel.getAxis() != 1)
    return {};
  return ids;
}

/// The ids `sizes` counts the tokens per expert of, when sizes[i] is the
/// count of expert i for every i < e. Null otherwise.
Value sizesCountIds(Value sizes, int64_t e) {
  Value counts;
  for (int64_t i = 0; i < e; ++i) {
    auto [t, pos] = elementOf(sizes, i);
    if (pos != i || (counts && t != counts))
      return {};
    counts = t;
  }
  return counts ? countedIds(counts, e) : Value();
}

/// The ascending sort of the flattened `ids` (TopK over all of them,
/// largest = 0): its values are the sorted ids, its indices the pairs.
moe::TopKOp sortOf(Value ids) {
  auto idsT = cast<RankedTensorType>(ids.getType());
  SmallVector<Value> views = {ids};
  for (size_t i = 0; i < views.size(); ++i)
    for (Operation *u : views[i].getUsers()) {
      if (isa<tensor::CollapseShapeOp, tensor::ReshapeOp>(u))
        views.push_back(u->getResult(0));
      auto t = dyn_cast<moe::TopKOp>(u);
      if (t && !t.getLargest() && int64_t(t.getK()) == idsT.getNumElements() &&
          cast<RankedTensorType>(t.getInput().getType()).getRank() == 1)
        return t;
    }
  return {};
}

} // namespace

bool isGroupedExperts(Value v) {
  auto cat = skipViews(v).getDefiningOp<tensor::ConcatOp>();
  return cat && cat.getDim() == 0 && cat.getInputs().size() >= 2 &&
         rowsChunk(cat.getInputs()[0]).has_value();
}

LogicalResult LayerRaiser::raiseGrouped(Router &r, Operation *sc, Value root,
                                        Value outputs, Value scale,
                                        std::string &why) {
  auto topk = dyn_cast<moe::TopKOp>(r.select);
  Value ids = r.generic ? skipViews(r.ids) : topk ? topk.getIndices() : Value();
  auto idsT = ids ? cast<RankedTensorType>(ids.getType()) : RankedTensorType();
  if (!topk || !idsT || idsT.getRank() != 2 || !idsT.hasStaticShape()) {
    why = "grouped experts need [tokens, k] ids picked by a top-k";
    return failure();
  }
  int64_t k = idsT.getDimSize(1);
  auto logitsT = cast<RankedTensorType>(r.logits.getType());
  int64_t e = logitsT.getDimSize(logitsT.getRank() - 1);
  auto cat = skipViews(outputs).getDefiningOp<tensor::ConcatOp>();
  if (!cat || int64_t(cat.getInputs().size()) != e) {
    why = "the grouped experts' outputs are not one chunk per expert";
    return failure();
  }

  // The pairs: perm sorts the flattened ids, the rows of pair perm[r] are
  // token perm[r] // k.
  Value scatterIdx = sc->getOperand(1);
  if (auto se = dyn_cast<moe::ScatterElementsOp>(sc)) {
    // index_add as ScatterElements: the row index broadcast over columns.
    auto g = skipViews(scatterIdx).getDefiningOp<linalg::GenericOp>();
    if (se.getAxis() != 0 || !g || g.getNumDpsInputs() != 1 ||
        !bodyOps(g).empty())
      return why = "the grouped experts' combine is not an index_add over "
                   "tokens",
             failure();
    scatterIdx = g.getDpsInputs()[0];
  } else if (!isa<moe::ScatterNDOp>(sc) ||
             cast<RankedTensorType>(scatterIdx.getType()).getShape().back() !=
                 1) {
    why = "the grouped experts' combine is not an index_add over tokens";
    return failure();
  }
  std::optional<std::pair<Value, int64_t>> toTok = matchDivByConst(scatterIdx);
  auto sortK =
      toTok ? toTok->first.getDefiningOp<moe::TopKOp>() : moe::TopKOp();
  if (!toTok || toTok->second != k || !sortK || sortK != sortOf(ids) ||
      toTok->first != sortK.getIndices() ||
      skipViews(sortK.getInput()) != ids) {
    why = "the grouped experts' outputs are not added to the tokens of the "
          "pairs sorted by expert (index perm // k, perm = argsort of the "
          "flattened ids)";
    return failure();
  }
  Value perm = sortK.getIndices();
  // The scale: the flattened routing weights at perm.
  std::optional<std::pair<Value, Value>> wg = matchRowGather(scale);
  if (!wg || skipViews(wg->second) != perm) {
    why = "the grouped experts' outputs are not scaled by the routing "
          "weights of the sorted pairs";
    return failure();
  }
  if (r.generic && !r.weights)
    r.weights = skipViews(wg->first);
  auto wT = r.weights ? dyn_cast<RankedTensorType>(r.weights.getType())
                      : RankedTensorType();
  if (skipViews(wg->first) != skipViews(r.weights) || !wT ||
      wT.getShape() != idsT.getShape()) {
    why = "the grouped experts' outputs are not scaled by the routing "
          "weights of the sorted pairs";
    return failure();
  }

  // Each chunk: one expert's FFN on chunk e of the sorted rows. The row-
  // wise ops between the two splits go into each chunk first.
  OpBuilder b(sc->getContext());
  std::map<int64_t, ExpertFFN> experts;
  Value sortedRows, sizes;
  for (auto [i, part] : llvm::enumerate(cat.getInputs())) {
    SetVector<Operation *> ops = sliceOf(part);
    for (Operation *op : ops) {
      auto s = dyn_cast<tensor::ExtractSliceOp>(op);
      std::optional<Chunk> c = s ? matchChunk(s.getResult()) : std::nullopt;
      if (!c || c->index != int64_t(i))
        continue;
      b.setInsertionPoint(s);
      DenseMap<Value, Value> done;
      if (Value pushed = chunkOf(b, c->source, *c, done))
        s.getResult().replaceAllUsesWith(pushed);
    }
    FailureOr<ExpertFFN> f = matchFFN(part, why);
    if (failed(f))
      return failure();
    std::optional<Chunk> in = matchChunk(skipViews(f->input));
    if (!in || in->index != int64_t(i) || (sizes && in->sizes != sizes) ||
        (sortedRows && in->source != sortedRows)) {
      why = "chunk " + std::to_string(i) +
            " of the grouped experts does not read chunk " + std::to_string(i) +
            " of the rows sorted by expert";
      return failure();
    }
    sizes = in->sizes;
    sortedRows = in->source;
    // Chunk i multiplies expert i's slab of stacked weights.
    for (Operation *op : sliceOf(part)) {
      auto g = dyn_cast<linalg::GenericOp>(op);
      if (!g || g.getNumDpsInputs() != 1 ||
          cast<RankedTensorType>(g.getDpsInputs()[0].getType()).getRank() != 0)
        continue;
      bool slab = false;
      g.getBody()->walk([&](tensor::ExtractOp ex) {
        auto c = ex.getTensor().getDefiningOp<arith::ConstantOp>();
        slab |= c && cast<RankedTensorType>(c.getType()).getRank() == 3;
      });
      if (slab && constantInt(g.getDpsInputs()[0]) != int64_t(i)) {
        why = "chunk " + std::to_string(i) +
              " of the grouped experts multiplies another expert's weights";
        return failure();
      }
    }
    experts[int64_t(i)] = *f;
  }
  // The rows: the tokens of the sorted pairs, x[perm // k].
  std::optional<std::pair<Value, Value>> rows = matchRowGather(sortedRows);
  std::optional<std::pair<Value, int64_t>> rowTok =
      rows ? matchDivByConst(rows->second) : std::nullopt;
  if (!rowTok || rowTok->first != perm || rowTok->second != k) {
    why = "the grouped experts' rows are not the tokens of the pairs sorted "
          "by expert";
    return failure();
  }
  // The sizes: the number of pairs per expert, in expert order.
  if (sizesCountIds(sizes, e) != ids) {
    why = "the split sizes of the grouped experts are not the numbers of "
          "tokens per expert";
    return failure();
  }
  return emitLayer(r, root, skipViews(rows->first), experts, why);
}

} // namespace moec::raising

namespace moec::raising {

void densifyGroupedGemms(func::FuncOp func) {
  // Nothing to do without a concatenation of GEMMs on chunks.
  bool any = false;
  func.walk([&](tensor::ConcatOp c) {
    auto mm = c.getInputs()[0].getDefiningOp<linalg::MatmulOp>();
    any |= mm && matchChunk(mm.getDpsInputs()[0]).has_value();
  });
  if (!any)
    return;
  // What the raised layers left behind goes first (the other chunks of a
  // raised layer's splits).
  for (bool erased = true; erased;) {
    erased = false;
    SmallVector<Operation *> dead;
    func.walk([&](Operation *op) {
      if (op != func && isOpTriviallyDead(op))
        dead.push_back(op);
    });
    for (Operation *op : llvm::reverse(dead)) {
      op->erase();
      erased = true;
    }
  }
  SmallVector<tensor::ConcatOp> cats;
  func.walk([&](tensor::ConcatOp c) {
    if (c.getDim() == 0 && c.getInputs().size() >= 2)
      cats.push_back(c);
  });
  for (tensor::ConcatOp cat : cats) {
    int64_t e = cat.getInputs().size();
    Value rows, sizes;
    SmallVector<Value> weights;
    for (auto [i, in] : llvm::enumerate(cat.getInputs())) {
      auto mm = in.getDefiningOp<linalg::MatmulOp>();
      std::optional<Chunk> c =
          mm ? matchChunk(mm.getDpsInputs()[0]) : std::nullopt;
      if (!c || c->index != int64_t(i) || (rows && c->source != rows) ||
          (sizes && c->sizes != sizes) ||
          !cast<RankedTensorType>(mm.getDpsInputs()[1].getType())
               .hasStaticShape())
        break;
      rows = c->source;
      sizes = c->sizes;
      weights.push_back(mm.getDpsInputs()[1]);
    }
    if (int64_t(weights.size()) != e)
      continue;
    Value ids = sizesCountIds(sizes, e);
    moe::TopKOp sort = ids ? sortOf(ids) : moe::TopKOp();
    auto rowsT = cast<RankedTensorType>(rows.getType());
    if (!sort || !rowsT.hasStaticShape() ||
        rowsT.getDimSize(0) != int64_t(sort.getK()))
      continue;
    // Row r of the sorted rows belongs to expert sorted[r]: out[r] =
    // rows[r] @ W[sorted[r]], as E whole GEMMs and a select per expert.
    OpBuilder b(cat);
    Location loc = cat.getLoc();
    auto outT = cast<RankedTensorType>(cat.getType());
    int64_t n = rowsT.getDimSize(0), cols = outT.getDimSize(1);
    auto accT = RankedTensorType::get({n, cols}, outT.getElementType());
    Value zero =
        arith::ConstantOp::create(b, loc, b.getZeroAttr(outT.getElementType()));
    Value empty =
        tensor::EmptyOp::create(b, loc, accT.getShape(), accT.getElementType());
    Value acc = linalg::FillOp::create(b, loc, zero, empty).getResult(0);
    Value sorted = sort.getValues();
    MLIRContext *ctx = b.getContext();
    AffineMap id2 = AffineMap::getMultiDimIdentityMap(2, ctx);
    AffineMap row = AffineMap::get(2, 0, {getAffineDimExpr(0, ctx)}, ctx);
    SmallVector<utils::IteratorType> par(2, utils::IteratorType::parallel);
    for (int64_t i = 0; i < e; ++i) {
      Value init = linalg::FillOp::create(b, loc, zero, empty).getResult(0);
      Value y = linalg::MatmulOp::create(b, loc, TypeRange{accT},
                                         ValueRange{rows, weights[i]},
                                         ValueRange{init})
                    .getResult(0);
      Value c = arith::ConstantIntOp::create(b, loc, b.getI64Type(), i);
      acc = linalg::GenericOp::create(
                b, loc, TypeRange{accT}, ValueRange{sorted, y}, ValueRange{acc},
                ArrayRef<AffineMap>{row, id2, id2}, par,
                [&](OpBuilder &bb, Location l, ValueRange a) {
                  Value eq = arith::CmpIOp::create(
                      bb, l, arith::CmpIPredicate::eq, a[0], c);
                  linalg::YieldOp::create(
                      bb, l,
                      Value(arith::SelectOp::create(bb, l, eq, a[1], a[2])));
                })
                .getResult(0);
    }
    cat->emitRemark() << "grouped expert GEMMs (rows sorted by expert, "
                         "split by the tokens per expert) outside a raised "
                         "MoE layer are computed densely: every expert's "
                         "GEMM on all "
                      << n << " rows, each row keeping its own expert's";
    Value res = acc;
    if (accT != outT)
      res = tensor::CastOp::create(b, loc, outT, acc);
    cat.getResult().replaceAllUsesWith(res);
    cat.erase();
  }
}

} // namespace moec::raising
