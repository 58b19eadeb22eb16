#!/usr/bin/env bash
# One command for a GPU machine (CUDA 13, cmake, PyTorch; no LLVM/MLIR, no
# network needed): builds the runtime's CUDA parts, runs the GPU unit tests,
# the GPU benchmark and its PyTorch peer, and writes everything to one
# results file. Under 8 minutes on one H200.
#
#   bash scripts/gpu-check.sh [RESULTS_FILE]      default: $OUT/gpu-check.txt
#                                                 if $OUT is set, else
#                                                 build-gpu/gpu-check.txt
#   bash scripts/gpu-check.sh --build-only [FILE] configure + build only (no
#                                                 GPU needed; for CI/dry runs)
#   E2E_DEVICE=cpu BUILD_DIR=build bash scripts/gpu-check.sh --e2e-only [FILE]
#                                                 only the end-to-end section,
#                                                 here on CPU ranks (a dry run
#                                                 of the carried plans)
#
# Environment: BUILD_DIR (default build-gpu), JOBS (default nproc),
# MOEC_GTEST_SOURCE_DIR (a GoogleTest source tree when the machine has no
# installed GoogleTest; otherwise build-carry/googletest, made by
# scripts/prepare-gpu-carry.sh, third_party_build/googletest and
# /usr/src/googletest are tried; it is built and installed into the build
# dir), FORCE_GTEST_FROM_SOURCE=1 (use such a tree even where GoogleTest is
# installed), PYTHON (default python3),
# BENCH_ARGS (extra arguments for moert-gpu-bench and torch_moe_layer.py),
# CMAKE_ARGS (extra configure arguments).
# Exit status: 0 when every step passed, 1 when one failed, 2 when there is
# no GPU (nothing built).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_ONLY=0
E2E_ONLY=0
if [ "${1:-}" = "--build-only" ]; then
  BUILD_ONLY=1
  shift
elif [ "${1:-}" = "--e2e-only" ]; then
  E2E_ONLY=1
  shift
fi
# The device of the end-to-end runs (cpu: a dry run of that section on a
# machine without a GPU, with --e2e-only and BUILD_DIR=build).
E2E_DEVICE=${E2E_DEVICE:-cuda}
BUILD_DIR=${BUILD_DIR:-$ROOT/build-gpu}
if [ -n "${1:-}" ]; then
  RESULTS=$1
elif [ -n "${OUT:-}" ]; then
  RESULTS=$OUT/gpu-check.txt
else
  RESULTS=$BUILD_DIR/gpu-check.txt
fi
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
PYTHON=${PYTHON:-python3}
BENCH_ARGS=${BENCH_ARGS:-}
mkdir -p "$(dirname "$RESULTS")"
RESULTS=$(cd "$(dirname "$RESULTS")" && pwd)/$(basename "$RESULTS")
: >"$RESULTS"
START=$(date +%s)
FAILED=()
SUMMARY=()

log() { echo "$*" | tee -a "$RESULTS"; }
section() { log ""; log "=== $* ($(($(date +%s) - START)) s) ==="; }
# step NAME TIMEOUT CMD...: runs CMD with a time limit, output to the
# results file and the terminal; records PASS/FAIL.
step() {
  local name=$1 limit=$2
  shift 2
  section "$name"
  log "\$ $*"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$RESULTS"
  rc=${PIPESTATUS[0]}
  local dt=$(($(date +%s) - t0))
  if [ "$rc" -eq 0 ]; then
    SUMMARY+=("PASS  $name (${dt} s)")
  else
    [ "$rc" -eq 124 ] && log "TIMEOUT after ${limit} s"
    SUMMARY+=("FAIL  $name (exit $rc, ${dt} s)")
    FAILED+=("$name")
  fi
  return "$rc"
}
finish() {
  section "summary"
  for s in "${SUMMARY[@]}"; do log "$s"; done
  if [ "${#FAILED[@]}" -eq 0 ]; then
    log "gpu-check: ALL PASSED in $(($(date +%s) - START)) s; results in $RESULTS"
    exit 0
  fi
  log "gpu-check: FAILED: ${FAILED[*]}; results in $RESULTS"
  exit 1
}

