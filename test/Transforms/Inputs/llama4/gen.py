#!/usr/bin/env python3
"""transformers' Llama 4 MoE block (Llama4TextMoe), exported once for
raise-llama4.test (issue 16). Writes into the directory given (default:
this script's), per variant V, V.onnx and V-torch{0,1,2}.npy (torch's output
for input{0,1,2}.npy, which are written once: input0 is the export's example,
input1 and input2 other random draws, input2 three times larger).

    gen.py [OUT_DIR] [VARIANT ...]

The block of layer 0 of a tiny llama4_text model (hidden 64, expert
intermediate 64, 8 experts, eager experts), its parameters drawn from
N(0, 0.1), wrapped to return only its output (not the router logits):
  k1          top-1, TorchScript exporter (opset 17)
  k2          top-2, TorchScript exporter (opset 17)
  k2-dynamo   top-2, dynamo exporter (opset 18), weights in the file
and two hand-written variants of the block (hidden 8, 4 experts, top-1, no
shared expert; TorchScript exporter, opset 17) that compute other
functions and must not be raised, with a warning:
  zero-fill        the top-k logits scattered into zeros, not -inf: the
                   experts a token did not select get its input times 0.5
  output-weighted  the scores scale the experts' outputs, not their inputs
"""
import os
import sys

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM

VARIANTS = {"k1": (1, False), "k2": (2, False), "k2-dynamo": (2, True)}
REFUSED = ["zero-fill", "output-weighted"]


class OutputOnly(torch.nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)[0]


class DenseBlock(torch.nn.Module):
    """Llama4TextMoe's computation, written out, in a variant."""

    def __init__(self, variant, h=8, e=4, f=8):
        super().__init__()
        self.variant, self.e = variant, e
        self.router = torch.nn.Parameter(torch.randn(e, h) * 0.3)
        self.gate_up = torch.nn.Parameter(torch.randn(e, h, 2 * f) * 0.3)
        self.down = torch.nn.Parameter(torch.randn(e, f, h) * 0.3)

    def forward(self, x):
        x = x.reshape(-1, x.shape[-1])
        logits = x @ self.router.t()
        v, i = torch.topk(logits, 1, dim=1)
        fill = 0.0 if self.variant == "zero-fill" else float("-inf")
        scores = torch.sigmoid(torch.full_like(logits, fill).scatter_(1, i, v))
        routed_in = x.repeat(self.e, 1)
        if self.variant != "output-weighted":
            routed_in = routed_in * scores.transpose(0, 1).reshape(-1, 1)
        gate, up = torch.bmm(routed_in.view(self.e, -1, x.shape[-1]),
                             self.gate_up).chunk(2, dim=-1)
        out = torch.bmm(up * torch.nn.functional.silu(gate), self.down)
        if self.variant == "output-weighted":
            out = out * scores.transpose(0, 1).unsqueeze(-1)
        return out.sum(0)


def block(k):
    cfg = AutoConfig.for_model(
        "llama4_text", hidden_size=64, intermediate_size=64,
        intermediate_size_mlp=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=128,
        num_local_experts=8, num_experts_per_tok=k)
    cfg._experts_implementation = "eager"
    assert 0 in cfg.moe_layers, cfg.moe_layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    ff = model.model.layers[0].feed_forward
    assert type(ff).__name__ == "Llama4TextMoe", type(ff)
    for p in ff.parameters():
        torch.nn.init.normal_(p, 0.0, 0.1)
    return OutputOnly(ff).eval()


def main():
    args = sys.argv[1:]
    out_dir = args.pop(0) if args else os.path.dirname(os.path.abspath(__file__))
    variants = args or list(VARIANTS) + REFUSED
    os.makedirs(out_dir, exist_ok=True)
    inputs = []
    for i, scale in enumerate([1.0, 1.0, 3.0]):
        g = torch.Generator().manual_seed(100 + i)
        x = torch.randn(2, 8, 64, generator=g) * scale
        np.save(os.path.join(out_dir, f"input{i}.npy"), x.numpy())
        inputs.append(x)
    for v in variants:
        if v in REFUSED:
            torch.manual_seed(1)
            m = DenseBlock(v).eval()
            x = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(7))
            torch.onnx.export(m, (x,), os.path.join(out_dir, f"{v}.onnx"),
                              dynamo=False, opset_version=17,
                              input_names=["hidden_states"],
                              output_names=["output"])
            print(v, "written")
            continue
        k, dynamo = VARIANTS[v]
        m = block(k)
        path = os.path.join(out_dir, f"{v}.onnx")
        if dynamo:
            torch.onnx.export(m, (inputs[0],), path, dynamo=True,
                              opset_version=18, external_data=False,
                              input_names=["hidden_states"],
                              output_names=["output"])
        else:
            torch.onnx.export(m, (inputs[0],), path, dynamo=False,
                              opset_version=17, input_names=["hidden_states"],
                              output_names=["output"])
        with torch.no_grad():
            for i, x in enumerate(inputs):
                np.save(os.path.join(out_dir, f"{v}-torch{i}.npy"),
                        m(x).numpy())
        print(v, "written")


if __name__ == "__main__":
    main()
