#!/usr/bin/env bash
# The test command: installs dependencies, builds, runs the lit suite and the
# GoogleTest unit tests. Prints lit's and ctest's pass/fail counts.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
"$ROOT/scripts/build.sh"
status=0
echo "== lit =="
/usr/lib/llvm-22/bin/lit -sv "$BUILD_DIR/test" || status=1
echo "== unit tests (ctest) =="
ctest --test-dir "$BUILD_DIR" --output-on-failure || status=1
exit $status
