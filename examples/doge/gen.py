#!/usr/bin/env python3
"""Doge (transformers 5.25 DogeForCausalLM with is_moe=True: DogeCDMoE) as
a tiny random model: the MoE block and the whole 2-layer causal LM, both
exported with torch.onnx's TorchScript exporter (opset 17; the dynamo
exporter fails inside torch on this model: "Cannot view a tensor with shape
[2, 8, 4, 16] and strides (512, 16, 128, 1)"). Saves torch's outputs.

    python3 examples/doge/gen.py   # torch, transformers, onnx

DogeCDMoE's routed experts are rows of two [E, H] embedding tables picked
by product keys (two top-k over halves of the router logits, then a top-k
of their sums): FFNs of intermediate size 1, which moec raises to
moe.experts with the router kept as the model's own ops
(docs/raising.md). Hidden 64, 64 experts, top-4, a SwiGLU shared MLP of
intermediate 32. Block weights N(0, 0.1) (seed 0) so that the experts
matter; the causal LM keeps transformers' initialisation.

Writes block/{model.onnx, input.npy, output.npy, input2.npy, output2.npy}
(a second input, not the export's) and causal_lm/{model.onnx, input.npy,
output.npy}.
"""
import os
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
B, S, H = 2, 8, 64


class Block(torch.nn.Module):
    """DogeCDMoE without its second output (the router logits)."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, hidden_states):
        return self.mlp(hidden_states)[0]


class Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        return self.m(input_ids=input_ids).logits


def main():
    cfg = transformers.AutoConfig.for_model(
        "doge", hidden_size=H, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
        max_position_embeddings=64, is_moe=True, num_experts=64,
        num_experts_per_tok=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()

    block = Block(model.model.layers[0].mlp).eval()
    out = os.path.join(HERE, "block")
    os.makedirs(out, exist_ok=True)
    saved = {n: p.detach().clone() for n, p in block.named_parameters()}
    with torch.no_grad():
        for p in block.parameters():
            torch.nn.init.normal_(p, std=0.1)
    xs = [torch.randn(B, S, H, generator=torch.Generator().manual_seed(s))
          for s in (0, 1)]
    torch.onnx.export(block, (xs[0],), os.path.join(out, "model.onnx"),
                      dynamo=False, opset_version=17,
                      input_names=["hidden_states"], output_names=["output"])
    with torch.no_grad():
        for x, suffix in zip(xs, ("", "2")):
            np.save(os.path.join(out, f"input{suffix}.npy"), x.numpy())
            np.save(os.path.join(out, f"output{suffix}.npy"),
                    block(x).numpy())
        # The causal LM keeps transformers' initialisation.
        for n, p in block.named_parameters():
            p.copy_(saved[n])

    out = os.path.join(HERE, "causal_lm")
    os.makedirs(out, exist_ok=True)
    lm = Logits(model).eval()
    ids = torch.randint(0, 128, (B, S),
                        generator=torch.Generator().manual_seed(1))
    torch.onnx.export(lm, (ids,), os.path.join(out, "model.onnx"),
                      dynamo=False, opset_version=17,
                      input_names=["input_ids"], output_names=["logits"])
    np.save(os.path.join(out, "input.npy"), ids.numpy())
    with torch.no_grad():
        np.save(os.path.join(out, "output.npy"), lm(ids).numpy())
    for d in ("block", "causal_lm"):
        print(d, os.path.getsize(os.path.join(HERE, d, "model.onnx")),
              "bytes")


if __name__ == "__main__":
    main()
