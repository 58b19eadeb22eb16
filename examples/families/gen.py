#!/usr/bin/env python3
"""Exports the MoE blocks of more transformers families (tiny random
configs, no download) with torch.onnx's TorchScript exporter, and the same
families as whole 2-layer causal LMs with the dynamo exporter; saves torch's
reference outputs.

    python3 examples/families/gen.py [--out DIR] [NAME ...]   # torch, transformers, onnx, onnxscript

NAME is a family (its block: `dots1`) or a family's whole model
(`dots1_causal_lm`); none: every block and every committed whole model.

Blocks: transformers 5.x's default experts implementation on CPU is
"grouped_mm", which the TorchScript exporter cannot translate
(aten::histc), so each block is built with
`config._experts_implementation = "eager"`: a loop over the experts the
input hits (`expert_hit`), which the exporter unrolls for the example
input. The script draws inputs ([2, 8, 64], seeds 0, 1, ...) until one hits
every expert and refuses otherwise (as examples/hf_olmoe/gen.py). Weights
N(0, 0.1) (seed 0); the selection biases (`e_score_correction_bias`, zeros
in a fresh model) N(0, 0.1) from their own seeded stream, so that they
matter. Each config keeps the routing options of the family's modeling
code (selection bias, groups, shared experts, renormalisation, scaling; at
the released checkpoints' values where we know them, README.md) at hidden
64, 8 experts of intermediate 32, top-2. Output: <family>/model.onnx,
input.npy, output.npy (torch's output).

Whole models: `config._experts_implementation = "batched_mm"` and eager
attention, exported with `dynamo=True` as examples/dynamo/gen.py does its
causal LMs (input_ids [2, 8] int64 -> logits [2, 8, 128]; weights as
initialised by transformers, selection biases N(0, 0.1)). Only those that
moec compiles and that match onnxruntime on ep=2 are committed
(CAUSAL_LMS_COMMITTED, into <family>_causal_lm/); the others are written to
$TMPDIR/families/<family>_causal_lm (or --out DIR) so that their failures
can be reproduced (README.md lists them), or tested when too large to
commit (test/moec/families-generated.test: Qwen3-Next, Bailing-hybrid).
"""
import collections
import importlib
import os
import sys
import tempfile
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
B, S, H, E, K = 2, 8, 64, 8, 2
VOCAB = 128
# Attention and embeddings of the whole models (the blocks ignore them).
COMMON = dict(hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=VOCAB,
              max_position_embeddings=64, tie_word_embeddings=False,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)


class GraniteMoeSharedFFN(torch.nn.Module):
    """The feed-forward half of GraniteMoeSharedDecoderLayer: the routed
    `block_sparse_moe` plus the dense `shared_mlp` of the same input (the
    shared expert lives in the decoder layer, not in the MoE block)."""

    def __init__(self, cfg, mod):
        super().__init__()
        self.block_sparse_moe = mod.GraniteMoeSharedMoE(cfg)
        self.shared_mlp = mod.GraniteMoeSharedMLP(cfg)

    def forward(self, hidden_states):
        return self.block_sparse_moe(hidden_states) + \
            self.shared_mlp(hidden_states)


