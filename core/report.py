"""NFE sweeps: every solver at every NFE, scored against GT samples and the true distribution.

    result = sweep(field, SweepConfig(solvers=("euler", "midpoint"), nfes=(4, 8)), reference)
    result.to_json(path); print(result.to_markdown()); sweep_figure(result, "rmse").write_html(...)

For one velocity field and one fixed set of noise x0 (the same for every solver):
- GT: an adaptive dopri5 solve of x0 (its NFE is recorded);
- each built-in solver at each NFE; a solver whose NFE must be a multiple (rk4: 4) or odd (edm)
  runs at the largest valid NFE not above the target (`nfe` records what it spent);
- each learned family trained per NFE when asked (`train`), with a budget in iterations and
  optionally seconds; its training time is recorded next to the model's own training time.
Scores per (solver, NFE): mean per-sample RMSE and PSNR to the GT sample (docs/MATH.md §8.1),
and distances of the sample set to `reference`, fresh samples of the true distribution:
sliced Wasserstein ("sw") and energy distance ("energy") for vector data, the digits-classifier
Frechet distance ("fd", NOT Inception FID, see core/features.py) for 8x8 digits, the MNIST
classifier's (core/features_mnist.py) for 28x28 MNIST. GT gets the same distances, so each
solver's distance is also shown as % of GT (the papers' "GT-FID / %"). Class-conditional 28x28
models also get "legibility": the fraction of samples the MNIST classifier assigns to their label.
The evaluation noise uses its own seed (`seed + EVAL_SEED_OFFSET`), never the noise a learned
solver was trained on.
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from . import metrics
from .solvers.gt import gt_solve
from .train import TrainConfig

_TRAIN = TrainConfig()  # learned solvers in a sweep train with train-solver's defaults unless told otherwise

EVAL_SEED_OFFSET = 7919  # evaluation noise seed = seed + this (training noise uses `seed`)

DEFAULT_SOLVERS = ("euler", "midpoint", "rk4", "ddim", "dpm++2m", "edm")
LEARNED = ("rk1-bespoke", "rk2-bespoke", "bns")
METRIC_LABELS = {"rmse": "RMSE to GT", "psnr": "PSNR to GT (dB)", "sw": "sliced Wasserstein to data",
                 "energy": "energy distance to data", "fd": "classifier FD to data (not Inception FID)",
                 "legibility": "legibility (classifier agrees with the label)"}
HIGHER_IS_BETTER = {"psnr", "legibility"}


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep and how much to spend."""

    solvers: tuple[str, ...] = DEFAULT_SOLVERS  # built-in solvers (core.solvers.registry names)
    learned: tuple[str, ...] = ()  # learned families trained per NFE: "rk1-bespoke", "rk2-bespoke", "bns"
    nfes: tuple[int, ...] = (4, 8, 12, 16)  # target NFEs
    n_samples: int = 1000  # noise samples solved by every solver (same x0 for all)
    n_projections: int = 256  # random directions of the sliced Wasserstein distance
    gt_atol: float = 1e-5  # dopri5 tolerances of the GT samples
    gt_rtol: float = 1e-5
    nearest_valid_nfe: bool = True  # run at the largest valid NFE <= target (else skip the cell)
    train_iters: int = _TRAIN.iters  # learned solvers: Adam iterations per (family, NFE)
    train_defaults: bool = False  # learned solvers: train with core.train.TrainConfig's defaults (the CLI's
    # converged recipe; train_iters / train_n / train_batch are then not used)
    train_seconds: Optional[float] = None  # learned solvers: also stop after this many seconds each
    train_n: int = _TRAIN.n_train  # learned solvers: GT paths / pairs to train on (plus train_n // 4 held out)
    train_batch: int = _TRAIN.batch_size  # learned solvers: GT paths / pairs per Adam iteration
    train_gt: Optional[str] = None  # learned solvers: a GT data set folder (make-gt) to train on (core/gtdata)
    train_paths: Optional[tuple[int, int]] = None  # with train_defaults: (n_train, n_val) GT paths instead of
    # TrainConfig's (a U-Net's GT paths cost seconds each on a CPU)
    seed: int = 0  # training seed; evaluation noise uses seed + EVAL_SEED_OFFSET
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda"

    def __post_init__(self):
        for n in self.nfes:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"NFE values must be positive integers, got {n!r} in {self.nfes}")
        for fam in self.learned:
            if fam not in LEARNED:
                raise ValueError(f"unknown learned solver family {fam!r}; known: {LEARNED}")
        for name in ("n_samples", "n_projections", "train_iters", "train_n", "train_batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"SweepConfig.{name} must be a positive integer, got {v!r}")
        if self.n_samples < 2:
            raise ValueError(f"n_samples must be >= 2 to compare distributions, got {self.n_samples}")


# -------------------------------------------------------------------------------------------
# Distribution metrics
# -------------------------------------------------------------------------------------------

DistanceFn = Callable[[Tensor, Tensor], float]


def distance_metrics(data_shape: tuple[int, ...], n_projections: int = 256, seed: int = 0) -> dict[str, DistanceFn]:
    """The distances to the true distribution used for data of this shape.

    (1, 8, 8) digits and (1, 28, 28) MNIST: {"fd"} (each its own classifier's features); anything
    else: {"sw", "energy"} (sliced Wasserstein with the same `n_projections` directions on every
    call, so solvers are compared on equal terms)."""
    if tuple(data_shape) == (1, 8, 8):
        from .features import digits_fd
        return {"fd": digits_fd}
    if tuple(data_shape) == (1, 28, 28):
        from .features_mnist import mnist_fd
        return {"fd": mnist_fd}

    def sw(a: Tensor, b: Tensor) -> float:
        return metrics.sliced_wasserstein(a, b, n_projections, torch.Generator().manual_seed(seed))

    return {"sw": sw, "energy": metrics.energy_distance}


def label_scores(field, n: int) -> dict[str, Callable[[Tensor], float]]:
    """Scores of a sample set that need each sample's conditioning label: {"legibility"} for a
    class-conditional 28x28 model (core.features_mnist), else {}. fn(samples (n, *D)) -> float."""
    if tuple(field.data_shape) != (1, 28, 28):
        return {}
    from .features_mnist import legibility, row_labels
    labels = row_labels(field, n)
    if labels is None:
        return {}
    return {"legibility": lambda x: legibility(x, labels)}


def reference_samples(field, n: int, seed: int = 0) -> Tensor:
    """n fresh samples of the data set a model was trained on (field.meta["data"]["name"])."""
    from .data import sample_data
    data = field.meta.get("data") if isinstance(field.meta, dict) else None
    name = data.get("name") if isinstance(data, dict) else None
    if name is None:
        raise ValueError(f"model {field.model_id!r} does not say which data set it was trained on; "
                         "pass reference samples explicitly")
    return sample_data(name, n, torch.Generator().manual_seed(seed + 2 * EVAL_SEED_OFFSET))


def model_train_seconds(field) -> Optional[float]:
    """The model's own training wall time from its checkpoint header, if recorded."""
    training = field.meta.get("training") if isinstance(field.meta, dict) else None
    sec = training.get("seconds") if isinstance(training, dict) else None
    return float(sec) if isinstance(sec, (int, float)) else None


# -------------------------------------------------------------------------------------------
# The sweep
# -------------------------------------------------------------------------------------------

def valid_nfe(solver, target: int, nearest: bool = True) -> Optional[int]:
    """The NFE a solver runs at for `target`: target itself if valid, else (nearest=True) the
    largest valid NFE below it, else None."""
    candidates = range(target, 0, -1) if nearest else (target,)
    for n in candidates:
        try:
            solver.check_nfe(n)
            return n
        except ValueError:
            continue
    return None


def _finite(v: float) -> Optional[float]:
    return v if math.isfinite(v) else None


@dataclass
class SweepResult:
    """All scores of one sweep. rows: one dict per (solver, target NFE) with keys solver, kind
    ("builtin" / "learned"), nfe_target, nfe, rmse, psnr, each distance, pct_<distance>, seconds
    (sampling wall time) and, for learned rows, train_seconds / gt_seconds / train_iters."""

    model: dict[str, Any]
    config: dict[str, Any]
    gt: dict[str, Any]
    rows: list[dict[str, Any]] = dc_field(default_factory=list)
    distances: tuple[str, ...] = ()
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "config": self.config, "gt": self.gt, "rows": self.rows,
                "distances": list(self.distances), "device": self.device}

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepResult":
        return cls(d["model"], d["config"], d["gt"], d["rows"], tuple(d["distances"]), d.get("device", "cpu"))

    @property
    def solvers(self) -> list[str]:
        return list(dict.fromkeys(r["solver"] for r in self.rows))

    @property
    def scores(self) -> list[str]:
        """Scores beside the distances that this result has (e.g. "legibility")."""
        return [m for m in ("legibility",) if self.gt.get(m) is not None]

    @property
    def nfes(self) -> list[int]:
        return sorted({r["nfe_target"] for r in self.rows})

    def cell(self, solver: str, nfe_target: int) -> Optional[dict[str, Any]]:
        for r in self.rows:
            if r["solver"] == solver and r["nfe_target"] == nfe_target:
                return r
        return None

    def best(self, metric: str, nfe_target: int) -> Optional[dict[str, Any]]:
        """The best row at a target NFE for `metric` (None where no row has a value)."""
        rows = [r for r in self.rows if r["nfe_target"] == nfe_target and r.get(metric) is not None]
        if not rows:
            return None
        key = (lambda r: -r[metric]) if metric in HIGHER_IS_BETTER else (lambda r: r[metric])
        return min(rows, key=key)

    def to_markdown(self, metric_names: Optional[list[str]] = None, digits: int = 3) -> str:
        """One markdown table per metric: solvers x target NFE; a cell run at a lower NFE says
        so as "value (@n)"; distances also give % of GT; the best cell per column is bold."""
        out = []
        for m in metric_names or ["rmse", "psnr", *self.distances, *self.scores]:
            gt_val = self.gt.get(m)
            head = METRIC_LABELS.get(m, m)
            if m in self.distances or m in self.scores:
                head += f"; GT (NFE {self.gt['nfe']}): {_fmt(gt_val, digits)}"
            out.append(f"**{head}**\n")
            out.append("| solver | " + " | ".join(f"NFE {n}" for n in self.nfes) + " |")
            out.append("|---|" + "---|" * len(self.nfes))
            best = {n: self.best(m, n) for n in self.nfes}
            for s in self.solvers:
                cells = []
                for n in self.nfes:
                    r = self.cell(s, n)
                    if r is None or r.get(m) is None:
                        cells.append("-")
                        continue
                    text = _fmt(r[m], digits)
                    if m in self.distances and r.get(f"pct_{m}") is not None:
                        text += f" ({r[f'pct_{m}']:.0f} %)"
                    if r["nfe"] != n:
                        text += f" (@{r['nfe']})"
                    if best[n] is r:
                        text = f"**{text}**"
                    cells.append(text)
                out.append(f"| {s} | " + " | ".join(cells) + " |")
            out.append("")
        return "\n".join(out)

    def training_markdown(self) -> str:
        """Training time of each learned solver next to the model's own training time."""
        rows = [r for r in self.rows if r["kind"] == "learned"]
        if not rows:
            return ""
        model_s = self.model.get("train_seconds")
        out = ["| learned solver | NFE | iterations | train s | GT s | % of model training |", "|---|---|---|---|---|---|"]
        for r in rows:
            total = r["train_seconds"] + r["gt_seconds"]
            pct = f"{100 * total / model_s:.1f} %" if model_s else "n/a"
            out.append(f"| {r['solver']} | {r['nfe']} | {r['train_iters']} | {r['train_seconds']:.1f} | "
                       f"{r['gt_seconds']:.1f} | {pct} |")
        ms = f"{model_s:.1f} s" if model_s else "not recorded"
        return "\n".join(out) + f"\n\nModel training time: {ms} (same machine class; % = (train + GT) / model).\n"


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if a != 0 and (a >= 1e4 or a < 1e-3):
        return f"{v:.2e}"
    return f"{v:.{digits}g}" if a < 100 else f"{v:.1f}"