section "gpu-check on $(hostname) at $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
log "source: $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git'), $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l | tr -d ' ') modified files)"
log "build dir: $BUILD_DIR; results: $RESULTS"
for tool in cmake nvcc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "gpu-check: $tool not found on PATH"
    exit 2
  fi
done
log "$(cmake --version | head -1); $(nvcc --version | tail -1)"

# --- the device ------------------------------------------------------------
if [ "$E2E_ONLY" -eq 0 ]; then
section "device check"
if [ "$BUILD_ONLY" -eq 0 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    log "gpu-check: no GPU: nvidia-smi is not installed, so there is no NVIDIA driver here."
    log "gpu-check: stopping before the build (use --build-only to only build)."
    exit 2
  fi
  if ! nvidia-smi -L >/dev/null 2>&1 || [ -z "$(nvidia-smi -L 2>/dev/null)" ]; then
    log "gpu-check: no GPU: 'nvidia-smi -L' lists no device:"
    nvidia-smi -L 2>&1 | tee -a "$RESULTS"
    log "gpu-check: stopping before the build (use --build-only to only build)."
    exit 2
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | tee -a "$RESULTS"
else
  log "skipped (--build-only)"
fi

# --- configure and build ---------------------------------------------------
# GoogleTest: the installed one, else a source tree (MOEC_GTEST_SOURCE_DIR,
# build-carry/googletest from scripts/prepare-gpu-carry.sh,
# third_party_build/googletest, /usr/src/googletest) built and installed into
# the build dir, where find_package(GTest) finds it through
# CMAKE_PREFIX_PATH. (Not -DMOEC_GTEST_SOURCE_DIR: with GoogleTest >= 1.11
# the top-level CMakeLists' ALIAS targets collide with googletest's own.)
GTEST_ARGS=()
have_installed_gtest() {
  [ "${FORCE_GTEST_FROM_SOURCE:-0}" = 1 ] && return 1
  compgen -G "/usr/lib*/cmake/GTest/GTestConfig.cmake" >/dev/null ||
    compgen -G "/usr/lib/*/cmake/GTest/GTestConfig.cmake" >/dev/null ||
    compgen -G "/usr/local/lib*/cmake/GTest/GTestConfig.cmake" >/dev/null ||
    compgen -G "/usr/lib/*/libgtest.a" >/dev/null ||
    compgen -G "/usr/lib*/libgtest.*" >/dev/null ||
    compgen -G "/usr/local/lib*/libgtest.*" >/dev/null
}
if have_installed_gtest; then
  log "GoogleTest: installed on this machine"
else
  GTEST_SRC=${MOEC_GTEST_SOURCE_DIR:-}
  if [ -z "$GTEST_SRC" ]; then
    for d in "$ROOT/build-carry/googletest" "$ROOT/third_party_build/googletest" /usr/src/googletest; do
      if [ -f "$d/CMakeLists.txt" ]; then GTEST_SRC=$d; break; fi
    done
  fi
  if [ -n "$GTEST_SRC" ]; then
    GTEST_PREFIX=$BUILD_DIR/_googletest/install
    if [ ! -f "$GTEST_PREFIX/.done" ]; then
      step "GoogleTest from $GTEST_SRC" 180 bash -c "cmake -S '$GTEST_SRC' -B '$BUILD_DIR/_googletest/build' -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF -DCMAKE_INSTALL_PREFIX='$GTEST_PREFIX' >/dev/null && cmake --build '$BUILD_DIR/_googletest/build' -j '$JOBS' --target install >/dev/null && touch '$GTEST_PREFIX/.done'"
    fi
    [ -f "$GTEST_PREFIX/.done" ] && GTEST_ARGS=(-DCMAKE_PREFIX_PATH="$GTEST_PREFIX" -DGTest_ROOT="$GTEST_PREFIX")
  else
    log "GoogleTest: none installed and no source tree found"
  fi
fi
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
if [ -f "$BUILD_DIR/CMakeCache.txt" ]; then
  GEN=() # keep the generator of the existing build dir
fi
# shellcheck disable=SC2086
step "configure (runtime only)" 120 cmake "${GEN[@]}" -S "$ROOT" -B "$BUILD_DIR" \
  -DMOEC_RUNTIME_ONLY=ON -DMOEC_ENABLE_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 "${GTEST_ARGS[@]}" ${CMAKE_ARGS:-} || finish # word splitting wanted

TARGETS=(moert_cuda moert-gpu-bench moe-run)
HAVE_TESTS=0
if grep -q "moert-cuda-tests" "$BUILD_DIR/build.ninja" "$BUILD_DIR/Makefile" 2>/dev/null ||
   [ -d "$BUILD_DIR/runtime/test/CMakeFiles/moert-cuda-tests.dir" ]; then
  TARGETS+=(moert-cuda-tests moert-make-test-plan)
  HAVE_TESTS=1
fi
HAVE_EXEC_TESTS=0 # the CUDA backend's tests (section at the end)
if grep -q "moert-cuda-exec-tests" "$BUILD_DIR/build.ninja" "$BUILD_DIR/Makefile" 2>/dev/null ||
   [ -d "$BUILD_DIR/runtime/test/CMakeFiles/moert-cuda-exec-tests.dir" ]; then
  TARGETS+=(moert-cuda-exec-tests)
  HAVE_EXEC_TESTS=1
fi
step "build ${TARGETS[*]}" 360 cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}" || finish
if [ "$HAVE_TESTS" -eq 0 ]; then
  log "gpu-check: moert-cuda-tests is not configured (no GoogleTest found and none carried:"
  log "  run scripts/prepare-gpu-carry.sh where GoogleTest is installed and carry build-carry/)"
  SUMMARY+=("FAIL  moert-cuda-tests not built (no GoogleTest)")
  FAILED+=("no-gtest")
