"""Compares a moe-run output with a reference: compare.py OUT[:NAME] REF.

OUT is a .npy file, or a .npz member given as FILE.npz:NAME. Prints
"match NAME" when |out - ref| <= 1e-4 * max|ref| everywhere and the shapes
and dtypes agree; otherwise prints the difference and exits 1."""

import sys

import numpy as np


def load(spec):
    if ".npz:" in spec:
        path, name = spec.split(".npz:")
        return np.load(path + ".npz")[name], name
    return np.load(spec), spec.rsplit("/", 1)[-1]


out, name = load(sys.argv[1])
ref = np.load(sys.argv[2])
if out.shape != ref.shape or out.dtype != ref.dtype:
    print(f"mismatch {name}: {out.dtype}{out.shape} vs {ref.dtype}{ref.shape}")
    sys.exit(1)
# An empty output (a dynamic plan run at 0 tokens) matches by its shape.
scale = max(float(np.abs(ref).max(initial=0.0)), 1e-30)
err = float(np.abs(out.astype(np.float64) - ref).max(initial=0.0))
if err > 1e-4 * scale:
    print(f"mismatch {name}: max error {err} (scale {scale})")
    sys.exit(1)
print(f"match {name}")
