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

#include "moec/Analysis/PlanHtml.h"
#include "moec/Analysis/ShardReport.h"
#include "moec/Analysis/Weights.h"
#include "moec/Conversion/KernelCodegen.h"
#include "moec/Conversion/ToPlan.h"
#include "moec/Driver/Compile.h"
#include "moec/Import/OnnxImporter.h"
#include "moec/InitAll.h"
#include "moec/Pipelines/InternalErrors.h"
#include "moec/Pipelines/Pipelines.h"
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
/// The defaults of the compile options (moec/Driver/Compile.h), the one
/// place they are set.
const moec::CompileOptions kDefaults;

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
    cl::value_desc("N"), cl::init(kDefaults.maxTokens), cl::cat(moecCat));
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
           cl::init(kDefaults.target), cl::cat(moecCat));
cl::opt<std::string> cudaChip("cuda-chip",
                              cl::desc("GPU architecture for --target=cuda"),
                              cl::init(kDefaults.cudaChip), cl::cat(moecCat));
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
                      cl::init(kDefaults.gpus), cl::cat(shardCat));
cl::opt<int64_t> gpusPerNode(
    "gpus-per-node",
    cl::desc("With --mesh auto: GPUs per node (EP and TP stay inside a "
             "node; default: all GPUs in one node); with --emit=html: the "
             "ranks drawn per node"),
    cl::init(kDefaults.gpusPerNode), cl::cat(shardCat));
cl::opt<std::string> tokenSplit(
    "token-split",
    cl::desc("Where tokens are split over dp x ep: auto (default: model when "
             "the whole model splits so, else moe), model (each rank runs "
             "the whole model on its own sequences, data-parallel "
             "attention), moe (sequence-parallel MoE layers: attention and "
             "dense layers replicated, each rank dispatches its slice of the "
             "tokens; any batch)"),
    cl::value_desc("auto|model|moe"), cl::init(kDefaults.tokenSplit),
    cl::cat(shardCat));
cl::opt<std::string> placement(
    "placement",
    cl::desc("Expert placement: contiguous (default), round-robin, balanced"),
    cl::init(kDefaults.placement), cl::cat(shardCat));
cl::opt<std::string> placementLoad(
    "placement-load",
    cl::desc("JSON of per-expert token counts (moe-run --record-routing) "
             "for --placement=balanced and --redundant-experts"),
    cl::value_desc("file"), cl::cat(shardCat));
cl::opt<int64_t> redundantExperts(
    "redundant-experts",
    cl::desc("Replicate the N hottest experts (EPLB-style packing)"),
    cl::init(kDefaults.redundantExperts), cl::cat(shardCat));
cl::opt<double> capacityFactor(
    "capacity-factor",
    cl::desc("GShard capacity factor: each expert replica takes at most "
             "ceil(C*T*k/E) rows per source rank (default 0: dropless)"),
    cl::init(kDefaults.capacityFactor), cl::cat(shardCat));
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
           cl::init(kDefaults.strict), cl::cat(moecCat));
cl::opt<std::string> precision(
    "precision",
    cl::desc("Type of the GEMM weights and the rows they multiply: fp32 "
             "(default), bf16 or fp16 (fp32 accumulation; routers, norms "
             "and residuals stay fp32; moe-lower-precision)"),
    cl::init(kDefaults.precision), cl::cat(moecCat));
cl::opt<std::string> batchMatmul(
    "batch-matmul",
    cl::desc("How f32 batched matmuls (attention) run: blas (default; plan "
             "steps: BLAS on CPU ranks, cuBLAS on GPUs) or kernel "
             "(generated loop kernels, for comparisons)"),
    cl::init(kDefaults.batchMatmul), cl::cat(moecCat));
cl::opt<std::string> kvRepeat(
    "kv-repeat",
    cl::desc("Grouped-query attention's repeated KV heads: fold (default; "
             "attention's batch matmuls read each KV head for its group of "
             "query heads, keys transposed in the product: "
             "moe-fold-kv-repeat) or copy (the export's repeat and "
             "transpose copies, for comparisons)"),
    cl::init(kDefaults.kvRepeat), cl::cat(moecCat));
cl::opt<std::string> denseTp(
    "dense-tp",
    cl::desc("Attention, dense MLPs and the LM head over the tp axis: "
             "megatron (default; Q/K/V and up projections by columns, "
             "output and down projections by rows, an all-reduce; the LM "
             "head by vocab, the logits all-gathered) or replicated (every "
             "tp rank runs them whole; only the experts split)"),
    cl::init(kDefaults.denseTp), cl::cat(moecCat));
cl::opt<std::string> sequenceParallel(
    "sequence-parallel",
    cl::desc("Megatron sequence parallelism where the MoE layers' rows are "
             "sliced over the dense layers' tp ranks (--attention-mesh "
             "tp=N with --mesh ep=N): auto (default; residual adds, norms, "
             "routers and the MoE rows run on each rank's block of the "
             "rows, the all-reduces become reduce-scatters, where that "
             "moves fewer bytes) or off (all-reduce, then slice the MoE "
             "rows)"),
    cl::init(kDefaults.sequenceParallel), cl::cat(moecCat));
