#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer over the runtime (issue 17):
# builds the runtime alone (no LLVM/MLIR, as the GPU machine does) with
# -fsanitize=address,undefined, runs its unit tests, then a subset of lit
# with moe-run and moert-make-test-plan taken from that build and every
# plan compiled by the normal moec of $BUILD_DIR: the moe-run suite (errors,
# hostile plans and inputs, hung ranks, weight checksums) and committed
# examples end to end on several ranks, as threads and through mpirun,
# compared with the references the normal tests use. Any sanitizer report
# fails it (a report exits 86, and each is also logged under
# $SAN_DIR/reports, which must stay empty).
#
#   BUILD_DIR=build scripts/sanitize.sh     # after scripts/build.sh
#
# scripts/test.sh runs it (CI: .ci/run). SAN_DIR (default
# $BUILD_DIR/sanitize) holds the build; JOBS limits ninja. LSan's
# suppressions (scripts/sanitize.supp) cover leaks inside MPI only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
SAN_DIR=${SAN_DIR:-$BUILD_DIR/sanitize}
LIT=${LIT:-/usr/lib/llvm-22/bin/lit}
if [ ! -x "$BUILD_DIR/bin/moec" ]; then
  echo "sanitize: $BUILD_DIR/bin/moec not found: run scripts/build.sh first" >&2
  exit 1
fi
start=$(date +%s)
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
FLAGS="$FLAGS -fno-omit-frame-pointer -O1 -g"
# Clang: its UBSan honours log_path (GCC's prints to stderr only, which a
# test that expects a failure may swallow) and keeps checks that GCC's
# optimiser folds away (a null memcpy of 0 bytes).
CLANG_DIR=${CLANG_DIR:-/usr/lib/llvm-22/bin}
cmake -G Ninja -S "$ROOT" -B "$SAN_DIR" -DMOEC_RUNTIME_ONLY=ON \
  -DMOEC_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_COMPILER="$CLANG_DIR/clang" -DCMAKE_CXX_COMPILER="$CLANG_DIR/clang++" \
  -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_CXX_FLAGS="$FLAGS" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
ninja -C "$SAN_DIR" -j"${JOBS:-$(nproc)}" >/dev/null
echo "sanitize: built in $(($(date +%s) - start)) s"

REPORTS=$SAN_DIR/reports
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
# Full stacks for every allocation (fast_unwind_on_malloc=0: Open MPI's
# libraries have no frame pointers) and Open MPI's plugins kept loaded to
# the end, so that a leak inside MPI is seen as such and suppressed by
# library (scripts/sanitize.supp) while any other leak is reported.
export ASAN_OPTIONS="log_path=$REPORTS/asan:exitcode=86:detect_leaks=1:fast_unwind_on_malloc=0:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="log_path=$REPORTS/ubsan:exitcode=86:print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$ROOT/scripts/sanitize.supp:print_suppressions=0"
export OMPI_MCA_mca_base_component_disable_dlclose=1
status=0
# The job can fail: a heap overflow and a null memcpy built the same way
# must each exit 86 and leave a report.
selfcheck=$SAN_DIR/selfcheck
printf '%s\n' '#include <cstdlib>' '#include <cstring>' \
  'int main(int c, char **v) { char *p = (char *)malloc(4);' \
  '  if (c > 1) memcpy(c > 2 ? nullptr : p, v[0], 0); else p[c + 3] = 1;' \
  '  free(p); return 0; }' >"$selfcheck.cpp"
"$CLANG_DIR/clang++" $FLAGS "$selfcheck.cpp" -o "$selfcheck"
for args in "" "x y"; do
  # shellcheck disable=SC2086
  if "$selfcheck" $args 2>/dev/null || [ $? != 86 ] ||
    [ -z "$(ls -A "$REPORTS")" ]; then
    echo "sanitize: a planted error ('$args') gave no report" >&2
    exit 1
  fi
  rm -f "$REPORTS"/*
done
echo "== sanitize: runtime unit tests (ctest) =="
if ctest --test-dir "$SAN_DIR" --output-on-failure >"$SAN_DIR/ctest.log" 2>&1
then
  tail -3 "$SAN_DIR/ctest.log"
else
  status=1
  grep -B2 -A40 "\*\*\*Failed\|runtime error\|Sanitizer" "$SAN_DIR/ctest.log" |
    head -200
  tail -15 "$SAN_DIR/ctest.log"
fi
echo "== sanitize: lit with the sanitized moe-run =="
# The moe-run suite, then examples end to end (threads and mpirun).
tests=(moe-run moec/weights.test moec/causal-lm.test moec/decode-step.test
  moec/tensor-parallel.test moec/folding.test moec/e2e-precision.test
  moec/hand-routers.test)
"$LIT" -sv -D moert_tools_dir="$SAN_DIR/bin" \
  "${tests[@]/#/$BUILD_DIR/test/}" || status=1
if [ -n "$(ls -A "$REPORTS")" ]; then
  echo "sanitize: sanitizer reports:"
  for f in "$REPORTS"/*; do
    echo "--- $f"
    head -60 "$f"
  done
  status=1
fi
echo "sanitize: $( [ $status = 0 ] && echo clean || echo FAILED ) in" \
  "$(($(date +%s) - start)) s"
exit $status
