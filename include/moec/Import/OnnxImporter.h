//===- OnnxImporter.h - ONNX to MLIR importer -------------------*- C++ -*-===//
//
// Imports an ONNX model (binary protobuf or ONNX text format) into a
// `func.func @main` of linalg/tensor/arith/math and `moe` ops on ranked
// tensors.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_IMPORT_ONNXIMPORTER_H
#define MOEC_IMPORT_ONNXIMPORTER_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mlir {
class DialectRegistry;
class MLIRContext;
} // namespace mlir

namespace moec {

struct ImportOptions {
  /// Fixed shapes for graph inputs (`--input-shape name=d0,d1,...`). They
  /// replace symbolic dims and must agree with the model's static dims.
  std::vector<std::pair<std::string, std::vector<int64_t>>> inputShapes;
  /// Run the ONNX checker before importing.
  bool runChecker = true;
  /// Initializers with more elements than this become dense_resource blobs;
  /// smaller ones are printed inline.
  int64_t inlineConstantLimit = 16;
  /// Quantized weights (com.microsoft.MatMulNBits, QMoE) stay packed
  /// (moe.dequantize, expanded by the plan's steps); false: dequantized
  /// here into float constants (`moec --packed-weights=expand`).
  bool keepPackedWeights = true;
  /// MatMulNBits nodes with accuracy_level 4 and integer (or default) zero
  /// points quantize A to int8 per block, as onnxruntime's CPU kernels do;
  /// false: A stays exact (`moec --int8-activations=off`).
  bool int8Activations = true;
};

/// A dim of `--input-shape` that follows the dynamic token count N:
/// `?` (a=1, b=0), `?+B`, `A*?` or `A*?+B` (docs/design/dynamic-tokens.md).
struct SymbolicInputDim {
  std::string input;
  int dim = 0;
  int64_t a = 1, b = 0;
};

/// Parses `--input-shape` text `name=d0,d1,...` (several separated by ';' or
/// given as separate strings). Returns false and sets `error` on bad text.
/// With `symbolic`, a dim may be `?`, `?+B`, `A*?` or `A*?+B`: it is
/// appended there and left -1 in `out` (substituteTokens fills it in);
/// without, such a dim is an error.
bool parseInputShape(
    llvm::StringRef text,
    std::vector<std::pair<std::string, std::vector<int64_t>>> &out,
    std::string &error, std::vector<SymbolicInputDim> *symbolic = nullptr);

/// Sets every dim of `shapes` that `symbolic` lists to a*tokens+b.
void substituteTokens(
    std::vector<std::pair<std::string, std::vector<int64_t>>> &shapes,
    const std::vector<SymbolicInputDim> &symbolic, int64_t tokens);

/// Imports the model at `path` (`.onnx` binary, `.onnxtxt` text). On failure
/// returns null and sets `error` to a message that names the file, the node,
/// its op type and the reason.
mlir::OwningOpRef<mlir::ModuleOp> importOnnxFile(mlir::MLIRContext &context,
                                                 llvm::StringRef path,
                                                 const ImportOptions &options,
                                                 std::string &error);

/// Imports a model held in memory (`bytes`, read during the call only).
/// `name` stands for its path: it names the model in errors, its extension
/// picks the format as for importOnnxFile, and external data is looked for
/// next to it. The fuzz targets (fuzz/) import through it.
mlir::OwningOpRef<mlir::ModuleOp> importOnnxBuffer(mlir::MLIRContext &context,
                                                   llvm::StringRef bytes,
                                                   llvm::StringRef name,
                                                   const ImportOptions &options,
                                                   std::string &error);

/// Registers the dialects the importer creates ops of.
void registerImportDialects(mlir::DialectRegistry &registry);

} // namespace moec

#endif // MOEC_IMPORT_ONNXIMPORTER_H
