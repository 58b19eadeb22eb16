#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine that has no
# GoogleTest and no network: copies a GoogleTest source tree (default
# /usr/src/googletest, or $1) into build-carry/googletest. build-carry/ is
# ignored by git (/build* in .gitignore): it is never committed, only
# carried along to the GPU machine (e.g. the device tool's carry list:
# ["build-carry"]), where gpu-check.sh finds it by itself. With it go the
# headers the runtime builds against that the GPU machine lacks: the plan
# schema's generated headers and FlatBuffers' (build-carry/flatbuffers), and
# nlohmann-json's and CLI11's (build-carry/include/{nlohmann,CLI}).
#
# It also compiles the end-to-end plans of gpu-check.sh's CUDA backend
# section (the GPU machine has no LLVM/MLIR, so no moec), with
# `moec ... --target=cuda` (PTX for sm_90 embedded), into build-carry/plans:
#   * every example at ep=1 and ep=4 (fp32);
#   * --precision=bf16 at ep=4 for mixtral_layer (generated kernels),
#     hf_qwen2_moe (a dense shared-expert matmul) and hf_deepseek_v3, and
#     --precision=fp16 at ep=4 for hf_mixtral;
#   * ep=2,tp=2 (TP all-reduce) for hf_qwen2_moe in fp32 and bf16;
#   * the dynamo exports of Mixtral and DeepSeek-V3 (examples/dynamo,
#     batched experts, opset 20) and the 2-layer MixtralForCausalLM,
#     Qwen3MoeForCausalLM and DeepseekV3ForCausalLM (attention:
#     batch_matmul and softmax steps, generated kernels for rotary and
#     norms; DeepSeek's latent attention) and a Mixtral decode step with a
#     KV cache (inputs NAME.npy) at ep=4;
#   * batches smaller than the ranks (examples/dynamo/batch1, batch2:
#     sequence-parallel MoE, all_slice and all_gather steps) on 8 and 4
#     ranks;
#   * build-carry/bench: bench/make_models.py's layer at H=384, F=1344,
#     4096 tokens, compiled with --precision=bf16, for gpu-check's
#     compiled-plan benchmark against PyTorch eager;
#   * test/e2e/make_odd_model.py's model (sizes that are not multiples of a
#     warp or a block, for the generated kernels' thread mapping) at ep=2;
#   * a router left as dense ops (test/Conversion/Inputs/index_steps.py:
#     topk and scatter_elements steps) at ep=1 and ep=2;
# and their onnxruntime references: onnxruntime on the example's original
# model.onnx and input.npy, written to build-carry/plans/EXAMPLE.ref.npz.
# build-carry/plans/manifest.txt lists "PLAN EXAMPLE RANKS TOL" per plan
# (TOL relative to max|ref|: 1e-4 for fp32, 2.5e-2 bf16, 3e-3 fp16, the
# bounds of test/moec/e2e-plans.test and e2e-precision.test).
# moec: $MOEC, default build/bin/moec (scripts/build.sh); without it the
# plans are skipped with a warning.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}

# --- end-to-end plans for the CUDA backend (--target=cuda) ----------------
MOEC=${MOEC:-$ROOT/build/bin/moec}
PLANS=$ROOT/build-carry/plans
EXAMPLES="mixtral_block mixtral_layer hf_mixtral ort_moe hf_qwen2_moe
  hf_qwen3_moe hf_olmoe hf_deepseek_v2 hf_deepseek_v3 hf_switch"
