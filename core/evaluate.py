"""Evaluate solvers against ground truth from the same noise: RMSE, PSNR, NFE spent, wall time.

GT is computed once (adaptive dopri5, core.solvers.gt.gt_solve) and reused for every solver and
NFE. A solver is any object with `.name`, `.check_nfe(nfe)` and `.solve(field, x0, nfe)` ->
SolveResult (core.solvers.registry.get_solver returns these); a learned solver (one with a fixed
integer `.nfe`) is evaluated at the NFE it was trained for only.
Reported per (solver, NFE), each a mean over the samples of a per-sample value (docs/MATH.md §8.1):
    rmse = mean_b sqrt(mean_j (x_bj - x1_bj)^2),  psnr = mean_b 10 log10(R^2 / MSE_b).
With `Distances` (reference samples of the training data), also how far the sample SET is from
the data (docs/MATH.md §8.2-8.4): sliced Wasserstein "sw" and energy distance "energy" for vector
data, the digits-classifier Frechet distance "fd" (not Inception FID) for 8x8 digits, each also
as "pct_<name>" = 100 x solver / GT, GT's own distance to the same reference being the floor.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from .metrics import percent_of_gt, psnr, rmse
from .solvers.gt import gt_solve


@dataclass(frozen=True)
class Distances:
    """Distances of sample sets to `reference` (N, *D): name -> fn(samples, reference) -> float,
    and the GT samples' own values (the 100 % of "% of GT")."""

    reference: Tensor
    fns: dict
    gt: dict[str, float]
    source: dict  # where the reference came from: {"data", "n", "seed"}

    def score(self, x: Tensor) -> dict[str, Optional[float]]:
        """{name, pct_name} for the samples x (N, *D); non-finite samples are left out (their count
        in "non_finite"); a distance needs at least 2 finite samples, else None."""
        x = x.detach().to("cpu", torch.float64)
        finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
        out: dict[str, Optional[float]] = {"non_finite": int((~finite).sum())}
        for name, fn in self.fns.items():
            value = fn(x[finite], self.reference) if int(finite.sum()) >= 2 else None
            out[name] = value
            out[f"pct_{name}"] = None if value is None else percent_of_gt(value, self.gt[name])
        return out


def data_distances(field, gt_x1: Tensor, n: Optional[int] = None, seed: int = 0) -> Distances:
    """Distances to n fresh samples of the data set `field` was trained on (its header's
    data.name; ValueError if it names none), with the GT samples' own values. n defaults to the
    number of GT samples; the reference uses its own seed stream (core.report.reference_samples)."""
    from .report import distance_metrics, reference_samples
    n = int(gt_x1.shape[0]) if n is None else int(n)
    if n < 2:
        raise ValueError(f"a distribution distance needs at least 2 samples, got {n}")
    reference = reference_samples(field, n, seed).detach().to("cpu", torch.float64)
    fns = distance_metrics(field.data_shape, seed=seed)
    x = gt_x1.detach().to("cpu", torch.float64)
    gt = {name: fn(x, reference) for name, fn in fns.items()}
    return Distances(reference, fns, gt, {"data": field.meta["data"]["name"], "n": n, "seed": seed})


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
             gt: Optional[GroundTruth | Tensor] = None, distances: Optional[Distances] = None) -> list[dict]:
    """One row per (solver, NFE): {"solver", "nfe", "nfe_spent", "rmse", "psnr", "wall_s", "n", "finite"}
    and, with `distances`, each distance and its "pct_" % of GT (see Distances.score). A solver
    whose samples hold NaN / inf gets finite False, rmse = psnr = None and no distances.

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
                     "wall_s": round(wall, 4), "n": int(x0.shape[0]), "finite": finite,
                     **(distances.score(x) if distances is not None and finite else {})})
    return rows


DISTANCE_NAMES = ("sw", "energy", "fd")  # the order of their table columns


def _cell(v: Optional[float], width: int, spec: str) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}{spec}}"


def format_table(rows: list[dict], gt: Optional[dict] = None) -> str:
    """The rows as a fixed-width text table; distance columns ("sw", "energy", "fd", each with
    its "% GT") appear when the rows have them, and `gt` (GT's own distances) adds a GT row."""
    names = [d for d in DISTANCE_NAMES if any(d in r for r in rows)]
    head = f"{'solver':<24} {'nfe':>4} {'spent':>5} {'rmse':>10} {'psnr':>8}"
    head += "".join(f" {d:>10} {'% GT':>7}" for d in names) + f" {'wall_s':>8}"
    lines = [head, "-" * len(head)]
    if gt and names:
        lines.append(f"{'gt (dopri5)':<24} {gt.get('nfe', ''):>4} {gt.get('nfe', ''):>5} {'-':>10} {'-':>8}"
                     + "".join(f" {_cell(gt.get(d), 10, '.4g')} {100.0:>7.1f}" for d in names)
                     + f" {_cell(gt.get('wall_s'), 8, '.3f')}")
    for r in rows:
        if r.get("finite", True):
            err = f"{r['rmse']:>10.5f} {r['psnr']:>8.2f}"
        else:  # NaN / inf samples: flagged, never a number
            err = f"{'NON-FINITE':>10} {'-':>8}"
        lines.append(f"{r['solver'][:24]:<24} {r['nfe']:>4} {r['nfe_spent']:>5} {err}"
                     + "".join(f" {_cell(r.get(d), 10, '.4g')} {_cell(r.get('pct_' + d), 7, '.1f')}" for d in names)
                     + f" {r['wall_s']:>8.3f}")
    return "\n".join(lines)
