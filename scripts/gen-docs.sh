#!/usr/bin/env bash
# Regenerates docs/dialect/MoEOps.md from the dialect's TableGen files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
ninja -C "$BUILD_DIR" MoEOpsDocGen >/dev/null
cp "$BUILD_DIR/docs/Dialects/MoEOps.md" "$ROOT/docs/dialect/MoEOps.md"
echo "docs/dialect/MoEOps.md regenerated"
# And the pass reference from Passes.td.
ninja -C "$BUILD_DIR" MoECPassesDocGen >/dev/null
{
  echo "# moec passes"
  echo
  echo "Generated from include/moec/Transforms/Passes.td by scripts/gen-docs.sh."
  echo
  cat "$BUILD_DIR/docs/MoECPasses.md"
} > "$ROOT/docs/passes.md"
echo "docs/passes.md regenerated"