if [ -x "$MOEC" ]; then
  rm -rf "$PLANS"
  mkdir -p "$PLANS"
  # plan NAME EXAMPLE RANKS TOL MOEC-FLAGS...
  plan() {
    local name=$1 ex=$2 ranks=$3 tol=$4
    shift 4
    "$MOEC" "$ROOT/examples/$ex/model.onnx" --target=cuda "$@" \
      -o "$PLANS/$name.moeplan"
    echo "$name $ex $ranks $tol" >>"$PLANS/manifest.txt"
  }
  for ex in $EXAMPLES; do
    plan "$ex-ep1" "$ex" 1 1e-4 --mesh ep=1
    plan "$ex-ep4" "$ex" 4 1e-4 --mesh ep=4
  done
  for ex in mixtral_layer hf_qwen2_moe hf_deepseek_v3; do
    plan "$ex-ep4-bf16" "$ex" 4 2.5e-2 --mesh ep=4 --precision=bf16
  done
  plan hf_mixtral-ep4-fp16 hf_mixtral 4 3e-3 --mesh ep=4 --precision=fp16
  plan hf_qwen2_moe-ep2tp2 hf_qwen2_moe 4 1e-4 --mesh ep=2,tp=2
  # Odd sizes for the generated kernels' blocks and threads (a [1, 350, 70]
  # tensor per rank: 70 x 3 threads, 117 blocks, guarded tails); the model
  # and its onnxruntime output live in build-carry/plans/odd_moe.
  "$PYTHON" "$ROOT/test/e2e/make_odd_model.py" "$PLANS/odd_moe"
  "$MOEC" "$PLANS/odd_moe/model.onnx" --target=cuda --mesh ep=2 \
    -o "$PLANS/odd_moe-ep2.moeplan"
  echo "odd_moe-ep2 odd_moe 2 1e-4" >>"$PLANS/manifest.txt"
  "$PYTHON" -c "import numpy as np, sys; np.savez(sys.argv[2], y=np.load(sys.argv[1]))" \
    "$PLANS/odd_moe/output.npy" "$PLANS/odd_moe.ref.npz"
  plan hf_qwen2_moe-ep2tp2-bf16 hf_qwen2_moe 4 2.5e-2 --mesh ep=2,tp=2 \
    --precision=bf16
  # A router left as dense ops (topk and scatter_elements steps), its input
  # and onnxruntime output in build-carry/plans/index_router.
  mkdir -p "$PLANS/index_router"
  "$PYTHON" "$ROOT/test/Conversion/Inputs/index_steps.py" router \
    "$PLANS/index_router/model.onnx"
  "$PYTHON" - "$PLANS/index_router" "$PLANS/index_router.ref.npz" <<'PY'
import sys
import numpy as np
import onnxruntime as ort
d, ref = sys.argv[1], sys.argv[2]
x = np.random.default_rng(3).standard_normal((8, 16)).astype(np.float32)
np.save(d + "/input.npy", x)
s = ort.InferenceSession(d + "/model.onnx", providers=["CPUExecutionProvider"])
names = [o.name for o in s.get_outputs()]
np.savez(ref, **dict(zip(names, s.run(None, {"x": x}))))
PY
  for n in 1 2; do
    "$MOEC" "$PLANS/index_router/model.onnx" --target=cuda --mesh ep=$n \
      -o "$PLANS/index_router-ep$n.moeplan"
    echo "index_router-ep$n index_router $n 1e-4" >>"$PLANS/manifest.txt"
  done
  DYNAMO="dynamo/mixtral dynamo/deepseek_v3 dynamo/mixtral_causal_lm
    dynamo/qwen3_moe_causal_lm dynamo/deepseek_v3_causal_lm
    dynamo/mixtral_decode_step"
  for ex in $DYNAMO; do
    plan "${ex//\//_}-ep4" "$ex" 4 1e-4 --mesh ep=4
  done
  plan dynamo_deepseek_v3_causal_lm-ep4-bf16 dynamo/deepseek_v3_causal_lm 4 \
    3e-2 --mesh ep=4 --precision=bf16
  # Batches smaller than the ranks: sequence-parallel MoE (all_slice and
  # all_gather steps) on 8 and 4 thread ranks.
  SMALL="dynamo/batch1/mixtral_causal_lm dynamo/batch1/deepseek_v3_causal_lm
    dynamo/batch1/mixtral_decode_step dynamo/batch2/mixtral_causal_lm"
  plan dynamo_batch1_mixtral_causal_lm-ep8 dynamo/batch1/mixtral_causal_lm 8 \
    1e-4 --mesh ep=8
  plan dynamo_batch1_deepseek_v3_causal_lm-ep4 \
    dynamo/batch1/deepseek_v3_causal_lm 4 1e-4 --mesh ep=4
  plan dynamo_batch1_mixtral_decode_step-ep8 dynamo/batch1/mixtral_decode_step \
    8 1e-4 --mesh ep=8
  plan dynamo_batch2_mixtral_causal_lm-dp2ep4 dynamo/batch2/mixtral_causal_lm \
    8 1e-4 --mesh dp=2,ep=4
  # Attention tensor-parallel (Megatron) and folded onto the MoE's ranks
  # (issue 14): all_reduce, all_gather and all_slice over one and over two
  # grid axes.
  plan dynamo_batch1_mixtral_causal_lm-tp4 dynamo/batch1/mixtral_causal_lm 4 \
    1e-4 --mesh tp=4
  plan dynamo_batch1_mixtral_causal_lm-ep4-attn-tp4 \
    dynamo/batch1/mixtral_causal_lm 4 1e-4 --mesh ep=4 --attention-mesh tp=4
  plan dynamo_batch1_deepseek_v3_causal_lm-ep4-attn-tp4 \
    dynamo/batch1/deepseek_v3_causal_lm 4 1e-4 --mesh ep=4 \
    --attention-mesh tp=4
  plan dynamo_batch1_mixtral_decode_step-ep4-attn-tp4 \
    dynamo/batch1/mixtral_decode_step 4 1e-4 --mesh ep=4 --attention-mesh tp=4
  plan dynamo_batch2_mixtral_causal_lm-ep8-attn-dp2tp4 \
    dynamo/batch2/mixtral_causal_lm 8 1e-4 --mesh ep=8 \
    --attention-mesh dp=2,tp=4
  plan dynamo_batch2_mixtral_causal_lm-ep4-attn-dp2tp2 \
    dynamo/batch2/mixtral_causal_lm 4 1e-4 --mesh ep=4 \
    --attention-mesh dp=2,tp=2
  # Megatron sequence parallelism over 4 ranks (reduce_scatter steps; the
  # two folded batch-2 plans above have them over 4 and 2).
  plan dynamo_batch2_mixtral_causal_lm-ep4-attn-tp4-sp \
    dynamo/batch2/mixtral_causal_lm 4 1e-4 --mesh ep=4 --attention-mesh tp=4
  # onnxruntime references.
  "$PYTHON" - "$ROOT/examples" "$PLANS" $EXAMPLES $DYNAMO $SMALL <<'PY'
