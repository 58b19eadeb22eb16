//===- InferenceGuards.cpp - what ONNX shape inference cannot survive -----===//

#include "InferenceGuards.h"

#include "onnx/onnx_pb.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/StringSet.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <vector>

using namespace moec::onnximport;

namespace {
/// The values of a small integer tensor, or none.
std::optional<std::vector<int64_t>> smallInts(const onnx::TensorProto &t) {
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || d > 64)
      return std::nullopt;
    n *= d;
  }
  if (n > 64)
    return std::nullopt;
  std::vector<int64_t> v;
  if (t.data_type() == onnx::TensorProto_DataType_INT64) {
    if (t.has_raw_data()) {
      if (t.raw_data().size() != size_t(n) * 8)
        return std::nullopt;
      v.resize(size_t(n));
      std::memcpy(v.data(), t.raw_data().data(), size_t(n) * 8);
    } else if (t.int64_data_size() == n) {
      v.assign(t.int64_data().begin(), t.int64_data().end());
    } else {
      return std::nullopt;
    }
  } else if (t.data_type() == onnx::TensorProto_DataType_INT32) {
    if (t.has_raw_data()) {
      if (t.raw_data().size() != size_t(n) * 4)
        return std::nullopt;
      std::vector<int32_t> w(static_cast<size_t>(n));
      std::memcpy(w.data(), t.raw_data().data(), size_t(n) * 4);
      v.assign(w.begin(), w.end());
    } else if (t.int32_data_size() == n) {
      v.assign(t.int32_data().begin(), t.int32_data().end());
    } else {
      return std::nullopt;
    }
  } else {
    return std::nullopt;
  }
  return v;
}

std::string nodeName(const onnx::NodeProto &n) {
  std::string name = n.name();
  if (name.empty())
    name =
        n.output_size() ? "<unnamed, output " + n.output(0) + ">" : "<unnamed>";
  return "node '" + name + "' (" + n.op_type() + ")";
}
} // namespace

std::string moec::onnximport::inferenceHazard(const onnx::GraphProto &g) {
  // A negative dim in a graph input's type (inference takes it as a size:
  // a GatherND whose indices were declared [2, -11] read out of bounds;
  // clearNegativeDims has made the other declarations' unknown).
  for (const onnx::ValueInfoProto &v : g.input()) {
    if (!v.has_type() || !v.type().has_tensor_type() ||
        !v.type().tensor_type().has_shape())
      continue;
    const onnx::TensorShapeProto &sh = v.type().tensor_type().shape();
    for (int d = 0; d < sh.dim_size(); ++d)
      if (sh.dim(d).has_dim_value() && sh.dim(d).dim_value() < 0)
        return "graph input '" + v.name() + "' has dim " + std::to_string(d) +
               " of " + std::to_string(sh.dim(d).dim_value()) +
               " (dims are 0 or more); fix it with --input-shape " + v.name() +
               "=D0,D1,...";
  }
  std::unordered_map<std::string, std::vector<int64_t>> consts;
  for (const onnx::TensorProto &t : g.initializer())
    if (auto v = smallInts(t))
      consts[t.name()] = *v;
  // Entries of 1-D tensors made from constants, and the node that made them.
  std::unordered_map<std::string, std::pair<int64_t, const onnx::NodeProto *>>
      lengths;
  auto input = [&](const onnx::NodeProto &n,
                   int i) -> const std::vector<int64_t> * {
    if (i >= n.input_size())
      return nullptr;
    auto it = consts.find(n.input(i));
    return it == consts.end() ? nullptr : &it->second;
  };
  for (const onnx::NodeProto &n : g.node()) {
    const std::string &op = n.op_type();
    bool onnxOp = n.domain().empty() || n.domain() == "ai.onnx";
    if (onnxOp && op == "Constant" && n.output_size() == 1)
      for (const onnx::AttributeProto &a : n.attribute())
        if (a.name() == "value" && a.has_t())
          if (auto v = smallInts(a.t()))
            consts[n.output(0)] = *v;
    // A shape operand's entries become the rank of the op's result.
    int shapeOperand = !onnxOp                                             ? -1
                       : op == "ConstantOfShape"                           ? 0
                       : op == "Expand" || op == "Reshape" || op == "Tile" ? 1
                                                                           : -1;
    if (shapeOperand >= 0 && shapeOperand < n.input_size()) {
      auto it = lengths.find(n.input(shapeOperand));
      if (it != lengths.end() && it->second.first > kMaxShapeRank)
        return nodeName(n) + ": its shape input '" + n.input(shapeOperand) +
               "' has " + std::to_string(it->second.first) +
               " entries (made by " + nodeName(*it->second.second) +
               "): a rank over " + std::to_string(kMaxShapeRank) +
               " is not supported";
    }
    // ONNX's conv/pool inference divides by strides and dilations (an FPE
    // on a 0: fuzz target onnx-binary) and sizes by kernel_shape and group.
    static const llvm::StringSet<> convPool = {
        "Conv",        "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool",
        "AveragePool", "LpPool",        "MaxUnpool",   "DeformConv"};
    if (onnxOp && convPool.contains(op))
      for (const onnx::AttributeProto &a : n.attribute()) {
        bool list = a.name() == "strides" || a.name() == "dilations" ||
                    a.name() == "kernel_shape";
        if (list)
          for (int64_t v : a.ints())
            if (v <= 0)
              return nodeName(n) + ": attribute " + a.name() +
                     " has an entry " + std::to_string(v) +
                     " (entries must be positive)";
        if (a.name() == "group" && a.i() <= 0)
          return nodeName(n) + ": attribute group is " + std::to_string(a.i()) +
                 " (must be positive)";
      }
    if (!onnxOp || n.output_size() < 1)
      continue;
    // Lower bounds of the entries of 1-D results of known-length inputs: a
    // Concat holds at least their sum, a Tile by constant repeats that many
    // times, an elementwise op or a Cast at least the longest (issue 17: a
    // long shape made through a Concat or Tile of them).
    auto known = [&](int i) -> int64_t {
      if (i >= n.input_size())
        return -1;
      auto it = lengths.find(n.input(i));
      return it == lengths.end() ? -1 : it->second.first;
    };
    auto saturatingAdd = [](int64_t a, int64_t b) {
      return a > INT64_MAX - b ? INT64_MAX : a + b;
    };
    static const llvm::StringSet<> elementwise = {
        "Cast", "Identity", "Abs", "Neg", "Add",  "Sub",
        "Mul",  "Div",      "Max", "Min", "Where"};
    if (op == "Concat") {
      int64_t sum = 0;
      bool any = false;
      for (int i = 0; i < n.input_size(); ++i)
        if (int64_t k = known(i); k >= 0) {
          sum = saturatingAdd(sum, k);
          any = true;
        }
      if (any)
        lengths[n.output(0)] = {sum, &n};
      continue;
    }
    if (op == "Tile") {
      int64_t k = known(0);
      const std::vector<int64_t> *r = input(n, 1);
      if (k >= 0) {
        int64_t times = r && r->size() == 1 && (*r)[0] > 0 ? (*r)[0] : 1;
        lengths[n.output(0)] = {
            k > 0 && times > INT64_MAX / k ? INT64_MAX : k * times, &n};
      }
      continue;
    }
    if (elementwise.contains(op)) {
      int64_t most = -1;
      for (int i = 0; i < n.input_size(); ++i)
        most = std::max(most, known(i));
      if (most >= 0)
        lengths[n.output(0)] = {most, &n};
      continue;
    }
    if (op == "ConstantOfShape") {
      const std::vector<int64_t> *s = input(n, 0);
      if (!s)
        continue;
      int64_t count = 1;
      for (int64_t d : *s)
        if (d < 0 || (d > 0 && count > INT64_MAX / d))
          count = INT64_MAX;
        else
          count *= d;
      if (s->size() == 1)
        lengths[n.output(0)] = {count, &n};
    } else if (op == "Range") {
      const std::vector<int64_t> *start = input(n, 0), *limit = input(n, 1),
                                 *delta = input(n, 2);
      if (!start || !limit || !delta || start->size() != 1 ||
          limit->size() != 1 || delta->size() != 1)
        continue;
      if ((*delta)[0] == 0)
        continue; // the importer says so
      // ceil((limit - start) / delta) in 128 bits: no overflow.
      __int128 span = __int128((*limit)[0]) - (*start)[0], d = (*delta)[0];
      __int128 count = span / d + (span % d != 0 && (span < 0) == (d < 0));
      int64_t c = count <= 0          ? 0
                  : count > INT64_MAX ? INT64_MAX
                                      : int64_t(count);
      lengths[n.output(0)] = {c, &n};
    }
  }
  return "";
}

