//===- ImportFuzz.cpp - shared body of the ONNX import fuzz targets -------===//

#include "ImportFuzz.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "moec/Import/OnnxImporter.h"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <unistd.h>

namespace {
/// An empty directory for the model's name: external data resolves there.
const std::string &modelDir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/moec-fuzz-XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("moec-fuzz: mkdtemp");
      std::abort();
    }
    return std::string(tmpl);
  }();
  return dir;
}
} // namespace

void moec_fuzz::importOne(const uint8_t *data, size_t size,
                          const char *extension) {
  mlir::DialectRegistry registry;
  moec::registerImportDialects(registry);
  // No thread pool: one context per input, as moec has one per run.
  mlir::MLIRContext ctx(registry, mlir::MLIRContext::Threading::DISABLED);
  mlir::ScopedDiagnosticHandler quiet(
      &ctx, [](mlir::Diagnostic &) { return mlir::success(); });
  moec::ImportOptions options; // moec's defaults: the ONNX checker runs
  std::string error;
  llvm::StringRef bytes(reinterpret_cast<const char *>(data), size);
  // moec reports an exception that reaches main as an internal error: for
  // the importer that is a finding too, so it is not caught here.
  auto module = moec::importOnnxBuffer(
      ctx, bytes, modelDir() + "/model" + extension, options, error);
  // Failure must explain itself.
  if (!module && error.empty()) {
    std::fprintf(stderr, "moec-fuzz: import failed without an error\n");
    std::abort();
  }
}
