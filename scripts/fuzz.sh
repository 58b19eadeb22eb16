#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang with ASan + UBSan) and runs
# each for SECONDS (default 60), one after the other; prints a table of
# targets, execs and findings, and exits 1 when any target found a crash,
# a hang, an out-of-memory or a sanitizer report (docs/reliability.md,
# "Fuzzing").
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   TARGET: npy, plan, onnx-binary, onnx-text, or unit: the compiler's unit
#   tests (test/unit, moec-unit-tests) built in the same instrumented build
#   and run once, not fuzzed (default: all five)
# environment:
#   FUZZ_BUILD_DIR   the instrumented build (default build-fuzz)
#   FUZZ_WORK        corpora, artifacts and logs (default $FUZZ_BUILD_DIR/fuzz)
#   BUILD_DIR        the regular build whose moec makes the plan seeds
#   JOBS             build parallelism (default: all cores)
#   FUZZ_KEEP_GOING  1: do not stop at a finding (libFuzzer's fork mode with
#                    -ignore_crashes/-ignore_ooms/-ignore_timeouts), for long
#                    runs that collect every finding
# A finding leaves its input in $FUZZ_WORK/artifacts/TARGET/; replay it with
# the target binary ($FUZZ_BUILD_DIR/bin/...-fuzzer FILE) and, once fixed,
# keep it in test/fuzz/regressions/TARGET/ (test/fuzz/regressions.test).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=60
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
  SECONDS_EACH=$1
  shift
fi
ALL=(npy plan onnx-binary onnx-text unit)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")
FUZZ_BUILD_DIR=${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
FUZZ_WORK=${FUZZ_WORK:-$FUZZ_BUILD_DIR/fuzz}
CLANG_VERSION=22

binary() {
  case $1 in
  npy) echo moert-npy-fuzzer ;;
  plan) echo moert-plan-fuzzer ;;
  onnx-binary) echo moec-onnx-binary-fuzzer ;;
  onnx-text) echo moec-onnx-text-fuzzer ;;
  unit) echo moec-unit-tests ;;
  *) return 1 ;;
  esac
}
bins=()
for t in "${TARGETS[@]}"; do
  b=$(binary "$t") || {
    echo "fuzz.sh: unknown target '$t' (known: ${ALL[*]})" >&2
    exit 2
  }
  bins+=("$b")
done

# clang and libFuzzer from Debian (the other dependencies: install-deps.sh).
"$ROOT/scripts/install-deps.sh" >/dev/null
need=()
command -v clang++-$CLANG_VERSION >/dev/null || need+=(clang-$CLANG_VERSION)
ls /usr/lib/llvm-$CLANG_VERSION/lib/clang/*/lib/*/libclang_rt.fuzzer*.a \
  >/dev/null 2>&1 || need+=(libclang-rt-$CLANG_VERSION-dev)
