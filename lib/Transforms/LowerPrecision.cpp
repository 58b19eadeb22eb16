//===- LowerPrecision.cpp - moe-lower-precision: 16-bit GEMMs -------------===//
//
// Stores the expert weights and the dense GEMM weights (all but the
// routers') as bf16 or fp16 constants and narrows the rows that go through
// them; results are widened back (experts) or accumulated in fp32 (dense
// matmuls). See the pass description in Passes.td.
//
//===----------------------------------------------------------------------===//

#include "moec/Analysis/ConstantBytes.h"
#include "moec/Analysis/Weights.h"
#include "moec/Dialect/MoE/MoEOps.h"
#include "moec/Transforms/Passes.h"
#include "moert/Half.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallPtrSet.h"

namespace moec {
#define GEN_PASS_DEF_MOELOWERPRECISION
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {

/// v cast elementwise to `elt` by a linalg.generic (truncf or extf).
Value castTensor(OpBuilder &b, Location loc, Value v, FloatType elt) {
  auto t = cast<RankedTensorType>(v.getType());
  auto from = cast<FloatType>(t.getElementType());
  if (from == elt)
    return v;
  SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, v);
  Value init = tensor::EmptyOp::create(b, loc, sizes, elt);
  AffineMap id = b.getMultiDimIdentityMap(t.getRank());
  SmallVector<utils::IteratorType> its(t.getRank(),
                                       utils::IteratorType::parallel);
  bool narrow = elt.getWidth() < from.getWidth();
  auto g = linalg::GenericOp::create(
      b, loc, TypeRange{init.getType()}, ValueRange{v}, ValueRange{init},
      ArrayRef<AffineMap>{id, id}, its,
      [&](OpBuilder &nb, Location l, ValueRange args) {
        Value r = narrow
                      ? arith::TruncFOp::create(nb, l, elt, args[0]).getResult()
                      : arith::ExtFOp::create(nb, l, elt, args[0]).getResult();
        linalg::YieldOp::create(nb, l, r);
      });
  return g.getResult(0);
}

struct LowerPrecision
    : public moec::impl::MoELowerPrecisionBase<LowerPrecision> {
  using MoELowerPrecisionBase::MoELowerPrecisionBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (precision == "f32" || precision == "fp32")
      return;
    if (precision == "bf16") {
      half = moert::Half16::bf16;
      elt = BFloat16Type::get(&getContext());
    } else if (precision == "f16" || precision == "fp16") {
      half = moert::Half16::f16;
      elt = Float16Type::get(&getContext());
    } else {
      module.emitError("moe-lower-precision: unknown precision '")
          << precision << "' (expected bf16, f16 or f32)";
      return signalPassFailure();
    }

    // Routers: the matmuls that feed a moe.route's logits.
    llvm::SmallPtrSet<Operation *, 8> routers;
    module.walk([&](moe::RouteOp r) { findRouters(r.getLogits(), routers); });
    // The scores of routers kept as the model's own ops (moe-raise-experts
    // marks them).
    module.walk([&](Operation *op) {
      if (op->hasAttr("moe.router_scores"))
        findRouters(op->getResult(0), routers);
    });

    SmallVector<moe::ExpertsOp> experts;
    SmallVector<linalg::MatmulOp> matmuls;
    module.walk([&](Operation *op) {
      if (auto e = dyn_cast<moe::ExpertsOp>(op))
        experts.push_back(e);
      else if (auto m = dyn_cast<linalg::MatmulOp>(op))
        if (!routers.contains(op))
          matmuls.push_back(m);
    });
    for (moe::ExpertsOp e : experts)
      if (failed(lowerExperts(e)))
        return signalPassFailure();
    for (linalg::MatmulOp m : matmuls)
      if (failed(lowerMatmul(m)))
        return signalPassFailure();
  }