cl::opt<bool> noRaise("no-raise",
                      cl::desc("Do not run moe-raise-experts (keep the "
                               "exported expert loops as imported)"),
                      cl::init(kDefaults.noRaise), cl::cat(moecCat));
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
                      cl::init(kDefaults.noOnnxCheck), cl::cat(moecCat));
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
    cl::init(kDefaults.lazyWeightsAbove), cl::cat(moecCat));
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
    cl::value_desc("keep|expand"), cl::init(kDefaults.packedWeights),
    cl::cat(moecCat));
cl::opt<std::string> int8Activations(
    "int8-activations",
    cl::desc("MatMulNBits with accuracy_level 4: model (default: A is "
             "quantized to int8 per block of K, as onnxruntime's CPU kernels "
             "do: outputs match them, about 1e-2 relative from the exact "
             "product) or off (the exact product in A's type)"),
    cl::value_desc("model|off"), cl::init(kDefaults.int8Activations),
    cl::cat(moecCat));
cl::opt<std::string> kvCache(
    "kv-cache",
    cl::desc("A decode plan's KV cache (past*/present* pairs, with "
             "--max-tokens): in-place (default: past and present share one "
             "buffer at the maximum length and each step writes only its new "
             "rows, where the step is a concatenation read only by generated "
             "kernels) or swap (two buffers, the whole cache rewritten each "
             "step)"),
    cl::value_desc("in-place|swap"), cl::init(kDefaults.kvCache),
    cl::cat(moecCat));
cl::opt<int64_t> inlineLimit(
    "inline-constant-limit",
    cl::desc("Initializers with more elements become dense_resource blobs"),
    cl::init(kDefaults.inlineConstantLimit), cl::cat(moecCat));

int fail(const llvm::Twine &msg) {
  llvm::errs() << "moec: error: " << msg << "\n";
  return 1;
}

