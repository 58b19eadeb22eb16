//===- MeshChoice.cpp - moec --mesh auto ----------------------------------===//

#include "moec/Pipelines/MeshChoice.h"

#include "moec/Analysis/Mesh.h"
#include "moec/Analysis/ShardReport.h"
#include "moec/Analysis/StaticShapes.h"
#include "moec/Pipelines/Pipelines.h"
#include "moec/Transforms/Passes.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <vector>

using namespace mlir;

LogicalResult moec::chooseMesh(ModuleOp module, const MeshChoiceOptions &choice,
                               const MoecPipelineOptions &options,
                               llvm::raw_ostream &log, std::string &chosen,
                               std::string &chosenAttention,
                               std::string &error) {
  int64_t gpus = choice.gpus;
  if (gpus < 1) {
    error = "--mesh auto needs --gpus N";
    return failure();
  }
  int64_t perNode = choice.gpusPerNode > 0 ? choice.gpusPerNode : gpus;
  if (gpus % perNode != 0 && gpus > perNode) {
    error = "--gpus " + std::to_string(gpus) + " is not a multiple of " +
            "--gpus-per-node " + std::to_string(perNode);
    return failure();
  }
  // A data-dependent shape rules out every mesh alike: one error, not one
  // rejected row per candidate.
  for (auto func : module.getOps<func::FuncOp>())
    if (!func.isExternal() && failed(checkStaticShapes(func, "--mesh auto"))) {
      error = "--mesh auto: no mesh can partition the model (the error "
              "above)";
      return failure();
    }
  struct Candidate {
    std::string mesh, attention;
    bool ok = false;
    std::string why;
    double comm = 0;
    int64_t mem = 0;
    int64_t ep = 1;
    /// 0: the whole model split; 1: hybrid (attention replicated over ep);
    /// 2: sequence-parallel MoE (attention replicated over dp x ep).
    int tier = 0;
  };
  std::vector<Candidate> cands;
  struct Layout {
    int64_t ep;
    std::string mesh, attention;
  };
  std::vector<Layout> layouts;
  for (int64_t tp = 1; tp <= gpus; ++tp)
    for (int64_t ep = 1; ep * tp <= gpus; ++ep) {
      if (gpus % (ep * tp))
        continue;
      int64_t dp = gpus / (ep * tp);
      if (perNode % (ep * tp) != 0)
        continue; // EP and TP groups stay inside a node
      std::string mesh = "dp=" + std::to_string(dp) +
                         ",ep=" + std::to_string(ep) +
                         ",tp=" + std::to_string(tp);
      layouts.push_back({ep, mesh, ""});
      // Foldings: attention dp=A,tp=B of the same ranks, B inside a node;
      // A = dp x ep, B = tp is the mesh itself.
      MeshSpec spec;
      std::string err;
      if (!parseMeshSpec(mesh, spec, err))
        continue;
      for (int64_t b = 1; b <= gpus; ++b) {
        if (gpus % b || perNode % b || (b == tp && gpus / b == dp * ep))
          continue;
        AttentionMesh attn{gpus / b, b};
        MeshSpec grid;
        MeshRoles roles;
        if (foldMesh(spec, attn, grid, roles, err))
          layouts.push_back({ep, mesh, attn.str()});
      }
    }
  for (const Layout &layout : layouts) {
    Candidate c;
    c.ep = layout.ep;
    c.mesh = layout.mesh;
    c.attention = layout.attention;
    OwningOpRef<ModuleOp> copy(module.clone());
    // A candidate that does not shard is a rejected row, not an error:
    // keep its first error as the reason and print nothing.
    std::string firstError;
    ScopedDiagnosticHandler quiet(module.getContext(), [&](Diagnostic &d) {
      if (d.getSeverity() == DiagnosticSeverity::Error && firstError.empty())
        firstError = d.str();
      return success();
    });
    MoecPipelineOptions candOpts;
    candOpts.copyOptionValuesFrom(options);
    candOpts.mesh = c.mesh;
    candOpts.attentionMesh = c.attention;
    // The per-rank shapes are enough for the report: no kernel outlining.
    PassManager pm(module.getContext());
    buildShardPipeline(pm, candOpts);
    MoEPartitionOptions partitionOpts;
    partitionOpts.denseTp = candOpts.denseTp;
    partitionOpts.sequenceParallel = candOpts.sequenceParallel;
    pm.addPass(createMoEPartition(partitionOpts));
    if (failed(pm.run(*copy))) {
      c.why = firstError.empty() ? "does not shard" : firstError;
    } else {
      ShardReport r = computeShardReport(*copy);
      c.comm = r.commBytesPerRank();
      c.mem = r.maxRankBytes();
      c.tier = r.tokenSplitMode == "moe" ? 2 : r.tokenSplitMode == "hybrid";
      // Folded with attention tensor-parallel: no rank repeats the dense
      // work (the MoE rows are sliced over the attention's tp ranks).
      if (!r.folding.empty() && r.denseTp.splitWeightBytes > 0)
        c.tier = 0;
      c.ok = choice.memoryLimit == 0 || c.mem <= choice.memoryLimit;
      if (!c.ok)
        c.why = "needs " + formatBytes(c.mem) + " per rank";
    }
    cands.push_back(c);
  }
  std::stable_sort(cands.begin(), cands.end(),
                   [](const Candidate &a, const Candidate &b) {
                     if (a.ok != b.ok)
                       return a.ok;
                     // Whole-model splits divide all the work; hybrid and
                     // sequence-parallel MoE replicate attention and the
                     // dense layers over ep (dp x ep), so their candidates
                     // come after, ranked by memory (what they save) before
                     // communication.
                     if (a.tier != b.tier)
                       return a.tier < b.tier;
                     if (a.tier && a.mem != b.mem)
                       return a.mem < b.mem;
                     if (a.comm != b.comm)
                       return a.comm < b.comm;
                     if (a.mem != b.mem)
                       return a.mem < b.mem;
                     return a.ep > b.ep;
                   });
  log << "moec: --mesh auto for " << gpus << " GPUs (" << perNode
      << " per node): candidates, best first\n";
  auto name = [](const Candidate &c) {
    return c.mesh + (c.attention.empty() ? std::string()
                                         : " --attention-mesh " + c.attention);
  };
  for (const Candidate &c : cands) {
    log << "  " << llvm::left_justify(name(c), 16);
    if (c.why.empty() || c.ok)
      log << " comm/rank " << formatBytes(c.comm) << ", memory/rank "
          << formatBytes(c.mem)
          << (c.tier == 0 ? ""
              : !c.attention.empty()
                  ? " (folded: attention tp splits no dense layer)"
              : c.tier == 2 ? " (sequence-parallel MoE: attention replicated)"
                            : " (hybrid: attention replicated over ep)")
          << "\n";
    else
      log << " rejected: " << c.why << "\n";
  }
  if (cands.empty() || !cands.front().ok) {
    error =
        "--mesh auto: no factorisation of " + std::to_string(gpus) +
        " GPUs fits" +
        (choice.memoryLimit ? " in --device-memory " + choice.memoryLimitText
                            : std::string());
    return failure();
  }
  chosen = cands.front().mesh;
  chosenAttention = cands.front().attention;
  const Candidate &best = cands.front();
  log << "moec: --mesh auto chose " << name(best) << "\n";
  // Why: what it was ranked by against the runner-up of its tier.
  int fits = 0;
  for (const Candidate &c : cands)
    fits += c.ok;
  log << "moec: why: "
      << (best.tier ? "every candidate that fits repeats attention or the "
                      "dense layers on some ranks; of those, "
                    : "no rank repeats attention's or the dense layers' "
                      "work; of those, ")
      << (best.tier ? "the least memory per rank ("
                    : "the least modelled communication per rank (")
      << formatBytes(best.tier ? best.mem : best.comm) << ")";
  if (fits > 1) {
    const Candidate &next = cands[1];
    log << "; next " << name(next) << ": comm/rank " << formatBytes(next.comm)
        << ", memory/rank " << formatBytes(next.mem)
        << (next.tier != best.tier ? " (repeats attention or dense work)" : "");
  }
  if (choice.memoryLimit)
    log << "; " << (cands.size() - fits) << " of " << cands.size()
        << " candidates rejected (do not shard, or exceed --device-memory "
        << choice.memoryLimitText << ")";
  log << "\n";
  return success();
}
