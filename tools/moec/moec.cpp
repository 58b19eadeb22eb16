//===- moec.cpp - the moec compiler driver --------------------------------===//
//
// moec MODEL.onnx [--input-shape NAME=D0,D1,...] [--mesh dp=D,ep=E,tp=T]
//      [--emit=mlir|sharded-mlir|plan|ptx|html] [--report[=json]] [-o FILE]
//
// Imports an ONNX MoE model, raises its MoE layers, and (with --mesh) shards
// it into a per-rank expert-parallel program. The passes are the stages of
// moe-compile-pipeline (lib/Pipelines), which moe-opt runs in one go. Accepts
// the standard MLIR pass-manager flags (--mlir-print-ir-after-all, ...).
//
//===----------------------------------------------------------------------===//

#include "moec/Analysis/Mesh.h"
#include "moec/Analysis/PlanHtml.h"
#include "moec/Analysis/Report.h"
#include "moec/Analysis/ShardReport.h"
#include "moec/Analysis/Weights.h"
#include "moec/Conversion/KernelCodegen.h"
#include "moec/Conversion/ToPlan.h"
#include "moec/Import/OnnxImporter.h"
#include "moec/InitAll.h"
#include "moec/Pipelines/InternalErrors.h"
#include "moec/Pipelines/MeshChoice.h"
#include "moec/Pipelines/Pipelines.h"
#include "moec/Pipelines/TokenSymbol.h"
#include "moert/Progress.h"
#include "moert/RoutingLoad.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
namespace cl = llvm::cl;

