#!/usr/bin/env python3
"""JetMoE (transformers 5.25 JetMoeForCausalLM) as a tiny random model: the
MoE block (JetMoeMoE) and the whole 2-layer causal LM, exported with
torch.onnx's dynamo exporter (opset 20; the TorchScript exporter fails
inside torch on `index_add_` with repeated indices). Saves torch's outputs.

    python3 examples/jetmoe/gen.py   # torch, transformers, onnx, onnxscript

JetMoE writes its experts in the grouped form (ScatterMoE's): the (token,
choice) pairs sorted by expert id, split by the number of tokens per expert
(a Split whose sizes are computed at run time), one GEMM per chunk, the
outputs scaled by the sorted routing weights and added back with
`index_add`. moec raises it to moe.route + moe.experts (docs/raising.md).
The router: top-k of the logits, softmax over the k. Hidden 64, 8 experts
of intermediate 32, top-2. Block weights N(0, 0.1) (seed 0) so that the
experts matter; the causal LM keeps transformers' initialisation.

Writes block/{model.onnx, input.npy, output.npy, input2.npy, output2.npy}
(a second input, not the export's) and causal_lm/{model.onnx, input.npy,
output.npy}.
"""
import os
import sys
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
B, S, H = 2, 8, 64


class Block(torch.nn.Module):
    """JetMoeMoE without its second output (the router logits)."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, hidden_states):
        out = self.mlp(hidden_states)
        return out[0] if isinstance(out, tuple) else out


class Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        return self.m(input_ids=input_ids).logits


def export(module, args, path, names, outs):
    torch.onnx.export(module, args, path, dynamo=True, opset_version=20,
                      external_data=False, input_names=names,
                      output_names=outs)


def main(which):
    cfg = transformers.AutoConfig.for_model(
        "jetmoe", hidden_size=H, intermediate_size=32, num_hidden_layers=2,
        num_key_value_heads=2, kv_channels=16, vocab_size=128,
        max_position_embeddings=64, num_local_experts=8,
        num_experts_per_tok=2, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()

    if "block" in which:
        block = Block(model.model.layers[0].mlp).eval()
        out = os.path.join(HERE, "block")
        os.makedirs(out, exist_ok=True)
        saved = {n: p.detach().clone() for n, p in block.named_parameters()}
        with torch.no_grad():
            for p in block.parameters():
                torch.nn.init.normal_(p, std=0.1)
        xs = [torch.randn(B, S, H, generator=torch.Generator().manual_seed(s))
              for s in (0, 1)]
        export(block, (xs[0],), os.path.join(out, "model.onnx"),
               ["hidden_states"], ["output"])
        with torch.no_grad():
            for x, suffix in zip(xs, ("", "2")):
                np.save(os.path.join(out, f"input{suffix}.npy"), x.numpy())
                np.save(os.path.join(out, f"output{suffix}.npy"),
                        block(x).numpy())
            # The causal LM keeps transformers' initialisation.
            for n, p in block.named_parameters():
                p.copy_(saved[n])

    if "causal_lm" in which:
        out = os.path.join(HERE, "causal_lm")
        os.makedirs(out, exist_ok=True)
        lm = Logits(model).eval()
        ids = torch.randint(0, 128, (B, S),
                            generator=torch.Generator().manual_seed(1))
        export(lm, (ids,), os.path.join(out, "model.onnx"), ["input_ids"],
               ["logits"])
        np.save(os.path.join(out, "input.npy"), ids.numpy())
        with torch.no_grad():
            np.save(os.path.join(out, "output.npy"), lm(ids).numpy())
    for d in which:
        print(d, os.path.getsize(os.path.join(HERE, d, "model.onnx")),
              "bytes")


if __name__ == "__main__":
    main(sys.argv[1:] or ["block", "causal_lm"])