fi
if [ "$BUILD_ONLY" -eq 1 ]; then
  finish
fi

fi # E2E_ONLY
BIN=$BUILD_DIR/bin
if [ "$E2E_ONLY" -eq 0 ]; then

# --- GPU unit tests ----------------------------------------------------------
if [ "$HAVE_TESTS" -eq 1 ]; then
  if step "moert-cuda-tests" 180 "$BIN/moert-cuda-tests" --gtest_color=no; then
    # On a GPU machine a skipped test is a failure (it did not run).
    if grep -q "^\[  SKIPPED \] [A-Za-z]" "$RESULTS"; then
      log "gpu-check: tests were SKIPPED on a GPU machine (see above)"
      SUMMARY+=("FAIL  moert-cuda-tests: tests skipped")
      FAILED+=("tests-skipped")
    fi
  fi
fi


# ============================================================================
# === CUDA BACKEND OF THE EXECUTOR (issue 6, item 3; docs/cuda.md)          ===
# === 1. moert-cuda-exec-tests: the hand-built test plans on the CUDA        ===
# ===    backend (1 and 4 thread ranks on this GPU) against the CPU backend. ===
# === 2. End to end: plans compiled elsewhere by scripts/prepare-gpu-carry.sh ===
# ===    (moec --target=cuda, PTX embedded) and carried in build-carry/plans: ===
# ===    every example at ep=1 (moe-run --device cuda -n 1) and ep=4 (-n 4   ===
# ===    --threads: four ranks on one GPU, device copies between them),      ===
# ===    bf16/fp16 plans, ep=2,tp=2; every output compared with onnxruntime  ===
# ===    on the original model (references carried): max|got - ref| <=      ===
# ===    TOL * max|ref|, TOL 1e-4 (fp32), 2.5e-2 (bf16), 3e-3 (fp16), from   ===
# ===    manifest.txt. Then a few with host staging and with one-rank NCCL.  ===
# ============================================================================
if [ "$HAVE_EXEC_TESTS" -eq 1 ]; then
  skipped_before=$(grep -c "^\[  SKIPPED \] [A-Za-z]" "$RESULTS")
  if step "moert-cuda-exec-tests (CUDA backend vs CPU backend)" 180 \
    "$BIN/moert-cuda-exec-tests" --gtest_color=no; then
    if [ "$(grep -c "^\[  SKIPPED \] [A-Za-z]" "$RESULTS")" -ne "$skipped_before" ]; then
      log "gpu-check: CUDA backend tests were SKIPPED on a GPU machine (see above)"
      SUMMARY+=("FAIL  moert-cuda-exec-tests: tests skipped")
      FAILED+=("exec-tests-skipped")
    fi
  fi
