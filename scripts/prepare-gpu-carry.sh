#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine that has no
# GoogleTest and no network: copies a GoogleTest source tree (default
# /usr/src/googletest, or $1) into build-carry/googletest. build-carry/ is
# ignored by git (/build* in .gitignore): it is never committed, only
# carried along to the GPU machine (e.g. the device tool's carry list:
# ["build-carry"]), where gpu-check.sh finds it by itself.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
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
