#!/usr/bin/env bash
# Configures and builds moec into ${BUILD_DIR:-build} (after installing the
# dependencies). Incremental: a second run rebuilds only what changed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
"$ROOT/scripts/install-deps.sh"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -G Ninja -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
    -DPython3_EXECUTABLE="$(command -v python3)"
fi
ninja -C "$BUILD_DIR" -j"${JOBS:-$(nproc)}"
