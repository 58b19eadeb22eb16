#!/usr/bin/env python3
"""Writes small models of the stateful contrib blocks onnxruntime-genai's
builder writes, with their inputs as .npy files, for check_onnx.py /
check_plan.py to compare moec with onnxruntime:
com.microsoft.GroupQueryAttention wired as the builder wires it (seqlens_k
and total_sequence_length computed from an int64 attention_mask input),
com.microsoft.CausalConvWithState, and the ops of Qwen3.5's gated-delta
layers (LinearAttention, LinearAttentionGate, GatedRMSNorm, GatedAdd,
LpNormalization) and its MRotaryEmbedding.

    contrib_block_models.py OUT_DIR [--check [--bin DIR] [--mesh M ...]]
        [--only gqa|conv|gdn]

One subdirectory per case: model.onnx and one NAME.npy per input. With
--check, each case then goes through check_onnx.py (moec's IR in moe-eval
against onnxruntime) and check_plan.py (a plan per --mesh, run by moe-run
on thread ranks, against onnxruntime); their lines are printed and the exit
status is non-zero when any failed. Cases
cover prefill (empty past) and decode (past of P positions), packed and
separate Q/K/V, rotary (halves and interleaved, partial), a local window
with and without the sliding-window cache, softcap, head sinks,
smooth_softmax, and a custom scale.
"""
import argparse
import os
import sys

import numpy as np
from onnx import TensorProto as TP
from onnx import helper as h

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from case_check import check_cases, save_case  # noqa: E402

N, K, H = 4, 2, 16


