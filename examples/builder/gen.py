#!/usr/bin/env python3
"""Builds tiny random Hugging Face MoE models, converts them with
onnxruntime-genai's model builder (fp32 and int4, CPU), and saves
onnxruntime's reference outputs for a prefill step and a decode step.

    python3 examples/builder/gen.py [--out DIR] [--skip-build] [NAME ...]
    # needs torch, transformers, onnx, onnxruntime, onnxruntime-genai

NAME is a family (gpt_oss, lfm2_moe, qwen3_5_moe, phimoe); none: all.
For each family NAME and precision P (fp32, int4) it writes
  DIR/NAME/hf/                      the random HF checkpoint (seed 0)
  DIR/NAME/P/model.onnx(.data)      the builder's output (plus genai_config.json)
  DIR/NAME/P/prefill/IN.npy         prefill inputs: input_ids [1, 5],
                                    attention_mask ones [1, 5],
                                    position_ids where the graph has them,
                                    past_key_values.* with sequence length 0
                                    (and the conv/recurrent states at zeros)
  DIR/NAME/P/prefill/OUT.npy        onnxruntime's outputs (logits, present.*)
  DIR/NAME/P/decode/IN.npy          one more token, attention_mask ones
                                    [1, 6], the prefill's present.* as past
  DIR/NAME/P/decode/OUT.npy         onnxruntime's outputs for those
DIR defaults to examples/builder/models, where the ONNX models (under 2 MB
each with their external data) and the .npy files are committed; hf/,
cache/ and builder.log are not (.gitignore).

The builder is run as a new user would:
  python -m onnxruntime_genai.models.builder -i DIR/NAME/hf -o DIR/NAME/P \
      -p P -e cpu -c DIR/NAME/cache
Its stdout/stderr go to DIR/NAME/P/builder.log; a failure is recorded
(DIR/NAME/P/FAILED) and the script goes on with the next model.
"""
import argparse
import json
import os
import subprocess
import sys
import traceback
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
H, E, K, VOCAB = 64, 8, 2, 256
FFN = 64  # GPT-OSS's expert width, LFM2's dense width (its experts: half)
PROMPT = [11, 42, 7, 200, 93]
NEXT = 5
COMMON = dict(hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, vocab_size=VOCAB,
              max_position_embeddings=128, tie_word_embeddings=False,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)


def gpt_oss():
    cfg = transformers.AutoConfig.for_model(
        "gpt_oss", **COMMON, intermediate_size=FFN, num_local_experts=E,
        num_experts_per_tok=K, sliding_window=4)
    return cfg, transformers.GptOssForCausalLM


def lfm2_moe():
    c = dict(COMMON)
    c.pop("head_dim")
    cfg = transformers.AutoConfig.for_model(
        "lfm2_moe", **c, intermediate_size=FFN, moe_intermediate_size=FFN // 2,
        num_experts=E, num_experts_per_tok=K, num_dense_layers=0,
        use_expert_bias=True, norm_topk_prob=True, routed_scaling_factor=2.5,
        layer_types=["conv", "full_attention"])
    return cfg, transformers.Lfm2MoeForCausalLM


def qwen3_5_moe():
    text = dict(COMMON, moe_intermediate_size=32,
                shared_expert_intermediate_size=32, num_experts=E,
                num_experts_per_tok=K,
                layer_types=["linear_attention", "full_attention"],
                linear_num_key_heads=2, linear_num_value_heads=4,
                linear_key_head_dim=16, linear_value_head_dim=16,
                linear_conv_kernel_dim=4,
                # interleaved MRoPE on half of each head (8 of 16 dims: 4
                # frequencies in sections t/h/w = 2/1/1), as the released
                # [11, 11, 10] on a quarter of 256; without mrope_section
                # the builder emits a RotaryEmbedding that rejects its own
                # [3, batch, seq] position_ids.
                rope_parameters=dict(rope_type="default", rope_theta=1e4,
                                     partial_rotary_factor=0.5,
                                     mrope_section=[2, 1, 1],
                                     mrope_interleaved=True))
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2,
                  out_hidden_size=H, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2, num_position_embeddings=16)
    cfg = transformers.AutoConfig.for_model(
        "qwen3_5_moe", text_config=text, vision_config=vision,
        tie_word_embeddings=False)
    return cfg, transformers.Qwen3_5MoeForConditionalGeneration


