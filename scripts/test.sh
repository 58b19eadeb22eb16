#!/usr/bin/env bash
# The test command: installs dependencies, builds, runs the lit suite and the
# GoogleTest unit tests, then the runtime-only build without BLAS (the GPU
# machine's configuration) and its tests, then the runtime under ASan +
# UBSan (scripts/sanitize.sh; SANITIZE=0 skips it), then the fuzz targets
# for 60 s each (scripts/fuzz.sh; MOEC_FUZZ_SECONDS=N for another time, 0
# to skip them locally). Prints the pass/fail counts.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
"$ROOT/scripts/build.sh"
status=0
echo "== lit =="
/usr/lib/llvm-22/bin/lit -sv "$BUILD_DIR/test" || status=1
echo "== unit tests (ctest) =="
ctest --test-dir "$BUILD_DIR" --output-on-failure || status=1
# The runtime alone, as the GPU machine builds it (no LLVM/MLIR; there no
# BLAS either: the CPU kernels' own GEMM), with its unit tests.
echo "== runtime-only build without BLAS (the GPU machine's configuration) =="
RT_DIR=$BUILD_DIR/runtime-only
cmake -G Ninja -S "$ROOT" -B "$RT_DIR" -DMOEC_RUNTIME_ONLY=ON \
  -DMOEC_ENABLE_CUDA=OFF -DMOERT_NO_BLAS=ON -DCMAKE_BUILD_TYPE=Release \
  >/dev/null || status=1
ninja -C "$RT_DIR" >/dev/null || status=1
ctest --test-dir "$RT_DIR" --output-on-failure | tail -3 || status=1
# ASan + UBSan: the runtime's unit tests and a subset of lit with the
# sanitized moe-run; any sanitizer report fails (scripts/sanitize.sh).
# SANITIZE=0 skips it.
if [ "${SANITIZE:-1}" != 0 ]; then
  echo "== sanitizers (ASan + UBSan runtime, unit tests and lit subset) =="
  BUILD_DIR=$BUILD_DIR "$ROOT/scripts/sanitize.sh" || status=1
fi
# The libFuzzer targets (clang, ASan + UBSan, docs/reliability.md): a
# crash, hang, out-of-memory or sanitizer report fails the run.
if [ "${MOEC_FUZZ_SECONDS:-60}" != 0 ]; then
  echo "== fuzz targets (${MOEC_FUZZ_SECONDS:-60} s each) =="
  BUILD_DIR=$BUILD_DIR FUZZ_BUILD_DIR=$BUILD_DIR/fuzz \
    "$ROOT/scripts/fuzz.sh" "${MOEC_FUZZ_SECONDS:-60}" || status=1
fi
exit $status
