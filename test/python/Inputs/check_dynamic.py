"""A plan with a dynamic token count from Python (test/python/dynamic.test):
examples/mixtral_block/dynamic.onnx given as an onnx.ModelProto (the model
is imported from bytes, and again at two other counts), compiled for ep=4
with a `?` dim and max_tokens=32, run at 1, 5 and 32 tokens against
onnxruntime on the same file; a count over the maximum is a RunError."""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

import moec

src = sys.argv[1]
model = os.path.join(src, "examples", "mixtral_block", "dynamic.onnx")
plan = moec.compile(onnx.load(model), mesh="ep=4",
                    input_shapes={"hidden_states": (1, "?", 64)},
                    max_tokens=32)
print([line for line in plan.describe().splitlines()
       if line.startswith("symbol")][0])
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
names = [o.name for o in sess.get_outputs()]
for t in (1, 5, 32):
    x = np.random.default_rng(t).standard_normal((1, t, 64)).astype(np.float32)
    ref = dict(zip(names, sess.run(None, {"hidden_states": x})))
    got = plan.run({"hidden_states": x}, ranks=4)
    for name in names:
        err = float(np.abs(got[name] - ref[name]).max())
        scale = float(np.abs(ref[name]).max())
        ok = got[name].shape == ref[name].shape and err <= 1e-4 * scale
        print(f"{'ok' if ok else 'FAIL'} {t} tokens {name} {got[name].shape}: "
              f"max rel err {err / scale:.1e}")
try:
    plan.run({"hidden_states": np.zeros((1, 40, 64), np.float32)}, ranks=4)
    print("FAIL: 40 tokens ran")
except moec.RunError as e:
    print("raised RunError:", e)
try:
    moec.compile(model, mesh="ep=4", input_shapes={"hidden_states": (1, "?", 64)})
    print("FAIL: ? without max_tokens compiled")
except moec.CompileError as e:
    print("raised CompileError:", e)
