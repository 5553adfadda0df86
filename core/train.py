"""The training loop of learned solvers (Bespoke Algorithm 3; BNS uses the same contract).

`train_solver(field, SolverSpec(...), TrainConfig(...), callback, stop_event)` builds the
solver and its objective for the family, then `fit` runs Adam with validation, keeps the
best-validation parameters, reports the initial solver (iteration 0, its validation, loss NaN)
and then every iteration to `callback`, stops cleanly when
`stop_event` is set (from another thread), and raises NonFiniteLossError on NaN / inf. The
returned (or the error's) solver always holds the best-validation parameters; the result says
whether the run was stopped or diverged.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field as dc_field, replace
from typing import Any, Callable, Optional

import numpy as np
import torch

from .field import label_period, round_to_period
from .limits import MAX_TRAIN_NFE
from .losses import BESPOKE_LOSSES, BespokeObjective
from .paths import get_path, path_st_map
from .seeds import stream_noise
from .solvers.bespoke import BespokeSolver, bespoke_from_family
from .solvers.gt import GTPool

LEARNED_FAMILIES = ("rk1-bespoke", "rk2-bespoke", "bns")


@dataclass(frozen=True)
class SolverSpec:
    """What solver to learn."""

    family: str = "rk2-bespoke"  # "rk1-bespoke", "rk2-bespoke" or "bns"
    nfe: int = 8  # network evaluations of the learned solver
    lipschitz: float = 1.0  # L_tau of the RMSE-bound loss (Bespoke); the paper uses 1
    loss: str = "rmse-bound"  # Bespoke: "rmse-bound", "local" or "final-rmse"
    init: str = "identity"  # Bespoke: "identity" or a path name ("edm", "fm-cs", ...); BNS: a base solver
    sigma0: float = 1.0  # BNS preconditioning source scale (1 = none on FM-OT)

    def __post_init__(self):
        if self.family not in LEARNED_FAMILIES:
            raise ValueError(f"unknown learned solver family {self.family!r}; known: {LEARNED_FAMILIES}")
        if not isinstance(self.nfe, int) or self.nfe < 1:
            raise ValueError(f"NFE must be a positive integer, got {self.nfe!r}")
        if self.nfe > MAX_TRAIN_NFE:
            raise ValueError(f"the NFE of a solver to train must be at most {MAX_TRAIN_NFE} (core/limits.py), got {self.nfe}")
        if not (math.isfinite(self.lipschitz) and self.lipschitz >= 0):
            raise ValueError(f"L_tau must be a finite number >= 0, got {self.lipschitz!r}")
        if not (math.isfinite(self.sigma0) and self.sigma0 > 0):
            raise ValueError(f"sigma0 must be a positive finite number, got {self.sigma0!r}")


LR_SCHEDULES = ("auto", "plateau", "cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """How to train it. The one place the defaults live (the CLI and the app read them here).

    The recipe: Adam at `lr`; validation every `val_every` iterations on `n_val` held-out
    samples; a *plateau* is `patience` validations in a row that do not lower the validation RMSE
    by a relative `min_delta` (for BNS: raise PSNR by the same amount in dB). With
    lr_schedule="plateau" the learning rate halves at each plateau and training stops at the
    (max_decays + 1)-th; with "cosine" (decay to 10 % over `iters`) or "constant" it stops at the
    first plateau (patience=0: never early); "auto" is "cosine" for Bespoke solvers and "plateau"
    for BNS (schedule_for). `iters` caps the iterations either way. BNS trains at
    lr * min(1, 4 / NFE) (lr_scale; its coefficients b_ij are O(1 / NFE)). Bespoke
    solvers with an even number of steps start coarse-to-fine (`coarse_to_fine`: train the
    solver with half the NFE on the same GT paths first, the same recipe, then interpolate its
    map onto the fine grid; core.solvers.bespoke.BespokeSolver.init_from_coarse). An optional
    final-RMSE fine-tune (`finetune_iters`, Bespoke only) follows at lr * finetune_lr.
    """

    iters: int = 2000  # at most this many Adam iterations (per stage)
    lr: float = 1e-2  # Adam learning rate at the start (lets s, t move by O(1) within the budget)
    lr_schedule: str = "auto"  # "auto", "plateau", "cosine" or "constant" (see above)
    patience: int = 10  # validations without improvement that make a plateau (0 = no early stop)
    min_delta: float = 1e-3  # relative RMSE improvement that counts as progress
    max_decays: int = 3  # lr_schedule "plateau": halvings before the run stops
    coarse_to_fine: bool = True  # Bespoke: start from the trained NFE/2 solver (>= 4 steps, even)
    finetune_iters: int = 0  # Bespoke: final-RMSE fine-tune iterations after the main loss (0 = off)
    finetune_lr: float = 0.1  # its learning rate, as a fraction of lr
    batch_size: int = 256  # GT paths (Bespoke) or pairs (BNS) per iteration
    val_every: int = 25  # validate every k iterations (and at the first and last)
    n_train: int = 1024  # GT paths / pairs to train on, solved once (enough for < 200 parameters)
    n_val: int = 1024  # held-out noise for validation (its own seed stream: core.seeds)
    gt_atol: float = 1e-5  # dopri5 tolerances of the ground truth
    gt_rtol: float = 1e-5
    gt_grid: int = 65  # Bespoke: dense grid of the GT path pool (Hermite interpolation between)
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    seed: int = 0  # noise (core.seeds streams), batches and initialisation

    def __post_init__(self):
        for name in ("iters", "batch_size", "val_every", "n_train", "n_val", "gt_grid"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        for name in ("patience", "max_decays", "finetune_iters"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0, got {v!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learning rate must be positive, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not (math.isfinite(self.min_delta) and 0 <= self.min_delta < 1):
            raise ValueError(f"min_delta must be in [0, 1), got {self.min_delta!r}")
        if not (math.isfinite(self.finetune_lr) and self.finetune_lr > 0):
            raise ValueError(f"finetune_lr must be positive, got {self.finetune_lr!r}")


@dataclass
class TrainEvent:
    """What the per-iteration callback receives (iteration 0: the initial solver, loss NaN)."""

    iteration: int
    loss: float
    metrics: Optional[dict[str, float]]  # validation ({"rmse", "psnr"}) when run this iteration
    params: dict[str, np.ndarray]  # the decoded solver parameters now
    elapsed: float  # seconds since training started (GT excluded)
    total_iters: int = 0


@dataclass
class TrainResult:
    solver: Any
    spec: SolverSpec
    history: list[dict] = dc_field(default_factory=list)  # {"iteration", "loss", "elapsed", ["rmse", "psnr"]}
    best: dict[str, float] = dc_field(default_factory=dict)  # best validation metrics
    init: dict[str, float] = dc_field(default_factory=dict)  # validation metrics at initialisation
    best_iteration: int = 0
    stopped: bool = False  # stopped early by the stop event
    stop_reason: str = ""  # "iterations" (the cap), "plateau" (converged), "stopped" (stop event)
    stages: list[dict] = dc_field(default_factory=list)  # coarse-to-fine / fine-tune stages run before or after
    diverged: bool = False  # ended by NaN / inf; `solver` then holds the best-validation parameters
    elapsed: float = 0.0  # training seconds (GT excluded)
    gt_seconds: float = 0.0  # seconds spent making the ground truth
    gt_nfe: int = 0

    def summary(self) -> dict[str, Any]:
        return {"spec": asdict(self.spec), "best": self.best, "init": self.init,
                "best_iteration": self.best_iteration, "stopped": self.stopped, "diverged": self.diverged,
                "train_seconds": round(self.elapsed, 3), "gt_seconds": round(self.gt_seconds, 3),
                "gt_nfe": self.gt_nfe, "iterations": self.history[-1]["iteration"] if self.history else 0,
                "stop_reason": self.stop_reason, "stages": self.stages}


class NonFiniteLossError(RuntimeError):
    """Training produced NaN / inf. `.result` holds the run so far (`diverged` True); its solver
    is set back to the best-validation parameters (validated: finite values and metrics), not
    to the parameters that produced the NaN."""

    def __init__(self, msg: str, result: TrainResult):
        super().__init__(msg)
        self.result = result


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return dev


def _better(a: float, b: float, mode: str) -> bool:
    return a < b if mode == "min" else a > b


def schedule_for(schedule: str, solver) -> str:
    """The schedule "auto" stands for: "plateau" for BNS, "cosine" for the others.

    Why BNS differs (checkerboard FM-OT, NFE 16, from midpoint; bench/bench_bns_init.py): its
    validation PSNR swings by 1-5 dB between validations at a constant or slowly decaying rate,
    so the first plateau under "cosine" came at 250-450 iterations, before any lasting gain (RMSE
    1.0x midpoint at lr 1e-2, 0.63x at lr 2.5e-3); halving the rate at each plateau settles it
    (0.48x midpoint). Any other name is returned as it is."""
    if schedule != "auto":
        return schedule
    return "plateau" if getattr(solver, "family", None) == "bns" else "cosine"


def lr_scale(solver) -> float:
    """The solver's multiplier of TrainConfig.lr: min(1, 4 / NFE) for BNS, whose update
    coefficients b_ij are O(1 / NFE) (Euler's are 1 / NFE) while Adam moves every parameter by
    about the rate per step (at NFE 16 lr 1e-2 made the validation PSNR swing by up to 12 dB);
    1 for the others (a Bespoke solver's parameters are O(1) whatever its NFE)."""
    return min(1.0, 4.0 / solver.nfe) if getattr(solver, "family", None) == "bns" else 1.0


def lr_factor(schedule: str, it: int, iters: int) -> float:
    """The learning-rate multiplier at iteration `it` (1-based) of `iters` for a schedule
    (the plateau schedule's halvings are applied on top by fit)."""
    if schedule == "cosine":
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(it - 1, iters) / iters))
    return 1.0


