#!/usr/bin/env python3
"""Dispatch/combine transports of thread ranks, side by side.

Several ranks in one process (moe-run -n N --threads) exchange their MoE rows
either by device-to-device copies between their buffers (the default on a
GPU) or through pinned host buffers (MOERT_DEVICE_COPIES=0). This writes one
MoE layer plan with moert-make-test-plan (random fp32 weights, router ->
route -> dispatch -> experts -> combine; tiny experts so that the exchange
dominates), runs it once per transport with `moe-run --json --iters N`
(the report is of the last, warm run) and prints a table:

  exchange   dispatch + combine of the rank that waited least (the last to
             arrive at the collective: its time is the exchange itself, not
             waiting for slower peers)
  layer      the slowest rank's time for all steps
  GB/s       bytes that crossed ranks (both directions, all ranks) / exchange

and the ratio of each transport's times to the first one's. Both runs must
give the same output (bit for bit: the transports move bytes).

usage: transport_bench.py --moe-run BIN --make-plan BIN [--device cuda]
         [--ranks 4] [--tokens-per-rank 2048] [--hidden 4096] [--ffn 64]
         [--iters 10] [--work DIR] [-o TABLE]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np


def run_mode(a, plan, x, env_extra, tag, work):
    out = os.path.join(work, f"out-{tag}.npy")
    env = dict(os.environ, **env_extra)
    cmd = [a.moe_run, "--device", a.device, "-n", str(a.ranks), "--threads",
           plan, "--input", f"x={x}", "-o", out, "--json", "--iters",
           str(a.iters)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        sys.exit(f"transport_bench: {tag}: moe-run failed ({r.returncode}):\n"
                 f"{r.stderr[-2000:]}")
    rep = json.loads(r.stdout)["reports"]
    transports = sorted({g["transport"] for rr in rep
                         for g in rr.get("collectives", [])})
    exch = [sum(s["seconds"] for s in rr["steps"]
                if s["op"] in ("dispatch", "combine")) for rr in rep]
    crossed = sum(p["bytes_sent"] for rr in rep for lay in rr["layers"]
                  for p in lay["peers"] if p["peer"] != rr["rank"])
    return {
        "tag": tag,
        "transport": ", ".join(transports),
        "exchange": min(exch),
        "layer": max(rr["seconds"] for rr in rep),
        "crossed": crossed,
        "out": np.load(out),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moe-run", required=True)
    ap.add_argument("--make-plan", required=True)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--tokens-per-rank", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--work")
    ap.add_argument("-o", "--output", help="also write the table here")
    a = ap.parse_args()

    work = a.work or tempfile.mkdtemp(prefix="moe-transport-")
    os.makedirs(work, exist_ok=True)
    try:
        subprocess.run([a.make_plan, "moe", "-n", str(a.ranks), "-o", work,
                        "--tokens-per-rank", str(a.tokens_per_rank),
                        "--hidden", str(a.hidden), "--ffn", str(a.ffn),
                        "--no-reference"], check=True)
        plan, x = os.path.join(work, "plan.moeplan"), os.path.join(work,
                                                                   "x.npy")
        if a.device == "cuda":
            modes = [("device copies", {"MOERT_DEVICE_COPIES": "1",
                                        "MOERT_NCCL": "0"}),
                     ("host staging", {"MOERT_DEVICE_COPIES": "0",
                                       "MOERT_NCCL": "0"})]
        else:
            modes = [("threads", {})]
        res = [run_mode(a, plan, x, env, tag.replace(" ", "-"), work)
               for tag, env in modes]
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"MoE layer, {a.ranks} thread ranks on {a.device}, fp32, "
        f"{a.tokens_per_rank} tokens per rank, H={a.hidden}, F={a.ffn}, "
        f"E={2 * a.ranks}, top-2; last of {a.iters} runs",
        f"{'transport (reported)':<28}{'exchange ms':>12}{'layer ms':>10}"
        f"{'GB/s':>8}{'exch. ratio':>12}{'layer ratio':>12}",
    ]
    base = res[0]
    ok = True
    for r in res:
        gbs = r["crossed"] / r["exchange"] / 1e9 if r["exchange"] > 0 else 0
        lines.append(
            f"{r['transport']:<28}{r['exchange'] * 1e3:>12.3f}"
            f"{r['layer'] * 1e3:>10.3f}{gbs:>8.1f}"
            f"{r['exchange'] / base['exchange']:>12.2f}"
            f"{r['layer'] / base['layer']:>12.2f}")
        if not np.array_equal(r["out"], base["out"]):
            ok = False
            lines.append(f"  FAIL: output differs from {base['transport']}'s")
    lines.append(f"bytes that crossed ranks per run: {base['crossed']} "
                 f"({base['crossed'] / 2**20:.1f} MiB)")
    text = "\n".join(lines)
    print(text)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
