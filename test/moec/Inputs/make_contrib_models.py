#!/usr/bin/env python3
"""Writes tiny ONNX models that use onnxruntime's contrib ops (the ones
onnxruntime-genai's model builder writes, issue 18) into a directory, one op
and attribute combination per model: NAME.onnx, and NAME.inputs holding the
`--input NAME=FILE.npy` arguments for its integer inputs (position ids,
written as NAME.*.npy; float inputs are left to the checker's seeded random
data). test/moec/contrib-ops.test compiles each with moec, runs it with
moe-run (test/e2e/check_plan.py) and moe-eval (test/e2e/check_onnx.py) and
compares every output with onnxruntime.

    make_contrib_models.py OUT_DIR
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(18)
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def save(name, nodes, inputs, outputs, inits=(), int_inputs=None, opset=17):
    """One model; `int_inputs` maps input names to the arrays to feed."""
    g = helper.make_graph(nodes, name, inputs, outputs,
                          [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset),
                                            helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    onnx.save(m, os.path.join(out, name + ".onnx"))
    args = []
    for n, a in (int_inputs or {}).items():
        p = os.path.join(out, f"{name}.{n}.npy")
        np.save(p, a)
        args.append(f"--input {n}={p}")
    with open(os.path.join(out, name + ".inputs"), "w") as f:
        f.write(" ".join(args) + "\n")


def weight(name, shape):
    return (name, rng.standard_normal(shape).astype(np.float32))


B, S, H = 2, 3, 16
x = vi("x", F, [B, S, H])
skip = vi("skip", F, [B, S, H])

# SimplifiedLayerNormalization: default domain (as onnxruntime registers
# it) over the last dim with inv_std_var; over the last two dims.
save("sln", [helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y", "inv"],
                              epsilon=1e-6)],
     [x], [vi("y", F, [B, S, H]), vi("inv", F, [B, S, 1])], [weight("g", [H])])
save("sln-axis1", [helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y"],
                                    axis=1, epsilon=1e-3, stash_type=1)],
     [x], [vi("y", F, [B, S, H])], [weight("g", [S, H])])
# At opset 21 (the builder's): moec rewrites opsets 18-22 to 17 first, and
# passes onnxruntime's default-domain op through.
save("sln-opset21", [helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y"],
                                      epsilon=1e-5)],
     [x], [vi("y", F, [B, S, H])], [weight("g", [H])], opset=21)

# The skip layer norms, every input and output combination the builder and
# BERT-style models use.
for simplified in (True, False):
    op = "SkipSimplifiedLayerNormalization" if simplified else "SkipLayerNormalization"
    tag = "sksln" if simplified else "skln"
    for beta in ([False] if simplified else [False, True]):
        for bias in (False, True):
            ins = ["x", "skip", "g"]
            inits = [weight("g", [H])]
            if not simplified:
                ins.append("beta" if beta else "")
                if beta:
                    inits.append(weight("beta", [H]))
            if bias:
                ins.append("bias")
                inits.append(weight("bias", [H]))
            while ins[-1] == "":
                ins.pop()
            name = f"{tag}{'-beta' if beta else ''}{'-bias' if bias else ''}"
            outs = ["y", "" if simplified else "mean", "inv", "sum"]
            outputs = [vi("y", F, [B, S, H]), vi("inv", F, [B, S, 1]),
                       vi("sum", F, [B, S, H])]
            if not simplified:
                outputs.insert(1, vi("mean", F, [B, S, 1]))
            save(name, [helper.make_node(op, ins, outs, domain="com.microsoft",
                                         epsilon=1e-5)],
                 [x, skip], outputs, inits)
# The builder's form: only output and the residual sum, skip [S, H].
save("sksln-sum-only",
     [helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip2", "g"],
                       ["y", "", "", "sum"], domain="com.microsoft", epsilon=1e-6)],
     [x, vi("skip2", F, [S, H])], [vi("y", F, [B, S, H]), vi("sum", F, [B, S, H])],
     [weight("g", [H])])

# Gelu variants: larger inputs reach tanh's and erf's saturation.
big = [helper.make_node("Mul", ["x", "three"], ["x3"])]
three = ("three", np.array(3.0, np.float32))
save("fastgelu", big + [helper.make_node("FastGelu", ["x3"], ["y"], domain="com.microsoft")],
     [x], [vi("y", F, [B, S, H])], [three])
save("fastgelu-bias", big + [helper.make_node("FastGelu", ["x3", "b"], ["y"],
                                              domain="com.microsoft")],
     [x], [vi("y", F, [B, S, H])], [three, weight("b", [H])])
save("biasgelu", big + [helper.make_node("BiasGelu", ["x3", "b"], ["y"], domain="com.microsoft")],
     [x], [vi("y", F, [B, S, H])], [three, weight("b", [H])])
save("gelu", big + [helper.make_node("Gelu", ["x3"], ["y"], domain="com.microsoft")],
     [x], [vi("y", F, [B, S, H])], [three])
save("quickgelu", big + [helper.make_node("QuickGelu", ["x3"], ["y"], domain="com.microsoft")],
     [x], [vi("y", F, [B, S, H])], [three])
save("quickgelu-alpha", big + [helper.make_node("QuickGelu", ["x3"], ["y"],
                                                domain="com.microsoft", alpha=-0.75)],
     [x], [vi("y", F, [B, S, H])], [three])

# RotaryEmbedding: 3-D and 4-D inputs, halves and interleaved, full and
# partial rotation, position ids as an offset and as a [B, S] tensor.
N, HS, M = 2, 8, 12
for four in (False, True):
    for inter in (0, 1):
        for rot in (0, 4):
            for pos_kind in ("offset", "tensor"):
                name = (f"rope-{'4d' if four else '3d'}-{'inter' if inter else 'halves'}"
                        f"-{'partial' if rot else 'full'}-{pos_kind}")
                shape = [B, N, S, HS] if four else [B, S, N * HS]
                half = (rot or HS) // 2
                attrs = {"interleaved": inter}
                if rot:
                    attrs.update(rotary_embedding_dim=rot, num_heads=N)
                elif not four:
                    attrs["num_heads"] = N
                if pos_kind == "offset":
                    pos = np.array([5], np.int64)
                else:
                    pos = rng.integers(0, M, (B, S)).astype(np.int64)
                # Caches from real angles, as the builder makes them.
                inv = 1.0 / (10000 ** (np.arange(half) / half))
                ang = np.arange(M)[:, None] * inv[None, :]
                save(name,
                     [helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"],
                                       domain="com.microsoft", **attrs)],
                     [vi("x", F, shape), vi("pos", I64, list(pos.shape))],
                     [vi("y", F, shape)],
                     [("cos", np.cos(ang).astype(np.float32)),
                      ("sin", np.sin(ang).astype(np.float32))],
                     int_inputs={"pos": pos})
