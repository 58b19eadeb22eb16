#!/usr/bin/env python3
"""Checks that moec's IR computes what onnxruntime computes on the original
ONNX model.

    check_onnx.py MODEL [MODEL...] [--moec BIN/moec] [--moe-eval BIN/moe-eval]
        [--input NAME=FILE.npy] [--reference NAME=FILE.npy]
        [--input-shape NAME=D0,D1,...] [--dim-size N] [--seed S] [--tol T]

For each model: inputs are the given .npy files or seeded random data (float:
standard normal; integer: small non-negative values, usable as indices; bool:
random), onnxruntime (CPU) runs the model (.onnxtxt files are parsed with the
onnx package), `moec --emit-weights` imports it, `moe-eval` runs the IR, and
every output must satisfy max|moec - ref| <= tol * max(1, max|ref|).
Symbolic input dims take the sizes given by --input-shape or else --dim-size
(the same size for the same dim name); either way the sizes are passed on to
moec with --input-shape, which needs them fixed. Dynamic dims in the IR then
come from data-dependent ops (NonZero), which moe-eval evaluates concretely.
moec and moe-eval are looked up on PATH unless given.
Prints one line per output and exits non-zero on any mismatch.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort

ort.set_default_logger_severity(3)

NP_TYPES = {1: np.float32, 11: np.float64, 7: np.int64, 6: np.int32, 9: np.bool_}


def load_model(path):
    if path.endswith(".onnxtxt"):
        text = "".join(l for l in open(path) if not l.lstrip().startswith("#"))
        return onnx.parser.parse_model(text)
    return onnx.load(path)


def run_tool(cmd, model, what):
    """Runs one tool; on failure prints why and returns False."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL {model}: {what} exited with {r.returncode}: "
              f"{r.stderr.strip()}")
        return False
    return True


def check(args, path, rng):
    model = load_model(path)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    given = dict(kv.split("=", 1) for kv in args.input)
    fixed = {}
    for kv in args.input_shape:
        name, dims = kv.split("=", 1)
        fixed[name] = [int(d) for d in dims.split(",") if d]
    symbolic = {}
    extra_shapes = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        if inp.name in given:
            feeds[inp.name] = np.load(given[inp.name])
            continue
        tt = inp.type.tensor_type
        if inp.name in fixed:
            shape = fixed[inp.name]
        else:
            shape = []
            for d in tt.shape.dim:
                if d.HasField("dim_value"):
                    shape.append(d.dim_value)
                else:
                    key = d.dim_param or f"{inp.name}.{len(shape)}"
                    shape.append(symbolic.setdefault(key, args.dim_size))
            if len(shape) != len([d for d in tt.shape.dim if d.HasField("dim_value")]):
                # moec needs symbolic graph-input dims fixed.
                extra_shapes.append(f"{inp.name}=" + ",".join(map(str, shape)))
        dt = NP_TYPES[tt.elem_type]
        if dt in (np.float32, np.float64):
            feeds[inp.name] = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[inp.name] = rng.integers(0, args.max_int + 1, shape).astype(dt)
    refs = dict(kv.split("=", 1) for kv in args.reference)
    names = [o.name for o in model.graph.output]
    if all(n in refs for n in names):
        expected = [np.load(refs[n]) for n in names]
        source = "reference files"
    else:
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        expected = sess.run(None, feeds)
        source = "onnxruntime"
    with tempfile.TemporaryDirectory() as tmp:
        mlir = os.path.join(tmp, "model.mlir")
        cmd = [args.moec, path, "--emit-weights", "-o", mlir]
        for s in args.input_shape + extra_shapes:
            cmd += ["--input-shape", s]
        base = os.path.basename(path)
        if not run_tool(cmd, base, "moec"):
            return False
        ev = [args.moe_eval, mlir]
        for name, arr in feeds.items():
            f = os.path.join(tmp, "in_%d.npy" % len(ev))
            np.save(f, arr)
            ev += ["--input", f"{name}={f}"]
        outs = [os.path.join(tmp, "out_%d.npy" % k) for k in range(len(names))]
        for o in outs:
            ev += ["-o", o]
        if not run_tool(ev, base, "moe-eval"):
            return False
        ok = True
        for name, ref, out in zip(names, expected, outs):
            got = np.load(out)
            if got.shape != ref.shape:
                print(f"FAIL {os.path.basename(path)}:{name}: shape {got.shape} vs {source} {ref.shape}")
                ok = False
                continue
            if ref.dtype.kind in "fc":
                diff = np.abs(got.astype(np.float64) - ref)
                # NaN where both are NaN (or equal infinities) is agreement.
                same = (np.isnan(got) & np.isnan(ref)) | (got == ref)
                diff = np.where(same, 0.0, diff)
                diff = np.where(np.isnan(diff), np.inf, diff)
                err = float(diff.max()) if ref.size else 0.0
                finite = np.abs(ref[np.isfinite(ref)])
                scale = max(1.0, float(finite.max()) if finite.size else 0.0)
            else:
                err = float(np.abs(got.astype(np.int64) - ref.astype(np.int64)).max()) if ref.size else 0.0
                scale = 1.0
            good = err <= args.tol * scale
            ok &= good
            print(f"{'ok  ' if good else 'FAIL'} {os.path.basename(path)}:{name} "
                  f"shape {list(ref.shape)} max abs err {err:.3e} (max|ref| {scale:.3g}, vs {source})")
        return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--moec", default="moec")
    p.add_argument("--moe-eval", default="moe-eval")
    p.add_argument("--input", action="append", default=[])
    p.add_argument("--reference", action="append", default=[])
    p.add_argument("--input-shape", action="append", default=[])
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--max-int", type=int, default=1)
    p.add_argument("--dim-size", type=int, default=3,
                   help="size of symbolic input dims not fixed by --input-shape")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    # Each model's inputs from its own stream (the seed and its file name),
    # so that they do not depend on which other models the list holds.
    bad = [m for m in args.models
           if not check(args, m, np.random.default_rng(
               [args.seed, zlib.crc32(os.path.basename(m).encode())]))]
    if bad:
        sys.exit("mismatch in: " + ", ".join(bad))


if __name__ == "__main__":
    main()
