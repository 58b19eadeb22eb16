#!/usr/bin/env python3
"""Stops one MPI rank of a moe-run job with SIGSTOP and checks that the job
ends: every rank gone, exit status 1, a message naming a rank and the step
it waited in, within the watchdog's timeout plus a margin.

    stop_rank.py MOE-RUN PLAN NAME=INPUT.npy --ranks 4 --stop 2 --timeout 2

Prints 'ok ...' or 'FAIL ...' lines and exits 0 or 1.
"""
import argparse
import os
import signal
import subprocess
import sys
import time


def descendants(root):
    """The pids below `root` (any depth), from /proc."""
    children = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    for e in env:
        if e.startswith(b"OMPI_COMM_WORLD_RANK="):
            return int(e.split(b"=", 1)[1])
    return None


def maps_file(pid, path):
    """Whether process `pid` has `path` mapped."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any(line.rstrip().endswith(" " + path) for line in f)
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("moe_run")
    ap.add_argument("plan")
    ap.add_argument("input")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--stop", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=2)
    a = ap.parse_args()
    p = subprocess.Popen(
        [a.moe_run, "-n", str(a.ranks), a.plan, "--input", a.input,
         "--iters", "1000000", "--timeout", str(a.timeout)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Wait until every rank runs.
    ranks, deadline = {}, time.time() + 60
    while len(ranks) < a.ranks and time.time() < deadline:
        time.sleep(0.2)
        for pid in descendants(p.pid):
            r = rank_of(pid)
            if r is not None:
                ranks[r] = pid
    if len(ranks) < a.ranks or p.poll() is not None:
        p.kill()
        print(f"FAIL: the {a.ranks} ranks did not start: {sorted(ranks)}")
        return 1
    # Every rank past MPI_Init and its watchdog's start: it has mapped the
    # plan (a slow start, e.g. under the sanitizers, is not mistaken for
    # the run loop).
    plan = os.path.realpath(a.plan)
    while time.time() < deadline and not all(
            maps_file(pid, plan) for pid in ranks.values()):
        time.sleep(0.2)
    time.sleep(1.0)  # inside the run loop
    os.kill(ranks[a.stop], signal.SIGSTOP)
    t0 = time.time()
    try:
        _, err = p.communicate(timeout=a.timeout + 30)
    except subprocess.TimeoutExpired:
        for pid in descendants(p.pid):
            os.kill(pid, signal.SIGKILL)
        p.kill()
        print(f"FAIL: the job still runs {a.timeout + 30} s after rank "
              f"{a.stop} was stopped")
        return 1
    took = time.time() - t0

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    # mpirun may return while the killed ranks are still being reaped.
    deadline = time.time() + 15
    left = [pid for pid in ranks.values() if alive(pid)]
    while left and time.time() < deadline:
        time.sleep(0.2)
        left = [pid for pid in left if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    # The stop may land in a step or between runs (the barrier before the
    # next one): either way a rank names where it waited.
    named = [l for l in err.splitlines()
             if l.startswith("moe-run: error: rank ") and "made no progress"
             in l and (" in step " in l or " in the barrier before run " in l)]
    ok = p.returncode == 1 and named and not left and \
        took < a.timeout + 20
    print(f"{'ok  ' if ok else 'FAIL'} rank {a.stop} stopped: the job ended "
          f"with exit {p.returncode} in {took:.1f} s (--timeout "
          f"{a.timeout:g}), {len(left)} rank(s) left")
    if named:
        print(named[0])
    else:
        print(err[-2000:])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
