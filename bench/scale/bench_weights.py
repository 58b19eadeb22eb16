#!/usr/bin/env python3
"""Compiling and running a Mixtral MoE layer as its weights grow (issue 15):
moec's time and peak memory against the weight size, side by side with `dd`
copying the same bytes (the disk's speed: moec reads the weights and writes
the plan, dd reads and writes as much), and moe-run's time to first output
on 8 ranks.

    python3 bench/scale/bench_weights.py [--work /tmp/bench-weights]
        [--sizes 1024:3584,2048:7168,4096:14336] [--moec build/bin/moec]
        [--moe-run build/bin/moe-run] [--mesh ep=8] [--ranks 8]

Each size H:F is one MoE layer of 8 experts (bench/scale/gen_mixtral_layer.py,
generated into WORK/H_F once and reused; 4096:14336 is Mixtral-8x7B's, 5.6
GB). Per size it runs, timed with /usr/bin/time: dd of the weight file;
moec --mesh ep=8 -o plan (fp32), with --precision bf16, and with
--weights-per-rank; moe-run -n 8 on the fp32 plan (its output checked
against the generator's float64 reference). Prints one table (markdown).
Needs torch and transformers for the generator; several GB of disk.
"""
import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")


def timed(cmd, **kw):
    """(wall s, cpu s, peak RSS bytes) of `cmd` through /usr/bin/time."""
    out = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M"] + cmd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, **kw)
    line = [l for l in out.stderr.splitlines() if l.startswith("TIME ")]
    if out.returncode != 0 or not line:
        sys.exit("failed: " + " ".join(cmd) + "\n" + out.stderr[-2000:])
    _, wall, user, sys_, rss = line[-1].split()
    return float(wall), float(user) + float(sys_), int(rss) * 1024


def drop(path):
    """Evicts `path` from the page cache where the OS lets us, so that each
    timed run reads from the disk as a first compile would."""
    try:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    except (OSError, AttributeError):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/bench-weights")
    ap.add_argument("--sizes", default="1024:3584,2048:7168,4096:14336")
    ap.add_argument("--moec", default=os.path.join(ROOT, "build/bin/moec"))
    ap.add_argument("--moe-run", dest="moe_run",
                    default=os.path.join(ROOT, "build/bin/moe-run"))
    ap.add_argument("--mesh", default="ep=8")
    ap.add_argument("--ranks", type=int, default=8)
    a = ap.parse_args()
    rows = []
    for size in a.sizes.split(","):
        h, f = (int(x) for x in size.split(":"))
        d = os.path.join(a.work, f"{h}_{f}")
        data = os.path.join(d, "model.onnx.data")
        if not os.path.exists(os.path.join(d, "output.npy")):
            subprocess.run([sys.executable,
                            os.path.join(HERE, "gen_mixtral_layer.py"), d,
                            "--hidden", str(h), "--ffn", str(f)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gb = os.path.getsize(data) / 1e9
        drop(data)
        dd = timed(["dd", f"if={data}", f"of={d}/dd.copy", "bs=64M"])
        os.remove(f"{d}/dd.copy")
        res = {}
        for name, extra in (("fp32", []), ("bf16", ["--precision", "bf16"]),
                            ("per-rank", ["--weights-per-rank"])):
            out = os.path.join(d, name, "plan.moeplan")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            drop(data)
            res[name] = timed([a.moec, os.path.join(d, "model.onnx"),
                               "--mesh", a.mesh, "-o", out] + extra)
        plan = os.path.join(d, "fp32", "plan.moeplan")
        run = timed([a.moe_run, "-n", str(a.ranks), plan, "--input",
                     f"hidden_states={d}/input.npy", "-o", f"{d}/out.npy"])
        err = float(abs(np.load(f"{d}/out.npy") -
                        np.load(f"{d}/output.npy")).max())
        for name in res:
            os.remove(os.path.join(d, name, "plan.moeplan"))
            for x in os.listdir(os.path.join(d, name)):
                os.remove(os.path.join(d, name, x))
        rows.append((h, f, gb, dd, res, run, err))
    print(f"| H x F | weights | dd copy | moec {a.mesh} fp32: wall (x dd), "
          "CPU-s, peak RSS | bf16 | --weights-per-rank | moe-run -n "
          f"{a.ranks}: first output, peak RSS | max abs err |")
    print("|---|---|---|---|---|---|---|---|")
    for h, f, gb, dd, res, run, err in rows:
        def cell(r):
            return (f"{r[0]:.1f} s ({r[0] / dd[0]:.2f}x), {r[1]:.1f}, "
                    f"{r[2] / 2**20:.0f} MiB")
        print(f"| {h} x {f} | {gb:.2f} GB | {dd[0]:.1f} s "
              f"({gb / dd[0]:.2f} GB/s) | {cell(res['fp32'])} | "
              f"{cell(res['bf16'])} | {cell(res['per-rank'])} | "
              f"{run[0]:.1f} s, {run[2] / 2**20:.0f} MiB | {err:.1e} |")


if __name__ == "__main__":
    main()
