//===- Expansion.cpp - an op expressed in simpler ONNX ops ----------------===//

#include "Expansion.h"

using namespace mlir;
using namespace moec::onnximport;

Expansion::Expansion(GraphImporter &gi) : gi(gi) {
  const onnx::NodeProto &n = gi.node();
  prefix = n.name().empty() ? n.op_type() : n.name();
}

std::string Expansion::fresh(const std::string &what) {
  return prefix + "/moec." + std::to_string(counter++) + "." + what;
}

std::string Expansion::constant(HostTensor t) {
  std::string name = fresh("const");
  gi.defineConst(name, std::move(t));
  return name;
}

std::vector<std::string> Expansion::ops(const std::string &opType,
                                        std::vector<std::string> inputs,
                                        unsigned outputs, const Attrs &attrs) {
  onnx::NodeProto &n = nodes.emplace_back();
  n.set_op_type(opType);
  n.set_name(fresh(opType));
  for (std::string &i : inputs)
    n.add_input(std::move(i));
  std::vector<std::string> outs;
  for (unsigned o = 0; o < outputs; ++o) {
    outs.push_back(n.name() + (outputs == 1 ? "" : ":" + std::to_string(o)));
    n.add_output(outs.back());
  }
  if (attrs)
    attrs(n);
  if (failed(gi.importSubNode(n)))
    return {};
  return outs;
}

std::string Expansion::op(const std::string &opType,
                          std::vector<std::string> inputs, const Attrs &attrs) {
  std::vector<std::string> outs = ops(opType, std::move(inputs), 1, attrs);
  return outs.empty() ? std::string() : outs[0];
}

LogicalResult Expansion::output(unsigned i, const std::string &name) {
  if (const HostTensor *t = gi.knownValue(name)) {
    gi.setOutputConst(i, *t);
    return success();
  }
  FailureOr<Value> v = gi.lookupOutput(name);
  if (failed(v))
    return failure();
  gi.setOutput(i, *v);
  return success();
}

void Expansion::setInt(onnx::NodeProto &n, const std::string &name, int64_t v) {
  onnx::AttributeProto *a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

void Expansion::setInts(onnx::NodeProto &n, const std::string &name,
                        const std::vector<int64_t> &v) {
  onnx::AttributeProto *a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v)
    a->add_ints(x);
}

void Expansion::setFloat(onnx::NodeProto &n, const std::string &name, float v) {
  onnx::AttributeProto *a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}
