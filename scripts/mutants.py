#!/usr/bin/env python3
"""Mutation campaign (issue 17): corrupted models through moec and corrupted
plans through moe-run, each outcome classified; any crash, hang, internal
error or (for plans) exit-0 wrong answer is a finding.

    python3 scripts/mutants.py onnx [--count 1000] [--seed 0] [--jobs 2]
        [--build build] [--keep DIR]
    python3 scripts/mutants.py plan [--count 500] ...

onnx: mutants of the committed example models under 2 MB
(examples/**/model.onnx) and of test/Import/*.onnxtxt: byte flips,
truncations, and structured edits made with the onnx package (a dim set to
0, -1 or 2^32; an initializer's data type changed; an initializer also
listed as a graph input; an int attribute set out of range; a Constant's
value shape inflated; a node's input renamed to nothing), each run through
`moec FILE --emit=mlir -o /dev/null`.

plan: plans compiled from small examples for ep=2, then byte flips in the
header, the manifest and the data segments, or truncations, each run with
`moe-run -n 2 --threads PLAN --input ...`; the output of a run that exits 0
is compared with the unmutated plan's (bit for bit; outputs as .npz).

Outcomes: `ok` (exit 0; for plans the same output), `error` (exit 1 with
a one-line `error:` and no internal-error text), and the findings: `crash`
(a signal, or another exit code), `hang` (past --timeout), `internal` (an
internal error, LLVM ERROR, assertion or uncaught exception text),
`wrong` (plans: exit 0 with a different output). Prints a table; with
--keep, copies each finding's input there. Exit 1 on any finding.
"""
import argparse
import concurrent.futures as cf
import glob
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERNAL = ("internal error", "LLVM ERROR", "Assertion", "terminate called",
            "Stack dump", "AddressSanitizer", "runtime error:")


def classify(r, timeout):
    if r is None:
        return "hang"
    text = r.stdout + r.stderr
    if r.returncode < 0 or r.returncode not in (0, 1):
        return "crash"
    if any(s in text for s in INTERNAL):
        return "internal"
    if r.returncode == 1 and "error" not in text:
        return "crash"  # exit 1 without saying why
    return "ok" if r.returncode == 0 else "error"


