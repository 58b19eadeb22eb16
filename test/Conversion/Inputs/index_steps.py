#!/usr/bin/env python3
"""ONNX models whose router stays dense ops (TopK, ScatterElements), for
test/Conversion/index-steps.test.

    index_steps.py router OUT.onnx   PhiMoE's sparsemixer pattern on router
        logits (top-2, the chosen scores masked with -inf by a scatter as
        torch.scatter(scores, -1, ids, -inf) exports it, the best of the
        rest), gates scattered with reduction add and a MatMul of them; a
        smallest-3 TopK over a 3-d view; axis-0 scatters with constant int32
        indices (negative ones, duplicates) for mul, max and min; an int64
        scatter (the chosen experts as a 0/1 mask).
    index_steps.py bad OUT.onnx DIR  a scatter whose int64 indices are a model
        input, and in DIR x.npy and idx.npy with one index out of range.
    index_steps.py input X.npy       the input of to-plan-index.mlir.
    index_steps.py check X.npy OUT.npz  to-plan-index.mlir's outputs on 2
        ranks against numpy; prints "ok NAME" per output.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

T, H, E = 8, 16, 6


def const(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def router(path):
    rng = np.random.default_rng(7)
    rows = np.array([[0, -1, 3, 3, -8, 7], [0, 2, -5, 3, 1, -1]], np.int32)
    inits = [
        const("wr", rng.standard_normal((H, E)).astype(np.float32)),
        const("we", rng.standard_normal((E, H)).astype(np.float32)),
        const("ninf", np.full((T, 2), -np.inf, np.float32)),
        const("rows", rows),
        const("upd", rng.standard_normal((2, E)).astype(np.float32)),
        const("shape3", np.array([2, 4, E], np.int64)),
        const("zeros_i64", np.zeros((T, E), np.int64)),
        const("ones_i64", np.ones((T, 2), np.int64)),
        const("k1", np.array([1], np.int64)),
        const("k2", np.array([2], np.int64)),
        const("k3", np.array([3], np.int64)),
    ]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wr"], ["logits"], name="/router/MatMul"),
        n("TopK", ["logits", "k2"], ["top", "idx"], axis=-1, name="/router/TopK"),
        n("ScatterElements", ["logits", "idx", "ninf"], ["masked"], axis=1,
          name="/router/Scatter"),
        n("TopK", ["masked", "k1"], ["second", "second_idx"], axis=1,
          name="/router/TopK_1"),
        n("Softmax", ["masked"], ["probs"], axis=1, name="/router/Softmax"),
        n("Softmax", ["top"], ["w"], axis=1, name="/router/Softmax_1"),
        n("ScatterElements", ["probs", "idx", "w"], ["gates"], axis=1,
          reduction="add", name="/router/ScatterAdd"),
        n("MatMul", ["gates", "we"], ["y"], name="/out/MatMul"),
        n("Reshape", ["logits", "shape3"], ["l3"], name="/low/Reshape"),
        n("TopK", ["l3", "k3"], ["low", "low_idx"], axis=2, largest=0,
          name="/low/TopK"),
        n("ScatterElements", ["logits", "rows", "upd"], ["prod"], axis=0,
          reduction="mul", name="/rows/Mul"),
        n("ScatterElements", ["logits", "rows", "upd"], ["hi"], axis=0,
          reduction="max", name="/rows/Max"),
        n("ScatterElements", ["logits", "rows", "upd"], ["lo"], axis=0,
          reduction="min", name="/rows/Min"),
        n("ScatterElements", ["zeros_i64", "idx", "ones_i64"], ["chosen"],
          axis=1, name="/router/Chosen"),
    ]
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    outs = [("y", f32, [T, H]), ("idx", i64, [T, 2]), ("second", f32, [T, 1]),
            ("second_idx", i64, [T, 1]), ("low", f32, [2, 4, 3]),
            ("low_idx", i64, [2, 4, 3]), ("prod", f32, [T, E]),
            ("hi", f32, [T, E]), ("lo", f32, [T, E]), ("chosen", i64, [T, E])]
    g = helper.make_graph(
        nodes, "index_steps", [helper.make_tensor_value_info("x", f32, [T, H])],
        [helper.make_tensor_value_info(*o) for o in outs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)


def bad(path, out_dir):
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    g = helper.make_graph(
        [helper.make_node("ScatterElements", ["x", "idx", "u"], ["y"], axis=1,
                          name="/bad/Scatter")],
        "bad_scatter",
        [helper.make_tensor_value_info("x", f32, [4, 5]),
         helper.make_tensor_value_info("idx", i64, [4, 2])],
        [helper.make_tensor_value_info("y", f32, [4, 5])],
        [const("u", np.ones((4, 2), np.float32))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    os.makedirs(out_dir, exist_ok=True)
    np.save(os.path.join(out_dir, "x.npy"), np.zeros((4, 5), np.float32))
    idx = np.array([[0, 1], [2, -5], [4, 7], [1, 1]], np.int64)  # 7: bad
    np.save(os.path.join(out_dir, "idx.npy"), idx)


def topk(x, k, largest):
    """ONNX TopK over the last axis: ties to the lower index (stable)."""
    order = np.argsort(-x if largest else x, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(x, order, -1), order


def check(x_path, out_path):
    """to-plan-index.mlir on 2 ranks, each holding one row of x [2, 3, 8]."""
    x = np.load(x_path)
    top, ids = topk(x, 2, True)
    masked = x.copy()
    np.put_along_axis(masked, ids, -np.inf, -1)
    rows = np.array([0, -1, 2, 2, -3, 1, 0, 2])
    low, acc = [], []
    for r in range(2):
        c = masked[r]  # this rank's [3, 8]
        low.append(topk(c, 3, False)[0])
        a = c.copy()
        for j, i in enumerate(rows):
            a[i % 3, j] += np.float32(0.5)
        acc.append(a)
    want = {"top": top, "ids": ids, "low": np.concatenate(low),
            "acc": np.concatenate(acc)}
    got = np.load(out_path)
    for name, w in want.items():
        g = got[name]
        ok = g.shape == w.shape and g.dtype == w.dtype and np.array_equal(g, w)
        print(("ok " if ok else "FAIL ") + name)


if __name__ == "__main__":
    if sys.argv[1] == "router":
        router(sys.argv[2])
    elif sys.argv[1] == "bad":
        bad(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "input":
        # Ties and signed zeros among the values.
        rng = np.random.default_rng(5)
        x = rng.integers(-3, 4, (2, 3, 8)).astype(np.float32) * 0.5
        np.save(sys.argv[2], x)
    else:
        check(sys.argv[2], sys.argv[3])
