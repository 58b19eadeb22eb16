//===- Compile.cpp - moec's compile, reusable in-process ------------------===//

#include "moec/Driver/Compile.h"

#include "moec/Analysis/Mesh.h"
#include "moec/Analysis/Report.h"
#include "moec/Analysis/Weights.h"
#include "moec/Conversion/CacheInPlace.h"
#include "moec/Conversion/KernelSymbols.h"
#include "moec/Conversion/ToPlan.h"
#include "moec/Pipelines/MeshChoice.h"
#include "moec/Pipelines/Pipelines.h"
#include "moec/Pipelines/TokenSymbol.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

using namespace mlir;

namespace moec {

namespace {
/// One row per flag: how setCompileOption parses and stores it.
struct OptionField {
  const char *flag;
  enum Kind { String, List, Int, UInt, Double, Bool } kind;
  void *(*field)(CompileOptions &);
};

#define MOEC_FIELD(member) [](CompileOptions &o) -> void * { return &o.member; }
const OptionField kFields[] = {
    {"input-shape", OptionField::List, MOEC_FIELD(inputShapes)},
    {"max-tokens", OptionField::Int, MOEC_FIELD(maxTokens)},
    {"mesh", OptionField::String, MOEC_FIELD(mesh)},
    {"attention-mesh", OptionField::String, MOEC_FIELD(attentionMesh)},
    {"token-split", OptionField::String, MOEC_FIELD(tokenSplit)},
    {"placement", OptionField::String, MOEC_FIELD(placement)},
    {"placement-load", OptionField::String, MOEC_FIELD(placementLoad)},
    {"redundant-experts", OptionField::Int, MOEC_FIELD(redundantExperts)},
    {"capacity-factor", OptionField::Double, MOEC_FIELD(capacityFactor)},
    {"gpus", OptionField::Int, MOEC_FIELD(gpus)},
    {"gpus-per-node", OptionField::Int, MOEC_FIELD(gpusPerNode)},
    {"device-memory", OptionField::String, MOEC_FIELD(deviceMemory)},
    {"strict", OptionField::Bool, MOEC_FIELD(strict)},
    {"no-raise", OptionField::Bool, MOEC_FIELD(noRaise)},
    {"precision", OptionField::String, MOEC_FIELD(precision)},
    {"batch-matmul", OptionField::String, MOEC_FIELD(batchMatmul)},
    {"kv-repeat", OptionField::String, MOEC_FIELD(kvRepeat)},
    {"dense-tp", OptionField::String, MOEC_FIELD(denseTp)},
    {"sequence-parallel", OptionField::String, MOEC_FIELD(sequenceParallel)},
    {"target", OptionField::String, MOEC_FIELD(target)},
    {"cuda-chip", OptionField::String, MOEC_FIELD(cudaChip)},
    {"no-onnx-check", OptionField::Bool, MOEC_FIELD(noOnnxCheck)},
    {"packed-weights", OptionField::String, MOEC_FIELD(packedWeights)},
    {"int8-activations", OptionField::String, MOEC_FIELD(int8Activations)},
    {"kv-cache", OptionField::String, MOEC_FIELD(kvCache)},
    {"inline-constant-limit", OptionField::Int,
     MOEC_FIELD(inlineConstantLimit)},
    {"lazy-weights-above", OptionField::UInt, MOEC_FIELD(lazyWeightsAbove)},
};
#undef MOEC_FIELD

/// "'VALUE': expected A, B or C" unless `value` is one of `allowed`.
std::string expectOneOf(StringRef value, ArrayRef<StringRef> allowed) {
  for (StringRef a : allowed)
    if (value == a)
      return "";
  std::string msg = "'" + value.str() + "': expected ";
  for (size_t i = 0; i < allowed.size(); ++i)
    msg += (i == 0                    ? ""
            : i + 1 == allowed.size() ? " or "
                                      : ", ") +
           allowed[i].str();
  return msg;
}
/// Every --input-shape of `o`: fixed shapes into `shapes`, the dims that
/// follow the token count into `symbolic`; "" or the first error.
std::string parseInputShapes(
    const CompileOptions &o,
    std::vector<std::pair<std::string, std::vector<int64_t>>> &shapes,
    std::vector<SymbolicInputDim> &symbolic) {
  for (const std::string &s : o.inputShapes) {
    std::string err;
    if (!parseInputShape(s, shapes, err, &symbolic))
      return err;
  }
  return "";
}
} // namespace

std::string setCompileOption(CompileOptions &options, StringRef flag,
                             StringRef value) {
  for (const OptionField &f : kFields) {
    if (flag != f.flag)
      continue;
    void *p = f.field(options);
    std::string bad = "--" + flag.str() + " '" + value.str() + "': expected ";
    switch (f.kind) {
    case OptionField::String:
      *static_cast<std::string *>(p) = value.str();
      return "";
    case OptionField::List:
      static_cast<std::vector<std::string> *>(p)->push_back(value.str());
      return "";
    case OptionField::Int:
      if (value.getAsInteger(10, *static_cast<int64_t *>(p)))
        return bad + "an integer";
      return "";
    case OptionField::UInt:
      if (value.getAsInteger(10, *static_cast<uint64_t *>(p)))
        return bad + "a non-negative integer";
      return "";
    case OptionField::Double:
      if (value.getAsDouble(*static_cast<double *>(p)))
        return bad + "a number";
      return "";
    case OptionField::Bool:
      if (value == "true" || value == "1")
        *static_cast<bool *>(p) = true;
      else if (value == "false" || value == "0")
        *static_cast<bool *>(p) = false;
      else
        return bad + "true or false";
      return "";
    }
  }
  std::string known;
  for (const OptionField &f : kFields)
    known += (known.empty() ? "" : ", ") + std::string(f.flag);
  return "unknown option '" + flag.str() +
         "' (moec's compile options: " + known + ")";
}

std::vector<std::string> compileOptionNames() {
  std::vector<std::string> names;
  for (const OptionField &f : kFields)
    names.push_back(f.flag);
  return names;
}

std::string checkCompileOptions(const CompileOptions &o) {
  if (std::string e = checkPrecision(o.precision); !e.empty())
    return "--precision " + e;
  if (std::string e = checkBatchMatmul(o.batchMatmul); !e.empty())
    return "--batch-matmul " + e;
  if (std::string e = checkKvRepeat(o.kvRepeat); !e.empty())
    return "--kv-repeat " + e;
  if (std::string e = checkDenseTp(o.denseTp); !e.empty())
    return "--dense-tp " + e;
  if (std::string e = checkSequenceParallel(o.sequenceParallel); !e.empty())
    return "--sequence-parallel " + e;
  if (std::string e = expectOneOf(o.tokenSplit, {"auto", "model", "moe"});
      !e.empty())
    return "--token-split " + e;
  if (std::string e = expectOneOf(o.packedWeights, {"keep", "expand"});
      !e.empty())
    return "--packed-weights " + e;
  if (std::string e = expectOneOf(o.int8Activations, {"model", "off"});
      !e.empty())
    return "--int8-activations " + e;
  if (std::string e = expectOneOf(o.kvCache, {"in-place", "swap"}); !e.empty())
    return "--kv-cache " + e;
  if (std::string e = expectOneOf(o.target, {"cpu", "cuda"}); !e.empty())
    return "--target " + e;
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::vector<SymbolicInputDim> symbolic;
  if (std::string err = parseInputShapes(o, shapes, symbolic); !err.empty())
    return err;
  if (o.maxTokens < 0)
    return "--max-tokens " + std::to_string(o.maxTokens) +
           ": expected a positive count";
  if (!symbolic.empty() && o.maxTokens == 0)
    return "--input-shape " + symbolic[0].input + ": dim " +
           std::to_string(symbolic[0].dim) +
           " follows the token count (?): give --max-tokens N";
  if (symbolic.empty() && o.maxTokens > 0)
    return "--max-tokens needs an --input-shape dim that follows the token "
           "count (e.g. --input-shape x=1,?,64)";
  if (!symbolic.empty() && o.mesh == "auto")
    return "--mesh auto with a dynamic token count (--max-tokens): give the "
           "mesh";
  int64_t bytes = 0;
  if (!o.deviceMemory.empty() && !parseByteSize(o.deviceMemory, bytes))
    return "--device-memory '" + o.deviceMemory +
           "': expected a size such as 80GiB, 512MiB or 1000000";
  if (!o.attentionMesh.empty() && o.mesh.empty())
    return "--attention-mesh folds attention onto the ranks of --mesh: "
           "give --mesh too (e.g. --mesh ep=8 --attention-mesh tp=8)";
  if (!o.mesh.empty() && o.mesh != "auto") {
    MeshSpec spec;
    std::string err;
    if (!parseMeshSpec(o.mesh, spec, err))
      return "--mesh: " + err;
  }
  return "";
}

ImportOptions importOptionsOf(const CompileOptions &o) {
  ImportOptions opts;
  opts.runChecker = !o.noOnnxCheck;
  opts.inlineConstantLimit = o.inlineConstantLimit;
  opts.keepPackedWeights = o.packedWeights == "keep";
  opts.int8Activations = o.int8Activations == "model";
  std::vector<SymbolicInputDim> symbolic;
  (void)parseInputShapes(o, opts.inputShapes, symbolic);
  substituteTokens(opts.inputShapes, symbolic, o.maxTokens);
  return opts;
}

std::vector<SymbolicInputDim> symbolicDimsOf(const CompileOptions &o) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::vector<SymbolicInputDim> symbolic;
  (void)parseInputShapes(o, shapes, symbolic);
  return symbolic;
}

