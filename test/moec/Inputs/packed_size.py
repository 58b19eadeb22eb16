#!/usr/bin/env python3
"""Writes one com.microsoft.MatMulNBits model (K 512, N 256, 4 bits, block
32, random codes and scales) and the same layer as a plain MatMul on its
fp32 weight (the numpy dequantization of the codes), for packed-weights.test:

    packed_size.py OUT_DIR

OUT_DIR/int4.onnx, OUT_DIR/fp32.onnx and OUT_DIR/a.npy (the input)."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

K, N, BITS, BS, M = 512, 256, 4, 32, 3


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


if __name__ == "__main__":
    main()