def _score(x: Tensor, x_gt: Tensor, reference: Tensor, dists: dict[str, DistanceFn], data_range: float,
           gt_dist: Optional[dict[str, float]] = None, labelled: Optional[dict] = None) -> dict[str, Any]:
    x, x_gt = x.detach().to("cpu", torch.float64), x_gt.detach().to("cpu", torch.float64)
    row: dict[str, Any] = {"rmse": _finite(metrics.rmse(x, x_gt).mean().item()),
                           "psnr": _finite(metrics.psnr(x, x_gt, data_range).mean().item())}
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    row["non_finite"] = int((~finite).sum())
    for name, fn in dists.items():
        row[name] = fn(x[finite], reference) if finite.sum() >= 2 else None
        if gt_dist is not None and row[name] is not None:
            row[f"pct_{name}"] = metrics.percent_of_gt(row[name], gt_dist[name])
    for name, fn in (labelled or {}).items():  # per-sample labels: every sample counts (non-finite ones fail)
        row[name] = fn(torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0))
    return row


def _train_learned(field, family: str, nfe: int, cfg: SweepConfig, device: str, gt=None):
    """Train one learned solver within the budget; returns (solver, TrainResult). gt: a GT data
    set to train on (used when it fits the family: Bespoke needs one stored as dense paths)."""
    if gt is not None and family != "bns" and gt.spec.store != "paths":
        gt = None
    from .train import NonFiniteLossError, SolverSpec, TrainConfig, train_solver
    if cfg.train_defaults:
        sizes = {} if cfg.train_paths is None else {"n_train": int(cfg.train_paths[0]), "n_val": int(cfg.train_paths[1]),
                                                    "batch_size": min(_TRAIN.batch_size, int(cfg.train_paths[0]))}
        tcfg = TrainConfig(gt_atol=cfg.gt_atol, gt_rtol=cfg.gt_rtol, device=device, seed=cfg.seed, **sizes)
    else:
        tcfg = TrainConfig(iters=cfg.train_iters, n_train=cfg.train_n, n_val=max(cfg.train_n // 4, 2),
                           batch_size=min(cfg.train_batch, cfg.train_n),
                           val_every=max(cfg.train_iters // 10, 1), gt_atol=cfg.gt_atol, gt_rtol=cfg.gt_rtol,
                           device=device, seed=cfg.seed, coarse_to_fine=False, patience=0)  # exactly train_iters
    stop = threading.Event()
    timer = None
    if cfg.train_seconds is not None:
        timer = threading.Timer(cfg.train_seconds, stop.set)
        timer.start()
    try:
        res = train_solver(field, SolverSpec(family=family, nfe=nfe), tcfg, stop_event=stop, gt=gt)
    except NonFiniteLossError as e:  # the best-validation parameters; say so in the row
        res = e.result
        res.diverged = str(e)
    finally:
        if timer is not None:
            timer.cancel()
    return res.solver, res


def sweep(field, cfg: SweepConfig = SweepConfig(), reference: Optional[Tensor] = None,
          dists: Optional[dict[str, DistanceFn]] = None,
          progress: Optional[Callable[[str], None]] = None, x0: Optional[Tensor] = None) -> SweepResult:
    """Run every solver of `cfg` at every NFE on one noise set and score it (module docstring).

    cfg.solvers may also name saved learned-solver files: each runs at the NFE it was trained for.

    reference: fresh true-distribution samples (N, *D) for the distances (default:
      `reference_samples(field, cfg.n_samples)` from the model's data set).
    dists: name -> fn(samples, reference) -> float (default: `distance_metrics(field.data_shape)`).
    progress: called with a one-line message after each step.
    x0: the evaluation noise (N, *D) (default: cfg.n_samples draws with seed cfg.seed + EVAL_SEED_OFFSET).
    """
    from .solvers.registry import get_solver, sample
    from .train import resolve_device

    device = resolve_device(cfg.device)
    field.to(device)
    say = progress or (lambda msg: None)
    dists = dists if dists is not None else distance_metrics(field.data_shape, cfg.n_projections, cfg.seed)
    if reference is None and dists:
        try:
            reference = reference_samples(field, cfg.n_samples, cfg.seed)
        except ValueError as e:  # no known data set: RMSE / PSNR only
            say(f"no distances to the data: {e}")
            dists = {}
    reference = None if reference is None else reference.detach().to("cpu", torch.float64)
    if x0 is None:
        x0 = field.noise(cfg.n_samples, generator=torch.Generator().manual_seed(cfg.seed + EVAL_SEED_OFFSET))
    x0 = x0.to(device)

    t0 = time.perf_counter()
    gt = gt_solve(field, x0, atol=cfg.gt_atol, rtol=cfg.gt_rtol)
    gt_seconds = time.perf_counter() - t0
    x_gt = gt.x
    gt_dist = {name: fn(x_gt.detach().to("cpu", torch.float64), reference) for name, fn in dists.items()}
    labelled = label_scores(field, int(x0.shape[0]))
    gt_row = {"solver": "gt (dopri5)", "nfe": gt.nfe, "seconds": gt_seconds, "atol": cfg.gt_atol, **gt_dist,
              **{name: fn(x_gt.detach().cpu()) for name, fn in labelled.items()}}
    say(f"GT: NFE {gt.nfe}, {gt_seconds:.1f} s, " + ", ".join(f"{k} {v:.4g}" for k, v in gt_dist.items()))

    model = {"model_id": field.model_id, "data_shape": list(field.data_shape), "data_range": field.data_range,
             "path": None if field.path is None else field.path.name, "guidance_scale": field.guidance_scale,
             "train_seconds": model_train_seconds(field), "file": field.meta.get("file")}
    result = SweepResult(model, asdict(cfg), gt_row, [], tuple(dists), str(device))

    for name in cfg.solvers:
        solver = get_solver(name, field, device=device)
        if name in ("ddim", "dpm++2m", "edm") and field.path is None:
            say(f"{name}: skipped (the field has no Gaussian path)")
            continue
        own = getattr(solver, "nfe", None)  # a learned solver file runs at its own NFE only
        plan = [(own, own)] if isinstance(own, int) else [(n, valid_nfe(solver, n, cfg.nearest_valid_nfe))
                                                         for n in cfg.nfes]
        for target, nfe in plan:
            if nfe is None:
                continue
            t0 = time.perf_counter()
            x = sample(solver, field, x0, nfe).x
            sec = time.perf_counter() - t0
            label = solver.name if isinstance(own, int) else name
            row = {"solver": label, "kind": "file" if isinstance(own, int) else "builtin", "nfe_target": target,
                   "nfe": nfe, "seconds": sec, **_score(x, x_gt, reference, dists, field.data_range, gt_dist, labelled)}
            result.rows.append(row)
            say(f"{label} @ {nfe}: rmse {row['rmse']}")

    gt_set = None
    if cfg.learned and cfg.train_gt:
        from .gtdata import open_gt
        gt_set = open_gt(cfg.train_gt, field)
    for family in cfg.learned:
        for target in cfg.nfes:
            nfe = target - (target % 2) if family == "rk2-bespoke" else target
            if nfe < (2 if family == "rk2-bespoke" else 1) or (nfe != target and not cfg.nearest_valid_nfe):
                continue
            solver, res = _train_learned(field, family, nfe, cfg, str(device), gt_set)
            t0 = time.perf_counter()
            x = sample(solver, field, x0, None).x
            sec = time.perf_counter() - t0
            row = {"solver": family, "kind": "learned", "nfe_target": target, "nfe": solver.nfe, "seconds": sec,
                   "train_seconds": res.elapsed, "gt_seconds": res.gt_seconds,
                   "train_iters": (res.history[-1]["iteration"] if res.history else 0)
                   + sum(st["iterations"] for st in getattr(res, "stages", [])),
                   "curve": training_curve(res),
                   "best_val": res.best, "init_val": res.init, "diverged": getattr(res, "diverged", None),
                   **_score(x, x_gt, reference, dists, field.data_range, gt_dist, labelled)}
            result.rows.append(row)
            say(f"{family} @ {nfe}: trained {row['train_iters']} it in {res.elapsed:.1f} s, rmse {row['rmse']}")
    return result


def training_curve(res) -> list[list[float]]:
    """[seconds, validation RMSE] of a TrainResult: the main stage's validations, shifted by the
    time its earlier (coarse-to-fine) stages took, after one point per earlier stage (its end,
    its best RMSE at its own NFE)."""
    out, t = [], 0.0
    for st in getattr(res, "stages", []):
        if st.get("stage") == "final-rmse":
            continue
        t += st["seconds"]
        out.append([round(t, 3), st["best"]["rmse"]])
    out += [[round(t + h["elapsed"], 3), h["rmse"]] for h in res.history if h.get("rmse") is not None]
    return out


# -------------------------------------------------------------------------------------------
# Figures
# -------------------------------------------------------------------------------------------

def sweep_figure(result: SweepResult, metric: str = "rmse"):
    """Plotly figure of `metric` vs NFE, one line per solver, GT as a horizontal line for
    distances (log axes for error-like metrics)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for s in result.solvers:
        rows = sorted((r for r in result.rows if r["solver"] == s and r.get(metric) is not None),
                      key=lambda r: r["nfe"])
        fig.add_trace(go.Scatter(x=[r["nfe"] for r in rows], y=[r[metric] for r in rows], mode="lines+markers",
                                 name=s, line={"dash": "dash" if rows and rows[0]["kind"] == "learned" else "solid"}))
    if metric in result.distances and result.gt.get(metric) is not None:
        fig.add_hline(y=result.gt[metric], line_dash="dot", annotation_text=f"GT (NFE {result.gt['nfe']})")
    log_y = metric not in HIGHER_IS_BETTER
    fig.update_layout(title=f"{METRIC_LABELS.get(metric, metric)} vs NFE", xaxis_title="NFE",
                      yaxis_title=METRIC_LABELS.get(metric, metric), template="plotly_white")
    fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def write_outputs(result: SweepResult, out_dir: str | Path, stem: str = "sweep", plot: str = "html") -> list[Path]:
    """Write <stem>.json, <stem>.md and, with plot="html", <stem>_<metric>.html per metric;
    with plot="svg", <stem>_<metric>.svg (dependency-free). Returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    result.to_json(paths[0])
    paths[1].write_text(result.to_markdown() + "\n" + result.training_markdown())
    for m in ["rmse", "psnr", *result.distances]:
        if plot == "html":
            p = out_dir / f"{stem}_{m}.html"
            sweep_figure(result, m).write_html(p, include_plotlyjs="cdn")
        elif plot == "svg":
            p = out_dir / f"{stem}_{m}.svg"
            p.write_text(sweep_svg(result, m))
        elif plot in ("none", None):
            continue
        else:
            raise ValueError(f"plot must be 'html', 'svg' or 'none', got {plot!r}")
        paths.append(p)
    return paths


_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def convergence_svg(result: SweepResult, width: int = 560, height: int = 340) -> str:
    """Validation RMSE (log) vs training seconds of every learned row with a "curve", one line
    each (a coarse-to-fine stage's end is the first point, at its own NFE)."""
    rows = [r for r in result.rows if r["kind"] == "learned" and r.get("curve")]
    if not rows:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60"><text x="10" y="30">no training curves</text></svg>'
    pts = [(x, y) for r in rows for x, y in r["curve"] if y > 0]
    x_hi = max(x for x, _ in pts) or 1.0
    y_lo, y_hi = math.log10(min(y for _, y in pts)), math.log10(max(y for _, y in pts))
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    L, R, T, B = 60, 150, 30, 40
    pw, ph = width - L - R, height - T - B
    px = lambda x: L + x / x_hi * pw  # noqa: E731
    py = lambda y: T + (1 - (math.log10(y) - y_lo) / (y_hi - y_lo)) * ph  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{L}" y="18" font-size="13">validation RMSE vs training time</text>',
           f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
    for k in range(5):
        xv, yv = x_hi * k / 4, y_lo + k * (y_hi - y_lo) / 4
        out.append(f'<text x="{px(xv):.1f}" y="{T + ph + 15}" text-anchor="middle">{xv:.0f}</text>')
        out.append(f'<text x="{L - 5}" y="{py(10 ** yv) + 4:.1f}" text-anchor="end">{10 ** yv:.3g}</text>')
    out.append(f'<text x="{L + pw / 2}" y="{height - 5}" text-anchor="middle">training seconds (GT excluded)</text>')
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
    for i, r in enumerate(rows):
        c = colors[i % len(colors)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(r["curve"]) if y > 0)
        out.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        out.append(f'<text x="{L + pw + 8}" y="{T + 14 * i + 10}" fill="{c}">{r["solver"]}@{r["nfe"]}</text>')
    out.append("</svg>")
    return "\n".join(out)


def sweep_svg(result: SweepResult, metric: str = "rmse", width: int = 560, height: int = 340) -> str:
    """A small static SVG line plot of `metric` vs NFE (log-log; log-x for PSNR), one line per
    solver, GT as a dotted line for distances. No plotting library needed."""
    series = []
    for s in result.solvers:
        rows = sorted((r for r in result.rows if r["solver"] == s and r.get(metric) is not None
                       and (metric in HIGHER_IS_BETTER or r[metric] > 0)), key=lambda r: r["nfe"])
        if rows:
            series.append((s, rows[0]["kind"], [(r["nfe"], r[metric]) for r in rows]))
    log_y = metric not in HIGHER_IS_BETTER
    gt_val = result.gt.get(metric) if metric in result.distances else None
    ys = [y for _, _, pts in series for _, y in pts] + ([gt_val] if gt_val else [])
    xs = [x for _, _, pts in series for x, _ in pts]
    if not ys:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60"><text x="10" y="30">no data for {metric}</text></svg>'
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    y_lo, y_hi = min(fy(v) for v in ys), max(fy(v) for v in ys)
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    x_lo, x_hi = math.log10(min(xs)), math.log10(max(xs))
    if x_hi - x_lo < 1e-9:
        x_lo, x_hi = x_lo - 0.1, x_hi + 0.1
    L, R, T, B = 60, 150, 30, 40  # margins (legend on the right)
    pw, ph = width - L - R, height - T - B

    def px(x):
        return L + (math.log10(x) - x_lo) / (x_hi - x_lo) * pw

    def py(y):
        return T + (1 - (fy(y) - y_lo) / (y_hi - y_lo)) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{L}" y="18" font-size="13">{METRIC_LABELS.get(metric, metric)} vs NFE</text>',
           f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
    for n in sorted(set(xs)):
        out.append(f'<text x="{px(n):.1f}" y="{T + ph + 15}" text-anchor="middle">{n}</text>')
    out.append(f'<text x="{L + pw / 2}" y="{height - 5}" text-anchor="middle">NFE</text>')
    for k in range(5):
        v = y_lo + k * (y_hi - y_lo) / 4
        val = 10 ** v if log_y else v
        yy = T + (1 - k / 4) * ph
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 4}" y="{yy + 4:.1f}" text-anchor="end">{val:.3g}</text>')
    if gt_val:
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{py(gt_val):.1f}" y2="{py(gt_val):.1f}" stroke="black" '
                   f'stroke-dasharray="2,3"/>')
    for k, (s, kind, pts) in enumerate(series):
        c = _COLORS[k % len(_COLORS)]
        dash = ' stroke-dasharray="6,3"' if kind == "learned" else ""
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{c}"/>' for x, y in pts]
        ly = T + 12 + 15 * k
        out.append(f'<line x1="{L + pw + 10}" x2="{L + pw + 30}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{L + pw + 34}" y="{ly + 4}">{s}</text>')
    if gt_val:
        ly = T + 12 + 15 * len(series)
        out.append(f'<line x1="{L + pw + 10}" x2="{L + pw + 30}" y1="{ly}" y2="{ly}" stroke="black" stroke-dasharray="2,3"/>')
        out.append(f'<text x="{L + pw + 34}" y="{ly + 4}">GT</text>')
    out.append("</svg>")
    return "\n".join(out)


