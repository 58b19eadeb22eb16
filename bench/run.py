#!/usr/bin/env python3
"""The CPU benchmark of issue 5: moe-run on 1 and 2 ranks against
onnxruntime (CPU) on the same ONNX files, in one run, as ratios; plus the
achieved GFLOP/s of the expert GEMMs against the BLAS sgemm rate measured in
the same run (moert-cpu-bench).

    python3 bench/run.py [--build build] [--work build/bench] [--iters 3]
        [--hidden 1024 --ffn 2816 --experts 8 --topk 2 --tokens 2048]

Models (bench/make_models.py, generated once into --work): a Mixtral-style
block exported by torch.onnx (per-expert loop) and the same layer as one
com.microsoft.MoE node. Each is compiled by moec for ep=1 and ep=2 and run by
moe-run (MPI ranks; OpenBLAS threads = cores / ranks). Times are the best of
--iters runs: onnxruntime's session.run, and moe-run's slowest rank's step
time in its second run (`--iters 2`: weights faulted in, caches warm, as
onnxruntime's timed runs after its warm-up run). Every
output is checked against torch's reference (max abs err <= 1e-4 max|ref|).
Prints a markdown table.
"""
import argparse
import json
import os
import re
import sys
import time

import numpy as np

from common import sh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--work", default=None)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2048)
    a = ap.parse_args()
    H, FF, E, K, T = a.hidden, a.ffn, a.experts, a.topk, a.tokens
    work = a.work or os.path.join(a.build, "bench", f"h{H}_f{FF}_e{E}_k{K}_t{T}")
    os.makedirs(work, exist_ok=True)
    bindir = os.path.join(a.build, "bin")
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(work, "ort_moe.onnx")):
        print(f"generating models into {work} ...", file=sys.stderr)
        sh([sys.executable, os.path.join(here, "make_models.py"), work,
            "--hidden", str(H), "--ffn", str(FF), "--experts", str(E),
            "--topk", str(K), "--tokens", str(T)])
    x = np.load(os.path.join(work, "input.npy"))
    ref = np.load(os.path.join(work, "reference.npy"))
    cores = os.cpu_count() or 1
    expert_flops = 2.0 * T * K * H * FF * 3  # gate, up, down GEMMs

    import onnxruntime as ort
    ort.set_default_logger_severity(3)
    rows = []
    for model in ["torch_block", "ort_moe"]:
        path = os.path.join(work, model + ".onnx")
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        y = sess.run(None, {"hidden_states": x})[0]
        err = float(np.abs(y - ref).max())
        best = float("inf")
        for _ in range(a.iters):
            t0 = time.perf_counter()
            sess.run(None, {"hidden_states": x})
            best = min(best, time.perf_counter() - t0)
        ort_s = best
        rows.append((model, "onnxruntime", 1, ort_s, None, err))
        for n in [1, 2]:
            plan = os.path.join(work, f"{model}_ep{n}.moeplan")
            if not os.path.exists(plan):
                sh([os.path.join(bindir, "moec"), path, "--mesh", f"ep={n}",
                    "-o", plan])
            env = dict(os.environ)
            env["OPENBLAS_NUM_THREADS"] = str(max(1, cores // n))
            env["OMP_NUM_THREADS"] = str(max(1, cores // n))
            out = os.path.join(work, f"{model}_ep{n}.npy")
            best, best_experts, err = float("inf"), None, None
            for _ in range(a.iters):
                rep = json.loads(sh([os.path.join(bindir, "moe-run"), "-n",
                                     str(n), plan, "--input",
                                     f"hidden_states={os.path.join(work, 'input.npy')}",
                                     "-o", out, "--json", "--iters", "2"],
                                    env=env))
                total = max(r["seconds"] for r in rep["reports"])
                experts = max(sum(s["seconds"] for s in r["steps"]
                                  if s["op"] == "experts")
                              for r in rep["reports"])
                if total < best:
                    best, best_experts = total, experts
                err = float(np.abs(np.load(out) - ref).max())
            rows.append((model, f"moe-run -n {n}", n, best, best_experts, err))

    # The BLAS rate on this machine, now.
    bench = sh([os.path.join(bindir, "moert-cpu-bench"), "--tokens", str(T),
                "--hidden", str(H), "--ffn", str(FF), "--experts", str(E),
                "--topk", str(K), "--iters", "2"])
    m = re.search(r"cblas_sgemm \S+\s+\S+\s+\S+\s+(\S+)\s+(\S+)", bench)
    sgemm = float(m.group(2)) if m else float("nan")

    scale = float(np.abs(ref).max())
    print(f"\nMoE layer H={H} F={FF} E={E} top-{K}, {T} tokens, fp32, "
          f"{cores} cores; best of {a.iters}; BLAS sgemm (same run, "
          f"moert-cpu-bench): {sgemm:.1f} GFLOP/s\n")
    print("| model | runner | time ms | vs onnxruntime | expert GEMMs GFLOP/s "
          "| of sgemm | max abs err |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    ok = True
    for model in ["torch_block", "ort_moe"]:
        base = next(r[3] for r in rows if r[0] == model and r[1] == "onnxruntime")
        for (mm, runner, n, s, ex, err) in rows:
            if mm != model:
                continue
            good = err <= 1e-4 * scale
            ok &= good
            # All ranks' expert GEMMs together (they run concurrently).
            gf = f"{expert_flops / ex / 1e9:.1f}" if ex else ""
            frac = f"{expert_flops / ex / 1e9 / sgemm:.2f}" if ex else ""
            print(f"| {model} | {runner} | {s * 1e3:.1f} | {base / s:.2f}x | "
                  f"{gf} | {frac} | {err:.1e}{'' if good else ' FAIL'} |")
    print("\nvs onnxruntime: onnxruntime's time / this runner's time (>1: "
          "faster). Expert GEMM GFLOP/s: 2*T*k*H*F*3 over the slowest rank's "
          "experts step (all ranks together), against the sgemm rate of all "
          "cores.")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
