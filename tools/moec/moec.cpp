//===- moec.cpp - the moec compiler driver --------------------------------===//
//
// moec MODEL.onnx [--input-shape NAME=D0,D1,...] [--mesh dp=D,ep=E,tp=T]
//      [--emit=mlir|sharded-mlir] [--report[=json]] [-o FILE]
//
// Imports an ONNX MoE model, raises its MoE layers, and (with --mesh) shards
// it into a per-rank expert-parallel program. Accepts the standard MLIR
// pass-manager flags (--mlir-print-ir-after-all, ...).
//
//===----------------------------------------------------------------------===//

#include "moec/Analysis/Mesh.h"
#include "moec/Analysis/Report.h"
#include "moec/Analysis/ShardReport.h"
#include "moec/Conversion/KernelCodegen.h"
#include "moec/Conversion/ToPlan.h"
#include "moec/Import/OnnxImporter.h"
#include "moec/InitAll.h"
#include "moec/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
namespace cl = llvm::cl;

namespace {
enum class EmitKind { MLIR, ShardedMLIR, Plan, PTX };

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
             "replaces symbolic dims, must agree with static ones)"),
    cl::value_desc("name=d0,d1,..."), cl::cat(moecCat));
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
                          "one FILE.N.ptx per GPU module (-o FILE)")),
    cl::cat(moecCat));
cl::opt<std::string> target(
    "target",
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
cl::opt<int64_t> gpus("gpus", cl::desc("With --mesh auto: number of GPUs"),
                      cl::init(0), cl::cat(shardCat));
cl::opt<int64_t> gpusPerNode(
    "gpus-per-node",
    cl::desc("With --mesh auto: GPUs per node (EP and TP stay inside a "
             "node; default: all GPUs in one node)"),
    cl::init(0), cl::cat(shardCat));
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
             "and activations do not fit"),
    cl::cat(shardCat));