bool moec::onnximport::onlyMissingSchemas(const std::string &msg) {
  llvm::SmallVector<llvm::StringRef> lines;
  llvm::StringRef(msg).split(lines, '\n', -1, /*KeepEmpty=*/false);
  bool any = false;
  for (llvm::StringRef l : lines) {
    bool missing =
        l.contains("No Op registered") || l.contains("no schema registered");
    if (!missing && !l.contains("(op_type:"))
      continue; // the "Shape inference error(s):" header
    if (!missing)
      return false;
    any = true;
  }
  return any;
}

bool moec::onnximport::dataPropagationSafe(const onnx::GraphProto &g) {
  llvm::StringSet<> typed;
  for (const onnx::ValueInfoProto &v : g.input())
    if (v.has_type())
      typed.insert(v.name());
  for (const onnx::ValueInfoProto &v : g.value_info())
    if (v.has_type())
      typed.insert(v.name());
  for (const onnx::ValueInfoProto &v : g.output())
    if (v.has_type())
      typed.insert(v.name());
  for (const onnx::TensorProto &t : g.initializer())
    typed.insert(t.name());
  for (const onnx::NodeProto &n : g.node()) {
    bool onnxOp = n.domain().empty() || n.domain() == "ai.onnx";
    if (onnxOp && (n.op_type() == "Shape" || n.op_type() == "Size") &&
        n.input_size() > 0 && !typed.contains(n.input(0)))
      return false;
  }
  return true;
}

void moec::onnximport::clearNegativeDims(onnx::GraphProto &g) {
  auto clear = [](onnx::ValueInfoProto &v) {
    if (!v.has_type() || !v.type().has_tensor_type() ||
        !v.type().tensor_type().has_shape())
      return;
    onnx::TensorShapeProto *sh =
        v.mutable_type()->mutable_tensor_type()->mutable_shape();
    for (int d = 0; d < sh->dim_size(); ++d)
      if (sh->dim(d).has_dim_value() && sh->dim(d).dim_value() < 0)
        sh->mutable_dim(d)->clear_dim_value();
  };
  for (onnx::ValueInfoProto &v : *g.mutable_output())
    clear(v);
  for (onnx::ValueInfoProto &v : *g.mutable_value_info())
    clear(v);
}
