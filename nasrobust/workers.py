"""A pool of worker processes that share one store's evaluation units through :mod:`nasrobust.claims`.

Multi-threaded OpenMP kernels collapse when there are more runnable threads than cores (a shared
machine); several processes with few threads each keep every core busy instead. Each worker runs
the whole command with its own torch thread count and claims (architecture, suite) units from the
store, so no unit is computed twice, and every unit is computed by the same deterministic code
whichever worker runs it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(device: torch.device) -> int:
    """One worker per core on the CPU; one on a GPU (the GPU, not the cores, is the bottleneck)."""
    return 1 if device.type != "cpu" else cores()


def check_workers(workers: int | None) -> None:
    """A user's ``--workers``: None (the default) or a positive count."""
    if workers is not None and workers < 1:
        from nasrobust.errors import NasRobustError

        raise NasRobustError(f"--workers must be >= 1, got {workers}; e.g. --workers 2 (or omit it: one per core)")


def threads_per_worker(workers: int) -> int:
    """Torch/OpenMP threads for each of ``workers`` processes: the cores shared out, at least one."""
    return max(1, cores() // workers)


def _child(target: Callable[[Any], int], payload: Any, threads: int) -> None:
    from nasrobust.errors import NasRobustError

    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    try:
        code = target(payload)
    except NasRobustError as err:  # one line, as the parent prints its own errors; no traceback
        print(f"nasrobust worker: error: {err}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


class WorkerPool:
    """``workers`` processes in all: the caller plus ``workers - 1`` spawned copies running ``target(payload)``,
    each with :func:`threads_per_worker` torch threads. :meth:`start` is meant for the moment every input is
    checked (``evaluate(on_ready=pool.start)``), so bad input never reaches a spawned worker."""

    def __init__(self, target: Callable[[Any], int], payload: Any, workers: int):
        self.target, self.payload, self.workers = target, payload, workers
        self.procs: list[Any] = []

    @property
    def threads(self) -> int | None:
        """Torch threads of the calling process while the pool runs (None: unchanged, no pool)."""
        return threads_per_worker(self.workers) if self.workers > 1 else None

    def start(self) -> None:
        """Spawn the other workers (once; nothing with one worker)."""
        if self.workers <= 1 or self.procs:
            return
        ctx = multiprocessing.get_context("spawn")
        self.procs = [ctx.Process(target=_child, args=(self.target, self.payload, threads_per_worker(self.workers)),
                                  name=f"nasrobust-worker-{i}") for i in range(self.workers - 1)]
        for p in self.procs:
            p.start()

    def join(self) -> int:
        """Wait for every spawned worker; the first non-zero exit status, else 0."""
        for p in self.procs:
            p.join()
        return next((p.exitcode for p in self.procs if p.exitcode), 0)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None: unchanged), then restore the previous count."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
