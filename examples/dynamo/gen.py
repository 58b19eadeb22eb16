#!/usr/bin/env python3
"""Exports transformers' own MoE blocks (tiny random configs, no download)
with torch.onnx's dynamo exporter, the default of torch >= 2.9, and saves
torch's reference outputs.

    python3 examples/dynamo/gen.py [NAME ...]   # needs torch, transformers, onnx

transformers 5.x's default ("eager") experts loop over the experts the input
hits, which torch.export cannot trace (a data-dependent loop), and its
"grouped_mm" experts call an op the ONNX exporter cannot translate. Its
"batched_mm" experts export: each (token, choice) row gathers its expert's
weights (GatherND by the top-k ids) and multiplies them with its copy of the
token (batched MatMul). So every block here is built with
`config._experts_implementation = "batched_mm"` and exported with
`dynamo=True` at the exporter's default opset (20 with torch 2.15), which
moec imports by rewriting the few opset-18+ forms to opset 17 (see
docs/importer.md). The exported graph holds every expert whatever the
input, unlike the TorchScript exports of examples/hf_*.

One directory per model: model.onnx, input.npy (hidden_states [2, 8, 64]),
output.npy (torch's output). `mixtral_causal_lm` is a whole model instead
of a block: transformers' MixtralForCausalLM with 2 decoder layers
(embeddings, RMSNorm, grouped-query attention with rotary embeddings, the
MoE block, the LM head), input.npy input_ids [4, 8] (int64), output.npy the
logits [4, 8, 256]; `qwen2_moe_causal_lm`, `qwen3_moe_causal_lm`,
`olmoe_causal_lm`, `glm4_moe_causal_lm`, `granitemoe_causal_lm`,
`ernie4_5_moe_causal_lm` and `deepseek_v3_causal_lm` are the same for those
families (causal_lms() below). `mixtral_decode_step` is one decoding step
with a KV cache (export_decode_step() below).
"""
import collections
import os
import sys
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
B, S, H, E, K = 2, 8, 64, 8, 2


def models():
    """name -> (config, block class); the routing of each family as in
    examples/hf_*."""
    from transformers.models.deepseek_v2 import modeling_deepseek_v2 as dsv2
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as dsv3
    from transformers.models.mixtral import modeling_mixtral as mixtral
    from transformers.models.olmoe import modeling_olmoe as olmoe
    from transformers.models.qwen2_moe import modeling_qwen2_moe as qwen2
    from transformers.models.qwen3_moe import modeling_qwen3_moe as qwen3
    return {
        "mixtral": (transformers.MixtralConfig(
            hidden_size=H, intermediate_size=128, num_local_experts=E,
            num_experts_per_tok=K), mixtral.MixtralSparseMoeBlock),
        "qwen2_moe": (transformers.Qwen2MoeConfig(
            hidden_size=H, moe_intermediate_size=32,
            shared_expert_intermediate_size=96, num_experts=E,
            num_experts_per_tok=K, norm_topk_prob=False, hidden_act="silu"),
            qwen2.Qwen2MoeSparseMoeBlock),
        "qwen3_moe": (transformers.Qwen3MoeConfig(
            hidden_size=H, moe_intermediate_size=32, num_experts=E,
            num_experts_per_tok=K, norm_topk_prob=True),
            qwen3.Qwen3MoeSparseMoeBlock),
        "olmoe": (transformers.OlmoeConfig(
            hidden_size=H, intermediate_size=32, num_experts=E,
            num_experts_per_tok=K), olmoe.OlmoeSparseMoeBlock),
        "deepseek_v2": (transformers.DeepseekV2Config(
            hidden_size=H, moe_intermediate_size=32, n_routed_experts=E,
            num_experts_per_tok=K, n_group=4, topk_group=2,
            n_shared_experts=1, topk_method="group_limited_greedy",
            routed_scaling_factor=1.5), dsv2.DeepseekV2Moe),
        "deepseek_v3": (transformers.DeepseekV3Config(
            hidden_size=H, moe_intermediate_size=32, n_routed_experts=E,
            num_experts_per_tok=K, n_group=4, topk_group=2,
            n_shared_experts=1, routed_scaling_factor=2.5,
            norm_topk_prob=True), dsv3.DeepseekV3MoE),
    }


