#!/usr/bin/env python3
"""Catalogs the models examples/builder/gen.py wrote: ops with counts,
the attributes of the contrib ops, graph inputs/outputs, external data,
and the first error of moec on each (plain and --mesh ep=2).

    python3 examples/builder/catalog.py [--out DIR] [--moec PATH] > catalog.md

For every op of a model it also probes moec with a one-node model of that
op (float inputs [2, 4], no attributes): "unsupported op" in moec's answer
means the op is missing from moec's import table (or, for default-domain
contrib ops such as SimplifiedLayerNormalization, from ONNX's schemas that
moec's opset conversion needs); anything else (success or another error
about inputs/attributes) means moec knows the op. The probe says nothing
about the op's attributes or semantics.
"""
import argparse
import collections
import glob
import os
import subprocess
import tempfile

import onnx
from onnx import helper, TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))
CONTRIB_ATTRS = ("MoE", "QMoE", "GroupQueryAttention", "RotaryEmbedding",
                 "MRotaryEmbedding", "MatMulNBits", "GatherBlockQuantized",
                 "SkipSimplifiedLayerNormalization",
                 "SimplifiedLayerNormalization", "SkipLayerNormalization",
                 "LayerNormalization", "LinearAttention",
                 "CausalConvWithState", "GatedDeltaNet")


def key(n):
    d = n.domain or "ai.onnx"
    return f"{d}::{n.op_type}"


def attr_val(a):
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, list) and len(v) > 8:
        return f"[{len(v)} values]"
    if isinstance(v, onnx.TensorProto):
        return "tensor"
    return v


def dims(vi):
    t = vi.type.tensor_type
    shp = [d.dim_param or d.dim_value for d in t.shape.dim]
    return f"{TensorProto.DataType.Name(t.elem_type).lower()} {shp}"


def moec_first_error(moec, model, extra):
    cmd = [moec, model, "--emit=mlir", "-o", os.devnull] + extra
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "timeout (600 s)"
    if p.returncode == 0:
        return "imports (exit 0)"
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    first = next((ln for ln in lines if "error" in ln), lines[0] if lines
                 else f"exit {p.returncode}, no message")
    return first.replace(os.path.dirname(model) + "/", "")


_probe_cache = {}
PROBE_MSG = {}


def probe(moec, domain, op, n_in, n_out, tmp):
    k = (domain, op)
    if k in _probe_cache:
        return _probe_cache[k]
    # the attributes the ONNX checker requires before moec sees the node
    attrs = {"Cast": dict(to=TensorProto.FLOAT), "Concat": dict(axis=0),
             "Constant": dict(value=helper.make_tensor(
                 "v", TensorProto.FLOAT, [2, 4], [0.0] * 8))}.get(op, {})
    if op == "Constant":
        n_in = 0
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [2, 4])
           for i in range(n_in)]
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT,
                                          [4, 4] if op == "Concat" else [2, 4])
            for i in range(max(n_out, 1))]
    node = helper.make_node(op, [i.name for i in ins],
                            [o.name for o in outs],
                            domain="" if domain == "ai.onnx" else domain,
                            **attrs)
    opsets = [helper.make_opsetid("", 21)]
    if domain != "ai.onnx":
        opsets.append(helper.make_opsetid(domain, 1))
    m = helper.make_model(helper.make_graph([node], "probe", ins, outs),
                          opset_imports=opsets)
    path = os.path.join(tmp, f"{domain}_{op}.onnx")
    onnx.save(m, path)
    p = subprocess.run([moec, path, "--emit=mlir", "-o", os.devnull],
                       capture_output=True, text=True, timeout=120)
    if "unsupported op" in p.stderr:
        known = "**no**"
    elif p.returncode == 0 or "node '" in p.stderr:
        known = "yes"       # imported, or failed later at that very node
    else:
        known = "? (" + p.stderr.strip().splitlines()[0][:120] + ")"
    _probe_cache[k] = known
    PROBE_MSG[k] = p.stderr.strip().splitlines()[0] if p.stderr.strip() \
        else "exit 0"
    return known


def used_outputs(g):
    consumed = collections.Counter()
    for n in g.node:
        for i in n.input:
            consumed[i] += 1
    for o in g.output:
        consumed[o.name] += 1
    return consumed


