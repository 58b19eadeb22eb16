#!/usr/bin/env python3
"""One Mixtral-8x7B MoE layer at real size with random weights, for the
weight-streaming scale test (issue 15).

    python3 bench/scale/gen_mixtral_layer.py DIR [--hidden 4096]
        [--ffn 14336] [--experts 8] [--top-k 2] [--tokens 4] [--seed 0]

transformers' MixtralSparseMoeBlock (a router, top-2 of 8 experts, SwiGLU
experts stored as stacked [E, 2F, H] and [E, H, F] parameters) exported by
torch.onnx's dynamo exporter ("batched_mm" experts, as
examples/dynamo/gen.py, then the exporter's optimizer). The block is built on torch's meta device, so torch never holds
the weights: they are drawn here chunk by chunk (numpy, fixed seed; std
0.02, the router's 0.1) straight into DIR/model.onnx.data, which the model
names as external data. At the default real size (H=4096, F=14336, E=8,
fp32) that is 5.6 GB, written in about 2 minutes; the script itself needs
about 1 GB (torch, the exporter) beside the weight file's pages.

DIR/input.npy holds hidden_states [1, tokens, H]; DIR/output.npy the
reference output, computed here in float64 from the same file (memory
mapped: router softmax, top-k, renormalised weights, SwiGLU experts, as
transformers' Mixtral), independently of torch, onnxruntime and moec.
Generate into /tmp or a build directory, never into the repository.
"""
import argparse
import os
import time

import numpy as np
import onnx
import onnx_ir as ir
import torch
import transformers
from transformers.models.mixtral import modeling_mixtral

ALIGN = 4096


def export_graph(cfg, tokens):
    """The exported graph without weights, and the weights' names and
    shapes (in graph order)."""
    cfg._experts_implementation = "batched_mm"
    with torch.device("meta"):
        block = modeling_mixtral.MixtralSparseMoeBlock(cfg).eval()
    x = torch.zeros(1, tokens, cfg.hidden_size, device="meta")
    prog = torch.onnx.export(block, (x,), dynamo=True, optimize=False,
                             input_names=["hidden_states"],
                             output_names=["output"], verbose=False)
    graph = prog.model.graph
    weights = [(v.name, [int(d) for d in v.shape])
               for v in graph.initializers.values()]
    # The export transposes the stacked weights with perm (0, 1, 2); with
    # real weights its optimizer folds that into a copy of the weight (the
    # same bytes under another name). Dropped here instead, so that the
    # optimizer never reads the weights.
    for v in list(graph.initializers.values()):
        for node, _ in list(v.uses()):
            perm = node.attributes.get("perm")
            if node.op_type == "Transpose" and perm is not None and \
                    list(perm.as_ints()) == list(range(len(v.shape))):
                node.outputs[0].replace_all_uses_with(v)
                graph.remove(node, safe=True)
    return prog, weights


def write_weights(path, weights, seed):
    """Draws each weight into `path` (page-aligned offsets); returns
    name -> (offset, shape)."""
    rng = np.random.default_rng(seed)
    where = {}
    with open(path, "wb") as f:
        for name, shape in weights:
            off = f.tell()
            pad = (-off) % ALIGN
            f.write(b"\0" * pad)
            off += pad
            std = 0.1 if name.startswith("gate") else 0.02
            n = int(np.prod(shape))
            chunk = 1 << 24
            for i in range(0, n, chunk):
                m = min(chunk, n - i)
                f.write((rng.standard_normal(m, dtype=np.float32) *
                         np.float32(std)).tobytes())
            where[name] = (off, shape)
    return where


def attach(model_path, data_name, where):
    m = onnx.load(model_path)
    for name, (off, shape) in where.items():
        t = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT,
                             dims=shape)
        t.data_location = onnx.TensorProto.EXTERNAL
        n = int(np.prod(shape)) * 4
        for k, v in (("location", data_name), ("offset", str(off)),
                     ("length", str(n))):
            e = t.external_data.add()
            e.key, e.value = k, v
        m.graph.initializer.append(t)
    onnx.save(m, model_path)


def rows_times(m, v, rows=2048):
    """m @ v in float64, `rows` rows of the (mapped) matrix at a time."""
    return np.concatenate([m[i:i + rows].astype(np.float64) @ v
                           for i in range(0, m.shape[0], rows)])


def reference(data_path, where, x, top_k):
    """transformers' Mixtral block in float64 over the mapped weights."""
    def w(name):
        off, shape = where[name]
        return np.memmap(data_path, np.float32, "r", off, tuple(shape))
    gate = w("gate.weight").astype(np.float64)          # [E, H]
    gate_up, down = w("experts.gate_up_proj"), w("experts.down_proj")
    h = x.reshape(-1, x.shape[-1]).astype(np.float64)
    logits = h @ gate.T
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.zeros_like(h)
    ffn = down.shape[2]
    for t in range(h.shape[0]):
        top = np.argsort(-p[t], kind="stable")[:top_k]
        wts = p[t, top] / p[t, top].sum()
        for e, s in zip(top, wts):
            gu = rows_times(gate_up[e], h[t])               # [2F]
            a = gu[:ffn] / (1 + np.exp(-gu[:ffn])) * gu[ffn:]
            out[t] += s * rows_times(down[e], a)
    return out.reshape(x.shape).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=14336)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    os.makedirs(a.dir, exist_ok=True)
    cfg = transformers.MixtralConfig(
        hidden_size=a.hidden, intermediate_size=a.ffn,
        num_local_experts=a.experts, num_experts_per_tok=a.top_k)
    prog, weights = export_graph(cfg, a.tokens)
    model = os.path.join(a.dir, "model.onnx")
    data = os.path.join(a.dir, "model.onnx.data")
    where = write_weights(data, weights, a.seed)
    # The exporter's graph optimizer (constant folding of the shape
    # computations) as torch.onnx's default, with the weights as external
    # tensors it does not read; then the weights are named as external data
    # of the saved model, whose small folded constants stay inline.
    inits = prog.model.graph.initializers
    for name, (off, shape) in where.items():
        inits[name].const_value = ir.ExternalTensor(
            "model.onnx.data", off, int(np.prod(shape)) * 4,
            ir.DataType.FLOAT, shape=ir.Shape(shape), name=name,
            base_dir=a.dir)
    prog.optimize()
    inits = prog.model.graph.initializers  # optimize() makes a new model
    for name in where:
        inits.pop(name, None)
    prog.save(model)
    attach(model, "model.onnx.data", where)
    x = np.random.default_rng(a.seed + 1).standard_normal(
        (1, a.tokens, a.hidden), dtype=np.float32)
    np.save(os.path.join(a.dir, "input.npy"), x)
    np.save(os.path.join(a.dir, "output.npy"),
            reference(data, where, x, a.top_k))
    print(f"mixtral layer H={a.hidden} F={a.ffn} E={a.experts}: "
          f"{os.path.getsize(data) / 1e9:.2f} GB of weights in {data}, "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