  /// Walks back from a router's logits through views and elementwise ops
  /// (a bias add, a transpose) to the matmul(s) that compute them.
  void findRouters(Value v, llvm::SmallPtrSet<Operation *, 8> &routers) {
    SmallVector<std::pair<Value, int>> work{{v, 0}};
    while (!work.empty()) {
      auto [x, depth] = work.pop_back_val();
      Operation *d = x.getDefiningOp();
      if (!d || depth > 8 || isa<arith::ConstantOp>(d))
        continue;
      if (isa<linalg::MatmulOp>(d)) {
        routers.insert(d);
        continue;
      }
      if (isa<tensor::CollapseShapeOp, tensor::ExpandShapeOp, tensor::ReshapeOp,
              linalg::GenericOp, linalg::TransposeOp>(d))
        for (Value o : d->getOperands())
          if (isa<RankedTensorType>(o.getType()))
            work.push_back({o, depth + 1});
    }
  }

  /// The 16-bit copy of an f32 constant (one per constant).
  FailureOr<Value> narrowConstant(Value v, Operation *user, StringRef role) {
    auto c = v.getDefiningOp<arith::ConstantOp>();
    auto t = dyn_cast<RankedTensorType>(v.getType());
    if (!c || !t) {
      user->emitError("moe-lower-precision: ")
          << role << " is not a constant; only constant weights are stored "
          << "in 16 bits";
      return failure();
    }
    if (t.getElementType() == elt)
      return v;
    if (!t.getElementType().isF32()) {
      user->emitError("moe-lower-precision: ")
          << role << " has element type " << t.getElementType()
          << "; only f32 weights are narrowed";
      return failure();
    }
    auto it = narrowed.find(c);
    if (it != narrowed.end())
      return it->second;
    int64_t n = t.getNumElements();
    auto type = RankedTensorType::get(t.getShape(), elt);
    std::string name = "moe_" + precision + "_weight";
    // Large weights are narrowed lazily, while the plan is written
    // (moec/Analysis/Weights.h): never held whole in either precision.
    if (uint64_t(n) * 2 >= lazyWeightThreshold()) {
      FailureOr<LazyWeight> lw =
          narrowedLazy(c.getValue(), half == moert::Half16::bf16 ? 1 : 2);
      if (succeeded(lw)) {
        OpBuilder b(c);
        b.setInsertionPointAfter(c);
        Value nc = makeLazyConstant(b, c.getLoc(), type, std::move(*lw), name);
        narrowed[c] = nc;
        return nc;
      }
    }
    // The f32 values: the blob's own bytes where they are aligned (the
    // importer's blobs are), else a copy.
    const float *src = nullptr;
    std::vector<float> copy;
    if (auto r = dyn_cast<DenseResourceElementsAttr>(c.getValue());
        r && !r.getRawHandle().getBlob() && lazyWeightOf(r)) {
      // A lazy weight below the threshold: its values, realized.
      copy.resize(static_cast<size_t>(n));
      if (failed(readConstant(r, 0, size_t(n) * 4,
                              reinterpret_cast<char *>(copy.data())))) {
        user->emitError("moe-lower-precision: ")
            << role << ": the weight's data is not readable";
        return failure();
      }
    } else if (auto r = dyn_cast<DenseResourceElementsAttr>(c.getValue())) {
      AsmResourceBlob *blob = r.getRawHandle().getBlob();
      if (!blob || int64_t(blob->getData().size()) != n * 4) {
        user->emitError("moe-lower-precision: ")
            << role << ": the weight blob is missing or has the wrong size";
        return failure();
      }
      const char *raw = blob->getData().data();
      if (reinterpret_cast<uintptr_t>(raw) % alignof(float) == 0) {
        src = reinterpret_cast<const float *>(raw);
      } else {
        copy.resize(static_cast<size_t>(n));
        std::memcpy(copy.data(), raw, size_t(n) * 4);
      }
    } else if (auto d = dyn_cast<DenseFPElementsAttr>(c.getValue())) {
      copy.reserve(size_t(n));
      for (float f : d.getValues<float>())
        copy.push_back(f);
    } else {
      user->emitError("moe-lower-precision: ")
          << role << ": unsupported constant " << c.getValue();
      return failure();
    }
    if (!src)
      src = copy.data();
    // Narrowed straight into the new blob.
    AsmResourceBlob blob =
        HeapAsmResourceBlob::allocate(size_t(n) * 2, alignof(uint64_t));
    moert::fromF32(half, src,
                   reinterpret_cast<uint16_t *>(blob.getMutableData().data()),
                   size_t(n));
    auto attr = DenseResourceElementsAttr::get(type, name, std::move(blob));
    OpBuilder b(c);
    b.setInsertionPointAfter(c);
    Value nc = arith::ConstantOp::create(b, c.getLoc(), cast<TypedAttr>(attr));
    narrowed[c] = nc;
    return nc;
  }