void setPipelineOptions(MoecPipelineOptions &p, const CompileOptions &o,
                        const std::string &mesh) {
  p.mesh = mesh;
  p.tokenSplit = o.tokenSplit;
  p.attentionMesh = o.attentionMesh;
  p.noRaise = o.noRaise;
  p.strict = o.strict;
  p.precision = o.precision;
  p.placement = o.placement;
  p.placementLoad = o.placementLoad;
  p.redundantExperts = o.redundantExperts;
  p.capacityFactor = o.capacityFactor;
  p.batchMatmul = o.batchMatmul;
  p.kvRepeat = o.kvRepeat;
  p.denseTp = o.denseTp;
  p.sequenceParallel = o.sequenceParallel;
}

Compilation::Compilation(MLIRContext &context, const CompileOptions &options,
                         PassManagerHook hook)
    : context_(context), options_(options), hook_(std::move(hook)) {
  setLazyWeightThreshold(options_.lazyWeightsAbove);
  if (!options_.deviceMemory.empty())
    (void)parseByteSize(options_.deviceMemory, memoryLimit_);
}

Compilation::~Compilation() = default;

LogicalResult Compilation::fail(const std::string &message) {
  error_ = message;
  return failure();
}

LogicalResult Compilation::importFile(StringRef path) {
  source_ = path.str();
  std::string err;
  module_ = importOnnxFile(context_, path, importOptionsOf(options_), err);
  return module_ ? success() : fail(err);
}

