#!/usr/bin/env python3
"""Writes small com.microsoft.MatMulNBits and com.microsoft.QMoE models
(random packed weights, the layouts onnxruntime 1.32 reads) with their inputs,
for check_onnx.py / check_plan.py to compare moec with onnxruntime.

    quant_models.py OUT_DIR [--check [--bin DIR] [--mesh M ...]] [--probe]

One subdirectory per case: model.onnx and one NAME.npy per input. With
--check, each case goes through check_onnx.py (moec's IR in moe-eval against
onnxruntime) and check_plan.py (a plan per --mesh, run by moe-run on thread
ranks, against onnxruntime); their lines are printed and the exit status is
non-zero when any failed.

--probe checks this file's own reading of the layouts (the plain numpy
dequantization below) against onnxruntime: MatMulNBits against A @ W^T, QMoE
against com.microsoft.MoE on the dequantized weights. That is where the
layout facts in lib/Import/ImportQuantized.cpp come from.

The cases use accuracy_level 0 (onnxruntime multiplies in fp32) except
those marked acc4. MatMulNBits with accuracy_level 4: onnxruntime quantizes
A to int8 per block and moec does the same (lib/Import/ImportQuantized.cpp),
so they meet the exact tolerance. QMoE's block-wise 8-bit experts take
int8 activations in onnxruntime at every level, which moec's experts do not:
those get the tolerance that quantization needs (TOL_ACC4, see below).
"""
import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from case_check import check_cases, save_case as save  # noqa: E402

ort.set_default_logger_severity(3)

# int8 activations per block: a relative error of up to 1/254 per element
# of A, summed over K with random signs; 3e-2 of max|ref| holds it with a
# margin on these sizes (measured: 0.6-1% on the probes).
TOL_ACC4 = 3e-2

# fp16 MatMulNBits: Y rounded to fp16 (a relative 2^-11 of each element),
# and onnxruntime's fp16 arithmetic on top; 1e-2 of max|ref| holds it.
TOL_FP16 = 1e-2

CASES = []  # (dir, tol)


