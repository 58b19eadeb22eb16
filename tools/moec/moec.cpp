//===- moec.cpp - the moec compiler driver --------------------------------===//
//
// moec MODEL.onnx [--input-shape NAME=D0,D1,...] --emit=mlir [-o FILE]
//
// Imports an ONNX MoE model and runs moec's pipeline on it. Accepts the
// standard MLIR pass-manager flags (--mlir-print-ir-after-all, ...).
//
//===----------------------------------------------------------------------===//

#include "moec/Import/OnnxImporter.h"
#include "moec/InitAll.h"
#include "moec/Transforms/Passes.h"
#include "moec/Transforms/Report.h"

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
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
namespace cl = llvm::cl;

namespace {
enum class EmitKind { MLIR };

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
                          "the imported IR (linalg/tensor/arith/math and moe "
                          "ops) after moec's pipeline")),
    cl::cat(moecCat));
cl::opt<bool> strict(
    "strict",
    cl::desc("Fail when a region that looks like an MoE layer cannot be "
             "raised (default: warn and keep it as dense ops)"),
    cl::init(false), cl::cat(moecCat));
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
  std::string s;
  llvm::raw_string_ostream os(s);
  os << loc;
  return s;
}

int fail(const llvm::Twine &msg) {
  llvm::errs() << "moec: error: " << msg << "\n";
  return 1;
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
  if (failed(pm.run(*module)))
    return fail(inputFile + ": the compilation pipeline failed");

  if (report != ReportKind::None) {
    moec::writeMoEReport(*module, llvm::outs(), report == ReportKind::Json);
    if (outputFile == "-")
      return 0;
  }
  auto out = openOutputFile(outputFile, &err);
  if (!out)
    return fail(err);
  OpPrintingFlags flags;
  if (!emitWeights)
    flags.elideLargeResourceString(1024);
  module->print(out->os(), flags);
  out->keep();
  return 0;
}
