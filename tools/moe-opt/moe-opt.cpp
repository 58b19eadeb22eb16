//===- moe-opt.cpp - moec's pass driver -----------------------------------===//
//
// Like mlir-opt, with the `moe` dialect and moec's passes registered. For
// tests and debugging: `moe-opt in.mlir --some-pass | FileCheck`, and
// `moe-opt in.mlir --moe-compile-pipeline="mesh=ep=4"` for what moec runs.
//
//===----------------------------------------------------------------------===//

#include "moec/InitAll.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  // --help: what MlirOptMain registers (passes, pipelines, its flags), not
  // libLLVM's options, which are registered by now.
  moec::hideLibraryOptions({});
  moec::registerAllPasses();
  mlir::DialectRegistry registry;
  moec::registerAllDialects(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "moec pass driver\n", registry));
}