cl::opt<bool> strict(
    "strict",
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
cl::opt<int64_t> inlineLimit(
    "inline-constant-limit",
    cl::desc("Initializers with more elements become dense_resource blobs"),
    cl::init(16), cl::cat(moecCat));

/// "FILE: node 'NAME'" for the importer's node locations, else the location.
std::string describe(Location loc) {
  if (auto name = dyn_cast<NameLoc>(loc))
    if (auto file = dyn_cast<FileLineColLoc>(name.getChildLoc()))
      return file.getFilename().str() + ": node '" + name.getName().str() +
             "'";
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

/// moe-shard, moe-place-experts and moe-insert-all-to-all for `mesh`.
void addShardPasses(PassManager &pm, const std::string &mesh) {
  moec::MoEShardOptions shardOpts;
  shardOpts.mesh = mesh;
  pm.addPass(moec::createMoEShard(shardOpts));
  moec::MoEPlaceExpertsOptions placeOpts;
  placeOpts.strategy = placement;
  placeOpts.loadFile = placementLoad;
  placeOpts.redundantExperts = redundantExperts;
  pm.addPass(moec::createMoEPlaceExperts(placeOpts));
  moec::MoEInsertAllToAllOptions a2aOpts;
  a2aOpts.capacityFactor = capacityFactor;
  pm.addPass(moec::createMoEInsertAllToAll(a2aOpts));
}

/// --mesh auto: tries every dp x ep x tp factorisation of --gpus with ep x tp
/// inside a node, compiles each on a copy of the module, and picks the one
/// that fits --device-memory with the least modelled communication per rank
/// (ties: less memory, then more ep). Prints the ranked candidates to stderr.
LogicalResult chooseMesh(ModuleOp module, int64_t memLimit,
                         std::string &chosen) {
  if (gpus < 1) {
    fail("--mesh auto needs --gpus N");
    return failure();
  }
  int64_t perNode = gpusPerNode > 0 ? gpusPerNode : gpus;
  if (gpus % perNode != 0 && gpus > perNode) {
    fail("--gpus " + std::to_string(gpus) + " is not a multiple of " +
         "--gpus-per-node " + std::to_string(perNode));
    return failure();
  }
  struct Candidate {
    std::string mesh;
    bool ok = false;
    std::string why;
    double comm = 0;
    int64_t mem = 0;
    int64_t ep = 1;
  };
  std::vector<Candidate> cands;
  for (int64_t tp = 1; tp <= gpus; ++tp)
    for (int64_t ep = 1; ep * tp <= gpus; ++ep) {
      if (gpus % (ep * tp))
        continue;
      int64_t dp = gpus / (ep * tp);
      if (perNode % (ep * tp) != 0)
        continue; // EP and TP groups stay inside a node
      Candidate c;
      c.ep = ep;
      c.mesh = "dp=" + std::to_string(dp) + ",ep=" + std::to_string(ep) +
               ",tp=" + std::to_string(tp);
      OwningOpRef<ModuleOp> copy(module.clone());
      std::string firstError;
      ScopedDiagnosticHandler quiet(module.getContext(), [&](Diagnostic &d) {
        if (d.getSeverity() == DiagnosticSeverity::Error && firstError.empty())
          firstError = d.str();
        return success();
      });
      PassManager pm(module.getContext());
      addShardPasses(pm, c.mesh);
      pm.addPass(moec::createMoEPartition());
      if (failed(pm.run(*copy))) {
        c.why = firstError.empty() ? "does not shard" : firstError;
      } else {
        moec::ShardReport r = moec::computeShardReport(*copy);
        c.comm = r.commBytesPerRank();
        c.mem = r.maxRankBytes();
        c.ok = memLimit == 0 || c.mem <= memLimit;
        if (!c.ok)
          c.why = "needs " + moec::formatBytes(c.mem) + " per rank";
      }
      cands.push_back(c);
    }
  std::stable_sort(cands.begin(), cands.end(),
                   [](const Candidate &a, const Candidate &b) {
                     if (a.ok != b.ok)
                       return a.ok;
                     if (a.comm != b.comm)
                       return a.comm < b.comm;
                     if (a.mem != b.mem)
                       return a.mem < b.mem;
                     return a.ep > b.ep;
                   });
  llvm::errs() << "moec: --mesh auto for " << gpus << " GPUs (" << perNode
               << " per node): candidates, best first\n";
  for (const Candidate &c : cands) {
    llvm::errs() << "  " << llvm::left_justify(c.mesh, 16);
    if (c.why.empty() || c.ok)
      llvm::errs() << " comm/rank " << moec::formatBytes(c.comm)
                   << ", memory/rank " << moec::formatBytes(c.mem) << "\n";
    else
      llvm::errs() << " rejected: " << c.why << "\n";
  }
  if (cands.empty() || !cands.front().ok) {
    fail("--mesh auto: no factorisation of " + std::to_string(gpus) +
         " GPUs fits" + (memLimit ? " in --device-memory " + deviceMemory
                                  : std::string()));
    return failure();
  }
  chosen = cands.front().mesh;
  llvm::errs() << "moec: --mesh auto chose " << chosen << "\n";
  return success();
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  registerAsmPrinterCLOptions();
  registerMLIRContextCLOptions();
  registerPassManagerCLOptions();
  registerDefaultTimingManagerCLOptions();
  moec::registerAllPasses();
  cl::ParseCommandLineOptions(
      argc, argv,
      "moec: compile ONNX Mixture-of-Experts models to expert-parallel plans\n");

  if (precision != "fp32" && precision != "f32" && precision != "bf16" &&
      precision != "fp16" && precision != "f16")
    return fail("--precision '" + precision +
                "': expected fp32, bf16 or fp16");
  if (batchMatmul != "blas" && batchMatmul != "kernel")
    return fail("--batch-matmul '" + batchMatmul +
                "': expected blas or kernel");

  moec::ImportOptions opts;
  opts.runChecker = !noCheck;
  opts.inlineConstantLimit = inlineLimit;
  for (const std::string &s : inputShapes) {
    std::string err;
    if (!moec::parseInputShape(s, opts.inputShapes, err))
      return fail(err);
  }

  DialectRegistry registry;
  moec::registerAllDialects(registry);
  MLIRContext ctx(registry);
  // Diagnostics from passes go to stderr with the ONNX node as location.
  ScopedDiagnosticHandler diag(&ctx, [](Diagnostic &d) {
    llvm::errs() << "moec: " << describe(d.getLocation()) << ": "
                 << (d.getSeverity() == DiagnosticSeverity::Error ? "error"
                     : d.getSeverity() == DiagnosticSeverity::Warning
                         ? "warning"
                         : "note")
                 << ": " << d << "\n";
    return success();
  });

  std::string err;
  OwningOpRef<ModuleOp> module =
      moec::importOnnxFile(ctx, inputFile, opts, err);
  if (!module)
    return fail(err);

  PassManager pm(&ctx);
  if (failed(applyPassManagerCLOptions(pm)))
    return fail("bad pass-manager options");
  applyDefaultTimingPassManagerCLOptions(pm);
  // Canonicalize first: the raise patterns see folded shapes and views.
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  if (!noRaise) {
    moec::MoERaiseExpertsOptions raiseOpts;
    raiseOpts.strict = strict;
    pm.addNestedPass<func::FuncOp>(moec::createMoERaiseExperts(raiseOpts));
  }
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  if (precision != "fp32" && precision != "f32") {
    moec::MoELowerPrecisionOptions precOpts;
    precOpts.precision = precision;
    pm.addPass(moec::createMoELowerPrecision(precOpts));
    pm.addPass(createCanonicalizerPass());
  }
  if (failed(pm.run(*module)))
    return fail(inputFile + ": the compilation pipeline failed");

  OpPrintingFlags flags;
  if (!emitWeights)
    flags.elideLargeResourceString(1024);
  if (emit == EmitKind::ShardedMLIR && meshSpec.empty())
    return fail("--emit=sharded-mlir needs --mesh");
  bool wantPlan = emit == EmitKind::Plan ||
                  (emit == EmitKind::MLIR &&
                   StringRef(outputFile).ends_with(".moeplan"));
  if (wantPlan && outputFile == "-")
    return fail("a plan is binary: give -o FILE.moeplan");
  if (emit == EmitKind::PTX && outputFile == "-")
    return fail("--emit=ptx writes FILE.N.ptx files: give -o FILE");
  if ((wantPlan || emit == EmitKind::PTX) && meshSpec.empty())
    meshSpec = "ep=1";
  if (meshSpec.empty()) {
    if (report != ReportKind::None) {
      moec::writeMoEReport(*module, llvm::outs(), report == ReportKind::Json);
      if (outputFile == "-")
        return 0;
    }
    auto out = openOutputFile(outputFile, &err);
    if (!out)
      return fail(err);
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
    if (failed(chooseMesh(*module, memLimit, mesh)))
      return 1;
  } else {
    moec::MeshSpec spec;
    if (!moec::parseMeshSpec(mesh, spec, err))
      return fail("--mesh: " + err);
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
  addShardPasses(shardPm, mesh);
  if (failed(shardPm.run(*module)))
    return fail(inputFile + ": sharding for --mesh " + mesh + " failed");
  std::string annotated;
  if (emit == EmitKind::ShardedMLIR) {
    llvm::raw_string_ostream os(annotated);
    os << "// moec: annotated IR for --mesh " << mesh
       << " (global shapes, expert placement, all-to-alls)\n";
    module->print(os, flags);
  }
  PassManager partPm(&ctx);
  if (failed(applyPassManagerCLOptions(partPm)))
    return fail("bad pass-manager options");
  partPm.addPass(moec::createMoEPartition());
  partPm.addPass(createCanonicalizerPass());
  partPm.addPass(createCSEPass());
  // Dense regions become generated kernels (fused elementwise chains).
  moec::MoEOutlineKernelsOptions outlineOpts;
  outlineOpts.batchMatmulSteps = batchMatmul == "blas";
  partPm.addPass(moec::createMoEOutlineKernels(outlineOpts));
  partPm.addPass(createCanonicalizerPass());
  if (failed(partPm.run(*module)))
    return fail(inputFile + ": partitioning for --mesh " + mesh + " failed");

  moec::ShardReport rep;
  if (memLimit > 0 || report != ReportKind::None)
    rep = moec::computeShardReport(*module);
  if (memLimit > 0) {
    for (const moec::RankMemory &m : rep.ranks)
      if (m.weightBytes + m.activationBytes > memLimit)
        return fail("--mesh " + mesh + ": rank " + std::to_string(m.rank) +
                    " needs " +
                    moec::formatBytes(m.weightBytes + m.activationBytes) +
                    " (weights " + moec::formatBytes(m.weightBytes) +
                    ", activations " + moec::formatBytes(m.activationBytes) +
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
  if (emit == EmitKind::PTX) {
    std::vector<std::string> ptx;
    std::vector<moec::KernelInfo> kernels;
    if (failed(moec::compileKernelsToPTX(*module, cudaChip, ptx, kernels,
                                         err)))
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
    if (failed(moec::buildPlan(*module, inputFile, popts, plan, data)))
      return fail(inputFile + ": cannot lower to a plan for --mesh " + mesh);
    if (!moert::writePlan(outputFile, plan, data, err))
      return fail(err);
    return 0;
  }
  auto out = openOutputFile(outputFile, &err);
  if (!out)
    return fail(err);
  if (emit == EmitKind::ShardedMLIR)
    out->os() << annotated << "\n// -----\n// moec: per-rank program for "
              << "--mesh " << mesh << " (local shapes)\n";
  module->print(out->os(), flags);
  out->keep();
  return 0;
}
