#!/usr/bin/env python3
"""Exports transformers' own MixtralSparseMoeBlock (tiny random config, no
download) with torch.onnx and saves torch's reference outputs.

    python3 examples/hf_mixtral/gen.py      # needs torch, transformers, onnx

transformers 5.x loops over the experts hit by the input (`expert_hit`); the
TorchScript exporter unrolls that loop for the example input, so the export
only contains the experts that input hits. The script checks that the
example input hits every expert (so the export holds all of them) and says
so otherwise.
"""
import collections
import os
import sys
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformers  # noqa: E402
from transformers.models.mixtral import modeling_mixtral  # noqa: E402

B, S, H, FF, E, K = 2, 8, 64, 128, 8, 2
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    cfg = transformers.MixtralConfig(hidden_size=H, intermediate_size=FF,
                                     num_local_experts=E, num_experts_per_tok=K)
    torch.manual_seed(0)
    block = modeling_mixtral.MixtralSparseMoeBlock(cfg).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(B, S, H)
    with torch.no_grad():
        y = block(x)
        logits = x.reshape(-1, H) @ block.gate.weight.T
    hit = torch.topk(logits, K, dim=-1).indices.unique().numel()
    if hit != E:
        sys.exit(f"the example input hits {hit} of {E} experts: the export "
                 "would bake that routing in; change the seed")
    path = os.path.join(HERE, "model.onnx")
    torch.onnx.export(block, (x,), path, dynamo=False, opset_version=17,
                      input_names=["hidden_states"], output_names=["output"])
    np.save(os.path.join(HERE, "input.npy"), x.numpy())
    np.save(os.path.join(HERE, "output.npy"), y.numpy())
    import onnx
    m = onnx.load(path)
    print("transformers", transformers.__version__, "torch", torch.__version__)
    print("ir_version", m.ir_version, "opset", [(o.domain, o.version) for o in m.opset_import])
    print("ops", dict(sorted(collections.Counter(n.op_type for n in m.graph.node).items())))
    print("size", os.path.getsize(path), "bytes; experts hit by the example:", hit)


if __name__ == "__main__":
    main()
