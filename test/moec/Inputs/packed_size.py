#!/usr/bin/env python3
"""Writes one com.microsoft.MatMulNBits model (K 512, N 256, 4 bits, block
32, random codes and scales) and the same layer as a plain MatMul on its
fp32 weight (the numpy dequantization of the codes), and one
com.microsoft.QMoE layer (8 experts, H 128, F 256, fused SwiGLU, 4 bits,
block 32, zero points on fc2) with its com.microsoft.MoE twin on the
dequantized weights, for packed-weights.test:

    packed_size.py OUT_DIR

OUT_DIR/int4.onnx, OUT_DIR/fp32.onnx and OUT_DIR/a.npy (the input);
OUT_DIR/qmoe_int4.onnx, OUT_DIR/qmoe_fp32.onnx, OUT_DIR/x.npy and
OUT_DIR/logits.npy."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

K, N, BITS, BS, M = 512, 256, 4, 32, 3
E, H, F, T = 8, 128, 256, 6


def pack4(q):
    """Packs the last axis (values < 16) two per byte, low nibble first."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def qmoe(out, rng):
    """The QMoE layer and its fp32 MoE twin (same routing attributes)."""
    inits, ref = [], []
    for name, (r, k), zp in (("fc1", (2 * F, H), False),
                             ("fc2", (H, F), True)):
        q = rng.integers(0, 16, (E, r, k))
        s = rng.uniform(0.005, 0.03, (E, r, k // BS)).astype(np.float32)
        z = rng.integers(0, 16, (E, r, k // BS)) if zp else \
            np.full((E, r, k // BS), 8)
        w = (q - np.repeat(z, BS, -1)) * np.repeat(s, BS, -1)
        inits += [nh.from_array(pack4(q), name + "_w"),
                  nh.from_array(s, name + "_s")]
        if zp:
            inits.append(nh.from_array(pack4(z), name + "_z"))
        ref.append(nh.from_array(w.astype(np.float32), name + "_w"))
    attrs = dict(k=2, activation_type="swiglu", swiglu_fusion=1,
                 activation_alpha=1.702, activation_beta=1.0,
                 swiglu_limit=7.0, normalize_routing_weights=1)
    ins = [h.make_tensor_value_info("x", TP.FLOAT, [T, H]),
           h.make_tensor_value_info("logits", TP.FLOAT, [T, E])]
    outs = [h.make_tensor_value_info("y", TP.FLOAT, [T, H])]
    opsets = [h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)]
    node = h.make_node("QMoE", ["x", "logits", "fc1_w", "fc1_s", "",
                                "fc2_w", "fc2_s", "", "", "", "", "", "fc2_z"],
                       ["y"], domain="com.microsoft", expert_weight_bits=4,
                       block_size=BS, **attrs)
    onnx.save(h.make_model(h.make_graph([node], "qmoe", ins, outs, inits),
                           opset_imports=opsets),
              os.path.join(out, "qmoe_int4.onnx"))
    node = h.make_node("MoE", ["x", "logits", "fc1_w", "", "fc2_w"], ["y"],
                       domain="com.microsoft", **attrs)
    onnx.save(h.make_model(h.make_graph([node], "moe", ins, outs, ref),
                           opset_imports=opsets),
              os.path.join(out, "qmoe_fp32.onnx"))
    np.save(os.path.join(out, "x.npy"),
            rng.standard_normal((T, H)).astype(np.float32))
    np.save(os.path.join(out, "logits.npy"),
            rng.standard_normal((T, E)).astype(np.float32))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    blocks = K // BS
    q = rng.integers(0, 1 << BITS, (N, blocks, BS))
    codes = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    scales = rng.uniform(-0.1, 0.1, (N, blocks)).astype(np.float32)
    w = ((q - 8) * scales[..., None]).reshape(N, K).astype(np.float32)
    a = h.make_tensor_value_info("A", TP.FLOAT, [M, K])
    y = h.make_tensor_value_info("Y", TP.FLOAT, [M, N])
    node = h.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"],
                       domain="com.microsoft", K=K, N=N, bits=BITS,
                       block_size=BS, accuracy_level=0)
    g = h.make_graph([node], "int4", [a], [y],
                     [nh.from_array(codes, "B"), nh.from_array(scales, "scales")])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17),
                                            h.make_opsetid("com.microsoft", 1)]),
              os.path.join(out, "int4.onnx"))
    g = h.make_graph([h.make_node("MatMul", ["A", "W"], ["Y"])], "fp32", [a],
                     [y], [nh.from_array(np.ascontiguousarray(w.T), "W")])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]),
              os.path.join(out, "fp32.onnx"))
    np.save(os.path.join(out, "a.npy"),
            rng.standard_normal((M, K)).astype(np.float32))
    qmoe(out, rng)


if __name__ == "__main__":
    main()
