//===- Mesh.h - the device mesh and its coordinates -------------*- C++ -*-===//
//
// The one definition of the device mesh that compiler and runtime share:
// the `--mesh dp=2,ep=4,tp=2` syntax, the canonical axis order, and how a
// rank maps to coordinates and to the groups of a collective. The compiler
// (moec::MeshSpec, lib/Analysis/Mesh.h) and the plan (Plan::mesh) both use
// these functions, so a rank's coordinates cannot differ between the plan
// writer and the runtime.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_MESH_H
#define MOERT_MESH_H

#include <cstdint>
#include <string>
#include <vector>

namespace moert {

/// A dimension of the device mesh, e.g. {"ep", 4}.
struct MeshAxis {
  std::string name;
  int64_t size = 1;
};

/// The axes in grid order. Ranks are numbered row-major over them: for
/// dp=2,ep=4 rank = dp_idx*4 + ep_idx.
using MeshAxes = std::vector<MeshAxis>;

/// Size of the named axis, 1 when absent.
int64_t meshAxisSize(const MeshAxes &mesh, const std::string &axis);
/// Grid index of the named axis, -1 when absent.
int meshAxisIndex(const MeshAxes &mesh, const std::string &axis);
/// Product of the axis sizes.
int64_t meshWorldSize(const MeshAxes &mesh);
/// The coordinates of `rank` along every axis.
std::vector<int64_t> meshCoords(const MeshAxes &mesh, int64_t rank);
/// The coordinate of `rank` along the named axis; 0 when absent.
int64_t meshCoord(const MeshAxes &mesh, int64_t rank, const std::string &axis);
/// Ranks in `rank`'s group along the named axes (those that share every
/// other coordinate), in order of the group-local index; the group-local
/// index is row-major over `axes` (in the order given).
std::vector<int32_t> meshGroup(const MeshAxes &mesh, int64_t rank,
                               const std::vector<std::string> &axes);
/// "dp=2,ep=4,tp=2".
std::string meshString(const MeshAxes &mesh);

/// The axes moec knows, outermost first: data parallelism across nodes,
/// then expert parallelism, tensor parallelism innermost (a TP group is
/// consecutive ranks, on one node).
inline constexpr const char *kMeshAxisOrder[] = {"dp", "ep", "tp"};

/// Parses "dp=2,ep=4,tp=2" (any subset, any order, each axis once, sizes
/// >= 1) into the canonical order; `ep` is always present (size 1 when not
/// given). On failure `error` says what is wrong with which part.
bool parseMesh(const std::string &spec, MeshAxes &out, std::string &error);

} // namespace moert

#endif // MOERT_MESH_H
