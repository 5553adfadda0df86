"""Timing helpers shared by the benchmark scripts."""
from __future__ import annotations

import statistics
import time

import torch


def median_time(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of fn() (CUDA synchronised when present)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    """Print a two-column markdown table (what | measured) under a title line."""
    print(f"\n{title}\n")
    w = max(len(k) for k, _ in rows)
    print(f"| {'what':<{w}} | measured |")
    print(f"|{'-' * (w + 2)}|----------|")
    for k, v in rows:
        print(f"| {k:<{w}} | {v} |")