LogicalResult Compilation::importBuffer(StringRef bytes, StringRef name) {
  source_ = name.str();
  std::string err;
  module_ =
      importOnnxBuffer(context_, bytes, name, importOptionsOf(options_), err);
  fromBuffer_ = true;
  if (options_.maxTokens > 0)
    buffer_ = bytes.str();
  return module_ ? success() : fail(err);
}

LogicalResult
Compilation::runPipeline(const std::function<void(PassManager &)> &build,
                         const std::string &failure) {
  passManagers_.push_back(std::make_unique<PassManager>(&context_));
  PassManager &pm = *passManagers_.back();
  if (hook_ && mlir::failed(hook_(pm)))
    return fail("bad pass-manager options");
  build(pm);
  if (mlir::failed(pm.run(*module_)))
    return fail(failure);
  return success();
}

LogicalResult Compilation::cleanup() {
  MoecPipelineOptions p;
  setPipelineOptions(p, options_, /*mesh=*/"");
  return runPipeline(
      [&](PassManager &pm) { buildImportCleanupPipeline(pm, p); },
      source_ + ": the compilation pipeline failed");
}

std::string Compilation::moeReport(bool json) {
  std::string s;
  llvm::raw_string_ostream os(s);
  writeMoEReport(*module_, os, json);
  return s;
}

