"""Writes models whose shape operand has a huge constant length (a rank
libonnx's shape inference would build: it ran out of memory, issue 17).
usage: rank-bomb.py cos|range|concat|tile|ok OUT.onnx
(concat and tile: the long operand reaches the Expand through a Cast and a
Concat with a short one, or through a Tile by 3.)"""
import sys

from onnx import TensorProto as T
from onnx import helper


def const(name, dims, vals):
    return helper.make_node("Constant", [], [name],
                            value=helper.make_tensor(name, T.INT64, dims, vals))


kind, out = sys.argv[1], sys.argv[2]
n = 50577534877698 if kind != "ok" else 2
if kind in ("concat", "tile"):
    n = 600  # long only once concatenated or tiled
    nodes = [const("len", [1], [n]),
             helper.make_node("ConstantOfShape", ["len"], ["ones"], name="cos",
                              value=helper.make_tensor("v", T.INT64, [1], [1])),
             helper.make_node("Cast", ["ones"], ["ones64"], to=T.INT64)]
    if kind == "concat":
        nodes += [helper.make_node("Concat", ["ones64", "ones64"], ["shape"],
                                   name="concat", axis=0)]
    else:
        nodes += [const("reps", [1], [3]),
                  helper.make_node("Tile", ["ones64", "reps"], ["shape"],
                                   name="tile")]
    nodes += [helper.make_node("Expand", ["x", "shape"], ["y"], name="expand")]
elif kind in ("cos", "ok"):
    nodes = [const("len", [1], [n]),
             helper.make_node("ConstantOfShape", ["len"], ["shape"], name="cos",
                              value=helper.make_tensor("v", T.INT64, [1], [1])),
             helper.make_node("Expand", ["x", "shape"], ["y"], name="expand")]
else:
    nodes = [const("a", [], [0]), const("b", [], [n]), const("d", [], [1]),
             helper.make_node("Range", ["a", "b", "d"], ["shape"], name="range"),
             helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")]
g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1])],
                      [helper.make_tensor_value_info("y", T.FLOAT, ["a", "b"])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
open(out, "wb").write(m.SerializeToString())
