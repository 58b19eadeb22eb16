#!/usr/bin/env python3
"""End to end: compile an ONNX model into a plan for a mesh, run it with
moe-run on CPU ranks, and compare with onnxruntime on the original file.

    check_plan.py MODEL --mesh ep=4 [--mesh dp=2,ep=2 ...]
        [--mesh "ep=4 --attention-mesh tp=4" ...]
        [--placement contiguous|round-robin|balanced] [--redundant-experts N]
        [--capacity-factor C] [--launch mpi|threads] [--input NAME=FILE.npy]
        [--ones NAME] [--moec BIN] [--moe-run BIN] [--seed S] [--tol 1e-4]
        [--work DIR]
        [--precision fp32|bf16|fp16 [--min-err 1e-5] [--fp32-output NAME]]
        [--input-shape NAME=D0,?,D2 --max-tokens N --tokens 1,5,N]

Inputs are the given .npy files, ones (--ones NAME: an attention mask),
seeded token ids below the table's rows (an integer input that gathers
rows of an initializer) or seeded standard-normal data. For every
mesh: `moec MODEL --mesh M ... -o plan.moeplan`, `moe-run -n WORLD plan
--input ... -o out.npz --json`, then every output must satisfy
max|moe-run - onnxruntime| <= tol * max|onnxruntime| (with a capacity factor
that dropped assignments, the outputs must differ instead, and the number of
drops must equal what the recorded routing and the capacity give), the bytes every rank's all_gather
and all_reduce steps take in must equal the report's (the MoE layers'
token_all_gather_bytes_per_rank and tp_all_reduce_bytes_per_rank plus the
tensor-parallel dense layers' dense_tp figures), and the
bytes the runtime reports for dispatch and combine must equal moec's
prediction: all of them (dropless: 2 x tokens x k x H x element size), and
those that cross ranks (from the routing the run
recorded, 2 x rows x H x element size per expert not on the sending
rank's EP coordinate). With --precision bf16|fp16 the plan stores its GEMM
weights and rows in 16 bits: pass a --tol for that type (rounding error) and
--min-err, the least relative error the run must show (the proof that the
16-bit path ran: an fp32 plan is ~1e-7 off); outputs named by --fp32-output
(router logits, which moec keeps in fp32) must instead meet 1e-4. Prints one line per mesh and
output; exits non-zero on any mismatch. A --mesh value may carry more moec
flags after the mesh, separated by spaces (a folding: "ep=4 --attention-mesh
dp=2,tp=2").

With --input-shape dims that follow the token count (?, ?+B, A*?, A*?+B) and
--max-tokens N, each mesh's plan is compiled once and run at every count of
--tokens, each against onnxruntime at that count's shapes; the dispatch and
combine bytes the report predicts at the maximum scale with the count
(dropless: 2 x tokens x k x H x element size), and the all-reduce and
all-gather bytes too when the ranks' blocks are equal.
"""
import argparse
import hashlib
import atexit
import json
import math
import re
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)
NP_TYPES = {1: np.float32, 11: np.float64, 7: np.int64, 6: np.int32}


def run(cmd, what):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL {what}: exit {r.returncode}\n  cmd: {' '.join(cmd)}\n"
              f"  {r.stderr.strip()}")
        return None
    return r