def run(cmd, timeout):
    try:
        return subprocess.run(cmd, capture_output=True, text=True,
                              errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def tool(a, name):
    """The tool's path: in --build's bin/, or found on PATH (--build PATH)."""
    return name if a.build == "PATH" else os.path.join(a.build, "bin", name)


def flip(data, rng, n=None):
    b = bytearray(data)
    for _ in range(n or rng.randint(1, 8)):
        if b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def truncate(data, rng):
    return data[:rng.randrange(max(1, len(data)))]


def structured(path, rng):
    """A structured edit of a binary model (onnx package): bytes or None."""
    import onnx
    from onnx import TensorProto
    m = onnx.load(path, load_external_data=False)
    g = m.graph
    kind = rng.choice(["dim", "dtype", "init_input", "attr", "const_shape",
                       "drop_input"])
    if kind == "dim":
        vis = list(g.input) + list(g.output) + list(g.value_info)
        dims = [d for v in vis for d in v.type.tensor_type.shape.dim]
        if not dims:
            return None
        rng.choice(dims).dim_value = rng.choice([0, -1, 2**32, 2**62])
    elif kind == "dtype":
        if not g.initializer:
            return None
        t = rng.choice(list(g.initializer))
        t.data_type = rng.choice([TensorProto.INT64, TensorProto.FLOAT16,
                                  TensorProto.DOUBLE, TensorProto.BOOL,
                                  TensorProto.STRING, 0, 99])
    elif kind == "init_input":
        if not g.initializer:
            return None
        t = rng.choice(list(g.initializer))
        g.input.append(onnx.helper.make_tensor_value_info(
            t.name, t.data_type, list(t.dims)))
    elif kind == "attr":
        attrs = [a for n in g.node for a in n.attribute
                 if a.type == onnx.AttributeProto.INT]
        if not attrs:
            return None
        rng.choice(attrs).i = rng.choice([-7, 7, 2**32, -2**40, 10**18])
    elif kind == "const_shape":
        ts = [a.t for n in g.node if n.op_type == "Constant"
              for a in n.attribute if a.name == "value"]
        if not ts:
            return None
        t = rng.choice(ts)
        if t.dims:
            t.dims[rng.randrange(len(t.dims))] = rng.choice([2**31, 2**40])
        else:
            t.dims.append(2**33)
    else:
        nodes = [n for n in g.node if n.input]
        if not nodes:
            return None
        n = rng.choice(nodes)
        n.input[rng.randrange(len(n.input))] = rng.choice(["", "nowhere"])
    return m.SerializeToString()


def onnx_seeds():
    seeds = [p for p in glob.glob(os.path.join(ROOT, "examples", "**",
                                               "model.onnx"), recursive=True)
             if os.path.getsize(p) < 2 << 20 and
             not os.path.exists(p + ".data")]
    seeds += glob.glob(os.path.join(ROOT, "test", "Import", "*.onnxtxt"))
    return sorted(seeds)


def onnx_campaign(a, work):
    rng = random.Random(a.seed)
    seeds = onnx_seeds()
    moec = tool(a, "moec")
    jobs = []
    for i in range(a.count):
        src = rng.choice(seeds)
        data = open(src, "rb").read()
        how = rng.choice(["flip", "flip", "truncate", "structured"])
        if src.endswith(".onnxtxt"):
            how = rng.choice(["flip", "truncate"])
        out = None
        if how == "structured":
            try:
                out = structured(src, rng)
            except Exception:  # noqa: BLE001 (the onnx package refused it)
                out = None
            if out is None:
                how = "flip"
        if out is None:
            out = flip(data, rng) if how == "flip" else truncate(data, rng)
        ext = ".onnxtxt" if src.endswith(".onnxtxt") else ".onnx"
        path = os.path.join(work, f"m{i}{ext}")
        with open(path, "wb") as f:
            f.write(out)
        jobs.append((path, os.path.relpath(src, ROOT), how,
                     [moec, path, "--emit=mlir", "-o", os.devnull]))

    def one(job):
        path, src, how, cmd = job
        r = run(cmd, a.timeout)
        return job, classify(r, a.timeout), r
    return jobs, one


def plan_campaign(a, work):
    rng = random.Random(a.seed)
    bases = []
    for ex, name in (("mixtral_block", "hidden_states"),
                     ("families/phimoe", "hidden_states"),
                     ("jetmoe/block", "hidden_states")):
        model = os.path.join(ROOT, "examples", ex, "model.onnx")
        inp = os.path.join(ROOT, "examples", ex, "input.npy")
        if not os.path.exists(model) or not os.path.exists(inp):
            continue
        plan = os.path.join(work, ex.replace("/", "_") + ".moeplan")
        subprocess.run([tool(a, "moec"), model, "--mesh", "ep=2",
                        "-o", plan], check=True, capture_output=True)
        ref = os.path.join(work, ex.replace("/", "_") + ".ref.npz")
        subprocess.run([tool(a, "moe-run"), "-n", "2",
                        "--threads", plan, "--input", f"{name}={inp}", "-o",
                        ref], check=True, capture_output=True)
        bases.append((plan, name, inp, ref))
    jobs = []
    for i in range(a.count):
        plan, name, inp, ref = rng.choice(bases)
        data = open(plan, "rb").read()
        how = rng.choice(["header", "manifest", "data", "data", "truncate"])
        if how == "truncate":
            out = truncate(data, rng)
        else:
            b = bytearray(data)
            lo, hi = {"header": (0, 64), "manifest": (64, min(len(b), 4096)),
                      "data": (min(len(b) - 1, 4096), len(b))}[how]
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(lo, max(lo + 1, hi))
                b[at] ^= 1 << rng.randrange(8)
            out = bytes(b)
        path = os.path.join(work, f"p{i}.moeplan")
        with open(path, "wb") as f:
            f.write(out)
        outnpy = os.path.join(work, f"p{i}.npz")
        jobs.append((path, os.path.basename(plan), how,
                     [tool(a, "moe-run"), "-n", "2", "--threads",
                      path, "--input", f"{name}={inp}", "-o", outnpy],
                     ref, outnpy))

    def one(job):
        path, src, how, cmd, ref, outnpy = job
        r = run(cmd, a.timeout)
        c = classify(r, a.timeout)
        if c == "ok":
            try:
                got, want = np.load(outnpy), np.load(ref)
                same = sorted(got.files) == sorted(want.files) and all(
                    np.array_equal(got[k], want[k], equal_nan=True)
                    for k in want.files)
            except Exception:  # noqa: BLE001 (a truncated output)
                same = False
            c = "ok" if same else "wrong"
        if os.path.exists(outnpy):
            os.remove(outnpy)
        return job, c, r
    return jobs, one


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["onnx", "plan"])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="the build directory (its bin/), or PATH")
    ap.add_argument("--keep", default=None)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="moec-mutants-")
    try:
        jobs, one = (onnx_campaign if a.mode == "onnx" else
                     plan_campaign)(a, work)
        counts, by_how, findings = {}, {}, []
        with cf.ThreadPoolExecutor(a.jobs) as pool:
            for job, c, r in pool.map(one, jobs):
                counts[c] = counts.get(c, 0) + 1
                by_how.setdefault(job[2], {}).setdefault(c, 0)
                by_how[job[2]][c] += 1
                if c not in ("ok", "error"):
                    tail = "" if r is None else (r.stderr or r.stdout)[-300:]
                    findings.append((job, c, tail))
        kinds = ["ok", "error", "crash", "hang", "internal", "wrong"]
        print(f"\n{a.mode} mutants: {len(jobs)} (seed {a.seed})\n")
        print("| mutation | " + " | ".join(kinds) + " |")
        print("| --- |" + " ---: |" * len(kinds))
        for how, cs in sorted(by_how.items()):
            print(f"| {how} | " + " | ".join(str(cs.get(k, 0))
                                             for k in kinds) + " |")
        print("| all | " + " | ".join(str(counts.get(k, 0))
                                      for k in kinds) + " |")
        for job, c, tail in findings[:20]:
            print(f"\n{c}: {job[2]} of {job[1]}: {' '.join(job[3][:2])}\n"
                  f"  {tail.strip()}")
            if a.keep:
                os.makedirs(a.keep, exist_ok=True)
                shutil.copy(job[0], a.keep)
        return 1 if findings else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
