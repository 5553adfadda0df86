"""The work that runs in background jobs (explorer/jobs.py): train a solver, sweep an
ablation, benchmark solvers. Each returns a `work(job)` function; the job object is the only
channel to the page. These call core only; no streamlit."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

from core.train import NonFiniteLossError, SolverSpec, TrainConfig, TrainEvent, train_solver

from . import autosave, compute
from .jobs import Job

ABLATION_PARAMS = {"lipschitz": "L_tau (Lipschitz constant in the RMSE-bound loss)",
                   "sigma0": "sigma0 (BNS preconditioning scale)"}


def train_job(field, spec: SolverSpec, cfg: TrainConfig):
    """Train one solver; every iteration reports a history row and the decoded parameters."""

    def work(job: Job):
        job.report(message="making the ground truth (adaptive dopri5)...")

        def callback(ev: TrainEvent) -> None:
            row = {"iteration": ev.iteration, "loss": ev.loss, "elapsed": ev.elapsed, **(ev.metrics or {})}
            job.report(row, latest=ev.params, progress=ev.iteration / max(cfg.iters, 1),
                       message=f"iteration {ev.iteration} / {cfg.iters}")

        try:
            result = train_solver(field, spec, cfg, callback=callback, stop_event=job.stop)
        except NonFiniteLossError as e:  # keep the best-validation solver on disk too, then report
            _autosave(job, e.result, field, "diverged")
            raise
        saved = _autosave(job, result, field, "stopped" if result.stopped else "done")
        job.report(message=("stopped: kept the best solver so far" if result.stopped else "finished") + saved)
        return result

    return work


def _autosave(job: Job, result, field, status: str) -> str:
    """Write the run to disk from the worker (a closed tab loses nothing); never fail the job."""
    try:
        path = autosave.save_run(result, field, job.label, status)
    except Exception as e:  # a full or read-only disk must not lose the in-memory result
        return f" (could not save a copy to disk: {e})"
    job.params["saved_to"] = str(path)
    return f"; saved to {path}"


def ablation_job(field, spec: SolverSpec, cfg: TrainConfig, param: str, values: list[float], gt=None):
    """Train one solver per value of `param` ("lipschitz" or "sigma0") with the same budget.
    Rows: {param, "rmse", "psnr", "init_rmse", "init_psnr", "best_iteration", "seconds"}.
    gt: a GT data set (core.gtdata.open_gt) every run trains on, instead of solving GT per run."""
    if param not in ABLATION_PARAMS:
        raise ValueError(f"unknown ablation parameter {param!r}; known: {sorted(ABLATION_PARAMS)}")
    if not values:
        raise ValueError("give at least one value to sweep")

    def work(job: Job) -> list[dict]:
        rows: list[dict] = []
        for k, v in enumerate(values):
            if job.stop.is_set():
                break
            job.report(progress=k / len(values), message=f"{param} = {v:g}: training ({k + 1}/{len(values)})")
            t0 = time.perf_counter()

            def callback(ev: TrainEvent, k=k) -> None:
                job.report(progress=(k + ev.iteration / max(cfg.iters, 1)) / len(values))

            res = train_solver(field, dataclasses.replace(spec, **{param: float(v)}), cfg, callback=callback,
                               stop_event=job.stop, gt=gt)
            row = {param: float(v), "rmse": res.best.get("rmse", math.nan), "psnr": res.best.get("psnr", math.nan),
                   "init_rmse": res.init.get("rmse", math.nan), "init_psnr": res.init.get("psnr", math.nan),
                   "best_iteration": res.best_iteration, "seconds": round(time.perf_counter() - t0, 2)}
            rows.append(row)
            job.report(row)
        return rows

    return work


def benchmark_job(field, names: list[str], nfes: list[int], learned: list[tuple[str, object]], n: int, seed: int):
    """Error vs NFE for the chosen built-in solvers and the session's learned ones."""

    def work(job: Job) -> list[dict]:
        return compute.benchmark(field, names, nfes, learned, n, seed,
                                 progress=lambda p, msg: job.report(progress=p, message=msg),
                                 stop=job.stop.is_set)

    return work


def parse_values(text: str, positive: bool = True) -> list[float]:
    """'0.5, 1, 2' -> [0.5, 1.0, 2.0]; raises ValueError naming the bad entry."""
    out: list[float] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number") from None
        if not math.isfinite(v) or (positive and v <= 0) or (not positive and v < 0):
            raise ValueError(f"{part!r} must be a finite number {'> 0' if positive else '>= 0'}")
        out.append(v)
    if not out:
        raise ValueError("give at least one value, e.g. 0.5, 1, 2")
    return out
