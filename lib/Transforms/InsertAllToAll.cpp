//===- InsertAllToAll.cpp - moe-insert-all-to-all -------------------------===//
//
// Rewrites every placed moe.experts into
//   moe.local_weights (per weight) -> moe.dispatch -> moe.expert_compute ->
//   moe.combine [-> shard.all_reduce over tp]
// (the routing weights go to the dispatch of a weight_input moe.experts,
// else to the combine)
// See the pass description in Passes.td.
//
//===----------------------------------------------------------------------===//

#include "TokenSlice.h"

#include "moec/Analysis/Mesh.h"
#include "moec/Dialect/MoE/MoEOps.h"
#include "moec/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/SetVector.h"

#include <cmath>

namespace moec {
#define GEN_PASS_DEF_MOEINSERTALLTOALL
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {
struct MoEInsertAllToAllPass
    : moec::impl::MoEInsertAllToAllBase<MoEInsertAllToAllPass> {
  using MoEInsertAllToAllBase::MoEInsertAllToAllBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    shard::GridOp grid = getMeshGrid(module);
    if (!grid) {
      module.emitError("moe-insert-all-to-all needs the device grid: run "
                       "moe-shard and moe-place-experts first");
      return signalPassFailure();
    }
    if (capacityFactor < 0) {
      module.emitError("capacity-factor must be >= 0 (0: dropless)");
      return signalPassFailure();
    }
    MeshSpec spec = meshSpecOf(grid);
    MeshRoles roles = meshRolesOf(grid);
    SmallVector<int16_t> epAxes = roles.ep, tpAxes = roles.tp;
    int64_t tp = axesSize(spec, tpAxes);
    if (tp == 1)
      tpAxes.clear();
    SmallVector<int16_t> sliceAxes = moeSliceAxes(grid);
    int64_t sliceWays = axesSize(spec, sliceAxes);
    int64_t ep = axesSize(spec, epAxes);

    SmallVector<moe::ExpertsOp> layers;
    module.walk([&](moe::ExpertsOp op) { layers.push_back(op); });
    for (moe::ExpertsOp op : layers) {
      auto placement = op->getAttrOfType<moe::PlacementAttr>("moe.placement");
      if (!placement) {
        op.emitError("moe.experts has no placement: run moe-place-experts "
                     "first");
        return signalPassFailure();
      }
      if (op.getExpertOffset() != 0) {
        op.emitError("cannot shard a moe.experts that holds a slice of the "
                     "experts already (expert_offset ")
            << op.getExpertOffset() << ")";
        return signalPassFailure();
      }
      OpBuilder b(op);
      Location loc = op.getLoc();
      int64_t slots = placement.getSlotsPerRank();

      // The rank's slice of one stacked weight; without `tpSplit` whole
      // along splitDim on every tp rank.
      auto local = [&](Value w, int64_t splitDim, bool firstOnly,
                       bool tpSplit = true) -> Value {
        if (!w)
          return Value();
        ArrayRef<int16_t> axes =
            tpSplit ? ArrayRef<int16_t>(tpAxes) : ArrayRef<int16_t>();
        auto t = cast<RankedTensorType>(w.getType());
        SmallVector<int64_t> shape(t.getShape());
        shape[0] = slots;
        if (!axes.empty() && !firstOnly)
          shape[splitDim] /= tp;
        auto res = moe::LocalWeightsOp::create(
            b, loc, RankedTensorType::get(shape, t.getElementType()), w,
            kGridName, epAxes, placement, axes, uint64_t(splitDim),
            firstOnly && !axes.empty());
        return res;
      };
      // A packed stacked weight (moe.dequantize [E, K, N] of codes
      // [E, N, blocks, blob]): the rank's slice of the codes, scales and
      // zero points, dequantized after the dispatch (only the slots it
      // gave rows). The tensor-parallel block is cut from the codes when it
      // is whole rows (N) or whole blocks (K), else from the dequantized
      // slice (shard.all_slice).
      struct Packed {
        moe::DequantizeOp dq;
        Value *out; // gate, up or down below
        Value codes, scales, zp;
        int64_t splitDim = 0;
        bool onCodes = true;
      };
      SmallVector<Packed, 3> packed;
      Value gate, up, down;
      auto localWeight = [&](Value w, int64_t splitDim, Value &out) {
        auto dq = w ? w.getDefiningOp<moe::DequantizeOp>() : nullptr;
        if (!dq) {
          out = local(w, splitDim, false);
          return;
        }
        auto codesT = cast<RankedTensorType>(dq.getCodes().getType());
        int64_t k = dq.getK(), bs = dq.getBlockSize();
        int64_t blocks = codesT.getDimSize(2);
        bool kSplit = splitDim == 1;
        Packed p;
        p.dq = dq;
        p.out = &out;
        p.splitDim = splitDim;
        p.onCodes =
            tpAxes.empty() || !kSplit || (k % bs == 0 && blocks % tp == 0);
        // Codes [E, N, blocks, blob]: dim 1 is N, dim 2 the blocks of K.
        int64_t codesDim = kSplit ? 2 : 1;
        p.codes = local(dq.getCodes(), codesDim, false, p.onCodes);
        p.scales = local(dq.getScales(), codesDim, false, p.onCodes);
        p.zp = local(dq.getZeroPoints(), codesDim, false, p.onCodes);
        packed.push_back(p); // `out` is made once the dispatch exists
      };
      auto expand = [&](Packed &p, Value handle) -> Value {
        auto resT = cast<RankedTensorType>(p.dq.getType());
        SmallVector<int64_t> shape(resT.getShape());
        shape[0] = slots;
        int64_t localK = p.dq.getK();
        if (p.onCodes && !tpAxes.empty()) {
          shape[p.splitDim] /= tp;
          if (p.splitDim == 1)
            localK /= tp;
        }
        Value x = moe::DequantizeOp::create(
            b, loc, RankedTensorType::get(shape, resT.getElementType()),
            p.codes, p.scales, p.zp, handle, p.dq.getBitsAttr(),
            p.dq.getBlockSizeAttr(), b.getI64IntegerAttr(localK));
        if (p.onCodes || tpAxes.empty())
          return x;
        shape[p.splitDim] /= tp;
        return shard::AllSliceOp::create(
            b, loc, RankedTensorType::get(shape, resT.getElementType()), x,
            kGridName, ArrayRef<int16_t>(tpAxes), p.splitDim);
      };
      localWeight(op.getWGate(), 2, gate);
      localWeight(op.getWUp(), 2, up);
      localWeight(op.getWDown(), 1, down);
      Value bGate = local(op.getBGate(), 1, false);
      Value bUp = local(op.getBUp(), 1, false);
      Value bDown = local(op.getBDown(), 1, true);

      auto tokensT = cast<RankedTensorType>(op.getTokens().getType());
      auto idxT = cast<RankedTensorType>(op.getIndices().getType());
      int64_t tLocal = tokensT.getDimSize(0), k = idxT.getDimSize(1);
      if (ShapedType::isDynamic(tLocal) || ShapedType::isDynamic(k)) {
        op.emitError("sharding needs static token counts (give "
                     "--input-shape)");
        return signalPassFailure();
      }
      // Before moe-partition the shapes are global, unless moe-shard sliced
      // the rows of each MoE layer already (sequence-parallel MoE). Hybrid:
      // the dp group's rows, padded and sliced over ep by moe-partition.
      if (isTokenHybrid(grid)) {
        if (!grid->hasAttr("moe.partitioned"))
          tLocal /= modelTokenSplit(grid);
        tLocal = paddedRows(tLocal, sliceWays) / sliceWays;
      } else if (!grid->hasAttr("moe.partitioned") && !isTokenSliced(grid)) {
        tLocal /= modelTokenSplit(grid);
      }
      // Rows a rank can receive: from each of the ep sources, each token
      // at most once per local slot (dropless), or `capacity` rows per
      // source and slot.
      int64_t maxRows = ep * tLocal * std::min(k, slots);
      int64_t capacity = -1;
      if (capacityFactor > 0) {
        capacity = int64_t(std::ceil(capacityFactor * double(tLocal * k) /
                                     double(placement.getNumExperts())));
        maxRows = std::min(maxRows, ep * slots * capacity);
      }
      auto recvT =
          RankedTensorType::get({ShapedType::kDynamic, tokensT.getDimSize(1)},
                                tokensT.getElementType());
      // The routing weights scale the rows the dispatch sends (weight_input)
      // or the rows the combine sums, never both.
      Value inWeights = op.getWeightInput() ? op.getWeights() : Value();
      Value outWeights = op.getWeightInput() ? Value() : op.getWeights();
      auto dispatch = moe::DispatchOp::create(
          b, loc, recvT, moe::DispatchType::get(&getContext()), op.getTokens(),
          op.getIndices(), inWeights, kGridName, epAxes, placement,
          uint64_t(maxRows), uint64_t(capacity));
      for (Packed &p : packed)
        *p.out = expand(p, dispatch.getHandle());
      auto compute = moe::ExpertComputeOp::create(
          b, loc, recvT, dispatch.getRecv(), dispatch.getHandle(), gate, up,
          down, bGate, bUp, bDown, op.getActivationAttr(), op.getAlphaAttr(),
          op.getBetaAttr(), op.getLimitAttr());
      Value out =
          moe::CombineOp::create(b, loc, op.getResult().getType(), compute,
                                 dispatch.getHandle(), outWeights);
      if (!tpAxes.empty())
        out = shard::AllReduceOp::create(b, loc, out.getType(), kGridName.str(),
                                         tpAxes, out);
      op.getResult().replaceAllUsesWith(out);
      llvm::SetVector<Operation *> weightOps;
      for (Value w : {op.getWGate(), op.getWUp(), op.getWDown()})
        if (Operation *def = w ? w.getDefiningOp() : nullptr)
          weightOps.insert(def);
      op.erase();
      // The whole-stack dequantizes the rank slices replaced.
      for (Operation *def : weightOps)
        if (isa<moe::DequantizeOp>(def) && def->use_empty())
          def->erase();
    }
  }
};
} // namespace