else
  log "gpu-check: moert-cuda-exec-tests is not configured (no GoogleTest)"
  SUMMARY+=("FAIL  moert-cuda-exec-tests not built (no GoogleTest)")
  FAILED+=("no-exec-tests")
fi

fi # E2E_ONLY

PLANS=$ROOT/build-carry/plans
E2E_DIR=$(dirname "$RESULTS")/e2e
CHECKER=$BUILD_DIR/check_outputs.py
mkdir -p "$E2E_DIR"
# check_outputs.py OUT.npz REF.npz TOL: every output must match onnxruntime's
# (run on the original model.onnx by prepare-gpu-carry.sh):
# max|got - ref| <= TOL * max|ref|; a plan with one output may name it
# differently.
cat >"$CHECKER" <<'PY'
import sys
import numpy as np
out, ref, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
got, refs = dict(np.load(out)), dict(np.load(ref))
bad = 0
for name, r in sorted(refs.items()):
    key = name if name in got else (next(iter(got)) if len(got) == 1 else None)
    if key is None:
        print(f"  {name}: FAIL missing from {out}")
        bad += 1
        continue
    g = got[key]
    if g.shape != r.shape:
        print(f"  {name}: FAIL shape {g.shape}, expected {r.shape}")
        bad += 1
        continue
    err = float(np.max(np.abs(g.astype(np.float64) - r))) if r.size else 0.0
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    ok = err <= tol * max(scale, 1e-30)
    bad += not ok
    print(f"  {name}: {'ok' if ok else 'FAIL'} max|diff| {err:.3e}, "
          f"max|ref| {scale:.3e} ({err / max(scale, 1e-30):.1e} of it, "
          f"bound {tol:g})")
sys.exit(1 if bad or not refs else 0)
PY
# The plan's input names, from moe-run --describe ("input  NAME: ...").
plan_inputs() {
  "$BIN/moe-run" --describe "$1" | sed -n 's/^input  *\([^:]*\):.*/\1/p' | tr '\n' ' '
}
if [ ! -f "$PLANS/manifest.txt" ]; then
  log "gpu-check: no plans in $PLANS: run scripts/prepare-gpu-carry.sh (with"
  log "  build/bin/moec) where LLVM/MLIR are installed and carry build-carry/"
  SUMMARY+=("FAIL  end-to-end plans: none carried")
  FAILED+=("no-plans")
