#!/usr/bin/env python3
"""Compiles a builder model (examples/builder/models/NAME/P) for each mesh
with the shapes of a saved step (prefill or decode) and checks moe-run
against onnxruntime on the same file and inputs (test/e2e/check_plan.py),
and the saved references (gen.py's onnxruntime outputs) against them.

    check.py MODEL_DIR [--step prefill|decode ...] [--mesh ep=2 ...]
        [--bin DIR] [--tol 1e-4]
"""
import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(HERE, "..", "..", "test", "e2e")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--step", action="append", default=[])
    ap.add_argument("--mesh", action="append", default=[])
    ap.add_argument("--bin", default="")
    ap.add_argument("--tol", default="1e-4")
    a = ap.parse_args()
    tool = lambda t: os.path.join(a.bin, t) if a.bin else t
    model = os.path.join(a.model_dir, "model.onnx")
    bad = False
    for step in a.step or ["prefill", "decode"]:
        d = os.path.join(a.model_dir, step)
        ins, shapes = [], []
        for f in sorted(os.listdir(d)):
            if not f.endswith(".npy"):
                continue
            name, arr = f[:-4], np.load(os.path.join(d, f))
            ins += ["--input", f"{name}={os.path.join(d, f)}"]
            shapes += ["--input-shape", f"{name}=" + ",".join(map(str, arr.shape))]
        meshes = []
        for m in a.mesh or ["ep=1"]:
            meshes += ["--mesh", " ".join([m] + shapes)]
        cmd = [sys.executable, os.path.join(E2E, "check_plan.py"), model,
               "--launch", "threads", "--moec", tool("moec"),
               "--moe-run", tool("moe-run"), "--tol", a.tol] + meshes + ins
        r = subprocess.run(cmd, capture_output=True, text=True)
        for line in (r.stdout + r.stderr).splitlines():
            # the meshes' extra flags (the shapes) make long lines
            line = line.replace(" " + " ".join(shapes), "")
            print(f"{os.path.relpath(a.model_dir, os.path.join(HERE, 'models'))} {step}: {line}")
        bad |= r.returncode != 0
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
