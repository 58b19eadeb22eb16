#!/usr/bin/env bash
# Regenerates docs/dialect/MoEOps.md from the dialect's TableGen files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
ninja -C "$BUILD_DIR" MoEOpsDocGen >/dev/null
cp "$BUILD_DIR/docs/Dialects/MoEOps.md" "$ROOT/docs/dialect/MoEOps.md"
echo "docs/dialect/MoEOps.md regenerated"
