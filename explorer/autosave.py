"""Trained solvers are written to disk by the worker thread itself, so a closed browser tab, a
lost session or a server restart mid-training loses nothing: the Train page lists the runs saved
on this machine for the current model and adds any of them back to the session.

Where: $BESPOKE_RUNS_DIR, else ~/.cache/bespoke-explorer/runs. Files are ordinary solver
checkpoints (core.solvers.learned.save_solver), read back through the same safe loader.
No streamlit here: the worker calls `save_run`. When the server stops (SIGTERM, Ctrl-C), every
running training job is asked to stop and waited for (explorer/jobs.py `shutdown`, at exit), so
its worker saves the run as "stopped". Temp files of writes killed half-way (`*.tmp`) are removed
the next time the runs are listed.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

from core.checkpoint import CheckpointError, clean_stale_tmp, load
from core.solvers.learned import save_solver

MAX_LISTED = 50  # newest runs shown per model


def runs_dir() -> Path:
    return Path(os.environ.get("BESPOKE_RUNS_DIR") or Path.home() / ".cache" / "bespoke-explorer" / "runs")


def save_run(result, field, label: str, status: str) -> Path:
    """Write a finished (or stopped, or diverged) run's solver with its summary; returns the file."""
    d = runs_dir()
    d.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    solver = result.solver
    name = f"{stamp}_{getattr(solver, 'family_name', solver.family)}_nfe{solver.nfe}_{os.getpid()}_{id(result) % 10**6}.safetensors"
    extra = {"label": label, "status": status, "saved_at": time.time(), "best": dict(result.best), **result.summary()}
    save_solver(solver, d / name, field, extra=extra)
    return d / name


def list_runs(model_id: str, guidance_scale: Optional[float] = None) -> list[tuple[Path, dict[str, Any]]]:
    """(file, header) of the runs saved for this model and guidance scale, newest first.
    Unreadable files are skipped (they are reported by `load_solver` if picked by hand)."""
    d = runs_dir()
    if not d.is_dir():
        return []
    clean_stale_tmp(d)  # half-written files of a killed server
    out = []
    for f in sorted(d.glob("*.safetensors"), reverse=True):
        try:
            _, header = load(f, kind="solver")
        except (CheckpointError, OSError):
            continue
        g = header.get("guidance_scale")
        if header.get("model_id") == model_id and (g is None) == (guidance_scale is None) and \
                (g is None or abs(float(g) - float(guidance_scale)) < 1e-9):
            out.append((f, header))
        if len(out) >= MAX_LISTED:
            break
    return out
