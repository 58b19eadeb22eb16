//===- Mesh.cpp - device mesh specs ---------------------------------------===//

#include "moec/Analysis/Mesh.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"

using namespace mlir;
using namespace moec;

std::string moec::nodeName(Location loc) {
  if (auto n = dyn_cast<NameLoc>(loc))
    return n.getName().str();
  if (auto f = dyn_cast<FusedLoc>(loc))
    for (Location l : f.getLocations())
      if (auto n = dyn_cast<NameLoc>(l))
        return n.getName().str();
  return "";
}

shard::GridOp moec::getMeshGrid(ModuleOp module) {
  return dyn_cast_or_null<shard::GridOp>(
      SymbolTable::lookupSymbolIn(module, kGridName));
}

MeshSpec moec::meshSpecOf(shard::GridOp grid) {
  MeshSpec spec;
  auto names = grid->getAttrOfType<ArrayAttr>("moe.axes");
  ArrayRef<int64_t> shape = grid.getShape();
  for (auto [i, size] : llvm::enumerate(shape)) {
    std::string name = "axis" + std::to_string(i);
    if (names && i < names.size())
      if (auto s = dyn_cast<StringAttr>(names[i]))
        name = s.str();
    spec.axes.push_back({name, size});
  }
  return spec;
}

static StringRef modeOf(shard::GridOp grid) {
  auto mode = grid->getAttrOfType<StringAttr>("moe.token_split_mode");
  return mode ? mode.getValue() : StringRef("model");
}

bool moec::isTokenSliced(shard::GridOp grid) { return modeOf(grid) == "moe"; }

bool moec::isTokenHybrid(shard::GridOp grid) {
  return modeOf(grid) == "hybrid";
}

std::string AttentionMesh::str() const {
  std::string s;
  if (dp > 1)
    s = "dp=" + std::to_string(dp);
  if (tp > 1 || s.empty())
    s += (s.empty() ? "" : ",") + ("tp=" + std::to_string(tp));
  return s;
}

bool moec::parseAttentionMesh(StringRef spec, AttentionMesh &out,
                              std::string &error) {
  out = AttentionMesh();
  bool seen[2] = {false, false};
  if (spec.trim().empty()) {
    error = "empty attention mesh; expected e.g. 'tp=8' or 'dp=2,tp=4'";
    return false;
  }
  SmallVector<StringRef> parts;
  spec.split(parts, ',');
  for (StringRef part : parts) {
    auto [name, value] = part.split('=');
    name = name.trim();
    value = value.trim();
    int which = name == "dp" ? 0 : name == "tp" ? 1 : -1;
    if (which < 0) {
      error = "attention mesh '" + spec.str() + "': unknown axis '" +
              name.str() + "' (expected dp or tp)";
      return false;
    }
    int64_t v = 0;
    if (value.size() >= 19 || value.getAsInteger(10, v) || v < 1 ||
        !llvm::all_of(value, llvm::isDigit)) {
      error = "attention mesh '" + spec.str() + "': axis '" + name.str() +
              "' needs a size >= 1, got '" + value.str() + "'";
      return false;
    }
    if (seen[which]) {
      error = "attention mesh '" + spec.str() + "': axis '" + name.str() +
              "' given twice";
      return false;
    }
    seen[which] = true;
    (which == 0 ? out.dp : out.tp) = v;
  }
  return true;
}

