//===- InternalErrors.cpp - verifier failures as moec's own bugs ----------===//
//
// See InternalErrors.h. A test hook, MOEC_TEST_BREAK_IR_AFTER=PASS-ARGUMENT
// (e.g. moe-raise-experts), makes the IR invalid right before that pass
// runs (a tensor.empty without its dynamic size), so that tests can check
// the message a verifier failure after the pass gives.
//
//===----------------------------------------------------------------------===//

#include "moec/Pipelines/InternalErrors.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <cstdlib>

using namespace mlir;
using namespace moec;

PassDiagnostics::PassDiagnostics(DiagnosticPrinter print)
    : print(std::move(print)) {}

LogicalResult PassDiagnostics::handle(Diagnostic &d) {
  StringRef severity = d.getSeverity() == DiagnosticSeverity::Error ? "error"
                       : d.getSeverity() == DiagnosticSeverity::Warning
                           ? "warning"
                           : "note";
  std::string message = d.str();
  std::lock_guard<std::mutex> lock(mutex);
  if (depth > 0)
    held.push_back({d.getLocation(), severity.str(), message});
  else
    print(d.getLocation(), severity, message);
  return success();
}

void PassDiagnostics::runBeforePass(Pass *pass, Operation *op) {
  if (const char *hook = std::getenv("MOEC_TEST_BREAK_IR_AFTER");
      hook && pass->getArgument() == hook) {
    // Test only: an op the verifier rejects (a dynamic tensor.empty
    // without its size).
    op->walk([&](func::FuncOp f) {
      if (f.isExternal())
        return WalkResult::advance();
      OpBuilder b(&f.getBody().front(), f.getBody().front().begin());
      OperationState st(f.getLoc(), tensor::EmptyOp::getOperationName());
      st.addTypes(
          RankedTensorType::get({ShapedType::kDynamic}, b.getF32Type()));
      b.create(st);
      return WalkResult::interrupt();
    });
  }
  std::lock_guard<std::mutex> lock(mutex);
  ++depth;
}

void PassDiagnostics::runAfterPass(Pass *, Operation *) {
  std::lock_guard<std::mutex> lock(mutex);
  if (--depth == 0)
    flush();
}

void PassDiagnostics::runAfterPassFailed(Pass *pass, Operation *op) {
  // Did the IR stop verifying? (Quietly: the pass manager's verifier has
  // reported it already, into `held`.)
  bool invalid;
  {
    ScopedDiagnosticHandler quiet(op->getContext(),
                                  [](Diagnostic &) { return success(); });
    invalid = failed(verify(op));
  }
  std::lock_guard<std::mutex> lock(mutex);
  --depth;
  if (invalid && !pass->getArgument().empty()) {
    for (Held &h : held)
      if (h.severity == "error")
        h.message = "internal error in pass '" + pass->getArgument().str() +
                    "': the IR it left does not verify: " + h.message +
                    " (a bug in moec, not in the model: please report it "
                    "with the model and the command line)";
    flush(); // at the innermost pass: the adaptors around it find none
    return;
  }
  if (depth == 0)
    flush();
}

void PassDiagnostics::flush() {
  for (Held &h : held)
    print(h.where, h.severity, h.message);
  held.clear();
}

void moec::addPassDiagnostics(PassManager &pm, PassDiagnostics &diags) {
  // The instrumentation is owned by the pass manager; it forwards to
  // `diags`, which the tool keeps (it also holds the context's handler).
  struct Forward : PassInstrumentation {
    PassDiagnostics &d;
    explicit Forward(PassDiagnostics &d) : d(d) {}
    void runBeforePass(Pass *p, Operation *op) override {
      d.runBeforePass(p, op);
    }
    void runAfterPass(Pass *p, Operation *op) override {
      d.runAfterPass(p, op);
    }
    void runAfterPassFailed(Pass *p, Operation *op) override {
      d.runAfterPassFailed(p, op);
    }
  };
  pm.addInstrumentation(std::make_unique<Forward>(diags));
}

std::string moec::describeLocation(Location loc) {
  if (auto name = dyn_cast<NameLoc>(loc))
    if (auto file = dyn_cast<FileLineColLoc>(name.getChildLoc()))
      return file.getFilename().str() + ": node '" + name.getName().str() + "'";
  if (auto file = dyn_cast<FileLineColLoc>(loc))
    return file.getFilename().str();
  std::string s;
  llvm::raw_string_ostream os(s);
  os << loc;
  return s;
}
