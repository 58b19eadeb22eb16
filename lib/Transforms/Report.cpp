//===- Report.cpp - MoE layer report --------------------------------------===//

#include "moec/Transforms/Report.h"

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "llvm/Support/JSON.h"

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
  std::string score, activation;
  bool gated, renormalize, biases;
  double scaling;
  int64_t groups, topkGroups;
  int64_t perExpert, expertsTotal, router;
};
} // namespace

void moec::writeMoEReport(ModuleOp module, raw_ostream &os, bool json) {
  std::vector<Layer> layers;
  int64_t total = 0;
  module.walk([&](arith::ConstantOp c) {
    if (auto t = dyn_cast<RankedTensorType>(c.getType());
        t && isa<FloatType>(t.getElementType()))
      total += t.getNumElements();
  });
  module.walk([&](moe::ExpertsOp ex) {
    Layer l;
    auto g = cast<RankedTensorType>(ex.getWGate().getType());
    l.experts = g.getDimSize(0);
    l.hidden = g.getDimSize(1);
    l.ffn = g.getDimSize(2);
    l.gated = bool(ex.getWUp());
    l.activation = moe::stringifyActivation(ex.getActivation()).str();
    l.biases = ex.getBGate() || ex.getBDown();
    l.expertsTotal = numel(ex.getWGate()) + numel(ex.getWUp()) +
                     numel(ex.getWDown()) + numel(ex.getBGate()) +
                     numel(ex.getBUp()) + numel(ex.getBDown());
    l.perExpert = l.expertsTotal / l.experts;
    l.topK = cast<RankedTensorType>(ex.getIndices().getType()).getDimSize(1);
    l.score = "unknown";
    l.renormalize = false;
    l.scaling = 1.0;
    l.groups = l.topkGroups = 1;
    l.router = 0;
    l.name = layerName(ex);
    if (auto r = ex.getIndices().getDefiningOp<moe::RouteOp>()) {
      l.score = moe::stringifyScoreFunc(r.getScoreFunc()).str();
      l.renormalize = r.getRenormalize();
      l.scaling = r.getScalingFactor().convertToDouble();
      l.groups = r.getNumGroups();
      l.topkGroups = r.getTopkGroups();
      l.name = layerName(r);
      if (auto mm = r.getLogits().getDefiningOp<linalg::MatmulOp>())
        if (mm.getDpsInputs()[1].getDefiningOp<arith::ConstantOp>())
          l.router = numel(mm.getDpsInputs()[1]);
    }
    layers.push_back(l);
  });
  int64_t inExperts = 0;
  for (const Layer &l : layers)
    inExperts += l.expertsTotal;
  if (json) {
    llvm::json::Array arr;
    for (const Layer &l : layers)
      arr.push_back(llvm::json::Object{
          {"name", l.name},
          {"experts", l.experts},
          {"top_k", l.topK},
          {"score_func", l.score},
          {"renormalize", l.renormalize},
          {"scaling_factor", l.scaling},
          {"num_groups", l.groups},
          {"topk_groups", l.topkGroups},
          {"hidden", l.hidden},
          {"ffn", l.ffn},
          {"gated", l.gated},
          {"activation", l.activation},
          {"biases", l.biases},
          {"params_per_expert", l.perExpert},
          {"params_experts", l.expertsTotal},
          {"params_router", l.router}});
    llvm::json::Object root{{"moe_layers", std::move(arr)},
                            {"params_total", total},
                            {"params_in_experts", inExperts},
                            {"params_dense", total - inExperts}};
    os << llvm::formatv("{0:2}", llvm::json::Value(std::move(root))) << "\n";
    return;
  }
  os << "MoE layers: " << layers.size() << "\n";
  for (auto [i, l] : llvm::enumerate(layers)) {
    os << "layer " << i << (l.name.empty() ? "" : " (" + l.name + ")")
       << ": " << l.experts << " experts, top-" << l.topK << ", " << l.score
       << " routing" << (l.renormalize ? ", renormalized" : "");
    if (l.groups > 1)
      os << ", " << l.topkGroups << " of " << l.groups << " groups";
    if (l.scaling != 1.0)
      os << ", scaled by " << l.scaling;
    os << "\n  expert FFN: " << (l.gated ? "gated " : "") << l.activation
       << (l.biases ? " with biases" : "") << ", hidden " << l.hidden
       << ", intermediate " << l.ffn << "\n  parameters: " << l.perExpert
       << " per expert, " << l.expertsTotal << " in all experts, "
       << l.router << " in the router\n";
  }
  os << "parameters: " << total << " total, " << inExperts
     << " in experts, " << total - inExperts << " elsewhere\n";
}