def export(name, cfg, cls, out_name=None, batch=B, dynamic=False):
    """`cls`(cfg) with random weights as hidden_states -> output into
    examples/dynamo/`out_name` (default `name`); `dynamic`: one sequence
    whose length stays symbolic in the ONNX file (torch.export's Dim), for
    plans with a dynamic token count."""
    cfg._experts_implementation = "batched_mm"
    torch.manual_seed(0)
    block = cls(cfg).eval()
    with torch.no_grad():
        for p in block.parameters():
            torch.nn.init.normal_(p, std=0.1)
    if hasattr(block, "gate") and hasattr(block.gate, "e_score_correction_bias"):
        # DeepSeek-V3's selection bias is a buffer (zeros): make it matter.
        with torch.no_grad():
            block.gate.e_score_correction_bias.copy_(torch.randn(E) * 0.1)
    x = torch.randn(batch, S, H, generator=torch.Generator().manual_seed(1))
    shapes = ({1: torch.export.Dim("sequence", min=1, max=1024)},) \
        if dynamic else None
    save(out_name or name, block, [("hidden_states", x)], ["output"],
         dynamic_shapes=shapes)


def save(name, module, inputs, output_names, out=None, dynamic_shapes=None):
    """Runs `module` on `inputs` ([(name, tensor)]) and exports it with the
    dynamo exporter into `out` (default examples/dynamo/NAME): model.onnx
    (+ .data); input.npy for one input, else NAME.npy per input; torch's
    output.npy for one output, else output.npz."""
    import onnx
    xs = tuple(t for _, t in inputs)
    with torch.no_grad():
        ys = module(*xs)
    ys = ys if isinstance(ys, tuple) else (ys,)
    out = out or os.path.join(HERE, name)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    torch.onnx.export(module, xs, path, dynamo=True,
                      input_names=[n for n, _ in inputs],
                      output_names=output_names,
                      dynamic_shapes=dynamic_shapes)
    if len(inputs) == 1:
        np.save(os.path.join(out, "input.npy"), xs[0].numpy())
    else:
        for n, t in inputs:
            np.save(os.path.join(out, n + ".npy"), t.numpy())
    if len(ys) == 1:
        np.save(os.path.join(out, "output.npy"), ys[0].numpy())
    else:
        np.savez(os.path.join(out, "output.npz"),
                 **{n: y.numpy() for n, y in zip(output_names, ys)})
    m = onnx.load(path)
    print(name, "opset", [(o.domain, o.version) for o in m.opset_import],
          "ops", dict(sorted(collections.Counter(
              n.op_type for n in m.graph.node).items())))


def export_causal_lm(name="mixtral_causal_lm", out=None, hidden=H, ffn=128,
                     layers=2, heads=4, kv_heads=2, vocab=256, batch=4,
                     seq=S, dynamic=False):
    """A whole (tiny) Mixtral: attention and MoE layers; batch 4, so that
    meshes that split tokens 2 or 4 ways keep whole sequences per rank.
    bench/causal_lm_bench.py exports a larger one into `out`."""
    cfg = transformers.MixtralConfig(
        hidden_size=hidden, intermediate_size=ffn, num_local_experts=E,
        num_experts_per_tok=K, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        vocab_size=vocab, max_position_embeddings=max(64, seq))
    export_lm(name, cfg, batch, seq, out, dynamic)


def causal_lms():
    """The other families as whole models (2 decoder layers, batch 4 x 8):
    Qwen2-MoE (shared expert with a sigmoid gate), Qwen3-MoE and OLMoE
    (RMSNorm on queries and keys), GLM-4-MoE (partial rotary, a dense first
    layer, grouped sigmoid routing), Granite-MoE (top-k over the logits,
    then a softmax over the k values), ERNIE 4.5 (softmax routing with a
    selection bias, the sum of weights clamped from below), DeepSeek-V3 (multi-head latent attention
    with LoRA-compressed queries and keys/values, a dense first layer, then
    grouped sigmoid routing with a selection bias and a shared expert)."""
    common = dict(hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
                  vocab_size=256, max_position_embeddings=64)
    return {
        "qwen2_moe_causal_lm": transformers.Qwen2MoeConfig(
            intermediate_size=128, moe_intermediate_size=32,
            shared_expert_intermediate_size=96, num_experts=E,
            num_experts_per_tok=K, num_key_value_heads=2, **common),
        "qwen3_moe_causal_lm": transformers.Qwen3MoeConfig(
            intermediate_size=128, moe_intermediate_size=32, num_experts=E,
            num_experts_per_tok=K, num_key_value_heads=2, head_dim=16,
            norm_topk_prob=True, **common),
        "olmoe_causal_lm": transformers.OlmoeConfig(
            intermediate_size=32, num_experts=E, num_experts_per_tok=K,
            num_key_value_heads=4, **common),
        "glm4_moe_causal_lm": transformers.Glm4MoeConfig(
            intermediate_size=128, moe_intermediate_size=32,
            n_routed_experts=E, num_experts_per_tok=K, n_group=2,
            topk_group=1, first_k_dense_replace=1, n_shared_experts=1,
            num_key_value_heads=2, **common),
        "granitemoe_causal_lm": transformers.GraniteMoeConfig(
            intermediate_size=32, num_local_experts=E, num_experts_per_tok=K,
            num_key_value_heads=2, **common),
        "ernie4_5_moe_causal_lm": transformers.Ernie4_5_MoeConfig(
            intermediate_size=128, moe_intermediate_size=32, moe_num_experts=E,
            moe_k=K, moe_num_shared_experts=1, moe_layer_start_index=0,
            num_key_value_heads=2, **common),
        "deepseek_v3_causal_lm": transformers.DeepseekV3Config(
            intermediate_size=128, moe_intermediate_size=32,
            n_routed_experts=E, num_experts_per_tok=K, n_group=2,
            topk_group=1, first_k_dense_replace=1, num_key_value_heads=4,
            q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8,
            qk_nope_head_dim=8, v_head_dim=16, n_shared_experts=1,
            **common),
    }


