//===- Mesh.cpp - device mesh specs ---------------------------------------===//

#include "moec/Analysis/Mesh.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"

using namespace mlir;
using namespace moec;

//===----------------------------------------------------------------------===//
// MeshSpec
//===----------------------------------------------------------------------===//

int64_t MeshSpec::size(StringRef name) const {
  for (auto &[n, s] : axes)
    if (n == name)
      return s;
  return 1;
}

int64_t MeshSpec::index(StringRef name) const {
  for (auto [i, a] : llvm::enumerate(axes))
    if (a.first == name)
      return i;
  return -1;
}

int64_t MeshSpec::worldSize() const {
  int64_t n = 1;
  for (auto &a : axes)
    n *= a.second;
  return n;
}

SmallVector<int64_t> MeshSpec::coords(int64_t rank) const {
  SmallVector<int64_t> c(axes.size());
  for (int64_t a = int64_t(axes.size()) - 1; a >= 0; --a) {
    c[a] = rank % axes[a].second;
    rank /= axes[a].second;
  }
  return c;
}

std::string moec::nodeName(Location loc) {
  if (auto n = dyn_cast<NameLoc>(loc))
    return n.getName().str();
  if (auto f = dyn_cast<FusedLoc>(loc))
    for (Location l : f.getLocations())
      if (auto n = dyn_cast<NameLoc>(l))
        return n.getName().str();
  return "";
}

std::string MeshSpec::str() const {
  std::string s;
  for (auto &[n, size] : axes) {
    if (!s.empty())
      s += ",";
    s += n + "=" + std::to_string(size);
  }
  return s;
}

bool moec::parseMeshSpec(StringRef spec, MeshSpec &out, std::string &error) {
  static const char *kOrder[] = {"dp", "ep", "tp"};
  int64_t sizes[3] = {0, 0, 0};
  SmallVector<StringRef> parts;
  spec.split(parts, ',');
  if (spec.trim().empty()) {
    error = "empty mesh spec; expected e.g. 'dp=2,ep=4,tp=2'";
    return false;
  }
  for (StringRef part : parts) {
    part = part.trim();
    auto [name, value] = part.split('=');
    name = name.trim();
    value = value.trim();
    int idx = -1;
    for (int i = 0; i < 3; ++i)
      if (name == kOrder[i])
        idx = i;
    if (idx < 0) {
      error = "mesh spec '" + spec.str() + "': unknown axis '" + name.str() +
              "' (expected dp, ep or tp)";
      return false;
    }
    int64_t v;
    if (!part.contains('=') || value.getAsInteger(10, v) || v < 1) {
      error = "mesh spec '" + spec.str() + "': axis '" + name.str() +
              "' needs a size >= 1, got '" + value.str() + "'";
      return false;
    }
    if (sizes[idx]) {
      error = "mesh spec '" + spec.str() + "': axis '" + name.str() +
              "' given twice";
      return false;
    }
    sizes[idx] = v;
  }
  out.axes.clear();
  for (int i = 0; i < 3; ++i)
    if (sizes[i] || i == 1)
      out.axes.push_back({kOrder[i], sizes[i] ? sizes[i] : 1});
  return true;
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
