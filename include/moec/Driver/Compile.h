//===- Compile.h - moec's compile, reusable in-process ----------*- C++ -*-===//
//
// What `moec MODEL --mesh ... -o PLAN.moeplan` does, as a library: the
// options (one field per moec flag, with the flag's default), their checks,
// and the stages (import, import cleanup, the mesh, sharding, the per-rank
// program, the report, the plan) one by one. moec (tools/moec) drives the
// stages and prints or checks the module between them; the Python package
// (python/) runs them all in its process. Errors are messages in moec's
// words: they name the flag, the file or the ONNX node.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_DRIVER_COMPILE_H
#define MOEC_DRIVER_COMPILE_H

#include "moec/Analysis/ShardReport.h"
#include "moec/Import/OnnxImporter.h"
#include "moec/Pipelines/InternalErrors.h" // describeLocation

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mlir {
class MLIRContext;
class PassManager;
} // namespace mlir

namespace moert {
struct Plan;
struct PlanData;
} // namespace moert

namespace moec {

struct MoecPipelineOptions;

/// moec's compile options: one field per flag (named in the comment), with
/// the flag's default. `moec --help` and docs/python.md describe them.
struct CompileOptions {
  std::vector<std::string> inputShapes;  ///< --input-shape NAME=D0,D1,...
  int64_t maxTokens = 0;                 ///< --max-tokens (0: static)
  std::string mesh;                      ///< --mesh (empty: none)
  std::string attentionMesh;             ///< --attention-mesh
  std::string tokenSplit = "auto";       ///< --token-split
  std::string placement = "contiguous";  ///< --placement
  std::string placementLoad;             ///< --placement-load
  int64_t redundantExperts = 0;          ///< --redundant-experts
  double capacityFactor = 0.0;           ///< --capacity-factor
  int64_t gpus = 0;                      ///< --gpus
  int64_t gpusPerNode = 0;               ///< --gpus-per-node
  std::string deviceMemory;              ///< --device-memory
  bool strict = false;                   ///< --strict
  bool noRaise = false;                  ///< --no-raise
  std::string precision = "fp32";        ///< --precision
  std::string batchMatmul = "blas";      ///< --batch-matmul
  std::string kvRepeat = "fold";         ///< --kv-repeat
  std::string denseTp = "megatron";      ///< --dense-tp
  std::string sequenceParallel = "auto"; ///< --sequence-parallel
  std::string target = "cpu";            ///< --target
  std::string cudaChip = "sm_90";        ///< --cuda-chip
  bool noOnnxCheck = false;              ///< --no-onnx-check
  std::string packedWeights = "keep";    ///< --packed-weights
  std::string int8Activations = "model"; ///< --int8-activations
  std::string kvCache = "in-place";      ///< --kv-cache
  int64_t inlineConstantLimit = 16;      ///< --inline-constant-limit
  uint64_t lazyWeightsAbove = uint64_t(16) << 20; ///< --lazy-weights-above
};

/// Sets the option of flag `flag` (spelled as on moec's command line,
/// without dashes: "placement-load") from its text `value` (booleans: true,
/// false, 1, 0). Returns "" or the message: an unknown flag (the message
/// starts with "unknown option"), or a value of the wrong kind.
std::string setCompileOption(CompileOptions &options, llvm::StringRef flag,
                             llvm::StringRef value);
/// The flags setCompileOption knows, in the order of CompileOptions.
std::vector<std::string> compileOptionNames();

/// Checks every option's syntax before anything is imported (the values of
/// --precision, --batch-matmul, --dense-tp, --sequence-parallel,
/// --token-split, --packed-weights, --int8-activations, --target,
/// --device-memory, --input-shape, and the combinations that need --mesh).
/// Returns "" or the message, naming the flag.
std::string checkCompileOptions(const CompileOptions &options);

/// The importer's options of `options` (checked by checkCompileOptions),
/// with the dims that follow the token count at --max-tokens.
ImportOptions importOptionsOf(const CompileOptions &options);
/// The --input-shape dims that follow the token count (`?`, `?+B`, `A*?`,
/// `A*?+B`; empty: a static plan).
std::vector<SymbolicInputDim> symbolicDimsOf(const CompileOptions &options);

/// The pipeline options of `options` (Pipelines.h names them alike), with
/// `mesh` as the mesh.
void setPipelineOptions(MoecPipelineOptions &pipeline,
                        const CompileOptions &options, const std::string &mesh);

/// Called on every pass manager a Compilation creates, before its passes
/// are added: moec applies the MLIR pass-manager flags and its timing;
/// every caller adds its PassDiagnostics (InternalErrors.h).
using PassManagerHook = std::function<mlir::LogicalResult(mlir::PassManager &)>;

/// One compile, stage by stage. Each stage returns failure with error()
/// set to a message in moec's words (without a "moec: error:" prefix); the
/// diagnostics the passes emit go to the context's handler.
class Compilation {
public:
  /// `options` must have passed checkCompileOptions.
  Compilation(mlir::MLIRContext &context, const CompileOptions &options,
              PassManagerHook hook = {});
  ~Compilation();

