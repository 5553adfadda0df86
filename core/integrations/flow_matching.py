"""facebookresearch flow_matching models in, a flow_matching `Solver` out.

In: a flow_matching velocity model (a `ModelWrapper` or any module called as
`model(x=x, t=t, **extras)`, the way flow_matching's `ODESolver` calls it) plus its path
scheduler becomes a `VelocityField` u(t, x) on the matching Gaussian path of core/paths.py:

    flow_matching                          core.paths
    CondOTScheduler                        CondOTPath  "fm-ot"   alpha = t, sigma = 1 - t
    PolynomialConvexScheduler(n=1)         CondOTPath  "fm-ot"
    CosineScheduler                        CosinePath  "fm-cs"   alpha = sin(pi t/2), sigma = cos(pi t/2)
    VPScheduler(beta_min, beta_max)        VPPath      "eps-vp"  (same beta_min, beta_max)

Both libraries use t = 0 noise, t = 1 data and x_t = alpha_t x1 + sigma_t x0, so nothing is
flipped or rescaled. Any other scheduler (LinearVPScheduler, PolynomialConvexScheduler with
n != 1, one of your own) is refused by name: core has no Gaussian path for it. The mapping is
also checked numerically: the scheduler's alpha, sigma and their derivatives must equal the
path's at a few times (float64), so a subclass that changes the formulas is refused too.
A model that predicts eps or x1 instead of the velocity is converted with
core.paths.velocity_from_prediction (docs/MATH.md section 1.2).

Out: `LearnedODESolver` is a flow_matching `Solver` that samples with a learned solver
(Bespoke RK1/RK2 or BNS) through its linear scheme (core.integrations.scheme), refusing an NFE,
or a model, it was not trained for.

Importing this module imports flow_matching (pinned in requirements.txt); `import core` does not.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
from flow_matching.path.scheduler import (CondOTScheduler, CosineScheduler, PolynomialConvexScheduler,
                                          Scheduler, VPScheduler)
from flow_matching.solver import Solver
from torch import Tensor, nn

from ..checkpoint import state_dict_hash
from ..field import VelocityField
from ..model_io import T_EDGE
from ..paths import PREDICTIONS, CondOTPath, CosinePath, GaussianPath, VPPath, velocity_from_prediction
from ..solvers.learned import LearnedSolver, load_solver
from ..solvers.linear import LinearScheme
from .scheme import check_nfe, learned_scheme, sample_learned

_CHECK_TIMES = (0.05, 0.3, 0.5, 0.7, 0.95)


def _scheduler_of(scheduler_or_path) -> Scheduler:
    """The Scheduler itself, or the `.scheduler` of a flow_matching AffineProbPath."""
    s = getattr(scheduler_or_path, "scheduler", scheduler_or_path)
    if not isinstance(s, Scheduler):
        raise TypeError(f"expected a flow_matching Scheduler or AffineProbPath, got {type(scheduler_or_path).__name__}")
    return s


def path_from_scheduler(scheduler) -> GaussianPath:
    """The core Gaussian path of a flow_matching scheduler (or AffineProbPath), or ValueError
    naming the scheduler when core has no path for it."""
    s = _scheduler_of(scheduler)
    kind = type(s)
    name = kind.__name__
    if kind is CondOTScheduler or (kind is PolynomialConvexScheduler and float(s.n) == 1.0):
        path: GaussianPath = CondOTPath()
    elif kind is CosineScheduler:
        path = CosinePath()
    elif kind is VPScheduler:
        path = VPPath(s.beta_min, s.beta_max)
    else:
        detail = f"{name}(n={s.n})" if kind is PolynomialConvexScheduler else name
        raise ValueError(f"cannot map flow_matching scheduler {detail} to a core Gaussian path: core has fm-ot "
                         f"(CondOTScheduler), fm-cs (CosineScheduler) and eps-vp (VPScheduler) only; sample with "
                         f"flow_matching's ODESolver, or move the model to one of those paths first with "
                         f"flow_matching's ScheduleTransformedModel")
    t = torch.tensor(_CHECK_TIMES, dtype=torch.float64)
    theirs, ours = s(t), path(t)
    pairs = (("alpha_t", theirs.alpha_t, ours.alpha), ("sigma_t", theirs.sigma_t, ours.sigma),
             ("d_alpha_t", theirs.d_alpha_t, ours.d_alpha), ("d_sigma_t", theirs.d_sigma_t, ours.d_sigma))
    for what, a, b in pairs:
        err = float((torch.as_tensor(a, dtype=torch.float64) - b).abs().max())
        if not err <= 1e-9:
            raise ValueError(f"flow_matching scheduler {name} does not follow path {path.name}: its {what} differs "
                             f"by {err:.3g} at t = {list(_CHECK_TIMES)}")
    return path


def model_hash(model: nn.Module) -> str:
    """The model_id a solver checkpoint records for `model` (core.checkpoint.state_dict_hash), so
    a solver is refused on another model."""
    return state_dict_hash(model)


def _edge_clamped(u):
    def u_clamped(t: Tensor, x: Tensor) -> Tensor:
        return u(t.clamp(T_EDGE, 1 - T_EDGE), x)

    return u_clamped


def field_from_flow_matching(model, scheduler, data_shape: Sequence[int], prediction: str = "velocity",
                             data_range: float = 2.0, model_id: Optional[str] = None,
                             model_extras: Optional[dict[str, Any]] = None) -> VelocityField:
    """A flow_matching model as core's velocity field u(t, x) on the scheduler's Gaussian path.

    model: called as model(x=x, t=t, **model_extras) with t of shape (B,) (how flow_matching
      trains its models), returning the velocity (prediction="velocity", flow_matching's default),
      or the noise ("eps") or data ("x1") prediction. eps / x1 models are evaluated at t clamped
      to [1e-5, 1 - 1e-5], as core.load_model does, since the conversion divides by alpha_t or sigma_t.
    scheduler: a flow_matching Scheduler or AffineProbPath (see path_from_scheduler).
    data_shape: the shape of one sample (without the batch).
    model_id: what identifies the model in solver checkpoints; default: model_hash(model) for an
      nn.Module, "flow_matching" for a plain function (no check then).
    model_extras: a dict bound into every call (e.g. {"label": y, "cfg_scale": 3.0}); a solver is
      trained for one binding. (A dict, not **kwargs: a misspelt option cannot vanish into the model.)
    """
    path = path_from_scheduler(scheduler)
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {prediction!r}; known: {PREDICTIONS}")
    if not callable(model):
        raise TypeError(f"model must be callable as model(x=x, t=t), got {type(model).__name__}")
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    shape = tuple(int(d) for d in data_shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"data_shape must be the positive shape of one sample, got {data_shape!r}")
    if model_id is None:
        model_id = model_hash(model) if isinstance(model, nn.Module) else "flow_matching"
    if model_extras is not None and not isinstance(model_extras, dict):
        raise TypeError(f"model_extras must be a dict of keyword arguments for the model, got {type(model_extras).__name__}")
    model_extras = dict(model_extras or {})

    def f(t: Tensor, x: Tensor) -> Tensor:
        t_b = t.to(dtype=x.dtype, device=x.device).expand(x.shape[0]) if t.dim() == 0 else t.to(x)
        return model(x=x, t=t_b, **model_extras)

    u = velocity_from_prediction(f, path, prediction)
    if prediction != "velocity":
        u = _edge_clamped(u)
    meta = {"source": "flow_matching", "scheduler": type(_scheduler_of(scheduler)).__name__,
            "prediction": prediction, "extras": sorted(model_extras)}
    return VelocityField(u, shape, path=path, data_range=float(data_range), model_id=model_id, meta=meta,
                         module=model if isinstance(model, nn.Module) else None)


class LearnedODESolver(Solver):
    """A flow_matching `Solver` that samples with a learned Bespoke or BNS solver.

    A drop-in for `ODESolver(velocity_model=model).sample(x_init, step_size, method=...)`:

        solver = LearnedODESolver(model, CondOTScheduler(), "rk2_bespoke_8.safetensors", data_shape=(2,))
        x1 = solver.sample(x_init=torch.randn(64, 2))

    solver: a saved solver file (path / bytes), checked against the model (its model_id is the
      model's model_hash unless you pass model_id) and refused on another model or guidance
      scale; or a LearnedSolver / LinearScheme object, used as given (a BNS solver still refuses
      a model on another path).
    The rest is as in `field_from_flow_matching`. The learned scheme is run exactly as core runs
    it (core.solvers.linear.run_scheme), at the NFE it was trained for only.
    """

    def __init__(self, velocity_model, scheduler, solver: Union[LearnedSolver, LinearScheme, str, bytes],
                 data_shape: Sequence[int], prediction: str = "velocity", data_range: float = 2.0,
                 model_id: Optional[str] = None, model_extras: Optional[dict[str, Any]] = None):
        super().__init__()
        self.velocity_model = velocity_model
        self.scheduler = _scheduler_of(scheduler)
        self.field = field_from_flow_matching(velocity_model, scheduler, data_shape, prediction, data_range,
                                              model_id, model_extras)
        self.header: Optional[dict] = None
        if isinstance(solver, (LearnedSolver, LinearScheme)):
            self.learned = solver
        else:
            self.learned, self.header = load_solver(solver, field=self.field)
        self._settings = (data_shape, prediction, data_range, self.field.model_id)

    @property
    def nfe(self) -> int:
        return self.learned.nfe

    @property
    def time_grid(self) -> Tensor:
        """The times the model is evaluated at, then the final time 1 (float64, NFE + 1)."""
        return learned_scheme(self.learned).t.clone()

    def sample(self, x_init: Tensor, step_size: Optional[float] = None, method: Optional[str] = None,
               time_grid: Optional[Tensor] = None, return_intermediates: bool = False,
               enable_grad: bool = False, nfe: Optional[int] = None,
               model_extras: Optional[dict[str, Any]] = None):
        """Sample from x_init (B, *data_shape) at t = 0 to t = 1 in the solver's NFE.

        step_size and method must be None (the learned solver has its own grid and steps);
        time_grid may be None or [0, 1]. With return_intermediates, returns the states at
        `self.time_grid` stacked, (NFE + 1, B, *D), as ODESolver returns its grid's states.
        model_extras: a dict for the model (ODESolver takes them as **kwargs), replacing the one
        given at construction for this call; use the binding the solver was trained with."""
        if step_size is not None or method is not None:
            raise ValueError(f"a learned solver ({self._name()}) has its own time grid and steps: step_size and "
                             f"method must be None, got step_size={step_size!r}, method={method!r}")
        if time_grid is not None:
            tg = torch.as_tensor(time_grid, dtype=torch.float64).flatten().cpu()
            if tg.numel() != 2 or float(tg[0]) != 0.0 or float(tg[1]) != 1.0:
                raise ValueError(f"a learned solver samples from t = 0 to t = 1; time_grid must be None or [0, 1], "
                                 f"got {tg.tolist()} (its evaluation times are .time_grid)")
        check_nfe(self.learned, nfe)
        if tuple(x_init.shape[1:]) != self.field.data_shape:
            raise ValueError(f"x_init has shape {tuple(x_init.shape)}; this model's samples are "
                             f"{self.field.data_shape} (B, *data_shape)")
        field = self.field
        if model_extras:
            data_shape, prediction, data_range, model_id = self._settings
            field = field_from_flow_matching(self.velocity_model, self.scheduler, data_shape, prediction, data_range,
                                             model_id, model_extras)
        states = [x_init] if return_intermediates else None
        callback = (lambda info: states.append(info.x_next)) if return_intermediates else None
        with torch.set_grad_enabled(enable_grad):
            res = sample_learned(self.learned, field, x_init, nfe, callback)
        return torch.stack(states) if return_intermediates else res.x

    def _name(self) -> str:
        return getattr(self.learned, "name", type(self.learned).__name__)

