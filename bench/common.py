"""Helpers shared by the benchmark scripts in bench/."""
import subprocess
import sys


def sh(cmd, env=None):
    """Runs `cmd`; its stdout, or exit with the command and its stderr."""
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout
