#!/usr/bin/env python3
"""Exports a tiny random Mixtral from transformers, compiles it for ep=4,
runs it on 4 CPU ranks and compares the logits with torch's.

    python3 examples/python/mixtral_ep4.py [WORK_DIR]

Needs torch, transformers and onnxscript (the dynamo exporter) and the moec
package (pip install ./python; docs/python.md). The model is
transformers' own MixtralForCausalLM with 2 decoder layers of 8 experts,
top-2; its batched experts and eager attention are the forms
torch.onnx's dynamo exporter translates (README.md, docs/raising.md).
"""
import os
import sys

import torch
import transformers

import moec

work = sys.argv[1] if len(sys.argv) > 1 else "."
cfg = transformers.MixtralConfig(
    vocab_size=256, hidden_size=64, intermediate_size=128,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    num_local_experts=8, num_experts_per_tok=2, use_cache=False)
cfg._experts_implementation, cfg._attn_implementation = "batched_mm", "eager"
torch.manual_seed(0)

# --- the user-facing part ----------------------------------------------------
model = transformers.MixtralForCausalLM(cfg).eval()
ids = torch.randint(0, cfg.vocab_size, (4, 8))
onnx_path = os.path.join(work, "mixtral.onnx")
torch.onnx.export(model, (ids,), onnx_path, dynamo=True,
                  input_names=["input_ids"], output_names=["logits"])
plan = moec.compile(onnx_path, mesh="ep=4")               # 2 experts per rank
logits = plan.run({"input_ids": ids}, ranks=4)["logits"]  # 4 thread ranks
with torch.no_grad():
    expected = model(ids).logits.numpy()
err = abs(logits - expected).max() / abs(expected).max()
# -----------------------------------------------------------------------------

print(f"mesh {plan.mesh}, logits {list(logits.shape)}, max rel. error "
      f"vs torch {err:.2e}")
for layer in plan.report()["layers"]:
    print("experts per ep rank:", layer["experts_per_ep_rank"])
sys.exit(0 if err <= 1e-4 else 1)
