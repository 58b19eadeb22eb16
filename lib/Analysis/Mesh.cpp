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

SmallVector<int16_t> moec::modelTokenAxes(shard::GridOp grid) {
  MeshSpec spec = meshSpecOf(grid);
  SmallVector<int16_t> axes;
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