def causal_lm(cfg):
    """`cfg`'s causal LM with random weights, batched experts and eager
    attention (the forms the dynamo exporter translates)."""
    cfg._experts_implementation = "batched_mm"
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        # Selection biases (DeepSeek-V3, GLM-4, ERNIE) start at zero: make
        # them matter.
        gen = torch.Generator().manual_seed(2)
        for n, t in [*model.named_parameters(), *model.named_buffers()]:
            if "e_score_correction_bias" in n:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
    return model


def export_lm(name, cfg, batch=4, seq=S, out=None, dynamic=False):
    """Exports `cfg`'s causal LM (random weights) as input_ids -> logits;
    `dynamic`: the batch size and sequence length stay symbolic in the ONNX
    file (moec --input-shape input_ids=4,? --max-tokens N)."""
    model = causal_lm(cfg)

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids=input_ids, use_cache=False).logits

    ids = torch.randint(0, cfg.vocab_size, (batch, seq),
                        generator=torch.Generator().manual_seed(1))
    shapes = ({0: torch.export.Dim("batch", min=1, max=64),
               1: torch.export.Dim("sequence", min=1, max=1024)},) \
        if dynamic else None
    save(name, Logits(model).eval(), [("input_ids", ids)], ["logits"], out,
         dynamic_shapes=shapes)
    if dynamic:
        # torch's greedy generation (with its KV cache) from the same
        # prompt, for `moe-run generate`: 16 new tokens, no end token, every
        # prompt token attended (an explicit mask: with pad_token_id set,
        # generate would mask prompt tokens equal to it).
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        with torch.no_grad():
            g = model.generate(ids, attention_mask=torch.ones_like(ids),
                               max_new_tokens=16, do_sample=False)
        np.save(os.path.join(out or os.path.join(HERE, name),
                             "generate.npy"), g.numpy())


def export_decode_step(name="mixtral_decode_step", past=8, batch=4,
                       out=None, dynamic=False, cfg=None):
    """One decoding step of a 2-layer Mixtral with a KV cache: input_ids
    [4, 1] and each layer's cached keys and values [4, 2, past, 16] in, the
    logits [4, 1, 256] and the grown cache [4, 2, past + 1, 16] out
    (position `past`). The cache is a plain tensor per layer and kind
    (past_k_L, past_v_L -> present_k_L, present_v_L); NAME.npy per input,
    output.npz torch's outputs. `dynamic`: the cache length stays symbolic
    in the file and the positions are an input (position_ids [4, 1]), so
    that no constant follows the cache length (moec --input-shape
    past_k_0=4,2,?,16 ... --max-tokens N)."""
    cfg = cfg or decode_step_config()
    model = causal_lm(cfg)
    layers = cfg.num_hidden_layers

    class Step(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, *rest):
            if dynamic:
                pos, kv = rest[0], rest[1:]
            else:
                pos = torch.full((input_ids.shape[0], 1), past,
                                 dtype=torch.long)
                kv = rest
            cache = transformers.DynamicCache(config=cfg)
            for layer in range(layers):
                cache.update(kv[2 * layer], kv[2 * layer + 1], layer)
            out = self.m(input_ids=input_ids, past_key_values=cache,
                         use_cache=True, position_ids=pos)
            res = [out.logits]
            for layer in out.past_key_values.layers:
                res += [layer.keys, layer.values]
            return tuple(res)

    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (batch, 1), generator=gen)
    # The cache's shapes as the model makes them (head sizes differ per
    # family: Qwen3's head_dim, DeepSeek-V3's keys wider than its values).
    with torch.no_grad():
        probe = model(input_ids=torch.zeros((batch, past), dtype=torch.long),
                      use_cache=True).past_key_values.layers
    kv = [torch.randn(*t.shape, generator=gen)
          for layer in probe for t in (layer.keys, layer.values)]
    names = ["input_ids"] + [f"past_{t}_{layer}" for layer in range(layers)
                             for t in "kv"]
    onames = ["logits"] + [f"present_{t}_{layer}" for layer in range(layers)
                           for t in "kv"]
    inputs = list(zip(names, (ids, *kv)))
    shapes = None
    if dynamic:
        pos = torch.full((batch, 1), past, dtype=torch.long)
        inputs.insert(1, ("position_ids", pos))
        cache = torch.export.Dim("past", min=1, max=1024)
        shapes = (None, (None, *({2: cache} for _ in kv)))
    save(name, Step(model).eval(), inputs, onames, out,
         dynamic_shapes=shapes)


