//===- moe-translate.cpp - moec's translation driver ----------------------===//
//
// moe-translate --moe-to-plan IN.mlir -o OUT.moeplan
//               [--moe-plan-cuda-chip=sm_90]
//
// Like mlir-translate, with moec's translations: `--moe-to-plan` writes the
// .moeplan of a per-rank program (the output of moe-partition and
// moe-outline-kernels, e.g. `moec --mesh ep=2 --emit-weights` or
// `moe-opt --moe-compile-pipeline="mesh=ep=2"`). It calls the plan writer
// moec calls (moec::buildPlan), so the plan of a printed and re-parsed module
// is the plan moec writes, and the plan writer can be tested on hand-written
// IR.
//
//===----------------------------------------------------------------------===//

#include "moec/Conversion/ToPlan.h"
#include "moec/InitAll.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-translate/MlirTranslateMain.h"
#include "mlir/Tools/mlir-translate/Translation.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
namespace cl = llvm::cl;

namespace {
cl::OptionCategory translateCat("moe-translate options");

cl::opt<std::string>
    cudaChip("moe-plan-cuda-chip",
             cl::desc("--moe-to-plan: also compile the generated kernels to "
                      "PTX for this GPU architecture (moec --target=cuda "
                      "--cuda-chip); default: CPU code only"),
             cl::value_desc("sm_NN"), cl::cat(translateCat));

/// The input file the module was parsed from, recorded as the plan's source
/// (moec records the ONNX model there).
std::string sourceName(ModuleOp module) {
  if (auto file = dyn_cast<FileLineColLoc>(module.getLoc()))
    return file.getFilename().str();
  return "<unknown>";
}

/// The plan writer writes a file (moert::writePlan takes a path: it fills
/// in segment offsets as it goes); a translation writes to a stream. Write
/// to a temporary file and copy it, rather than change the plan writer.
LogicalResult writePlanTo(ModuleOp module, llvm::raw_ostream &os) {
  moec::PlanOptions options;
  options.cudaChip = cudaChip;
  moert::Plan plan;
  moert::PlanData data;
  if (failed(moec::buildPlan(module, sourceName(module), options, plan, data)))
    return failure(); // buildPlan has emitted the error on the op
  llvm::SmallString<128> tmp;
  if (std::error_code ec =
          llvm::sys::fs::createTemporaryFile("moe-translate", "moeplan", tmp))
    return emitError(module.getLoc())
           << "cannot create a temporary plan file: " << ec.message();
  llvm::FileRemover removeTmp(tmp);
  std::string err;
  if (!moert::writePlan(tmp.str().str(), plan, data, err))
    return emitError(module.getLoc()) << err;
  auto buffer = llvm::MemoryBuffer::getFile(tmp, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return emitError(module.getLoc())
           << "cannot read back the plan: " << buffer.getError().message();
  os << (*buffer)->getBuffer();
  return success();
}
} // namespace

int main(int argc, char **argv) {
  // --help: --moe-plan-cuda-chip and what mlirTranslateMain registers
  // (translations, its flags), not libLLVM's options, registered by now.
  moec::hideLibraryOptions({&translateCat});
  // The kernel code generation behind the plan writer parses its lowering
  // pipeline by pass name, as moec's does.
  moec::registerAllPasses();
  TranslateFromMLIRRegistration toPlan(
      "moe-to-plan",
      "the .moeplan of a per-rank program (moe-partition, "
      "moe-outline-kernels), for moe-run",
      [](ModuleOp module, llvm::raw_ostream &os) {
        return writePlanTo(module, os);
      },
      [](DialectRegistry &registry) { moec::registerAllDialects(registry); });
  return failed(mlirTranslateMain(argc, argv, "moec translation driver\n"));
}
