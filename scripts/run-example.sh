#!/usr/bin/env bash
# The main job on the embedded example: build moec if needed, compile the
# Mixtral-style MoE block of examples/mixtral_block, and summarise the IR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
"$ROOT/scripts/build.sh" >/dev/null
MODEL=${1:-$ROOT/examples/mixtral_block/model.onnx}
OUT=${OUT:-$BUILD_DIR/example.mlir}
echo "== moec $MODEL"
"$BUILD_DIR/bin/moec" "$MODEL" --emit=mlir -o "$OUT"
echo "wrote $OUT ($(wc -l < "$OUT") lines)"
echo "== ops in the imported IR"
grep -oE '^ *(%[^=]+= )?"?[a-z_]+\.[a-z_.]+' "$OUT" | sed -E 's/.*= //; s/^ *//; s/"//' \
  | sort | uniq -c | sort -rn
echo "== function signature"
grep -m1 'func.func @main' "$OUT"
