"""core/trajectories.py on problems with exact answers."""
import pytest
import torch

from core import metrics
from core.analytic import gaussian_data_field, gaussian_data_solution
from core.paths import CondOTPath, CosinePath, VPPath, path_st_map
from core.solvers.registry import get_solver
from core.trajectories import equivalent_path, gt_trajectory, solver_trajectory, step_errors

MEAN = torch.tensor([0.5, -0.25], dtype=torch.float64)


@pytest.fixture
def gauss():
    return gaussian_data_field(CondOTPath(), MEAN, 0.3)


def test_solver_trajectory_records_every_step(gauss, f64):
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    traj = solver_trajectory(get_solver("midpoint"), gauss, x0, 8)
    assert traj.nfe == 8
    torch.testing.assert_close(traj.times, torch.linspace(0, 1, 5, dtype=torch.float64))
    assert traj.xs.shape == (5, 16, 2)
    torch.testing.assert_close(traj.xs[0], x0)
    final = get_solver("midpoint").solve(gauss, x0, 8).x
    torch.testing.assert_close(traj.xs[-1], final)


def test_gt_trajectory_matches_the_exact_path_in_any_order(gauss, f64):
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    times = torch.tensor([0.7, 0.0, 0.3, 1.0, 0.3], dtype=torch.float64)  # unsorted, repeated
    gt = gt_trajectory(gauss, x0, times, atol=1e-9, rtol=1e-9)
    assert gt.xs.shape == (5, 8, 2) and gt.nfe > 0
    for k, t in enumerate(times.tolist()):
        torch.testing.assert_close(gt.xs[k], gaussian_data_solution(CondOTPath(), MEAN, 0.3, x0, t), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="1.5"):
        gt_trajectory(gauss, x0, [0.5, 1.5])


def test_step_errors_zero_on_gt_and_final_error_of_euler(gauss, f64):
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    traj = solver_trajectory(get_solver("euler"), gauss, x0, 4)
    gt = gt_trajectory(gauss, x0, traj.times, atol=1e-9, rtol=1e-9)
    err = step_errors(traj, gt)
    assert err.shape == (5,) and err[0] == 0
    assert (err[1:] > 1e-4).all()  # Euler with 4 steps is visibly off the curved-in-scale path
    exact = gaussian_data_solution(CondOTPath(), MEAN, 0.3, x0, 1.0)
    torch.testing.assert_close(err[-1], metrics.rmse(traj.xs[-1], exact).mean(), atol=1e-7, rtol=0)
    torch.testing.assert_close(step_errors(gt, gt), torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("model_path, target", [(CondOTPath(), CosinePath()), (VPPath(), CondOTPath()),
                                                (CosinePath(), CondOTPath())])
def test_equivalent_path_of_a_path_change_is_the_target_path(model_path, target):
    """Theorem 2.3: the ST map from the model's path to `target` is equivalent to `target`."""
    r = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    m = path_st_map(model_path, target, r)
    alpha_bar, sigma_bar = equivalent_path(model_path, m.t, m.s)
    c = target(r)
    torch.testing.assert_close(alpha_bar, c.alpha, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(sigma_bar, c.sigma, atol=1e-8, rtol=1e-6)