else
  # Each plan on its ranks: 1 rank, or N ranks as threads on this GPU
  # (device copies between the ranks; NCCL where each rank has a GPU of its
  # own). The run's report must name that transport.
  if [ "$E2E_DEVICE" = cuda ]; then want_transport='device copies|nccl'
  else want_transport='threads'; fi
  while read -r name ex ranks tol; do
    plan=$PLANS/$name.moeplan
    exdir=$ROOT/examples/$ex
    [ -d "$exdir" ] || exdir=$PLANS/$ex # a model made by prepare-gpu-carry.sh
    args=()
    for in_name in $(plan_inputs "$plan"); do
      # NAME.npy for models of several inputs (a decode step's KV cache).
      in_file=$exdir/$in_name.npy
      [ -f "$in_file" ] || in_file=$exdir/input.npy
      args+=(--input "$in_name=$in_file")
    done
    rk=(-n 1)
    transport_check=true
    if [ "$ranks" != 1 ]; then
      rk=(-n "$ranks" --threads)
      # (a plan without collectives, e.g. a replicated dense one, has no
      # collectives line)
      transport_check="! grep -q 'collectives:' '$E2E_DIR/$name.log' || grep -Eq 'collectives: .*, ($want_transport)' '$E2E_DIR/$name.log' || { echo 'expected transport: $want_transport'; grep collectives: '$E2E_DIR/$name.log'; exit 1; }"
    fi
    out=$E2E_DIR/$name.npz
    rm -f "$out"
    step "e2e $name: moe-run --device $E2E_DEVICE ${rk[*]} vs onnxruntime" 90 bash -c \
      "$(printf '%q ' "$BIN/moe-run" --device "$E2E_DEVICE" "${rk[@]}" "$plan" "${args[@]}" -o "$out") >'$E2E_DIR/$name.log' 2>&1 || { tail -20 '$E2E_DIR/$name.log'; exit 1; }; $transport_check; $(printf '%q ' "$PYTHON" "$CHECKER" "$out" "$PLANS/$ex.ref.npz" "$tol")"
  done <"$PLANS/manifest.txt"
  # Four thread ranks through host staging instead (MOERT_DEVICE_COPIES=0):
  # the dispatch/combine exchange and the tensor-parallel all-reduce.
  if [ "$E2E_DEVICE" = cuda ]; then
    for name in mixtral_layer-ep4 hf_qwen2_moe-ep2tp2-bf16; do
      ex=${name%%-*}
      tol=$(awk -v n="$name" '$1 == n {print $4}' "$PLANS/manifest.txt")
      out=$E2E_DIR/$name-staging.npz
      rm -f "$out"
      step "e2e $name: MOERT_DEVICE_COPIES=0 moe-run --device cuda -n 4 --threads vs onnxruntime" 90 bash -c \
        "MOERT_DEVICE_COPIES=0 $(printf '%q ' "$BIN/moe-run" --device cuda -n 4 --threads "$PLANS/$name.moeplan" --input "hidden_states=$ROOT/examples/$ex/input.npy" -o "$out") >'$E2E_DIR/$name-staging.log' 2>&1 || { tail -20 '$E2E_DIR/$name-staging.log'; exit 1; }; grep -q 'collectives: .*host staging' '$E2E_DIR/$name-staging.log' || { grep collectives: '$E2E_DIR/$name-staging.log'; exit 1; }; $(printf '%q ' "$PYTHON" "$CHECKER" "$out" "$PLANS/$ex.ref.npz" "$tol")"
    done
  fi
  # A plan with a dynamic token count (issue 19): one plan run at 1, 5 and
  # 32 tokens on 4 thread ranks (blocks of 2, 2, 1, 0 rows at 5), against
  # onnxruntime at each count; with a capacity factor (cf1.0) the drops
  # change the output, so only the dropless plan is compared.
  DYN=$PLANS/dynamic
  if [ -f "$DYN/mixtral_block-ep4-cf0.moeplan" ]; then
    for t in 1 5 32; do
      for cf in 0 1.0; do
        name=dynamic-cf$cf-t$t
        out=$E2E_DIR/$name.npz
        rm -f "$out"
        check="$(printf '%q ' "$PYTHON" "$CHECKER" "$out" "$DYN/ref$t.npz" 1e-4)"
        [ "$cf" = 0 ] || check="$(printf '%q ' "$PYTHON" -c "import numpy as np, sys; o = np.load(sys.argv[1]); assert o['output'].shape == (1, $t, 64), o['output'].shape; print('  shape ok')" "$out")"
        step "e2e $name: dynamic plan at $t tokens, moe-run --device $E2E_DEVICE -n 4 --threads" 90 bash -c \
          "$(printf '%q ' "$BIN/moe-run" --device "$E2E_DEVICE" -n 4 --threads "$DYN/mixtral_block-ep4-cf$cf.moeplan" --input "hidden_states=$DYN/x$t.npy" -o "$out") >'$E2E_DIR/$name.log' 2>&1 || { tail -20 '$E2E_DIR/$name.log'; exit 1; }; $check"
      done
    done
    # Uneven row blocks (--token-split moe): 5 tokens are blocks of 2, 2,
    # 1, 0 rows, 31 of 8, 8, 8, 7.
    if [ -f "$DYN/mixtral_block-ep4-rows.moeplan" ]; then
      for t in 1 5 31; do
        name=dynamic-rows-t$t
        out=$E2E_DIR/$name.npz
        rm -f "$out"
        step "e2e $name: row blocks at $t tokens, moe-run --device $E2E_DEVICE -n 4 --threads" 90 bash -c \
          "$(printf '%q ' "$BIN/moe-run" --device "$E2E_DEVICE" -n 4 --threads "$DYN/mixtral_block-ep4-rows.moeplan" --input "hidden_states=$DYN/x$t.npy" -o "$out") >'$E2E_DIR/$name.log' 2>&1 || { tail -20 '$E2E_DIR/$name.log'; exit 1; }; $(printf '%q ' "$PYTHON" "$CHECKER" "$out" "$DYN/ref$t.npz" 1e-4)"
      done
    fi
  else
    log "gpu-check: no dynamic plans in $DYN (an older carry): skipped"
  fi
  # One rank with NCCL: MOERT_NCCL=force gives one-rank groups a one-rank
  # NCCL communicator, so dispatch/combine go through ncclSend/ncclRecv
  # (to self) on this one GPU; when the build found NCCL.
  if grep -q "^MOERT_NCCL_LIBRARY:FILEPATH=/" "$BUILD_DIR/CMakeCache.txt" 2>/dev/null &&
     [ "$E2E_DEVICE" = cuda ]; then
    for name in mixtral_layer-ep1 hf_qwen2_moe-ep1; do
      ex=${name%-ep1}
      out=$E2E_DIR/$name-nccl.npz
      rm -f "$out"
      step "e2e $name: MOERT_NCCL=force moe-run --device cuda -n 1 vs onnxruntime" 90 bash -c \
        "MOERT_NCCL=force $(printf '%q ' "$BIN/moe-run" --device cuda -n 1 "$PLANS/$name.moeplan" --input "hidden_states=$ROOT/examples/$ex/input.npy" -o "$out") >'$E2E_DIR/$name-nccl.log' 2>&1 || { tail -20 '$E2E_DIR/$name-nccl.log'; exit 1; }; $(printf '%q ' "$PYTHON" "$CHECKER" "$out" "$PLANS/$ex.ref.npz" 1e-4)"
    done
  else
    log "gpu-check: no NCCL in this build (or not on cuda): the one-rank NCCL runs are skipped"
  fi
