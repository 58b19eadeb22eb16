#!/usr/bin/env python3
"""Hand-written MoE blocks (not transformers' classes), exported once with
torch.onnx's TorchScript exporter (opset 17) for hand-routers.test (issue
16). Writes, per variant V, V.onnx, V-input.npy and V-torch.npy (torch's
output) into the directory given (default: this script's).

    gen.py [OUT_DIR] [VARIANT ...]

DeepSeek-style group-limited routing (softmax scores, group max, the best
2 of 4 groups one-hot by scatter_ into zeros, the other groups masked, top-2)
with a per-expert loop `tok, pos = torch.where(idx == e)` + index_add_:
  ninf   masked_fill(~mask.bool(), -inf)
  zero   masked_fill(mask == 0, 0)
  where  torch.where(mask.bool(), scores, -inf), and the loop's test
         written `torch.eq(e, idx)` (the constant first)
Switch-style top-1 (`p.max(dim=-1)`: values and indices), GELU experts of
nn.Linear with biases, the same kind of loop:
  switch
Routers no moe.route form expresses (raised with the router kept as the
model's own ops), SwiGLU experts, the same kind of loop:
  clamp  softmax, top-2, renormalised by `w.sum(-1).clamp(min=0.5)`
  temp   top-2 of the logits, softmax of the two with temperature 0.7
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

H, E, K, G, TG, FF = 32, 8, 2, 4, 2, 16


class SwigluExperts(nn.Module):
    """A router's gate and E SwiGLU experts (w2(silu(w1 x) * w3 x))."""

    def __init__(s, variant):
        super().__init__()
        s.v = variant
        s.gate = nn.Linear(H, E, bias=False)
        s.w1 = nn.ModuleList(nn.Linear(H, FF, bias=False) for _ in range(E))
        s.w2 = nn.ModuleList(nn.Linear(FF, H, bias=False) for _ in range(E))
        s.w3 = nn.ModuleList(nn.Linear(H, FF, bias=False) for _ in range(E))


class GroupBlock(SwigluExperts):

    def forward(s, x):
        b, t, h = x.shape
        x = x.view(-1, h)
        scores = s.gate(x).softmax(-1)
        gs = scores.view(-1, G, E // G).max(-1).values
        gidx = gs.topk(TG, dim=-1).indices
        gmask = torch.zeros_like(gs).scatter_(1, gidx, 1)
        smask = gmask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E)
        if s.v == "ninf":
            masked = scores.masked_fill(~smask.bool(), float("-inf"))
        elif s.v == "zero":
            masked = scores.masked_fill(smask == 0, 0.0)
        else:
            masked = torch.where(smask.bool(), scores, float("-inf"))
        w, idx = masked.topk(K, dim=-1)
        out = torch.zeros_like(x)
        for e in range(E):
            if s.v == "where":
                hit = torch.eq(torch.tensor(e), idx)
            else:
                hit = idx == e
            tok, pos = torch.where(hit)
            y = s.w2[e](F.silu(s.w1[e](x[tok])) * s.w3[e](x[tok]))
            out.index_add_(0, tok, y * w[tok, pos, None])
        return out.view(b, t, h)


class SwitchBlock(nn.Module):
    def __init__(s):
        super().__init__()
        s.gate = nn.Linear(H, E, bias=False)
        s.wi = nn.ModuleList(nn.Linear(H, FF) for _ in range(E))
        s.wo = nn.ModuleList(nn.Linear(FF, H) for _ in range(E))

    def forward(s, x):
        b, t, h = x.shape
        x = x.view(-1, h)
        p = s.gate(x).softmax(-1)
        w, idx = p.max(dim=-1)
        out = torch.zeros_like(x)
        for e in range(E):
            tok = torch.where(idx == e)[0]
            y = s.wo[e](F.gelu(s.wi[e](x[tok])))
            out.index_add_(0, tok, y * w[tok, None])
        return out.view(b, t, h)


class CustomBlock(SwigluExperts):

    def forward(s, x):
        b, t, h = x.shape
        x = x.view(-1, h)
        logits = s.gate(x)
        if s.v == "clamp":
            w, idx = logits.softmax(-1).topk(K, dim=-1)
            w = w / w.sum(-1, keepdim=True).clamp(min=0.5)
        else:
            w, idx = logits.topk(K, dim=-1)
            w = (w / 0.7).softmax(-1)
        out = torch.zeros_like(x)
        for e in range(E):
            tok, pos = torch.where(idx == e)
            y = s.w2[e](F.silu(s.w1[e](x[tok])) * s.w3[e](x[tok]))
            out.index_add_(0, tok, y * w[tok, pos, None])
        return out.view(b, t, h)


def main():
    args = sys.argv[1:]
    out_dir = args.pop(0) if args else os.path.dirname(os.path.abspath(__file__))
    variants = args or ["ninf", "zero", "where", "switch"]
    os.makedirs(out_dir, exist_ok=True)
    for v in variants:
        torch.manual_seed(0)
        m = (SwitchBlock() if v == "switch" else
             CustomBlock(v) if v in ("clamp", "temp") else GroupBlock(v))
        m = m.eval()
        x = torch.randn(2, 8, H)
        with torch.no_grad():
            y = m(x)
        torch.onnx.export(m, (x,), os.path.join(out_dir, f"{v}.onnx"),
                          input_names=["hidden_states"], output_names=["out"],
                          dynamo=False, opset_version=17)
        np.save(os.path.join(out_dir, f"{v}-input.npy"), x.numpy())
        np.save(os.path.join(out_dir, f"{v}-torch.npy"), y.numpy())
        print(v, "written")


if __name__ == "__main__":
    main()
