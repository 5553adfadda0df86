"""One entry point for every solver: a built-in name or a saved learned-solver file.

    solver = get_solver("midpoint", field)          # classical (uniform grid)
    solver = get_solver("dpm++2m", field)           # dedicated (needs the model's Gaussian path)
    solver = get_solver("my_solver.safetensors", field)   # learned, checked against the model
    solver.check_nfe(8); res = solver.solve(field, x0, 8, callback)   # res.x, res.nfe
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..limits import MAX_NFE
from .base import SolveResult, StepCallback, rk_sample, uniform_grid
from .tableau import TABLEAUS

CLASSICAL = ("euler", "midpoint", "heun", "rk4")
DEDICATED = ("ddim", "dpm++2m", "edm")
BUILTIN_SOLVERS = CLASSICAL + DEDICATED


def _check_int_nfe(nfe) -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, (int,)) and not (isinstance(nfe, float) and nfe.is_integer()):
        raise ValueError(f"NFE must be a positive integer, got {nfe!r}")
    nfe = int(nfe)
    if nfe < 1:
        raise ValueError(f"NFE must be a positive integer, got {nfe!r}")
    if nfe > MAX_NFE:
        raise ValueError(f"NFE must be at most {MAX_NFE} (core/limits.py), got {nfe}")
    return nfe


@dataclass
class ClassicalSolver:
    """An explicit RK method on a uniform time grid: NFE = steps x stages."""

    name: str

    @property
    def stages(self) -> int:
        return TABLEAUS[self.name].stages

    def check_nfe(self, nfe) -> None:
        nfe = _check_int_nfe(nfe)
        if nfe % self.stages:
            raise ValueError(f"{self.name} uses {self.stages} evaluations per step, so its NFE must be a "
                             f"multiple of {self.stages}; got {nfe}")

    def solve(self, field, x0: Tensor, nfe: int, callback: Optional[StepCallback] = None) -> SolveResult:
        self.check_nfe(nfe)
        return rk_sample(field, x0, uniform_grid(int(nfe) // self.stages), self.name, callback)


@dataclass
class DedicatedSolver:
    """DDIM, DPM-Solver++(2M) or EDM's Heun sampler for a Gaussian-path model."""

    name: str

    def check_nfe(self, nfe) -> None:
        from . import dedicated
        dedicated.check_nfe(self.name, _check_int_nfe(nfe))

    def solve(self, field, x0: Tensor, nfe: int, callback: Optional[StepCallback] = None) -> SolveResult:
        from . import dedicated
        if getattr(field, "path", None) is None:
            raise ValueError(f"{self.name} needs a model trained on a Gaussian path; this field has none")
        self.check_nfe(nfe)
        return dedicated.sample_dedicated(self.name, field, x0, int(nfe), callback)


def is_solver_file(name: str) -> bool:
    return os.path.sep in name or name.endswith((".safetensors", ".bespoke", ".solver"))


def get_solver(name_or_file: str, field=None, device=None):
    """A solver by built-in name or from a saved file (checked against `field` if given).

    Every returned object has .name, .check_nfe(nfe) and .solve(field, x0, nfe, callback).
    A learned solver's .solve accepts nfe=None or its trained NFE only.
    """
    if not isinstance(name_or_file, str):
        raise ValueError(f"solver must be a name or a file path, got {name_or_file!r}")
    key = name_or_file.strip().lower()
    if key in CLASSICAL:
        return ClassicalSolver(key)
    if key in DEDICATED:
        return DedicatedSolver(key)
    if os.path.exists(name_or_file) or is_solver_file(name_or_file):
        from .learned import load_solver
        solver, _ = load_solver(name_or_file, field=field, device=device)
        return solver
    raise ValueError(f"unknown solver {name_or_file!r}: not a built-in name ({', '.join(BUILTIN_SOLVERS)}) "
                     f"and no such file")


@torch.no_grad()
def sample(solver, field, x0: Tensor, nfe: Optional[int], callback: Optional[StepCallback] = None) -> SolveResult:
    """Inference entry point: run any solver without gradients."""
    return solver.solve(field, x0, nfe, callback)
