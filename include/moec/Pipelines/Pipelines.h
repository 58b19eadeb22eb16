//===- Pipelines.h - moec's compilation pipeline ----------------*- C++ -*-===//
//
// The passes moec runs on an imported module, in one place: the import
// cleanup (canonicalize, raise the MoE layers, optionally lower the GEMMs'
// precision), the sharding passes (grid, expert placement, all-to-alls) and
// the lowering to the per-rank program (partition, kernel outlining). moec
// runs the stages one by one, because it prints or checks the module between
// them (--emit=sharded-mlir, --report, its per-stage errors); moe-opt runs
// them all as `--moe-compile-pipeline="mesh=ep=4 ..."`, which is the same
// pass sequence, so that `moe-opt` reproduces what `moec` does to the IR.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_PIPELINES_PIPELINES_H
#define MOEC_PIPELINES_PIPELINES_H

#include "mlir/Pass/PassOptions.h"

#include <string>

namespace mlir {
class OpPassManager;
} // namespace mlir

namespace moec {

/// Everything moec hands to its passes. The option names are those of the
/// moec flags that set them (`--placement-load` is `placement-load=`), so a
/// moec command line translates word for word into a pipeline string.
struct MoecPipelineOptions
    : public mlir::PassPipelineOptions<MoecPipelineOptions> {
  Option<std::string> mesh{
      *this, "mesh",
      llvm::cl::desc("Device mesh dp=D,ep=E,tp=T (any subset); empty: stop "
                     "after the import cleanup, like moec without --mesh")};
  Option<std::string> tokenSplit{
      *this, "token-split",
      llvm::cl::desc("Where tokens are split over dp x ep: auto (the whole "
                     "model when it splits so, else moe), model (each rank "
                     "runs the whole model on its own tokens) or moe "
                     "(sequence-parallel MoE layers, the rest replicated)"),
      llvm::cl::init("auto")};
  Option<std::string> attentionMesh{
      *this, "attention-mesh",
      llvm::cl::desc("Attention and dense layers on another folding of the "
                     "same ranks: dp=A,tp=B (Megatron-Core's MoE parallel "
                     "folding; empty: the mesh's dp x ep tokens and its tp)")};
  Option<bool> noRaise{*this, "no-raise",
                       llvm::cl::desc("Do not run moe-raise-experts"),
                       llvm::cl::init(false)};
  Option<bool> strict{*this, "strict",
                      llvm::cl::desc("Fail when a region that looks like an "
                                     "MoE layer cannot be raised"),
                      llvm::cl::init(false)};
  Option<std::string> precision{
      *this, "precision",
      llvm::cl::desc("GEMM weight type: fp32 (no moe-lower-precision), bf16 "
                     "or fp16"),
      llvm::cl::init("fp32")};
  Option<std::string> placement{
      *this, "placement",
      llvm::cl::desc("Expert placement: contiguous, round-robin, balanced"),
      llvm::cl::init("contiguous")};
  Option<std::string> placementLoad{
      *this, "placement-load",
      llvm::cl::desc("JSON of per-expert token counts (moe-run "
                     "--record-routing) for balanced / redundant-experts")};
  Option<int64_t> redundantExperts{
      *this, "redundant-experts",
      llvm::cl::desc("Replicate the N hottest experts"), llvm::cl::init(0)};
  Option<double> capacityFactor{
      *this, "capacity-factor",
      llvm::cl::desc("GShard capacity factor (0: dropless)"),
      llvm::cl::init(0.0)};
  Option<std::string> denseTp{
      *this, "dense-tp",
      llvm::cl::desc("Attention, dense MLPs and the LM head over tp: "
                     "megatron (split) or replicated"),
      llvm::cl::init("megatron")};
  Option<std::string> sequenceParallel{
      *this, "sequence-parallel",
      llvm::cl::desc("Megatron sequence parallelism between the "
                     "tensor-parallel regions where the MoE rows are sliced "
                     "over the same ranks: auto (where it moves fewer "
                     "bytes) or off"),
      llvm::cl::init("auto")};
  Option<std::string> batchMatmul{
      *this, "batch-matmul",
      llvm::cl::desc("f32 batched matmuls: blas (plan steps) or kernel "
                     "(generated kernels)"),
      llvm::cl::init("blas")};
  Option<std::string> kvRepeat{
      *this, "kv-repeat",
      llvm::cl::desc("Grouped-query attention's repeated KV heads: fold "
                     "(the batch matmuls read each KV head for its query "
                     "heads, moe-fold-kv-repeat) or copy (as exported)"),
      llvm::cl::init("fold")};
};

/// "'VALUE': expected ..." when `precision` is not a type
/// moe-lower-precision takes (fp32, f32, bf16, fp16, f16), else "". The
/// caller prefixes the option's spelling (moec: "--precision").
std::string checkPrecision(llvm::StringRef precision);
/// The same for `batch-matmul` (blas or kernel).
std::string checkBatchMatmul(llvm::StringRef batchMatmul);
/// The same for `kv-repeat` (fold or copy).
std::string checkKvRepeat(llvm::StringRef kvRepeat);
/// The same for `dense-tp` (megatron or replicated).
std::string checkDenseTp(llvm::StringRef denseTp);
/// The same for `sequence-parallel` (auto or off).
std::string checkSequenceParallel(llvm::StringRef sequenceParallel);
/// Every check a pipeline string gets before any pass is added: precision,
/// batch-matmul, the mesh spec's syntax (`auto` is moec's search, not a
/// mesh). Returns "" or the message, naming the option.
std::string verifyPipelineOptions(const MoecPipelineOptions &options);

/// Canonicalize and CSE (the raise patterns see folded shapes and views),
/// moe-raise-experts unless `noRaise`, canonicalize and CSE again, and
/// moe-lower-precision (then canonicalize) unless `precision` is fp32.
void buildImportCleanupPipeline(mlir::OpPassManager &pm,
                                const MoecPipelineOptions &options);
/// moe-shard for `mesh`, moe-place-experts, moe-insert-all-to-all: the
/// annotated IR (global shapes, placement, all-to-alls).
void buildShardPipeline(mlir::OpPassManager &pm,
                        const MoecPipelineOptions &options);
/// moe-partition (the per-rank program), canonicalize and CSE,
/// moe-fold-kv-repeat (kv-repeat=fold with blas batch matmuls) and
/// canonicalize, moe-outline-kernels (generated kernels), canonicalize.
void buildLowerPipeline(mlir::OpPassManager &pm,
                        const MoecPipelineOptions &options);
/// The three stages above, the last two only when `mesh` is set: what moec
/// runs on the imported module before it prints it or writes its plan.
void buildMoecPipeline(mlir::OpPassManager &pm,
                       const MoecPipelineOptions &options);

/// Registers `moe-compile-pipeline` (buildMoecPipeline, after
/// verifyPipelineOptions) for the pass-pipeline options of the tools.
void registerMoecPipelines();

} // namespace moec

#endif // MOEC_PIPELINES_PIPELINES_H
