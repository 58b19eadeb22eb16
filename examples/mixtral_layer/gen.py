#!/usr/bin/env python3
"""Generates the Mixtral decoder-layer example: the MoE half of a Mixtral
decoder layer, as in Hugging Face's MixtralDecoderLayer: RMSNorm, the sparse
MoE block (softmax router, top-2, renormalised, SwiGLU experts, per-expert
loop) and the residual add. The RMSNorm and the residual are dense
elementwise/reduction regions that moec compiles into generated kernels.

    python3 examples/mixtral_layer/gen.py        # rewrites the files here
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

B, S, H, FF, E, K = 2, 8, 64, 96, 8, 2
EPS = 1e-5
HERE = os.path.dirname(os.path.abspath(__file__))


class RMSNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(H))

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + EPS))


class Expert(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1 = nn.Linear(H, FF, bias=False)
        self.w3 = nn.Linear(H, FF, bias=False)
        self.w2 = nn.Linear(FF, H, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoELayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.post_attention_layernorm = RMSNorm()
        self.gate = nn.Linear(H, E, bias=False)
        self.experts = nn.ModuleList([Expert() for _ in range(E)])

    def forward(self, hidden_states):
        residual = hidden_states
        x = self.post_attention_layernorm(hidden_states)
        b, s, h = x.shape
        x = x.view(-1, h)
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
        return residual + out.reshape(b, s, h)


def main():
    torch.manual_seed(0)
    model = MoELayer().eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((B, S, H)).astype(np.float32))
    with torch.no_grad():
        out = model(x)
    path = os.path.join(HERE, "model.onnx")
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                      input_names=["hidden_states"], output_names=["output"])
    np.save(os.path.join(HERE, "input.npy"), x.numpy())
    np.save(os.path.join(HERE, "output.npy"), out.numpy())
    import onnxruntime as ort
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {"hidden_states": x.numpy()})[0]
    err = float(np.abs(got - out.numpy()).max())
    print(f"wrote {path} ({os.path.getsize(path)} bytes); onnxruntime vs "
          f"torch max abs err {err:.3e}")
    if err > 1e-4 * float(np.abs(out.numpy()).max()):
        sys.exit("onnxruntime disagrees with torch")


if __name__ == "__main__":
    main()
