#!/usr/bin/env python3
"""The Mixtral MoE layer in PyTorch eager on the GPU: the peer of moert-gpu-bench.

Same layer as bench/gpu_moe_bench.cu (router GEMM, softmax top-k with
renormalisation, SwiGLU experts, weighted combine), written the way Hugging
Face's MixtralSparseMoeBlock runs it: a Python loop over the experts with
torch.where / index_add_. Prints the mean time per layer in ms and a
"RESULT torch_moe_layer_ms <ms>" line; --out also writes them to a file.
Exit status 2 when torch has no CUDA device.
"""

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=14336)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default="")
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        print("torch_moe_layer.py: no CUDA device visible to torch", file=sys.stderr)
        return 2
    dt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[a.dtype]
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=g, device=dev) * 2 - 1) * scale).to(dt)

    T, H, Fd, E, k = a.tokens, a.hidden, a.ffn, a.experts, a.topk
    x = rand(T, H)
    w_router = rand(H, E, scale=H ** -0.5)
    w1 = rand(E, H, Fd, scale=H ** -0.5)  # gate
    w3 = rand(E, H, Fd, scale=H ** -0.5)  # up
    w2 = rand(E, Fd, H, scale=Fd ** -0.5)  # down

    def layer(x):
        logits = x @ w_router
        routing = F.softmax(logits, dim=1, dtype=torch.float)
        routing, selected = torch.topk(routing, k, dim=-1)
        routing /= routing.sum(dim=-1, keepdim=True)
        routing = routing.to(x.dtype)
        final = torch.zeros_like(x)
        mask = F.one_hot(selected, num_classes=E).permute(2, 1, 0)
        for e in range(E):
            idx, top_x = torch.where(mask[e])
            cur = x[top_x]
            h = F.silu(cur @ w1[e]) * (cur @ w3[e])
            out = (h @ w2[e]) * routing[top_x, idx, None]
            final.index_add_(0, top_x, out.to(x.dtype))
        return final

    with torch.inference_mode():
        for _ in range(a.warmup):
            layer(x)
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(a.iters):
            layer(x)
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end) / a.iters

    flops = 2.0 * T * H * E + 2.0 * T * k * 3 * H * Fd
    text = (
        f"torch {torch.__version__} eager MoE layer on {torch.cuda.get_device_name()}: "
        f"tokens={T} hidden={H} ffn={Fd} experts={E} top_k={k} {a.dtype}\n"
        f"torch eager MoE layer: {ms:.3f} ms ({flops / ms / 1e9:.1f} TFLOP/s)\n"
        f"RESULT torch_moe_layer_ms {ms:.6f}\n"
    )
    sys.stdout.write(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
