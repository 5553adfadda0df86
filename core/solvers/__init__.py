"""Solvers: classical (Butcher tableaus), dedicated Gaussian-path solvers, ground truth, learned."""
from .base import SolveResult, StepInfo, rk_sample, rk_step, uniform_grid
from .gt import GTPool, gt_solve
from .registry import BUILTIN_SOLVERS, get_solver
from .tableau import EULER, HEUN, MIDPOINT, RK4, TABLEAUS, ButcherTableau
