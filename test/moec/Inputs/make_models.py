#!/usr/bin/env python3
"""Writes binary ONNX files for the importer's error tests into a directory:
truncated, not ONNX, empty, external data present, missing and short, and
models whose nodes have names (the ONNX text format cannot name nodes)."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

w = np.arange(64 * 16, dtype=np.float32).reshape(64, 16) / 100.0
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])


def model(with_weight):
    node = helper.make_node("Relu", ["w"], ["wr"], name="relu_w")
    add = helper.make_node("Add", ["x", "x"], ["xx"], name="double_x")
    # y = xx[:, :16] would need Slice; keep it element-wise: y = Relu(w)[0:4]
    # is not element-wise either, so the graph outputs Relu(w) and 2x.
    g = helper.make_graph([node, add], "g", [x],
                          [helper.make_tensor_value_info("wr", TensorProto.FLOAT, [64, 16]),
                           helper.make_tensor_value_info("xx", TensorProto.FLOAT, [4, 64])],
                          [numpy_helper.from_array(w, "w")] if with_weight else [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


good = model(True)
onnx.save(good, os.path.join(out, "good.onnx"))
data = open(os.path.join(out, "good.onnx"), "rb").read()
open(os.path.join(out, "truncated.onnx"), "wb").write(data[: len(data) // 2])
open(os.path.join(out, "not-onnx.onnx"), "wb").write(b"\x89PNG\r\n\x1a\n this is a picture, not a model")
open(os.path.join(out, "empty.onnx"), "wb").write(b"")

os.makedirs(os.path.join(out, "ext"), exist_ok=True)
onnx.save(model(True), os.path.join(out, "ext", "model.onnx"), save_as_external_data=True,
          all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
os.makedirs(os.path.join(out, "ext-missing"), exist_ok=True)
onnx.save(model(True), os.path.join(out, "ext-missing", "model.onnx"), save_as_external_data=True,
          all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
os.remove(os.path.join(out, "ext-missing", "weights.bin"))
os.makedirs(os.path.join(out, "ext-short"), exist_ok=True)
onnx.save(model(True), os.path.join(out, "ext-short", "model.onnx"), save_as_external_data=True,
          all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
with open(os.path.join(out, "ext-short", "weights.bin"), "r+b") as f:
    f.truncate(100)
# External data whose length field or offset disagrees with the tensor.
for name, key, value in (("ext-length", "length", "400"),
                         ("ext-offset", "offset", "12x")):
    os.makedirs(os.path.join(out, name), exist_ok=True)
    path = os.path.join(out, name, "model.onnx")
    onnx.save(model(True), path, save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    m = onnx.load(path, load_external_data=False)
    kvs = m.graph.initializer[0].external_data
    for kv in kvs:
        if kv.key == key:
            kv.value = value
    if key not in [kv.key for kv in kvs]:
        kvs.add(key=key, value=value)
    onnx.save(m, path)


def named(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


f = TensorProto.FLOAT
# An op moec does not import, on a named node.
onnx.save(named([helper.make_node("MaxPool", ["x"], ["y"], name="layers.0/pool",
                                  kernel_shape=[3, 3])],
                [helper.make_tensor_value_info("x", f, [1, 1, 4, 4])],
                [helper.make_tensor_value_info("y", f, [1, 1, 2, 2])]),
          os.path.join(out, "named-pool.onnx"))
# x is [N, K]: --input-shape x=4,32 contradicts the [64, 16] weight.
onnx.save(named([helper.make_node("MatMul", ["x", "w"], ["y"], name="layers.0/mlp/fc1")],
                [helper.make_tensor_value_info("x", f, ["N", "K"])],
                [helper.make_tensor_value_info("y", f, ["N", 16])],
                [numpy_helper.from_array(np.ones((64, 16), np.float32), "w")]),
          os.path.join(out, "named-matmul.onnx"))
# The declared output [N, 16] contradicts --input-shape x=4,32 through Relu.
onnx.save(named([helper.make_node("Relu", ["x"], ["y"], name="layers.0/act")],
                [helper.make_tensor_value_info("x", f, ["N", "K"])],
                [helper.make_tensor_value_info("y", f, ["N", 16])]),
          os.path.join(out, "named-relu.onnx"))
# A 64x64 weight (16 KiB): printed as an elided dense_resource by default.
w64 = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096.0
onnx.save(named([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
                [helper.make_tensor_value_info("x", f, [4, 64])],
                [helper.make_tensor_value_info("y", f, [4, 64])],
                [numpy_helper.from_array(w64, "w")]),
          os.path.join(out, "weights64.onnx"))
# A Constant whose shape overflows (2^31 x 2^31 floats) and an initializer
# with a negative dim: corrupt tensors, never an allocation.
huge = TensorProto(name="c", data_type=f, dims=[1 << 31, 1 << 31],
                   raw_data=bytes(16))
onnx.save(named([helper.make_node("Constant", [], ["c"], value=huge),
                 helper.make_node("Add", ["x", "c"], ["y"])],
                [helper.make_tensor_value_info("x", f, [4, 8])],
                [helper.make_tensor_value_info("y", f, [4, 8])]),
          os.path.join(out, "huge-constant.onnx"))
neg = numpy_helper.from_array(np.ones((8, 16), np.float32), "w")
neg.dims[0] = -8
onnx.save(named([helper.make_node("MatMul", ["x", "w"], ["y"])],
                [helper.make_tensor_value_info("x", f, [4, 8])],
                [helper.make_tensor_value_info("y", f, [4, 16])], [neg]),
          os.path.join(out, "negative-dim.onnx"))