LogicalResult Compilation::resolveMesh(llvm::raw_ostream &log) {
  std::string err;
  CompileOptions &o = options_;
  if (o.mesh == "auto") {
    if (!o.attentionMesh.empty())
      return fail("--attention-mesh with --mesh auto: give the MoE mesh "
                  "(e.g. --mesh ep=8) to fold the attention onto it");
    MeshChoiceOptions choice;
    choice.gpus = o.gpus;
    choice.gpusPerNode = o.gpusPerNode;
    choice.memoryLimit = memoryLimit_;
    choice.memoryLimitText = o.deviceMemory;
    MoecPipelineOptions p;
    setPipelineOptions(p, o, /*mesh=*/"");
    std::string mesh, attention;
    if (mlir::failed(
            chooseMesh(*module_, choice, p, log, mesh, attention, err)))
      return fail(err);
    o.mesh = mesh;
    o.attentionMesh = attention;
    return success();
  }
  MeshSpec spec;
  if (!parseMeshSpec(o.mesh, spec, err))
    return fail("--mesh: " + err);
  if (!o.attentionMesh.empty()) {
    AttentionMesh attn;
    MeshSpec grid;
    MeshRoles roles;
    if (!parseAttentionMesh(o.attentionMesh, attn, err))
      return fail("--attention-mesh: " + err);
    if (!foldMesh(spec, attn, grid, roles, err))
      return fail(err);
    if (o.tokenSplit != "auto")
      return fail("--token-split " + o.tokenSplit +
                  " and --attention-mesh: the attention mesh decides "
                  "where tokens are split (give one of them)");
  }
  if (o.gpus > 0 && spec.worldSize() != o.gpus)
    return fail("--mesh " + o.mesh + " has " +
                std::to_string(spec.worldSize()) + " ranks but --gpus is " +
                std::to_string(o.gpus));
  return success();
}

LogicalResult Compilation::shard() {
  MoecPipelineOptions p;
  setPipelineOptions(p, options_, options_.mesh);
  if (mlir::failed(runPipeline(
          [&](PassManager &pm) { buildShardPipeline(pm, p); },
          source_ + ": sharding for --mesh " + options_.mesh +
              (options_.attentionMesh.empty()
                   ? std::string()
                   : " --attention-mesh " + options_.attentionMesh) +
              " failed")))
    return failure();
  // Sequence-parallel, hybrid or folded MoE layers slice the rows inside
  // the model over these ranks.
  rowSliceRanks_ = 1;
  if (shard::GridOp grid = getMeshGrid(*module_))
    for (int16_t a : moeSliceAxes(grid))
      rowSliceRanks_ *= grid.getShape()[size_t(a)];
  return success();
}

LogicalResult Compilation::lower() {
  MoecPipelineOptions p;
  setPipelineOptions(p, options_, options_.mesh);
  return runPipeline([&](PassManager &pm) { buildLowerPipeline(pm, p); },
                     source_ + ": partitioning for --mesh " + options_.mesh +
                         " failed");
}

ShardReport Compilation::report() {
  ShardReport r = computeShardReport(*module_);
  r.maxTokens = options_.maxTokens;
  if (rowsFollowCount_.size() == r.layers.size())
    for (size_t i = 0; i < r.layers.size(); ++i)
      r.layers[i].rowsFollowCount = rowsFollowCount_[i];
  return r;
}