fi

# Benchmarks last: the correctness checks above come back even if these run
# long.
if [ "$E2E_ONLY" -eq 0 ]; then
# --- benchmarks ----------------------------------------------------------------
BENCH_OUT=$(dirname "$RESULTS")/gpu-bench.txt
# shellcheck disable=SC2086
step "moert-gpu-bench (Mixtral layer, bf16)" 240 "$BIN/moert-gpu-bench" --out "$BENCH_OUT" $BENCH_ARGS
TORCH_OUT=$(dirname "$RESULTS")/torch-moe-layer.txt
# shellcheck disable=SC2086
step "PyTorch eager peer (bench/torch_moe_layer.py)" 180 "$PYTHON" "$ROOT/bench/torch_moe_layer.py" --out "$TORCH_OUT" $BENCH_ARGS

section "comparison"
moe=$(awk '$1=="RESULT" && $2=="moe_layer_ms" {print $3}' "$BENCH_OUT" 2>/dev/null)
flr=$(awk '$1=="RESULT" && $2=="flop_floor_ms" {print $3}' "$BENCH_OUT" 2>/dev/null)
tch=$(awk '$1=="RESULT" && $2=="torch_moe_layer_ms" {print $3}' "$TORCH_OUT" 2>/dev/null)
log "| Mixtral MoE layer | ms | vs moert |"
log "| --- | ---: | ---: |"
[ -n "$moe" ] && log "| moert (CUDA kernels + cuBLAS grouped GEMM) | $moe | 1.00 |"
[ -n "$tch" ] && [ -n "$moe" ] && log "| PyTorch eager (expert loop) | $tch | $(awk -v a="$tch" -v b="$moe" 'BEGIN{printf "%.2f", a/b}') |"
[ -n "$flr" ] && [ -n "$moe" ] && log "| FLOP floor (peak dense cuBLAS rate) | $flr | $(awk -v a="$flr" -v b="$moe" 'BEGIN{printf "%.2f", a/b}') |"
log "(record these numbers in docs/performance.md)"
fi # E2E_ONLY

