//===- ShapeHelpers.h - shared by the shape op handlers ---------*- C++ -*-===//
//-*-===//
//
// Internal to lib/Import. What the handlers of the shape and data-movement
// ops share (ImportShape.cpp, ImportReshape.cpp, ImportSlice.cpp,
// ImportGather.cpp, ImportExpand.cpp): shapes, host-side folding, axes,
// constant int inputs, index values, runtime reshapes.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_LIB_IMPORT_SHAPEHELPERS_H
#define MOEC_LIB_IMPORT_SHAPEHELPERS_H

#include "GraphImporter.h"

#include "llvm/ADT/SmallVector.h"

#include <optional>
#include <vector>

namespace moec::onnximport {

using Shape = llvm::SmallVector<int64_t>;

bool isDyn(int64_t d);

/// Row-major strides of a shape.
Shape strides(llvm::ArrayRef<int64_t> shape);

/// Builds a host tensor of `shape` whose element at each position is the
/// element `src(position)` of `in` (a flat index).
HostTensor hostGather(const HostTensor &in, llvm::ArrayRef<int64_t> shape,
                      llvm::function_ref<int64_t(llvm::ArrayRef<int64_t>)> src);

mlir::FailureOr<int64_t> normAxis(GraphImporter &gi, int64_t axis,
                                  int64_t rank);

/// The int64 values of a known input, or failure with a message.
mlir::FailureOr<std::vector<int64_t>> constInts(GraphImporter &gi, unsigned i,
                                                llvm::StringRef what);

/// Int list given as input `i` (opset 13+) or, in older form, as attribute
/// `name`; empty when neither is there.
mlir::FailureOr<std::vector<int64_t>>
intsFromInputOrAttr(GraphImporter &gi, unsigned i, llvm::StringRef name);

mlir::Value toIndex(GraphImporter &gi, mlir::Value i64);

/// Reshapes a runtime tensor to `shape`, whose entries may be dynamic; the
/// dynamic ones take the sizes in `dyn` (index values). Rank-changing
/// reshapes that only merge or split adjacent dims become
/// tensor.collapse_shape / tensor.expand_shape; others tensor.reshape.
mlir::Value reshapeTo(GraphImporter &gi, mlir::Value v,
                      llvm::ArrayRef<int64_t> shape, mlir::ValueRange dyn);

/// Product of dims [from, to) of `v` as an index value.
mlir::Value dimProduct(GraphImporter &gi, mlir::Value v, int64_t from,
                       int64_t to);

/// Element `k` of a 1-D (or scalar) integer tensor built at run time, looked
/// up through its producers: a constant when they show one, else an i64
/// value (tensor.extract when nothing simpler is visible).
struct Entry {
  std::optional<int64_t> c;
  mlir::Value v;
};

Entry elementAt(GraphImporter &gi, mlir::Value t, int64_t k);

} // namespace moec::onnximport

#endif // MOEC_LIB_IMPORT_SHAPEHELPERS_H
