#!/usr/bin/env python3
"""Tiny TorchScript exports of two transformers 5.25 MoE blocks whose
routers moe-raise-experts does not raise yet (see docs/raising.md):
PhiMoE's sparsemixer (two top-1 picks by ArgMax with masked re-softmax)
and LongCat-Flash's zero-computation experts (ids past the real experts
add the token itself, weighted). Hidden 16, 4 experts, every expert hit.

    python3 gen.py   # needs torch, transformers, onnx
"""
import os
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
COMMON = dict(hidden_size=16, intermediate_size=16, moe_intermediate_size=16,
              expert_ffn_hidden_size=16, ffn_hidden_size=16,
              num_hidden_layers=1, num_layers=1, num_attention_heads=2,
              num_key_value_heads=2, head_dim=8, vocab_size=32,
              num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2,
              zero_expert_num=2, max_position_embeddings=32)


class Block(torch.nn.Module):
    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, x):
        out = self.mlp(x)
        return out[0] if isinstance(out, tuple) else out


def main():
    for fam in ("phimoe", "longcat_flash"):
        kw = dict(COMMON)
        if fam == "longcat_flash":  # num_hidden_layers is 2 * num_layers
            del kw["num_hidden_layers"]
        cfg = transformers.AutoConfig.for_model(fam, **kw)
        cfg._experts_implementation = "eager"
        torch.manual_seed(0)
        m = transformers.AutoModelForCausalLM.from_config(cfg).eval()
        mlp = m.model.layers[0].mlp
        for p in mlp.parameters():
            torch.nn.init.normal_(p, std=0.3)
        x = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(0))
        torch.onnx.export(Block(mlp), (x,), os.path.join(HERE, fam + ".onnx"),
                          dynamo=False, opset_version=17,
                          input_names=["hidden_states"],
                          output_names=["output"])
        # The exports bake the example input's routing into the unrolled
        # loops: they compute the block only for inputs routed alike.
        np.save(os.path.join(HERE, fam + "-input.npy"), x.numpy())
        with torch.no_grad():
            np.save(os.path.join(HERE, fam + "-torch.npy"),
                    Block(mlp)(x).numpy())
            # A second input, not the export's: the raised layer computes
            # the block for any input.
            x2 = torch.randn(2, 16, 16,
                             generator=torch.Generator().manual_seed(1))
            np.save(os.path.join(HERE, fam + "-input2.npy"), x2.numpy())
            np.save(os.path.join(HERE, fam + "-torch2.npy"),
                    Block(mlp)(x2).numpy())
        print(fam, os.path.getsize(os.path.join(HERE, fam + ".onnx")), "bytes")


if __name__ == "__main__":
    main()
