//===- MeshChoice.h - moec --mesh auto --------------------------*- C++ -*-===//
//
// The search behind `moec --mesh auto --gpus N`: every dp x ep x tp
// factorisation of N, and every folding of attention (dp x tp) onto it, is
// compiled on a copy of the module and ranked by the shard report's
// modelled communication per rank, under a memory limit.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_PIPELINES_MESHCHOICE_H
#define MOEC_PIPELINES_MESHCHOICE_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace moec {

struct MoecPipelineOptions;

struct MeshChoiceOptions {
  /// Number of GPUs (moec --gpus); the search needs at least one.
  int64_t gpus = 0;
  /// GPUs per node (--gpus-per-node); 0: all in one node.
  int64_t gpusPerNode = 0;
  /// Bytes one device holds (--device-memory); 0: no limit.
  int64_t memoryLimit = 0;
  /// The limit as the user spelled it, for the message when nothing fits.
  std::string memoryLimitText;
};

/// Tries every dp x ep x tp factorisation of `choice.gpus` with ep x tp
/// inside a node, alone and with each attention folding dp=A,tp=B that
/// nests with it (tp=B inside a node; `--attention-mesh`), runs
/// buildShardPipeline (the placement and capacity of `options`, the candidate's
/// mesh) and moe-partition on a copy of `module`, and picks the mesh that fits
/// the memory limit with the least modelled communication per rank (ties: less
/// memory, then more ep). Candidates that split the whole model come first,
/// then hybrid ones (sequences over dp, MoE rows over ep), then those where
/// only the MoE layers are split (sequence-parallel MoE); the last two by
/// memory, then communication. A folding whose attention is tensor-parallel
/// counts as splitting the whole model (no rank repeats attention's work).
/// `chosen` gets the mesh, `chosenAttention` the attention mesh ("" when not
/// folded). Prints the ranked candidates to `log`. On failure `error` says why
/// (bad --gpus flags, nothing fits), without a "moec: error:" prefix.
mlir::LogicalResult chooseMesh(mlir::ModuleOp module,
                               const MeshChoiceOptions &choice,
                               const MoecPipelineOptions &options,
                               llvm::raw_ostream &log, std::string &chosen,
                               std::string &chosenAttention,
                               std::string &error);

} // namespace moec

#endif // MOEC_PIPELINES_MESHCHOICE_H
