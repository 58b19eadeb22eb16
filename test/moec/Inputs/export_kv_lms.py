#!/usr/bin/env python3
"""Exports each causal LM of examples/dynamo/gen.py (causal_lms(): Qwen2-MoE,
Qwen3-MoE, OLMoE, GLM-4-MoE, GraniteMoE, ERNIE-4.5-MoE, DeepSeek-V3) as a
prefill (input_ids [4, S] -> logits and each layer's present keys and values)
and a decode step with a symbolic cache length (gen.export_prefill and
gen.export_decode_step, the same seeded weights), for
test/moec/generate-kv-families.test.

    export_kv_lms.py OUT_DIR

Writes per family OUT_DIR/NAME/prefill/model.onnx, decode/model.onnx,
prefill/generate.npy (torch's greedy ids: 16 new tokens after 8),
prompt.npy (its first 8 columns) and decode-shapes.txt (moec's
--input-shape for the decode step: the cache length as `?`). Needs torch,
transformers and onnxscript (lit feature "torch")."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "..", "examples", "dynamo"))
import gen  # noqa: E402
import onnx  # noqa: E402

out = sys.argv[1]
for name, cfg in gen.causal_lms().items():
    d = os.path.join(out, name)
    gen.export_prefill(name + "_prefill", 4, 8, 16, cfg,
                       os.path.join(d, "prefill"))
    gen.export_decode_step(name + "_decode", 8, 4, os.path.join(d, "decode"),
                           True, cfg)
    m = onnx.load(os.path.join(d, "decode", "model.onnx"),
                  load_external_data=False)
    spec = []
    for i in m.graph.input:
        dims = [str(x.dim_value) if x.dim_value else "?"
                for x in i.type.tensor_type.shape.dim]
        spec.append(f"{i.name}={','.join(dims)}")
    with open(os.path.join(d, "decode-shapes.txt"), "w") as f:
        f.write(";".join(spec))
    g = np.load(os.path.join(d, "prefill", "generate.npy"))
    np.save(os.path.join(d, "prompt.npy"), g[:, :8])
