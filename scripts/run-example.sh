#!/usr/bin/env bash
# The main job on the embedded example: build moec if needed, compile the
# Mixtral-style MoE block of examples/mixtral_block (import, raise the expert
# loop into moe.route + moe.experts), report its MoE layer, summarise the IR,
# and check the compiled IR against torch's reference output with moe-eval.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
"$ROOT/scripts/build.sh" >/dev/null
MODEL=${1:-$ROOT/examples/mixtral_block/model.onnx}
OUT=${OUT:-$BUILD_DIR/example.mlir}
echo "== moec $MODEL"
"$BUILD_DIR/bin/moec" "$MODEL" --emit=mlir -o "$OUT"
echo "wrote $OUT ($(wc -l < "$OUT") lines)"
echo "== ops in the compiled IR"
grep -oE '^ *(%[^=]+= )?"?[a-z_]+\.[a-z_.]+' "$OUT" | sed -E 's/.*= //; s/^ *//; s/"//' \
  | sort | uniq -c | sort -rn
echo "== function signature"
grep -m1 'func.func @main' "$OUT"
echo "== MoE layers"
"$BUILD_DIR/bin/moec" "$MODEL" --report
if [ -z "${1:-}" ]; then
  echo "== compiled IR vs torch reference"
  EX="$ROOT/examples/mixtral_block"
  python3 "$ROOT/test/e2e/check_onnx.py" --moec "$BUILD_DIR/bin/moec" \
    --moe-eval "$BUILD_DIR/bin/moe-eval" "$MODEL" \
    --input hidden_states="$EX/input.npy" --reference output="$EX/output.npy" \
    --reference router_logits="$EX/router_logits.npy"
fi