# --- the compiled plan against PyTorch eager ---------------------------------
# The whole compiled path (moec --precision=bf16 plan: fp32 router, generated
# cast kernels, grouped bf16 experts, combine) on one rank, last of 10 runs,
# against the same layer in PyTorch eager (bf16 throughout). Checked first
# against torch's output for the first 256 tokens (bf16 bound 2.5e-2).
BPLAN=$ROOT/build-carry/bench/layer-bf16.moeplan
if [ -f "$BPLAN" ]; then
  BDIR=$(dirname "$RESULTS")/plan-bench
  mkdir -p "$BDIR"
  if step "compiled plan: moe-run --device $E2E_DEVICE (H=384, F=1344, E=8, k=2, 4096 tokens, bf16)" 180 bash -c \
    "$(printf '%q ' "$BIN/moe-run" --device "$E2E_DEVICE" -n 1 "$BPLAN" --input "hidden_states=$ROOT/build-carry/bench/input.npy" -o "$BDIR/out.npy" --iters 10) >'$BDIR/moe-run.txt' 2>&1 || { tail -20 '$BDIR/moe-run.txt'; exit 1; }; grep -E 'total|experts|matmul|dispatch|combine|route|kernel ' '$BDIR/moe-run.txt' | head -20; $(printf '%q ' "$PYTHON") -c 'import numpy as np, sys; a = np.load(sys.argv[1])[:, :256]; r = np.load(sys.argv[2]); e = float(abs(a - r).max()); s = float(abs(r).max()); print(f\"first 256 tokens vs torch: max|diff| {e:.3e} ({e / s:.1e} of max|ref|, bound 2.5e-2)\"); sys.exit(int(e > 2.5e-2 * s))' '$BDIR/out.npy' '$ROOT/build-carry/bench/reference256.npy'"; then
    pms=$(sed -n 's/.*total \([0-9.]*\) ms.*/\1/p' "$BDIR/moe-run.txt" | head -1)
    [ "$E2E_ONLY" -eq 1 ] && log "compiled plan: $pms ms on $E2E_DEVICE (no PyTorch peer with --e2e-only)"
  fi
  if [ "$E2E_ONLY" -eq 0 ] && [ -n "${pms:-}" ]; then
    TORCH_SMALL=$BDIR/torch.txt
    step "PyTorch eager, same layer (H=384, F=1344, 4096 tokens, bf16)" 120 "$PYTHON" \
      "$ROOT/bench/torch_moe_layer.py" --hidden 384 --ffn 1344 --tokens 4096 --out "$TORCH_SMALL"
    tms=$(awk '$1=="RESULT" && $2=="torch_moe_layer_ms" {print $3}' "$TORCH_SMALL" 2>/dev/null)
    log "| layer H=384, F=1344, E=8, k=2, 4096 tokens, bf16 | ms | vs moe-run |"
    log "| --- | ---: | ---: |"
    [ -n "$pms" ] && log "| moe-run, compiled plan (1 rank) | $pms | 1.00 |"
    [ -n "$tms" ] && [ -n "$pms" ] && log "| PyTorch eager (expert loop) | $tms | $(awk -v a="$tms" -v b="$pms" 'BEGIN{printf "%.2f", a/b}') |"
  fi
fi

# --- transports of thread ranks on one GPU ------------------------------------
# One MoE layer (fp32, tiny experts so that the exchange dominates) on four
# thread ranks: dispatch/combine as device copies between the ranks' buffers
# against host staging (MOERT_DEVICE_COPIES=0); same output required.
if [ -x "$BIN/moert-make-test-plan" ]; then
  TRANSPORT_OUT=$(dirname "$RESULTS")/transport-bench.txt
  if [ "$E2E_DEVICE" = cuda ]; then tsize=(--tokens-per-rank 2048 --hidden 4096)
  else tsize=(--tokens-per-rank 512 --hidden 1024); fi
  step "transports of 4 thread ranks (bench/transport_bench.py, $E2E_DEVICE)" 150 \
    "$PYTHON" "$ROOT/bench/transport_bench.py" --moe-run "$BIN/moe-run" \
    --make-plan "$BIN/moert-make-test-plan" --device "$E2E_DEVICE" "${tsize[@]}" \
    --work "$BUILD_DIR/transport-work" -o "$TRANSPORT_OUT"
  rm -rf "$BUILD_DIR/transport-work"
else
  log "gpu-check: no moert-make-test-plan (no GoogleTest): transport benchmark skipped"
fi

finish