# -------------------------------------------------------------------------------------------
# Command line (`python -m core evaluate` delegates here for sweeps)
# -------------------------------------------------------------------------------------------

def add_cli_options(p) -> None:
    """The sweep options of `python -m core evaluate` (added to its argparse parser)."""
    p.add_argument("--train-learned", nargs="*", default=None, metavar="FAMILY",
                   help=f"also train learned solvers per NFE and score them: any of {', '.join(LEARNED)} "
                   "(no value: all three)")
    p.add_argument("--train-iters", type=int, default=_TRAIN.iters,
                   help=f"budget per learned solver: Adam iterations (default {_TRAIN.iters}, as train-solver)")
    p.add_argument("--train-seconds", type=float, default=None,
                   help="budget per learned solver: stop after this many seconds, GT included (default: none)")
    p.add_argument("--train-n", type=int, default=_TRAIN.n_train,
                   help=f"GT paths per learned solver (default {_TRAIN.n_train})")
    p.add_argument("--train-batch", type=int, default=_TRAIN.batch_size,
                   help=f"GT paths per Adam iteration (default {_TRAIN.batch_size})")
    p.add_argument("--train-gt", default=None, metavar="DIR",
                   help="learned solvers train on this GT data set (make-gt); Bespoke only if it stores paths")
    p.add_argument("--out-dir", default=None,
                   help="write sweep.json, sweep.md and a plot per metric here (sweep mode)")
    p.add_argument("--plot", default="html", choices=["html", "svg", "none"], help="plot format (default html)")


