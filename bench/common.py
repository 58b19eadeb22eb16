"""Helpers shared by the benchmark scripts in bench/."""
import os
import subprocess
import sys


def sh(cmd, env=None):
    """Runs `cmd`; its stdout, or exit with the command and its stderr."""
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def builder_models(build, work, hidden, ffn, names):
    """The directory of examples/builder/gen.py --hidden H --ffn F's models
    `names` (fp32 and int4 builder outputs, genai_config.json included),
    made once: `work`, or build/bench/builder_hH_fF."""
    gen = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "examples", "builder", "gen.py")
    work = work or os.path.join(build, "bench", f"builder_h{hidden}_f{ffn}")
    if not all(os.path.exists(os.path.join(work, n, p, "genai_config.json"))
               for n in names for p in ("fp32", "int4")):
        print(f"building the models into {work} ...", file=sys.stderr)
        sh([sys.executable, gen, "--out", work, "--hidden", str(hidden),
            "--ffn", str(ffn)] + names)
    return work


def add_lm_args(ap, iters, batch):
    """The options of the benchmarks on a random MixtralForCausalLM: the
    build and work directories, --iters and the model's sizes."""
    ap.add_argument("--build", default="build")
    ap.add_argument("--work", default=None)
    ap.add_argument("--iters", type=int, default=iters)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=batch)
