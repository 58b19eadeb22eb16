# -*- Python -*-
# lit configuration for moec's tests: .mlir files go through moe-opt,
# .onnxtxt files through moec, .test files run anything.

import os

import lit.formats
from lit.llvm import llvm_config

config.name = "MOEC"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".onnxtxt", ".test"]
config.excludes = ["CMakeLists.txt", "README.md", "lit.cfg.py", "lit.site.cfg.py",
                   "unit", "e2e", "Inputs"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moec_obj_root, "test")

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%moec_src", config.moec_src_root))
config.substitutions.append(("%python", config.python_executable))
# `%{exit1} CMD ARGS...` runs CMD and succeeds only when it exits with
# status 1 (moec's error status): stricter than `not`, which also accepts a
# crash under lit's internal shell. CMD's output passes through.
config.substitutions.append(
    ("%{exit1}",
     "bash -c '\"$@\"; r=$?; test $r -eq 1 || "
     "{ echo \"exit status $r, expected 1\" >&2; exit 1; }' exit1"))

llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP"])
llvm_config.use_default_substitutions()

tool_dirs = [config.moec_tools_dir, config.llvm_tools_dir]
# `lit -D moert_tools_dir=DIR` (scripts/sanitize.sh): the runtime's tools,
# moe-run and moert-make-test-plan, from DIR (an ASan + UBSan runtime-only
# build), the compiler's from this build; the sanitizers' options pass
# through, and tests can tell (feature "sanitized-runtime").
runtime_tools = ["moe-run", "moert-make-test-plan"]
moert_tools_dir = lit_config.params.get("moert_tools_dir")
llvm_config.add_tool_substitutions(
    ["moec", "moe-opt", "moe-translate", "moe-eval"] +
    ([] if moert_tools_dir else runtime_tools), tool_dirs)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.moec_tools_dir, append_path=True)
if moert_tools_dir:
    llvm_config.add_tool_substitutions(runtime_tools, [moert_tools_dir])
    llvm_config.with_environment("PATH", moert_tools_dir, append_path=True)
    llvm_config.with_system_environment(
        ["ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
         "OMPI_MCA_mca_base_component_disable_dlclose"])
    config.available_features.add("sanitized-runtime")

# Optional tools: MPI for multi-process runs, ptxas to assemble generated PTX.
import shutil
for tool in ["mpirun", "ptxas"]:
    path = shutil.which(tool)
    if path:
        config.available_features.add(tool)
        config.substitutions.append(("%" + tool, path))

# Optional: headless Chromium (Debian's chromium) renders the plan page
# (moec --emit=html) in the browser test; without it that test is skipped.
for name in ["chromium", "chromium-browser", "google-chrome"]:
    path = shutil.which(name)
    if path:
        config.available_features.add("chromium")
        config.substitutions.append(("%chromium", path))
        break

# Optional Python packages: torch, transformers and onnxscript (the dynamo
# exporter) for tests that export a model at test time (the scale models of
# bench/scale; scripts/install-deps.sh does not install them).
import subprocess
if subprocess.run([config.python_executable, "-c",
                   "import torch, transformers, onnxscript"],
                  capture_output=True).returncode == 0:
    config.available_features.add("torch")

# The Python package built into the build tree (python/, -DMOEC_PYTHON=ON
# with nanobind): `%pymoec SCRIPT` runs python3 with it importable.
import glob
moec_python_dir = getattr(config, "moec_python_dir", "")
if moec_python_dir and glob.glob(os.path.join(moec_python_dir, "moec", "_moec*.so")):
    config.available_features.add("python-moec")
    config.substitutions.append(
        ("%pymoec", "env PYTHONPATH=%s %s" % (moec_python_dir,
                                              config.python_executable)))