def phimoe():
    # The builder takes Phi-3.5-MoE only with LongRoPE (max_position_embeddings
    # != original_max_position_embeddings) and its remote-code architecture
    # name "PhiMoEForCausalLM".
    hd = 16
    c = dict(COMMON)
    c.pop("max_position_embeddings")
    cfg = transformers.AutoConfig.for_model(
        "phimoe", **c, intermediate_size=32, num_local_experts=E,
        num_experts_per_tok=K, max_position_embeddings=128,
        original_max_position_embeddings=64,
        rope_parameters=dict(rope_type="longrope", rope_theta=1e6,
                             short_factor=[1.0] * (hd // 2),
                             long_factor=[1.5] * (hd // 2),
                             original_max_position_embeddings=64,
                             short_mscale=1.0, long_mscale=1.2))
    return cfg, transformers.PhimoeForCausalLM


FAMILIES = {"gpt_oss": gpt_oss, "lfm2_moe": lfm2_moe,
            "qwen3_5_moe": qwen3_5_moe, "phimoe": phimoe}
ARCH_OVERRIDE = {"phimoe": "PhiMoEForCausalLM"}


E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def mxfp4(w):
    """[E, N, K] float -> (blocks [E, N, K/32, 16] uint8, scales [E, N, K/32]
    uint8 (biased exponents), the decoded [E, N, K]): OCP MXFP4, 32-element
    blocks, a power-of-two scale putting each block's max at most 6, codes
    rounded to the nearest e2m1 value (sign in bit 3, low nibble first)."""
    e, n, k = w.shape
    b = w.reshape(e, n, k // 32, 32)
    amax = b.abs().amax(-1).clamp_min(1e-30)
    exp = torch.ceil(torch.log2(amax / 6.0)).clamp(-127, 127)
    scaled = b / torch.pow(2.0, exp).unsqueeze(-1)
    idx = (scaled.abs().unsqueeze(-1) - E2M1).abs().argmin(-1)
    codes = idx.to(torch.uint8) | ((scaled < 0).to(torch.uint8) << 3)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    vals = E2M1[idx] * torch.where(scaled < 0, -1.0, 1.0)
    dec = (vals * torch.pow(2.0, exp).unsqueeze(-1)).reshape(e, n, k)
    return blocks, (exp + 127).to(torch.uint8), dec


def gpt_oss_mxfp4(m, hf_dir):
    """GPT-OSS is released with MXFP4 experts and the builder's int4 path
    reads them (`*_blocks`, `*_scales`) from the checkpoint's safetensors
    instead of quantizing the model's float weights. So: round the random
    experts to MXFP4, keep the decoded values as the float weights (both
    precisions then start from the same experts, as with the released
    checkpoint), and add the blocks and scales to model.safetensors."""
    from safetensors.torch import load_file, save_file
    path = os.path.join(hf_dir, "model.safetensors")
    tensors = load_file(path)
    with torch.no_grad():
        for i, layer in enumerate(m.model.layers):
            ex = layer.mlp.experts
            pre = f"model.layers.{i}.mlp.experts"
            for nm in ("gate_up_proj", "down_proj"):
                p = getattr(ex, nm)               # [E, in, out]
                blocks, scales, dec = mxfp4(p.transpose(1, 2).contiguous())
                p.copy_(dec.transpose(1, 2))
                tensors[f"{pre}.{nm}"] = p.detach().clone().contiguous()
                tensors[f"{pre}.{nm}_blocks"] = blocks.contiguous()
                tensors[f"{pre}.{nm}_scales"] = scales.contiguous()
    save_file(tensors, path, metadata={"format": "pt"})


def save_tokenizer(hf_dir):
    """A byte-level-free word tokenizer over VOCAB made-up tokens: the
    builder loads a tokenizer (AutoTokenizer) and writes its files, even
    though the references here feed token ids directly."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for i in range(3, VOCAB):
        vocab[f"t{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
        eos_token="</s>", unk_token="<pad>")
    fast.save_pretrained(hf_dir)


def make_hf(name, hf_dir):
    cfg, cls = FAMILIES[name]()
    torch.manual_seed(0)
    m = cls(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for pname, p in m.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "norm" in pname or "layernorm" in pname:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.05)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    m.save_pretrained(hf_dir, safe_serialization=True)
    if name == "gpt_oss":
        gpt_oss_mxfp4(m, hf_dir)
    save_tokenizer(hf_dir)
    if name in ARCH_OVERRIDE:
        path = os.path.join(hf_dir, "config.json")
        with open(path) as f:
            c = json.load(f)
        c["architectures"] = [ARCH_OVERRIDE[name]]
        with open(path, "w") as f:
            json.dump(c, f, indent=2)
    return cfg


def run_builder(hf_dir, out_dir, precision, cache):
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder",
           "-i", hf_dir, "-o", out_dir, "-p", precision, "-e", "cpu",
           "-c", cache]
    with open(os.path.join(out_dir, "builder.log"), "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    return rc


NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
      "tensor(int64)": np.int64, "tensor(int32)": np.int32,
      "tensor(bool)": np.bool_}


def zeros_for(inp, past_len, head_size, window):
    """An input other than the token ids/mask/positions: past KV (dynamic
    past sequence length -> past_len) or a recurrent/conv state."""
    shape = []
    for d in inp.shape:
        if isinstance(d, int):
            shape.append(d)
        elif "batch" in d:
            shape.append(1)
        elif d == "kv_cache_dim":
            shape.append(head_size)
        elif d == "past_sliding_length":
            # onnxruntime's windowed KV cache (the builder's default for
            # sliding-window layers): a ring of window_size slots, which
            # GroupQueryAttention requires even when empty.
            shape.append(window)
        elif "sequence" in d or "past" in d or "length" in d:
            shape.append(past_len)
        else:
            raise ValueError(f"{inp.name}: unknown dim {d!r}")
    return np.zeros(shape, NP[inp.type])


def step_inputs(sess, ids, past, past_len, head_size, window):
    feeds = {}
    total = past_len + len(ids)
    for inp in sess.get_inputs():
        n = inp.name
        if n == "input_ids":
            feeds[n] = np.array([ids], NP[inp.type])
        elif n == "attention_mask":
            feeds[n] = np.ones((1, total), NP[inp.type])
        elif n == "position_ids":
            pos = np.arange(past_len, total)
            if len(inp.shape) == 3:        # MRoPE [3, batch, seq]
                feeds[n] = np.broadcast_to(pos, (3, 1, len(ids))).astype(
                    NP[inp.type]).copy()
            else:
                feeds[n] = pos[None].astype(NP[inp.type])
        elif past is not None:
            feeds[n] = past[n]
        else:
            feeds[n] = zeros_for(inp, 0, head_size, window)
    return feeds


def present_to_past(sess, outs):
    """Maps present.* / present_* outputs onto the matching past inputs."""
    names = [i.name for i in sess.get_inputs()]
    past = {}
    for on, v in outs.items():
        if on == "logits":
            continue
        cand = on.replace("present", "past_key_values", 1)
        alts = [cand, on.replace("present", "past", 1)]
        hit = [a for a in alts if a in names]
        if not hit:
            raise ValueError(f"no past input for output {on}")
        past[hit[0]] = v
    return past


def save_dir(d, arrays):
    os.makedirs(d, exist_ok=True)
    for k, v in arrays.items():
        np.save(os.path.join(d, k + ".npy"), v)


def references(model_dir):
    import onnxruntime as ort
    path = os.path.join(model_dir, "model.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    with open(os.path.join(model_dir, "genai_config.json")) as f:
        dec = json.load(f)["model"]["decoder"]
    head_size = dec["head_size"]
    window = dec.get("sliding_window", {}).get("window_size", 0)
    feeds = step_inputs(sess, PROMPT, None, 0, head_size, window)
    outs = dict(zip(out_names, sess.run(None, feeds)))
    save_dir(os.path.join(model_dir, "prefill"), feeds)
    save_dir(os.path.join(model_dir, "prefill", "ref"), outs)
    past = present_to_past(sess, outs)
    feeds2 = step_inputs(sess, [NEXT], past, len(PROMPT), head_size,
                         window)
    outs2 = dict(zip(out_names, sess.run(None, feeds2)))
    save_dir(os.path.join(model_dir, "decode"), feeds2)
    save_dir(os.path.join(model_dir, "decode", "ref"), outs2)
    return outs["logits"], outs2["logits"]


def hf_logits(hf_dir, name):
    """transformers' own logits for the prompt and the next token (a sanity
    check of the builder's fp32 model, printed, not saved)."""
    cfg, cls = FAMILIES[name]()
    m = cls.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        ids = torch.tensor([PROMPT + [NEXT]])
        out = m(input_ids=ids, use_cache=False).logits
    return out[0, :len(PROMPT)].numpy(), out[0, len(PROMPT):].numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "models"))
    ap.add_argument("--skip-build", action="store_true",
                    help="reuse DIR/NAME/P/model.onnx, only redo references")
    ap.add_argument("--precisions", default="fp32,int4")
    ap.add_argument("--hidden", type=int, default=0,
                    help="a larger model for benchmarks (bench/builder_bench.py): "
                    "this hidden size, heads of 64 (a quarter as KV heads); "
                    "GPT-OSS and LFM2-MoE")
    ap.add_argument("--ffn", type=int, default=0,
                    help="with --hidden: GPT-OSS's expert width, LFM2's dense "
                    "width (its experts: half)")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    if a.hidden:
        global H, FFN
        H, FFN = a.hidden, a.ffn or 2 * a.hidden
        heads = max(1, H // 64)
        COMMON.update(hidden_size=H, num_attention_heads=heads, head_dim=64,
                      num_key_value_heads=max(1, heads // 4))
    names = a.names or list(FAMILIES)
    summary = {}
    for name in names:
        root = os.path.join(a.out, name)
        hf_dir = os.path.join(root, "hf")
        if not a.skip_build:
            make_hf(name, hf_dir)
        try:
            hf_pre, hf_dec = hf_logits(hf_dir, name)
        except Exception as e:   # noqa: BLE001
            hf_pre = hf_dec = None
            print(f"{name}: transformers forward failed: {e}")
        for prec in a.precisions.split(","):
            mdir = os.path.join(root, prec)
            key = f"{name}/{prec}"
            if not a.skip_build:
                rc = run_builder(hf_dir, mdir, prec,
                                 os.path.join(root, "cache"))
                flag = os.path.join(mdir, "FAILED")
                if rc != 0:
                    with open(flag, "w") as f:
                        f.write(f"builder exit status {rc}\n")
                    summary[key] = f"builder failed ({rc}), see builder.log"
                    print(key, summary[key])
                    continue
                if os.path.exists(flag):
                    os.remove(flag)
            try:
                pre, dec = references(mdir)
            except Exception as e:   # noqa: BLE001
                traceback.print_exc()
                summary[key] = f"onnxruntime failed: {type(e).__name__}: " \
                    f"{str(e).splitlines()[0][:300]}"
                print(key, summary[key])
                continue
            msg = "ok"
            if hf_pre is not None:
                d1 = float(np.abs(pre[0] - hf_pre).max())
                d2 = float(np.abs(dec[0] - hf_dec).max())
                msg += f"; max |ort - transformers| prefill {d1:.3g}, " \
                       f"decode {d2:.3g}"
            summary[key] = msg
            print(key, msg)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
