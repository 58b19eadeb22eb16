//===- FoldKVRepeat.cpp - attention reads each KV head once
//----------------===//
//
// moe-fold-kv-repeat (Passes.td): a linalg.batch_matmul whose B operand is
// grouped-query attention's repeated (and, for the keys, transposed) copy
// of the KV heads reads the heads themselves instead:
//
//   E = broadcast(X)      [P, g, L, D] from X [P, 1, L, D] (or [P, L, D])
//   T = transpose(E)      [.., D, L]   (keys only)
//   C = batch_matmul(A [P*g, M, K], view(T or E) [P*g, K, N])
// becomes
//   C = view(batch_matmul(view(A) [P, g*M, K], view(X) [P, L, D]))
//
// with the keys read transposed through the batch matmul's indexing maps
// (plan lowering: `batch_matmul` with trans_b). Query head p*g + r of the
// product belongs to KV head p (Hugging Face's repeat_kv and every export
// of it put the repeat right after the KV heads), so the g query heads of
// one KV head are g*M consecutive rows of one batch. Views here are
// reshapes that keep the row-major order, which the plan lowering aliases.
//
//===----------------------------------------------------------------------===//

#include "moec/Transforms/Passes.h"

#include "RaiseExpertsInternal.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"

namespace moec {
#define GEN_PASS_DEF_MOEFOLDKVREPEAT
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {

/// Back through reshapes that keep the row-major order (and casts).
Value throughViews(Value v) { return raising::skipViews(v); }

ArrayRef<int64_t> shapeOf(Value v) {
  return cast<RankedTensorType>(v.getType()).getShape();
}

bool staticShape(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  return t && t.hasStaticShape();
}

int64_t product(ArrayRef<int64_t> dims) {
  int64_t n = 1;
  for (int64_t d : dims)
    n *= d;
  return n;
}

/// `v` as a linalg.transpose of its last two dims: its input, else null.
Value transposedLastTwo(Value v) {
  auto t = v.getDefiningOp<linalg::TransposeOp>();
  if (!t)
    return {};
  ArrayRef<int64_t> perm = t.getPermutation();
  size_t r = perm.size();
  if (r < 2)
    return {};
  for (size_t i = 0; i + 2 < r; ++i)
    if (perm[i] != int64_t(i))
      return {};
  if (perm[r - 2] != int64_t(r - 1) || perm[r - 1] != int64_t(r - 2))
    return {};
  return t.getInput();
}

/// `v` as a broadcast that repeats one dim `dim` (of size > 1) before its
/// last two: a linalg.generic of all-parallel loops over the result
/// (identity map) yielding its one input, read at the result's index with
/// that dim left out or at 0 of a size-1 dim. Its input, else null.
Value repeatedDim(Value v, int64_t &dim) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 1 || g.getNumDpsInits() != 1 ||
      g->getNumResults() != 1 || !staticShape(g.getDpsInputs()[0]))
    return {};
  Block &body = g.getRegion().front();
  auto yield = dyn_cast<linalg::YieldOp>(body.getTerminator());
  if (!yield || yield.getNumOperands() != 1 ||
      yield.getOperand(0) != body.getArgument(0) ||
      body.getOperations().size() != 1)
    return {};
  if (g.getNumParallelLoops() != g.getNumLoops())
    return {};
  SmallVector<AffineMap> maps = g.getIndexingMapsArray();
  if (!maps[1].isIdentity())
    return {};
  ArrayRef<int64_t> out = shapeOf(v), in = shapeOf(g.getDpsInputs()[0]);
  int64_t rank = int64_t(out.size());
  // The result's dims the input reads, in order; constants only at 0 of a
  // dim of size 1.
  SmallVector<bool> read(size_t(rank), false);
  int64_t last = -1;
  for (auto [i, e] : llvm::enumerate(maps[0].getResults())) {
    if (auto c = dyn_cast<AffineConstantExpr>(e)) {
      if (c.getValue() != 0 || in[i] != 1)
        return {};
      continue;
    }
    auto d = dyn_cast<AffineDimExpr>(e);
    if (!d || int64_t(d.getPosition()) <= last || in[i] != out[d.getPosition()])
      return {};
    last = d.getPosition();
    read[d.getPosition()] = true;
  }
  dim = -1;
  for (int64_t d = 0; d < rank; ++d)
    if (!read[size_t(d)] && out[size_t(d)] != 1) {
      if (dim >= 0)
        return {};
      dim = d;
    }
  if (dim < 0 || dim >= rank - 2 || !read[size_t(rank - 2)] ||
      !read[size_t(rank - 1)])
    return {};
  // Only dims of size 1 between the repeated one and the last two: each
  // repeat is one [L, D] matrix.
  for (int64_t d = dim + 1; d < rank - 2; ++d)
    if (out[size_t(d)] != 1)
      return {};
  return g.getDpsInputs()[0];
}