if ((${#need[@]})); then
  echo "fuzz.sh: apt-get install ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" \
    >/dev/null
fi

# -O1 -g without NDEBUG: LLVM's and moec's assertions are checks too.
if [ ! -f "$FUZZ_BUILD_DIR/build.ninja" ]; then
  cmake -G Ninja -S "$ROOT" -B "$FUZZ_BUILD_DIR" -DMOEC_FUZZ=ON \
    -DCMAKE_C_COMPILER=clang-$CLANG_VERSION \
    -DCMAKE_CXX_COMPILER=clang++-$CLANG_VERSION -DMOEC_ENABLE_CUDA=OFF \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g" \
    -DCMAKE_C_FLAGS_RELEASE="-O1 -g" \
    -DPython3_EXECUTABLE="$(command -v python3)" >/dev/null
fi
echo "fuzz.sh: building ${bins[*]} in $FUZZ_BUILD_DIR"
ninja -C "$FUZZ_BUILD_DIR" -j"${JOBS:-$(nproc)}" "${bins[@]}" >/dev/null

# Seeds from the examples and tests (once per work directory), plus every
# regression input.
for t in "${TARGETS[@]}"; do
  [ "$t" = unit ] && continue
  [ -d "$FUZZ_WORK/seeds/$t" ] ||
    "$ROOT/fuzz/make-seeds.sh" "$FUZZ_WORK/seeds" "$t"
done

status=0
rows=()
for i in "${!TARGETS[@]}"; do
  t=${TARGETS[$i]}
  bin=$FUZZ_BUILD_DIR/bin/${bins[$i]}
  if [ "$t" = unit ]; then
    # The compiler's unit tests under ASan + UBSan (LLVM's assertions on).
    # allow_user_poisoning=0: LLVM's allocators poison their slabs from the
    # instrumented inline code, then the uninstrumented libMLIR writes there
    # (a false use-after-poison parsing MLIR text).
    log=$FUZZ_WORK/logs/unit-$(date +%Y%m%d-%H%M%S).log
    mkdir -p "$(dirname "$log")"
    echo "fuzz.sh: unit: moec-unit-tests, log $log"
    rc=0
    ASAN_OPTIONS=allow_user_poisoning=0:detect_leaks=1 "$bin" >"$log" 2>&1 ||
      rc=$?
    passed=$( (grep -o '^\[  PASSED  \] [0-9]*' "$log" || true) |
      awk '{print $4}')
    if [ "$rc" != 0 ]; then
      status=1
      echo "fuzz.sh: unit: FAILED (exit $rc)" >&2
      grep -m5 -E 'ERROR: |runtime error|FAILED|Assertion' "$log" >&2 ||
        tail -20 "$log" >&2 || true
    fi
    rows+=("$(printf '%-12s %9s %12s %9s' unit tests "${passed:-0} passed" \
      "$([ "$rc" = 0 ] && echo 0 || echo 1)")")
    continue
  fi
  corpus=$FUZZ_WORK/corpus/$t
  artifacts=$FUZZ_WORK/artifacts/$t
  log=$FUZZ_WORK/logs/$t-$(date +%Y%m%d-%H%M%S).log
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  dirs=("$corpus" "$FUZZ_WORK/seeds/$t")
  [ -d "$ROOT/test/fuzz/regressions/$t" ] &&
    dirs+=("$ROOT/test/fuzz/regressions/$t")
  opts=(-max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=3072
    -artifact_prefix="$artifacts/" -print_final_stats=1)
  [ -f "$ROOT/fuzz/$t.dict" ] && opts+=(-dict="$ROOT/fuzz/$t.dict")
  [ "${FUZZ_KEEP_GOING:-0}" = 1 ] &&
    opts+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
  before=$(ls "$artifacts" | wc -l)
  echo "fuzz.sh: $t: ${SECONDS_EACH}s, log $log"
  rc=0
  # UBSan prints no stack unless asked: a finding's log must say where.
  # allow_user_poisoning=0, as for the unit tests above: a BumpPtrAllocator
  # slab that instrumented inline code (the moe dialect's attribute storage)
  # poisoned is then written by the uninstrumented libMLIR (StringAttr::get),
  # a false use-after-poison (CI, test/Import/quantized.onnxtxt's seed).
  (cd "$FUZZ_WORK" &&
    UBSAN_OPTIONS=print_stacktrace=1:${UBSAN_OPTIONS:-} \
      ASAN_OPTIONS=allow_user_poisoning=0:${ASAN_OPTIONS:-} \
      "$bin" "${opts[@]}" "${dirs[@]}") >"$log" 2>&1 || rc=$?
  found=$(($(ls "$artifacts" | wc -l) - before))
  execs=$( (grep -o 'stat::number_of_executed_units: [0-9]*' "$log" || true) |
    awk '{s += $2} END {print s + 0}')
  if [ "$execs" = 0 ]; then # fork mode: the last status line's count
    execs=$( (grep -o '^#[0-9]*' "$log" || true) | tail -1 | tr -d '#')
  fi
  if [ "$rc" != 0 ] || [ "$found" != 0 ]; then
    status=1
    echo "fuzz.sh: $t: FINDING (exit $rc); new in $artifacts:" >&2
    ls -t "$artifacts" | head -n "$((found > 0 ? found : 1))" >&2
    # The whole first report (its stack traces too), so that a CI log
    # alone says where; and the input, which CI does not keep.
    awk '/ERROR: |runtime error|terminate called|Assertion/ {p = 1}
         p && n++ < 60' "$log" >&2
    [ -s "$log" ] && ! grep -qE 'ERROR: |runtime error|terminate|Assertion' \
      "$log" && tail -20 "$log" >&2
    newest=$(ls -t "$artifacts" | head -1)
    if [ -n "$newest" ]; then
      # gzip first: plans are mostly zero padding. Decode with
      # base64 -d | gunzip. Inputs over 1 MiB are cut (the log stays short).
      echo "fuzz.sh: $t: the input ($newest), gzip then base64" \
        "(first MiB):" >&2
      head -c 1048576 "$artifacts/$newest" | gzip -9 | base64 >&2
    fi
  fi
  rows+=("$(printf '%-12s %8ss %12s %9s' "$t" "$SECONDS_EACH" \
    "${execs:-0}" "$found")")
done
printf '%-12s %9s %12s %9s\n' target time execs findings
printf '%s\n' "${rows[@]}"
exit $status
