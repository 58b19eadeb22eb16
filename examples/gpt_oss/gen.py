#!/usr/bin/env python3
"""Exports transformers' GPT-OSS MoE (tiny random config, no download) and
saves torch's reference outputs.

    python3 examples/gpt_oss/gen.py   # needs torch, transformers, onnx, onnxscript

GPT-OSS's experts differ from the other families in three ways:
  * a clamped SwiGLU: gate_up = x W[e] + b[e]; g, u = gate_up[..., ::2],
    gate_up[..., 1::2] (interleaved columns); g = g.clamp(max=7); u =
    u.clamp(-7, 7); (u + 1) * g * sigmoid(1.702 g);
  * biases on both projections, stacked per expert ([E, 2F], [E, H]);
  * weights stored [E, in, out] (`is_transposed`).
The router is a linear layer with bias, top-k over the logits, then a
softmax over the k values.

Three models, each with input.npy and output.npy (torch's output):
  block/          GptOssMLP, TorchScript exporter (opset 17), transformers'
                  eager loop over the experts the input hits (the script
                  draws inputs until one hits all 8 experts);
  block_dynamo/   the same block with `batched_mm` experts, dynamo exporter
                  (opset 20, weights in model.onnx.data);
  causal_lm/      GptOssForCausalLM, 2 decoder layers (sliding-window and
                  full attention with sinks), batched_mm experts, dynamo;
                  input_ids [2, 8] -> logits [2, 8, 128].
The gate/up weights are drawn with std 0.5 (the rest 0.1) so that the clamps
engage: the script prints the fraction of clamped pre-activations.
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
H, E, K = 64, 8, 2


def config(impl):
    cfg = transformers.AutoConfig.for_model(
        "gpt_oss", hidden_size=H, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        vocab_size=128, num_local_experts=E, num_experts_per_tok=K,
        max_position_embeddings=64, sliding_window=4,
        tie_word_embeddings=False)
    cfg._experts_implementation = impl
    return cfg


def model(impl):
    torch.manual_seed(0)
    m = transformers.AutoModelForCausalLM.from_config(config(impl)).eval()
    for name, p in m.named_parameters():
        big = name.endswith("experts.gate_up_proj")
        torch.nn.init.normal_(p, std=0.5 if big else 0.1)
    return m


class Block(torch.nn.Module):
    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, x):
        out = self.mlp(x)
        return out[0] if isinstance(out, tuple) else out


class Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, ids):
        return self.m(input_ids=ids, use_cache=False).logits


def clamped_fraction(mlp, x):
    """The fraction of gate/up pre-activations the clamps change."""
    with torch.no_grad():
        ex = mlp.experts
        gu = torch.einsum("th,ehf->etf", x.reshape(-1, H), ex.gate_up_proj)
        gu = gu + ex.gate_up_proj_bias[:, None, :]
        g, u = gu[..., ::2], gu[..., 1::2]
        return float(((g > ex.limit).sum() + (u.abs() > ex.limit).sum())
                     / (g.numel() + u.numel()))


def save(name, path, inp, out):
    import onnx
    d = os.path.dirname(path)
    np.save(os.path.join(d, "input.npy"), inp.numpy())
    np.save(os.path.join(d, "output.npy"), out.numpy())
    ops = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: {size} bytes, ops {dict(sorted(ops.items()))}")


def main():
    print("transformers", transformers.__version__, "torch", torch.__version__)
    # 1. The TorchScript export of the eager loop needs every expert hit.
    mlp = model("eager").model.layers[0].mlp
    for seed in range(100):
        x = torch.randn(2, 8, H, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            _, _, idx = mlp.router(x.reshape(-1, H))
        if idx.unique().numel() == E:
            break
    else:
        sys.exit("no input seed below 100 hits every expert")
    print(f"block: input seed {seed}; clamped pre-activations "
          f"{clamped_fraction(mlp, x):.1%}")
    with torch.no_grad():
        y = Block(mlp)(x)
    path = os.path.join(HERE, "block", "model.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.onnx.export(Block(mlp), (x,), path, dynamo=False, opset_version=17,
                      input_names=["hidden_states"], output_names=["output"])
    save("block", path, x, y)

    # 2. batched_mm experts, dynamo exporter.
    m = model("batched_mm")
    mlp = m.model.layers[0].mlp
    with torch.no_grad():
        y = Block(mlp)(x)
    path = os.path.join(HERE, "block_dynamo", "model.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.onnx.export(Block(mlp), (x,), path, dynamo=True,
                      input_names=["hidden_states"], output_names=["output"])
    save("block_dynamo", path, x, y)

    # 3. The whole model.
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = Logits(m)(ids)
    path = os.path.join(HERE, "causal_lm", "model.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.onnx.export(Logits(m), (ids,), path, dynamo=True,
                      input_names=["input_ids"], output_names=["logits"])
    save("causal_lm", path, ids, logits)


if __name__ == "__main__":
    main()
