#!/usr/bin/env python3
"""Compiles a builder model (examples/builder/models/NAME/P) for each mesh
with the shapes of a saved step (prefill or decode) and checks moe-run
against onnxruntime on the same file and inputs (test/e2e/check_plan.py),
and the saved references (gen.py's onnxruntime outputs) against them.

    check.py MODEL_DIR [--step prefill|decode ...] [--mesh ep=2 ...]
        [--bin DIR] [--tol 1e-4] [--accuracy-level N]

--accuracy-level N checks a copy of the model whose MatMulNBits and QMoE
nodes have accuracy_level N (the int4 files have 4: onnxruntime then
quantizes the activations to int8 on CPU, which moec does not model; with 0
onnxruntime multiplies in fp32 and a tight tolerance applies).
"""
import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(HERE, "..", "..", "test", "e2e")


def with_accuracy_level(model, level, out_dir):
    """A copy of `model` in out_dir (its external data copied: onnxruntime
    refuses a link out of the model's folder) with
    accuracy_level `level` on every MatMulNBits and QMoE node."""
    import onnx
    from onnx import helper
    m = onnx.load(model, load_external_data=False)
    for n in m.graph.node:
        if n.domain == "com.microsoft" and n.op_type in ("MatMulNBits", "QMoE"):
            keep = [x for x in n.attribute if x.name != "accuracy_level"]
            del n.attribute[:]
            n.attribute.extend(keep)
            n.attribute.append(helper.make_attribute("accuracy_level", level))
    src = os.path.dirname(os.path.abspath(model))
    for f in os.listdir(src):
        if f.endswith(".data"):
            shutil.copy(os.path.join(src, f), os.path.join(out_dir, f))
    path = os.path.join(out_dir, "model.onnx")
    onnx.save(m, path)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--step", action="append", default=[])
    ap.add_argument("--mesh", action="append", default=[])
    ap.add_argument("--bin", default="")
    ap.add_argument("--tol", default="1e-4")
    ap.add_argument("--accuracy-level", dest="accuracy_level", type=int)
    a = ap.parse_args()
    tool = lambda t: os.path.join(a.bin, t) if a.bin else t
    model = os.path.join(a.model_dir, "model.onnx")
    if a.accuracy_level is not None:
        tmp = tempfile.mkdtemp(prefix="acc")
        atexit.register(shutil.rmtree, tmp, True)
        model = with_accuracy_level(model, a.accuracy_level, tmp)
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
