"""The base of learned solvers, and saving / loading them safely.

A learned solver is an `nn.Module` of raw unconstrained parameters plus `decode()`, which returns
the readable constrained values (time grid, scales, coefficients) for plots and checkpoints.
It is trained for one velocity field (one model, one guidance scale) and one NFE.
"""
from __future__ import annotations

import math
import os
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .. import checkpoint
from ..checkpoint import CheckpointError
from ..limits import MAX_NFE, MAX_SOLVER_PARAMETERS
from .base import SolveResult, StepCallback

SOLVER_CLASSES: dict[str, type["LearnedSolver"]] = {}


def register_solver(cls):
    """Class decorator: make a LearnedSolver family loadable from checkpoints."""
    SOLVER_CLASSES[cls.family] = cls
    return cls


class LearnedSolver(nn.Module):
    """A solver with learned parameters for a fixed NFE."""

    family: str = "learned"

    def __init__(self, nfe: int):
        super().__init__()
        if int(nfe) != nfe or nfe < 1:
            raise ValueError(f"NFE must be a positive integer, got {nfe!r}")
        self.nfe = int(nfe)

    @property
    def name(self) -> str:
        return f"{self.family}@{self.nfe}"

    def decode(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LearnedSolver":
        raise NotImplementedError

    def check_nfe(self, nfe: Optional[int]) -> None:
        if nfe is not None and nfe != self.nfe:
            raise ValueError(f"{self.name} was trained for NFE {self.nfe}; it cannot run at NFE {nfe!r} "
                             f"(train another solver for that NFE)")

    def solve(self, field, x0: Tensor, nfe: Optional[int] = None,
              callback: Optional[StepCallback] = None) -> SolveResult:
        raise NotImplementedError

    @property
    def num_free_parameters(self) -> int:
        """Degrees of freedom of the solver (the papers' parameter counts)."""
        return sum(p.numel() for p in self.parameters())

    def assert_finite(self) -> None:
        for name, p in self.named_parameters():
            if not torch.isfinite(p).all():
                raise ValueError(f"solver parameter {name!r} has non-finite values")


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _solver_header(solver: LearnedSolver, field, extra: Optional[dict[str, Any]]) -> dict[str, Any]:
    """What a solver checkpoint records: the family and config, and what model it was trained for."""
    model_id = getattr(field, "model_id", None)
    if not isinstance(model_id, str) or not model_id:
        raise ValueError("a solver is saved with the field it was trained for (its model_id binds the solver "
                         f"to that model); got {type(field).__name__} with model_id {model_id!r}")
    return {
        "family": solver.family,
        "nfe": solver.nfe,
        "config": solver.config(),
        "model_id": model_id,
        "guidance_scale": getattr(field, "guidance_scale", None),
        "data_shape": list(getattr(field, "data_shape", []) or []),
        "train": _jsonable(extra or {}),
    }


def _solver_tensors(solver: LearnedSolver) -> dict[str, Tensor]:
    return {k: v.detach().cpu().to(torch.float64) for k, v in solver.state_dict().items()}


def save_solver(solver: LearnedSolver, path: str | os.PathLike, field=None,
                extra: Optional[dict[str, Any]] = None) -> str:
    """Save parameters (float64) + config + what model it was trained for. Returns the hash."""
    return checkpoint.save(path, _solver_tensors(solver), _solver_header(solver, field, extra), kind="solver")


def solver_to_bytes(solver: LearnedSolver, field=None, extra: Optional[dict[str, Any]] = None) -> bytes:
    """The same bytes `save_solver` writes (for downloads)."""
    return checkpoint.dumps(_solver_tensors(solver), _solver_header(solver, field, extra), kind="solver")


def load_solver(src, field=None, device=None) -> tuple[LearnedSolver, dict[str, Any]]:
    """Load a learned solver from a path, bytes or file object; returns (solver, header).

    With `field`, refuses a solver trained for another model or another guidance scale.
    Raises CheckpointError with a one-line message on any problem.
    """
    # Make sure every family module has registered itself.
    from . import bespoke  # noqa: F401
    try:
        from . import bns  # noqa: F401
    except ImportError:
        pass
    tensors, header = checkpoint.load(src, kind="solver")
    family = header.get("family")
    if not isinstance(family, str) or family not in SOLVER_CLASSES:
        raise CheckpointError(f"unknown solver family {str(family)[:40]!r} in checkpoint; known: {sorted(SOLVER_CLASSES)}")
    config = _checked_config(header, tensors)
    cls = SOLVER_CLASSES[family]
    try:
        solver = cls.from_config(config)
    except Exception as e:  # a config the family cannot build (its sizes were checked above)
        why = " ".join(str(e).split())[:200]
        raise CheckpointError(f"bad {family} solver config {str(config)[:200]}: {why}") from None
    expected = solver.state_dict()
    if set(expected) != set(tensors):
        raise CheckpointError(f"solver tensors {sorted(tensors)[:6]} do not match a {family} solver's {sorted(expected)}")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(f"solver tensor {k!r} has shape {tuple(tensors[k].shape)}, expected {tuple(v.shape)} "
                                  f"for {family} with config {header.get('config')}")
        if not torch.isfinite(tensors[k]).all():
            raise CheckpointError(f"solver tensor {k!r} holds non-finite values")
    solver.load_state_dict({k: t.to(v.dtype) for k, t in tensors.items()})
    if header.get("nfe") != solver.nfe:
        raise CheckpointError(f"header says NFE {header.get('nfe')!r} but the config gives NFE {solver.nfe}")
    if field is not None:
        check_solver_matches(header, field)
    if device is not None:
        solver.to(device)
    return solver, header


def _checked_config(header: dict[str, Any], tensors: dict[str, Tensor]) -> dict[str, Any]:
    """The header's config, its sizes checked BEFORE a solver is built from it: the NFE and every
    integer in the config within MAX_NFE, the tensors within MAX_SOLVER_PARAMETERS
    numbers, and a model binding present (core/limits.py)."""
    nfe, config = header.get("nfe"), header.get("config")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or not 1 <= nfe <= MAX_NFE:
        raise CheckpointError(f"solver NFE {str(nfe)[:40]} is not an integer in [1, {MAX_NFE}]")
    if not isinstance(config, dict):
        raise CheckpointError(f"solver config must be a JSON object, got {str(config)[:80]}")
    for k, v in config.items():  # a count (n, n_steps) may come as a float too: bound every number
        if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= MAX_NFE:
            raise CheckpointError(f"solver config {str(k)[:40]} = {v} is outside [0, {MAX_NFE}]")
        if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= MAX_NFE):
            raise CheckpointError(f"solver config {str(k)[:40]} = {v} is outside [-{MAX_NFE}, {MAX_NFE}]")
    n_params = sum(t.numel() for t in tensors.values())
    if n_params > MAX_SOLVER_PARAMETERS:
        raise CheckpointError(f"solver file holds {n_params:,} numbers, over the limit of {MAX_SOLVER_PARAMETERS:,}")
    model_id = header.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise CheckpointError("this solver names no model it was trained for (model_id missing); a solver is "
                              "only used with the model it was trained for: train one for your model")
    return config


def check_solver_matches(header: dict[str, Any], field) -> None:
    """Refuse a solver trained for another model or another guidance scale."""
    want, got = header.get("model_id"), getattr(field, "model_id", None)
    if got is not None and want != got:
        raise CheckpointError(f"this solver was trained for model {str(want)[:12]}..., not for the loaded model "
                              f"{str(got)[:12]}... (train a solver for this model)")
    g_want, g_got = header.get("guidance_scale"), getattr(field, "guidance_scale", None)
    if g_want is not None or g_got is not None:
        if g_want is None or g_got is None or abs(float(g_want) - float(g_got)) > 1e-9:
            raise CheckpointError(f"this solver was trained at guidance scale {g_want!r}; the model is used at "
                                  f"guidance scale {g_got!r}")
