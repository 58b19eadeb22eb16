#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine that has no
# GoogleTest and no network: copies a GoogleTest source tree (default
# /usr/src/googletest, or $1) into build-carry/googletest. build-carry/ is
# ignored by git (/build* in .gitignore): it is never committed, only
# carried along to the GPU machine (e.g. the device tool's carry list:
# ["build-carry"]), where gpu-check.sh finds it by itself.
#
# It also compiles the end-to-end plans of gpu-check.sh's CUDA backend
# section (the GPU machine has no LLVM/MLIR, so no moec): examples/
# mixtral_layer and examples/mixtral_block at ep=1 and ep=4 with
# `moec ... --target=cuda` (PTX for sm_90 embedded) into
# build-carry/plans/NAME-epN.moeplan. moec: $MOEC, default build/bin/moec
# (scripts/build.sh); without it the plans are skipped with a warning.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# --- end-to-end plans for the CUDA backend (--target=cuda) ----------------
MOEC=${MOEC:-$ROOT/build/bin/moec}
PLANS=$ROOT/build-carry/plans
if [ -x "$MOEC" ]; then
  rm -rf "$PLANS"
  mkdir -p "$PLANS"
  for ex in mixtral_layer mixtral_block; do
    for ep in 1 4; do
      "$MOEC" "$ROOT/examples/$ex/model.onnx" --mesh "ep=$ep" --target=cuda \
        -o "$PLANS/$ex-ep$ep.moeplan"
    done
  done
  echo "prepare-gpu-carry: plans -> $PLANS: $(cd "$PLANS" && echo *.moeplan)"
else
  echo "prepare-gpu-carry: warning: no moec at $MOEC (run scripts/build.sh);" \
    "the end-to-end plans of gpu-check.sh are not compiled" >&2
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
