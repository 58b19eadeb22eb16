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

/// The attention/dense folding of the ranks (`--attention-mesh dp=2,tp=4`,
/// Megatron-Core's "MoE parallel folding"): attention and the dense layers
/// data-parallel over `dp` (whole sequences) and tensor-parallel over `tp`,
/// while the MoE layers use the `--mesh` axes of the same ranks.
struct AttentionMesh {
  int64_t dp = 1, tp = 1;
  std::string str() const;
};

/// Parses "dp=2,tp=4" (either axis, each once, sizes >= 1).
bool parseAttentionMesh(llvm::StringRef spec, AttentionMesh &out,
                        std::string &error);

/// What each grid axis is for: the grid indices of the MoE mesh's dp
/// (expert replicas), ep and tp (expert tensor parallelism) axes and, on a
/// folded grid, of the attention's dp and tp axes. Each logical axis is a
/// list of grid axes whose group-local index is row-major over them.
struct MeshRoles {
  llvm::SmallVector<int16_t> dp, ep, tp;
  llvm::SmallVector<int16_t> attnDp, attnTp;
  bool folded = false;
};

/// The grid of a folding: the coarsest axes that both the MoE mesh (dp, ep,
/// tp, ranks row-major) and the attention mesh (dp, tp) are made of (an
/// ep=8 MoE with attention dp=2,tp=4 gives axes ep0=2, ep1=4). Fails, with
/// `error` naming both flags, when the rank counts differ, the two do not
/// nest (a group of one is not a union of whole groups or rows of the
/// other), or attention dp would split tokens over the MoE's tp ranks.
bool foldMesh(const MeshSpec &moeMesh, const AttentionMesh &attn,
              MeshSpec &grid, MeshRoles &roles, std::string &error);

/// Product of the sizes of grid `axes`.
int64_t axesSize(const MeshSpec &spec, llvm::ArrayRef<int16_t> axes);
/// The group-local index of the rank with `coords` along `axes` (row-major
/// over them, in the order given; moert::meshGroup's numbering).
int64_t groupIndex(const MeshSpec &spec, llvm::ArrayRef<int64_t> coords,
                   llvm::ArrayRef<int16_t> axes);

/// The ONNX node name of an op's location ("" when it has none), for
/// reports and plans.
std::string nodeName(mlir::Location loc);

/// The name of the grid the sharding passes create.
constexpr llvm::StringLiteral kGridName = "mesh";
/// Marks the collectives moe-partition inserts for tensor-parallel dense
/// layers (the report counts them apart from the MoE layers').
constexpr llvm::StringLiteral kTensorParallelAttr = "moe.tensor_parallel";
/// Marks the collectives of Megatron sequence parallelism (the rows region
/// moe-partition runs on this rank's block of the rows: reduce-scatters,
/// the all-gathers before attention and the LM head).
constexpr llvm::StringLiteral kSequenceParallelAttr = "moe.sequence_parallel";

/// The `@mesh` shard.grid of `module`, or null.
mlir::shard::GridOp getMeshGrid(mlir::ModuleOp module);
/// The spec recorded on a grid made by moe-shard (axis names in `moe.axes`).
MeshSpec meshSpecOf(mlir::shard::GridOp grid);
/// The roles of `grid`'s axes: recorded by moe-shard for a folded grid
/// (`moe.roles`), else the axes named dp, ep and tp.
MeshRoles meshRolesOf(mlir::shard::GridOp grid);
/// Records `roles` on `grid` (`moe.roles`, only when folded).
void setMeshRoles(mlir::shard::GridOp grid, const MeshRoles &roles);
/// The axes each MoE layer's rows are sliced over inside the model's token
/// blocks (hybrid and folded grids): the MoE's dp and ep axes that do not
/// split the whole model's tokens.
llvm::SmallVector<int16_t> moeSliceAxes(mlir::shard::GridOp grid);
/// The axes attention and the dense layers are tensor-parallel over: the
/// attention's tp on a folded grid, else the tp axis (empty when 1).
llvm::SmallVector<int16_t> denseTpAxes(mlir::shard::GridOp grid);
/// "attention dp=2,tp=4 / MoE ep=8" for messages and reports, or the mesh
/// spec when not folded.
std::string foldingString(mlir::shard::GridOp grid);

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
