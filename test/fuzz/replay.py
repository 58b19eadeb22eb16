#!/usr/bin/env python3
"""Replays fuzzer findings (test/fuzz/regressions/TARGET/*) through the real
tools and requires a clean error for each: exit status 1, an "error:" line
on stderr, no crash, no sanitizer or assertion report, no hang.

  replay.py onnx-binary DIR -- moec          each file as DIR/x.onnx
  replay.py onnx-text DIR -- moec            each file as x.onnxtxt
  replay.py plan DIR -- moe-run              moe-run --describe, then moe-run
                                             -n 1 (loads the plan for rank 0)
  replay.py npy DIR -- moe-run PLAN NAME     moe-run -n 2 --threads PLAN
                                             --input NAME=FILE

Prints one line per input; exits 1 when any input fails.
"""
import os
import shutil
import subprocess
import sys
import tempfile

BAD = ("Sanitizer", "runtime error:", "Assertion", "Stack dump",
       "terminate called", "LLVM ERROR", "Segmentation fault", "Aborted")


def check(cmd, name):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           errors="replace")
    except subprocess.TimeoutExpired:
        return "hangs (over 120 s): " + " ".join(cmd)
    err = p.stderr.strip()
    if p.returncode != 1:
        return "exit status %d, expected 1: %s\n%s" % (
            p.returncode, " ".join(cmd), err[-2000:])
    if any(b in err for b in BAD) or "error:" not in err:
        return "not a clean error: %s\n%s" % (" ".join(cmd), err[-2000:])
    return None


def main():
    kind, src = sys.argv[1], sys.argv[2]
    tool = sys.argv[sys.argv.index("--") + 1:]
    # A target without findings has no directory.
    inputs = sorted(f for f in os.listdir(src)
                    if not f.endswith(".md")) if os.path.isdir(src) else []
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in inputs:
            path = os.path.join(src, f)
            cmds = []
            if kind in ("onnx-binary", "onnx-text"):
                model = os.path.join(
                    tmp, "x.onnx" if kind == "onnx-binary" else "x.onnxtxt")
                shutil.copyfile(path, model)
                cmds.append(tool + [model, "-o", os.path.join(tmp, "out")])
            elif kind == "plan":
                cmds.append(tool + ["--describe", path])
                cmds.append(tool + ["-n", "1", path])
            elif kind == "npy":
                plan, name = tool[1], tool[2]
                cmds.append([tool[0], "-n", "2", "--threads", plan, "--input",
                             name + "=" + path])
            else:
                sys.exit("replay.py: unknown kind " + kind)
            why = None
            for cmd in cmds:
                why = why or check(cmd, f)
            if why:
                failed += 1
                print("FAIL %s: %s" % (f, why))
            else:
                print("ok   %s" % f)
    print("%s: %d inputs, %d failed" % (kind, len(inputs), failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
