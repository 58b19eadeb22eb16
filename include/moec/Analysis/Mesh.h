//===- Mesh.h - device mesh specs -------------------------------*- C++ -*-===//
//
// The device mesh a model is compiled for (`--mesh dp=2,ep=4,tp=2`) and
// its upstream `shard.grid`. Shared by the sharding passes, the report and
// the plan writer; the token split over dp x ep is in TokenDims.h.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_ANALYSIS_MESH_H
#define MOEC_ANALYSIS_MESH_H

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/SmallVector.h"

#include <string>

namespace moec {

/// A device mesh: named axes in grid order. moec orders them dp, ep, tp
/// (tensor parallelism innermost so that a TP group is consecutive ranks on
/// one node, data parallelism outermost, across nodes). `ep` is always
/// present (size 1 when not given).
struct MeshSpec {
  llvm::SmallVector<std::pair<std::string, int64_t>> axes;

  /// Size of the named axis, 1 when absent.
  int64_t size(llvm::StringRef name) const;
  /// Grid axis index of the named axis, -1 when absent.
  int64_t index(llvm::StringRef name) const;
  int64_t worldSize() const;
  /// The coordinates of `rank` along the axes (row-major numbering).
  llvm::SmallVector<int64_t> coords(int64_t rank) const;
  /// Ranks that split the tokens: dp x ep.
  int64_t tokenSplit() const { return size("dp") * size("ep"); }
  /// "dp=2,ep=4,tp=2".
  std::string str() const;
};

/// Parses "dp=2,ep=4,tp=2" (any subset, any order, each axis once, sizes >=
/// 1). On failure `error` says what is wrong with which part.
bool parseMeshSpec(llvm::StringRef spec, MeshSpec &out, std::string &error);

/// The ONNX node name of an op's location ("" when it has none), for
/// reports and plans.
std::string nodeName(mlir::Location loc);

/// The name of the grid the sharding passes create.
constexpr llvm::StringLiteral kGridName = "mesh";

/// The `@mesh` shard.grid of `module`, or null.
mlir::shard::GridOp getMeshGrid(mlir::ModuleOp module);
/// The spec recorded on a grid made by moe-shard (axis names in `moe.axes`).
MeshSpec meshSpecOf(mlir::shard::GridOp grid);

} // namespace moec

#endif // MOEC_ANALYSIS_MESH_H
