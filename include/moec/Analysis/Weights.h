//===- Weights.h - weights that are never held whole ------------*- C++ -*-===//
//
// A model's weights can be far larger than memory (DeepSeek-V3: 1.3 TB in
// bf16). moec never decodes them into memory:
//  * the importer maps each external-data initializer read-only from its
//    file (`mapFileBlob`): a `dense_resource` blob whose bytes are the
//    file's pages, read when touched;
//  * passes that restack, transpose, slice columns or narrow weights make a
//    *lazy* constant instead (`makeLazyConstant`): a `dense_resource`
//    handle without a blob plus a recipe over the source blobs, kept in a
//    side table of this library; printed IR names it like any weight;
//  * the plan writer reads any constant in windows (`readConstant`), so
//    each rank's slice streams from the model's files to the plan, and
//    drops the mapped pages it has read (`releaseMappedPages`).
// `constantBytes` (ConstantBytes.h) still realizes a whole constant where a
// pass needs every value (small tensors: routers, biases, shapes).
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_ANALYSIS_WEIGHTS_H
#define MOEC_ANALYSIS_WEIGHTS_H

#include "mlir/Dialect/Arith/IR/Arith.h"

#include <optional>
#include <string>
#include <vector>

namespace moec {

/// `size` bytes at `offset` of the file at `path`, mapped read-only into a
/// `dense_resource` blob of element size `eltBytes`. std::nullopt (and
/// `error` empty) when the bytes would be misaligned for their type or are
/// empty: the caller copies them instead; `error` set on an I/O failure.
std::optional<mlir::AsmResourceBlob> mapFileBlob(llvm::StringRef path,
                                                 uint64_t offset, uint64_t size,
                                                 unsigned eltBytes,
                                                 std::string &error);

/// Drops the pages of every mapped weight file from this process's memory
/// (they are clean file pages: reading them again faults them back in).
/// The plan writer calls it after each rank's slice of a weight.
void releaseMappedPages();
/// Bytes of weight files mapped now.
uint64_t mappedWeightBytes();

/// A lazy weight: `parts` matrices, each a (possibly transposed,
/// column-restricted) view of a source matrix, stacked along a new leading
/// dim (`stacked`) or, for one part, the whole tensor; optionally narrowed
/// from f32 to bf16 or f16.
struct LazyWeight {
  struct Part {
    llvm::ArrayRef<char> src; ///< the [rows, cols] source matrix, row major
    int64_t rows = 0, cols = 0;
    bool transposed = false; ///< the part is src^T ([cols, rows])
    int64_t colBegin = 0;    ///< columns [colBegin, colEnd) of the part,
    int64_t colEnd = -1;     ///< every colStep-th (-1: all)
    int64_t colStep = 1;
    int64_t outRows() const { return transposed ? cols : rows; }
    int64_t outCols() const {
      int64_t end = colEnd < 0 ? (transposed ? rows : cols) : colEnd;
      return (end - colBegin + colStep - 1) / colStep;
    }
  };
  std::vector<Part> parts;
  unsigned srcEltBytes = 4;
  /// 0: the source type; 1: f32 -> bf16; 2: f32 -> f16.
  int narrow = 0;
  unsigned outEltBytes() const { return narrow ? 2 : srcEltBytes; }
  uint64_t partBytes(size_t k) const {
    return uint64_t(parts[k].outRows()) * parts[k].outCols() * outEltBytes();
  }
};

/// Weights of at least this many bytes that a pass restacks, transposes or
/// narrows become lazy constants; smaller ones new blobs (printed in full
/// with `moec --emit-weights`). Default 16 MiB; `moec --lazy-weights-above`.
uint64_t lazyWeightThreshold();
void setLazyWeightThreshold(uint64_t bytes);

/// An arith.constant of `type` whose bytes are `w` (row major), computed
/// when read. The sources must outlive the context (blobs in it do).
mlir::Value makeLazyConstant(mlir::OpBuilder &b, mlir::Location loc,
                             mlir::RankedTensorType type, LazyWeight w,
                             llvm::StringRef name);
/// The recipe of a lazy constant, or null.
const LazyWeight *lazyWeightOf(mlir::Attribute a);

/// Replaces every lazy constant under `root` by a blob of its bytes (for
/// printing IR that parses back: `moec --emit-weights`).
mlir::LogicalResult materializeLazyWeights(mlir::Operation *root);

/// A view of a constant's bytes (row major) when they are in memory or
/// mapped (a dense_resource blob); std::nullopt for lazy or `dense`
/// attributes (read those with readConstant or constantBytes).
std::optional<llvm::ArrayRef<char>> constantView(mlir::Attribute a);

/// Copies bytes [offset, offset + size) of a constant's row-major contents
/// (dense, dense_resource or lazy) to `dst`; failure when its data is not
/// readable or the range is outside it.
mlir::LogicalResult readConstant(mlir::Attribute a, uint64_t offset,
                                 uint64_t size, char *dst);

/// A weight that is only as big as a view of an existing blob, narrowed to
/// 16 bits when read: `narrow` 1 (bf16) or 2 (f16) of the f32 constant
/// `a`. Failure when `a` is not an f32 constant this can read.
mlir::FailureOr<LazyWeight> narrowedLazy(mlir::Attribute a, int narrow);

} // namespace moec

#endif // MOEC_ANALYSIS_WEIGHTS_H
