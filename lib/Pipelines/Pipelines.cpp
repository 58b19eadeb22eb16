//===- Pipelines.cpp - moec's compilation pipeline ------------------------===//

#include "moec/Pipelines/Pipelines.h"

#include "moec/Analysis/Mesh.h"
#include "moec/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

namespace {
/// fp32 (and its MLIR spelling f32) means "leave the GEMMs alone".
bool lowersPrecision(StringRef precision) {
  return precision != "fp32" && precision != "f32";
}
} // namespace

std::string moec::checkPrecision(StringRef precision) {
  if (!lowersPrecision(precision) || precision == "bf16" ||
      precision == "fp16" || precision == "f16")
    return "";
  return "'" + precision.str() + "': expected fp32, bf16 or fp16";
}

std::string moec::checkBatchMatmul(StringRef batchMatmul) {
  if (batchMatmul == "blas" || batchMatmul == "kernel")
    return "";
  return "'" + batchMatmul.str() + "': expected blas or kernel";
}

std::string moec::checkKvRepeat(StringRef kvRepeat) {
  if (kvRepeat == "fold" || kvRepeat == "copy")
    return "";
  return "'" + kvRepeat.str() + "': expected fold or copy";
}

std::string moec::checkDenseTp(StringRef denseTp) {
  if (denseTp == "megatron" || denseTp == "replicated")
    return "";
  return "'" + denseTp.str() + "': expected megatron or replicated";
}

std::string moec::checkSequenceParallel(StringRef sequenceParallel) {
  if (sequenceParallel == "auto" || sequenceParallel == "off")
    return "";
  return "'" + sequenceParallel.str() + "': expected auto or off";
}

std::string moec::verifyPipelineOptions(const MoecPipelineOptions &options) {
  std::string err = checkPrecision(options.precision);
  if (!err.empty())
    return "precision " + err;
  err = checkBatchMatmul(options.batchMatmul);
  if (!err.empty())
    return "batch-matmul " + err;
  err = checkKvRepeat(options.kvRepeat);
  if (!err.empty())
    return "kv-repeat " + err;
  err = checkDenseTp(options.denseTp);
  if (!err.empty())
    return "dense-tp " + err;
  err = checkSequenceParallel(options.sequenceParallel);
  if (!err.empty())
    return "sequence-parallel " + err;
  if (options.tokenSplit != "auto" && options.tokenSplit != "model" &&
      options.tokenSplit != "moe")
    return "token-split '" + options.tokenSplit.getValue() +
           "': expected auto, model or moe";
  if (options.mesh.empty())
    return "";
  // moec's --mesh auto compiles every factorisation of --gpus and keeps the
  // best (MeshChoice.h): a search over pipelines, not one pipeline.
  if (options.mesh == "auto")
    return "mesh 'auto' is moec's search (--mesh auto --gpus N); give a "
           "mesh such as ep=4";
  // moe-shard would reject a malformed spec too, but only once the cleanup
  // passes have run, and without naming the pipeline option.
  MeshSpec spec;
  if (!parseMeshSpec(options.mesh, spec, err))
    return "mesh: " + err;
  if (!options.attentionMesh.empty()) {
    AttentionMesh attn;
    MeshSpec grid;
    MeshRoles roles;
    if (!parseAttentionMesh(options.attentionMesh, attn, err) ||
        !foldMesh(spec, attn, grid, roles, err))
      return err;
    if (options.tokenSplit != "auto")
      return "token-split '" + options.tokenSplit.getValue() +
             "' and attention-mesh: the attention mesh decides where tokens "
             "are split (give one of them)";
  }
  return "";
}

void moec::buildImportCleanupPipeline(OpPassManager &pm,
                                      const MoecPipelineOptions &options) {
  // Canonicalize first: the raise patterns see folded shapes and views.
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  if (!options.noRaise) {
    MoERaiseExpertsOptions raiseOpts;
    raiseOpts.strict = options.strict;
    pm.addNestedPass<func::FuncOp>(createMoERaiseExperts(raiseOpts));
  }
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  if (lowersPrecision(options.precision)) {
    MoELowerPrecisionOptions precOpts;
    precOpts.precision = options.precision;
    pm.addPass(createMoELowerPrecision(precOpts));
    pm.addPass(createCanonicalizerPass());
  }
}

void moec::buildShardPipeline(OpPassManager &pm,
                              const MoecPipelineOptions &options) {
  MoEShardOptions shardOpts;
  shardOpts.mesh = options.mesh;
  shardOpts.tokenSplit = options.tokenSplit;
  shardOpts.attentionMesh = options.attentionMesh;
  pm.addPass(createMoEShard(shardOpts));
  MoEPlaceExpertsOptions placeOpts;
  placeOpts.strategy = options.placement;
  placeOpts.loadFile = options.placementLoad;
  placeOpts.redundantExperts = options.redundantExperts;
  pm.addPass(createMoEPlaceExperts(placeOpts));
  MoEInsertAllToAllOptions a2aOpts;
  a2aOpts.capacityFactor = options.capacityFactor;
  pm.addPass(createMoEInsertAllToAll(a2aOpts));
}

void moec::buildLowerPipeline(OpPassManager &pm,
                              const MoecPipelineOptions &options) {
  MoEPartitionOptions partitionOpts;
  partitionOpts.denseTp = options.denseTp;
  partitionOpts.sequenceParallel = options.sequenceParallel;
  pm.addPass(createMoEPartition(partitionOpts));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // Attention's batch matmuls read the KV heads as they lie (plan steps
  // only: generated kernels take the products as exported).
  if (options.kvRepeat == "fold" && options.batchMatmul == "blas") {
    pm.addNestedPass<func::FuncOp>(createMoEFoldKVRepeat());
    pm.addPass(createCanonicalizerPass());
  }
  // Dense regions become generated kernels (fused elementwise chains).
  MoEOutlineKernelsOptions outlineOpts;
  outlineOpts.batchMatmulSteps = options.batchMatmul == "blas";
  pm.addPass(createMoEOutlineKernels(outlineOpts));
  pm.addPass(createCanonicalizerPass());
}

void moec::buildMoecPipeline(OpPassManager &pm,
                             const MoecPipelineOptions &options) {
  buildImportCleanupPipeline(pm, options);
  if (options.mesh.empty())
    return;
  buildShardPipeline(pm, options);
  buildLowerPipeline(pm, options);
}

void moec::registerMoecPipelines() {
  // Not PassPipelineRegistration: its builder cannot fail, and a bad value
  // (precision=f8, mesh=ep=0) should be an error naming the option when the
  // pipeline is parsed, not a pass failure later.
  registerPassPipeline(
      "moe-compile-pipeline",
      "moec's passes on an imported module: cleanup and raise, then with "
      "mesh= shard, partition and outline kernels (as moec --mesh)",
      [](OpPassManager &pm, StringRef optionsStr,
         function_ref<LogicalResult(const Twine &)> errorHandler) {
        MoecPipelineOptions options;
        if (failed(options.parseFromString(optionsStr)))
          return failure();
        std::string err = verifyPipelineOptions(options);
        if (!err.empty())
          return errorHandler("moe-compile-pipeline: " + err);
        buildMoecPipeline(pm, options);
        return success();
      },
      [](function_ref<void(const detail::PassOptions &)> optHandler) {
        optHandler(MoecPipelineOptions());
      });
}
