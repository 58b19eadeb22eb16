"""Runs generated single-model cases (a folder with model.onnx and one
NAME.npy per input) through check_onnx.py (moec's IR in moe-eval against
onnxruntime) and, given meshes, check_plan.py (plans run by moe-run on
thread ranks), and writes such folders; shared by contrib_block_models.py
and quant_models.py."""
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import helper as h

HERE = os.path.dirname(os.path.abspath(__file__))


def save_case(d, nodes, inputs, feeds, outputs, inits=()):
    """Writes the case folder `d`: model.onnx (opsets 17 and com.microsoft
    1) of `nodes` with graph `inputs`, `outputs` and initializers `inits`,
    and NAME.npy for every array of `feeds`. Returns the model."""
    os.makedirs(d, exist_ok=True)
    g = h.make_graph(nodes, os.path.basename(d), inputs, outputs, list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17),
                                       h.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    onnx.save(m, os.path.join(d, "model.onnx"))
    for nm, arr in feeds.items():
        np.save(os.path.join(d, nm + ".npy"), arr)
    return m


def check_cases(cases, bindir="", meshes=(), tol=None):
    """`cases`: folders, or (folder, tolerance) pairs. Prints every line of
    the checks prefixed by the case's name; returns the exit status (1 when
    any check failed)."""
    tool = lambda t: os.path.join(bindir, t) if bindir else t
    bad = 0
    for case in cases:
        d, t = case if isinstance(case, tuple) else (case, tol)
        tol_args = ["--tol", str(t)] if t is not None else []
        ins = []
        for fn in sorted(os.listdir(d)):
            if fn.endswith(".npy"):
                ins += ["--input", f"{fn[:-4]}={os.path.join(d, fn)}"]
        model = os.path.join(d, "model.onnx")
        cmds = [[sys.executable, os.path.join(HERE, "check_onnx.py"), model,
                 "--moec", tool("moec"), "--moe-eval", tool("moe-eval")] +
                tol_args + ins]
        if meshes:
            mesh = [a for m in meshes for a in ("--mesh", m)]
            cmds.append([sys.executable, os.path.join(HERE, "check_plan.py"),
                         model, "--launch", "threads", "--moec", tool("moec"),
                         "--moe-run", tool("moe-run")] + tol_args + mesh + ins)
        for cmd in cmds:
            r = subprocess.run(cmd, capture_output=True, text=True)
            for line in (r.stdout + r.stderr).splitlines():
                print(f"{os.path.basename(d)}: {line}")
            bad |= r.returncode != 0
    return 1 if bad else 0
