//===- Expansion.h - an op expressed in simpler ONNX ops --------*- C++ -*-===//
//
// Some contrib ops (com.microsoft.GroupQueryAttention) are whole blocks.
// Their handlers express them in standard ONNX ops, with shapes and
// constants known while importing, and import those through the same op
// table: each op keeps its documented semantics and its checks. The
// sub-nodes are named after the node ("NODE/moec.N.OP"), so an error or a
// location in the IR leads back to it.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_LIB_IMPORT_EXPANSION_H
#define MOEC_LIB_IMPORT_EXPANSION_H

#include "GraphImporter.h"

#include <deque>
#include <functional>
#include <string>
#include <vector>

namespace moec::onnximport {

class Expansion {
public:
  explicit Expansion(GraphImporter &gi);

  /// The name of the node's input `i` (must be given).
  std::string in(unsigned i) const { return gi.node().input(i); }
  /// A constant known while importing.
  std::string constant(HostTensor t);
  std::string ints(std::vector<int64_t> v) {
    return constant(HostTensor::ints(std::move(v)));
  }
  /// A float constant of the element type `dtype` (ONNX) and `shape`,
  /// every element `value`.
  std::string splat(int32_t dtype, std::vector<int64_t> shape, double value) {
    return constant(HostTensor::splat(dtype, std::move(shape), value));
  }

  using Attrs = std::function<void(onnx::NodeProto &)>;
  /// Imports `opType` (default domain) on `inputs`; returns its `outputs`
  /// names, or an empty vector after an error (gi's error names the
  /// sub-node).
  std::vector<std::string> ops(const std::string &opType,
                               std::vector<std::string> inputs,
                               unsigned outputs, const Attrs &attrs = {});
  /// The same with one output; "" after an error.
  std::string op(const std::string &opType, std::vector<std::string> inputs,
                 const Attrs &attrs = {});

  /// Sets the node's output `i` to the value named `name`.
  mlir::LogicalResult output(unsigned i, const std::string &name);

  /// Attribute setters for `Attrs`.
  static void setInt(onnx::NodeProto &n, const std::string &name, int64_t v);
  static void setInts(onnx::NodeProto &n, const std::string &name,
                      const std::vector<int64_t> &v);
  static void setFloat(onnx::NodeProto &n, const std::string &name, float v);

private:
  std::string fresh(const std::string &what);

  GraphImporter &gi;
  std::string prefix;
  std::deque<onnx::NodeProto> nodes;
  int counter = 0;
};

/// Rotary embedding of the first 2 * half dims of `x` [B, n, S, H] by `c`,
/// `s` (broadcasting to [.., .., S, half]): pairs (i, i + half), or (2i,
/// 2i + 1) when `interleaved`; the other dims pass through. Shared by
/// GroupQueryAttention and MRotaryEmbedding.
std::string rotate(Expansion &ex, const std::string &x, const std::string &c,
                   const std::string &s, int64_t b, int64_t n, int64_t seq,
                   int64_t half, int64_t h, bool interleaved);

} // namespace moec::onnximport

#endif // MOEC_LIB_IMPORT_EXPANSION_H
