"""Plan.generate from Python against torch's greedy ids (test/python/
generate.test): examples/dynamo/mixtral_causal_lm_dynamic compiled with a
dynamic sequence for ep=4 and ep=1, generated on thread ranks, plus the
errors."""
import os
import sys

import numpy as np

import moec

src = sys.argv[1]
d = os.path.join(src, "examples", "dynamo", "mixtral_causal_lm_dynamic")
ref = np.load(os.path.join(d, "generate.npy"))  # torch: [4, 8 + 16]
prompt = ref[:, :8].copy()
model = os.path.join(d, "model.onnx")

plan = moec.compile(model, mesh="ep=4", input_shapes={"input_ids": (4, "?")},
                    max_tokens=32)
ids = plan.generate(prompt, max_new_tokens=16, ranks=4)
print("ep=4", ids.shape, "same as torch" if (ids == ref).all() else "DIFFERENT")
prefill, decode = plan.last_generate_seconds
print("seconds", "ok" if prefill > 0 and decode > 0 else "MISSING")

one = moec.compile(model, mesh="ep=1", input_shapes={"input_ids": (1, "?")},
                   max_tokens=24)
ids = one.generate(prompt[:1], max_new_tokens=16)
print("ep=1", ids.shape,
      "same as torch" if (ids == ref[:1]).all() else "DIFFERENT")

a = plan.generate(prompt, 8, ranks=4, temperature=1.5, seed=11)
b = plan.generate(prompt, 8, ranks=4, temperature=1.5, seed=11)
print("seeded", "same" if (a == b).all() else "DIFFERENT")


def error(f):
    try:
        f()
        print("no error")
    except Exception as e:
        print("raised", type(e).__name__ + ":", e)


error(lambda: one.generate(prompt[:1], max_new_tokens=20))
error(lambda: plan.generate(prompt.astype(np.int32), 4, ranks=4))
static = moec.compile(os.path.join(src, "examples", "dynamo",
                                   "mixtral_causal_lm", "model.onnx"),
                      mesh="ep=4")
error(lambda: static.generate(prompt, 4, ranks=4))

# With a KV cache: a prefill plan and a decode-step plan of one model.
kv = os.path.join(src, "examples", "dynamo")
kvref = np.load(os.path.join(kv, "mixtral_prefill_dynamic", "generate.npy"))
prefill = moec.compile(os.path.join(kv, "mixtral_prefill_dynamic",
                                    "model.onnx"), mesh="ep=4",
                       input_shapes={"input_ids": (4, "?")}, max_tokens=8)
cache = {f"past_{t}_{layer}": (4, 2, "?", 16) for layer in (0, 1)
         for t in "kv"}
decode = moec.compile(os.path.join(kv, "mixtral_decode_step_dynamic",
                                   "model.onnx"), mesh="ep=4",
                      input_shapes={"input_ids": (4, 1),
                                    "position_ids": (4, 1), **cache},
                      max_tokens=24)
ids = prefill.generate(kvref[:, :8], max_new_tokens=16, ranks=4,
                       decode_plan=decode)
print("kv ep=4", ids.shape,
      "same as torch" if (ids == kvref).all() else "DIFFERENT")
error(lambda: prefill.generate(kvref[:, :8], 19, ranks=4,
                               decode_plan=decode))
