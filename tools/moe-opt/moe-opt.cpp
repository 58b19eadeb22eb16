//===- moe-opt.cpp - moec's pass driver -----------------------------------===//
//
// Like mlir-opt, with the `moe` dialect and moec's passes registered. For
// tests and debugging: `moe-opt in.mlir --some-pass | FileCheck`.
//
//===----------------------------------------------------------------------===//

#include "moec/InitAll.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  moec::registerAllPasses();
  mlir::DialectRegistry registry;
  moec::registerAllDialects(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "moec pass driver\n", registry));
}
