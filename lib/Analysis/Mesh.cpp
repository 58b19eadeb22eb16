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

bool moec::isTokenSliced(shard::GridOp grid) {
  auto mode = grid->getAttrOfType<StringAttr>("moe.token_split_mode");
  return mode && mode.getValue() == "moe";
}
