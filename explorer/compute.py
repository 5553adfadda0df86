"""What the pages compute, as plain functions over core (no streamlit, no solver maths):
run solvers from shared noise, compare them with GT, record and project their paths, sweep NFE.
Everything returned is numpy or plain Python, ready for explorer/figures.py and st.cache_data.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Callable, Optional

import numpy as np
import torch

from core import metrics
from core.paths import get_path, path_st_map
from core.solvers.gt import gt_solve
from core.solvers.registry import BUILTIN_SOLVERS, CLASSICAL, get_solver, sample
from core.trajectories import gt_trajectory, solver_trajectory, step_errors

GT_LABEL = "GT (dopri5)"
RK2 = "midpoint"  # the paper's RK2 baseline

SOLVER_LABELS = {"euler": "RK1 (Euler)", "midpoint": "RK2 (midpoint)", "heun": "Heun", "rk4": "RK4",
                 "ddim": "DDIM", "dpm++2m": "DPM-Solver++(2M)", "edm": "EDM (Heun)"}


def solver_label(name: str) -> str:
    return SOLVER_LABELS.get(name, name)


def noise(field, n: int, seed: int) -> torch.Tensor:
    """x0 ~ N(0, I), (n, *D), the same for a given seed, on the model's device."""
    return field.noise(n, generator=torch.Generator().manual_seed(int(seed))).to(field.device)


def baseline(name: str, field):
    """A built-in solver (classical or dedicated) from core's registry."""
    return get_solver(name, field)


def usable_nfe(solver, nfe: int) -> Optional[int]:
    """The largest NFE <= nfe the solver accepts (None if none in 1..nfe)."""
    for k in range(int(nfe), 0, -1):
        try:
            solver.check_nfe(k)
            return k
        except ValueError:
            continue
    return None


def available_baselines(field) -> list[str]:
    """Built-in solvers that can run on this model (the dedicated ones need a Gaussian path)."""
    return [n for n in BUILTIN_SOLVERS if n in CLASSICAL or field.path is not None]


def errors_to_gt(x: torch.Tensor, gt: torch.Tensor, data_range: float) -> dict[str, float]:
    """Mean over samples of the per-sample RMSE and PSNR (core.metrics) to the GT samples."""
    r = metrics.rmse(x, gt.to(x.dtype))
    p = metrics.psnr(x, gt.to(x.dtype), data_range=data_range)
    return {"rmse": float(r.mean()), "psnr": float(p.mean())}


@dataclass
class Run:
    """One solver run from shared noise."""

    label: str
    nfe: int
    x: np.ndarray  # (N, *D)
    rmse: float = float("nan")
    psnr: float = float("nan")


@dataclass
class GTSamples:
    """The GT samples of one noise set (x: (N, *D)) and the NFE the adaptive solver spent."""

    x: np.ndarray
    nfe: int


@torch.no_grad()
def gt_samples(field, n: int, seed: int, gt_atol: float = 1e-5, disk: bool = False) -> GTSamples:
    """dopri5 GT samples of noise(field, n, seed); with `disk`, kept between server starts
    (explorer/gtcache.py) for models with a content hash."""

    def solve() -> tuple[np.ndarray, int]:
        gt = gt_solve(field, noise(field, n, seed), atol=gt_atol, rtol=gt_atol)
        return gt.x.cpu().numpy(), gt.nfe

    if not disk:
        return GTSamples(*solve())
    from .gtcache import load_or_solve

    x, nfe, _ = load_or_solve(field, n, seed, gt_atol, solve)
    return GTSamples(x, nfe)


def _gt_tensor(gt: GTSamples, field) -> torch.Tensor:
    return torch.from_numpy(np.asarray(gt.x)).to(field.device)