class Plateau:
    """Plateau detection on a validation metric (`mode` "min" for RMSE, "max" for PSNR in dB).

    `update(v)` returns True when v beats the reference by the margin: for "min" v < ref (1 -
    min_delta), for "max" v > ref - 20 log10(1 - min_delta) (the same relative RMSE change in dB);
    the reference is then v. `stale` counts the validations since the last such improvement."""

    def __init__(self, mode: str, min_delta: float, start: float):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode, self.min_delta, self.ref, self.stale = mode, float(min_delta), float(start), 0

    def update(self, v: float) -> bool:
        if self.mode == "min":
            better = v < self.ref * (1 - self.min_delta)
        else:
            better = v > self.ref - 20 * math.log10(1 - self.min_delta)
        if better or not math.isfinite(self.ref):
            self.ref, self.stale = float(v), 0
            return True
        self.stale += 1
        return False


def fit(solver, objective, cfg: TrainConfig = TrainConfig(),
        callback: Optional[Callable[[TrainEvent], None]] = None,
        stop_event: Optional[threading.Event] = None, spec: Optional[SolverSpec] = None,
        dist=None) -> TrainResult:
    """Adam on objective.loss; validation every cfg.val_every iterations; best kept; early stop
    and learning-rate halvings on validation plateaus (TrainConfig's docstring).

    dist: a core.distributed.DistContext (data parallel over torch.distributed ranks): each rank
    computes its rows of every batch, the gradients are all-reduced, rank 0 validates."""
    validate = objective.validate
    if dist is not None:
        dist.attach(objective)
        validate = dist.validated(objective.validate)
    gen = torch.Generator().manual_seed(cfg.seed)
    schedule, lr = schedule_for(cfg.lr_schedule, solver), cfg.lr * lr_scale(solver)
    opt = torch.optim.Adam(solver.parameters(), lr=lr)
    decays = 0  # plateau halvings so far

    def set_lr(it: int) -> None:
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(schedule, it, cfg.iters) * 0.5**decays
    result = TrainResult(solver, spec or SolverSpec())

    def snapshot() -> dict:
        return {k: v.detach().clone() for k, v in solver.state_dict().items()}

    result.init = validate(solver)
    result.best = dict(result.init)
    plateau = Plateau(objective.mode, cfg.min_delta, result.init[objective.metric])
    best_state = snapshot()
    result.history.append({"iteration": 0, "loss": float("nan"), "elapsed": 0.0, **result.init})

    def decoded() -> dict:
        return {k: v.detach().cpu().numpy() for k, v in solver.decode().items()}

    if callback is not None:  # iteration 0: the initial solver and its validation (no loss yet)
        callback(TrainEvent(0, float("nan"), dict(result.init), decoded(), 0.0, cfg.iters))
    t_start = time.perf_counter()
    result.stop_reason = "iterations"
    for it in range(1, cfg.iters + 1):
        if stop_event is not None and stop_event.is_set():
            result.stopped, result.stop_reason = True, "stopped"
            break
        set_lr(it)
        per_sample = objective.loss(solver, gen)
        loss = per_sample.mean() if dist is None else dist.batch_mean(per_sample)
        bad = None
        if not torch.isfinite(loss):
            bad = f"loss is {loss.item()}"
        else:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if dist is not None:
                dist.reduce_gradients(solver.parameters())
            grads = [p.grad for p in solver.parameters() if p.grad is not None]
            if any(not torch.isfinite(g).all() for g in grads):
                bad = "gradient has non-finite values"
            else:
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(solver.parameters(), cfg.grad_clip)
                opt.step()
                if any(not torch.isfinite(p).all() for p in solver.parameters()):
                    bad = "parameters became non-finite"
        if bad is not None:  # the parameters that gave it are not kept: back to the best validation
            solver.load_state_dict(best_state)
            result.elapsed = time.perf_counter() - t_start
            result.diverged = True
            usable = all(math.isfinite(v) for v in result.best.values()) and \
                all(torch.isfinite(p).all() for p in solver.parameters())
            kept = (f"the solver is set back to the best-validation one (iteration {result.best_iteration})"
                    if usable else "no finite solver was found")
            raise NonFiniteLossError(f"training diverged at iteration {it}: {bad} (lr={cfg.lr}); {kept}; try a "
                                     f"smaller learning rate", result)
        metrics = None
        if it % cfg.val_every == 0 or it == cfg.iters:
            metrics = validate(solver)
            if _better(metrics[objective.metric], result.best[objective.metric], objective.mode):
                result.best, result.best_iteration, best_state = dict(metrics), it, snapshot()
        elapsed = time.perf_counter() - t_start
        result.history.append({"iteration": it, "loss": loss.item(), "elapsed": elapsed, **(metrics or {})})
        if callback is not None:
            callback(TrainEvent(it, loss.item(), metrics, decoded(), elapsed, cfg.iters))
        if metrics is not None and not plateau.update(metrics[objective.metric]) and cfg.patience \
                and plateau.stale >= cfg.patience:
            if schedule == "plateau" and decays < cfg.max_decays:
                decays, plateau.stale = decays + 1, 0
            else:
                result.stop_reason = "plateau"
                break
    solver.load_state_dict(best_state)
    result.elapsed = time.perf_counter() - t_start
    return result


