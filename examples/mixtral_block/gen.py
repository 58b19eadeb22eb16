#!/usr/bin/env python3
"""Generates the Mixtral-style MoE block example: model.onnx plus reference
input/outputs computed by torch.

The block follows Hugging Face's MixtralSparseMoeBlock (transformers 4.x):
softmax router, top-2, renormalised routing weights, SwiGLU experts, and the
per-expert loop (one_hot mask, torch.where, index_add_) that torch.onnx turns
into NonZero / Gather / ScatterElements. Sizes are tiny so the file stays small.

    python3 examples/mixtral_block/gen.py        # rewrites the files here
    python3 examples/mixtral_block/gen.py dynamic  # only dynamic.onnx

dynamic.onnx is the same block (same weights) exported with a symbolic
batch and sequence (`dynamic_axes`), for plans with a dynamic token count
(`moec --input-shape hidden_states=1,?,64 --max-tokens 32`).
"""
import collections
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

B, S, H, FF, E, K = 2, 8, 64, 128, 8, 2
HERE = os.path.dirname(os.path.abspath(__file__))


class Expert(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = nn.Linear(H, FF, bias=False)  # gate
        self.w3 = nn.Linear(H, FF, bias=False)  # up
        self.w2 = nn.Linear(FF, H, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MixtralBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(H, E, bias=False)
        self.experts = nn.ModuleList([Expert() for _ in range(E)])

    def forward(self, hidden_states):
        b, s, h = hidden_states.shape
        hidden_states = hidden_states.view(-1, h)
        router_logits = self.gate(hidden_states)
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected = torch.topk(routing_weights, K, dim=-1)
        routing_weights = routing_weights / routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(hidden_states.dtype)
        final = torch.zeros((b * s, h), dtype=hidden_states.dtype)
        expert_mask = F.one_hot(selected, num_classes=E).permute(2, 1, 0)
        for e in range(E):
            idx, top_x = torch.where(expert_mask[e])
            current = hidden_states[None, top_x].reshape(-1, h)
            out = self.experts[e](current) * routing_weights[top_x, idx, None]
            final.index_add_(0, top_x, out.to(hidden_states.dtype))
        return final.reshape(b, s, h), router_logits


def main():
    torch.manual_seed(0)
    model = MixtralBlock().eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((B, S, H)).astype(np.float32))
    with torch.no_grad():
        out, logits = model(x)
    path = os.path.join(HERE, "model.onnx")
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                      input_names=["hidden_states"],
                      output_names=["output", "router_logits"])
    np.save(os.path.join(HERE, "input.npy"), x.numpy())
    np.save(os.path.join(HERE, "output.npy"), out.numpy())
    np.save(os.path.join(HERE, "router_logits.npy"), logits.numpy())

    import onnx
    import onnxruntime as ort
    m = onnx.load(path)
    print("ir_version", m.ir_version, "opset",
          [(o.domain, o.version) for o in m.opset_import])
    print("ops", dict(sorted(collections.Counter(n.op_type for n in m.graph.node).items())))
    print("size", os.path.getsize(path), "bytes")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"hidden_states": x.numpy()})
    for name, ref, g in [("output", out.numpy(), got[0]), ("router_logits", logits.numpy(), got[1])]:
        err = float(np.abs(ref - g).max())
        print(f"onnxruntime vs torch {name}: max abs err {err:.3e} (max|ref| {np.abs(ref).max():.3f})")
        if err > 1e-4 * float(np.abs(ref).max()):
            sys.exit(f"onnxruntime disagrees with torch on {name}")


def dynamic():
    """dynamic.onnx: the block exported with symbolic batch and sequence,
    checked against torch at several sequence lengths."""
    torch.manual_seed(0)
    model = MixtralBlock().eval()
    path = os.path.join(HERE, "dynamic.onnx")
    x = torch.randn(1, S, H)
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                      input_names=["hidden_states"],
                      output_names=["output", "router_logits"],
                      dynamic_axes={"hidden_states": {0: "batch", 1: "seq"},
                                    "output": {0: "batch", 1: "seq"},
                                    "router_logits": {0: "tokens"}})
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for s in (1, 5, 32):
        x = torch.randn(1, s, H)
        with torch.no_grad():
            out, logits = model(x)
        got = sess.run(None, {"hidden_states": x.numpy()})
        for name, ref, g in [("output", out, got[0]), ("router_logits", logits, got[1])]:
            err = float(np.abs(ref.numpy() - g).max())
            print(f"seq {s}: onnxruntime vs torch {name}: max abs err {err:.3e}")
            if err > 1e-4 * float(np.abs(ref.numpy()).max()):
                sys.exit(f"onnxruntime disagrees with torch on {name}")
    print("size", os.path.getsize(path), "bytes")


if __name__ == "__main__":
    dynamic() if sys.argv[1:] == ["dynamic"] else main()