def catalog(model_path, moec, tmp):
    m = onnx.load(model_path, load_external_data=False)
    g = m.graph
    out = []
    ops = collections.Counter(key(n) for n in g.node)
    arity = {}
    for n in g.node:
        arity.setdefault(key(n), (len(n.input), len(n.output)))
    data = sorted(glob.glob(model_path + "*"))
    ext = [i for i in g.initializer
           if i.data_location == TensorProto.EXTERNAL]
    size = {os.path.basename(f): os.path.getsize(f) for f in data}
    out.append("opsets: " + ", ".join(
        f"{o.domain or 'ai.onnx'} {o.version}" for o in m.opset_import))
    out.append("files: " + ", ".join(f"`{k}` {v / 1e6:.2f} MB"
                                     for k, v in size.items()))
    out.append(f"external data: {len(ext)} of {len(g.initializer)} "
               f"initializers")
    out.append("")
    out.append("| op | count | moec knows it (probe) |")
    out.append("| --- | --- | --- |")
    for k, c in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])):
        d, op = k.split("::")
        known = probe(moec, d, op, *arity[k], tmp)
        out.append(f"| `{k}` | {c} | {known} |")
    out.append("")
    # attributes of contrib ops (distinct sets, with counts)
    consumed = used_outputs(g)
    attrsets = collections.defaultdict(collections.Counter)
    skip_outs = collections.Counter()
    for n in g.node:
        if n.op_type in CONTRIB_ATTRS:
            s = ", ".join(f"{a.name}={attr_val(a)}" for a in n.attribute)
            attrsets[n.op_type][s or "(none)"] += 1
        if n.op_type in ("SkipSimplifiedLayerNormalization",
                         "SkipLayerNormalization"):
            used = tuple(i for i, o in enumerate(n.output)
                         if o and consumed[o])
            skip_outs[used] += 1
    if attrsets:
        out.append("| op | attributes | nodes |")
        out.append("| --- | --- | --- |")
        for op in sorted(attrsets):
            for s, c in attrsets[op].items():
                out.append(f"| `{op}` | {s} | {c} |")
        out.append("")
    if skip_outs:
        out.append("Skip*LayerNormalization outputs used (0 normed, "
                   "1 mean, 2 inv_std_var, 3 input+skip): " + "; ".join(
                       f"{list(k)} in {c} nodes"
                       for k, c in skip_outs.items()))
        out.append("")
    inits = {i.name for i in g.initializer}
    out.append("inputs: " + "; ".join(
        f"`{i.name}` {dims(i)}" for i in g.input if i.name not in inits))
    out.append("")
    out.append("outputs: " + "; ".join(f"`{o.name}` {dims(o)}"
                                       for o in g.output))
    out.append("")
    e1 = moec_first_error(moec, model_path, [])
    e2 = moec_first_error(moec, model_path, ["--mesh", "ep=2"])
    out.append(f"moec first error: `{e1}`")
    out.append("")
    out.append("with `--mesh ep=2`: " + ("same" if e2 == e1 else f"`{e2}`"))
    out.append("")
    return "\n".join(out), ops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "models"))
    ap.add_argument("--moec", default="/work/main/build/bin/moec")
    a = ap.parse_args()
    models = sorted(glob.glob(os.path.join(a.out, "*", "*", "model.onnx")))
    allops = collections.defaultdict(dict)
    with tempfile.TemporaryDirectory() as tmp:
        for mp in models:
            rel = os.path.relpath(os.path.dirname(mp), a.out)
            text, ops = catalog(mp, a.moec, tmp)
            print(f"### {rel}\n")
            print(text)
            for k, c in ops.items():
                allops[k][rel] = c
        names = [os.path.relpath(os.path.dirname(mp), a.out) for mp in models]
        print("### All models: ops x models (node counts)\n")
        print("| op | moec knows it | " + " | ".join(names) + " |")
        print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
        for k in sorted(allops):
            d, op = k.split("::")
            known = _probe_cache.get((d, op))
            print(f"| `{k}` | {known} | " + " | ".join(
                str(allops[k].get(n, "")) for n in names) + " |")


if __name__ == "__main__":
    main()
