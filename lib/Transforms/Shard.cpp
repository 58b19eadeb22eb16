//===- Shard.cpp - moe-shard: the device grid and the token split ---------===//
//
// Creates `shard.grid @mesh` from the mesh spec and decides where the tokens
// are split over dp x ep (`token-split`). Whole model: checks that the model
// splits that way and annotates it (model inputs and outputs get a
// `moe.token_split` attribute with their token dims, the tokens entering
// each MoE layer a `shard.shard`). Sequence-parallel MoE: the rest stays
// replicated and each moe.experts works on this rank's slice of the rows
// (shard.all_slice in, shard.all_gather out).
//
//===----------------------------------------------------------------------===//

#include "TokenSlice.h"

#include "moec/Analysis/Mesh.h"
#include "moec/Analysis/StaticShapes.h"
#include "moec/Analysis/TokenDims.h"
#include "moec/Dialect/MoE/MoEOps.h"
#include "moec/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"

namespace moec {
#define GEN_PASS_DEF_MOESHARD
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {

/// "model input 'x'" / "model output 'y'" from the importer's onnx.name.
std::string ioName(func::FuncOp f, unsigned i, bool result) {
  auto name = result ? f.getResultAttrOfType<StringAttr>(i, "onnx.name")
                     : f.getArgAttrOfType<StringAttr>(i, "onnx.name");
  std::string s = result ? "model output " : "model input ";
  return s + (name ? "'" + name.str() + "'" : "#" + std::to_string(i));
}

/// The whole-model split of `func` over `n` token ranks: the token dims of
/// every value, each checked to split n ways. Emits an error and fails when
/// the model does not split so.
FailureOr<DenseMap<Value, TokenDims>>
wholeModelSplit(func::FuncOp func, int64_t n, const std::string &mesh) {
  auto facts = analyzeTokenDims(func, n);
  if (failed(facts))
    return failure();
  auto check = [&](Value v, const std::string &what) -> LogicalResult {
    auto it = facts->find(v);
    if (it == facts->end())
      return success();
    std::string why;
    if (failed(localShape(cast<ShapedType>(v.getType()).getShape(), it->second,
                          n, why)))
      return func.emitError(what) << ": " << why << " (" << mesh
                                  << " splits tokens " << n << " ways)";
    return success();
  };
  for (BlockArgument arg : func.getArguments())
    if (failed(check(arg, ioName(func, arg.getArgNumber(), false))))
      return failure();
  auto ret = cast<func::ReturnOp>(func.getBody().back().getTerminator());
  for (OpOperand &res : ret->getOpOperands())
    if (failed(check(res.get(), ioName(func, res.getOperandNumber(), true))))
      return failure();
  for (auto &[v, d] : *facts)
    if (failed(check(v, "a value carrying tokens")))
      return failure();
  return facts;
}

/// Annotates the whole-model split: token dims on the model's inputs and
/// outputs, a shard.shard over the token axes on the tokens entering each
/// MoE layer.
void annotateWholeModel(func::FuncOp func,
                        const DenseMap<Value, TokenDims> &facts,
                        ArrayRef<int16_t> tokenAxes) {
  OpBuilder b(func.getContext());
  auto dimsAttr = [&](TokenDims d) {
    return b.getDenseI64ArrayAttr({d.start, d.count});
  };
  for (BlockArgument arg : func.getArguments())
    if (auto it = facts.find(arg); it != facts.end())
      func.setArgAttr(arg.getArgNumber(), "moe.token_split",
                      dimsAttr(it->second));
  auto ret = cast<func::ReturnOp>(func.getBody().back().getTerminator());
  for (OpOperand &res : ret->getOpOperands())
    if (auto it = facts.find(res.get()); it != facts.end())
      func.setResultAttr(res.getOperandNumber(), "moe.token_split",
                         dimsAttr(it->second));
  SmallVector<OpOperand *> annotate;
  func.walk([&](Operation *op) {
    if (auto r = dyn_cast<moe::RouteOp>(op))
      annotate.push_back(&r.getLogitsMutable());
    if (auto e = dyn_cast<moe::ExpertsOp>(op))
      annotate.push_back(&e.getTokensMutable());
  });
  for (OpOperand *operand : annotate) {
    b.setInsertionPoint(operand->getOwner());
    Location loc = operand->getOwner()->getLoc();
    auto sharding = shard::ShardingOp::create(
        b, loc, kGridName.str(),
        ArrayRef<shard::GridAxesAttr>{b.getDenseI16ArrayAttr(tokenAxes)});
    auto sh = shard::ShardOp::create(b, loc, operand->get(), sharding,
                                     /*annotate_for_users=*/true);
    operand->set(sh);
  }
}

/// Sequence-parallel MoE: `op` takes this rank's block of rows of its
/// tokens, indices and routing weights and its rows are all-gathered back.
/// Rows are padded to a multiple of `n`: zero tokens with weight 0, so they
/// add nothing, routed like real tokens to k distinct experts (padding row
/// r, choice j: expert (r*k + j) mod E), spread over the experts so that no
/// rank receives more rows than the dispatch's dropless bound.
LogicalResult sliceExperts(moe::ExpertsOp op, int64_t n,
                           ArrayRef<int16_t> tokenAxes) {
  auto tokensT = cast<RankedTensorType>(op.getTokens().getType());
  int64_t t = tokensT.getDimSize(0);
  if (ShapedType::isDynamic(t))
    return op.emitError("sharding needs static token counts (give "
                        "--input-shape)");
  int64_t experts = op.getNumExperts();
  if (ShapedType::isDynamic(experts))
    return op.emitError("sharding needs a static expert count");
  OpBuilder b(op);
  Location loc = op.getLoc();
  op.getTokensMutable().assign(
      sliceRows(b, loc, op.getTokens(), n, tokenAxes, experts));
  op.getIndicesMutable().assign(
      sliceRows(b, loc, op.getIndices(), n, tokenAxes, experts));
  op.getWeightsMutable().assign(
      sliceRows(b, loc, op.getWeights(), n, tokenAxes, experts));
  Value rows = op.getResult();
  rows.setType(localRowsType(rows.getType(), n));
  gatherRowUses(rows, n, t, tokenAxes);
  return success();
}

/// A folded grid: the whole model split over the attention's dp (an error
/// when it does not split so), the MoE layers' rows sliced in moe-partition
/// over the MoE's dp x ep axes that hold the same tokens ("hybrid").
LogicalResult shardFolded(func::FuncOp func, shard::GridOp grid,
                          const MeshSpec &gridSpec, const MeshRoles &roles) {
  int64_t n = axesSize(gridSpec, roles.attnDp);
  auto facts = wholeModelSplit(
      func, n, "attention mesh " + foldingString(grid) + ": attention dp");
  if (failed(facts))
    return grid.emitError("attention dp=")
           << n << " runs attention on whole sequences: the model's tokens "
           << "must split " << n << " ways by sequence (a batch divisible by "
           << n << "); fold attention as tp instead (e.g. --attention-mesh tp="
           << axesSize(gridSpec, roles.attnDp) *
                  axesSize(gridSpec, roles.attnTp)
           << "), which takes any batch";
  annotateWholeModel(func, *facts, roles.attnDp);
  if (!moeSliceAxes(grid).empty())
    grid->setAttr("moe.token_split_mode",
                  StringAttr::get(grid.getContext(), "hybrid"));
  return success();
}

struct MoEShardPass : moec::impl::MoEShardBase<MoEShardPass> {
  using MoEShardBase::MoEShardBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MeshSpec spec;
    std::string err;
    if (!parseMeshSpec(mesh, spec, err)) {
      module.emitError(err);
      return signalPassFailure();
    }
    if (tokenSplit != "auto" && tokenSplit != "model" && tokenSplit != "moe") {
      module.emitError("token-split '")
          << tokenSplit << "': expected auto, model or moe";
      return signalPassFailure();
    }
    // A folded grid: attention and MoE on two layouts of the same ranks.
    MeshSpec gridSpec = spec;
    MeshRoles roles;
    if (!attentionMesh.empty()) {
      AttentionMesh attn;
      if (!parseAttentionMesh(attentionMesh, attn, err) ||
          !foldMesh(spec, attn, gridSpec, roles, err)) {
        module.emitError(err);
        return signalPassFailure();
      }
      if (tokenSplit != "auto") {
        module.emitError("token-split '")
            << tokenSplit
            << "' and an attention mesh: the attention mesh decides where "
               "tokens are split (give one of them)";
        return signalPassFailure();
      }
    }
    if (getMeshGrid(module)) {
      module.emitError("the module already has a grid @")
          << kGridName << " (moe-shard ran twice?)";
      return signalPassFailure();
    }
    // Up front, before any rewrite: one error for the first op whose
    // shape depends on the data.
    for (auto func : module.getOps<func::FuncOp>())
      if (!func.isExternal() &&
          failed(checkStaticShapes(func, "mesh " + spec.str())))
        return signalPassFailure();
    MLIRContext *ctx = &getContext();
    OpBuilder b(ctx);
    b.setInsertionPointToStart(module.getBody());
    SmallVector<int64_t> shape;
    SmallVector<Attribute> names;
    for (auto &[name, size] : gridSpec.axes) {
      shape.push_back(size);
      names.push_back(b.getStringAttr(name));
    }
    auto grid = shard::GridOp::create(b, module.getLoc(), kGridName, shape);
    grid->setAttr("moe.axes", b.getArrayAttr(names));
    setMeshRoles(grid, roles);

    int64_t n = spec.tokenSplit(), tp = spec.size("tp");
    SmallVector<int16_t> tokenAxes;
    for (StringRef a : {"dp", "ep"})
      if (spec.index(a) >= 0)
        tokenAxes.push_back(int16_t(spec.index(a)));

    for (auto func : module.getOps<func::FuncOp>()) {
      if (func.isExternal())
        continue;
      // Tensor parallelism splits each expert's FFN columns.
      WalkResult tpOk = func.walk([&](moe::ExpertsOp op) {
        int64_t f =
            cast<RankedTensorType>(op.getWGate().getType()).getDimSize(2);
        if (tp > 1 && (ShapedType::isDynamic(f) || f % tp != 0)) {
          op.emitError("tp=")
              << tp << " does not divide the expert FFN width " << f;
          return WalkResult::interrupt();
        }
        return WalkResult::advance();
      });
      if (tpOk.wasInterrupted())
        return signalPassFailure();

      if (roles.folded) {
        if (failed(shardFolded(func, grid, gridSpec, roles)))
          return signalPassFailure();
        continue;
      }
      bool sliced = tokenSplit == "moe" && n > 1;
      FailureOr<DenseMap<Value, TokenDims>> facts = failure();
      if (!sliced && tokenSplit == "model") {
        facts = wholeModelSplit(func, n, "mesh " + spec.str());
        if (failed(facts))
          return signalPassFailure();
      } else if (!sliced) {
        // auto: the whole-model split when the model takes it; else the
        // first reason it does not, and sequence-parallel MoE layers.
        std::string reason;
        auto quietSplit = [&](int64_t ways) {
          ScopedDiagnosticHandler capture(ctx, [&](Diagnostic &d) {
            if (d.getSeverity() == DiagnosticSeverity::Error &&
                reason.empty()) {
              std::string node = nodeName(d.getLocation());
              reason = (node.empty() ? "" : "node '" + node + "': ") + d.str();
            }
            return success();
          });
          return wholeModelSplit(func, ways, "mesh " + spec.str());
        };
        facts = quietSplit(n);
        // Hybrid: whole sequences over dp, the MoE rows over ep.
        int64_t dp = spec.size("dp"), ep = spec.size("ep");
        if (failed(facts) && dp > 1 && ep > 1) {
          facts = quietSplit(dp); // `reason` keeps the first error
          if (succeeded(facts)) {
            grid->setAttr("moe.token_split_mode", b.getStringAttr("hybrid"));
            grid->setAttr("moe.token_split_reason", b.getStringAttr(reason));
            grid.emitRemark("the whole model does not split ")
                << n << " ways over tokens (" << reason
                << "); it splits whole sequences " << dp
                << " ways over dp, and each MoE layer's rows are sliced " << ep
                << " ways over ep within each dp group";
            annotateWholeModel(func, *facts, {int16_t(spec.index("dp"))});
            continue;
          }
        }
        if (failed(facts)) {
          sliced = true;
          grid->setAttr("moe.token_split_reason", b.getStringAttr(reason));
          grid.emitRemark("the whole model does not split ")
              << n << " ways over tokens (" << reason
              << "); MoE layers are sequence-parallel instead (each rank "
                 "dispatches its slice of the tokens, attention and the "
                 "dense layers replicated)";
        }
      }
      if (!sliced) {
        annotateWholeModel(func, *facts, tokenAxes);
        continue;
      }
      grid->setAttr("moe.token_split_mode", b.getStringAttr("moe"));
      SmallVector<moe::ExpertsOp> layers;
      func.walk([&](moe::ExpertsOp op) { layers.push_back(op); });
      for (moe::ExpertsOp op : layers)
        if (failed(sliceExperts(op, n, tokenAxes)))
          return signalPassFailure();
    }
  }
};
} // namespace
