"""Shared by the throughput benchmarks: run a command, timing its wall and CPU seconds, killed after a limit."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence


def timed_run(cmd: Sequence[str], env: Mapping[str, str], limit_s: float) -> dict:
    """``wall`` and ``cpu`` (user+sys of the whole process tree) seconds, and whether it ``finished`` (exit 0).

    A run still going after ``limit_s`` is killed with its process group: the OpenMP collapse on an
    oversubscribed machine can make a run take many times longer."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=dict(env), stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        finished = proc.wait(timeout=limit_s) == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = False
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "finished": finished}
