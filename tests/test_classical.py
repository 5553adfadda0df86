"""Classical RK methods: validated tableaus, exact answers, convergence order, NFE, bad input."""
import math

import numpy as np
import pytest
import torch

from core.analytic import gaussian_data_field, gaussian_data_solution
from core.paths import CondOTPath, CosinePath, VPPath
from core.solvers.base import rk_sample, uniform_grid
from core.solvers.gt import gt_solve
from core.solvers.registry import get_solver
from core.solvers.tableau import TABLEAUS, ButcherTableau


def slope(nfes, errs):
    return -np.polyfit(np.log(nfes), np.log(errs), 1)[0]


def test_tableau_validation():
    with pytest.raises(ValueError, match="sum to"):
        ButcherTableau("bad", a=((), (0.5,)), b=(0.3, 0.3), c=(0.0, 0.5), order=1)
    with pytest.raises(ValueError, match="c\\[1\\]"):
        ButcherTableau("bad", a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.7), order=2)
    with pytest.raises(ValueError, match="explicit"):
        ButcherTableau("bad", a=((0.0,), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5), order=2)


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_convergence_order(name, f64):
    """log-log slope of the error against steps matches the method's order (Theorem 2.2's base)."""
    tab = TABLEAUS[name]
    # A smooth, non-trivial linear problem with an exact solution: Gaussian data on the cosine path.
    path, mean, c = CosinePath(), torch.tensor([1.0, -2.0]), 0.5
    u = gaussian_data_field(path, mean, c)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    exact = gaussian_data_solution(path, mean, c, x0, 1.0)
    steps = [8, 16, 32, 64]
    errs = [(rk_sample(u, x0, uniform_grid(n), name).x - exact).abs().max().item() for n in steps]
    assert slope(steps, errs) == pytest.approx(tab.order, abs=0.25), errs


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_exact_answers_and_nfe(name, mixture_ot, f64):
    path = CondOTPath()
    u = gaussian_data_field(path, torch.tensor([0.3, 0.7]), 0.2)
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    res = rk_sample(u, x0, uniform_grid(200), name)
    assert res.nfe == 200 * TABLEAUS[name].stages
    exact = gaussian_data_solution(path, torch.tensor([0.3, 0.7]), 0.2, x0, 1.0)
    tol = {1: 2e-2, 2: 1e-4, 4: 1e-8}[TABLEAUS[name].order]
    assert (res.x - exact).abs().max() < tol
    # Non-linear mixture VF: against a tight dopri5 ground truth.
    gt = gt_solve(mixture_ot, x0, atol=1e-10, rtol=1e-10).x
    assert (rk_sample(mixture_ot, x0, uniform_grid(400), name).x - gt).abs().max() < 20 * tol


def test_gt_solver_exact_and_counts_nfe(f64):
    path = VPPath()
    mean = torch.tensor([0.5, -0.5, 1.0])
    u = gaussian_data_field(path, mean, 0.3)
    x0 = gaussian_data_solution(path, mean, 0.3, torch.randn(16, 3), 0.0)  # alpha_0 != 0 on eps-VP
    res = gt_solve(u, x0, atol=1e-9, rtol=1e-9)
    z = (x0 - VPPath()(torch.tensor(0.0)).alpha * mean) / torch.sqrt(VPPath()(torch.tensor(0.0)).alpha ** 2 * 0.09 + VPPath()(torch.tensor(0.0)).sigma ** 2)
    torch.testing.assert_close(res.x, gaussian_data_solution(path, mean, 0.3, z, 1.0), atol=1e-6, rtol=1e-6)
    calls = []
    gt_solve(lambda t, x: (calls.append(1), u(t, x))[1], x0, atol=1e-6, rtol=1e-6)
    assert gt_solve(u, x0, atol=1e-6, rtol=1e-6).nfe == len(calls) > 10


def test_callback_records_every_step(mixture_ot, f64):
    seen = []
    x0 = torch.randn(4, 2)
    res = rk_sample(mixture_ot, x0, uniform_grid(5), "heun", callback=seen.append)
    assert [s.i for s in seen] == list(range(5))
    assert seen[0].x is x0 and torch.equal(seen[-1].x_next, res.x)
    assert [round(s.t, 12) for s in seen] == [0.0, 0.2, 0.4, 0.6, 0.8]


def test_registry_classical_and_bad_input(mixture_ot):
    s = get_solver("midpoint")
    x0 = torch.randn(4, 2, dtype=torch.float64)
    assert s.solve(mixture_ot, x0, 8).nfe == 8
    with pytest.raises(ValueError, match="multiple of 2; got 7"):
        s.check_nfe(7)
    with pytest.raises(ValueError, match="multiple of 4; got 6"):
        get_solver("rk4").check_nfe(6)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            get_solver("euler").check_nfe(bad)
    with pytest.raises(ValueError, match="unknown solver 'rk7'"):
        get_solver("rk7")
    with pytest.raises(ValueError, match="unknown Runge-Kutta method 'rk7'"):
        rk_sample(mixture_ot, x0, uniform_grid(2), "rk7")
    with pytest.raises(ValueError, match="positive integer"):
        uniform_grid(0)
    with pytest.raises(ValueError, match="x0 has 1 non-finite"):
        x0[0, 0] = math.nan
        rk_sample(mixture_ot, x0, uniform_grid(2), "euler")
    with pytest.raises(ValueError, match="strictly increasing"):
        rk_sample(mixture_ot, torch.zeros(1, 2, dtype=torch.float64), torch.tensor([0.0, 0.5, 0.5, 1.0]), "euler")
