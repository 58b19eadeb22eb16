#!/usr/bin/env python3
"""Text generation with onnxruntime-genai's builder models (issue 19's
peer): `moe-run generate` with a prefill plan and a decode plan compiled
from the builder's own ONNX file, against onnxruntime-genai's generator on
the same model directory, in one run, as ratios.

    genai_generate_bench.py [--build build] [--work DIR] [--hidden 512]
        [--ffn 1024] [--prompt 64] [--new 32] [--iters 3]
        [--models gpt_oss,lfm2_moe]

The models are examples/builder/gen.py --hidden H --ffn F (random weights,
2 layers, 8 experts, top-2; the builder with -p fp32|int4 -e cpu), made
once into --work (the same directory bench/builder_bench.py uses). Greedy,
batch 1, a random prompt of --prompt tokens and --new new tokens. Prefill:
prompt tokens per second of the time to the first new token (onnxruntime-
genai: append_tokens and the first generate_next_token; moe-run: the
prefill plan's run). Decode: the other new tokens per second (moe-run: one
decode-plan step per token, each rank keeping its block of the cache).
onnxruntime-genai with its default threads (all cores); moe-run on one rank
(ep=1) and on two thread ranks (tp=2, where the model compiles for it),
OpenBLAS threads = cores / ranks. Best of --iters. Both generators' ids must
be equal (printed). Prints a markdown table.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from common import builder_models, sh

HERE = os.path.dirname(os.path.abspath(__file__))


def shapes(model_dir, prompt, total):
    """moec --input-shape for the prefill (a dynamic prompt, empty caches)
    and for the decode step (a dynamic cache length), from the model's
    inputs: past_sequence_length 0 / ?, a sliding window's ring at its
    size, kv_cache_dim the head size, batch 1."""
    import onnx
    model = os.path.join(model_dir, "model.onnx")
    m = onnx.load(model, load_external_data=False)
    with open(os.path.join(model_dir, "genai_config.json")) as f:
        cfg = json.load(f)["model"]["decoder"]
    head = cfg["head_size"]
    window = cfg.get("sliding_window", {}).get("window_size", 0)
    pre, dec = [], []
    for i in m.graph.input:
        dims = [d.dim_value if d.dim_value else d.dim_param
                for d in i.type.tensor_type.shape.dim]

        def at(prefill):
            out = []
            for d in dims:
                if isinstance(d, int):
                    out.append(str(d))
                elif d == "batch_size":
                    out.append("1")
                elif d == "sequence_length":
                    out.append("?" if prefill else "1")
                elif d == "total_sequence_length":
                    out.append("?" if prefill else "?+1")
                elif d == "past_sequence_length":
                    out.append("0" if prefill else "?")
                elif d == "past_sliding_length":
                    out.append(str(window))
                elif d == "kv_cache_dim":
                    out.append(str(head))
                else:
                    raise SystemExit(f"{model}: input {i.name} dim {d}?")
            return f"{i.name}={','.join(out)}"
        pre.append(at(True))
        dec.append(at(False))
    return ";".join(pre), ";".join(dec)


def genai(model_dir, prompt, new, iters):
    """onnxruntime-genai's greedy ids, prefill and decode seconds."""
    import onnxruntime_genai as og
    model = og.Model(model_dir)
    best_p, best_d, ids = float("inf"), float("inf"), None
    for _ in range(iters):
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, batch_size=1,
                                  max_length=prompt.shape[1] + new)
        g = og.Generator(model, params)
        t0 = time.perf_counter()
        g.append_tokens(prompt)
        g.generate_next_token()
        t1 = time.perf_counter()
        while not g.is_done():
            g.generate_next_token()
        t2 = time.perf_counter()
        best_p, best_d = min(best_p, t1 - t0), min(best_d, t2 - t1)
        ids = np.array([list(g.get_sequence(0))], np.int64)
    return ids, best_p, best_d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--work")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--models", default="gpt_oss,lfm2_moe")
    a = ap.parse_args()
    names = a.models.split(",")
    work = builder_models(a.build, a.work, a.hidden, a.ffn, names)
    bindir = os.path.join(a.build, "bin")
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, 250, (1, a.prompt)).astype(np.int64)
    cores = os.cpu_count() or 1
    rows, good = [], True
    for name in names:
        for prec in ("fp32", "int4"):
            d = os.path.join(work, name, prec)
            ref, gp, gd = genai(d, prompt, a.new, a.iters)
            row = [name, prec, (gp, gd)]
            pre_shape, dec_shape = shapes(d, a.prompt, a.prompt + a.new)
            np.save(os.path.join(d, "bench_prompt.npy"), prompt)
            for mesh, n in (("ep=1", 1), ("tp=2", 2)):
                tag = mesh.replace("=", "")
                pre = os.path.join(d, f"gen_pre_{tag}.moeplan")
                dec = os.path.join(d, f"gen_dec_{tag}.moeplan")
                try:
                    sh([os.path.join(bindir, "moec"),
                        os.path.join(d, "model.onnx"), "--mesh", mesh,
                        "--input-shape", pre_shape, "--max-tokens",
                        str(a.prompt), "-o", pre])
                    sh([os.path.join(bindir, "moec"),
                        os.path.join(d, "model.onnx"), "--mesh", mesh,
                        "--input-shape", dec_shape, "--max-tokens",
                        str(a.prompt + a.new), "-o", dec])
                except SystemExit as e:
                    print(f"{name} {prec} {mesh}: {e}", file=sys.stderr)
                    row.append(None)
                    continue
                env = dict(os.environ,
                           OPENBLAS_NUM_THREADS=str(max(1, cores // n)))
                out = os.path.join(d, "gen_ids.npy")
                bp, bd = float("inf"), float("inf")
                for _ in range(a.iters):
                    j = json.loads(sh(
                        [os.path.join(bindir, "moe-run"), "generate", "-n",
                         str(n), "--threads", pre, "--decode-plan", dec,
                         "--ids", os.path.join(d, "bench_prompt.npy"),
                         "--max-new-tokens", str(a.new), "-o", out,
                         "--json", "--quiet"], env=env))
                    bp = min(bp, j["prefill_seconds"])
                    bd = min(bd, j["decode_seconds"])
                same = bool((np.load(out) == ref).all())
                good &= same
                row.append((bp, bd, same, j.get("kv_cache", "")))
            rows.append(row)
    print(f"\nBuilder models (gen.py --hidden {a.hidden} --ffn {a.ffn}: 2 "
          f"layers, 8 experts, top-2), batch 1, prompt {a.prompt}, {a.new} "
          f"new tokens (greedy); {cores} cores, best of {a.iters}\n")
    print("| model | weights | generator | prefill tok/s | decode tok/s | "
          "prefill vs genai | decode vs genai | ids = genai |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
    for name, prec, (gp, gd), *ours in rows:
        print(f"| {name} | {prec} | onnxruntime-genai | "
              f"{a.prompt / gp:.0f} | {(a.new - 1) / gd:.0f} | 1.00 | 1.00 "
              f"| - |")
        for mesh, r in zip(("ep=1", "tp=2"), ours):
            if r is None:
                print(f"| {name} | {prec} | moe-run {mesh} | does not "
                      f"compile | | | | |")
                continue
            bp, bd, same, _ = r
            print(f"| {name} | {prec} | moe-run {mesh} | {a.prompt / bp:.0f}"
                  f" | {(a.new - 1) / bd:.0f} | {gp / bp:.2f} | "
                  f"{gd / bd:.2f} | {'yes' if same else 'NO'} |")
    print("\nvs genai: onnxruntime-genai's time / moe-run's (>1: moe-run "
          "faster).")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
