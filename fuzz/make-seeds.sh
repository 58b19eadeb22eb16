#!/usr/bin/env bash
# Seed corpora for the fuzz targets, made from the committed examples and
# tests (nothing large is committed for them):
#   npy          every .npy under examples/ and test/ of at most 16 KiB
#   onnx-binary  examples/**/*.onnx of at most 128 KiB, test/**/*.onnx of at
#                most 64 KiB, and every test/**/*.onnxtxt in binary form
#                (python3 -m onnx's parser)
#   onnx-text    every test/**/*.onnxtxt
#   plan         plans that moec (MOEC, default $BUILD_DIR/bin/moec) compiles
#                from a few small test/Import models (one rank, and ep=2) and
#                test/Conversion's index-step router (topk, scatter_elements),
#                and the hand-built plans of moert-make-test-plan (MAKE_PLAN,
#                default next to moec: moe on 1, 2 and 4 ranks, moe-ids, tp,
#                reduce-scatter), which have no generated kernels: the plan
#                target runs those
# usage: fuzz/make-seeds.sh OUT_DIR [TARGET...]; writes OUT_DIR/TARGET/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:?usage: fuzz/make-seeds.sh OUT_DIR [TARGET...]}
shift
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(npy onnx-binary onnx-text plan)
MOEC=${MOEC:-${BUILD_DIR:-$ROOT/build}/bin/moec}
MAKE_PLAN=${MAKE_PLAN:-$(dirname "$MOEC")/moert-make-test-plan}
cd "$ROOT"

# Copies files to DIR under their content hash (libFuzzer's own naming).
put() {
  local dir=$1
  shift
  mkdir -p "$dir"
  for f in "$@"; do
    cp "$f" "$dir/$(sha1sum "$f" | cut -c1-40)"
  done
}

for t in "${TARGETS[@]}"; do
  d=$OUT/$t
  rm -rf "$d"
  mkdir -p "$d"
  case $t in
  npy)
    mapfile -t fs < <(find examples test -name '*.npy' -size -16k | sort)
    put "$d" "${fs[@]}"
    ;;
  onnx-text)
    mapfile -t fs < <(find test -name '*.onnxtxt' | sort)
    put "$d" "${fs[@]}"
    ;;
  onnx-binary)
    mapfile -t fs < <( (find examples -name '*.onnx' -size -128k
      find test -name '*.onnx' -size -64k) | sort)
    put "$d" "${fs[@]}"
    python3 - "$d" <<'PY'
import glob, hashlib, os, sys
import onnx.parser
out = sys.argv[1]
for f in sorted(glob.glob("test/**/*.onnxtxt", recursive=True)):
    try:
        b = onnx.parser.parse_model(open(f).read()).SerializeToString()
    except Exception:
        continue  # a test of a bad model: its text form is a seed already
    with open(os.path.join(out, hashlib.sha1(b).hexdigest()), "wb") as o:
        o.write(b)
PY
    ;;
  plan)
    if [ ! -x "$MOEC" ]; then
      echo "make-seeds: $MOEC not built: no plan seeds" >&2
      continue
    fi
    tmp=$(mktemp -d)
    for m in matmul gemm layernorm reduce ms-moe elementwise; do
      "$MOEC" "test/Import/$m.onnxtxt" -o "$tmp/$m.moeplan" 2>/dev/null ||
        echo "make-seeds: moec could not compile test/Import/$m.onnxtxt" >&2
    done
    "$MOEC" test/Import/ms-moe.onnxtxt --mesh ep=2 -o "$tmp/ms-moe-ep2.moeplan" \
      2>/dev/null || echo "make-seeds: moec ms-moe --mesh ep=2 failed" >&2
    # Packed weights: a dense dequantize step and QMoE's after a dispatch.
    "$MOEC" test/Import/quantized.onnxtxt --mesh ep=2 \
      -o "$tmp/quantized-ep2.moeplan" 2>/dev/null ||
      echo "make-seeds: moec quantized --mesh ep=2 failed" >&2
    python3 test/Conversion/Inputs/index_steps.py router "$tmp/router.onnx" &&
      "$MOEC" "$tmp/router.onnx" -o "$tmp/router.moeplan" 2>/dev/null ||
      echo "make-seeds: moec could not compile the index-step router" >&2
    rm -f "$tmp/router.onnx"
    if [ -x "$MAKE_PLAN" ]; then
      i=0
      for args in "moe -n 1" "moe -n 2" "moe -n 4 --placement round-robin" \
        "moe -n 2 --placement replicated --capacity 2" "moe-ids -n 2" \
        "moe -n 2 --packed-gate" "moe -n 4 --max-tokens 32 --at-tokens 5" \
        "tp -n 2" "reduce-scatter -n 2"; do
        i=$((i + 1))
        mkdir -p "$tmp/t$i"
        # shellcheck disable=SC2086 # the arguments split on purpose
        "$MAKE_PLAN" $args -o "$tmp/t$i" >/dev/null &&
          mv "$tmp/t$i/plan.moeplan" "$tmp/test-plan-$i.moeplan" ||
          echo "make-seeds: moert-make-test-plan $args failed" >&2
        rm -rf "$tmp/t$i"
      done
    else
      echo "make-seeds: $MAKE_PLAN not built: no hand-built plan seeds" >&2
    fi
    shopt -s nullglob
    put "$d" "$tmp"/*.moeplan
    rm -rf "$tmp"
    ;;
  *)
    echo "make-seeds: unknown target '$t'" >&2
    exit 1
    ;;
  esac
  echo "make-seeds: $t: $(ls "$d" | wc -l) seeds, $(du -sk "$d" | cut -f1) KiB"
done