/// `v` [..., a, b] as [P, a, b] (P the product of the leading dims).
Value asBatch(OpBuilder &b, Location loc, Value v) {
  ArrayRef<int64_t> s = shapeOf(v);
  int64_t r = int64_t(s.size());
  if (r == 3)
    return v;
  if (r < 3) {
    auto t = RankedTensorType::get(
        {1, s[0], s[1]}, cast<RankedTensorType>(v.getType()).getElementType());
    return tensor::ExpandShapeOp::create(
        b, loc, t, v, ArrayRef<ReassociationIndices>{{0, 1}, {2}});
  }
  ReassociationIndices lead;
  for (int64_t d = 0; d < r - 2; ++d)
    lead.push_back(d);
  SmallVector<ReassociationIndices> groups = {lead, {r - 2}, {r - 1}};
  return tensor::CollapseShapeOp::create(b, loc, v, groups);
}

/// [n*g, m, k] -> [n, g*m, k] (`split`) or back.
Value regroup(OpBuilder &b, Location loc, Value v, int64_t g, bool split) {
  if (g == 1)
    return v;
  ArrayRef<int64_t> s = shapeOf(v);
  Type elt = cast<RankedTensorType>(v.getType()).getElementType();
  int64_t n = split ? s[0] / g : s[0], m = split ? s[1] : s[1] / g;
  auto four = RankedTensorType::get({n, g, m, s[2]}, elt);
  if (split) {
    Value x = tensor::ExpandShapeOp::create(
        b, loc, four, v, ArrayRef<ReassociationIndices>{{0, 1}, {2}, {3}});
    return tensor::CollapseShapeOp::create(
        b, loc, x, ArrayRef<ReassociationIndices>{{0}, {1, 2}, {3}});
  }
  Value x = tensor::ExpandShapeOp::create(
      b, loc, four, v, ArrayRef<ReassociationIndices>{{0}, {1, 2}, {3}});
  return tensor::CollapseShapeOp::create(
      b, loc, x, ArrayRef<ReassociationIndices>{{0, 1}, {2}, {3}});
}

/// The indexing maps of a batch matmul with B transposed.
SmallVector<AffineMap> transBMaps(MLIRContext *ctx) {
  AffineExpr d0, d1, d2, d3;
  bindDims(ctx, d0, d1, d2, d3); // batch, m, n, k
  return {AffineMap::get(4, 0, {d0, d1, d3}, ctx),
          AffineMap::get(4, 0, {d0, d2, d3}, ctx),
          AffineMap::get(4, 0, {d0, d1, d2}, ctx)};
}

