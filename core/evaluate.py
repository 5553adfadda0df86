"""Evaluate solvers against ground truth from the same noise: RMSE, PSNR, NFE spent, wall time.

GT is computed once (adaptive dopri5, core.solvers.gt.gt_solve) and reused for every solver and
NFE. A solver is any object with `.name`, `.check_nfe(nfe)` and `.solve(field, x0, nfe)` ->
SolveResult (core.solvers.registry.get_solver returns these); a learned solver (one with a fixed
integer `.nfe`) is evaluated at the NFE it was trained for only.
Reported per (solver, NFE), each a mean over the samples of a per-sample value (MATH.md 0):
    rmse = mean_b sqrt(mean_j (x_bj - x1_bj)^2),  psnr = mean_b 10 log10(R^2 / MSE_b).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from .metrics import psnr, rmse
from .solvers.gt import gt_solve


@dataclass(frozen=True)
class GroundTruth:
    """GT samples x1 (B, *D) from x0, the NFE dopri5 spent, its wall time and tolerances."""

    x1: Tensor
    nfe: int
    wall_s: float
    atol: float
    rtol: float


def ground_truth(field, x0: Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> GroundTruth:
    """Solve the field's ODE from x0 with dopri5 (float32, like the solvers)."""
    start = time.perf_counter()
    res = gt_solve(field, x0, atol=atol, rtol=rtol)
    return GroundTruth(res.x, res.nfe, time.perf_counter() - start, atol, rtol)


def solver_nfes(solver, nfes: Sequence[int]) -> list[int]:
    """The NFEs at which `solver` is evaluated: its own for a learned solver, else `nfes`
    (each checked; ValueError names an impossible one)."""
    own = getattr(solver, "nfe", None)
    if isinstance(own, int) and not isinstance(own, bool):
        return [own]
    if not nfes:
        raise ValueError(f"solver {solver.name!r} needs at least one NFE")
    for n in nfes:
        solver.check_nfe(n)
    return list(nfes)


def evaluate(field, solvers: Sequence, nfes: Sequence[int], x0: Tensor,
             gt: Optional[GroundTruth | Tensor] = None) -> list[dict]:
    """One row per (solver, NFE): {"solver", "nfe", "nfe_spent", "rmse", "psnr", "wall_s", "n", "finite"};
    a solver whose samples hold NaN / inf gets finite False and rmse = psnr = None.

    x0: (B, *D) noise; gt: GT samples from exactly this x0 (computed here when None).
    Every (solver, NFE) pair is checked before anything runs.
    """
    plan = [(s, n) for s in solvers for n in solver_nfes(s, nfes)]
    if gt is None:
        gt = ground_truth(field, x0)
    x1 = gt.x1 if isinstance(gt, GroundTruth) else gt
    if x1.shape != x0.shape:
        raise ValueError(f"GT samples have shape {tuple(x1.shape)} but x0 has {tuple(x0.shape)}")
    rows = []
    for solver, nfe in plan:
        start = time.perf_counter()
        with torch.no_grad():
            res = solver.solve(field, x0, nfe)
        wall = time.perf_counter() - start
        x = res.x.to(x1)
        finite = bool(torch.isfinite(x).all())
        rows.append({"solver": solver.name, "nfe": int(nfe), "nfe_spent": int(res.nfe),
                     "rmse": float(rmse(x, x1).mean()) if finite else None,
                     "psnr": float(psnr(x, x1, field.data_range).mean()) if finite else None,
                     "wall_s": round(wall, 4), "n": int(x0.shape[0]), "finite": finite})
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table."""
    head = f"{'solver':<24} {'nfe':>4} {'spent':>5} {'rmse':>10} {'psnr':>8} {'wall_s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("finite", True):
            err = f"{r['rmse']:>10.5f} {r['psnr']:>8.2f}"
        else:  # NaN / inf samples: flagged, never a number
            err = f"{'NON-FINITE':>10} {'-':>8}"
        lines.append(f"{r['solver'][:24]:<24} {r['nfe']:>4} {r['nfe_spent']:>5} {err} {r['wall_s']:>8.3f}")
    return "\n".join(lines)