def wants_sweep(args) -> bool:
    """Sweep mode: `--solver all`, --train-learned or --out-dir."""
    return "all" in args.solver or args.train_learned is not None or args.out_dir is not None


def run_cli(args, field, device, x0: Optional[Tensor] = None) -> SweepResult:
    """Run a sweep from parsed `evaluate` arguments: every named solver ("all" = every built-in)
    at every --nfe, learned families trained per NFE, distances to the model's data set; print the
    markdown tables, write --json and --out-dir outputs."""
    from .solvers.registry import BUILTIN_SOLVERS
    names: list[str] = []
    for s in args.solver:
        for n in (BUILTIN_SOLVERS if s == "all" else [s]):
            if n not in names:
                names.append(n)
    learned = tuple(LEARNED if args.train_learned == [] else args.train_learned or ())
    nfes = tuple(args.nfe or (4, 8, 16))
    n = int(x0.shape[0]) if x0 is not None else args.n
    cfg = SweepConfig(solvers=tuple(names), learned=learned, nfes=nfes, n_samples=n, gt_atol=args.gt_tol,
                      gt_rtol=args.gt_tol, train_iters=args.train_iters, train_seconds=args.train_seconds,
                      train_n=args.train_n, train_batch=args.train_batch, seed=args.seed, device=str(device),
                      train_gt=args.train_gt)
    result = sweep(field, cfg, x0=x0, progress=lambda m: print(m, file=sys.stderr, flush=True))
    result.model["file"] = getattr(args, "model", None)
    if args.json:
        result.to_json(args.json)
    if args.out_dir:
        for p in write_outputs(result, args.out_dir, plot=args.plot):
            print(f"wrote {p}", file=sys.stderr)
    print(result.to_markdown())
    print(result.training_markdown())
    return result