/// Rewrites `bm` when its B operand is a repeated and/or transposed copy
/// (file comment). Returns whether it did.
bool fold(linalg::BatchMatmulOp bm) {
  if (bm.hasUserDefinedMaps() || bm.getNumDpsInputs() != 2 ||
      bm->getNumResults() != 1)
    return false;
  Value a = bm.getDpsInputs()[0], bOp = bm.getDpsInputs()[1];
  auto fill = bm.getDpsInits()[0].getDefiningOp<linalg::FillOp>();
  if (!fill || !staticShape(a) || !staticShape(bOp) ||
      !staticShape(bm->getResult(0)))
    return false;
  // B [Nb, K, N]: a view of T^T or of E.
  Value src = throughViews(bOp);
  Value y = transposedLastTwo(src);
  bool trans = bool(y);
  Value e = trans ? throughViews(y) : src;
  int64_t dim = -1;
  Value x = repeatedDim(e, dim);
  int64_t g = 1;
  ArrayRef<int64_t> se;
  if (x) {
    se = shapeOf(e);
    g = se[size_t(dim)];
  } else {
    // Without a repeat, only a transpose is worth folding.
    if (!trans)
      return false;
    x = y;
    se = shapeOf(y);
  }
  if (!staticShape(x) || se.size() < 2)
    return false;
  int64_t L = se[se.size() - 2], D = se.back();
  // The product's operands: the views between E (or Y) and B keep the
  // last two dims, so that each batch of B is one [L, D] matrix (read
  // transposed for the keys).
  ArrayRef<int64_t> sb = shapeOf(bOp), sa = shapeOf(a);
  if (sb.size() != 3 || sa.size() != 3)
    return false;
  if (trans) {
    ArrayRef<int64_t> sy = shapeOf(y);
    if (sy.size() < 2 || sy[sy.size() - 2] != L || sy.back() != D ||
        sb[1] != D || sb[2] != L)
      return false;
  } else if (sb[1] != L || sb[2] != D) {
    return false;
  }
  int64_t P = product(se) / (L * D) / g;
  if (sb[0] != P * g || sa[0] != P * g || sa[2] != sb[1] ||
      product(shapeOf(x)) != P * L * D)
    return false;

  OpBuilder b(bm);
  Location loc = bm.getLoc();
  Value xb = asBatch(b, loc, x); // [P, L, D]
  if (shapeOf(xb)[0] != P)
    return false;
  Value ab = regroup(b, loc, a, g, /*split=*/true); // [P, g*M, K]
  int64_t M = sa[1], N = sb[2];
  Type elt =
      cast<RankedTensorType>(bm->getResult(0).getType()).getElementType();
  auto ct = RankedTensorType::get({P, g * M, N}, elt);
  Value init = tensor::EmptyOp::create(b, loc, ct.getShape(), elt);
  init = linalg::FillOp::create(b, loc, fill.getInputs()[0], init).result();
  Operation *prod;
  if (trans) {
    auto op = linalg::BatchMatmulOp::create(
        b, loc, TypeRange{ct}, ValueRange{ab, xb}, ValueRange{init});
    op.setIndexingMapsAttr(b.getAffineMapArrayAttr(transBMaps(b.getContext())));
    prod = op;
  } else {
    prod = linalg::BatchMatmulOp::create(b, loc, TypeRange{ct},
                                         ValueRange{ab, xb}, ValueRange{init});
  }
  Value c = regroup(b, loc, prod->getResult(0), g, /*split=*/false);
  bm->getResult(0).replaceAllUsesWith(c);
  bm->erase();
  return true;
}

struct MoEFoldKVRepeatPass
    : public moec::impl::MoEFoldKVRepeatBase<MoEFoldKVRepeatPass> {
  using Base::Base;
  void runOnOperation() override {
    SmallVector<linalg::BatchMatmulOp> bms;
    getOperation().walk([&](linalg::BatchMatmulOp bm) { bms.push_back(bm); });
    for (linalg::BatchMatmulOp bm : bms)
      (void)fold(bm);
  }
};

} // namespace

bool moec::isBatchMatmulTransB(Operation *op) {
  auto bm = dyn_cast_or_null<linalg::BatchMatmulOp>(op);
  return bm && bm.hasUserDefinedMaps() &&
         bm.getIndexingMapsArray() == transBMaps(op->getContext());
}
