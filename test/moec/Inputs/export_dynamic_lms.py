#!/usr/bin/env python3
"""Exports the causal LMs of examples/dynamo/gen.py (causal_lms(): Qwen2-MoE,
Qwen3-MoE, OLMoE, GLM-4-MoE, GraniteMoE, ERNIE-4.5-MoE, DeepSeek-V3) with a
symbolic batch and sequence, for test/moec/dynamic-causal-lm-families.test.

    export_dynamic_lms.py OUT_DIR   # OUT_DIR/NAME/model.onnx, per family

Needs torch, transformers and onnxscript (lit feature "torch")."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "..", "examples", "dynamo"))
import gen  # noqa: E402

out = sys.argv[1]
for name, cfg in gen.causal_lms().items():
    gen.export_lm(name, cfg, 4, 8, os.path.join(out, name), dynamic=True)