namespace {
enum class EmitKind { MLIR, ShardedMLIR, Plan, PTX, Html };

cl::OptionCategory moecCat("moec options");

cl::opt<std::string> inputFile(cl::Positional, cl::Required,
                               cl::desc("<model.onnx | model.onnxtxt>"),
                               cl::cat(moecCat));
cl::opt<std::string> outputFile("o", cl::desc("Output file ('-' = stdout)"),
                                cl::value_desc("file"), cl::init("-"),
                                cl::cat(moecCat));
cl::list<std::string> inputShapes(
    "input-shape",
    cl::desc("Fix the shape of a graph input: NAME=D0,D1,... (repeatable; "
             "replaces symbolic dims, must agree with static ones). A dim "
             "may follow the dynamic token count: ?, ?+B, A*? or A*?+B "
             "(with --max-tokens)"),
    cl::value_desc("name=d0,d1,..."), cl::cat(moecCat));
cl::opt<int64_t> maxTokens(
    "max-tokens",
    cl::desc("The largest token count a plan whose --input-shape has ? dims "
             "runs at: the plan serves every count from 0 to N (a multiple "
             "of the ranks the tokens are split over)"),
    cl::value_desc("N"), cl::init(0), cl::cat(moecCat));
cl::opt<EmitKind> emit(
    "emit", cl::desc("What to write"), cl::init(EmitKind::MLIR),
    cl::values(clEnumValN(EmitKind::MLIR, "mlir",
                          "the IR after moec's pipeline (with --mesh: the "
                          "per-rank program)"),
               clEnumValN(EmitKind::ShardedMLIR, "sharded-mlir",
                          "with --mesh: the annotated IR (global shapes, "
                          "placement, all-to-alls), then the partitioned "
                          "per-rank IR, separated by '// -----'"),
               clEnumValN(EmitKind::Plan, "plan",
                          "a .moeplan for moe-run (the default when -o ends "
                          "in .moeplan; --mesh defaults to ep=1)"),
               clEnumValN(EmitKind::PTX, "ptx",
                          "the generated kernels as PTX for --cuda-chip, "
                          "one FILE.N.ptx per GPU module (-o FILE)"),
               clEnumValN(EmitKind::Html, "html",
                          "the plan as one self-contained HTML page: ranks "
                          "by node with their experts, dispatch/combine "
                          "bytes beside the seed's formulas, memory per "
                          "rank, and with --routing the measured load and "
                          "token flow (--mesh defaults to ep=1)")),
    cl::cat(moecCat));
cl::opt<std::string>
    target("target",
           cl::desc("Where the plan's generated kernels run: cpu (default), or "
                    "cuda (PTX as well as CPU code)"),
           cl::init("cpu"), cl::cat(moecCat));
cl::opt<std::string> cudaChip("cuda-chip",
                              cl::desc("GPU architecture for --target=cuda"),
                              cl::init("sm_90"), cl::cat(moecCat));
cl::OptionCategory shardCat("moec sharding options");
cl::opt<std::string> meshSpec(
    "mesh",
    cl::desc("Device mesh: dp=D,ep=E,tp=T (any subset; the product is the "
             "number of ranks), or 'auto' with --gpus"),
    cl::value_desc("dp=D,ep=E,tp=T|auto"), cl::cat(shardCat));
cl::opt<std::string> attentionMesh(
    "attention-mesh",
    cl::desc("Attention and the dense layers on another folding of the same "
             "ranks (Megatron-Core's MoE parallel folding): dp=A,tp=B with "
             "A x B = the --mesh ranks; --mesh then gives the MoE layers' "
             "layout. vLLM's --tensor-parallel-size 8 "
             "--enable-expert-parallel is --mesh ep=8 --attention-mesh "
             "tp=8; SGLang's DP attention is --attention-mesh dp=8"),
    cl::value_desc("dp=A,tp=B"), cl::cat(shardCat));
cl::opt<int64_t> gpus("gpus", cl::desc("With --mesh auto: number of GPUs"),
                      cl::init(0), cl::cat(shardCat));
cl::opt<int64_t> gpusPerNode(
    "gpus-per-node",
    cl::desc("With --mesh auto: GPUs per node (EP and TP stay inside a "
             "node; default: all GPUs in one node); with --emit=html: the "
             "ranks drawn per node"),
    cl::init(0), cl::cat(shardCat));
cl::opt<std::string> tokenSplit(
    "token-split",
    cl::desc("Where tokens are split over dp x ep: auto (default: model when "
             "the whole model splits so, else moe), model (each rank runs "
             "the whole model on its own sequences, data-parallel "
             "attention), moe (sequence-parallel MoE layers: attention and "
             "dense layers replicated, each rank dispatches its slice of the "
             "tokens; any batch)"),
    cl::value_desc("auto|model|moe"), cl::init("auto"), cl::cat(shardCat));
cl::opt<std::string> placement(
    "placement",
    cl::desc("Expert placement: contiguous (default), round-robin, balanced"),
    cl::init("contiguous"), cl::cat(shardCat));
cl::opt<std::string> placementLoad(
    "placement-load",
    cl::desc("JSON of per-expert token counts (moe-run --record-routing) "
             "for --placement=balanced and --redundant-experts"),
    cl::value_desc("file"), cl::cat(shardCat));
cl::opt<int64_t> redundantExperts(
    "redundant-experts",
    cl::desc("Replicate the N hottest experts (EPLB-style packing)"),
    cl::init(0), cl::cat(shardCat));
cl::opt<double> capacityFactor(
    "capacity-factor",
    cl::desc("GShard capacity factor: each expert replica takes at most "
             "ceil(C*T*k/E) rows per source rank (default 0: dropless)"),
    cl::init(0.0), cl::cat(shardCat));
cl::opt<std::string> deviceMemory(
    "device-memory",
    cl::desc("Memory of one device (e.g. 80GiB): fail when a rank's weights "
             "and activations do not fit (--emit=html draws it instead)"),
    cl::cat(shardCat));
cl::opt<std::string> routingFile(
    "routing",
    cl::desc("With --emit=html: the routing moe-run --record-routing "
             "recorded for this model and mesh; the page adds the tokens "
             "per expert (hot experts marked) and the rank-to-rank token "
             "flow per MoE layer"),
    cl::value_desc("file"), cl::cat(shardCat));
cl::opt<bool>
    strict("strict",
           cl::desc("Fail when a region that looks like an MoE layer cannot be "
                    "raised (default: warn and keep it as dense ops)"),
           cl::init(false), cl::cat(moecCat));
cl::opt<std::string> precision(
    "precision",
    cl::desc("Type of the GEMM weights and the rows they multiply: fp32 "
             "(default), bf16 or fp16 (fp32 accumulation; routers, norms "
             "and residuals stay fp32; moe-lower-precision)"),
    cl::init("fp32"), cl::cat(moecCat));
cl::opt<std::string> batchMatmul(
    "batch-matmul",
    cl::desc("How f32 batched matmuls (attention) run: blas (default; plan "
             "steps: BLAS on CPU ranks, cuBLAS on GPUs) or kernel "
             "(generated loop kernels, for comparisons)"),
    cl::init("blas"), cl::cat(moecCat));
cl::opt<std::string> denseTp(
    "dense-tp",
    cl::desc("Attention, dense MLPs and the LM head over the tp axis: "
             "megatron (default; Q/K/V and up projections by columns, "
             "output and down projections by rows, an all-reduce; the LM "
             "head by vocab, the logits all-gathered) or replicated (every "
             "tp rank runs them whole; only the experts split)"),
    cl::init("megatron"), cl::cat(moecCat));
cl::opt<std::string> sequenceParallel(
    "sequence-parallel",
    cl::desc("Megatron sequence parallelism where the MoE layers' rows are "
             "sliced over the dense layers' tp ranks (--attention-mesh "
             "tp=N with --mesh ep=N): auto (default; residual adds, norms, "
             "routers and the MoE rows run on each rank's block of the "
             "rows, the all-reduces become reduce-scatters, where that "
             "moves fewer bytes) or off (all-reduce, then slice the MoE "
             "rows)"),
    cl::init("auto"), cl::cat(moecCat));
cl::opt<bool> noRaise("no-raise",
                      cl::desc("Do not run moe-raise-experts (keep the "
                               "exported expert loops as imported)"),
                      cl::init(false), cl::cat(moecCat));
enum class ReportKind { None, Text, Json };
cl::opt<ReportKind> report(
    "report",
    cl::desc("Print what was found per MoE layer (experts, top-k, routing, "
             "FFN form, parameters) instead of the IR (the IR still goes "
             "to -o FILE when given)"),
    cl::init(ReportKind::None), cl::ValueOptional,
    cl::values(clEnumValN(ReportKind::Text, "", "text (the default)"),
               clEnumValN(ReportKind::Text, "text", "text"),
               clEnumValN(ReportKind::Json, "json", "a JSON object")),
    cl::cat(moecCat));
cl::opt<bool> noCheck("no-onnx-check",
                      cl::desc("Skip the ONNX checker (shape inference "
                               "still runs)"),
                      cl::init(false), cl::cat(moecCat));
cl::opt<bool> emitWeights(
    "emit-weights",
    cl::desc("Print weight blobs in full, so that the output parses back "
             "(default: blobs over 1 KiB are elided)"),
    cl::init(false), cl::cat(moecCat));
cl::opt<uint64_t> lazyWeightsAbove(
    "lazy-weights-above",
    cl::desc("Weights of at least this many bytes that a pass restacks, "
             "transposes or narrows are computed only while the plan is "
             "written, never held whole (default 16 MiB)"),
    cl::init(uint64_t(16) << 20), cl::cat(moecCat));
cl::opt<bool> weightsPerRank(
    "weights-per-rank",
    cl::desc("Write each rank's weights to a file of its own next to the "
             "plan (PLAN.rank-N.weights): a rank maps only its file"),
    cl::init(false), cl::cat(moecCat));
cl::opt<std::string> ranksOpt(
    "ranks",
    cl::desc("With --weights-per-rank: write only these ranks' weight files "
             "(e.g. 0-7 or 0,2,4), to stage one node's shards"),
    cl::init(""), cl::cat(moecCat));
cl::opt<bool> progressOpt(
    "progress",
    cl::desc("Progress lines while writing weights even when stderr is not "
             "a terminal (logs); on a terminal the meter shows by itself "
             "once writing takes a second"),
    cl::init(false), cl::cat(moecCat));
cl::opt<bool> quiet("quiet",
                    cl::desc("No progress meter while writing weights"),
                    cl::init(false), cl::cat(moecCat));
cl::opt<std::string> packedWeights(
    "packed-weights",
    cl::desc("Quantized weights (com.microsoft.MatMulNBits, QMoE): keep "
             "(default: the plan holds the packed codes, which its GEMMs "
             "read) or expand (dequantized when compiling: fp32 weights in "
             "the plan, 4-8x the bytes)"),
    cl::value_desc("keep|expand"), cl::init("keep"), cl::cat(moecCat));
cl::opt<std::string> int8Activations(
    "int8-activations",
    cl::desc("MatMulNBits with accuracy_level 4: model (default: A is "
             "quantized to int8 per block of K, as onnxruntime's CPU kernels "
             "do: outputs match them, about 1e-2 relative from the exact "
             "product) or off (the exact product in A's type)"),
    cl::value_desc("model|off"), cl::init("model"), cl::cat(moecCat));
cl::opt<int64_t> inlineLimit(
    "inline-constant-limit",
    cl::desc("Initializers with more elements become dense_resource blobs"),
    cl::init(16), cl::cat(moecCat));

/// "FILE: node 'NAME'" for the importer's node locations, else the location.
std::string describe(Location loc) {
  if (auto name = dyn_cast<NameLoc>(loc))
    if (auto file = dyn_cast<FileLineColLoc>(name.getChildLoc()))
      return file.getFilename().str() + ": node '" + name.getName().str() + "'";
  if (auto file = dyn_cast<FileLineColLoc>(loc))
    return file.getFilename().str();
  std::string s;
  llvm::raw_string_ostream os(s);
  os << loc;
  return s;
}

int fail(const llvm::Twine &msg) {
  llvm::errs() << "moec: error: " << msg << "\n";
  return 1;
}

/// The pipeline options of moec's flags (Pipelines.h names them alike).
void setPipelineOptions(moec::MoecPipelineOptions &opts,
                        const std::string &mesh) {
  opts.mesh = mesh;
  opts.tokenSplit = tokenSplit;
  opts.attentionMesh = attentionMesh;
  opts.noRaise = noRaise;
  opts.strict = strict;
  opts.precision = precision;
  opts.placement = placement;
  opts.placementLoad = placementLoad;
  opts.redundantExperts = redundantExperts;
  opts.capacityFactor = capacityFactor;
  opts.batchMatmul = batchMatmul;
  opts.denseTp = denseTp;
  opts.sequenceParallel = sequenceParallel;
}
} // namespace

