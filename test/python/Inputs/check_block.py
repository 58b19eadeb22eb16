#!/usr/bin/env python3
"""The moec package on examples/mixtral_block (no torch): compiles it from
Python for ep=4 (from the path) and dp=2,ep=2 (from an onnx.ModelProto),
runs both on thread ranks and compares with onnxruntime on the same file;
checks the report against `moec --report=json`, the saved plan against
`moe-run`, the run reports against the routing, and that bad input raises
Python exceptions naming the problem (and the interpreter goes on).

    check_block.py MOEC_SRC WORK_DIR MOEC MOE_RUN
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

import moec
import moert

src, work, moec_tool, moe_run = sys.argv[1:5]
model = os.path.join(src, "examples", "mixtral_block", "model.onnx")
x = np.load(os.path.join(src, "examples", "mixtral_block", "input.npy"))
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
ref = dict(zip([o.name for o in sess.get_outputs()],
               sess.run(None, {"hidden_states": x})))


def compare(tag, outs):
    assert sorted(outs) == sorted(ref), (sorted(outs), sorted(ref))
    for name in sorted(ref):
        got, want = outs[name], ref[name]
        assert got.shape == want.shape and got.dtype == want.dtype, \
            (name, got.shape, got.dtype, want.shape, want.dtype)
        err = float(abs(got - want).max() / abs(want).max())
        print(f"{'ok' if err <= 1e-4 else 'FAIL'} {tag} {name}: "
              f"max rel err {err:.1e}")


# ep=4 from the path: 8 experts, 2 per rank.
plan = moec.compile(model, mesh="ep=4")
print("plan", plan.mesh, plan.world_size,
      [(s.name, s.dtype, s.shape) for s in plan.inputs])
compare("ep=4", plan.run({"hidden_states": x}, ranks=4))

# The report is moec's --report=json for the same flags.
cli = json.loads(subprocess.run(
    [moec_tool, model, "--mesh", "ep=4", "--report=json"],
    check=True, capture_output=True, text=True).stdout)
print("report equal to moec --report=json:", plan.report() == cli)
print("experts per ep rank:", plan.report()["layers"][0]["experts_per_ep_rank"])

# Every rank routed its tokens: 16 tokens x top-2 assignments in all.
reps = plan.last_run_report
routed = sum(sum(r["layers"][0]["tokens_per_expert"]) for r in reps)
print("ranks reporting:", len(reps), "assignments routed:", routed)

# The saved plan runs in moe-run with the same result, bit for bit.
saved = plan.save(os.path.join(work, "block_ep4.moeplan"))
np.save(os.path.join(work, "x.npy"), x)
subprocess.run([moe_run, "-n", "4", "--threads", saved, "--input",
                f"hidden_states={work}/x.npy", "-o", f"{work}/out.npz"],
               check=True, capture_output=True)
cli_out = np.load(os.path.join(work, "out.npz"))
again = moert.load(saved).run({"hidden_states": x})
print("moe-run equals Plan.run:",
      all(np.array_equal(cli_out[n], again[n]) for n in ref))
print("describe:", moert.load(saved).describe().splitlines()[0])

# dp=2,ep=2 from an onnx.ModelProto.
proto = onnx.load(model)
compare("dp=2,ep=2", moec.compile(proto, mesh="dp=2,ep=2").run(
    {"hidden_states": x}))

# A warning (3 ranks hold 3, 3, 2 experts) is a UserWarning naming the node;
# the plan still matches onnxruntime.
import warnings  # noqa: E402

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    uneven = moec.compile(model, mesh="ep=3")
for w in caught:
    print(f"{w.category.__name__}: {w.message}")
compare("ep=3", uneven.run({"hidden_states": x}))


def expect(exc, fn, *words):
    try:
        fn()
    except exc as e:
        msg = str(e)
        missing = [w for w in words if w not in msg]
        print(f"{'raised' if not missing else 'WRONG MESSAGE'} "
              f"{type(e).__name__}: {msg.splitlines()[0]}"
              + (f" (missing {missing})" if missing else ""))
        return
    except BaseException as e:  # noqa: BLE001
        print(f"WRONG EXCEPTION {type(e).__name__}: {e}")
        return
    print(f"NOT RAISED {exc.__name__}")


# A model whose node moec cannot import: the error names the node.
bad = onnx.helper.make_model(onnx.helper.make_graph(
    [onnx.helper.make_node("Det", ["a"], ["b"], name="the_bad_node")], "bad",
    [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [3, 3])],
    [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [])]),
    opset_imports=[onnx.helper.make_opsetid("", 17)])
expect(moec.CompileError, lambda: moec.compile(bad, mesh="ep=1"),
       "the_bad_node", "Det")
# A pass's error names the node too; the stage follows it.
expect(moec.CompileError, lambda: moec.compile(model, mesh="ep=16"),
       "node '/TopK': error: ep=16 exceeds the 8 experts",
       "sharding for --mesh ep=16 failed")
expect(moec.CompileError, lambda: moec.compile(model, mesh="ep=four"),
       "--mesh")
expect(moec.CompileError, lambda: moec.compile(model, precision="fp8"),
       "--precision", "fp8")
expect(moec.CompileError, lambda: moec.compile(model, redundant_experts="x"),
       "--redundant-experts")
expect(TypeError, lambda: moec.compile(model, no_such_flag=1),
       "no-such-flag")
expect(moec.CompileError,
       lambda: moec.compile(os.path.join(work, "missing.onnx")),
       "missing.onnx")
expect(ValueError, lambda: plan.run({}), "hidden_states")
expect(ValueError, lambda: plan.run({"hidden_states": x, "y": x}), "'y'")
expect(ValueError, lambda: plan.run({"hidden_states": x[:1]}),
       "hidden_states")
expect(ValueError, lambda: plan.run({"hidden_states": x.astype(np.float64)}),
       "hidden_states", "dtype")
expect(ValueError, lambda: plan.run({"hidden_states": x}, ranks=3),
       "4 ranks", "ranks=3")
expect(ValueError, lambda: plan.run({"hidden_states": x}, threads=False),
       "mpirun")
expect(TypeError, lambda: plan.run({"hidden_states": object()}),
       "hidden_states", "object")
garbage = os.path.join(work, "garbage.moeplan")
with open(garbage, "wb") as f:
    f.write(b"not a plan at all" * 10)
expect(moec.PlanError, lambda: moec.load(garbage), "garbage.moeplan")
expect(moec.PlanError, lambda: moec.load(garbage + ".missing"), "missing")
expect(moec.PlanError, lambda: moert.load(saved).report(), "report")

# Still alive, and still right.
compare("ep=4 again", plan.run({"hidden_states": x}))