def decode_step_config():
    """The config of mixtral_decode_step(_dynamic) and mixtral_prefill."""
    return transformers.MixtralConfig(
        hidden_size=H, intermediate_size=32, num_local_experts=E,
        num_experts_per_tok=K, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, max_position_embeddings=64)


def export_prefill(name="mixtral_prefill_dynamic", batch=4, seq=8, new=16,
                   cfg=None, out=None):
    """The prefill of mixtral_decode_step_dynamic's model (same config and
    weights): input_ids [4, S] (S symbolic) in, the logits and each layer's
    keys and values [4, 2, S, 16] (present_k_L, present_v_L) out, for
    `moe-run generate --decode-plan`. generate.npy: torch's greedy ids for
    input_ids.npy and `new` tokens (its own KV cache, no end token)."""
    cfg = cfg or decode_step_config()
    model = causal_lm(cfg)

    class Prefill(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            out = self.m(input_ids=input_ids, use_cache=True)
            res = [out.logits]
            for layer in out.past_key_values.layers:
                res += [layer.keys, layer.values]
            return tuple(res)

    ids = torch.randint(0, cfg.vocab_size, (batch, seq),
                        generator=torch.Generator().manual_seed(3))
    onames = ["logits"] + [f"present_{t}_{layer}"
                           for layer in range(cfg.num_hidden_layers)
                           for t in "kv"]
    shapes = ({1: torch.export.Dim("sequence", min=1, max=1024)},)
    out = out or os.path.join(HERE, name)
    save(name, Prefill(model).eval(), [("input_ids", ids)], onames, out,
         dynamic_shapes=shapes)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        g = model.generate(ids, attention_mask=torch.ones_like(ids),
                           max_new_tokens=new, do_sample=False)
    np.save(os.path.join(out, "generate.npy"), g.numpy())


def export_small_batches():
    """Batches smaller than the ranks (docs/sharding.md, sequence-parallel
    MoE): batch1/ holds every causal LM above with one prompt of 5 tokens
    (a count no mesh of 2, 4 or 8 divides) and the decode step with one
    sequence; batch2/ every causal LM with 2 x 8 tokens and the decode step
    with two sequences. Same configs and seeds as the batch-4 exports."""
    for sub, batch, seq in (("batch1", 1, 5), ("batch2", 2, S)):
        d = os.path.join(HERE, sub)
        cfgs = {"mixtral_causal_lm": transformers.MixtralConfig(
            hidden_size=H, intermediate_size=128, num_local_experts=E,
            num_experts_per_tok=K, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
            max_position_embeddings=64)}
        cfgs.update(causal_lms())
        for name, cfg in cfgs.items():
            export_lm(name, cfg, batch, seq, os.path.join(d, name))
        export_decode_step(batch=batch,
                           out=os.path.join(d, "mixtral_decode_step"))


def main():
    print("transformers", transformers.__version__, "torch", torch.__version__)
    wanted = sys.argv[1:]
    for name, (cfg, cls) in models().items():
        if not wanted or name in wanted:
            export(name, cfg, cls)
    if not wanted or "mixtral_causal_lm" in wanted:
        export_causal_lm()
    for name, cfg in causal_lms().items():
        if not wanted or name in wanted:
            export_lm(name, cfg)
    if not wanted or "mixtral_decode_step" in wanted:
        export_decode_step()
    if not wanted or "small_batches" in wanted:
        export_small_batches()
    if not wanted or "qwen2_moe_dynamic" in wanted:
        # One sequence of any length: test/moec/dynamic-kernels.test.
        cfg, cls = models()["qwen2_moe"]
        export("qwen2_moe", cfg, cls, "qwen2_moe_dynamic", batch=1,
               dynamic=True)
    if not wanted or "mixtral_causal_lm_dynamic" in wanted:
        # Any batch and length: test/moec/dynamic-causal-lm.test.
        export_causal_lm("mixtral_causal_lm_dynamic", dynamic=True)
    if not wanted or "mixtral_decode_step_dynamic" in wanted:
        # Any cache length: test/moec/dynamic-decode-step.test.
        export_decode_step("mixtral_decode_step_dynamic", dynamic=True)
    if not wanted or "mixtral_prefill_dynamic" in wanted:
        # With the decode step: test/moec/generate-kv.test.
        export_prefill()


if __name__ == "__main__":
    main()
