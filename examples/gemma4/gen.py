#!/usr/bin/env python3
"""Exports the MoE part of transformers' Gemma 4 decoder layer (tiny random
config, no download) and saves torch's reference output.

    python3 examples/gemma4/gen.py   # needs torch, transformers, onnx

Gemma 4 (transformers 5.25, `enable_moe_block=True`) runs a dense MLP and an
MoE block side by side in each decoder layer. The MoE block is not a module
of its own: the layer calls its `router` (`Gemma4TextRouter`: an RMS norm
without scale, times a learned scale and hidden**-0.5, a linear layer,
softmax, top-k, renormalised, then times `per_expert_scale[top_k_index]`)
on the residual, and its `experts` (`Gemma4TextExperts`, eager loop over the
hit experts, fused gate/up, GELU with tanh) on `pre_feedforward_layernorm_2`
of the same residual. `Block` below is exactly that part:

    w, idx = router(x);  y = experts(pre_feedforward_layernorm_2(x), idx, w)

Hidden 64, 8 experts of intermediate 32, top-2; router and expert weights
N(0, 0.1), per_expert_scale U(0.5, 1.5) (ones by default, which would hide
it). TorchScript exporter, opset 17; input [2, 16, 64] (seed 0 hits every
expert). model.onnx, input.npy, output.npy (torch's output).

`gen.py causal_lm` writes the whole 2-layer causal LM (causal_lm/, see
causal_lm() below); no argument writes both.
"""
import collections
import os
import sys
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


class Block(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        _, w, idx = self.layer.router(flat)
        y = self.layer.experts(self.layer.pre_feedforward_layernorm_2(flat),
                               idx, w)
        return y.reshape(x.shape)


def main():
    cfg = transformers.AutoConfig.for_model(
        "gemma4_text", hidden_size=64, intermediate_size=64,
        moe_intermediate_size=32, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=128,
        enable_moe_block=True, num_experts=8, top_k_experts=2,
        max_position_embeddings=64)
    cfg._experts_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    layer = model.model.layers[0]
    for p in list(layer.router.parameters()) + list(layer.experts.parameters()):
        torch.nn.init.normal_(p, std=0.1)
    torch.nn.init.uniform_(layer.router.per_expert_scale, 0.5, 1.5)
    block = Block(layer).eval()
    for seed in range(100):
        x = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            _, _, idx = layer.router(x.reshape(-1, 64))
        if idx.unique().numel() == 8:
            break
    else:
        sys.exit("no input seed below 100 hits every expert")
    with torch.no_grad():
        y = block(x)
    path = os.path.join(HERE, "model.onnx")
    torch.onnx.export(block, (x,), path, dynamo=False, opset_version=17,
                      input_names=["hidden_states"], output_names=["output"])
    np.save(os.path.join(HERE, "input.npy"), x.numpy())
    np.save(os.path.join(HERE, "output.npy"), y.numpy())
    import onnx
    ops = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    print("transformers", transformers.__version__, "torch", torch.__version__,
          "activation", cfg.hidden_activation, "input seed", seed)
    print(os.path.getsize(path), "bytes; ops", dict(sorted(ops.items())))


class Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        return self.m(input_ids=input_ids, use_cache=False).logits


def causal_lm():
    """The whole 2-layer Gemma4ForCausalLM (a sliding-window and a full
    attention layer, each with its dense MLP and MoE block side by side),
    batched_mm experts, dynamo exporter (opset 20): causal_lm/{model.onnx,
    input.npy, output.npy}. Per-layer input embeddings, global head dim
    and their vocabulary shrunk to the tiny config (the defaults make a
    540 MB file); per_expert_scale U(0.5, 1.5); transformers' other
    initialisation."""
    cfg = transformers.AutoConfig.for_model(
        "gemma4_text", hidden_size=64, intermediate_size=64,
        moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=128,
        enable_moe_block=True, num_experts=8, top_k_experts=2,
        max_position_embeddings=64, tie_word_embeddings=False,
        vocab_size_per_layer_input=128, hidden_size_per_layer_input=16,
        global_head_dim=16)
    cfg._experts_implementation = "batched_mm"
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            torch.nn.init.uniform_(layer.router.per_expert_scale, 0.5, 1.5)
    lm = Logits(model).eval()
    ids = torch.randint(0, 128, (2, 8),
                        generator=torch.Generator().manual_seed(1))
    out = os.path.join(HERE, "causal_lm")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    torch.onnx.export(lm, (ids,), path, dynamo=True, opset_version=20,
                      external_data=False, input_names=["input_ids"],
                      output_names=["logits"])
    np.save(os.path.join(out, "input.npy"), ids.numpy())
    with torch.no_grad():
        np.save(os.path.join(out, "output.npy"), lm(ids).numpy())
    print("causal_lm", os.path.getsize(path), "bytes")


if __name__ == "__main__":
    # No argument: the block and the causal LM; `block` or `causal_lm`: one.
    which = sys.argv[1:] or ["block", "causal_lm"]
    if "block" in which:
        main()
    if "causal_lm" in which:
        causal_lm()
