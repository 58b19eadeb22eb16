//===- InitAll.h - register moec's dialects and passes ----------*- C++ -*-===//
//
// One place that registers everything moec's tools know: the `moe` dialect,
// the upstream dialects the compiler produces or consumes, their interface
// models (sharding, bufferization, ...), moec's passes and pipelines; and the
// tools' shared --help policy.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_INITALL_H
#define MOEC_INITALL_H

#include "llvm/ADT/ArrayRef.h"

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace llvm::cl {
class OptionCategory;
} // namespace llvm::cl

namespace moec {

/// Adds every dialect and extension moec uses (upstream ones included).
void registerAllDialects(mlir::DialectRegistry &registry);

/// Registers moec's passes and pipelines (moe-compile-pipeline) and the
/// upstream passes, for the pass-manager command-line options of `moec` and
/// `moe-opt`.
void registerAllPasses();

/// Hides from --help (cl::Hidden: --help-hidden still lists them) every
/// command-line option registered so far that is in none of `keep` nor in
/// LLVM's generic category (--help, --version). Linking libLLVM.so
/// registers some 400 backend and optimizer options (AMDGPU, ARM, Polly,
/// ...) at static initialisation, which no moec tool reads. Call it first
/// in main: the options MLIR registers on demand afterwards (pass manager,
/// printing, context, the tool's main) stay visible.
void hideLibraryOptions(llvm::ArrayRef<const llvm::cl::OptionCategory *> keep);

} // namespace moec

#endif // MOEC_INITALL_H
