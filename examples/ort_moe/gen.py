#!/usr/bin/env python3
"""Generates the com.microsoft.MoE example: onnxruntime's fused MoE op with
E=8 experts, top-2 with renormalised weights, SiLU experts with biases, on a
[2, 8, 32] input. Reference output computed by onnxruntime (CPU).

    python3 examples/ort_moe/gen.py
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

B, S, H, FF, E, K = 2, 8, 32, 64, 8, 2
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    rng = np.random.default_rng(0)
    # onnxruntime >= 1.22 layout: fc1 [E, F, H], fc2 [E, H, F].
    w = {
        "router": (rng.standard_normal((H, E)) * 0.3).astype(np.float32),
        "fc1": (rng.standard_normal((E, FF, H)) / np.sqrt(H)).astype(np.float32),
        "b1": (rng.standard_normal((E, FF)) * 0.1).astype(np.float32),
        "fc2": (rng.standard_normal((E, H, FF)) / np.sqrt(FF)).astype(np.float32),
        "b2": (rng.standard_normal((E, H)) * 0.1).astype(np.float32),
    }
    inits = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.flatten()) for n, a in w.items()]
    nodes = [
        helper.make_node("Reshape", ["x", "tok_shape"], ["tokens"], name="flatten_tokens"),
        helper.make_node("MatMul", ["tokens", "router"], ["router_logits"], name="router"),
        helper.make_node("MoE", ["x", "router_logits", "fc1", "b1", "fc2", "b2"], ["y"],
                         name="moe", domain="com.microsoft", k=K, activation_type="silu",
                         normalize_routing_weights=1),
    ]
    inits.append(helper.make_tensor("tok_shape", TensorProto.INT64, [2], [B * S, H]))
    graph = helper.make_graph(
        nodes, "ort_moe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, H])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    path = os.path.join(HERE, "model.onnx")
    onnx.save(model, path)
    x = rng.standard_normal((B, S, H)).astype(np.float32)
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.save(os.path.join(HERE, "input.npy"), x)
    np.save(os.path.join(HERE, "output.npy"), y)
    print(f"wrote {path} ({os.path.getsize(path)} bytes); max|y| = {np.abs(y).max():.3f}")


if __name__ == "__main__":
    main()