@torch.no_grad()
def compare_samples(field, runs: list[tuple[str, object, Optional[int]]], n: int, seed: int,
                    gt_atol: float = 1e-5, gt: Optional[GTSamples] = None) -> list[Run]:
    """GT first, then each (label, solver, nfe) from the same noise, with RMSE/PSNR to GT.
    `gt`: the GT samples of this noise when already solved (gt_samples)."""
    x0 = noise(field, n, seed)
    gt = gt if gt is not None else gt_samples(field, n, seed, gt_atol)
    gt_x = _gt_tensor(gt, field)
    out = [Run(GT_LABEL, gt.nfe, np.asarray(gt.x), 0.0, float("inf"))]
    for label, solver, nfe in runs:
        res = sample(solver, field, x0, nfe)
        out.append(Run(label, res.nfe, res.x.cpu().numpy(), **errors_to_gt(res.x, gt_x, field.data_range)))
    return out


@torch.no_grad()
def data_comparison(field, gt: GTSamples, seed: int = 0) -> Optional[dict]:
    """The GT samples against fresh samples of the data the model was trained on (core.report's
    reference samples, as many as GT), by core.report's distances for this shape (sliced
    Wasserstein and energy for vectors, the digits-classifier Frechet distance for digits). Each
    distance also between two independent data samples of that size: the floor a perfect model
    would reach with this many samples. None when the model does not name its data set.
    {"data": (N, *D), "rows": [{"distance", "GT vs data", "data vs data (same size)"}]}."""
    from core.report import distance_metrics, reference_samples

    n = len(gt.x)
    try:
        data = reference_samples(field, n, seed)
        other = reference_samples(field, n, seed + 1)
    except (ValueError, KeyError):
        return None
    x = torch.from_numpy(np.asarray(gt.x)).double()
    classifier = "MNIST" if tuple(field.data_shape) == (1, 28, 28) else "digits"
    names = {"sw": "sliced Wasserstein", "energy": "energy distance",
             "fd": f"Fréchet distance ({classifier} classifier features, not Inception FID)"}
    rows = []
    for key, fn in distance_metrics(tuple(field.data_shape)).items():
        rows.append({"distance": names.get(key, key), "GT vs data": float(fn(x, data.double())),
                     "data vs data (same size)": float(fn(other.double(), data.double()))})
    return {"data": data.cpu().numpy(), "rows": rows}