bool moec::foldMesh(const MeshSpec &moeMesh, const AttentionMesh &attn,
                    MeshSpec &grid, MeshRoles &roles, std::string &error) {
  int64_t d = moeMesh.size("dp"), e = moeMesh.size("ep"),
          t = moeMesh.size("tp");
  int64_t n = d * e * t;
  std::string both =
      "--attention-mesh " + attn.str() + " and --mesh " + moeMesh.str();
  if (attn.dp > n || attn.tp > n || attn.dp * attn.tp != n) {
    error = both + ": the attention mesh has " +
            std::to_string(attn.dp * attn.tp) + " ranks, the MoE mesh " +
            std::to_string(n) + "; they must fold the same ranks";
    return false;
  }
  // Ranks are row-major over both meshes, so every axis is a range of
  // "strides": MoE tp (1, t], ep (t, e*t], dp (e*t, n]; attention tp
  // (1, attn.tp], dp (attn.tp, n]. The grid's axes are the ranges between
  // consecutive breakpoints, which must divide each other.
  SmallVector<int64_t> cuts{1, t, e * t, n, attn.tp};
  llvm::sort(cuts);
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  for (size_t i = 1; i < cuts.size(); ++i)
    if (cuts[i] % cuts[i - 1] != 0) {
      error = both + " do not nest: a group of " + std::to_string(cuts[i]) +
              " consecutive ranks of one is not made of whole groups of " +
              std::to_string(cuts[i - 1]) + " of the other";
      return false;
    }
  struct Range {
    const char *name;
    int64_t lo, hi;
  };
  Range moeAxes[] = {{"dp", e * t, n}, {"ep", t, e * t}, {"tp", 1, t}};
  grid = MeshSpec();
  roles = MeshRoles();
  roles.folded = true;
  for (Range &r : moeAxes) {
    // The atoms of this axis, outer first: cut index i spans strides
    // (cuts[i-1], cuts[i]].
    SmallVector<size_t> atoms;
    for (size_t i = cuts.size() - 1; i > 0; --i)
      if (cuts[i - 1] >= r.lo && cuts[i] <= r.hi)
        atoms.push_back(i);
    StringRef rn(r.name);
    SmallVector<int16_t> &role = rn == "dp"   ? roles.dp
                                 : rn == "ep" ? roles.ep
                                              : roles.tp;
    // ep is always present (size 1 when not split).
    if (atoms.empty() && rn == "ep") {
      role.push_back(int16_t(grid.axes.size()));
      grid.axes.push_back({r.name, 1});
    }
    for (auto [k, i] : llvm::enumerate(atoms)) {
      std::string name = r.name;
      if (atoms.size() > 1)
        name += std::to_string(k);
      int16_t idx = int16_t(grid.axes.size());
      grid.axes.push_back({name, cuts[i] / cuts[i - 1]});
      role.push_back(idx);
      (cuts[i - 1] >= attn.tp ? roles.attnDp : roles.attnTp).push_back(idx);
    }
  }
  for (int16_t a : roles.attnDp)
    if (llvm::is_contained(roles.tp, a)) {
      error = both + ": attention dp would split the tokens over the MoE's "
                     "tp ranks (each tensor-parallel expert needs the same "
                     "tokens on its tp group); make attention tp at least "
                     "the MoE's tp";
      return false;
    }
  return true;
}

int64_t moec::axesSize(const MeshSpec &spec, ArrayRef<int16_t> axes) {
  int64_t n = 1;
  for (int16_t a : axes)
    n *= spec.axes[size_t(a)].size;
  return n;
}

int64_t moec::groupIndex(const MeshSpec &spec, ArrayRef<int64_t> coords,
                         ArrayRef<int16_t> axes) {
  int64_t idx = 0;
  for (int16_t a : axes)
    idx = idx * spec.axes[size_t(a)].size + coords[size_t(a)];
  return idx;
}

static SmallVector<int16_t> i16s(Attribute a) {
  SmallVector<int16_t> out;
  if (auto arr = dyn_cast_or_null<DenseI16ArrayAttr>(a))
    out.assign(arr.asArrayRef().begin(), arr.asArrayRef().end());
  return out;
}

