#!/usr/bin/env python3
"""Plans with a dynamic token count against static plans (issue 19): one
plan compiled with `--input-shape x=?,H --max-tokens MAX` run at several
counts, beside a static plan compiled for each count and onnxruntime on the
same file, on 1 and 2 CPU ranks (on 2 also with --token-split moe: the
rows cut inside the plan, uneven blocks at odd counts), in one run.

    python3 bench/dynamic_tokens_bench.py [--build build] [--work DIR]
        [--hidden 512 --ffn 1408 --experts 8] [--tokens 1,16,128,512]
        [--iters 3]

The model is a com.microsoft.MoE layer (router MatMul, top-2, SwiGLU experts
with biases) with a symbolic token dim (test/moec/Inputs/
make_dynamic_models.py). Times are the best of --iters runs: moe-run's
slowest rank's step time in its second run (`--iters 2`) and onnxruntime's
session.run. Every output is checked against onnxruntime (max abs err <=
1e-4 max|ref|). Also prints moec's compile time for both kinds of plan.
Prints a markdown table.
"""
import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

from common import sh

HERE = os.path.dirname(os.path.abspath(__file__))


def load_models_module():
    path = os.path.join(HERE, "..", "test", "moec", "Inputs",
                        "make_dynamic_models.py")
    spec = importlib.util.spec_from_file_location("make_dynamic_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--work", default=None)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--ffn", type=int, default=1408)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--tokens", default="1,16,128,512")
    ap.add_argument("--iters", type=int, default=3)
    a = ap.parse_args()
    H, F, E = a.hidden, a.ffn, a.experts
    counts = [int(t) for t in a.tokens.split(",")]
    top = max(counts)
    work = a.work or os.path.join(a.build, "bench", f"dyn_h{H}_f{F}_e{E}")
    os.makedirs(work, exist_ok=True)
    bindir = os.path.join(a.build, "bin")
    model = os.path.join(work, "ms-moe.onnx")
    if not os.path.exists(model):
        load_models_module().ms_moe(model, np.random.default_rng(0), H, F, E)
    cores = os.cpu_count() or 1

    import onnxruntime as ort
    ort.set_default_logger_severity(3)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    def compile_plan(path, flags):
        t0 = time.perf_counter()
        sh([os.path.join(bindir, "moec"), model, "-o", path] + flags)
        return time.perf_counter() - t0

    def run_plan(plan, n, x_path, out):
        env = dict(os.environ)
        env["OPENBLAS_NUM_THREADS"] = str(max(1, cores // n))
        env["OMP_NUM_THREADS"] = str(max(1, cores // n))
        best = float("inf")
        for _ in range(a.iters):
            rep = json.loads(sh([os.path.join(bindir, "moe-run"), "-n", str(n),
                                 plan, "--input", f"x={x_path}", "-o", out,
                                 "--json", "--iters", "2"], env=env))
            best = min(best, max(r["seconds"] for r in rep["reports"]))
        return best, np.load(out)

    compile_s = {}
    rows, ok = [], True
    # The MoE layer split over tokens (the input's rows in blocks), and on
    # 2 ranks with --token-split moe: the input replicated, the rows cut
    # inside the plan (sequence-parallel: a static plan pads them to a
    # multiple of the ranks, a dynamic plan cuts uneven blocks per call,
    # so odd counts run too).
    modes = [(1, "model"), (2, "model"), (2, "moe")]
    for n, split in modes:
        key = (n, split)
        extra = ["--token-split", "moe"] if split == "moe" else []
        dyn = os.path.join(work, f"dyn_max{top}_ep{n}_{split}.moeplan")
        compile_s[("dynamic", key)] = compile_plan(
            dyn, ["--mesh", f"ep={n}", "--input-shape", f"x=?,{H}",
                  "--max-tokens", str(top)] + extra)
        mode_counts = counts if split == "model" else sorted(
            set(counts) | {T - 1 for T in counts if T > 2})
        for T in mode_counts:
            if split == "model" and T % n:
                continue  # a static plan needs T divisible by the ranks
            x = np.random.default_rng(T).standard_normal((T, H)).astype(
                np.float32)
            x_path = os.path.join(work, f"x{T}.npy")
            np.save(x_path, x)
            ref = sess.run(None, {"x": x})[0]
            best_ort = float("inf")
            for _ in range(a.iters):
                t0 = time.perf_counter()
                sess.run(None, {"x": x})
                best_ort = min(best_ort, time.perf_counter() - t0)
            static = os.path.join(work, f"static_t{T}_ep{n}_{split}.moeplan")
            s = compile_plan(static, ["--mesh", f"ep={n}", "--input-shape",
                                      f"x={T},{H}"] + extra)
            compile_s.setdefault(("static", key), []).append(s)
            out = os.path.join(work, "out.npz")
            t_static, y_static = run_plan(static, n, x_path, out)
            t_dyn, y_dyn = run_plan(dyn, n, x_path, out)
            scale = float(np.abs(ref).max())
            err = max(float(np.abs(y_static["y"] - ref).max()),
                      float(np.abs(y_dyn["y"] - ref).max()))
            good = err <= 1e-4 * scale
            ok &= good
            rows.append((T, n, split, t_static, t_dyn, best_ort, err, good))

    print(f"\ncom.microsoft.MoE layer H={H} F={F} E={E} top-2, fp32, {cores} "
          f"cores; one dynamic plan per mesh (--max-tokens {top}) against a "
          f"static plan per count; best of {a.iters}\n")
    print("| tokens | ranks | token split | static plan ms | dynamic plan "
          "ms | dynamic / static | onnxruntime ms | static vs ort | max abs "
          "err |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for T, n, split, ts, td, to, err, good in rows:
        print(f"| {T} | {n} | {split} | {ts * 1e3:.2f} | {td * 1e3:.2f} | "
              f"{td / ts:.2f} | {to * 1e3:.2f} | {to / ts:.2f}x | {err:.1e}"
              f"{'' if good else ' FAIL'} |")
    print("\nmoec compile time (wall, s): " + ", ".join(
        f"ep={n} {split}: dynamic {compile_s[('dynamic', (n, split))]:.2f}, "
        f"static {np.mean(compile_s[('static', (n, split))]):.2f} (mean)"
        for n, split in modes))
    print("dynamic / static: the dynamic plan's time over the static plan's "
          "at the same count (1.00: no cost); static vs ort: onnxruntime's "
          "time over the static plan's (>1: faster).")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
