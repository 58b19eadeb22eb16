//===- InitAll.cpp - register moec's dialects and passes ------------------===//

#include "moec/InitAll.h"

#include "moec/Dialect/MoE/MoEDialect.h"
#include "moec/Pipelines/Pipelines.h"
#include "moec/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/CommandLine.h"

void moec::registerAllDialects(mlir::DialectRegistry &registry) {
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  registry.insert<moec::moe::MoEDialect>();
}

void moec::registerAllPasses() {
  mlir::registerAllPasses();
  moec::registerMoECTransformsPasses();
  moec::registerMoecPipelines();
}

void moec::hideLibraryOptions(
    llvm::ArrayRef<const llvm::cl::OptionCategory *> keep) {
  namespace cl = llvm::cl;
  for (auto &entry : cl::getRegisteredOptions()) {
    cl::Option *opt = entry.second;
    // Leave cl::ReallyHidden options out of --help-hidden as they were.
    if (opt->getOptionHiddenFlag() != cl::NotHidden)
      continue;
    // LLVM's generic category has no accessor; it is the one of --help.
    bool kept = llvm::any_of(opt->Categories, [&](cl::OptionCategory *cat) {
      return llvm::is_contained(keep, cat) ||
             cat->getName() == "Generic Options";
    });
    if (!kept)
      opt->setHiddenFlag(cl::Hidden);
  }
}