def pack(q, bits):
    """Packs the last axis of q (values < 2^bits) LSB first into uint8."""
    per = 8 // bits
    pad = (-q.shape[-1]) % per
    q = np.concatenate([q, np.zeros(q.shape[:-1] + (pad,), q.dtype)], -1)
    out = np.zeros(q.shape[:-1] + (q.shape[-1] // per,), np.uint8)
    for j in range(per):
        out |= (q[..., j::per] << (bits * j)).astype(np.uint8)
    return out


def quantized(rng, shape, bits, blocks):
    """Random codes [.., R, K] and scales [.., R, blocks]."""
    q = rng.integers(0, 1 << bits, shape)
    s = (rng.random(shape[:-1] + (blocks,)) * 0.64 / 2.0 ** bits +
         0.005).astype(np.float32)
    return q, s


def matmul_nbits(out, name, k, n, bits, bs, zp=None, bias=False, acc=0,
                 a_shape=(3,), seed=0, dtype=np.float32):
    """zp: None, 'packed' (uint8) or 'float'. dtype: A's, the scales' (and
    float zero points', bias') type. Returns (model, feeds, W)."""
    rng = np.random.default_rng(seed)
    kb = (k + bs - 1) // bs
    q, s = quantized(rng, (n, kb * bs), bits, kb)
    s = s.astype(dtype)
    blob = bs * bits // 8
    inits = [nh.from_array(pack(q, bits).reshape(n, kb, blob), "B"),
             nh.from_array(s, "scales")]
    ins = ["A", "B", "scales"]
    z = np.full((n, kb), float(1 << (bits - 1)), np.float32)
    if zp == "packed":
        zq = rng.integers(0, 1 << bits, (n, kb))
        inits.append(nh.from_array(pack(zq, bits), "zp"))
        z = zq.astype(np.float32)
        ins.append("zp")
    elif zp == "float":
        z = (rng.random((n, kb)) * (1 << bits)).astype(dtype)
        inits.append(nh.from_array(z, "zp"))
        ins.append("zp")
    if bias:
        ins += [""] * (5 - len(ins)) + ["bias"]
        inits.append(nh.from_array(
            rng.standard_normal(n).astype(dtype), "bias"))
    w = ((q - np.repeat(z.astype(np.float32), bs, 1)) *
         np.repeat(s.astype(np.float32), bs, 1))[:, :k]
    a = rng.standard_normal(a_shape + (k,)).astype(dtype)
    node = h.make_node("MatMulNBits", ins, ["Y"], domain="com.microsoft",
                       K=k, N=n, bits=bits, block_size=bs,
                       accuracy_level=acc)
    d = os.path.join(out, name)
    # fp16: onnxruntime rounds Y (and the products it sums) to fp16.
    # accuracy_level 4: moec quantizes A as onnxruntime does (int8 per
    # block), so the exact tolerance holds, unless zero points are floats
    # (onnxruntime then multiplies A exactly, and so does moec).
    CASES.append((d, TOL_FP16 if dtype == np.float16 else 1e-4))
    et = TP.FLOAT16 if dtype == np.float16 else TP.FLOAT
    m = save(d, [node],
             [h.make_tensor_value_info("A", et, list(a.shape))],
             {"A": a},
             [h.make_tensor_value_info("Y", et, list(a_shape) + [n])],
             inits)
    ref = a.astype(np.float32) @ w.T.astype(np.float32)
    if bias:
        ref = ref + nh.to_array(inits[-1]).astype(np.float32)
    return m, {"A": a}, ref.astype(dtype)


def qmoe(out, name, e=4, hid=32, f=16, t=5, k=2, bits=4, bs=16,
         act="swiglu", limit=7.0, zp=False, acc=0, bias=True, router=False,
         seed=0, dtype=np.float32):
    """A QMoE node (with router=True, fed by a MatMul router over the
    input); dtype: the activations', scales' and biases' type. Returns
    (model, feeds, fp32 MoE reference model)."""
    et = TP.FLOAT16 if dtype == np.float16 else TP.FLOAT
    rng = np.random.default_rng(seed)
    rows = 2 * f if act == "swiglu" else f
    fcs, inits, ref_inits, deq = [], [], [], []
    for idx, (r, kdim) in enumerate(((rows, hid), (hid, f))):
        nb = kdim // bs if bs else 1
        q, s = quantized(rng, (e, r, kdim), bits, nb)
        if zp:
            zq = rng.integers(0, 1 << bits, (e, r, nb) if bs else (e, r))
            zpk = pack(zq, bits)
            z = zq.reshape(e, r, nb).astype(np.float32)
        else:
            zpk, z = None, np.full((e, r, nb), float(1 << (bits - 1)))
        w = (q - np.repeat(z, kdim // nb, -1)) * np.repeat(s, kdim // nb, -1)
        nm = f"fc{idx + 1}"
        inits += [nh.from_array(pack(q, bits), nm + "_w"),
                  nh.from_array((s if bs else s[..., 0]).astype(dtype),
                                nm + "_s")]
        if zpk is not None:
            inits.append(nh.from_array(zpk, nm + "_z"))
        ref_inits.append(nh.from_array(w.astype(np.float32), nm + "_w"))
        b = (rng.standard_normal((e, r)) * 0.1).astype(np.float32)
        inits.append(nh.from_array(b.astype(dtype), nm + "_b"))
        ref_inits.append(nh.from_array(b, nm + "_b"))
    x = rng.standard_normal((1, t, hid)).astype(dtype)
    feeds = {"x": x}
    nodes, extra = [], []
    if router:
        wr = rng.standard_normal((hid, e)).astype(np.float32)
        extra.append(nh.from_array(wr, "router_w"))
        extra.append(nh.from_array(np.array([t, e], np.int64), "shape"))
        nodes += [h.make_node("MatMul", ["x", "router_w"], ["logits3"]),
                  h.make_node("Reshape", ["logits3", "shape"], ["logits"])]
        inputs = [h.make_tensor_value_info("x", et, [1, t, hid])]
    else:
        feeds["logits"] = rng.standard_normal((t, e)).astype(dtype)
        inputs = [h.make_tensor_value_info("x", et, [1, t, hid]),
                  h.make_tensor_value_info("logits", et, [t, e])]
    common = dict(k=k, activation_type=act, normalize_routing_weights=1)
    if act == "swiglu":
        common.update(swiglu_fusion=1, activation_alpha=1.702,
                      activation_beta=1.0)
        if limit:
            common["swiglu_limit"] = limit
    qattrs = dict(common, expert_weight_bits=bits, accuracy_level=acc)
    if bs:
        qattrs["block_size"] = bs
    b1, b2 = ("fc1_b", "fc2_b") if bias else ("", "")
    ins = ["x", "logits", "fc1_w", "fc1_s", b1, "fc2_w", "fc2_s", b2]
    if zp:
        ins += ["", "", "", "fc1_z", "fc2_z"]
    node = h.make_node("QMoE", ins, ["y"], domain="com.microsoft", **qattrs)
    outs = [h.make_tensor_value_info("y", et, [1, t, hid])]
    d = os.path.join(out, name)
    CASES.append((d, TOL_ACC4 if acc == 4 or (bits == 8 and bs) else
                  TOL_FP16 if dtype == np.float16 else 1e-4))
    m = save(d, nodes + [node], inputs, feeds, outs,
             [i for i in inits if i.name in ins] + extra)
    rnode = h.make_node("MoE", ["x", "logits", "fc1_w", b1, "fc2_w", b2],
                        ["y"], domain="com.microsoft", **common)
    ref = h.make_model(
        h.make_graph(nodes + [rnode], "ref", inputs, outs,
                     [i for i in ref_inits if i.name in rnode.input] + extra),
        opset_imports=[h.make_opsetid("", 17),
                       h.make_opsetid("com.microsoft", 1)])
    ref.ir_version = 8
    return m, feeds, ref


def ort_run(m, feeds):
    s = ort.InferenceSession(m.SerializeToString(),
                             providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


def report(name, got, ref):
    err = float(np.abs(got - ref).max())
    print(f"probe {name}: max|onnxruntime - numpy| {err:.3g} "
          f"(max|ref| {float(np.abs(ref).max()):.3g})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--bin", default="")
    ap.add_argument("--mesh", action="append", default=[])
    args = ap.parse_args()
    o = args.out
    mm = [
        matmul_nbits(o, "nbits4", 64, 24, 4, 32),
        matmul_nbits(o, "nbits4-zp-bias", 64, 24, 4, 32, zp="packed",
                     bias=True, seed=1),
        matmul_nbits(o, "nbits4-zp-float", 64, 24, 4, 16, zp="float",
                     seed=2),
        matmul_nbits(o, "nbits4-kpad-3d", 48, 10, 4, 32, zp="packed",
                     a_shape=(2, 3), seed=3),
        matmul_nbits(o, "nbits8-zp", 64, 24, 8, 32, zp="packed", bias=True,
                     seed=4),
        matmul_nbits(o, "nbits8", 64, 24, 8, 64, seed=5),
        matmul_nbits(o, "nbits2", 64, 24, 2, 32, seed=6),
        matmul_nbits(o, "nbits4-acc4", 64, 24, 4, 32, acc=4, seed=7),
        # int8 A per block: K not a multiple of the block, 3-d A, 8 bits,
        # 40 rows (the tiled GEMM), and float zero points (A stays exact).
        matmul_nbits(o, "nbits4-acc4-kpad-3d", 48, 10, 4, 32, zp="packed",
                     a_shape=(2, 3), acc=4, seed=19),
        matmul_nbits(o, "nbits8-acc4-rows40", 128, 40, 8, 64, zp="packed",
                     a_shape=(40,), acc=4, bias=True, seed=20),
        matmul_nbits(o, "nbits4-acc4-zp-float", 64, 24, 4, 16, zp="float",
                     acc=4, seed=21),
        matmul_nbits(o, "nbits4-acc4-fp16", 64, 24, 4, 32, acc=4, seed=22,
                     dtype=np.float16),
        # 40 rows of A: the CPU's tiled GEMM on the codes, not its GEMV.
        matmul_nbits(o, "nbits4-rows40", 96, 40, 4, 32, zp="packed",
                     a_shape=(40,), seed=8),
        matmul_nbits(o, "nbits4-fp16", 64, 24, 4, 32, zp="float", bias=True,
                     seed=9, dtype=np.float16),
    ]
    qm = [
        qmoe(o, "qmoe4-block-swiglu", seed=10),
        qmoe(o, "qmoe4-block-router", router=True, seed=11),
        qmoe(o, "qmoe4-row-silu", bs=0, act="silu", seed=12),
        qmoe(o, "qmoe4-block-zp", zp=True, seed=13),
        qmoe(o, "qmoe4-row-zp-relu", bs=0, act="relu", zp=True, bias=False,
             seed=14),
        qmoe(o, "qmoe8-row-swiglu", bits=8, bs=0, seed=15),
        qmoe(o, "qmoe8-block-relu", bits=8, bs=16, act="relu", seed=16),
        qmoe(o, "qmoe4-block-acc4", acc=4, seed=17),
        # fp16 activations (the builder's -e cuda models): packed too, the
        # experts' weights expanded to fp16.
        qmoe(o, "qmoe4-block-fp16", zp=True, seed=18, dtype=np.float16),
    ]
    if args.probe:
        for (m, feeds, ref), (d, _) in zip(mm, CASES):
            report(os.path.basename(d), ort_run(m, feeds), ref)
        for (m, feeds, ref), (d, _) in zip(qm, CASES[len(mm):]):
            if feeds["x"].dtype != np.float32:
                continue  # the fp32 MoE reference takes fp32 inputs
            report(os.path.basename(d), ort_run(m, feeds), ort_run(ref, feeds))
    if not args.check:
        return
    sys.exit(check_cases(CASES, args.bin, args.mesh))


if __name__ == "__main__":
    main()
