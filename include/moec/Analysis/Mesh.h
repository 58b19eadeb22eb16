//===- Mesh.h - device mesh specs -------------------------------*- C++ -*-===//
//
// The device mesh a model is compiled for (`--mesh dp=2,ep=4,tp=2`) and
// its upstream `shard.grid`. Shared by the sharding passes, the report and
// the plan writer; the token split over dp x ep is in TokenDims.h.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_ANALYSIS_MESH_H
#define MOEC_ANALYSIS_MESH_H

#include "moert/Mesh.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/SmallVector.h"

#include <string>

namespace moec {

/// A device mesh: named axes in grid order (dp, ep, tp; `ep` always
/// present). The syntax, the axis order and the rank <-> coordinate maths
/// are the runtime's (moert/Mesh.h), shared with the plan.
struct MeshSpec {
  moert::MeshAxes axes;

  /// Size of the named axis, 1 when absent.
  int64_t size(llvm::StringRef name) const {
    return moert::meshAxisSize(axes, name.str());
  }
  /// Grid axis index of the named axis, -1 when absent.
  int64_t index(llvm::StringRef name) const {
    return moert::meshAxisIndex(axes, name.str());
  }
  int64_t worldSize() const { return moert::meshWorldSize(axes); }
  /// The coordinates of `rank` along the axes (row-major numbering).
  llvm::SmallVector<int64_t> coords(int64_t rank) const {
    std::vector<int64_t> c = moert::meshCoords(axes, rank);
    return llvm::SmallVector<int64_t>(c.begin(), c.end());
  }
  /// Ranks that split the tokens: dp x ep.
  int64_t tokenSplit() const { return size("dp") * size("ep"); }
  /// "dp=2,ep=4,tp=2".
  std::string str() const { return moert::meshString(axes); }
};

/// Parses "dp=2,ep=4,tp=2" (moert::parseMesh). On failure `error` says what
/// is wrong with which part.
inline bool parseMeshSpec(llvm::StringRef spec, MeshSpec &out,
                          std::string &error) {
  return moert::parseMesh(spec.str(), out.axes, error);
}

/// The ONNX node name of an op's location ("" when it has none), for
/// reports and plans.
std::string nodeName(mlir::Location loc);

/// The name of the grid the sharding passes create.
constexpr llvm::StringLiteral kGridName = "mesh";
/// Marks the collectives moe-partition inserts for tensor-parallel dense
/// layers (the report counts them apart from the MoE layers').
constexpr llvm::StringLiteral kTensorParallelAttr = "moe.tensor_parallel";

/// The `@mesh` shard.grid of `module`, or null.
mlir::shard::GridOp getMeshGrid(mlir::ModuleOp module);
/// The spec recorded on a grid made by moe-shard (axis names in `moe.axes`).
MeshSpec meshSpecOf(mlir::shard::GridOp grid);
/// True when moe-shard chose sequence-parallel MoE layers on `grid`
/// (`moe.token_split_mode = "moe"`): the dense part is replicated over dp x
/// ep, and each MoE layer works on this rank's slice of the rows.
bool isTokenSliced(mlir::shard::GridOp grid);
/// True for `moe.token_split_mode = "hybrid"`: whole sequences split over
/// dp (the whole model on the dp group's tokens), and each MoE layer's rows
/// sliced over ep within it.
bool isTokenHybrid(mlir::shard::GridOp grid);
/// The mesh axes (grid indices) the whole model's tokens are split over:
/// dp and ep, dp alone (hybrid), or none (sequence-parallel MoE).
llvm::SmallVector<int16_t> modelTokenAxes(mlir::shard::GridOp grid);
/// The product of their sizes: the ways the model inputs are split.
int64_t modelTokenSplit(mlir::shard::GridOp grid);

} // namespace moec

#endif // MOEC_ANALYSIS_MESH_H
