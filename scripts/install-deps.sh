#!/usr/bin/env bash
# Installs every system and Python dependency of moec, idempotently.
# Debian packages through apt-get, Python packages through pip; nothing else.
set -euo pipefail

APT_PACKAGES=(
  cmake ninja-build g++ git clang-format
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools
  clang-22 libclang-rt-22-dev # scripts/sanitize.sh: ASan + UBSan runtime
  libonnx-dev libprotobuf-dev protobuf-compiler
  libgtest-dev
  libflatbuffers-dev flatbuffers-compiler
  nlohmann-json3-dev libcli11-dev
  openmpi-bin libopenmpi-dev
  libopenblas-dev
  python3-dev # the Python package's extension (python/, docs/python.md)
)
# onnx, onnxruntime and numpy are used by tests and tooling only; nanobind
# builds the Python package's extension (python/).
PIP_PACKAGES=(numpy onnx onnxruntime nanobind)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! "$PY" -c "import numpy, onnx, onnxruntime, nanobind" 2>/dev/null; then
  echo "install-deps: pip install ${PIP_PACKAGES[*]}"
  "$PY" -m pip install -q "${PIP_PACKAGES[@]}"
fi
echo "install-deps: all dependencies present"
