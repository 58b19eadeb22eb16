#!/usr/bin/env python3
"""Small models with a symbolic token dim, for test/moec/dynamic-tokens.test.

    make_dynamic_models.py OUT_DIR

ms-moe.onnx: x float[T,16] -> MatMul (router) -> com.microsoft.MoE (top-2,
SwiGLU experts with biases, as onnxruntime-genai's builder writes them),
outputs y [T,16] and the router logits [T,4]. onnxruntime runs it at any T.
ms-moe-big.onnx: the same with hidden 128, intermediate 1024 (weights of
4 MiB, which plans read only while they are written).

tainted.onnx: the same layer on x float[1,S,16] whose router weights are
divided by the sequence length (Shape -> Gather -> Cast -> Div): data
computed from a shape, which a plan compiled at one count holds as a
constant (the importer folds it).

kernel.onnx: x float[T,16] -> Tanh -> the layer: the Tanh becomes a generated
kernel whose operands follow the token count.

heads.onnx: x float[1,S,16] -> two heads of 8 (Reshape, Transpose to
[1,2,S,8]) -> unmasked self-attention of x with itself (scores [1,2,S,S],
Softmax) -> Transpose back -> Tanh -> the layer: kernels whose operands have
the token count in inner dims ([1,2,S,8], [1,2,S,S]), which a plan holds
packed at the actual count.

twice.onnx: Tanh on x float[T,16] and on a second input w float[16,16],
then x @ w -> the layer: at the maximum of 16 both Tanhs are one generated
kernel (same types), called once with a token dim and once without: two
compiled copies.

scaled.onnx: x float[T,16] divided by T (Shape -> Gather -> Cast -> Div) ->
the layer: the importer folds T into a scalar inside a generated kernel,
which would be wrong at any other count: refused.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

H, F, E = 16, 8, 4


def weights(rng, h=H, f=F, e=E):
    """The router [h, e] and SwiGLU experts (hidden h, intermediate f)."""
    def w(shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    return [
        numpy_helper.from_array(w((h, e), 2.0 / np.sqrt(h)), "wr"),
        # fc1 [E, 2F, H]: gate and up rows interleaved (swiglu_fusion = 1).
        numpy_helper.from_array(w((e, 2 * f, h), 1.2 / np.sqrt(h)), "fc1"),
        numpy_helper.from_array(w((e, 2 * f), 0.1), "b1"),
        numpy_helper.from_array(w((e, h, f), 1.2 / np.sqrt(f)), "fc2"),
        numpy_helper.from_array(w((e, h), 0.1), "b2"),
    ]


def ms_moe(path, rng, h=H, f=F, e=E):
    """x float[T, h] -> router -> com.microsoft.MoE; outputs y, logits."""
    g = helper.make_graph(
        moe_nodes("x"), "ms_moe_dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", h])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", h]),
         helper.make_tensor_value_info("router_logits", TensorProto.FLOAT, ["T", e])],
        weights(rng, h, f, e))
    save(g, path)


def moe_nodes(x, wr="wr"):
    return [
        helper.make_node("MatMul", [x, wr], ["router_logits"], name="router"),
        helper.make_node("MoE", [x, "router_logits", "fc1", "b1", "fc2", "b2"],
                         ["y"], name="moe", domain="com.microsoft", k=2,
                         activation_type="swiglu", swiglu_fusion=1,
                         activation_alpha=1.702, activation_beta=1.0,
                         normalize_routing_weights=1),
    ]


def save(graph, path):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    onnx.save(m, path)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    ms_moe(os.path.join(out, "ms-moe.onnx"), np.random.default_rng(7))
    # Expert weights over 1 MiB each: the plans read them while written.
    ms_moe(os.path.join(out, "ms-moe-big.onnx"), np.random.default_rng(8),
           h=128, f=1024, e=4)
    w = weights(np.random.default_rng(7))

    nodes = [
        helper.make_node("Shape", ["x3"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "one"], ["seq"], name="seq", axis=0),
        helper.make_node("Cast", ["seq"], ["seqf"], name="seqf", to=TensorProto.FLOAT),
        helper.make_node("Div", ["wr", "seqf"], ["wr_scaled"], name="scale_by_length"),
        helper.make_node("Reshape", ["x3", "rows"], ["x"], name="flatten"),
    ] + moe_nodes("x", "wr_scaled")
    g = helper.make_graph(
        nodes, "tainted",
        [helper.make_tensor_value_info("x3", TensorProto.FLOAT, [1, "S", H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["S", H]),
         helper.make_tensor_value_info("router_logits", TensorProto.FLOAT, ["S", E])],
        w + [numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([-1, H], np.int64), "rows")])
    save(g, os.path.join(out, "tainted.onnx"))

    g = helper.make_graph(
        [helper.make_node("Tanh", ["x0"], ["x"], name="squash")] + moe_nodes("x"),
        "kernel",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["T", H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", H]),
         helper.make_tensor_value_info("router_logits", TensorProto.FLOAT, ["T", E])],
        w)
    save(g, os.path.join(out, "kernel.onnx"))

    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    nodes = [
        helper.make_node("Reshape", ["x3", "heads_shape"], ["h"], name="split_heads"),
        helper.make_node("Transpose", ["h"], ["q"], name="heads_first", perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["q"], ["kt"], name="keys_t", perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
        helper.make_node("Softmax", ["s"], ["p"], name="probs", axis=-1),
        helper.make_node("MatMul", ["p", "q"], ["o"], name="attend"),
        helper.make_node("Transpose", ["o"], ["ot"], name="heads_last", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ot", "rows"], ["r"], name="merge_heads"),
        helper.make_node("Tanh", ["r"], ["x"], name="squash"),
    ] + moe_nodes("x")
    g = helper.make_graph(
        nodes, "heads",
        [helper.make_tensor_value_info("x3", TensorProto.FLOAT, [1, "S", H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["S", H]),
         helper.make_tensor_value_info("router_logits", TensorProto.FLOAT, ["S", E])],
        w + [i64("heads_shape", [1, -1, 2, H // 2]), i64("rows", [-1, H])])
    save(g, os.path.join(out, "heads.onnx"))

    nodes = [
        helper.make_node("Tanh", ["x0"], ["xt"], name="squash_x"),
        helper.make_node("Tanh", ["w"], ["wt"], name="squash_w"),
        helper.make_node("MatMul", ["xt", "wt"], ["x"], name="mix"),
    ] + moe_nodes("x")
    g = helper.make_graph(
        nodes, "twice",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["T", H]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [H, H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", H]),
         helper.make_tensor_value_info("router_logits", TensorProto.FLOAT, ["T", E])],
        w)
    save(g, os.path.join(out, "twice.onnx"))

    nodes = [
        helper.make_node("Shape", ["x0"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["count"], name="count", axis=0),
        helper.make_node("Cast", ["count"], ["countf"], name="countf", to=TensorProto.FLOAT),
        helper.make_node("Div", ["x0", "countf"], ["x"], name="per_token"),
    ] + moe_nodes("x")
    g = helper.make_graph(
        nodes, "scaled",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["T", H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", H]),
         helper.make_tensor_value_info("router_logits", TensorProto.FLOAT, ["T", E])],
        w + [i64("zero", 0)])
    save(g, os.path.join(out, "scaled.onnx"))


if __name__ == "__main__":
    main()
