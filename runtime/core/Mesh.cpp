//===- Mesh.cpp - the device mesh and its coordinates ---------------------===//

#include "moert/Mesh.h"

#include <iterator>

using namespace moert;

int64_t moert::meshAxisSize(const MeshAxes &mesh, const std::string &axis) {
  int i = meshAxisIndex(mesh, axis);
  return i < 0 ? 1 : mesh[i].size;
}

int moert::meshAxisIndex(const MeshAxes &mesh, const std::string &axis) {
  for (size_t i = 0; i < mesh.size(); ++i)
    if (mesh[i].name == axis)
      return int(i);
  return -1;
}

int64_t moert::meshWorldSize(const MeshAxes &mesh) {
  int64_t n = 1;
  for (const MeshAxis &a : mesh)
    n *= a.size;
  return n;
}

std::vector<int64_t> moert::meshCoords(const MeshAxes &mesh, int64_t rank) {
  std::vector<int64_t> c(mesh.size());
  for (int64_t i = int64_t(mesh.size()) - 1; i >= 0; --i) {
    c[i] = rank % mesh[i].size;
    rank /= mesh[i].size;
  }
  return c;
}

int64_t moert::meshCoord(const MeshAxes &mesh, int64_t rank,
                         const std::string &axis) {
  int i = meshAxisIndex(mesh, axis);
  return i < 0 ? 0 : meshCoords(mesh, rank)[i];
}

std::vector<int32_t> moert::meshGroup(const MeshAxes &mesh, int64_t rank,
                                      const std::vector<std::string> &axes) {
  std::vector<int64_t> coords = meshCoords(mesh, rank);
  std::vector<int> idx;
  int64_t n = 1;
  for (const std::string &a : axes)
    if (int i = meshAxisIndex(mesh, a); i >= 0) {
      idx.push_back(i);
      n *= mesh[i].size;
    }
  std::vector<int32_t> out;
  out.reserve(n);
  for (int64_t g = 0; g < n; ++g) {
    // The group-local index g, row-major over `axes`, replaces those
    // coordinates of `rank`.
    std::vector<int64_t> c = coords;
    int64_t rem = g;
    for (int64_t j = int64_t(idx.size()) - 1; j >= 0; --j) {
      c[idx[j]] = rem % mesh[idx[j]].size;
      rem /= mesh[idx[j]].size;
    }
    int64_t lin = 0;
    for (size_t i = 0; i < mesh.size(); ++i)
      lin = lin * mesh[i].size + c[i];
    out.push_back(int32_t(lin));
  }
  return out;
}

std::string moert::meshString(const MeshAxes &mesh) {
  std::string s;
  for (const MeshAxis &a : mesh) {
    if (!s.empty())
      s += ",";
    s += a.name + "=" + std::to_string(a.size);
  }
  return s;
}

static std::string trim(const std::string &s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

bool moert::parseMesh(const std::string &spec, MeshAxes &out,
                      std::string &error) {
  constexpr int kAxes = int(std::size(kMeshAxisOrder));
  int64_t sizes[kAxes] = {};
  if (trim(spec).empty()) {
    error = "empty mesh spec; expected e.g. 'dp=2,ep=4,tp=2'";
    return false;
  }
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos)
      comma = spec.size();
    std::string part = trim(spec.substr(pos, comma - pos));
    pos = comma + 1;
    size_t eq = part.find('=');
    std::string name = trim(part.substr(0, eq));
    std::string value =
        eq == std::string::npos ? "" : trim(part.substr(eq + 1));
    int idx = -1;
    for (int i = 0; i < kAxes; ++i)
      if (name == kMeshAxisOrder[i])
        idx = i;
    if (idx < 0) {
      error = "mesh spec '" + spec + "': unknown axis '" + name +
              "' (expected dp, ep or tp)";
      return false;
    }
    // A decimal size >= 1 that fits in int64_t.
    int64_t v = 0;
    bool ok = eq != std::string::npos && !value.empty() && value.size() < 19;
    for (char ch : value)
      ok = ok && ch >= '0' && ch <= '9';
    if (ok)
      v = std::stoll(value);
    if (!ok || v < 1) {
      error = "mesh spec '" + spec + "': axis '" + name +
              "' needs a size >= 1, got '" + value + "'";
      return false;
    }
    if (sizes[idx]) {
      error = "mesh spec '" + spec + "': axis '" + name + "' given twice";
      return false;
    }
    sizes[idx] = v;
  }
  out.clear();
  for (int i = 0; i < kAxes; ++i)
    if (sizes[i] || std::string(kMeshAxisOrder[i]) == "ep")
      out.push_back({kMeshAxisOrder[i], sizes[i] ? sizes[i] : 1});
  return true;
}
