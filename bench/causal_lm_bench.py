#!/usr/bin/env python3
"""A whole model on CPU ranks: transformers' MixtralForCausalLM (attention
and MoE layers) exported by torch.onnx's dynamo exporter, compiled by moec
and run by moe-run, against onnxruntime (CPU) on the same ONNX file, in one
run, as ratios.

    python3 bench/causal_lm_bench.py [--build build] [--work DIR] [--iters 3]
        [--hidden 256 --ffn 512 --layers 2 --heads 8 --kv-heads 2
         --vocab 1024 --batch 2 --seq 512] [--ranks 2]
    python3 bench/causal_lm_bench.py --model DIR [--ranks 4]

--model DIR takes an export that exists (DIR/model.onnx and DIR/input.npy,
e.g. examples/dynamo/batch1/mixtral_causal_lm: one prompt) instead of
exporting one (which needs torch and transformers).

The model (random weights, examples/dynamo/gen.py's export_causal_lm with
these sizes) is exported once into --work. onnxruntime runs the exported
graph as it is: its batched_mm experts gather every (token, choice)'s expert
weights, T*k*3*H*F floats (3.2 GB at the defaults), so keep H*F modest. Plans: ep=1 with attention's
batched matmuls as BLAS steps (moec's default), ep=1 with them as
generated loop kernels (`--batch-matmul=kernel`, the form before the
batch_matmul step existed), ep=2 (two MPI ranks; moec's default
`--token-split=auto`: one sequence half of the batch each when the batch is
even, else sequence-parallel MoE) and ep=2 with `--token-split=moe`
(attention replicated, each rank's MoE layers on half of the rows, the
combined rows all-gathered; with --batch 1 the same plan as the default),
tp=2 (attention by heads, the LM head by vocab and the experts by FFN
columns over two ranks, Megatron-style), tp=2 with
`--dense-tp=replicated` (only the experts split) and the folding
`--mesh ep=2 --attention-mesh tp=2` (vLLM's TP attention with EP MoE on the
same ranks: attention by heads, each rank dispatching half of the rows);
`--ranks 4` runs the 4-rank layouts instead (ep=4, tp=4, ep=4 folded with
attention tp=4 and, for an even batch, attention dp=2 x tp=2); every folding
also with `--sequence-parallel=off` (all-reduces instead of Megatron's
reduce-scatter, the default where the rows split evenly),
OpenBLAS threads = cores / ranks. Times are the best of
--iters runs: onnxruntime's session.run, and moe-run's slowest rank in its
second run (`--iters 2`). Each run's time is also split by step kind
(batch_matmul, matmul, experts, kernel, other) from moe-run's report.
Every output is checked against onnxruntime's logits (max abs err <= 1e-4
max|ref|). The bytes columns are what rank 0 sent in dispatch + combine and
took in by all-gathers (moe-run's report). Prints a markdown table.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from common import add_lm_args, sh

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    add_lm_args(ap, iters=3, batch=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--model", default=None,
                    help="a directory with model.onnx and input.npy")
    ap.add_argument("--ranks", type=int, default=2, choices=[2, 4])
    a = ap.parse_args()
    tag = (f"lm_h{a.hidden}_f{a.ffn}_l{a.layers}_a{a.heads}x{a.kv_heads}"
           f"_v{a.vocab}_b{a.batch}_s{a.seq}")
    work = a.work or os.path.join(a.build, "bench", tag)
    model = os.path.join(work, "model.onnx")
    src = work
    if a.model:
        import onnx
        src = a.model
        model = os.path.join(src, "model.onnx")
        m = onnx.load(model, load_external_data=False)
        dims = lambda n: [d.dim_value for d in next(
            i for i in m.graph.input if i.name == n).type.tensor_type.shape.dim]
        a.batch, a.seq = dims("input_ids")
        a.vocab = [d.dim_value for d in
                              m.graph.output[0].type.tensor_type.shape.dim][-1]
        a.layers = sum(1 for n in m.graph.node if n.op_type == "TopK")
        a.hidden = a.ffn = a.heads = a.kv_heads = 0
        work = a.work or os.path.join(
            a.build, "bench", os.path.basename(os.path.normpath(src)) +
            f"_b{a.batch}_s{a.seq}")
        os.makedirs(work, exist_ok=True)
    elif not os.path.exists(os.path.join(work, "output.npy")):
        print(f"exporting the model into {work} ...", file=sys.stderr)
        sys.path.insert(0, os.path.join(HERE, "..", "examples", "dynamo"))
        import gen
        gen.export_causal_lm(name=tag, out=work, hidden=a.hidden, ffn=a.ffn,
                             layers=a.layers, heads=a.heads,
                             kv_heads=a.kv_heads, vocab=a.vocab,
                             batch=a.batch, seq=a.seq)
    ids_path = os.path.join(src, "input.npy")
    ids = np.load(ids_path)
    bindir = os.path.join(a.build, "bin")
    cores = os.cpu_count() or 1

    import onnxruntime as ort
    ort.set_default_logger_severity(3)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input_ids": ids})[0]
    best = float("inf")
    for _ in range(a.iters):
        t0 = time.perf_counter()
        sess.run(None, {"input_ids": ids})
        best = min(best, time.perf_counter() - t0)
    ort_s = best
    scale = float(np.abs(ref).max())

    kinds = ["batch_matmul", "matmul", "experts", "kernel"]
    rows = []
    layouts = [("ep=1", "ep1", 1, "ep=1", []),
               ("ep=1 --batch-matmul=kernel", "ep1_kernel", 1, "ep=1",
                ["--batch-matmul=kernel"])]
    if a.ranks == 2:
        layouts += [
            ("ep=2", "ep2", 2, "ep=2", []),
            ("ep=2 --token-split=moe", "ep2_moe", 2, "ep=2",
             ["--token-split=moe"]),
            ("tp=2", "tp2", 2, "tp=2", []),
            ("tp=2 --dense-tp=replicated", "tp2_repl", 2, "tp=2",
             ["--dense-tp=replicated"]),
            ("ep=2 --attention-mesh tp=2", "ep2_fold_tp2", 2, "ep=2",
             ["--attention-mesh", "tp=2"]),
            ("ep=2 --attention-mesh tp=2 --sequence-parallel=off",
             "ep2_fold_tp2_nosp", 2, "ep=2",
             ["--attention-mesh", "tp=2", "--sequence-parallel=off"])]
    else:
        layouts += [
            ("ep=4", "ep4", 4, "ep=4", []),
            ("tp=4", "tp4", 4, "tp=4", []),
            ("ep=4 --attention-mesh tp=4", "ep4_fold_tp4", 4, "ep=4",
             ["--attention-mesh", "tp=4"]),
            ("ep=4 --attention-mesh tp=4 --sequence-parallel=off",
             "ep4_fold_tp4_nosp", 4, "ep=4",
             ["--attention-mesh", "tp=4", "--sequence-parallel=off"])]
        if a.batch % 2 == 0:
            layouts += [("ep=4 --attention-mesh dp=2,tp=2",
                         "ep4_fold_dp2tp2", 4, "ep=4",
                         ["--attention-mesh", "dp=2,tp=2"]),
                        ("ep=4 --attention-mesh dp=2,tp=2 "
                         "--sequence-parallel=off", "ep4_fold_dp2tp2_nosp", 4,
                         "ep=4", ["--attention-mesh", "dp=2,tp=2",
                                  "--sequence-parallel=off"])]
    for name, file, n, mesh, flags in layouts:
        plan = os.path.join(work, file + ".moeplan")
        if not os.path.exists(plan):
            sh([os.path.join(bindir, "moec"), model, "--mesh", mesh,
                "-o", plan] + flags)
        env = dict(os.environ)
        env["OPENBLAS_NUM_THREADS"] = str(max(1, cores // n))
        env["OMP_NUM_THREADS"] = str(max(1, cores // n))
        out = os.path.join(work, "logits.npy")
        best, split, moved = float("inf"), None, (0, 0, 0, 0)
        for _ in range(a.iters):
            rep = json.loads(sh([os.path.join(bindir, "moe-run"), "-n",
                                 str(n), plan, "--input",
                                 f"input_ids={ids_path}", "-o", out,
                                 "--json", "--iters", "2"], env=env))
            slow = max(rep["reports"], key=lambda r: r["seconds"])
            if slow["seconds"] < best:
                best = slow["seconds"]
                split = {k: 0.0 for k in kinds + ["other"]}
                for s in slow["steps"]:
                    split[s["op"] if s["op"] in kinds else "other"] += \
                        s["seconds"]
                r0 = rep["reports"][0]
                moved = (sum(p["bytes_sent"] for lay in r0["layers"]
                             for p in lay["peers"]),
                         sum(s.get("bytes_in", 0) for s in r0["steps"]
                             if s["op"] == "all_gather"),
                         sum(s.get("bytes_in", 0) for s in r0["steps"]
                             if s["op"] == "all_reduce"),
                         sum(s.get("bytes_in", 0) for s in r0["steps"]
                             if s["op"] == "reduce_scatter"))
        err = float(np.abs(np.load(out) - ref).max())
        rows.append((name, best, split, err, moved))

    tokens = a.batch * a.seq
    head = a.hidden // a.heads if a.heads else 0
    attn_flops = 2 * 2.0 * a.batch * a.heads * a.seq * a.seq * head * a.layers
    if a.model:
        print(f"\n{src}: {a.layers} MoE layers, vocab {a.vocab}, batch "
              f"{a.batch} x {a.seq} tokens ({tokens}), fp32, {cores} cores; "
              f"best of {a.iters}\n")
    else:
        print(f"\nMixtralForCausalLM, {a.layers} layers, H={a.hidden} "
              f"F={a.ffn} E=8 top-2, {a.heads} heads ({a.kv_heads} kv) of "
              f"{head}, vocab {a.vocab}, batch {a.batch} x {a.seq} tokens "
              f"({tokens}), fp32, {cores} cores; best of {a.iters}; "
              f"attention products {attn_flops / 1e9:.2f} GFLOP\n")
    print("| runner | time ms | vs onnxruntime | batch_matmul ms | matmul ms "
          "| experts ms | kernels ms | other ms | attention GFLOP/s "
          "| a2a KiB/rank | all-gather KiB/rank | all-reduce KiB/rank "
          "| reduce-scatter KiB/rank | max abs err |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: | ---: | ---: | ---: | ---: |")
    # Tiny committed examples run in well under a millisecond.
    fmt = (lambda x: f"{x * 1e3:.3f}") if ort_s < 0.01 else (
        lambda x: f"{x * 1e3:.1f}")
    print(f"| onnxruntime | {fmt(ort_s)} | 1.00x | | | | | | | | | "
          "| | |")
    ok = True
    for name, s, split, err, moved in rows:
        good = err <= 1e-4 * scale
        ok &= good
        bm = split["batch_matmul"]
        gf = f"{attn_flops / bm / 1e9:.1f}" if bm > 0 else ""
        cells = " | ".join(fmt(split[k]) for k in kinds + ["other"])
        print(f"| moe-run {name} | {fmt(s)} | {ort_s / s:.2f}x | "
              f"{cells} | {gf} | {moved[0] / 1024:.1f} | "
              f"{moved[1] / 1024:.1f} | {moved[2] / 1024:.1f} | "
              f"{moved[3] / 1024:.1f} | {err:.1e}{'' if good else ' FAIL'} |")
    print("\nvs onnxruntime: onnxruntime's time / moe-run's (>1: faster). "
          "Step columns: the slowest rank's time per step kind (kernels: "
          "generated kernels, which with --batch-matmul=kernel include "
          "attention's products). attention GFLOP/s: the products' FLOPs "
          "(QK^T and PV, all layers) over the batch_matmul steps' time. "
          "tp=2: attention, the LM head and the experts' FFN columns "
          "split over 2 ranks (Megatron); --dense-tp=replicated: only the "
          "experts split, attention whole on both ranks; --attention-mesh: "
          "attention tensor-parallel, the MoE expert-parallel over the same "
          "ranks, each dispatching its slice of the rows; with the rows "
          "splitting evenly, Megatron sequence parallelism (reduce-scatter "
          "instead of all-reduce, norms and routers on the rank's rows), "
          "--sequence-parallel=off keeps the all-reduces. all-reduce and "
          "reduce-scatter bytes: the payload (the whole partial sums).")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