# -------------------------------------------------------------------------------------------
# Families
# -------------------------------------------------------------------------------------------

def bespoke_start(field, family: str, nfe: int, init: str = "identity") -> BespokeSolver:
    """An untrained Bespoke solver: the identity (uniform RK) or the ST map to a Gaussian path."""
    solver = bespoke_from_family(family, nfe)
    if init != "identity":
        if field.path is None:
            raise ValueError(f"init {init!r} needs a model with a Gaussian path; this one has none")
        target = get_path(init)
        solver.init_from_st(lambda r: path_st_map(field.path, target, r, normalize=True))
    return solver


def build_bespoke(field, spec: SolverSpec, cfg: TrainConfig, device, gt=None):
    """A Bespoke solver and its objective: GT path pool solved once (training and validation
    noise from the "train" and "val" streams of cfg.seed, core.seeds), or read from `gt`, a
    core.gtdata.GTDataset made with store "paths"."""
    if spec.loss not in BESPOKE_LOSSES:
        raise ValueError(f"unknown Bespoke loss {spec.loss!r}; known: {BESPOKE_LOSSES}")
    solver = bespoke_start(field, spec.family, spec.nfe, spec.init).to(device)
    t0 = time.perf_counter()
    if gt is not None:
        gt.check_field(field)
        train, val = gt.pools(device)
    else:
        period = label_period(field)  # conditional models: keep every sample at its label residue
        n_train, n_val = round_to_period(cfg.n_train, period), round_to_period(cfg.n_val, period)
        x0 = torch.cat([stream_noise(field, n_train, cfg.seed, "train"), stream_noise(field, n_val, cfg.seed, "val")])
        train, val = GTPool.build(field, x0.to(device), n_grid=cfg.gt_grid, atol=cfg.gt_atol,
                                  rtol=cfg.gt_rtol).split(n_val)
    gt_seconds = time.perf_counter() - t0
    obj = BespokeObjective(field, train, val, spec.lipschitz, spec.loss, cfg.batch_size)
    obj.gt_seconds, obj.gt_nfe = gt_seconds, train.nfe
    return solver, obj


