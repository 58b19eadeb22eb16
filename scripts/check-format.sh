#!/usr/bin/env bash
# Fails (exit 1) when a C++/CUDA source of moec is not clang-format clean,
# listing the files; `scripts/check-format.sh --fix` formats them in place.
# The style is .clang-format (LLVM). The version is pinned to Debian
# bookworm's clang-format 14 (install-deps installs it): another major
# version formats some constructs differently.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CF=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$CF" ]; then
  echo "check-format: clang-format not found (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
cd "$ROOT"
# Tracked sources when this is a git checkout, else every source file.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -- '*.cpp' '*.h' '*.cu' '*.cuh' | grep -v '^examples/')
else
  mapfile -t files < <(find dialects include lib runtime tools test bench \
    \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -print)
fi
if [ "${1:-}" = "--fix" ]; then
  "$CF" -i "${files[@]}"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  "$CF" --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "check-format: ${#bad[@]} of ${#files[@]} files are not clang-format clean" \
       "(scripts/check-format.sh --fix):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files clean"