/// The compile options of moec's flags (moec/Driver/Compile.h).
moec::CompileOptions compileOptions() {
  moec::CompileOptions o;
  o.inputShapes = inputShapes;
  o.maxTokens = maxTokens;
  o.mesh = meshSpec;
  o.attentionMesh = attentionMesh;
  o.tokenSplit = tokenSplit;
  o.placement = placement;
  o.placementLoad = placementLoad;
  o.redundantExperts = redundantExperts;
  o.capacityFactor = capacityFactor;
  o.gpus = gpus;
  o.gpusPerNode = gpusPerNode;
  o.deviceMemory = deviceMemory;
  o.strict = strict;
  o.noRaise = noRaise;
  o.precision = precision;
  o.batchMatmul = batchMatmul;
  o.kvRepeat = kvRepeat;
  o.denseTp = denseTp;
  o.sequenceParallel = sequenceParallel;
  o.target = target;
  o.cudaChip = cudaChip;
  o.noOnnxCheck = noCheck;
  o.packedWeights = packedWeights;
  o.int8Activations = int8Activations;
  o.kvCache = kvCache;
  o.inlineConstantLimit = inlineLimit;
  o.lazyWeightsAbove = lazyWeightsAbove;
  return o;
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

  if ((weightsPerRank || !ranksOpt.empty()) && emit != EmitKind::Plan &&
      !StringRef(outputFile).ends_with(".moeplan"))
    return fail("--weights-per-rank and --ranks write plans: give -o "
                "FILE.moeplan");
  if (emit == EmitKind::ShardedMLIR && meshSpec.empty())
    return fail("--emit=sharded-mlir needs --mesh");
  bool wantPlan =
      emit == EmitKind::Plan ||
      (emit == EmitKind::MLIR && StringRef(outputFile).ends_with(".moeplan"));
  if (wantPlan && outputFile == "-")
    return fail("a plan is binary: give -o FILE.moeplan");
  if (emit == EmitKind::PTX && outputFile == "-")
    return fail("--emit=ptx writes FILE.N.ptx files: give -o FILE");
  moec::CompileOptions copts = compileOptions();
  if (std::string e = moec::checkCompileOptions(copts); !e.empty())
    return fail(e);
  // A plan is always for a mesh (after the checks: --attention-mesh still
  // needs an explicit --mesh).
  if ((wantPlan || emit == EmitKind::PTX || emit == EmitKind::Html) &&
      meshSpec.empty())
    meshSpec = copts.mesh = "ep=1";
  if (!routingFile.empty() && emit != EmitKind::Html)
    return fail("--routing draws the measured routing on the plan page: "
                "give --emit=html");
  if (gpusPerNode < 0)
    return fail("--gpus-per-node " + std::to_string(gpusPerNode) +
                ": expected a number of GPUs >= 1");
  // Read before anything is compiled: a bad file fails fast.
  moert::RoutingLoad routing;
  {
    std::string err;
    if (!routingFile.empty() &&
        !moert::readRoutingLoad(routingFile, routing, err))
      return fail("--routing: " + err);
  }

  DialectRegistry registry;
  moec::registerAllDialects(registry);
  MLIRContext ctx(registry);
  // Diagnostics from passes go to stderr with the ONNX node as location;
  // a pass that leaves IR the verifier rejects is reported as moec's
  // internal error (InternalErrors.h).
  moec::PassDiagnostics passDiags(
      [](Location where, StringRef severity, StringRef message) {
        llvm::errs() << "moec: " << moec::describeLocation(where) << ": "
                     << severity << ": " << message << "\n";
      });
  ScopedDiagnosticHandler diag(
      &ctx, [&](Diagnostic &d) { return passDiags.handle(d); });

  // --mlir-timing: one report for the whole compile (import, the three
  // pass pipelines, the plan with its kernel code).
  DefaultTimingManager tm;
  applyDefaultTimingManagerCLOptions(tm);
  TimingScope timing = tm.getRootScope();
  moec::Compilation c(ctx, copts, [&](PassManager &pm) -> LogicalResult {
    if (failed(applyPassManagerCLOptions(pm)))
      return failure();
    moec::addPassDiagnostics(pm, passDiags);
    pm.enableTiming(timing);
    return success();
  });

  std::string err;
  TimingScope importTiming = timing.nest("Import");
  if (failed(c.importFile(inputFile)))
    return fail(c.error());
  importTiming.stop();
  if (failed(c.cleanup()))
    return fail(c.error());
  ModuleOp module = c.module();

  OpPrintingFlags flags;
  if (!emitWeights)
    flags.elideLargeResourceString(1024);
  if (meshSpec.empty()) {
    if (report != ReportKind::None) {
      llvm::outs() << c.moeReport(report == ReportKind::Json);
      if (outputFile == "-")
        return 0;
    }
    auto out = openOutputFile(outputFile, &err);
    if (!out)
      return fail(err);
    if (emitWeights && failed(moec::materializeLazyWeights(module)))
      return fail(inputFile + ": cannot print the weights");
    module->print(out->os(), flags);
    out->keep();
    return 0;
  }

  if (failed(c.resolveMesh(llvm::errs())))
    return fail(c.error());
  const std::string &mesh = c.options().mesh;
  std::string moeReport;
  if (report == ReportKind::Text)
    moeReport = c.moeReport(/*json=*/false);
  // Shard: grid and token split, placement, all-to-alls (annotated IR),
  // then the per-rank program.
  if (failed(c.shard()))
    return fail(c.error());
  std::string annotated;
  if (emit == EmitKind::ShardedMLIR) {
    llvm::raw_string_ostream os(annotated);
    os << "// moec: annotated IR for --mesh " << mesh
       << " (global shapes, expert placement, all-to-alls)\n";
    if (emitWeights && failed(moec::materializeLazyWeights(module)))
      return fail(inputFile + ": cannot print the weights");
    module->print(os, flags);
  }
  if (failed(c.lower()))
    return fail(c.error());

  moec::ShardReport rep;
  // A dynamic token count: the plan first, which tells the report whose
  // rows follow the count.
  std::optional<std::pair<moert::Plan, moert::PlanData>> built;
  bool wantReport = !deviceMemory.empty() || report != ReportKind::None ||
                    emit == EmitKind::Html;
  if (wantReport && c.options().maxTokens > 0) {
    TimingScope planTiming = timing.nest("Plan (kernel code, weights)");
    built.emplace();
    if (failed(c.buildPlan(built->first, built->second)))
      return fail(c.error());
  }
  if (wantReport) {
    TimingScope t = timing.nest("Report");
    rep = c.report();
  }
  // The page draws ranks over --device-memory (the seed's out-of-memory
  // picture) instead of failing.
  if (failed(c.checkDeviceMemory(rep))) {
    if (emit != EmitKind::Html)
      return fail(c.error());
    for (const moec::RankMemory &m : rep.ranks)
      if (m.weightBytes + m.activationBytes + m.dequantizedBytes >
          c.memoryLimit()) {
        llvm::errs() << "moec: warning: --mesh " << mesh << ": rank " << m.rank
                     << " needs more than --device-memory " << deviceMemory
                     << "; the page marks it\n";
        break;
      }
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
    hopts.deviceMemory = c.memoryLimit();
    hopts.deviceMemoryText = deviceMemory;
    hopts.routing = routingFile.empty() ? nullptr : &routing;
    hopts.routingFile = routingFile;
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
    if (failed(moec::compileKernelsToPTX(module, cudaChip, ptx, kernels, err)))
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
    TimingScope planTiming = timing.nest("Plan (kernel code, weights)");
    if (!built) {
      built.emplace();
      if (failed(c.buildPlan(built->first, built->second)))
        return fail(c.error());
    }
    moert::Plan &plan = built->first;
    moert::PlanData &data = built->second;
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
  if (emitWeights && failed(moec::materializeLazyWeights(module)))
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