def build_bns(field, spec: SolverSpec, cfg: TrainConfig, device, gt=None):
    """A BNS solver and its objective (core.solvers.bns.build_bns; imported on first use so
    that importing core.train stays light); `gt` as for build_bespoke."""
    from .solvers.bns import build_bns as build
    return build(field, spec, cfg, device, gt=gt)


FAMILIES: dict[str, Callable] = {"rk1-bespoke": build_bespoke, "rk2-bespoke": build_bespoke, "bns": build_bns}


def _family_builder(family: str) -> Callable:
    if family not in FAMILIES:
        raise ValueError(f"no trainer for solver family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family]


def _stage_summary(name: str, res: TrainResult, nfe: int) -> dict:
    return {"stage": name, "nfe": nfe, "iterations": res.history[-1]["iteration"] if res.history else 0,
            "seconds": round(res.elapsed, 3), "init": res.init, "best": res.best, "stop_reason": res.stop_reason}


def _continued(callback: Callable[[TrainEvent], None], offset: int, seconds: float) -> Callable[[TrainEvent], None]:
    """A callback that numbers events after a coarse stage of `offset` iterations and `seconds`;
    the main stage's iteration-0 event (no loss; its validation is result.init) is not repeated."""
    def cb(ev: TrainEvent) -> None:
        if ev.iteration == 0:
            return
        ev.iteration, ev.total_iters, ev.elapsed = ev.iteration + offset, ev.total_iters + offset, ev.elapsed + seconds
        callback(ev)
    return cb


def coarse_to_fine_start(field, solver, objective, spec: SolverSpec, cfg: TrainConfig,
                         stop_event: Optional[threading.Event] = None, dist=None,
                         callback: Optional[Callable[[TrainEvent], None]] = None) -> list[dict]:
    """Train the same-order Bespoke solver with half the steps on the same objective and
    recipe, then set `solver` from it (BespokeSolver.init_from_coarse). Returns the stage run
    (a list of one), or [] where it does not apply: other solvers, an odd number of steps, or
    fewer than 4 steps (a one-step coarse solver did not help: RK2 NFE 4 on checkerboard FM-OT,
    test RMSE 0.233 with it, 0.235 without, at twice the time)."""
    if not isinstance(solver, BespokeSolver) or solver.n % 2 or solver.n < 4:
        return []
    coarse = bespoke_start(field, spec.family, solver.nfe // 2, spec.init).to(solver.raw_t.device)
    res = fit(coarse, objective, cfg, callback, stop_event=stop_event, spec=spec, dist=dist)
    # The coarse-derived start replaces the plain one only where it validates better: a coarse
    # stage cut short (a stop, a divergence-free but early plateau) must not leave the main stage,
    # and so the returned solver, worse than the plain start at this NFE.
    validate = objective.validate if dist is None else dist.validated(objective.validate)
    plain_state = {k: v.detach().clone() for k, v in solver.state_dict().items()}
    plain = validate(solver)
    solver.init_from_coarse(coarse)
    derived = validate(solver)
    summary = _stage_summary("coarse", res, coarse.nfe)
    if not _better(derived[objective.metric], plain[objective.metric], objective.mode):
        solver.load_state_dict(plain_state)
        summary["note"] = (f"coarse-derived start ({objective.metric} {derived[objective.metric]:.4g}) not better "
                           f"than the plain start ({plain[objective.metric]:.4g}): kept the plain start")
    return [summary]


def final_rmse_finetune(solver, objective, cfg: TrainConfig, stop_event=None, spec=None,
                        dist=None) -> Optional[TrainResult]:
    """Fine-tune a trained Bespoke solver on the final-RMSE loss (cfg.finetune_iters iterations
    at lr * finetune_lr, same early stop); keeps the best validation. None when not applicable."""
    if cfg.finetune_iters == 0 or getattr(objective, "loss_name", None) in (None, "final-rmse"):
        return None
    name = objective.loss_name
    objective.loss_name = "final-rmse"
    try:
        return fit(solver, objective, replace(cfg, iters=cfg.finetune_iters, lr=cfg.lr * cfg.finetune_lr),
                   stop_event=stop_event, spec=spec, dist=dist)
    finally:
        objective.loss_name = name


def train_solver(field, spec: SolverSpec, cfg: TrainConfig = TrainConfig(),
                 callback: Optional[Callable[[TrainEvent], None]] = None,
                 stop_event: Optional[threading.Event] = None, gt=None, dist=None,
                 checkpoint_activations: bool = False) -> TrainResult:
    """Build, train and return a learned solver for `field` (see module docstring). With
    cfg.coarse_to_fine the coarse stage runs first: `callback` sees its events (the coarse
    solver's parameters and validation, at half the NFE), then the main stage's, numbered on
    from the coarse stage's last iteration; result.history holds the main stage only, the coarse
    stage is summarised in result.stages and its time counted in result.elapsed. A final-RMSE
    fine-tune, when asked for, runs last and is listed in result.stages as well.

    gt: a GT data set (core.gtdata.open_gt) to train and validate on instead of solving GT here
    (its sizes replace cfg.n_train / n_val / tolerances). dist: data-parallel ranks (see fit).
    checkpoint_activations: recompute the network in backward instead of keeping its activations
    through the unrolled steps (core.distributed.checkpointing; same gradients, bounded memory)."""
    device = dist.device if dist is not None else resolve_device(cfg.device)
    field.to(device)
    torch.manual_seed(cfg.seed)
    builder = _family_builder(spec.family)
    solver, objective = builder(field, spec, cfg, device) if gt is None else builder(field, spec, cfg, device, gt=gt)
    if checkpoint_activations:
        from .distributed.checkpointing import checkpointed
        objective.field = checkpointed(objective.field)
    stages = coarse_to_fine_start(field, solver, objective, spec, cfg, stop_event, dist, callback) \
        if cfg.coarse_to_fine else []
    if stop_event is not None and stop_event.is_set() and stages:
        stages[-1]["note"] = "stopped during the coarse stage; " + stages[-1].get("note", "its start kept")
    if stages and callback is not None:  # the main stage's events continue the coarse stage's numbering
        callback = _continued(callback, stages[-1]["iterations"], stages[-1]["seconds"])
    result = fit(solver, objective, cfg, callback, stop_event, spec=spec, dist=dist)
    result.elapsed += sum(st["seconds"] for st in stages)
    tune = None if result.stopped else final_rmse_finetune(solver, objective, cfg, stop_event, spec, dist)
    if tune is not None:
        stages.append(_stage_summary("final-rmse", tune, solver.nfe))
        result.elapsed += tune.elapsed
        if tune.best[objective.metric] != result.best[objective.metric]:
            result.best = dict(tune.best)
    result.stages = stages
    result.gt_seconds = getattr(objective, "gt_seconds", 0.0)
    result.gt_nfe = getattr(objective, "gt_nfe", 0)
    return result