  LogicalResult lowerExperts(moe::ExpertsOp e) {
    auto tokT = cast<RankedTensorType>(e.getTokens().getType());
    auto from = dyn_cast<FloatType>(tokT.getElementType());
    if (!from || !from.isF32())
      return success(); // already lowered, or not an f32 model
    // Packed experts (QMoE, moe.dequantize) stay packed and compute in f32,
    // as packed dense weights do (lowerMatmul leaves them).
    for (Value w : {e.getWGate(), e.getWUp(), e.getWDown()})
      if (w && w.getDefiningOp<moe::DequantizeOp>())
        return success();
    // Weights first (errors leave the op untouched).
    SmallVector<std::pair<unsigned, Value>> repl;
    auto weight = [&](Value v, const char *role) -> LogicalResult {
      if (!v)
        return success();
      FailureOr<Value> nv = narrowConstant(v, e, role);
      if (failed(nv))
        return failure();
      for (OpOperand &o : e->getOpOperands())
        if (o.get() == v)
          repl.push_back({o.getOperandNumber(), *nv});
      return success();
    };
    if (failed(weight(e.getWGate(), "w_gate")) ||
        failed(weight(e.getWUp(), "w_up")) ||
        failed(weight(e.getWDown(), "w_down")) ||
        failed(weight(e.getBGate(), "b_gate")) ||
        failed(weight(e.getBUp(), "b_up")) ||
        failed(weight(e.getBDown(), "b_down")))
      return failure();
    OpBuilder b(e);
    Value tok = castTensor(b, e.getLoc(), e.getTokens(), elt);
    for (auto [i, v] : repl)
      e->setOperand(i, v);
    e.getTokensMutable().assign(tok);
    Value res = e.getResult();
    res.setType(RankedTensorType::get(
        cast<RankedTensorType>(res.getType()).getShape(), elt));
    b.setInsertionPointAfter(e);
    Value wide = castTensor(b, e.getLoc(), res, from);
    res.replaceAllUsesExcept(wide, wide.getDefiningOp());
    return success();
  }

  LogicalResult lowerMatmul(linalg::MatmulOp m) {
    if (m.getInputs().size() != 2 || m.hasUserDefinedMaps())
      return success();
    Value a = m.getInputs()[0], w = m.getInputs()[1];
    auto aT = cast<RankedTensorType>(a.getType());
    auto wT = cast<RankedTensorType>(w.getType());
    if (!aT.getElementType().isF32() || !wT.getElementType().isF32() ||
        !w.getDefiningOp<arith::ConstantOp>())
      return success(); // activations x activations, or not f32: unchanged
    FailureOr<Value> nw = narrowConstant(w, m, "the matmul weight");
    if (failed(nw))
      return failure();
    OpBuilder b(m);
    Value na = castTensor(b, m.getLoc(), a, elt);
    auto nm = linalg::MatmulOp::create(b, m.getLoc(), ValueRange{na, *nw},
                                       m.getOutputs());
    nm->setDiscardableAttrs(m->getDiscardableAttrDictionary());
    m->replaceAllUsesWith(nm);
    m->erase();
    return success();
  }

  moert::Half16 half = moert::Half16::bf16;
  FloatType elt;
  llvm::DenseMap<Operation *, Value> narrowed;
};

} // namespace