import os, sys
import numpy as np
import onnxruntime as ort
exdir, out = sys.argv[1], sys.argv[2]
for ex in sys.argv[3:]:
    model = os.path.join(exdir, ex, "model.onnx")
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        f = os.path.join(exdir, ex, i.name + ".npy")
        if not os.path.exists(f):
            f = os.path.join(exdir, ex, "input.npy")
        feeds[i.name] = np.load(f)
    names = [o.name for o in sess.get_outputs()]
    refs = dict(zip(names, sess.run(None, feeds)))
    os.makedirs(os.path.dirname(os.path.join(out, ex)), exist_ok=True)
    np.savez(os.path.join(out, ex + ".ref.npz"), **refs)
PY
  # A plan with a dynamic token count (moec --max-tokens 32, issue 19) on
  # 4 ranks and with a capacity factor, run by gpu-check.sh at 1, 5 and 32
  # tokens: inputs xT.npy and onnxruntime's outputs refT.npz in
  # build-carry/plans/dynamic.
  DYN=$PLANS/dynamic
  mkdir -p "$DYN"
  for cf in 0 1.0; do
    "$MOEC" "$ROOT/examples/mixtral_block/dynamic.onnx" --target=cuda \
      --mesh ep=4 --input-shape hidden_states=1,?,64 --max-tokens 32 \
      --capacity-factor $cf -o "$DYN/mixtral_block-ep4-cf$cf.moeplan"
  done
  # The same block with the input replicated and the rows cut inside the
  # plan (--token-split moe): uneven row blocks per call (all_slice and an
  # all_gather of padded blocks, moert::rowBlockStep), run at 1, 5 and 31.
  "$MOEC" "$ROOT/examples/mixtral_block/dynamic.onnx" --target=cuda \
    --mesh ep=4 --input-shape hidden_states=1,?,64 --max-tokens 32 \
    --token-split moe -o "$DYN/mixtral_block-ep4-rows.moeplan"
  "$PYTHON" - "$ROOT/examples/mixtral_block/dynamic.onnx" "$DYN" <<'PY'
import os, sys
import numpy as np
import onnxruntime as ort
model, out = sys.argv[1], sys.argv[2]
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
names = [o.name for o in sess.get_outputs()]
for t in (1, 5, 31, 32):
    x = np.random.default_rng(t).standard_normal((1, t, 64)).astype(np.float32)
    np.save(os.path.join(out, f"x{t}.npy"), x)
    np.savez(os.path.join(out, f"ref{t}.npz"),
             **dict(zip(names, sess.run(None, {"hidden_states": x}))))
