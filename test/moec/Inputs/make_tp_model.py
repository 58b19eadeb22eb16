#!/usr/bin/env python3
"""Writes OUT/tp-block.onnx: one decoder layer written the way torch.onnx
writes a Llama-style block, for the tensor-parallel tests. Grouped-query
attention with 4 query heads and 2 KV heads (head dim 2, repeat_kv as
Unsqueeze/Expand/Reshape), a causal mask, the output projection and the
residual; a SwiGLU MLP (gate/up/down); the final RMSNorm and an LM head of
16 logits. One sequence of 4 tokens (batch 1), hidden size 8. Weights are
random (seed 0) and small, so that `moec --emit=mlir` prints them inline.
Also writes OUT/tp-block.x.npy, an input."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
S, H, NH, KVH, D, F, V = 4, 8, 4, 2, 2, 16, 16

inits, nodes = [], []


def const(name, value):
    inits.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def weight(name, *shape):
    return const(name, (rng.standard_normal(shape) * 0.4).astype(np.float32))


def node(op, ins, name, **attrs):
    nodes.append(helper.make_node(op, ins, [name], name="node_" + name, **attrs))
    return name


def i64(name, v):
    return const(name, np.array(v, dtype=np.int64))


def rms_norm(x, tag):
    sq = node("Mul", [x, x], tag + "_sq")
    mean = node("ReduceMean", [sq, i64(tag + "_axes", [-1])], tag + "_mean")
    eps = const(tag + "_eps", np.array(1e-6, dtype=np.float32))
    var = node("Add", [mean, eps], tag + "_var")
    rs = node("Sqrt", [var], tag + "_rs")
    normed = node("Div", [x, rs], tag + "_div")
    g = const(tag + "_g", (1 + 0.1 * rng.standard_normal(H)).astype(np.float32))
    return node("Mul", [normed, g], tag + "_out")


def heads(x, n, tag):
    r = node("Reshape", [x, i64(tag + "_shape", [1, S, n, D])], tag + "_view")
    return node("Transpose", [r], tag + "_heads", perm=[0, 2, 1, 3])


def repeat_kv(x, tag):
    u = node("Unsqueeze", [x, i64(tag + "_ax", [2])], tag + "_unsq")
    e = node("Expand", [u, i64(tag + "_reps", [1, KVH, NH // KVH, S, D])], tag + "_exp")
    return node("Reshape", [e, i64(tag + "_flat", [1, NH, S, D])], tag + "_rep")


x = "x"
n1 = rms_norm(x, "ln1")
q = heads(node("MatMul", [n1, weight("wq", H, NH * D)], "q_proj"), NH, "q")
k = repeat_kv(heads(node("MatMul", [n1, weight("wk", H, KVH * D)], "k_proj"), KVH, "k"), "k")
v = repeat_kv(heads(node("MatMul", [n1, weight("wv", H, KVH * D)], "v_proj"), KVH, "v"), "v")
kt = node("Transpose", [k], "k_t", perm=[0, 1, 3, 2])
scores = node("MatMul", [q, kt], "scores")
scaled = node("Mul", [scores, const("scale", np.array(D ** -0.5, dtype=np.float32))], "scaled")
mask = np.triu(np.full((S, S), -1e9, dtype=np.float32), 1).reshape(1, 1, S, S)
masked = node("Add", [scaled, const("mask", mask)], "masked")
probs = node("Softmax", [masked], "probs", axis=-1)
ctx = node("MatMul", [probs, v], "ctx")
ctx_t = node("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3])
ctx_f = node("Reshape", [ctx_t, i64("ctx_shape", [1, S, NH * D])], "ctx_flat")
attn = node("MatMul", [ctx_f, weight("wo", NH * D, H)], "o_proj")
h = node("Add", [x, attn], "resid1")
n2 = rms_norm(h, "ln2")
gate = node("MatMul", [n2, weight("wg", H, F)], "gate_proj")
up = node("MatMul", [n2, weight("wu", H, F)], "up_proj")
act = node("Mul", [gate, node("Sigmoid", [gate], "gate_sig")], "silu")
down = node("MatMul", [node("Mul", [act, up], "gated"), weight("wd", F, H)], "down_proj")
h2 = node("Add", [h, down], "resid2")
n3 = rms_norm(h2, "ln_f")
node("MatMul", [n3, weight("lm_head", H, V)], "logits")

g = helper.make_graph(
    nodes, "tp_block",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, S, H])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, S, V])],
    inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
m.ir_version = 9
onnx.checker.check_model(m, full_check=True)
onnx.save(m, os.path.join(out, "tp-block.onnx"))
np.save(os.path.join(out, "tp-block.x.npy"),
        rng.standard_normal((1, S, H)).astype(np.float32))
