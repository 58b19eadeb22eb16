#!/usr/bin/env python3
"""Text generation on CPU ranks: `moe-run generate` with one plan of a
dynamic token count (transformers' MixtralForCausalLM, random weights,
exported by torch.onnx's dynamo exporter with a symbolic batch and
sequence), against onnxruntime running the same ONNX file in the same loop
and transformers' own generation with its KV cache, in one run, as ratios.

    python3 bench/generate_bench.py [--build build] [--work DIR]
        [--hidden 256 --ffn 512 --layers 2 --heads 8 --kv-heads 2
         --vocab 1024 --batch 1 --prompt 64 --new 32]

Greedy, `--new` tokens after a random prompt of `--prompt` tokens per
sequence. Prefill: the first forward pass (it gives the first new token),
prompt tokens per second. Decode: the other new tokens per second. The
one-plan rows (no KV cache) and the onnxruntime loop run the whole sequence
at every step, which is the same algorithm; torch decodes one token per step
against its cache, and so does `moe-run generate --decode-plan` (a prefill
plan that returns the cache and a decode-step plan whose count is the cache
length, exported from the same weights). Each rank keeps its block of the
cache between steps outside the arena. By default (moec --kv-cache
in-place) past and present are one buffer and each step writes only its
new row; the plan compiled with --kv-cache swap keeps two buffers that
swap, each step rewriting the whole cache; with --copy-cache (on that
plan) every step's present is also copied onto the next step's past, and
with --cache-through-rank0 the cache is gathered on rank 0 and sent to
every rank each step. The plans compiled with --kv-repeat copy run
attention as exported (the KV heads repeated for their query heads and the
keys transposed, copies of the whole cache, before the two batch matmuls)
where the default reads the cache as it lies. Plans: ep=1 (one rank)
and tp=2 (two MPI ranks; with --batch 2 or more also ep=2, one sequence
per rank); OpenBLAS and torch threads = cores / ranks, onnxruntime with its
default threads; torch with its default ("eager") experts, which loop over
the experts the tokens hit (the export uses the "batched_mm" form, which
onnxruntime runs). Every peer's ids must equal torch's (printed). Best of
--iters runs each. onnxruntime-genai has no Mixtral in its builder (0.18),
so it is not a peer here (see docs/performance.md). Prints a markdown
table.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from common import add_lm_args, sh

HERE = os.path.dirname(os.path.abspath(__file__))


def torch_generate(model, ids, new, threads):
    """Greedy decoding with transformers' KV cache: (ids, prefill s,
    decode s)."""
    import torch
    torch.set_num_threads(threads)
    x = torch.from_numpy(ids)
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(input_ids=x, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t1 = time.perf_counter()
        seq = [x, nxt]
        past = out.past_key_values
        for _ in range(new - 1):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            seq.append(nxt)
        t2 = time.perf_counter()
    return torch.cat(seq, 1).numpy(), t1 - t0, t2 - t1


def ort_generate(sess, ids, new):
    """The plan's algorithm in onnxruntime: the whole sequence each step."""
    t0 = time.perf_counter()
    t1 = None
    for _ in range(new):
        logits = sess.run(None, {"input_ids": ids})[0]
        nxt = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        ids = np.concatenate([ids, nxt], 1)
        t1 = t1 or time.perf_counter()
    return ids, t1 - t0, time.perf_counter() - t1