def families():
    """name -> (model_type, config kwargs, block class name or a function
    (config, modeling module) -> block). The comments give the routing."""
    return {
        # sigmoid, selection bias, groups (1 of 1: dots.llm1's n_group = 1),
        # renormalised, scaled by 2.5; 2 shared experts (fused into one MLP).
        "dots1": ("dots1", dict(
            intermediate_size=64, moe_intermediate_size=32,
            n_routed_experts=E, num_experts_per_tok=K, n_shared_experts=2,
            n_group=1, topk_group=1, norm_topk_prob=True,
            routed_scaling_factor=2.5, first_k_dense_replace=1,
            head_dim=16), "Dots1MoE"),
        # softmax top-k, not renormalised (FlexOlmo's norm_topk_prob=False).
        # n_group 2, topk_group 1: the released 8 of 4 groups of 512 experts
        # would leave fewer candidates than k with 8 experts.
        "bailing_hybrid": ("bailing_hybrid", dict(
            intermediate_size=64, moe_intermediate_size=32,
            num_local_experts=E, num_experts_per_tok=K, n_shared_experts=1,
            n_group=2, topk_group=1, norm_topk_prob=True,
            routed_scaling_factor=2.5, first_k_dense_replace=0,
            num_key_value_heads=4, kv_lora_rank=16, qk_rope_head_dim=8,
            qk_nope_head_dim=16, v_head_dim=16, head_dim=16,
            layer_group_size=2, num_mtp_layers=0),
            lambda cfg, mod: mod.BailingHybridMoE(cfg, layer_idx=0)),
        "flex_olmo": ("flex_olmo", dict(
            intermediate_size=32, num_experts=E, num_experts_per_tok=K,
            norm_topk_prob=False), "FlexOlmoSparseMoeBlock"),
        # GLM-4.7-Flash: sigmoid, selection bias, groups (1 of 1),
        # renormalised, scaled by 1.8; 1 shared expert; latent attention.
        "glm4_moe_lite": ("glm4_moe_lite", dict(
            intermediate_size=64, moe_intermediate_size=32,
            n_routed_experts=E, num_experts_per_tok=K, n_shared_experts=1,
            n_group=1, topk_group=1, norm_topk_prob=True,
            routed_scaling_factor=1.8, q_lora_rank=32, kv_lora_rank=16,
            qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
            num_key_value_heads=4),
            "Glm4MoeLiteMoE"),
        # top-k of the logits, softmax over the k (= renormalised softmax);
        # the decoder layer's shared MLP added (GraniteMoeSharedFFN).
        "granitemoeshared": ("granitemoeshared", dict(
            intermediate_size=32, shared_intermediate_size=64,
            num_local_experts=E, num_experts_per_tok=K, head_dim=16),
            GraniteMoeSharedFFN),
        # softmax top-k, renormalised; an ungated shared MLP.
        "hunyuan_v1_moe": ("hunyuan_v1_moe", dict(
            intermediate_size=32, num_experts=E, moe_topk=K, head_dim=16),
            "HunYuanMoEV1Moe"),
        # softmax top-k, not renormalised; Mamba layers (layer 0) and
        # attention + MoE (layer 1) in the whole model.
        "jamba": ("jamba", dict(
            intermediate_size=32, num_experts=E, num_experts_per_tok=K,
            expert_layer_period=2, expert_layer_offset=1,
            attn_layer_period=2, attn_layer_offset=1,
            use_mamba_kernels=False, mamba_d_state=8, mamba_dt_rank=8),
            "JambaSparseMoeBlock"),
        # tanh soft-capped logits, sigmoid, selection bias, renormalised;
        # the routed sum scaled by moe_routed_scaling_factor, then a shared
        # expert added. (Both options default to off; the values here are
        # ours, chosen so that they matter.)
        "laguna": ("laguna", dict(
            intermediate_size=64, moe_intermediate_size=32,
            shared_expert_intermediate_size=32, num_experts=E,
            num_experts_per_tok=K, moe_routed_scaling_factor=2.5,
            moe_router_logit_softcapping=2.0, head_dim=16),
            "LagunaSparseMoeBlock"),
        # LFM2-MoE: sigmoid, selection bias (the block's expert_bias),
        # renormalised by sum + 1e-6 (moe.route's renorm_eps), scaled by
        # 2.5 (ours: it defaults to 1); short convolutions (layer 0) and
        # attention (layer 1) in the whole model.
        "lfm2_moe": ("lfm2_moe", dict(
            intermediate_size=64, moe_intermediate_size=32, num_experts=E,
            num_experts_per_tok=K, num_dense_layers=0, use_expert_bias=True,
            norm_topk_prob=True, routed_scaling_factor=2.5,
            layer_types=["conv", "full_attention"]),
            "Lfm2MoeSparseMoeBlock"),
        # sigmoid, selection bias (a buffer of the block), renormalised.
        "minimax_m2": ("minimax_m2", dict(
            intermediate_size=32, num_local_experts=E, num_experts_per_tok=K,
            head_dim=16), "MiniMaxM2SparseMoeBlock"),
        # PhiMoE's sparsemixer: two top-1 picks by ArgMax, each weighted by
        # a softmax over the logits within a jitter band of its max (the
        # first pick masked out before the second): no moe.route form, the
        # router stays as the model's own ops (docs/raising.md).
        "phimoe": ("phimoe", dict(
            intermediate_size=32, num_local_experts=E, num_experts_per_tok=K,
            head_dim=16), "PhimoeSparseMoeBlock"),
        # softmax top-k, renormalised (norm_topk_prob); a sigmoid-gated
        # shared expert; gated DeltaNet + full attention in the whole model.
        "qwen3_next": ("qwen3_next", dict(
            intermediate_size=64, moe_intermediate_size=32,
            shared_expert_intermediate_size=32, num_experts=E,
            num_experts_per_tok=K, norm_topk_prob=True, head_dim=16,
            linear_num_key_heads=2, linear_num_value_heads=4,
            linear_key_head_dim=16, linear_value_head_dim=16,
            layer_types=["linear_attention", "full_attention"]),
            "Qwen3NextSparseMoeBlock"),
    }


