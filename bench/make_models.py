#!/usr/bin/env python3
"""Writes the benchmark's MoE layers (too large to commit) into a directory:

  torch_block.onnx   a Mixtral-style block (softmax top-k, renormalised,
                     SwiGLU experts, per-expert loop) exported by torch.onnx
                     (TorchScript exporter, opset 17)
  ort_moe.onnx       the same layer and weights as one com.microsoft.MoE node
                     (interleaved swiglu, fc1 = gate/up rows [E,2F,H], fc2 = down [E,H,F])
  input.npy          [1, tokens, H] fp32 hidden states
  reference.npy      torch's output for input.npy

Defaults are the issue's size: H=1024, F=2816, E=8, k=2, 2048 tokens.

    python3 bench/make_models.py OUT_DIR [--hidden 1024 --ffn 2816 ...]
"""
import argparse
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2048)
    a = ap.parse_args()
    H, FF, E, K, T = a.hidden, a.ffn, a.experts, a.topk, a.tokens
    os.makedirs(a.out, exist_ok=True)

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Expert(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Linear(H, FF, bias=False)
            self.w3 = nn.Linear(H, FF, bias=False)
            self.w2 = nn.Linear(FF, H, bias=False)

        def forward(self, x):
            return self.w2(F.silu(self.w1(x)) * self.w3(x))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.Linear(H, E, bias=False)
            self.experts = nn.ModuleList([Expert() for _ in range(E)])

        def forward(self, hidden_states):
            b, s, h = hidden_states.shape
            x = hidden_states.view(-1, h)
            logits = self.gate(x)
            w = F.softmax(logits, dim=1, dtype=torch.float)
            w, sel = torch.topk(w, K, dim=-1)
            w = w / w.sum(dim=-1, keepdim=True)
            out = torch.zeros((b * s, h), dtype=x.dtype)
            mask = F.one_hot(sel, num_classes=E).permute(2, 1, 0)
            for e in range(E):
                idx, top_x = torch.where(mask[e])
                cur = x[None, top_x].reshape(-1, h)
                y = self.experts[e](cur) * w[top_x, idx, None]
                out.index_add_(0, top_x, y)
            return out.reshape(b, s, h)

    torch.manual_seed(0)
    model = Block().eval()
    x = torch.from_numpy(
        np.random.default_rng(0).standard_normal((1, T, H)).astype(np.float32))
    with torch.no_grad():
        ref = model(x)
    path = os.path.join(a.out, "torch_block.onnx")
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                      input_names=["hidden_states"], output_names=["output"])
    np.save(os.path.join(a.out, "input.npy"), x.numpy())
    np.save(os.path.join(a.out, "reference.npy"), ref.numpy())

    import onnx
    from onnx import TensorProto, helper
    st = model.state_dict()
    fc1 = np.stack([st[f"experts.{e}.w1.weight"].numpy() for e in range(E)])
    fc3 = np.stack([st[f"experts.{e}.w3.weight"].numpy() for e in range(E)])
    fc2 = np.stack([st[f"experts.{e}.w2.weight"].numpy() for e in range(E)])
    router = st["gate.weight"].numpy().T.copy()
    # onnxruntime's CPU MoE has no fc3 and takes only interleaved SwiGLU:
    # fc1 rows alternate gate and up ([E, 2F, H], swiglu_fusion=1),
    # silu(g) * l with alpha 1, beta 0.
    fc13 = np.stack([fc1, fc3], axis=2).reshape(E, 2 * FF, H)
    inits = [
        helper.make_tensor("router", TensorProto.FLOAT, router.shape,
                           router.tobytes(), raw=True),
        helper.make_tensor("fc1", TensorProto.FLOAT, fc13.shape,
                           fc13.tobytes(), raw=True),
        helper.make_tensor("fc2", TensorProto.FLOAT, fc2.shape, fc2.tobytes(),
                           raw=True),
        helper.make_tensor("tok_shape", TensorProto.INT64, [2], [T, H]),
    ]
    nodes = [
        helper.make_node("Reshape", ["hidden_states", "tok_shape"], ["tokens"],
                         name="flatten_tokens"),
        helper.make_node("MatMul", ["tokens", "router"], ["router_logits"],
                         name="router"),
        helper.make_node("MoE", ["hidden_states", "router_logits", "fc1", "",
                                 "fc2"], ["output"], name="moe",
                         domain="com.microsoft", k=K, activation_type="swiglu",
                         swiglu_fusion=1, activation_alpha=1.0,
                         activation_beta=0.0, normalize_routing_weights=1),
    ]
    graph = helper.make_graph(
        nodes, "ort_moe",
        [helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT,
                                       [1, T, H])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, T, H])],
        inits)
    m = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    onnx.save(m, os.path.join(a.out, "ort_moe.onnx"))
    print(f"wrote {a.out}: H={H} F={FF} E={E} k={K} tokens={T}")


if __name__ == "__main__":
    main()
