#!/usr/bin/env python3
"""Torch CPU tensors as Plan.run inputs (DLPack): a plain tensor, one that
requires grad, and a non-contiguous view give the same outputs, bit for
bit, as the numpy array; a tensor of another dtype is refused naming the
input.

    check_dlpack.py MOEC_SRC
"""
import os
import sys

import numpy as np
import torch

import moec

src = sys.argv[1]
block = os.path.join(src, "examples", "mixtral_block")
x = np.load(os.path.join(block, "input.npy"))
plan = moec.compile(os.path.join(block, "model.onnx"), mesh="ep=2")
want = plan.run({"hidden_states": x})
t = torch.from_numpy(x.copy())
views = {
    "tensor": t,
    "requires_grad": t.clone().requires_grad_(),
    "non-contiguous": t.transpose(0, 1).contiguous().transpose(0, 1),
}
for tag, v in views.items():
    got = plan.run({"hidden_states": v})
    same = all(np.array_equal(got[n], want[n]) for n in want)
    print(f"{tag} (contiguous {v.is_contiguous()}): "
          f"{'same' if same else 'DIFFERENT'}")
try:
    plan.run({"hidden_states": t.double()})
    print("NOT RAISED")
except ValueError as e:
    print("raised ValueError:", e)
