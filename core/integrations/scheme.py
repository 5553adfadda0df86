"""A learned solver as ONE linear scheme, the form every integration runs.

Bespoke RK1 / RK2 and BNS solvers (and every classical or dedicated solver) are linear schemes
x_k = A_k x0 + sum_{j<k} B_kj u(t_j, x_j) (core/solvers/linear.py). The adapters for other
libraries convert a model and a sample at their boundary and run that scheme with
`core.solvers.linear.run_scheme`, so what they sample is what `core` samples.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..solvers.base import SolveResult, StepCallback
from ..solvers.bespoke import BespokeSolver
from ..solvers.bns import BNSSolver, bespoke_scheme
from ..solvers.learned import LearnedSolver
from ..solvers.linear import LinearScheme, run_scheme

SchemeLike = LearnedSolver | LinearScheme


def learned_scheme(solver: SchemeLike) -> LinearScheme:
    """The linear scheme of a Bespoke or BNS solver (detached, float64); a LinearScheme as is."""
    if isinstance(solver, LinearScheme):
        return solver
    if isinstance(solver, BNSSolver):
        with torch.no_grad():
            s = solver.scheme()
        return LinearScheme(s.name, s.t.detach().double().cpu(), s.A.detach().double().cpu(),
                            s.B.detach().double().cpu())
    if isinstance(solver, BespokeSolver):
        return bespoke_scheme(solver)
    raise TypeError(f"expected a Bespoke or BNS solver or a LinearScheme, got {type(solver).__name__}")


def scheme_nfe(solver: SchemeLike) -> int:
    return solver.nfe


def check_nfe(solver: SchemeLike, nfe: Optional[int]) -> None:
    """Refuse an NFE the solver was not trained for (a LinearScheme runs at its own NFE only)."""
    if isinstance(solver, LearnedSolver):
        solver.check_nfe(nfe)
    elif nfe is not None and nfe != solver.nfe:
        raise ValueError(f"scheme {solver.name} has NFE {solver.nfe}; it cannot run at NFE {nfe!r}")


def sample_learned(solver: SchemeLike, field, x0: Tensor, nfe: Optional[int] = None,
                   callback: Optional[StepCallback] = None) -> SolveResult:
    """Run `solver` on the velocity field `field` from x0 through its linear scheme.

    Refuses another NFE, and (BNS) a field on another Gaussian path or guidance scale."""
    check_nfe(solver, nfe)
    if isinstance(solver, BNSSolver):
        solver.check_field(field)
    return run_scheme(learned_scheme(solver), field, x0, callback)
