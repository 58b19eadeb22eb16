//===- InitAll.cpp - register moec's dialects and passes ------------------===//

#include "moec/InitAll.h"

#include "moec/Dialect/MoE/MoEDialect.h"
#include "moec/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"

void moec::registerAllDialects(mlir::DialectRegistry &registry) {
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  registry.insert<moec::moe::MoEDialect>();
}

void moec::registerAllPasses() {
  mlir::registerAllPasses();
  moec::registerMoECTransformsPasses();
}