def main():
    ap = argparse.ArgumentParser()
    add_lm_args(ap, iters=2, batch=1)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=32)
    a = ap.parse_args()
    tag = (f"gen_h{a.hidden}_f{a.ffn}_l{a.layers}_a{a.heads}x{a.kv_heads}"
           f"_v{a.vocab}")
    work = a.work or os.path.join(a.build, "bench", tag)
    model_path = os.path.join(work, "model.onnx")
    sys.path.insert(0, os.path.join(HERE, "..", "examples", "dynamo"))
    import gen
    import transformers
    cfg = transformers.MixtralConfig(
        hidden_size=a.hidden, intermediate_size=a.ffn,
        num_local_experts=gen.E, num_experts_per_tok=gen.K,
        num_hidden_layers=a.layers, num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads, vocab_size=a.vocab,
        max_position_embeddings=1024)
    kv_dir = os.path.join(work, f"kv_b{a.batch}")
    if not os.path.exists(model_path):
        print(f"exporting the model into {work} ...", file=sys.stderr)
        gen.export_lm(tag, cfg, 2, 8, work, dynamic=True)
    if not os.path.exists(os.path.join(kv_dir, "decode", "model.onnx")):
        # The same weights as a prefill that returns the KV cache and a
        # decode step whose count is the cache length.
        gen.export_prefill(tag + "_prefill", a.batch, 8, 1, cfg,
                           os.path.join(kv_dir, "prefill"))
        gen.export_decode_step(tag + "_decode", 8, a.batch,
                               os.path.join(kv_dir, "decode"), True, cfg)
    model = gen.causal_lm(cfg)  # the same seeded weights
    # torch's own experts (a loop over the experts the tokens hit), not the
    # batched form the export needs.
    model.set_experts_implementation("eager")
    rng = np.random.default_rng(1)
    ids = rng.integers(0, a.vocab, (a.batch, a.prompt)).astype(np.int64)
    np.save(os.path.join(work, "prompt.npy"), ids)
    cores = os.cpu_count() or 1
    maxt = a.prompt + a.new
    bindir = os.path.join(a.build, "bin")

    rows = []

    def add(name, ranks, got, pre, dec):
        rows.append((name, ranks, a.batch * a.prompt / pre,
                     a.batch * (a.new - 1) / dec,
                     bool((got == ref).all())))

    ref, pre, dec = None, float("inf"), float("inf")
    for _ in range(a.iters):
        ref, p, d = torch_generate(model, ids, a.new, cores)
        pre, dec = min(pre, p), min(dec, d)
    add("torch (KV cache)", 1, ref, pre, dec)

    import onnxruntime as ort
    ort.set_default_logger_severity(3)
    sess = ort.InferenceSession(model_path,
                                providers=["CPUExecutionProvider"])
    pre, dec = float("inf"), float("inf")
    for _ in range(a.iters):
        got, p, d = ort_generate(sess, ids, a.new)
        pre, dec = min(pre, p), min(dec, d)
    add("onnxruntime (same loop)", 1, got, pre, dec)

    def run_generate(ranks, plans):
        """`moe-run generate` on `plans` (best of --iters): the ids and the
        prefill and decode seconds."""
        env = dict(os.environ,
                   OPENBLAS_NUM_THREADS=str(max(1, cores // ranks)))
        out = os.path.join(work, "ids.npy")
        pre, dec = float("inf"), float("inf")
        for _ in range(a.iters):
            j = json.loads(sh([os.path.join(bindir, "moe-run"), "generate",
                               "-n", str(ranks), *plans, "--ids",
                               os.path.join(work, "prompt.npy"),
                               "--max-new-tokens", str(a.new), "-o", out,
                               "--json", "--quiet"], env=env))
            pre = min(pre, j["prefill_seconds"])
            dec = min(dec, j["decode_seconds"])
        return np.load(out), pre, dec

    layouts = [("ep=1", 1), ("tp=2", 2)] + \
        ([("ep=2", 2)] if a.batch % 2 == 0 else [])
    for mesh, ranks in layouts:
        plan = os.path.join(work, f"{mesh.replace('=', '')}_b{a.batch}"
                            f"_m{maxt}.moeplan")
        sh([os.path.join(bindir, "moec"), model_path, "--mesh", mesh,
            "--input-shape", f"input_ids={a.batch},?",
            "--max-tokens", str(maxt + (-maxt) % ranks), "-o", plan])
        add(f"moe-run generate {mesh}", ranks, *run_generate(ranks, [plan]))

    # With the KV cache: the prefill plan, then one decode step per token.
    hd = a.hidden // a.heads
    cache = ";".join(f"past_{t}_{layer}={a.batch},{a.kv_heads},?,{hd}"
                     for layer in range(a.layers) for t in "kv")
    for mesh, ranks in layouts:
        tag_m = f"{mesh.replace('=', '')}_b{a.batch}"
        up = lambda n: n + (-n) % ranks
        prefill = os.path.join(kv_dir, f"prefill_{tag_m}.moeplan")
        decode = os.path.join(kv_dir, f"decode_{tag_m}.moeplan")
        sh([os.path.join(bindir, "moec"),
            os.path.join(kv_dir, "prefill", "model.onnx"), "--mesh", mesh,
            "--input-shape", f"input_ids={a.batch},?",
            "--max-tokens", str(up(a.prompt)), "-o", prefill])
        # moec --kv-repeat copy: attention as exported, repeating (GQA)
        # and transposing the cache before its two batch matmuls.
        prefill_copy = os.path.join(kv_dir, f"prefill_{tag_m}_copy.moeplan")
        sh([os.path.join(bindir, "moec"),
            os.path.join(kv_dir, "prefill", "model.onnx"), "--mesh", mesh,
            "--input-shape", f"input_ids={a.batch},?",
            "--max-tokens", str(up(a.prompt)), "--kv-repeat", "copy",
            "-o", prefill_copy])
        swap = os.path.join(kv_dir, f"decode_{tag_m}_swap.moeplan")
        copy = os.path.join(kv_dir, f"decode_{tag_m}_copy.moeplan")
        for plan, layout, repeat in ((decode, "in-place", "fold"),
                                     (swap, "swap", "fold"),
                                     (copy, "in-place", "copy")):
            sh([os.path.join(bindir, "moec"),
                os.path.join(kv_dir, "decode", "model.onnx"), "--mesh", mesh,
                "--input-shape", f"input_ids={a.batch},1;"
                f"position_ids={a.batch},1;{cache}",
                "--max-tokens", str(up(a.prompt + a.new - 2)),
                "--kv-cache", layout, "--kv-repeat", repeat, "-o", plan])
        add(f"moe-run generate {mesh} --decode-plan (cache in place)", ranks,
            *run_generate(ranks, [prefill, "--decode-plan", decode]))
        add(f"moe-run generate {mesh} --decode-plan (moec --kv-repeat copy)",
            ranks, *run_generate(ranks, [prefill_copy, "--decode-plan",
                                         copy]))
        add(f"moe-run generate {mesh} --decode-plan (moec --kv-cache swap)",
            ranks, *run_generate(ranks, [prefill, "--decode-plan", swap]))
        add(f"moe-run generate {mesh} --decode-plan (swap) --copy-cache",
            ranks, *run_generate(ranks, [prefill, "--decode-plan", swap,
                                         "--copy-cache"]))
        add(f"moe-run generate {mesh} --decode-plan --cache-through-rank0",
            ranks, *run_generate(ranks, [prefill, "--decode-plan", decode,
                                         "--cache-through-rank0"]))

    base = next(r for r in rows if r[0] == "moe-run generate ep=1")
    print(f"MixtralForCausalLM H={a.hidden} F={a.ffn} L={a.layers} "
          f"heads={a.heads}/{a.kv_heads} V={a.vocab}; batch {a.batch}, "
          f"prompt {a.prompt}, {a.new} new tokens (greedy); {cores} cores\n")
    print("| generator | ranks | prefill tok/s | decode tok/s | "
          "prefill vs moe-run ep=1 | decode vs moe-run ep=1 | ids = torch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, ranks, p, d, same in rows:
        print(f"| {name} | {ranks} | {p:.0f} | {d:.1f} | {p / base[2]:.2f} | "
              f"{d / base[3]:.2f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
