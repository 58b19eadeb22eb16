#!/usr/bin/env python3
"""DeepSeek-V3's structure at tiny widths, for scale tests (issue 15).

    python3 bench/scale/gen_deepseek.py DIR [--layers 61] [--experts 256]
        [--batch 4 --seq 8] [--exporter dynamo|torchscript] [--seed 0]

transformers' DeepseekV3ForCausalLM with the real model's structure: N
decoder layers (default 61), the first `first_k_dense_replace` = 3 of them
dense MLPs, the rest MoE layers of 256 routed experts (top-8, sigmoid
scores with a selection bias, 8 groups of which 4 are kept, renormalised,
routed_scaling_factor 2.5) plus one shared expert, and multi-head latent
attention (LoRA-compressed queries and keys/values, decoupled rotary
dims); only the widths are tiny (hidden 64, dense FFN 128, expert FFN 16,
4 heads, vocabulary 256). Random weights from fixed seeds: transformers'
initialisation (examples/dynamo/gen.py's causal_lm), the routers' weights
with std 0.1 and their selection biases with std 0.01 (with the default
0.02 and gen.py's 0.1 the bias decides: 32 tokens pick from about 30 of
the 256 experts, here from about 150).

Writes DIR/model.onnx (+ DIR/model.onnx.data, the weights as external
data), DIR/input.npy (input_ids [batch, seq], int64) and DIR/output.npy
(torch's logits [batch, seq, 256]). Generate into a build or /tmp
directory: the models are not committed (61 layers: about 50 MB).

--exporter dynamo (default) uses torch.onnx's dynamo exporter through
examples/dynamo/gen.py (batched_mm experts, opset 20: the whole graph holds
every expert whatever the input). --exporter torchscript uses the
TorchScript exporter (opset 17) on transformers' default experts, which
loop over the experts the example input hits: the export bakes that
routing in, so the script tries input seeds until one hits every expert of
every layer (that takes a larger batch, e.g. --batch 64 --seq 8) and says
how many the input it kept hits.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "dynamo"))
import gen  # noqa: E402  examples/dynamo/gen.py: causal_lm, save
import transformers  # noqa: E402


def config(layers=61, experts=256, hidden=64, vocab=256):
    """DeepSeek-V3's structure (transformers' defaults are the real model's
    except the widths set here)."""
    return transformers.DeepseekV3Config(
        num_hidden_layers=layers, first_k_dense_replace=min(3, layers),
        n_routed_experts=experts, num_experts_per_tok=min(8, experts),
        n_group=8 if experts % 8 == 0 and experts >= 16 else 1,
        topk_group=4 if experts % 8 == 0 and experts >= 16 else 1,
        n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True,
        hidden_size=hidden, intermediate_size=2 * hidden,
        moe_intermediate_size=16, num_attention_heads=4,
        num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
        vocab_size=vocab, max_position_embeddings=64)


class Logits(torch.nn.Module):
    """input_ids -> logits. With `mask`, an explicit attention mask of ones:
    without one, transformers looks for packed sequences in the position
    ids with torch.diff, which the TorchScript exporter cannot translate."""

    def __init__(self, m, mask=False):
        super().__init__()
        self.m = m
        self.mask = mask

    def forward(self, input_ids):
        mask = torch.ones_like(input_ids) if self.mask else None
        return self.m(input_ids=input_ids, attention_mask=mask,
                      use_cache=False).logits


def experts_hit(model, ids):
    """Experts each MoE layer's router picks for `ids` (TorchScript:
    the export holds only those)."""
    hits = []

    def hook(mod, args, out):
        hits.append(out[2].unique().numel())
    hs = [m.gate.register_forward_hook(hook) for m in model.modules()
          if hasattr(m, "gate") and hasattr(m.gate, "e_score_correction_bias")]
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in hs:
        h.remove()
    return hits


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output directory")
    ap.add_argument("--layers", type=int, default=61)
    ap.add_argument("--experts", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1,
                    help="seed of the input ids (weights: seeds 0 and 3)")
    ap.add_argument("--exporter", choices=["dynamo", "torchscript"],
                    default="dynamo")
    a = ap.parse_args()
    cfg = config(a.layers, a.experts, a.hidden, a.vocab)
    t0 = time.time()
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq),
                        generator=torch.Generator().manual_seed(a.seed))
    model = gen.causal_lm(cfg)
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        for n, p in model.named_parameters():
            if n.endswith("mlp.gate.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for n, t in model.named_buffers():
            if "e_score_correction_bias" in n:
                t.copy_(torch.randn(t.shape, generator=g) * 0.01)
    if a.exporter == "dynamo":
        # batched_mm experts and eager attention (gen.causal_lm), exported
        # by gen.save: model.onnx + .data, input.npy, output.npy.
        gen.save("deepseek_v3_scale", Logits(model).eval(),
                 [("input_ids", ids)], ["logits"], a.out)
        print(f"{a.layers} layers, {a.experts} experts: exported in "
              f"{time.time() - t0:.1f} s to {a.out}")
        return
    # The TorchScript exporter traces transformers' default experts (a loop
    # over the experts the input hits).
    model.config._experts_implementation = "eager"
    # The export keeps only the experts the example input hits: the first
    # input (seeds --seed, --seed + 1, ...) that hits every expert of every
    # layer, else the best of 20.
    best = None
    for seed in range(a.seed, a.seed + 20):
        ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq),
                            generator=torch.Generator().manual_seed(seed))
        hit = experts_hit(model, ids)
        if best is None or min(hit, default=0) > min(best[1], default=0):
            best = (ids, hit)
        if min(hit, default=a.experts) == a.experts:
            break
    ids, hit = best
    module = Logits(model, mask=True).eval()
    with torch.no_grad():
        y = module(ids)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "model.onnx")
    torch.onnx.export(module, (ids,), path, dynamo=False, opset_version=17,
                      input_names=["input_ids"], output_names=["logits"])
    import onnx
    m = onnx.load(path)
    onnx.save(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=1024)
    np.save(os.path.join(a.out, "input.npy"), ids.numpy())
    np.save(os.path.join(a.out, "output.npy"), y.numpy())
    print(f"{a.layers} layers, {a.experts} experts: exported (TorchScript) "
          f"in {time.time() - t0:.1f} s to {a.out}; experts the input hits "
          f"per MoE layer: min {min(hit) if hit else 0}, max "
          f"{max(hit) if hit else 0} of {a.experts}")


if __name__ == "__main__":
    main()
