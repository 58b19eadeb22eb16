#!/usr/bin/env bash
# The main job on the embedded example (examples/mixtral_block, a Mixtral-style
# MoE block exported by torch.onnx): install and build if needed, compile it
# for 4 expert-parallel ranks (--mesh ep=4: 8 experts, 2 per rank), print the
# report (MoE layer, placement, per-rank memory, bytes each all-to-all moves),
# run the plan on 4 CPU ranks with moe-run (MPI), print moe-run's per-rank
# report, and compare the output with onnxruntime on the original ONNX file.
#
#   scripts/run-example.sh [MODEL.onnx [MESH]]     # default: the example, ep=4
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
"$ROOT/scripts/build.sh" >/dev/null
MODEL=${1:-$ROOT/examples/mixtral_block/model.onnx}
MESH=${2:-ep=4}
WORK=${WORK:-$BUILD_DIR/example}
mkdir -p "$WORK"
BIN="$BUILD_DIR/bin"
RANKS=$(python3 -c "import math,sys; print(math.prod(int(kv.split('=')[1]) for kv in sys.argv[1].split(',')))" "$MESH")

echo "== moec $MODEL --mesh $MESH --report"
"$BIN/moec" "$MODEL" --mesh "$MESH" --report
echo
echo "== moec $MODEL --mesh $MESH -o $WORK/model.moeplan"
"$BIN/moec" "$MODEL" --mesh "$MESH" -o "$WORK/model.moeplan"
"$BIN/moe-run" --describe "$WORK/model.moeplan" | sed -n '1,12p'

# The model's inputs: the example's input.npy when there is one, else
# seeded random data (written by the comparison script below).
INPUTS=()
DIR=$(dirname "$MODEL")
for name in $(python3 -c "import onnx,sys; m=onnx.load(sys.argv[1]); inits={i.name for i in m.graph.initializer}; print(' '.join(i.name for i in m.graph.input if i.name not in inits))" "$MODEL"); do
  if [ -f "$DIR/input.npy" ]; then
    INPUTS+=(--input "$name=$DIR/input.npy")
  fi
done

echo
echo "== moe-run -n $RANKS (CPU ranks over MPI)"
"$BIN/moe-run" -n "$RANKS" "$WORK/model.moeplan" "${INPUTS[@]}" -o "$WORK/output.npz"

echo
echo "== compiled plan on $RANKS ranks vs onnxruntime on the original ONNX"
python3 "$ROOT/test/e2e/check_plan.py" "$MODEL" --mesh "$MESH" "${INPUTS[@]}" \
  --moec "$BIN/moec" --moe-run "$BIN/moe-run" --work "$WORK/check"
