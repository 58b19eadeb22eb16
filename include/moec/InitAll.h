//===- InitAll.h - register moec's dialects and passes ----------*- C++ -*-===//
//
// One place that registers everything moec's tools know: the `moe` dialect,
// the upstream dialects the compiler produces or consumes, their interface
// models (sharding, bufferization, ...), and moec's passes.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_INITALL_H
#define MOEC_INITALL_H

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace moec {

/// Adds every dialect and extension moec uses (upstream ones included).
void registerAllDialects(mlir::DialectRegistry &registry);

/// Registers moec's passes and the upstream passes, for the pass-manager
/// command-line options of `moec` and `moe-opt`.
void registerAllPasses();

} // namespace moec

#endif // MOEC_INITALL_H
