//===- Report.cpp - MoE layer report --------------------------------------===//

#include "moec/Analysis/Report.h"

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/JSON.h"

#include <map>

using namespace mlir;
using namespace moec;

namespace {
int64_t numel(Value v) {
  return v ? cast<RankedTensorType>(v.getType()).getNumElements() : 0;
}

std::string layerName(Operation *op) {
  if (auto n = dyn_cast<NameLoc>(op->getLoc()))
    return n.getName().str();
  return "";
}

struct Layer {
  std::string name;
  int64_t experts, hidden, ffn, topK;
  std::string score, activation, groupScore;
  bool gated, renormalize, biases, selectionBias;
  /// The routing weight scales the expert input (moe.experts weight_input).
  bool weightInput;
  double scaling;
  int64_t groups, topkGroups;
  int64_t perExpert, expertsTotal, router;
  /// Shared experts (ops marked `moe.shared_expert` by moe-raise-experts)
  /// added to this layer's output: how many, how many of them are scaled by
  /// a sigmoid gate, their parameters.
  int64_t shared = 0, sharedGated = 0, sharedParams = 0;
};

/// The constant a MatMul operand is read from (through views, transposes).
Value weightConstant(Value v) {
  while (Operation *def = v.getDefiningOp()) {
    if (isa<arith::ConstantOp>(def))
      return v;
    if (isa<tensor::ReshapeOp, tensor::CastOp, tensor::CollapseShapeOp,
            tensor::ExpandShapeOp>(def))
      v = def->getOperand(0);
    else if (auto t = dyn_cast<linalg::TransposeOp>(def))
      v = t.getInput();
    else
      return {};
  }
  return {};
}

/// Finds the shared experts added to the output of `ex`: follows it through
/// views and adds, and collects the marked ops computing the other addend.
void findSharedExperts(moe::ExpertsOp ex, Layer &l) {
  SmallVector<Value> outs{ex.getResult()};
  std::map<int64_t, std::pair<int64_t, bool>> found; // id -> params, gated
  for (size_t i = 0; i < outs.size(); ++i) {
    for (Operation *user : outs[i].getUsers()) {
      if (isa<tensor::ReshapeOp, tensor::CastOp, tensor::CollapseShapeOp,
              tensor::ExpandShapeOp>(user)) {
        outs.push_back(user->getResult(0));
        continue;
      }
      auto add = dyn_cast<linalg::GenericOp>(user);
      if (!add || add.getNumDpsInputs() != 2 || add.getNumResults() != 1)
        continue;
      Value other = add.getDpsInputs()[0] == outs[i] ? add.getDpsInputs()[1]
                                                     : add.getDpsInputs()[0];
      // The shared expert's own ops: marked ones and the views (slices:
      // a fused projection chunked, GraniteMoeShared), weights
      // and inits between them, not what computes its input (the slice
      // would otherwise hold every earlier layer, and the residual add
      // after this one would count their shared experts too).
      SetVector<Operation *> slice;
      BackwardSliceOptions opts;
      opts.inclusive = true;
      opts.filter = [](Operation *op) {
        return op->hasAttr("moe.shared_expert") ||
               isa<arith::ConstantOp, tensor::EmptyOp, linalg::FillOp,
                   linalg::TransposeOp, tensor::ReshapeOp, tensor::CastOp,
                   tensor::CollapseShapeOp, tensor::ExpandShapeOp,
                   tensor::ExtractSliceOp>(op);
      };
      (void)getBackwardSlice(other, &slice, opts);
      bool any = false;
      for (Operation *op : slice) {
        auto id = op->getAttrOfType<IntegerAttr>("moe.shared_expert");
        if (!id)
          continue;
        any = true;
        auto &[params, gated] = found[id.getInt()];
        if (auto mm = dyn_cast<linalg::MatmulOp>(op)) {
          params += numel(weightConstant(mm.getDpsInputs()[1]));
          // The gate of a sigmoid-gated shared expert is a [H, 1] MatMul.
          if (cast<RankedTensorType>(mm.getResult(0).getType()).getDimSize(1) ==
              1)
            gated = true;
        }
      }
      if (any)
        outs.push_back(add.getResult(0));
    }
  }
  l.shared = found.size();
  for (auto &[id, pg] : found) {
    l.sharedParams += pg.first;
    l.sharedGated += pg.second;
  }
}
} // namespace

/// The moe.dequantize ops that read `v` (directly or through
/// moe.local_weights) and the operand index they read it at.
static void
packedUses(Value v,
           SmallVectorImpl<std::pair<moe::DequantizeOp, unsigned>> &out) {
  for (OpOperand &u : v.getUses()) {
    if (auto dq = dyn_cast<moe::DequantizeOp>(u.getOwner()))
      out.push_back({dq, u.getOperandNumber()});
    else if (auto lw = dyn_cast<moe::LocalWeightsOp>(u.getOwner()))
      packedUses(lw.getResult(), out);
  }
}

int64_t moec::parameterCount(Operation *op) {
  auto c = dyn_cast<arith::ConstantOp>(op);
  auto t = c ? dyn_cast<RankedTensorType>(c.getType()) : nullptr;
  if (!t)
    return 0;
  SmallVector<std::pair<moe::DequantizeOp, unsigned>> uses;
  packedUses(c.getResult(), uses);
  if (!uses.empty() &&
      uses.size() ==
          size_t(std::distance(c->getUses().begin(), c->getUses().end()))) {
    auto [dq, operand] = uses.front();
    return operand == 0 ? t.getNumElements() * 8 / dq.getBits() : 0;
  }
  return isa<FloatType>(t.getElementType()) ? t.getNumElements() : 0;
}