@torch.no_grad()
def image_scores(field, runs: list[Run], seed: int = 0) -> Optional[list[dict]]:
    """For 28x28 MNIST models, each run's sample set scored by the shipped MNIST classifier
    (core.report's scores): legibility (the fraction of samples it reads as their conditioning
    label; class-conditional models) and the Frechet distance of its features to as many fresh
    data images (not Inception FID), also as % of GT's own distance (the first run). None for other
    models. Rows: {"solver", "legibility", "fd", "pct_fd"} (a missing score is absent)."""
    from core.metrics import percent_of_gt
    from core.report import distance_metrics, label_scores, reference_samples

    if tuple(field.data_shape) != (1, 28, 28) or not runs:
        return None
    n = len(runs[0].x)
    fd = distance_metrics(tuple(field.data_shape)).get("fd")
    try:
        reference = reference_samples(field, n, seed)
    except (ValueError, KeyError):
        reference = None
    labelled = label_scores(field, n)
    rows, gt_fd = [], None
    for k, r in enumerate(runs):
        x = torch.from_numpy(np.nan_to_num(np.asarray(r.x, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0))
        row = {"solver": r.label, **{name: fn(x) for name, fn in labelled.items()}}
        if reference is not None and fd is not None:
            row["fd"] = fd(x, reference)
            gt_fd = row["fd"] if k == 0 else gt_fd
            row["pct_fd"] = percent_of_gt(row["fd"], gt_fd)
        rows.append(row)
    return rows


@dataclass
class PathRun:
    """A solver's path: step times (K,), states projected on the GT paths' first two PCA
    components (K, B, 2), the raw states for 2-D models (else None), and the mean RMSE to the
    GT path at each step point (K,)."""

    label: str
    nfe: int
    times: np.ndarray
    proj: np.ndarray
    xy: Optional[np.ndarray]
    errors: np.ndarray


@dataclass
class PathsBundle:
    gt: PathRun  # dense GT path (its `errors` are zeros)
    runs: list[PathRun] = dc_field(default_factory=list)
    explained: tuple[float, float] = (float("nan"), float("nan"))  # PCA explained variance ratios


@torch.no_grad()
def compare_paths(field, runs: list[tuple[str, object, Optional[int]]], n: int, seed: int,
                  n_dense: int = 41, gt_atol: float = 1e-5, pool: Optional[int] = None) -> PathsBundle:
    """Paths of GT and of each solver from the same noise, and their PCA projection.

    The noise is noise(field, n, seed), or with `pool` the first n of noise(field, pool, seed)
    (the first paths of an evaluation set). The PCA (scikit-learn) is fitted on the dense GT
    path states of all samples, so every curve lives in the plane where the GT paths vary most.
    """
    from sklearn.decomposition import PCA  # imported here: scikit-learn takes seconds to import

    x0 = noise(field, n, seed) if pool is None else noise(field, max(pool, n), seed)[:n]
    trajs = [(label, solver_trajectory(solver, field, x0, nfe)) for label, solver, nfe in runs]
    dense = torch.linspace(0, 1, n_dense, dtype=torch.float64)
    all_times = torch.cat([dense] + [t.times for _, t in trajs])
    gt_all = gt_trajectory(field, x0, all_times, atol=gt_atol, rtol=gt_atol)
    flat = lambda xs: xs.reshape(xs.shape[0] * xs.shape[1], -1).cpu().double().numpy()  # (K*B, D)
    gt_dense = gt_all.xs[:n_dense]  # (K, B, *D)
    pca = PCA(n_components=2).fit(flat(gt_dense))
    is_2d = tuple(field.data_shape) == (2,)

    def project(xs: torch.Tensor) -> np.ndarray:
        K, B = xs.shape[:2]
        return pca.transform(flat(xs)).reshape(K, B, 2)

    def raw(xs: torch.Tensor) -> Optional[np.ndarray]:
        return xs.cpu().double().numpy() if is_2d else None

    gt_run = PathRun(GT_LABEL, gt_all.nfe, dense.numpy(), project(gt_dense), raw(gt_dense), np.zeros(n_dense))
    bundle = PathsBundle(gt_run, explained=tuple(float(v) for v in pca.explained_variance_ratio_[:2]))
    start = n_dense
    for label, traj in trajs:
        k = traj.times.numel()
        gt_here = type(traj)(traj.times, gt_all.xs[start:start + k], gt_all.nfe)
        start += k
        err = step_errors(traj, gt_here).cpu().double().numpy()
        bundle.runs.append(PathRun(label, traj.nfe, traj.times.numpy(), project(traj.xs), raw(traj.xs), err))
    return bundle


@torch.no_grad()
def benchmark(field, names: list[str], nfes: list[int], learned: list[tuple[str, object]], n: int, seed: int,
              progress: Optional[Callable[[float, str], None]] = None,
              stop: Optional[Callable[[], bool]] = None, gt_atol: float = 1e-5,
              gt: Optional[GTSamples] = None) -> list[dict]:
    """Error to GT vs NFE: every built-in solver in `names` at every NFE it accepts in `nfes`,
    and every learned solver at its own NFE. Rows: {"solver", "kind", "nfe", "rmse", "psnr"}.
    `gt`: the GT samples of noise(field, n, seed) when already solved."""
    x0 = noise(field, n, seed)
    gt = gt if gt is not None else gt_samples(field, n, seed, gt_atol)
    gt_x = _gt_tensor(gt, field)
    tasks = []
    for name in names:
        solver = baseline(name, field)
        for nfe in sorted(set(nfes)):
            try:
                solver.check_nfe(nfe)
            except ValueError:
                continue
            tasks.append((solver_label(name), "built-in", solver, nfe))
    tasks += [(label, "learned", solver, solver.nfe) for label, solver in learned]
    rows = [{"solver": GT_LABEL, "kind": "GT", "nfe": gt.nfe, "rmse": 0.0, "psnr": float("inf")}]
    for k, (label, kind, solver, nfe) in enumerate(tasks):
        if stop is not None and stop():
            break
        if progress is not None:
            progress(k / max(len(tasks), 1), f"{label} at NFE {nfe}")
        res = sample(solver, field, x0, nfe)
        rows.append({"solver": label, "kind": kind, "nfe": res.nfe, **errors_to_gt(res.x, gt_x, field.data_range)})
    return rows


def coinciding(rows: list[dict], rtol: float = 1e-4) -> list[tuple[str, str]]:
    """Pairs of built-in solvers whose benchmark curves are the same (same NFEs, RMSEs equal to
    `rtol`, float32 rounding apart): e.g. DDIM and Euler on an FM-OT path, where DDIM's update is
    Euler's (measured: 2e-6 relative apart on the checkerboard)."""
    curves: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.get("kind") == "built-in":
            curves.setdefault(r["solver"], {})[int(r["nfe"])] = float(r["rmse"])
    names, out = list(curves), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ca, cb = curves[a], curves[b]
            if ca.keys() == cb.keys() and all(np.isclose(ca[k], cb[k], rtol=rtol, atol=0) for k in ca):
                out.append((a, b))
    return out


REFERENCE_TARGETS = {"EDM schedule": "edm", "cosine path": "fm-cs"}


def reference_maps(field, n: int = 101) -> dict[str, dict[str, np.ndarray]]:
    """The identity map and the ST maps that take the model's path to the dedicated schedules
    (EDM's, the cosine path's), normalised to s_0 = 1 (core.paths.path_st_map, Theorem 2.3).
    name -> {"r", "t", "dt", "s", "ds"}, each (n,). A map that is not finite is left out."""
    r = torch.linspace(0, 1, n, dtype=torch.float64)
    out = {"identity": {"r": r.numpy(), "t": r.numpy(), "dt": np.ones(n), "s": np.ones(n), "ds": np.zeros(n)}}
    if field.path is None:
        return out
    for name, target in REFERENCE_TARGETS.items():
        if target == field.path.name:
            continue
        m = path_st_map(field.path, get_path(target), r, normalize=True)
        curves = {"r": r.numpy(), **{k: getattr(m, k).detach().double().numpy() for k in ("t", "dt", "s", "ds")}}
        if all(np.isfinite(v).all() for v in curves.values()):
            out[name] = curves
    return out


def is_st_params(params: dict) -> bool:
    """Whether decoded solver parameters describe a learned scale-time map (Bespoke). A BNS
    solver also reports its (fixed) preconditioning map, but its learned part is the
    coefficients a, b."""
    return {"r", "t", "dt", "s", "ds"} <= set(params) and "b" not in params


def is_ns_params(params: dict) -> bool:
    """Whether decoded solver parameters are a non-stationary (BNS) solver's."""
    return {"t", "a", "b"} <= set(params)


def used_coefficients(params: dict) -> dict[str, np.ndarray]:
    """A BNS solver's coefficient matrices with the entries no step uses set to NaN (blank in a
    heatmap): b_ij and B_kj exist for j <= i and j < k only. a and A as one column each."""
    b = np.array(params["b"], dtype=float)  # (n, n)
    b[np.triu_indices_from(b, k=1)] = np.nan
    out = {"a_i (weight of x0)": np.asarray(params["a"], dtype=float)[:, None], "b_ij (weights of u_j)": b}
    if "A" in params and "B" in params:
        B = np.array(params["B"], dtype=float)  # (n+1, n)
        B[np.triu_indices(B.shape[0], k=0, m=B.shape[1])] = np.nan
        out["A_k (model space)"] = np.asarray(params["A"], dtype=float)[:, None]
        out["B_kj (model space)"] = B
    return out


def to_numpy_params(decoded: dict) -> dict[str, np.ndarray]:
    """A learned solver's decode() as float64 numpy arrays (for plots and caching)."""
    return {k: v.detach().cpu().double().numpy() for k, v in decoded.items()}
