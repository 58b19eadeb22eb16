#!/usr/bin/env python3
"""Compiling DeepSeek-V3's structure as the layers grow (issue 15): moec's
CPU-seconds, peak RSS and plan size against the number of layers, and
moe-run's time to first output, with the logits checked against
onnxruntime.

    python3 bench/scale/bench_layers.py [--work /tmp/bench-layers]
        [--layers 2,8,16,32,61] [--mesh ep=8] [--big-meshes ep=64,dp=8x8]
        [--moec build/bin/moec] [--moe-run build/bin/moe-run]

Each model is bench/scale/gen_deepseek.py's (tiny widths, 256 experts, the
dynamo export), generated into WORK/lN once and reused. Every size compiles
for --mesh (default ep=8) and, for the largest, also for --big-meshes
(`x` for `,` inside a mesh: dp=8x8 is dp=8,ep=8); moe-run runs each plan
on thread ranks. Prints one markdown table. Needs torch and transformers.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, HERE)
from bench_weights import timed  # noqa: E402


def world(mesh):
    n = 1
    for ax in mesh.split(","):
        n *= int(ax.split("=")[1])
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/bench-layers")
    ap.add_argument("--layers", default="2,8,16,32,61")
    ap.add_argument("--mesh", default="ep=8")
    ap.add_argument("--big-meshes", dest="big", default="ep=64,dp=8x8")
    ap.add_argument("--moec", default=os.path.join(ROOT, "build/bin/moec"))
    ap.add_argument("--moe-run", dest="moe_run",
                    default=os.path.join(ROOT, "build/bin/moe-run"))
    a = ap.parse_args()
    layers = [int(x) for x in a.layers.split(",")]
    print("| layers | mesh | compile CPU-s | peak RSS | plan size | "
          "moe-run (threads) | max abs err vs onnxruntime |")
    print("|---|---|---|---|---|---|---|")
    for n in layers:
        d = os.path.join(a.work, f"l{n}")
        if not os.path.exists(os.path.join(d, "output.npy")):
            subprocess.run([sys.executable, os.path.join(HERE,
                                                         "gen_deepseek.py"),
                            d, "--layers", str(n)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        x = np.load(os.path.join(d, "input.npy"))
        ref = ort.InferenceSession(os.path.join(d, "model.onnx")).run(
            None, {"input_ids": x})[0]
        meshes = [a.mesh] + ([m.replace("x", ",ep=")
                              for m in a.big.split(",") if m]
                             if n == layers[-1] else [])
        for mesh in meshes:
            plan = os.path.join(d, "plan.moeplan")
            _, cpu, rss = timed([a.moec, os.path.join(d, "model.onnx"),
                                 "--mesh", mesh, "-o", plan])
            size = os.path.getsize(plan)
            out = os.path.join(d, "out.npy")
            wall, _, _ = timed([a.moe_run, "-n", str(world(mesh)),
                                "--threads", plan, "--input",
                                f"input_ids={d}/input.npy", "-o", out])
            err = float(abs(np.load(out) - ref).max())
            print(f"| {n} | {mesh} | {cpu:.1f} | {rss / 2**20:.0f} MiB | "
                  f"{size / 1e6:.0f} MB | {wall:.2f} s | {err:.1e} |",
                  flush=True)
            os.remove(plan)


if __name__ == "__main__":
    main()
