//===- Mesh.h - device mesh specs and the token split -----------*- C++ -*-===//
//
// The device mesh a model is compiled for (`--mesh dp=2,ep=4,tp=2`), its
// upstream `shard.grid`, and the analysis that finds which dimensions of
// every tensor carry tokens (split over dp x ep). Shared by the sharding
// passes, the report and the plan writer.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_TRANSFORMS_MESH_H
#define MOEC_TRANSFORMS_MESH_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseMap.h"
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

/// The dims of a tensor that the token split cuts: `count` consecutive dims
/// from `start`, split as one merged dim (contiguous blocks of rows). Only
/// the leading token dims the split needs are kept: with tokens [B, S] split
/// n ways and n dividing B, that is B alone (whole sequences per rank), so
/// ops may move S or reduce over it (attention).
struct TokenDims {
  int64_t start = 0;
  int64_t count = 1;
  bool operator==(const TokenDims &o) const {
    return start == o.start && count == o.count;
  }
  bool operator!=(const TokenDims &o) const { return !(*this == o); }
};

/// Finds the token dims of every value of `func` that carries tokens, for
/// a split of the tokens `n` ways, starting from the MoE ops and following
/// the dense ops both ways. Emits an error naming the op and returns
/// failure when an op cannot be split along tokens (a reduction over the
/// split dims, a constant with a token dim, an op moec does not know how to
/// split). First gives every use of a tensor.empty (or of a constant fill
/// of one) its own op, so that values sharing a CSE'd init are not tied.
mlir::FailureOr<llvm::DenseMap<mlir::Value, TokenDims>>
analyzeTokenDims(mlir::func::FuncOp func, int64_t n);

/// True when every block of `c` along `dims` (for each index of the
/// leading dims) holds the same bytes: such a constant is the same on every
/// rank after the token split.
bool isUniformAlong(mlir::arith::ConstantOp c, TokenDims dims);

/// The local shape of `shape` when its token dims are split `n` ways into
/// contiguous blocks of rows. Fails (with `why`) when a block is not a box
/// or a token dim is dynamic.
mlir::FailureOr<llvm::SmallVector<int64_t>>
localShape(llvm::ArrayRef<int64_t> shape, TokenDims dims, int64_t n,
           std::string &why);

} // namespace moec

#endif // MOEC_TRANSFORMS_MESH_H