  /// Imports the model at `path` (.onnx or .onnxtxt).
  mlir::LogicalResult importFile(llvm::StringRef path);
  /// Imports a model held in memory; `name` stands for its path (errors,
  /// format by extension, external data next to it).
  mlir::LogicalResult importBuffer(llvm::StringRef bytes, llvm::StringRef name);
  /// Canonicalization, raising the MoE layers, lowering the precision.
  mlir::LogicalResult cleanup();
  /// Settles the mesh: the `--mesh auto` search (its ranked candidates go
  /// to `log`), or the checks of an explicit mesh and attention mesh.
  /// Needs a non-empty mesh.
  mlir::LogicalResult resolveMesh(llvm::raw_ostream &log);
  /// Grid, token split, placement, all-to-alls: the annotated IR.
  mlir::LogicalResult shard();
  /// Partition and kernel outlining: the per-rank program.
  mlir::LogicalResult lower();
  /// The report of the per-rank program (after lower()). With --max-tokens
  /// call buildPlan first: the plan tells which MoE layers' rows follow the
  /// count (LayerComm::rowsFollowCount).
  ShardReport report();
  /// Fails when a rank of `report` needs more than --device-memory.
  mlir::LogicalResult checkDeviceMemory(const ShardReport &report);
  /// The plan of the per-rank program, with CPU code (and PTX for
  /// --target=cuda). With --max-tokens, a plan with a dynamic token count:
  /// the model is compiled twice more at other counts
  /// (moec/Pipelines/TokenSymbol.h).
  mlir::LogicalResult buildPlan(moert::Plan &plan, moert::PlanData &data);
  /// --device-memory in bytes (0: none).
  int64_t memoryLimit() const { return memoryLimit_; }

  mlir::ModuleOp module() { return module_.get(); }
  const std::string &error() const { return error_; }
  /// The options, with the mesh and attention mesh resolveMesh settled.
  const CompileOptions &options() const { return options_; }
  /// The model's path (or the name of an imported buffer).
  const std::string &source() const { return source_; }
  /// The MoE report of the cleaned-up module (before sharding), as
  /// `moec --report` prints it first.
  std::string moeReport(bool json);

private:
  mlir::LogicalResult
  runPipeline(const std::function<void(mlir::PassManager &)> &build,
              const std::string &failure);
  mlir::LogicalResult fail(const std::string &message);

  mlir::MLIRContext &context_;
  CompileOptions options_;
  PassManagerHook hook_;
  mlir::OwningOpRef<mlir::ModuleOp> module_;
  /// Every stage's pass manager, alive until the end: pass timing
  /// (--mlir-timing) tells passes apart by address.
  std::vector<std::unique_ptr<mlir::PassManager>> passManagers_;
  std::string source_, error_;
  /// The model's bytes when imported from a buffer and the plan has a
  /// dynamic token count (imported again at other counts).
  std::string buffer_;
  bool fromBuffer_ = false;
  int64_t memoryLimit_ = 0;
  /// Per MoE layer (dispatch step order), whether its rows follow the
  /// dynamic token count; set by buildPlan.
  std::vector<bool> rowsFollowCount_;
  /// The ranks the MoE layers slice rows over inside the model (shard()).
  int64_t rowSliceRanks_ = 1;
};

} // namespace moec

#endif // MOEC_DRIVER_COMPILE_H