def case(out, name, b, s, p, packed=False, rotary=0, interleaved=0, window=-1,
         window_cache=False, past_len=None, softcap=0.0, sink=False, smooth=0,
         scale=0.0, head=16, seed=0):
    """A case of batch b, s new tokens, a past of p slots; past_len (with
    the sliding-window cache: p is its capacity) is the sequence length
    before this step, p unless given."""
    global H
    H = head
    rng = np.random.default_rng(seed)
    total = (p if past_len is None else past_len) + s
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    CASES.append(d)
    inputs, feeds, nodes, inits = [], {}, [], []

    def inp(nm, arr, tp=TP.FLOAT):
        inputs.append(h.make_tensor_value_info(nm, tp, list(arr.shape)))
        feeds[nm] = arr

    q_dim = (N + 2 * K) * H if packed else N * H
    inp("query", rng.standard_normal((b, s, q_dim)).astype(np.float32))
    if not packed:
        inp("key", rng.standard_normal((b, s, K * H)).astype(np.float32))
        inp("value", rng.standard_normal((b, s, K * H)).astype(np.float32))
    inp("past_key", rng.standard_normal((b, K, p, H)).astype(np.float32))
    inp("past_value", rng.standard_normal((b, K, p, H)).astype(np.float32))
    inp("attention_mask", np.ones((b, total), np.int64), TP.INT64)
    # The builder's mask subgraph: seqlens_k = sum(mask) - 1, total = its
    # length, both int32.
    nodes += [
        h.make_node("ReduceSum", ["attention_mask", "one_axis"], ["msum"],
                    keepdims=0),
        h.make_node("Sub", ["msum", "one64"], ["sl64"]),
        h.make_node("Cast", ["sl64"], ["seqlens_k"], to=TP.INT32),
        h.make_node("Shape", ["attention_mask"], ["mshape"]),
        h.make_node("Gather", ["mshape", "one64"], ["tot64"], axis=0),
        h.make_node("Cast", ["tot64"], ["total"], to=TP.INT32),
    ]
    inits += [h.make_tensor("one_axis", TP.INT64, [1], [1]),
              h.make_tensor("one64", TP.INT64, [], [1])]
    ins = ["query", "" if packed else "key", "" if packed else "value",
           "past_key", "past_value", "seqlens_k", "total"]
    if rotary:
        ang = rng.uniform(-3, 3, (total + 4, rotary // 2)).astype(np.float32)
        inits += [h.make_tensor("cos_cache", TP.FLOAT, list(ang.shape),
                                np.cos(ang).ravel()),
                  h.make_tensor("sin_cache", TP.FLOAT, list(ang.shape),
                                np.sin(ang).ravel())]
        ins += ["cos_cache", "sin_cache"]
    if sink:
        ins += [""] * (11 - len(ins)) + ["sink"]
        inits.append(h.make_tensor("sink", TP.FLOAT, [N],
                                   rng.standard_normal(N).astype(np.float32)))
    attrs = dict(num_heads=N, kv_num_heads=K, do_rotary=int(bool(rotary)),
                 rotary_interleaved=interleaved, local_window_size=window,
                 softcap=softcap, scale=scale)
    if window_cache:
        attrs["sliding_window_cache"] = 1
    if smooth:
        attrs["smooth_softmax"] = 1
    nodes.append(h.make_node("GroupQueryAttention", ins,
                             ["out", "present_key", "present_value"],
                             domain="com.microsoft", name="attn", **attrs))
    kv_len = p if window_cache else p + s
    outs = [h.make_tensor_value_info("out", TP.FLOAT, [b, s, N * H]),
            h.make_tensor_value_info("present_key", TP.FLOAT, [b, K, kv_len, H]),
            h.make_tensor_value_info("present_value", TP.FLOAT,
                                     [b, K, kv_len, H])]
    save_case(d, nodes, inputs, feeds, outs, inits)


CASES = []


def gqa_cases(out):
    case(out, "prefill", 1, 5, 0)
    case(out, "decode", 2, 1, 5, seed=1)
    case(out, "packed", 1, 5, 3, packed=True, seed=2)
    case(out, "rotary", 1, 5, 0, rotary=16, seed=3)
    case(out, "rotary-interleaved-decode", 1, 1, 5, rotary=16, interleaved=1,
         seed=4)
    # onnxruntime wants cos_cache's width a multiple of 8 and at most half
    # the head: a partial rotary needs a head of 32.
    case(out, "rotary-partial", 1, 4, 2, rotary=16, head=32, seed=5)
    case(out, "window-prefill", 1, 6, 0, window=3, seed=6)
    case(out, "window-decode", 1, 1, 6, window=3, seed=7)
    case(out, "window-cache-first", 1, 5, 4, window=4, window_cache=True,
         past_len=0, seed=8)
    case(out, "window-cache-short", 1, 3, 4, window=4, window_cache=True,
         past_len=0, seed=9)
    case(out, "window-cache-decode", 1, 1, 4, window=4, window_cache=True,
         past_len=7, seed=14)
    case(out, "window-cache-filling", 1, 2, 4, window=4, window_cache=True,
         past_len=1, seed=15)
    case(out, "softcap", 1, 5, 2, softcap=2.0, seed=10)
    case(out, "sink", 1, 5, 0, sink=True, seed=11)
    case(out, "sink-decode-scale", 1, 1, 5, sink=True, scale=0.3, seed=12)
    case(out, "smooth", 1, 3, 2, smooth=1, seed=13)


def conv_case(out, name, b, c, s, k, bias, act, state=True, seed=0):
    """CausalConvWithState: input [b, c, s], depthwise weight [c, 1, k],
    past state [b, c, k-1] (or omitted)."""
    rng = np.random.default_rng(seed)
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    CASES.append(d)
    feeds = {"x": rng.standard_normal((b, c, s)).astype(np.float32)}
    inputs = [h.make_tensor_value_info("x", TP.FLOAT, [b, c, s])]
    inits = [h.make_tensor("w", TP.FLOAT, [c, 1, k],
                           rng.standard_normal(c * k).astype(np.float32))]
    names = ["x", "w", "", ""]
    if bias:
        inits.append(h.make_tensor("bias", TP.FLOAT, [c],
                                   rng.standard_normal(c).astype(np.float32)))
        names[2] = "bias"
    if state:
        feeds["state"] = rng.standard_normal((b, c, k - 1)).astype(np.float32)
        inputs.append(h.make_tensor_value_info("state", TP.FLOAT,
                                               [b, c, k - 1]))
        names[3] = "state"
    while names[-1] == "":
        names.pop()
    node = h.make_node("CausalConvWithState", names, ["y", "present"],
                       domain="com.microsoft", name="conv", ndim=1,
                       activation=act)
    outs = [h.make_tensor_value_info("y", TP.FLOAT, [b, c, s]),
            h.make_tensor_value_info("present", TP.FLOAT, [b, c, k - 1])]
    save_case(d, [node], inputs, feeds, outs, inits)


def node_case(out, name, op, feeds, outs, inits=(), names=None, seed=0,
              domain="com.microsoft", **attrs):
    """One node `op` on the graph inputs `feeds` (name -> array, saved as
    .npy) and the initializers `inits` (name -> array); `outs` is a list of
    (name, shape); `names` the node's inputs ("" for an omitted one)."""
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    CASES.append(d)
    tp = lambda a: TP.INT64 if a.dtype == np.int64 else TP.FLOAT
    inputs = [h.make_tensor_value_info(k, tp(a), list(a.shape))
              for k, a in feeds.items()]
    init = [h.make_tensor(k, tp(a), list(a.shape), a.ravel())
            for k, a in dict(inits).items()]
    node = h.make_node(op, names or list(feeds) + list(dict(inits)),
                       [n for n, _ in outs], domain=domain, name=name, **attrs)
    outputs = [h.make_tensor_value_info(n, TP.FLOAT, s) for n, s in outs]
    save_case(d, [node], inputs, feeds, outputs, init)


def linear_attention_case(out, name, b, s, hq, hkv, dk, dv, rule, scale,
                          state=True, seed=0):
    """LinearAttention: q, k [b, s, hq*dk], v [b, s, hkv*dv], past state
    [b, hkv, dk, dv], decay (log-space, negative) and beta [b, s, hkv]."""
    rng = np.random.default_rng(seed)
    f = lambda *sh: rng.standard_normal(sh).astype(np.float32)
    feeds = {"q": f(b, s, hq * dk), "k": 0.4 * f(b, s, hq * dk),
             "v": f(b, s, hkv * dv)}
    if state:
        feeds["state"] = f(b, hkv, dk, dv)
    feeds["decay"] = -np.abs(f(b, s, hkv))
    feeds["beta"] = rng.uniform(0, 1, (b, s, hkv)).astype(np.float32)
    names = ["q", "k", "v", "state" if state else "", "decay", "beta"]
    node_case(out, name, "LinearAttention", feeds,
              [("y", [b, s, hkv * dv]), ("present", [b, hkv, dk, dv])],
              names=names, q_num_heads=hq, kv_num_heads=hkv,
              update_rule=rule, scale=scale)


def mrope_case(out, name, b, s, n, d, rot, section, layout, interleaved,
               bnsd=False, seed=0):
    """MRotaryEmbedding: input [b, s, n*d] (or [b, n, s, d]), position ids
    [3, b, s] that differ per axis, caches of 12 positions."""
    rng = np.random.default_rng(seed)
    shape = [b, n, s, d] if bnsd else [b, s, n * d]
    ang = rng.uniform(-3, 3, (12, rot // 2))
    feeds = {"x": rng.standard_normal(shape).astype(np.float32),
             "pos": rng.integers(0, 12, (3, b, s)).astype(np.int64)}
    inits = {"cos": np.cos(ang).astype(np.float32),
             "sin": np.sin(ang).astype(np.float32)}
    node_case(out, name, "MRotaryEmbedding", feeds, [("y", shape)], inits,
              interleaved=interleaved, rotary_embedding_dim=rot,
              num_heads=n, mrope_section=section, mrope_layout=layout)


def gdn_cases(out):
    """The gated-delta layer's ops (Qwen3.5) and MRoPE."""
    linear_attention_case(out, "la-prefill", 1, 5, 2, 4, 16, 16,
                          "gated_delta", 1.0, seed=30)
    linear_attention_case(out, "la-decode", 2, 1, 2, 4, 8, 6, "gated_delta",
                          0.5, seed=31)
    linear_attention_case(out, "la-linear-nostate", 1, 3, 2, 2, 8, 8,
                          "linear", 0.0, state=False, seed=32)
    linear_attention_case(out, "la-gated", 1, 3, 1, 2, 8, 4, "gated", 1.0,
                          seed=33)
    linear_attention_case(out, "la-delta", 1, 3, 2, 2, 8, 4, "delta", 1.0,
                          seed=34)
    rng = np.random.default_rng(35)
    f = lambda *sh: rng.standard_normal(sh).astype(np.float32)
    node_case(out, "la-gate", "LinearAttentionGate",
              {"a": f(2, 3, 4), "b": f(2, 3, 4)},
              [("decay", [2, 3, 4]), ("beta", [2, 3, 4])],
              {"dt_bias": f(4), "neg_exp_a": -np.exp(f(4))},
              names=["a", "dt_bias", "neg_exp_a", "b"])
    node_case(out, "gated-rmsnorm-heads", "GatedRMSNorm",
              {"x": f(1, 3, 64), "z": f(1, 3, 64)}, [("y", [1, 3, 64])],
              {"w": f(16)}, names=["x", "w", "z"], epsilon=1e-6)
    node_case(out, "gated-rmsnorm", "GatedRMSNorm",
              {"x": f(2, 2, 32), "z": f(2, 2, 32)}, [("y", [2, 2, 32])],
              {"w": f(32)}, names=["x", "w", "z"], epsilon=1e-5)
    node_case(out, "gated-add", "GatedAdd",
              {"x": f(1, 5, 64), "y": f(1, 5, 64), "g": f(1, 5, 1)},
              [("out", [1, 5, 64])])
    x = f(1, 5, 2, 16)
    x[0, 1, 0] = 0  # a zero vector stays zero
    node_case(out, "lpnorm", "LpNormalization", {"x": x},
              [("y", [1, 5, 2, 16])], domain="", axis=-1, p=2)
    node_case(out, "lpnorm-p1", "LpNormalization", {"x": f(3, 4, 5)},
              [("y", [3, 4, 5])], domain="", axis=1, p=1)
    mrope_case(out, "mrope", 1, 5, 4, 16, 8, [2, 1, 1], 1, 0, seed=36)
    mrope_case(out, "mrope-decode", 2, 1, 2, 16, 8, [2, 1, 1], 1, 0, seed=37)
    mrope_case(out, "mrope-chunked-interleaved", 1, 4, 2, 32, 16, [4, 2, 2],
               0, 1, seed=38)
    mrope_case(out, "mrope-bnsd-full", 1, 3, 2, 16, 16, [4, 2, 2], 1, 0,
               bnsd=True, seed=39)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bin", default="")
    ap.add_argument("--mesh", action="append", default=[])
    ap.add_argument("--only", choices=["gqa", "conv", "gdn"])
    args = ap.parse_args()
    out = args.out
    if args.only in (None, "conv"):
        conv_case(out, "conv", 1, 8, 5, 3, bias=False, act="none", seed=20)
        conv_case(out, "conv-silu-decode", 2, 8, 1, 4, bias=True, act="silu",
                  seed=21)
        conv_case(out, "conv-no-state", 1, 8, 4, 4, bias=True, act="silu",
                  state=False, seed=22)
    if args.only in (None, "gqa"):
        gqa_cases(out)
    if args.only in (None, "gdn"):
        gdn_cases(out)
    if not args.check:
        return
    sys.exit(check_cases(CASES, args.bin, args.mesh))


if __name__ == "__main__":
    main()
