#!/usr/bin/env python3
"""The expert forms moe-raise-experts reads back, at a size where time
matters: one MoE block per form, exported from transformers 5.25 with
random weights, run by onnxruntime (CPU) on the exported file and by
moe-run on 1 and 2 CPU ranks, in one run, as ratios.

    python3 bench/raise_forms_bench.py [--build build] [--work DIR]
        [--hidden 512 --ffn 1024 --batch 4 --seq 256] [--iters 3]

Forms (8 experts, top-2):
  mixtral  MixtralSparseMoeBlock, TorchScript exporter: a per-expert loop
           (NonZero, gather, FFN, ScatterND) raised to moe.route (softmax,
           renormalised) + moe.experts;
  phimoe   PhimoeSparseMoeBlock, TorchScript: the same loop, its
           sparsemixer router (two ArgMax picks) kept as the model's own ops
           feeding moe.experts ("custom routing");
  jetmoe   JetMoeMoE, dynamo exporter: the grouped form (pairs sorted by
           expert, a Split by the tokens per expert, one GEMM per chunk,
           index_add) raised to moe.route + moe.experts.

Times are the best of --iters: onnxruntime's session.run, moe-run's slowest
rank in its second run (`--iters 2`, OpenBLAS threads = cores / ranks).
Every moe-run output is checked against onnxruntime's (max abs err <= 1e-4
max|ref|). The exports (torch, transformers, onnxscript) are cached in
--work. Prints a markdown table.
"""
import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

from common import sh

E, K = 8, 2


def wrap(mlp):
    """The block `mlp` as a module returning its output alone (JetMoE's
    returns (output, router logits))."""
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = mlp

        def forward(self, hidden_states):
            out = self.mlp(hidden_states)
            return out[0] if isinstance(out, tuple) else out
    return Block().eval()


def export(form, path, a):
    import torch
    warnings.filterwarnings("ignore")
    import transformers
    common = dict(hidden_size=a.hidden, num_hidden_layers=1,
                  num_attention_heads=8, num_key_value_heads=2,
                  vocab_size=128, max_position_embeddings=a.seq)
    if form == "jetmoe":
        cfg = transformers.AutoConfig.for_model(
            "jetmoe", **common, intermediate_size=a.ffn, kv_channels=16,
            num_local_experts=E, num_experts_per_tok=K)
    else:
        cfg = transformers.AutoConfig.for_model(
            form, **common, intermediate_size=a.ffn, num_local_experts=E,
            num_experts_per_tok=K)
        cfg._experts_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    layer = model.model.layers[0]
    mlp = layer.mlp if form == "jetmoe" else (
        layer.block_sparse_moe if hasattr(layer, "block_sparse_moe")
        else layer.mlp)
    block = wrap(mlp)
    with torch.no_grad():
        for p in block.parameters():
            torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(a.batch, a.seq, a.hidden,
                    generator=torch.Generator().manual_seed(0))
    torch.onnx.export(block, (x,), path, dynamo=form == "jetmoe",
                      opset_version=20 if form == "jetmoe" else 17,
                      input_names=["hidden_states"], output_names=["output"],
                      **({"external_data": False} if form == "jetmoe" else {}))
    np.save(os.path.join(os.path.dirname(path), "input.npy"), x.numpy())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--work", default=None)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    a = ap.parse_args()
    tag = f"forms_h{a.hidden}_f{a.ffn}_b{a.batch}_s{a.seq}"
    work = a.work or os.path.join(a.build, "bench", tag)
    bindir = os.path.join(a.build, "bin")
    cores = os.cpu_count() or 1
    import onnxruntime as ort
    ort.set_default_logger_severity(3)
    rows = []
    for form in ("mixtral", "phimoe", "jetmoe"):
        d = os.path.join(work, form)
        os.makedirs(d, exist_ok=True)
        model = os.path.join(d, "model.onnx")
        if not os.path.exists(model):
            print(f"exporting {form} into {d} ...", file=sys.stderr)
            export(form, model, a)
        inp = os.path.join(d, "input.npy")
        x = np.load(inp)
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        ref = sess.run(None, {"hidden_states": x})[0]
        ort_s = float("inf")
        for _ in range(a.iters):
            t0 = time.perf_counter()
            sess.run(None, {"hidden_states": x})
            ort_s = min(ort_s, time.perf_counter() - t0)
        routing = [line.split(", ", 2)[2] for line in
                   sh([os.path.join(bindir, "moec"), model,
                       "--report"]).splitlines()
                   if line.startswith("layer 0")]
        times = []
        for n in (1, 2):
            plan = os.path.join(d, f"ep{n}.moeplan")
            if not os.path.exists(plan):
                sh([os.path.join(bindir, "moec"), model, "--mesh", f"ep={n}",
                    "-o", plan])
            env = dict(os.environ)
            env["OPENBLAS_NUM_THREADS"] = str(max(1, cores // n))
            env["OMP_NUM_THREADS"] = str(max(1, cores // n))
            out = os.path.join(d, "out.npy")
            best = float("inf")
            for _ in range(a.iters):
                rep = json.loads(sh([os.path.join(bindir, "moe-run"), "-n",
                                     str(n), plan, "--input",
                                     f"hidden_states={inp}", "-o", out,
                                     "--json", "--iters", "2"], env=env))
                best = min(best, max(r["seconds"] for r in rep["reports"]))
            err = float(np.abs(np.load(out) - ref).max())
            ok = err <= 1e-4 * float(np.abs(ref).max())
            times.append((best, err, ok))
        rows.append((form, routing[0] if routing else "NOT RAISED", ort_s,
                     times))

    print(f"\nOne MoE block per form: H={a.hidden} F={a.ffn} E={E} top-{K}, "
          f"{a.batch} x {a.seq} tokens, fp32, {cores} cores; best of "
          f"{a.iters}\n")
    print("| form | raised as | onnxruntime ms | moe-run ep=1 ms | vs ort "
          "| moe-run ep=2 ms | vs ort | max abs err |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    good = True
    for form, routing, ort_s, times in rows:
        (t1, e1, ok1), (t2, e2, ok2) = times
        good &= ok1 and ok2
        err = max(e1, e2)
        print(f"| {form} | {routing} | {ort_s * 1e3:.1f} | {t1 * 1e3:.1f} | "
              f"{ort_s / t1:.2f}x | {t2 * 1e3:.1f} | {ort_s / t2:.2f}x | "
              f"{err:.1e}{'' if ok1 and ok2 else ' FAIL'} |")
    print("\nvs ort: onnxruntime's time / moe-run's (>1: moe-run faster).")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
