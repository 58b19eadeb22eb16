#!/usr/bin/env python3
"""One rank of an MPI job (mpirun -n 4): moert.init(), moert.load(PLAN),
run this rank; rank 0 compares the gathered outputs with onnxruntime on
the model the plan was compiled from.

    mpirun -n 4 python3 mpi_run.py PLAN MOEC_SRC
"""
import os
import sys

import numpy as np

import moert

plan_path, src = sys.argv[1:3]
rank, size = moert.init()
x = np.load(os.path.join(src, "examples", "mixtral_block", "input.npy"))
plan = moert.load(plan_path)
outs = plan.run({"hidden_states": x}, threads=False)
if rank != 0:
    if outs:
        print(f"UNEXPECTED outputs on rank {rank}")
    sys.exit(0)
import onnxruntime as ort  # noqa: E402

sess = ort.InferenceSession(
    os.path.join(src, "examples", "mixtral_block", "model.onnx"),
    providers=["CPUExecutionProvider"])
ref = dict(zip([o.name for o in sess.get_outputs()],
               sess.run(None, {"hidden_states": x})))
print(f"rank 0 of {size}, reports from {len(plan.last_run_report)} ranks, "
      "transport", plan.last_run_report[0]["collectives"][0]["transport"])
for name in sorted(ref):
    err = float(abs(outs[name] - ref[name]).max() / abs(ref[name]).max())
    print(f"{'ok' if err <= 1e-4 else 'FAIL'} {name}: max rel err {err:.1e}")
