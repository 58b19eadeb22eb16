#!/usr/bin/env python3
"""LongCat-Flash (transformers 5.25 LongcatFlashForCausalLM) as a tiny
random whole model, exported with torch.onnx's dynamo exporter (opset 20,
batched_mm experts, eager attention); saves torch's logits.

    python3 examples/longcat_flash/gen.py   # torch, transformers, onnx, onnxscript

LongCat-Flash's router: softmax over 8 + 2 experts, a selection bias
(e_score_correction_bias, N(0, 0.1) here so that it matters), top-2; the 2
zero-computation experts' picks are remapped by the model's own ops to real
experts with weight 0 and the token itself is added, weighted. moec raises
the 8 real experts to moe.experts with the router kept as the model's own
ops (docs/raising.md). One layer (num_layers=1: two MLA attention
sublayers, two dense MLPs and one MoE), hidden 64, experts of intermediate
32. Writes causal_lm/{model.onnx, input.npy, output.npy}. The MoE block
alone (TorchScript) is test/moec/Inputs/unraised-families/longcat_flash.onnx.
"""
import os
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


class Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        return self.m(input_ids=input_ids, use_cache=False).logits


def main():
    cfg = transformers.AutoConfig.for_model(
        "longcat_flash", hidden_size=64, ffn_hidden_size=64,
        expert_ffn_hidden_size=32, num_layers=1, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=128, max_position_embeddings=64,
        n_routed_experts=8, zero_expert_num=2, moe_topk=2,
        tie_word_embeddings=False, q_lora_rank=32, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, head_dim=8)
    cfg._experts_implementation = "batched_mm"
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, t in model.named_buffers():
            if n.endswith("e_score_correction_bias"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
    lm = Logits(model).eval()
    ids = torch.randint(0, 128, (2, 8),
                        generator=torch.Generator().manual_seed(1))
    out = os.path.join(HERE, "causal_lm")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    torch.onnx.export(lm, (ids,), path, dynamo=True, opset_version=20,
                      input_names=["input_ids"], output_names=["logits"],
                      external_data=False)
    np.save(os.path.join(out, "input.npy"), ids.numpy())
    with torch.no_grad():
        np.save(os.path.join(out, "output.npy"), lm(ids).numpy())
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