def dropped_total(stdout):
    try:
        rep = json.loads(stdout)
    except json.JSONDecodeError:
        return 0
    return sum(l["dropped"] for r in rep["reports"] for l in r["layers"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--mesh", action="append", required=True)
    ap.add_argument("--placement", default="contiguous")
    ap.add_argument("--placement-load")
    ap.add_argument("--redundant-experts", type=int, default=0)
    ap.add_argument("--capacity-factor", type=float, default=0.0)
    ap.add_argument("--launch", choices=["mpi", "threads"], default="mpi")
    ap.add_argument("--input", action="append", default=[])
    # Inputs filled with ones at each count's shape (an attention mask).
    ap.add_argument("--ones", action="append", default=[])
    ap.add_argument("--moec", default="moec")
    ap.add_argument("--moe-run", dest="moe_run", default="moe-run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--work")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--min-err", dest="min_err", type=float, default=0.0)
    ap.add_argument("--fp32-output", dest="fp32_outputs", action="append",
                    default=[])
    ap.add_argument("--input-shape", dest="input_shapes", action="append",
                    default=[])
    ap.add_argument("--max-tokens", dest="max_tokens", type=int, default=0)
    ap.add_argument("--tokens", default="")
    a = ap.parse_args()

    model = onnx.load(a.model)
    inits = {i.name for i in model.graph.initializer}
    # Token ids: an integer input that indexes an embedding table (a Gather
    # of an initializer along dim 0) is drawn from the table's rows, so that
    # the tokens differ (truncated normal data is mostly 0).
    rows = {i.name: i.dims[0] for i in model.graph.initializer if i.dims}
    vocab = {}
    for n in model.graph.node:
        axis = next((at.i for at in n.attribute if at.name == "axis"), 0)
        if (n.op_type == "Gather" and len(n.input) == 2 and axis == 0
                and n.input[0] in rows):
            vocab.setdefault(n.input[1], rows[n.input[0]])
    given = dict(kv.split("=", 1) for kv in a.input)
    shapes = dict(kv.split("=", 1) for kv in a.input_shapes)
    counts = [int(t) for t in a.tokens.split(",") if t] or [a.max_tokens]
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    work = a.work or tempfile.mkdtemp(prefix="moe-e2e-")
    if not a.work:  # a directory of our own: removed on exit
        atexit.register(shutil.rmtree, work, True)
    os.makedirs(work, exist_ok=True)

    def dim(text, tokens):
        """A --input-shape dim at `tokens`: D, ?, ?+B, A*? or A*?+B."""
        if "?" not in text:
            return int(text)
        lhs, _, b = text.partition("+")
        coef = lhs.strip()[:-1].rstrip("*")
        return (int(coef) if coef else 1) * tokens + (int(b) if b else 0)

    def feeds_at(tokens):
        """Inputs (given or seeded), onnxruntime's outputs on them and the
        moe-run --input flags at a token count."""
        rng = np.random.default_rng(a.seed + tokens)
        feeds = {}
        for i in model.graph.input:
            if i.name in inits:
                continue
            if i.name in given:
                feeds[i.name] = np.load(given[i.name])
                continue
            t = i.type.tensor_type
            shape = ([dim(d, tokens) for d in shapes[i.name].split(",")]
                     if i.name in shapes else [d.dim_value for d in t.shape.dim])
            if i.name in a.ones:
                feeds[i.name] = np.ones(shape, NP_TYPES[t.elem_type])
                continue
            if i.name in vocab:
                feeds[i.name] = rng.integers(0, vocab[i.name], shape).astype(
                    NP_TYPES[t.elem_type])
                continue
            feeds[i.name] = rng.standard_normal(shape).astype(
                NP_TYPES[t.elem_type])
        refs = dict(zip(names, sess.run(None, feeds)))
        inputs = []
        for name, arr in feeds.items():
            p = os.path.join(work, f"in_{name}_{tokens}.npy")
            np.save(p, arr)
            inputs += ["--input", f"{name}={p}"]
        return refs, inputs

    at = {t: feeds_at(t) for t in counts}
    shape_flags = [f for kv in a.input_shapes for f in ("--input-shape", kv)]
    if a.max_tokens:
        shape_flags += ["--max-tokens", str(a.max_tokens)]
    ok = True
    for mesh_arg, tokens in [(m, t) for m in a.mesh for t in counts]:
        refs, inputs = at[tokens]
        # The report's figures are at the maximum: dropless bytes scale with
        # the count.
        per_token = tokens / a.max_tokens if a.max_tokens else 1.0
        mesh, *extra = mesh_arg.split()
        tag = f"{os.path.basename(a.model)} --mesh {mesh_arg}" + (
            f" at {tokens} tokens" if a.max_tokens else "")
        stem = "".join(c if c.isalnum() else "_" for c in mesh_arg)
        if len(stem) > 40:  # long extra flags: a short name per mesh
            stem = stem[:24] + "_" + hashlib.sha1(stem.encode()).hexdigest()[:12]
        plan = os.path.join(work, f"plan_{stem}.moeplan")
        flags = ["--mesh", mesh] + extra + ["--placement", a.placement,
                 "--precision", a.precision] + shape_flags
        if a.placement_load:
            flags += ["--placement-load", a.placement_load]
        if a.redundant_experts:
            flags += ["--redundant-experts", str(a.redundant_experts)]
        if a.capacity_factor:
            flags += ["--capacity-factor", str(a.capacity_factor)]
        # One compilation per mesh (a dynamic plan serves every count): the
        # plan to -o, the report (JSON) to stdout.
        if tokens == counts[0]:
            rep = run([a.moec, a.model] + flags + ["--report=json", "-o", plan],
                      f"{tag}: moec")
        if not rep:
            ok = False
            continue
        world = 1
        for kv in mesh.split(","):
            world *= int(kv.split("=")[1])
        out = os.path.join(work, f"out_{stem}.npz")
        cmd = [a.moe_run, "-n", str(world), plan, "-o", out, "--json"] + inputs
        if a.launch == "threads":
            cmd.append("--threads")
        r = run(cmd, f"{tag}: moe-run")
        if not r:
            ok = False
            continue
        got = np.load(out)
        for name in names:
            key = name if name in got.files else (
                got.files[0] if len(got.files) == 1 else None)
            if key is None:
                print(f"FAIL {tag}: output {name} missing from {out}")
                ok = False
                continue
            ref, y = refs[name], got[key]
            if ref.shape != y.shape:
                print(f"FAIL {tag}: {name} shape {y.shape}, expected {ref.shape}")
                ok = False
                continue
            # An empty output (0 rows) matches when its shape does.
            err = float(np.abs(ref - y).max()) if ref.size else 0.0
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            if name in a.fp32_outputs:
                good = err <= 1e-4 * max(scale, 1e-30)
            else:
                good = err <= a.tol * max(scale, 1e-30)
                if a.min_err:
                    good = good and err >= a.min_err * scale
            if a.capacity_factor and dropped_total(r.stdout) > 0:
                # Dropped assignments change the output; their count is
                # checked below instead.
                good = err > 0
            print(f"{'ok  ' if good else 'FAIL'} {tag} {name}: max abs err "
                  f"{err:.3e} (max|ref| {scale:.3e})")
            ok &= good
        # Bytes moved: the runtime's counts against the compiler's report.
        try:
            run_report = json.loads(r.stdout)
            predicted = json.loads(rep.stdout)
        except (json.JSONDecodeError, AttributeError):
            print(f"FAIL {tag}: no JSON report from moe-run or moec")
            ok = False
            continue
        # Each rank's own weights (its expert slots and its blocks of the
        # tensor-parallel dense weights): the plan's rank segments, as
        # `moe-run --describe` lists them, against the report.
        desc = run([a.moe_run, "--describe", plan], f"{tag}: moe-run --describe")
        if desc:
            own = {}
            for line in desc.stdout.splitlines():
                parts = line.replace(",", " ,").split()
                # "  rank3: 425984 bytes , rank 3" or, for a segment a group
                # of ranks shares (data-parallel replicas), "  group0: 98304
                # bytes , rank 0 2"; each rank maps all of it.
                if (len(parts) >= 6 and parts[0].endswith(":")
                        and parts[2] == "bytes" and parts[4] == "rank"):
                    for r in parts[5:]:
                        if not r.isdigit():
                            break
                        own[int(r)] = own.get(int(r), 0) + int(parts[1])
            # The plan pads each constant to 64 bytes in its segment: with
            # small 16-bit ones the segments exceed the report by that
            # padding alone, which the per-rank constants' own sizes show.
            sizes = {"f32": 4, "f16": 2, "bf16": 2, "u8": 1, "i64": 8,
                     "i32": 4}
            raw, nconst = 0, 0
            for line in desc.stdout.splitlines():
                m = re.match(r"\s*v\d+ constant (\w+)\[([\dx]*)\] per rank",
                             line)
                if m and m.group(1) in sizes:
                    n = 1
                    for d in filter(None, m.group(2).split("x")):
                        n *= int(d)
                    raw += n * sizes[m.group(1)]
                    nconst += 1
            for x in predicted["ranks"]:
                want = (x.get("expert_weight_bytes", 0) +
                        x.get("dense_tp_weight_bytes", 0))
                got = own.get(x["rank"], 0)
                if want or got:
                    good = got == want or (raw == want and
                                           want < got < want + 64 * nconst)
                    if not good or x["rank"] == len(predicted["ranks"]) - 1:
                        print(f"{'ok  ' if good else 'FAIL'} {tag} rank "
                              f"{x['rank']}: holds {got} B of its own weights "
                              f"(plan), report predicts {want} B")
                    ok &= good
        else:
            ok = False
        # The rank's index in its ep group (on a folded grid ep may span
        # several grid axes).
        ep_index = {x["rank"]: x["ep_index"] for x in predicted["ranks"]}
        for li, layer in enumerate(predicted["layers"]):
            row_bytes = layer["hidden"] * layer["element_bytes"]
            owner = {}
            replicated = False
            for q, held in enumerate(layer["experts_per_ep_rank"]):
                for e in held:
                    replicated |= e in owner
                    owner[e] = q
            total = leaving = expect_leaving = 0
            for rr in run_report["reports"]:
                lay = rr["layers"][li]
                me = rr["rank"]
                for peer in lay["peers"]:
                    total += peer["bytes_sent"]
                    if peer["peer"] != me:
                        leaving += peer["bytes_sent"]
                ep = ep_index[me]
                for e, n in enumerate(lay["tokens_per_expert"]):
                    if owner[e] != ep:
                        expect_leaving += 2 * n * row_bytes
            if not a.capacity_factor:
                scale = per_token if layer.get("rows_follow_count",
                                               True) else 1.0
                want_total = round(layer["all_to_all_bytes_total"] * scale)
                good = total == want_total
                print(f"{'ok  ' if good else 'FAIL'} {tag} layer {li}: "
                      f"dispatch+combine moved {total} B, report predicts "
                      f"{want_total} B")
                ok &= good
            if a.capacity_factor and not replicated:
                # Each source rank keeps at most `capacity` assignments per
                # expert: the drops follow from the recorded routing.
                cap = layer["capacity"]
                if a.max_tokens:
                    # A dynamic plan's capacity at this call: ceil(C tb k
                    # / E) with tb the block bound, at most the maximum's.
                    lay_blocks = layer["tokens"] // max(layer["tokens_per_rank"], 1)
                    tb = -(-tokens // lay_blocks)
                    cap = min(math.ceil(a.capacity_factor * tb * layer["top_k"]
                                        / layer["experts"]), cap)
                got_drop = sum(rr["layers"][li]["dropped"]
                               for rr in run_report["reports"])
                want_drop = sum(max(0, n - cap)
                                for rr in run_report["reports"]
                                for n in rr["layers"][li]["tokens_per_expert"])
                good = got_drop == want_drop
                print(f"{'ok  ' if good else 'FAIL'} {tag} layer {li}: "
                      f"capacity {cap}: {got_drop} assignments dropped, the "
                      f"recorded routing gives {want_drop}")
                ok &= good
            if not replicated and not a.capacity_factor:
                good = leaving == expect_leaving
                print(f"{'ok  ' if good else 'FAIL'} {tag} layer {li}: "
                      f"{leaving} B crossed ranks; the routing the run "
                      f"recorded and the placement give {expect_leaving} B")
                ok &= good
        # Sequence-parallel MoE: every rank's all-gathers of the combined
        # rows take in what the report predicts per layer.
        # Tensor-parallel dense layers: their all-gathers (logits, norms
        # over split dims) and the all-reduces of row-parallel partial sums,
        # beside the MoE layers' own.
        dense = predicted.get("dense_tp", {})
        want = sum(l.get("token_all_gather_bytes_per_rank", 0)
                   for l in predicted["layers"])
        want += dense.get("all_gather_bytes_per_rank", 0)
        want_ar = sum(l.get("tp_all_reduce_bytes_per_rank", 0)
                      for l in predicted["layers"])
        want_ar += dense.get("all_reduce_bytes_per_rank", 0)
        # Sequence parallelism: the reduce-scatters that replace all-reduces
        # (bytes_in: the whole partial sums, as for an all-reduce).
        want_rs = dense.get("reduce_scatter_bytes_per_rank", 0)
        lay0 = (predicted["layers"] or [{}])[0]
        blocks = lay0.get("tokens", 1) // max(lay0.get("tokens_per_rank", 1), 1)
        if a.max_tokens and tokens % blocks:
            continue  # uneven blocks: per-rank bytes differ between ranks
        # A decode step's rows do not follow its count (the cache length).
        dense_scale = per_token if any(
            l.get("rows_follow_count", True)
            for l in predicted["layers"]) or not predicted["layers"] else 1.0
        want, want_ar, want_rs = (round(x * dense_scale)
                                  for x in (want, want_ar, want_rs))
        for rr in run_report["reports"]:
            for op, exp, what in (("all_gather", want, "all-gathers"),
                                  ("all_reduce", want_ar, "all-reduces"),
                                  ("reduce_scatter", want_rs,
                                   "reduce-scatters")):
                got = sum(st.get("bytes_in", 0) for st in rr["steps"]
                          if st["op"] == op)
                if exp or got:
                    good = got == exp
                    print(f"{'ok  ' if good else 'FAIL'} {tag} rank "
                          f"{rr['rank']}: {what} took in {got} B, report "
                          f"predicts {exp} B")
                    ok &= good
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
