"""How many CPU threads torch should use, so that a run does not oversubscribe the machine.

torch's own default is one thread per core. On a small shared machine that is the worst choice
for this project's small models: measured on a 2-core machine under load (other jobs running,
load average 7-17), `train-solver --solver bns --nfe 8 --iters 100` on the checkerboard model took
10-22 s of wall time with 1 thread and 202-242 s with 2 (README, "Command line", has these runs
and more). Even lightly loaded, one
thread was faster in total there, because the 2-thread GT solve lost more than training gained
(README, "Speed targets"). The default therefore leaves half the cores to everything else, as the
app does (explorer/jobs.py), takes away cores other processes are busy with (the 1-minute load
average), and stops at 4, past which the small networks here gain little.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch

MAX_AUTO_THREADS = 4


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float:
    """The 1-minute load average (0 where the OS does not report one)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def auto_threads(cores: Optional[int] = None, load: Optional[float] = None) -> int:
    """max(1, min(4, cores // 2, floor(cores - load))): half the cores, minus the busy ones, at
    most 4, at least 1. A 2-core machine always gets 1."""
    cores = usable_cores() if cores is None else int(cores)
    load = load_average() if load is None else float(load)
    free = math.floor(cores - load) if math.isfinite(load) else cores
    return max(1, min(MAX_AUTO_THREADS, cores // 2, free))


def set_threads(threads: Optional[int]) -> int:
    """Apply a --threads value: None = auto_threads(), 0 = torch's own default (one per core),
    n >= 1 = exactly n. Returns the number torch now uses; ValueError names a bad value."""
    if threads is None:
        threads = auto_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"--threads must be a whole number >= 0 (0 = torch's default), got {threads!r}")
    if threads > 0 and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()