PY
  # The compiled-plan benchmark: a Mixtral-shaped layer (torch export of
  # bench/make_models.py, H=384, F=1344 = 3.5 H as Mixtral, E=8, k=2, 4096
  # tokens) compiled with --precision=bf16 (25 MB), its input, and torch's
  # output for the first 256 tokens (the whole would not fit the carry).
  BENCH=$ROOT/build-carry/bench
  rm -rf "$BENCH"
  mkdir -p "$BENCH"
  TMPM=$(mktemp -d)
  "$PYTHON" "$ROOT/bench/make_models.py" "$TMPM" --hidden 384 --ffn 1344 \
    --experts 8 --topk 2 --tokens 4096 >/dev/null 2>&1
  "$MOEC" "$TMPM/torch_block.onnx" --mesh ep=1 --precision=bf16 \
    --target=cuda -o "$BENCH/layer-bf16.moeplan"
  cp "$TMPM/input.npy" "$BENCH/input.npy"
  "$PYTHON" -c "import numpy as np, sys; np.save(sys.argv[2], np.load(sys.argv[1])[:, :256])" \
    "$TMPM/reference.npy" "$BENCH/reference256.npy"
  rm -rf "$TMPM"
  echo "prepare-gpu-carry: benchmark plan -> $BENCH ($(du -sh "$BENCH" | cut -f1))"
  echo "prepare-gpu-carry: $(wc -l <"$PLANS/manifest.txt") plans and" \
    "onnxruntime references -> $PLANS ($(du -sh "$PLANS" | cut -f1))"
else
  echo "prepare-gpu-carry: warning: no moec at $MOEC (run scripts/build.sh);" \
    "the end-to-end plans of gpu-check.sh are not compiled" >&2
fi

# --- FlatBuffers: the plan schema's generated headers and the library's ---
# headers (header-only for C++), for a GPU machine without flatc or
# libflatbuffers-dev (runtime/CMakeLists.txt looks in build-carry/flatbuffers
# and checks the schema hash).
FB=$ROOT/build-carry/flatbuffers
GEN=${BUILD_DIR:-$ROOT/build}/runtime/include/moert
if [ -f "$GEN/plan_generated.h" ] && [ -f "$GEN/plan.fbs.sha256" ] && [ -d /usr/include/flatbuffers ]; then
  rm -rf "$FB"
  mkdir -p "$FB/gen/moert" "$FB/include"
  cp "$GEN/plan_generated.h" "$GEN/enums_generated.h" "$GEN/plan.fbs.sha256" "$FB/gen/moert/"
  cp -a /usr/include/flatbuffers "$FB/include/"
  echo "prepare-gpu-carry: plan schema headers and FlatBuffers -> $FB ($(du -sh "$FB" | cut -f1))"
else
  echo "prepare-gpu-carry: no generated plan schema in $GEN or no" \
    "/usr/include/flatbuffers (run scripts/build.sh first)" >&2
  exit 1
fi

# --- nlohmann-json and CLI11: header-only, for a GPU machine without -------
# nlohmann-json3-dev or libcli11-dev (runtime/CMakeLists.txt falls back to
# build-carry/include).
INC=$ROOT/build-carry/include
if [ -f /usr/include/nlohmann/json.hpp ] && [ -f /usr/include/CLI/CLI.hpp ]; then
  rm -rf "$INC"
  mkdir -p "$INC"
  cp -a /usr/include/nlohmann /usr/include/CLI "$INC/"
  echo "prepare-gpu-carry: nlohmann-json and CLI11 headers -> $INC ($(du -sh "$INC" | cut -f1))"
else
  echo "prepare-gpu-carry: no /usr/include/nlohmann/json.hpp or" \
    "/usr/include/CLI/CLI.hpp (apt-get install nlohmann-json3-dev libcli11-dev)" >&2
  exit 1
fi

# --- GoogleTest source tree -------------------------------------------------
SRC=${1:-/usr/src/googletest}
DEST=$ROOT/build-carry/googletest
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  echo "prepare-gpu-carry: no GoogleTest source tree at $SRC" >&2
  echo "  (Debian: apt-get install googletest, or pass the path as \$1)" >&2
  exit 1
fi
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
cp -a "$SRC" "$DEST"
echo "prepare-gpu-carry: $SRC -> $DEST ($(du -sh "$DEST" | cut -f1))"
echo "carry build-carry/ to the GPU machine, then run: bash scripts/gpu-check.sh"
# What travels to the GPU machine is at most 64 MiB (carried paths).
total=$(du -sm "$ROOT/build-carry" | cut -f1)
if [ "$total" -gt 64 ]; then
  echo "prepare-gpu-carry: warning: build-carry/ is ${total} MiB, over the" \
    "64 MiB a run carries; carry build-carry/plans and build-carry/bench" \
    "in separate runs, or drop the benchmark (build-carry/bench)" >&2
fi