# Whole models that compile with moec and match onnxruntime on ep=2
# (README.md: the others and why not).
CAUSAL_LMS_COMMITTED = [
    "dots1_causal_lm", "flex_olmo_causal_lm", "glm4_moe_lite_causal_lm",
    "granitemoeshared_causal_lm", "hunyuan_v1_moe_causal_lm",
    "jamba_causal_lm", "laguna_causal_lm", "lfm2_moe_causal_lm",
    "minimax_m2_causal_lm", "phimoe_causal_lm"]


def config(name):
    model_type, kw, _ = families()[name]
    return transformers.AutoConfig.for_model(model_type, **{**COMMON, **kw})


def randomize_biases(module, seed=2):
    """Selection biases start at zero: make them matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, t in [*module.named_parameters(), *module.named_buffers()]:
            if n.endswith(("e_score_correction_bias", "expert_bias")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)


def ops(path):
    import onnx
    m = onnx.load(path, load_external_data=False)
    return ([(o.domain, o.version) for o in m.opset_import],
            dict(sorted(collections.Counter(
                n.op_type for n in m.graph.node).items())))


def export_block(name):
    model_type, _, make = families()[name]
    cfg = config(name)
    cfg._experts_implementation = "eager"
    mod = importlib.import_module(
        f"transformers.models.{model_type}.modeling_{model_type}")
    torch.manual_seed(0)
    block = (getattr(mod, make)(cfg) if isinstance(make, str)
             else make(cfg, mod)).eval()
    with torch.no_grad():
        for p in block.parameters():
            torch.nn.init.normal_(p, std=0.1)
    randomize_biases(block)

    # The experts module is called as experts(hidden, top_k_index, weights).
    experts = [m for n, m in block.named_modules()
               if n.split(".")[-1] == "experts"]
    assert len(experts) == 1, name
    seen = {}

    def hook(_, args, kwargs):
        seen["idx"] = args[1] if len(args) > 1 else kwargs["top_k_index"]
    handle = experts[0].register_forward_pre_hook(hook, with_kwargs=True)
    for seed in range(100):
        x = torch.randn(B, S, H, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            y = block(x)
        hit = seen["idx"].unique().numel()
        if hit == E:
            break
    handle.remove()
    if hit != E:
        sys.exit(f"{name}: no input seed < 100 hits all {E} experts: the "
                 "export would bake that routing in")
    assert isinstance(y, torch.Tensor), type(y)

    out = os.path.join(HERE, name)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    torch.onnx.export(block, (x,), path, dynamo=False, opset_version=17,
                      input_names=["hidden_states"], output_names=["output"])
    np.save(os.path.join(out, "input.npy"), x.numpy())
    np.save(os.path.join(out, "output.npy"), y.numpy())
    opset, counts = ops(path)
    print(name, type(block).__name__, f"input seed {seed} hits {hit} experts;",
          os.path.getsize(path), "bytes; opset", opset, "ops", counts)


def export_causal_lm(name):
    family = name[:-len("_causal_lm")]
    cfg = config(family)
    cfg._experts_implementation = "batched_mm"
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    randomize_biases(model)

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids=input_ids, use_cache=False).logits

    lm = Logits(model).eval()
    ids = torch.randint(0, VOCAB, (B, S),
                        generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = lm(ids)
    out = (os.path.join(HERE, name) if name in CAUSAL_LMS_COMMITTED else
           os.path.join(OUT, name))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    try:
        torch.onnx.export(lm, (ids,), path, dynamo=True,
                          input_names=["input_ids"], output_names=["logits"])
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()
        print(name, "dynamo export failed:", type(e).__name__,
              msg[0] if msg else "")
        return
    np.save(os.path.join(out, "input.npy"), ids.numpy())
    np.save(os.path.join(out, "output.npy"), y.numpy())
    opset, counts = ops(path)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
               if f.startswith("model.onnx"))
    print(name, "->", out, size, "bytes (model.onnx + data); opset", opset,
          "ops", counts)


# Where the whole models too large to commit go (--out DIR).
OUT = os.path.join(tempfile.gettempdir(), "families")


def main():
    global OUT
    print("transformers", transformers.__version__, "torch", torch.__version__)
    wanted = sys.argv[1:]
    if wanted[:1] == ["--out"]:
        OUT, wanted = wanted[1], wanted[2:]
    names = list(families())
    for w in wanted:
        if w not in names and w.removesuffix("_causal_lm") not in names:
            sys.exit(f"unknown name {w}; families: {' '.join(names)}")
    for name in names:
        if not wanted or name in wanted:
            export_block(name)
    for name in names:
        lm = name + "_causal_lm"
        if lm in wanted or (not wanted and lm in CAUSAL_LMS_COMMITTED):
            export_causal_lm(lm)


if __name__ == "__main__":
    main()
