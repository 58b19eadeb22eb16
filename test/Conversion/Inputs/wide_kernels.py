#!/usr/bin/env python3
"""Models with wide kernels for kernel-operands.test.

    wide_kernels.py concat N OUT.onnx   # y = Tanh(Concat(x0, ..., x{N-1}))
    wide_kernels.py call N OUT.mlir     # a per-rank module whose one kernel
                                        # call at node 'node_wide' takes the
                                        # input N times

The concatenation of N [1, 4] inputs is one kernel that reads N tensors
(more than a kernel may take when N >= moert::kMaxKernelOperands: the
compiler splits it). The module is what moe-outline-kernels never writes, a
kernel call of N operands, for the plan writer's check of the limit.
"""
import sys


def concat(n, out):
    import onnx
    import onnx.helper as h
    xs = [f"x{i}" for i in range(n)]
    g = h.make_graph(
        [h.make_node("Concat", xs, ["c"], axis=0, name="cat"),
         h.make_node("Tanh", ["c"], ["y"], name="tanh")],
        "wide_concat",
        [h.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [1, 4])
         for x in xs],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, 4])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, out)


def call(n, out):
    t = "tensor<4xf32>"
    lines = [
        "module {",
        '  shard.grid @mesh(shape = 1) {moe.axes = ["ep"], moe.partitioned}',
        f'  func.func @main(%x: {t} {{onnx.name = "x"}}) -> '
        f'({t} {{onnx.name = "y"}}) {{',
        "    %y = call @kernel_0(" + ", ".join(["%x"] * n) + ") : (" +
        ", ".join([t] * n) + f') -> {t} loc("node_wide")',
        f"    return %y : {t}",
        "  }",
        "  func.func @kernel_0(" +
        ", ".join(f"%a{i}: {t}" for i in range(n)) +
        f") -> {t} attributes {{moe.kernel}} {{",
        f"    return %a{n - 1} : {t}",
        "  }",
        "}",
    ]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    {"concat": concat, "call": call}[sys.argv[1]](int(sys.argv[2]),
                                                  sys.argv[3])
