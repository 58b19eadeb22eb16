//===- InternalErrors.h - verifier failures as moec's own bugs ---*- C++
//-*-===//
//
// A pass that leaves IR the MLIR verifier rejects is a bug in moec, not in
// the user's model. PassDiagnostics holds back what a pass reports until it
// ends; when the pass failed and its IR no longer verifies, the messages
// are printed as one "internal error in pass 'P' at <node>: ..." with a
// hint to report it, instead of the verifier's messages alone (which read
// as if the model were wrong).
//
//===----------------------------------------------------------------------===//
#ifndef MOEC_PIPELINES_INTERNALERRORS_H
#define MOEC_PIPELINES_INTERNALERRORS_H

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassInstrumentation.h"

#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace mlir {
class PassManager;
} // namespace mlir

namespace moec {

/// Prints one diagnostic line: `severity` is "error", "warning" or "note";
/// `where` the location as the tool describes it.
using DiagnosticPrinter = std::function<void(
    mlir::Location where, llvm::StringRef severity, llvm::StringRef message)>;

class PassDiagnostics : public mlir::PassInstrumentation {
public:
  explicit PassDiagnostics(DiagnosticPrinter print);

  /// The context's diagnostic handler: buffers while a pass runs, prints
  /// otherwise.
  mlir::LogicalResult handle(mlir::Diagnostic &d);

  void runBeforePass(mlir::Pass *pass, mlir::Operation *op) override;
  void runAfterPass(mlir::Pass *pass, mlir::Operation *op) override;
  void runAfterPassFailed(mlir::Pass *pass, mlir::Operation *op) override;

private:
  struct Held {
    mlir::Location where;
    std::string severity, message;
  };
  void flush();

  DiagnosticPrinter print;
  std::mutex mutex;
  int depth = 0;
  std::vector<Held> held;
};

/// Adds `diags` to `pm` (which keeps verifying after every pass).
void addPassDiagnostics(mlir::PassManager &pm, PassDiagnostics &diags);

/// "FILE: node 'NAME'" for the importer's node locations (what moec's
/// diagnostics name), else the location as MLIR prints it.
std::string describeLocation(mlir::Location loc);

} // namespace moec

#endif // MOEC_PIPELINES_INTERNALERRORS_H