LogicalResult Compilation::checkDeviceMemory(const ShardReport &rep) {
  if (memoryLimit_ <= 0)
    return success();
  for (const RankMemory &m : rep.ranks)
    if (int64_t need = m.weightBytes + m.activationBytes + m.dequantizedBytes;
        need > memoryLimit_)
      return fail("--mesh " + options_.mesh + ": rank " +
                  std::to_string(m.rank) + " needs " + formatBytes(need) +
                  " (weights " + formatBytes(m.weightBytes) + ", activations " +
                  formatBytes(m.activationBytes) +
                  (m.dequantizedBytes ? ", dequantized weights " +
                                            formatBytes(m.dequantizedBytes)
                                      : std::string()) +
                  "), more than --device-memory " + options_.deviceMemory +
                  "; use more ep/tp ranks");
  return success();
}

LogicalResult Compilation::buildPlan(moert::Plan &plan, moert::PlanData &data) {
  PlanOptions popts;
  if (options_.target == "cuda")
    popts.cudaChip = options_.cudaChip;
  std::vector<int32_t> roots;
  popts.valueRoots = &roots;
  PlanOptions codeOptions = popts;
  bool dynamic = options_.maxTokens > 0;
  if (dynamic) {
    // The KV cache of a decode plan lives outside the arena, where the
    // executor swaps it between steps (roots are recorded below).
    popts.cacheOutsideArena = true;
    // The kernels are compiled once the symbolic dims are known.
    popts.cpuCode = false;
    popts.cudaChip.clear();
    popts.verify = false;
  }
  if (mlir::failed(moec::buildPlan(*module_, source_, popts, plan, data)))
    return fail(source_ + ": cannot lower to a plan for --mesh " +
                options_.mesh);
  if (!dynamic)
    return success();
  // The same model at two other counts, imported as this one was.
  TokenSymbolImport importAt = [&](MLIRContext &ctx, const ImportOptions &io,
                                   std::string &err) {
    return fromBuffer_ ? importOnnxBuffer(ctx, buffer_, source_, io, err)
                       : importOnnxFile(ctx, source_, io, err);
  };
  MoecPipelineOptions p;
  setPipelineOptions(p, options_, options_.mesh);
  std::string err;
  std::string what = source_ + ": dynamic token count (--max-tokens " +
                     std::to_string(options_.maxTokens) + ", --mesh " +
                     options_.mesh + "): ";
  if (!addTokenSymbol(context_.getDialectRegistry(), importAt,
                      importOptionsOf(options_), symbolicDimsOf(options_),
                      options_.maxTokens, p, *module_, plan, data, roots,
                      rowSliceRanks_, err))
    return fail(what + err);
  // Views record their root: a runtime that keeps a KV cache outside the
  // arena binds the root and so every view of it (moert::Value::root).
  for (size_t i = 0; i < plan.values.size() && i < roots.size(); ++i)
    plan.values[i].root =
        roots[i] >= 0 && roots[i] != int32_t(i) ? roots[i] : -1;
  // A cache whose present is its past with rows appended grows in place:
  // one buffer, and the concatenation writes only the new rows.
  if (options_.kvCache == "in-place")
    boxCachePairs(plan, *module_);
  rowsFollowCount_.clear();
  for (const moert::Step &s : plan.steps)
    if (s.kind() == moert::StepKind::dispatch)
      rowsFollowCount_.push_back(
          !plan.values[size_t(s.inputs[0])].symDims.empty());
  std::vector<KernelVariant> variants = kernelVariants(plan, *module_);
  if (!codeOptions.cudaChip.empty())
    for (const KernelVariant &v : variants)
      if (v.symbolic())
        return fail(what + "kernel '" + v.source +
                    (v.readsCount ? "' computes with the token count"
                                  : "' has operands that follow the token "
                                    "count") +
                    "; generated kernels take a dynamic token count on CPU "
                    "only so far (--target cpu)");
  if (mlir::failed(addKernelCode(*module_, codeOptions, variants, plan, data)))
    return fail(source_ + ": cannot lower to a plan for --mesh " +
                options_.mesh);
  if (!moert::verifyPlan(plan, err))
    return fail(what + "internal error: the plan is invalid: " + err);
  return success();
}

} // namespace moec
