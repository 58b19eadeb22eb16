#!/usr/bin/env python3
"""Exports transformers' own SwitchTransformersSparseMLP (tiny random config,
no download: top-1 argmax router, expert output scaled by the router
probability, the config's ReLU DenseActDense experts, expert capacity above
the sequence length so no token is dropped) with torch.onnx and saves
torch's reference output.

    python3 examples/hf_switch/gen.py [--dynamo]   # needs torch, transformers, onnx
    python3 examples/hf_switch/gen.py --gelu       # dense_act_fn="gelu" variant

--gelu writes model_gelu.onnx, input_gelu.npy and output_gelu.npy instead
(the same block with `dense_act_fn="gelu"`, exported as torch's erf GELU).

transformers 5.x loops over the experts hit by the input (`expert_hit`);
the TorchScript exporter unrolls that loop for the example input, so the
export only holds the experts that input hits. The script draws inputs with
seeds 0, 1, ... and keeps the first that hits every expert (and refuses if
none of 100 does). --dynamo also tries the dynamo exporter (to /tmp).
"""
import collections
import os
import sys
import tempfile
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformers  # noqa: E402
HERE = os.path.dirname(os.path.abspath(__file__))


def export(block, x, hit, num_experts, notes, suffix=""):
    """Exports `block` on `x` (TorchScript, opset 17), saves the reference
    data, and tries the dynamo exporter (written to /tmp only)."""
    if hit != num_experts:
        sys.exit(f"the example input hits {hit} of {num_experts} experts: the "
                 "export would bake that routing in; change the seed")
    with torch.no_grad():
        y = block(x)
    path = os.path.join(HERE, f"model{suffix}.onnx")
    torch.onnx.export(block, (x,), path, dynamo=False, opset_version=17,
                      input_names=["hidden_states"], output_names=["output"])
    np.save(os.path.join(HERE, f"input{suffix}.npy"), x.numpy())
    np.save(os.path.join(HERE, f"output{suffix}.npy"), y.numpy())
    import onnx
    m = onnx.load(path)
    print("transformers", transformers.__version__, "torch", torch.__version__)
    print("ir_version", m.ir_version, "opset",
          [(o.domain, o.version) for o in m.opset_import])
    print("ops", dict(sorted(collections.Counter(
        n.op_type for n in m.graph.node).items())))
    print("size", os.path.getsize(path), "bytes; experts hit by the example:",
          hit, notes)
    if "--dynamo" in sys.argv:
        out = os.path.join(tempfile.gettempdir(),
                           os.path.basename(HERE) + "_dynamo.onnx")
        try:
            torch.onnx.export(block, (x,), out, dynamo=True, opset_version=17,
                              input_names=["hidden_states"],
                              output_names=["output"])
            dm = onnx.load(out)
            print("dynamo export:", out, dict(sorted(collections.Counter(
                n.op_type for n in dm.graph.node).items())))
        except Exception as e:  # noqa: BLE001
            print("dynamo export failed:", type(e).__name__,
                  str(e).splitlines()[0] if str(e) else "")


def main():
    from transformers.models.switch_transformers import \
        modeling_switch_transformers as mod
    B, S, H, E = 2, 16, 64, 8
    gelu = "--gelu" in sys.argv
    extra = {"dense_act_fn": "gelu"} if gelu else {}
    cfg = transformers.SwitchTransformersConfig(
        d_model=H, d_ff=128, num_experts=E, expert_capacity=64, **extra)
    torch.manual_seed(0)
    block = mod.SwitchTransformersSparseMLP(cfg).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    for seed in range(100):
        x = torch.randn(B, S, H, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            mask = block.router(x)[0]
        hit = int((mask.sum(dim=(0, 1)) > 0).sum())
        if hit == E:
            break
    export(block, x, hit, E,
           f"(input seed {seed}, activation {cfg.dense_act_fn})",
           "_gelu" if gelu else "")


if __name__ == "__main__":
    main()