void moec::writeMoEReport(ModuleOp module, raw_ostream &os, bool json) {
  std::vector<Layer> layers;
  int64_t total = 0;
  module.walk([&](arith::ConstantOp c) { total += parameterCount(c); });
  module.walk([&](moe::ExpertsOp ex) {
    Layer l;
    auto g = cast<RankedTensorType>(ex.getWGate().getType());
    l.experts = g.getDimSize(0);
    l.hidden = g.getDimSize(1);
    l.ffn = g.getDimSize(2);
    l.gated = bool(ex.getWUp());
    l.activation = moe::stringifyActivation(ex.getActivation()).str();
    l.biases = ex.getBGate() || ex.getBDown();
    l.weightInput = ex.getWeightInput();
    l.expertsTotal = numel(ex.getWGate()) + numel(ex.getWUp()) +
                     numel(ex.getWDown()) + numel(ex.getBGate()) +
                     numel(ex.getBUp()) + numel(ex.getBDown());
    l.perExpert = l.expertsTotal / l.experts;
    l.topK = cast<RankedTensorType>(ex.getIndices().getType()).getDimSize(1);
    // A router kept as the model's own ops (moe-raise-experts): "custom".
    l.score = "custom";
    l.renormalize = false;
    l.scaling = 1.0;
    l.groups = l.topkGroups = 1;
    l.groupScore = "max";
    l.selectionBias = false;
    l.router = 0;
    findSharedExperts(ex, l);
    l.name = layerName(ex);
    if (auto r = ex.getIndices().getDefiningOp<moe::RouteOp>()) {
      l.score = moe::stringifyScoreFunc(r.getScoreFunc()).str();
      l.renormalize = r.getRenormalize();
      l.scaling = r.getScalingFactor().convertToDouble();
      l.groups = r.getNumGroups();
      l.topkGroups = r.getTopkGroups();
      l.groupScore = moe::stringifyGroupScore(r.getGroupScore()).str();
      l.selectionBias = bool(r.getBias());
      l.name = layerName(r);
      // The router weight: logits = x @ W (W constant, possibly a
      // transposed constant, as ONNX Gemm with transB writes it).
      Value logits = r.getLogits();
      while (auto c = logits.getDefiningOp<tensor::CollapseShapeOp>())
        logits = c.getSrc();
      if (auto mm = logits.getDefiningOp<linalg::MatmulOp>()) {
        Value w = mm.getDpsInputs()[1];
        if (auto t = w.getDefiningOp<linalg::TransposeOp>())
          w = t.getInput();
        if (w.getDefiningOp<arith::ConstantOp>())
          l.router = numel(w);
      }
    }
    layers.push_back(l);
  });
  int64_t inExperts = 0;
  for (const Layer &l : layers)
    inExperts += l.expertsTotal;
  if (json) {
    llvm::json::Array arr;
    for (const Layer &l : layers)
      arr.push_back(
          llvm::json::Object{{"name", l.name},
                             {"experts", l.experts},
                             {"top_k", l.topK},
                             {"score_func", l.score},
                             {"renormalize", l.renormalize},
                             {"scaling_factor", l.scaling},
                             {"num_groups", l.groups},
                             {"topk_groups", l.topkGroups},
                             {"group_score", l.groupScore},
                             {"selection_bias", l.selectionBias},
                             {"hidden", l.hidden},
                             {"ffn", l.ffn},
                             {"gated", l.gated},
                             {"activation", l.activation},
                             {"biases", l.biases},
                             {"weight_input", l.weightInput},
                             {"params_per_expert", l.perExpert},
                             {"params_experts", l.expertsTotal},
                             {"params_router", l.router},
                             {"shared_experts", l.shared},
                             {"shared_experts_gated", l.sharedGated},
                             {"params_shared_experts", l.sharedParams}});
    llvm::json::Object root{{"moe_layers", std::move(arr)},
                            {"params_total", total},
                            {"params_in_experts", inExperts},
                            {"params_dense", total - inExperts}};
    os << llvm::formatv("{0:2}", llvm::json::Value(std::move(root))) << "\n";
    return;
  }
  os << "MoE layers: " << layers.size() << "\n";
  for (auto [i, l] : llvm::enumerate(layers)) {
    os << "layer " << i << (l.name.empty() ? "" : " (" + l.name + ")") << ": "
       << l.experts << " experts, top-" << l.topK << ", " << l.score
       << " routing" << (l.renormalize ? ", renormalized" : "");
    if (l.groups > 1)
      os << ", " << l.topkGroups << " of " << l.groups << " groups ("
         << l.groupScore << ")";
    if (l.selectionBias)
      os << ", selection bias";
    if (l.scaling != 1.0)
      os << ", scaled by " << llvm::format("%g", l.scaling);
    os << "\n  expert FFN: " << (l.gated ? "gated " : "") << l.activation
       << (l.biases ? " with biases" : "")
       << (l.weightInput ? ", routing weight on its input" : "") << ", hidden "
       << l.hidden << ", intermediate " << l.ffn
       << "\n  parameters: " << l.perExpert << " per expert, " << l.expertsTotal
       << " in all experts, " << l.router << " in the router\n";
    if (l.shared)
      os << "  shared experts: " << l.shared
         << (l.sharedGated ? " (sigmoid-gated)" : "") << ", " << l.sharedParams
         << " parameters\n";
  }
  os << "parameters: " << total << " total, " << inExperts << " in experts, "
     << total - inExperts << " elsewhere\n";
}