/// "0-7" or "0,2,4-5" into `out`; an error message when malformed or a
/// rank is outside [0, world).
static std::string parseRanks(StringRef spec, int64_t world,
                              std::vector<int32_t> &out) {
  SmallVector<StringRef> parts;
  spec.split(parts, ',');
  for (StringRef p : parts) {
    auto [lo, hi] = p.trim().split('-');
    int64_t a = 0, b = 0;
    if (lo.getAsInteger(10, a) ||
        (hi.empty() ? (b = a, false) : hi.getAsInteger(10, b)) || a > b)
      return "expected ranks like 0-7 or 0,2,4";
    if (a < 0 || b >= world)
      return "rank " + std::to_string(a < 0 ? a : b) +
             " is outside the plan's " + std::to_string(world) + " ranks";
    for (int64_t r = a; r <= b; ++r)
      out.push_back(int32_t(r));
  }
  return "";
}

int moecMain(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // --help: moec's flags and the MLIR ones registered below, not libLLVM's.
  moec::hideLibraryOptions({&moecCat, &shardCat});
  registerAsmPrinterCLOptions();
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  registerDefaultTimingManagerCLOptions();
  moec::registerAllPasses();
  cl::ParseCommandLineOptions(argc, argv,
                              "moec: compile ONNX Mixture-of-Experts models to "
                              "expert-parallel plans\n");

  if (std::string e = moec::checkPrecision(precision); !e.empty())
    return fail("--precision " + e);
  if (std::string e = moec::checkBatchMatmul(batchMatmul); !e.empty())
    return fail("--batch-matmul " + e);
  if (std::string e = moec::checkDenseTp(denseTp); !e.empty())
    return fail("--dense-tp " + e);
  if (std::string e = moec::checkSequenceParallel(sequenceParallel); !e.empty())
    return fail("--sequence-parallel " + e);
  moec::setLazyWeightThreshold(lazyWeightsAbove);
  if ((weightsPerRank || !ranksOpt.empty()) && emit != EmitKind::Plan &&
      !StringRef(outputFile).ends_with(".moeplan"))
    return fail("--weights-per-rank and --ranks write plans: give -o "
                "FILE.moeplan");
  if (tokenSplit != "auto" && tokenSplit != "model" && tokenSplit != "moe")
    return fail("--token-split '" + tokenSplit +
                "': expected auto, model or moe");

  moec::ImportOptions opts;
  opts.runChecker = !noCheck;
  opts.inlineConstantLimit = inlineLimit;
  if (packedWeights != "keep" && packedWeights != "expand")
    return fail("--packed-weights '" + packedWeights +
                "': expected keep or expand");
  opts.keepPackedWeights = packedWeights == "keep";
  if (int8Activations != "model" && int8Activations != "off")
    return fail("--int8-activations '" + int8Activations +
                "': expected model or off");
  opts.int8Activations = int8Activations == "model";
  std::vector<moec::SymbolicInputDim> symbolic;
  for (const std::string &s : inputShapes) {
    std::string err;
    if (!moec::parseInputShape(s, opts.inputShapes, err, &symbolic))
      return fail(err);
  }
  if (maxTokens < 0)
    return fail("--max-tokens " + std::to_string(maxTokens) +
                ": expected a positive count");
  if (!symbolic.empty() && maxTokens == 0)
    return fail("--input-shape " + symbolic[0].input + ": dim " +
                std::to_string(symbolic[0].dim) +
                " follows the token count (?): give --max-tokens N");
  if (symbolic.empty() && maxTokens > 0)
    return fail("--max-tokens needs an --input-shape dim that follows the "
                "token count (e.g. --input-shape x=1,?,64)");
  moec::substituteTokens(opts.inputShapes, symbolic, maxTokens);

  DialectRegistry registry;
  moec::registerAllDialects(registry);
  MLIRContext ctx(registry);
  // Diagnostics from passes go to stderr with the ONNX node as location;
  // a pass that leaves IR the verifier rejects is reported as moec's
  // internal error (InternalErrors.h).
  moec::PassDiagnostics passDiags(
      [](Location where, StringRef severity, StringRef message) {
        llvm::errs() << "moec: " << describe(where) << ": " << severity << ": "
                     << message << "\n";
      });
  ScopedDiagnosticHandler diag(
      &ctx, [&](Diagnostic &d) { return passDiags.handle(d); });

  // --mlir-timing: one report for the whole compile (import, the three
  // pass pipelines, the plan with its kernel code).
  DefaultTimingManager tm;
  applyDefaultTimingManagerCLOptions(tm);
  TimingScope timing = tm.getRootScope();

  std::string err;
  TimingScope importTiming = timing.nest("Import");
  OwningOpRef<ModuleOp> module =
      moec::importOnnxFile(ctx, inputFile, opts, err);
  importTiming.stop();
  if (!module)
    return fail(err);

  // The stages of moe-compile-pipeline (Pipelines.h) one by one: the module
  // is printed, reported on or checked between them.
  moec::MoecPipelineOptions pipelineOpts;
  setPipelineOptions(pipelineOpts, /*mesh=*/"");
  PassManager pm(&ctx);
  if (failed(applyPassManagerCLOptions(pm)))
    return fail("bad pass-manager options");
  moec::addPassDiagnostics(pm, passDiags);
  pm.enableTiming(timing);
  moec::buildImportCleanupPipeline(pm, pipelineOpts);
  if (failed(pm.run(*module)))
    return fail(inputFile + ": the compilation pipeline failed");

  OpPrintingFlags flags;
  if (!emitWeights)
    flags.elideLargeResourceString(1024);
  if (!attentionMesh.empty() && meshSpec.empty())
    return fail("--attention-mesh folds attention onto the ranks of --mesh: "
                "give --mesh too (e.g. --mesh ep=8 --attention-mesh tp=8)");
  if (emit == EmitKind::ShardedMLIR && meshSpec.empty())
    return fail("--emit=sharded-mlir needs --mesh");
  bool wantPlan =
      emit == EmitKind::Plan ||
      (emit == EmitKind::MLIR && StringRef(outputFile).ends_with(".moeplan"));
  if (wantPlan && outputFile == "-")
    return fail("a plan is binary: give -o FILE.moeplan");
  if (emit == EmitKind::PTX && outputFile == "-")
    return fail("--emit=ptx writes FILE.N.ptx files: give -o FILE");
  if ((wantPlan || emit == EmitKind::PTX || emit == EmitKind::Html) &&
      meshSpec.empty())
    meshSpec = "ep=1";
  if (!routingFile.empty() && emit != EmitKind::Html)
    return fail("--routing draws the measured routing on the plan page: "
                "give --emit=html");
  if (gpusPerNode < 0)
    return fail("--gpus-per-node " + std::to_string(gpusPerNode) +
                ": expected a number of GPUs >= 1");
  // Read before sharding: a bad file fails fast.
  moert::RoutingLoad routing;
  if (!routingFile.empty() &&
      !moert::readRoutingLoad(routingFile, routing, err))
    return fail("--routing: " + err);
  if (meshSpec.empty()) {
    if (report != ReportKind::None) {
      moec::writeMoEReport(*module, llvm::outs(), report == ReportKind::Json);
      if (outputFile == "-")
        return 0;
    }
    auto out = openOutputFile(outputFile, &err);
    if (!out)
      return fail(err);
    if (emitWeights && failed(moec::materializeLazyWeights(*module)))
      return fail(inputFile + ": cannot print the weights");
    module->print(out->os(), flags);
    out->keep();
    return 0;
  }

  int64_t memLimit = 0;
  if (!deviceMemory.empty() && !moec::parseByteSize(deviceMemory, memLimit))
    return fail("--device-memory '" + deviceMemory +
                "': expected a size such as 80GiB, 512MiB or 1000000");
  std::string mesh = meshSpec;
  if (mesh == "auto") {
    if (!symbolic.empty())
      return fail("--mesh auto with a dynamic token count (--max-tokens): "
                  "give the mesh");
    if (!attentionMesh.empty())
      return fail("--attention-mesh with --mesh auto: give the MoE mesh "
                  "(e.g. --mesh ep=8) to fold the attention onto it");
    moec::MeshChoiceOptions choice;
    choice.gpus = gpus;
    choice.gpusPerNode = gpusPerNode;
    choice.memoryLimit = memLimit;
    choice.memoryLimitText = deviceMemory;
    std::string attention;
    if (failed(moec::chooseMesh(*module, choice, pipelineOpts, llvm::errs(),
                                mesh, attention, err)))
      return fail(err);
    attentionMesh = attention;
  } else {
    moec::MeshSpec spec;
    if (!moec::parseMeshSpec(mesh, spec, err))
      return fail("--mesh: " + err);
    if (!attentionMesh.empty()) {
      moec::AttentionMesh attn;
      moec::MeshSpec grid;
      moec::MeshRoles roles;
      if (!moec::parseAttentionMesh(attentionMesh, attn, err))
        return fail("--attention-mesh: " + err);
      if (!moec::foldMesh(spec, attn, grid, roles, err))
        return fail(err);
      if (tokenSplit != "auto")
        return fail("--token-split " + tokenSplit +
                    " and --attention-mesh: the attention mesh decides "
                    "where tokens are split (give one of them)");
    }
    if (gpus > 0 && spec.worldSize() != gpus)
      return fail("--mesh " + mesh + " has " +
                  std::to_string(spec.worldSize()) + " ranks but --gpus is " +
                  std::to_string(gpus));
  }

  std::string moeReport;
  if (report == ReportKind::Text) {
    llvm::raw_string_ostream os(moeReport);
    moec::writeMoEReport(*module, os, false);
  }
  // Shard: grid and token split, placement, all-to-alls (annotated IR),
  // then the per-rank program.
  PassManager shardPm(&ctx);
  if (failed(applyPassManagerCLOptions(shardPm)))
    return fail("bad pass-manager options");
  moec::addPassDiagnostics(shardPm, passDiags);
  shardPm.enableTiming(timing);
  setPipelineOptions(pipelineOpts, mesh);
  moec::buildShardPipeline(shardPm, pipelineOpts);
  if (failed(shardPm.run(*module)))
    return fail(inputFile + ": sharding for --mesh " + mesh +
                (attentionMesh.empty() ? std::string()
                                       : " --attention-mesh " + attentionMesh) +
                " failed");
  if (!symbolic.empty()) {
    // Inc 1 of docs/design/dynamic-tokens.md: only the whole-model token
    // split (the modes that slice rows inside the model pad them).
    shard::GridOp grid = moec::getMeshGrid(*module);
    if (grid && (moec::isTokenSliced(grid) || moec::isTokenHybrid(grid) ||
                 !moec::moeSliceAxes(grid).empty()))
      return fail(inputFile + ": dynamic token count (--max-tokens " +
                  std::to_string(maxTokens) + "): on --mesh " + mesh +
                  " the MoE layers slice the rows inside the model "
                  "(sequence-parallel, hybrid or folded), which pads them to "
                  "a fixed count; plans with a dynamic token count need the "
                  "whole model split over tokens (--token-split model, and a "
                  "--max-tokens that the ranks the tokens are split over "
                  "divide)");
  }
  std::string annotated;
  if (emit == EmitKind::ShardedMLIR) {
    llvm::raw_string_ostream os(annotated);
    os << "// moec: annotated IR for --mesh " << mesh
       << " (global shapes, expert placement, all-to-alls)\n";
    if (emitWeights && failed(moec::materializeLazyWeights(*module)))
      return fail(inputFile + ": cannot print the weights");
    module->print(os, flags);
  }
  PassManager partPm(&ctx);
  if (failed(applyPassManagerCLOptions(partPm)))
    return fail("bad pass-manager options");
  moec::addPassDiagnostics(partPm, passDiags);
  partPm.enableTiming(timing);
  moec::buildLowerPipeline(partPm, pipelineOpts);
  if (failed(partPm.run(*module)))
    return fail(inputFile + ": partitioning for --mesh " + mesh + " failed");

  moec::ShardReport rep;
  if (memLimit > 0 || report != ReportKind::None || emit == EmitKind::Html) {
    TimingScope t = timing.nest("Report");
    rep = moec::computeShardReport(*module);
    if (!symbolic.empty())
      rep.maxTokens = maxTokens;
  }
  if (memLimit > 0) {
    for (const moec::RankMemory &m : rep.ranks)
      if (int64_t need = m.weightBytes + m.activationBytes + m.dequantizedBytes;
          need > memLimit && emit != EmitKind::Html)
        return fail("--mesh " + mesh + ": rank " + std::to_string(m.rank) +
                    " needs " + moec::formatBytes(need) + " (weights " +
                    moec::formatBytes(m.weightBytes) + ", activations " +
                    moec::formatBytes(m.activationBytes) +
                    (m.dequantizedBytes
                         ? ", dequantized weights " +
                               moec::formatBytes(m.dequantizedBytes)
                         : std::string()) +
                    "), more than --device-memory " + deviceMemory +
                    "; use more ep/tp ranks");
  }
  if (report != ReportKind::None) {
    if (report == ReportKind::Json) {
      moec::printShardReport(rep, llvm::outs(), true);
    } else {
      llvm::outs() << moeReport << "\n";
      moec::printShardReport(rep, llvm::outs(), false);
    }
    if (outputFile == "-")
      return 0;
  }
  if (emit == EmitKind::Html) {
    if (!routingFile.empty() &&
        !moec::checkRoutingFitsReport(rep, routing, routingFile, err))
      return fail(err);
    moec::PlanHtmlOptions hopts;
    hopts.model = inputFile;
    for (int i = 1; i < argc; ++i)
      hopts.flags += (i > 1 ? " " : "") + std::string(argv[i]);
    hopts.gpusPerNode = gpusPerNode;
    hopts.deviceMemory = memLimit;
    hopts.deviceMemoryText = deviceMemory;
    hopts.routing = routingFile.empty() ? nullptr : &routing;
    hopts.routingFile = routingFile;
    // The page draws ranks over --device-memory (the seed's out-of-memory
    // picture) instead of failing.
    for (const moec::RankMemory &m : rep.ranks)
      if (memLimit > 0 &&
          m.weightBytes + m.activationBytes + m.dequantizedBytes > memLimit) {
        llvm::errs() << "moec: warning: --mesh " << mesh << ": rank " << m.rank
                     << " needs more than --device-memory " << deviceMemory
                     << "; the page marks it\n";
        break;
      }
    auto out = openOutputFile(outputFile, &err);
    if (!out)
      return fail(err);
    moec::writePlanHtml(rep, hopts, out->os());
    out->keep();
    return 0;
  }
  if (emit == EmitKind::PTX) {
    std::vector<std::string> ptx;
    std::vector<moec::KernelInfo> kernels;
    if (failed(moec::compileKernelsToPTX(*module, cudaChip, ptx, kernels, err)))
      return fail(inputFile + ": PTX generation failed: " + err);
    for (size_t i = 0; i < ptx.size(); ++i) {
      std::string path = outputFile + "." + std::to_string(i) + ".ptx";
      auto out = openOutputFile(path, &err);
      if (!out)
        return fail(err);
      out->os() << ptx[i];
      out->keep();
    }
    llvm::errs() << "moec: wrote " << ptx.size() << " PTX module(s) for "
                 << kernels.size() << " kernel(s) to " << outputFile
                 << ".N.ptx\n";
    return 0;
  }
  if (wantPlan) {
    moert::Plan plan;
    moert::PlanData data;
    moec::PlanOptions popts;
    if (target == "cuda")
      popts.cudaChip = cudaChip;
    std::vector<int32_t> roots;
    popts.valueRoots = &roots;
    TimingScope planTiming = timing.nest("Plan (kernel code, weights)");
    if (failed(moec::buildPlan(*module, inputFile, popts, plan, data)))
      return fail(inputFile + ": cannot lower to a plan for --mesh " + mesh);
    if (!symbolic.empty()) {
      TimingScope t = timing.nest("Dynamic token count");
      if (!moec::addTokenSymbol(registry, inputFile, opts, symbolic, maxTokens,
                                pipelineOpts, plan, data, roots, err))
        return fail(inputFile + ": dynamic token count (--max-tokens " +
                    std::to_string(maxTokens) + ", --mesh " + mesh +
                    "): " + err);
    }
    moert::WriteOptions wopts;
    wopts.weightsPerRank = weightsPerRank || !ranksOpt.empty();
    if (!ranksOpt.empty()) {
      std::string e = parseRanks(ranksOpt, plan.worldSize(), wopts.ranks);
      if (!e.empty())
        return fail("--ranks '" + ranksOpt + "': " + e);
    }
    // Writing computes the restacked and narrowed weights (lazy weights)
    // and reads the model's: bytes, rate and time left once it takes a
    // second.
    llvm::errs().flush();
    moert::ProgressMeter meter(
        "moec: writing weights", 0,
        moert::ProgressMeter::modeFor(quiet, progressOpt));
    wopts.progress = [&](uint64_t done, uint64_t total) {
      meter.setTotal(total);
      meter.update(done);
    };
    planTiming.stop();
    TimingScope writeTiming = timing.nest("Write the plan");
    if (!moert::writePlan(outputFile, plan, data, err, wopts))
      return fail(err);
    meter.finish();
    return 0;
  }
  auto out = openOutputFile(outputFile, &err);
  if (!out)
    return fail(err);
  if (emit == EmitKind::ShardedMLIR)
    out->os() << annotated << "\n// -----\n// moec: per-rank program for "
              << "--mesh " << mesh << " (local shapes)\n";
  if (emitWeights && failed(moec::materializeLazyWeights(*module)))
    return fail(inputFile + ": cannot print the weights");
  module->print(out->os(), flags);
  out->keep();
  return 0;
}

int main(int argc, char **argv) {
  // Every error is one line and exit 1: an exception a library throws (a
  // parser, an allocation) is reported, not a crash.
  try {
    return moecMain(argc, argv);
  } catch (const std::bad_alloc &) {
    return fail("out of memory (a tensor or constant too large for this "
                "machine?)");
  } catch (const std::exception &e) {
    return fail(std::string("internal error: ") + e.what() +
                " (please report it with the model)");
  }
}