MeshRoles moec::meshRolesOf(shard::GridOp grid) {
  MeshRoles roles;
  if (auto d = grid->getAttrOfType<DictionaryAttr>("moe.roles")) {
    roles.folded = true;
    roles.dp = i16s(d.get("dp"));
    roles.ep = i16s(d.get("ep"));
    roles.tp = i16s(d.get("tp"));
    roles.attnDp = i16s(d.get("attn_dp"));
    roles.attnTp = i16s(d.get("attn_tp"));
    return roles;
  }
  MeshSpec spec = meshSpecOf(grid);
  for (auto [name, list] :
       {std::pair<StringRef, SmallVector<int16_t> *>{"dp", &roles.dp},
        {"ep", &roles.ep},
        {"tp", &roles.tp}})
    if (spec.index(name) >= 0)
      list->push_back(int16_t(spec.index(name)));
  return roles;
}

void moec::setMeshRoles(shard::GridOp grid, const MeshRoles &roles) {
  if (!roles.folded)
    return;
  Builder b(grid.getContext());
  grid->setAttr(
      "moe.roles",
      b.getDictionaryAttr({
          b.getNamedAttr("dp", b.getDenseI16ArrayAttr(roles.dp)),
          b.getNamedAttr("ep", b.getDenseI16ArrayAttr(roles.ep)),
          b.getNamedAttr("tp", b.getDenseI16ArrayAttr(roles.tp)),
          b.getNamedAttr("attn_dp", b.getDenseI16ArrayAttr(roles.attnDp)),
          b.getNamedAttr("attn_tp", b.getDenseI16ArrayAttr(roles.attnTp)),
      }));
}

SmallVector<int16_t> moec::moeSliceAxes(shard::GridOp grid) {
  MeshRoles roles = meshRolesOf(grid);
  SmallVector<int16_t> model = modelTokenAxes(grid), axes;
  if (!roles.folded && !isTokenHybrid(grid) && !isTokenSliced(grid))
    return axes;
  for (int16_t a : llvm::concat<int16_t>(roles.dp, roles.ep))
    if (!llvm::is_contained(model, a))
      axes.push_back(a);
  llvm::sort(axes);
  return axes;
}

SmallVector<int16_t> moec::denseTpAxes(shard::GridOp grid) {
  MeshRoles roles = meshRolesOf(grid);
  MeshSpec spec = meshSpecOf(grid);
  SmallVector<int16_t> axes = roles.folded ? roles.attnTp : roles.tp;
  if (axesSize(spec, axes) == 1)
    axes.clear();
  return axes;
}

std::string moec::foldingString(shard::GridOp grid) {
  MeshRoles roles = meshRolesOf(grid);
  MeshSpec spec = meshSpecOf(grid);
  if (!roles.folded)
    return spec.str();
  auto part = [&](StringRef name, ArrayRef<int16_t> axes) -> std::string {
    int64_t n = axesSize(spec, axes);
    return n > 1 ? name.str() + "=" + std::to_string(n) : "";
  };
  auto join = [](std::initializer_list<std::string> parts) {
    std::string s;
    for (const std::string &p : parts)
      if (!p.empty())
        s += (s.empty() ? "" : ",") + p;
    return s;
  };
  std::string attn = join({part("dp", roles.attnDp), part("tp", roles.attnTp)});
  std::string moe = join({part("dp", roles.dp),
                          "ep=" + std::to_string(axesSize(spec, roles.ep)),
                          part("tp", roles.tp)});
  return "attention " + (attn.empty() ? std::string("tp=1") : attn) +
         " / MoE " + moe;
}

SmallVector<int16_t> moec::modelTokenAxes(shard::GridOp grid) {
  MeshSpec spec = meshSpecOf(grid);
  SmallVector<int16_t> axes;
  if (MeshRoles roles = meshRolesOf(grid); roles.folded)
    return roles.attnDp;
  if (isTokenSliced(grid))
    return axes;
  for (StringRef a : {"dp", "ep"})
    if (spec.index(a) >= 0 && (a == "dp" || !isTokenHybrid(grid)))
      axes.push_back(int16_t(spec.index(a)));
  return axes;
}

int64_t moec::modelTokenSplit(shard::GridOp grid) {
  ArrayRef<int64_t> shape = grid.getShape();
  int64_t n = 1;
  for (int16_t a : modelTokenAxes(grid))
    n *= shape[a];
  return n;
}
