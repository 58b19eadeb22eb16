#!/usr/bin/env python3
"""Writes a small MoE model with odd sizes for the generated GPU kernels'
block/thread mapping (sizes that are not multiples of a warp or a block):
x [2, 350, 70] -> x * scale + shift (broadcast over H; a generated kernel)
-> com.microsoft.MoE (E=4, top-2, SiLU, F=48) -> + x (residual; a generated
kernel). Writes OUT_DIR/model.onnx, input.npy and output.npy (onnxruntime,
CPU).

    python3 test/e2e/make_odd_model.py OUT_DIR
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

B, S, H, FF, E, K = 2, 350, 70, 48, 4, 2


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1)
    w = {
        "scale": (1 + 0.1 * rng.standard_normal(H)).astype(np.float32),
        "shift": (0.1 * rng.standard_normal(H)).astype(np.float32),
        "router": (rng.standard_normal((H, E)) * 0.3).astype(np.float32),
        "fc1": (rng.standard_normal((E, FF, H)) / np.sqrt(H)).astype(np.float32),
        "b1": (rng.standard_normal((E, FF)) * 0.1).astype(np.float32),
        "fc2": (rng.standard_normal((E, H, FF)) / np.sqrt(FF)).astype(np.float32),
        "b2": (rng.standard_normal((E, H)) * 0.1).astype(np.float32),
    }
    inits = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.flatten())
             for n, a in w.items()]
    inits.append(helper.make_tensor("tok_shape", TensorProto.INT64, [2], [B * S, H]))
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["xs"], name="scale"),
        helper.make_node("Add", ["xs", "shift"], ["xn"], name="shift"),
        helper.make_node("Reshape", ["xn", "tok_shape"], ["tokens"], name="flatten"),
        helper.make_node("MatMul", ["tokens", "router"], ["logits"], name="router"),
        helper.make_node("MoE", ["xn", "logits", "fc1", "b1", "fc2", "b2"], ["m"],
                         name="moe", domain="com.microsoft", k=K,
                         activation_type="silu", normalize_routing_weights=1),
        helper.make_node("Add", ["m", "x"], ["y"], name="residual"),
    ]
    graph = helper.make_graph(
        nodes, "odd_moe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, H])], inits)
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    path = os.path.join(out, "model.onnx")
    onnx.save(model, path)
    x = rng.standard_normal((B, S, H)).astype(np.float32)
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.save(os.path.join(out, "input.npy"), x)
    np.save(os.path.join(out, "output.npy"), y)


if __name__ == "__main__":
    main()
