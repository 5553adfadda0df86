"""The training objectives' numbers (core.losses), each against a value computed here by hand:
PSNR from MSE, the validation summary, rms and its clamp, the eq. 27 GT states, and the three
Bespoke losses on a case where every local error is known."""
import math

import pytest
import torch

from core.analytic import mixture_field
from core.losses import (BespokeObjective, gt_states_with_time_grad, psnr_from_mse, reverse_cumprod_weights, rms,
                         validation_summary)
from core.paths import CondOTPath
from core.solvers.bespoke import BespokeSolver
from core.solvers.gt import GTPool


def test_psnr_from_mse_numeric_values():
    mse = torch.tensor([0.25, 1.0, 4.0, 0.0], dtype=torch.float64)
    # 10 log10(R^2 / MSE) with R = 2: 10 log10(16) = 12.0412 dB, 10 log10(4) = 6.0206 dB, 0 dB;
    # an exact sample is clamped at MSE = 1e-20: 10 log10(4e20) = 206.0206 dB, finite.
    expected = [12.041199826559248, 6.020599913279624, 0.0, 206.02059991327963]
    torch.testing.assert_close(psnr_from_mse(mse, 2.0), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    # R = 4 (the 2-D data range): + 20 log10(2) = 6.0206 dB for every sample
    torch.testing.assert_close(psnr_from_mse(mse[:3], 4.0) - psnr_from_mse(mse[:3], 2.0),
                               torch.full((3,), 20 * math.log10(2), dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_validation_summary_is_the_mean_of_per_sample_values():
    mse = torch.tensor([0.25, 1.0], dtype=torch.float64)
    s = validation_summary(mse, 2.0)
    assert set(s) == {"rmse", "psnr"}
    assert s["rmse"] == pytest.approx((0.5 + 1.0) / 2, rel=1e-12)  # mean of per-sample RMSE, not sqrt(mean MSE)
    assert s["psnr"] == pytest.approx((12.041199826559248 + 6.020599913279624) / 2, rel=1e-12)
    assert isinstance(s["rmse"], float) and isinstance(s["psnr"], float)


def test_rms_over_trailing_dims_and_its_clamp():
    x = torch.tensor([[[3.0, 4.0]], [[0.0, 0.0]]], dtype=torch.float64, requires_grad=True)  # (2, 1, 2)
    r = rms(x, 1)
    torch.testing.assert_close(r, torch.tensor([math.sqrt(12.5), 1e-15], dtype=torch.float64), rtol=1e-12, atol=0)
    r2 = rms(x, 2)  # keep two batch dims: (2, 1)
    assert r2.shape == (2, 1)
    r.sum().backward()
    torch.testing.assert_close(x.grad[0, 0], torch.tensor([3.0, 4.0], dtype=torch.float64) / (2 * math.sqrt(12.5)))
    assert torch.equal(x.grad[1], torch.zeros(1, 2, dtype=torch.float64))  # 0, not NaN, below the clamp


def test_reverse_cumprod_weights_small_cases():
    torch.testing.assert_close(reverse_cumprod_weights(torch.tensor([5.0])), torch.tensor([1.0]))
    torch.testing.assert_close(reverse_cumprod_weights(torch.tensor([5.0, 3.0])), torch.tensor([3.0, 1.0]))


@pytest.fixture(scope="module")
def pool_field():
    means = torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    field = mixture_field(CondOTPath(), means, 0.3)
    x0 = torch.randn(24, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return GTPool.build(field, x0, n_grid=33, atol=1e-8, rtol=1e-8), field


def test_gt_states_value_and_time_derivative(pool_field):
    pool, _ = pool_field
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64, requires_grad=True)
    x = gt_states_with_time_grad(pool, t, slice(None))
    x_ref, dx_ref = pool.at(t.detach())
    torch.testing.assert_close(x, x_ref, rtol=0, atol=0)
    (x * dx_ref).sum().backward()  # d/dt_i of sum(x(t_i) * dx_i) = sum(dx_i * dx_i)
    torch.testing.assert_close(t.grad, (dx_ref * dx_ref).flatten(1).sum(1))


def _euler_local_errors(pool, field):
    """RK1 at identity with 2 steps: d_k = rms(x(t_k) + h u(t_k, x(t_k)) - x(t_{k+1})), per sample."""
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    x, _ = pool.at(t)
    d = [rms(x[k] + 0.5 * field(t[k].expand(x.shape[1]), x[k]) - x[k + 1], 1) for k in (0, 1)]
    return d


def test_bespoke_losses_on_known_local_errors(pool_field):
    """RK1-Bespoke at identity, 2 steps: L_0 = L_1 = 1 + h L_tau, so the RMSE bound is
    (1 + L_tau / 2) d_0 + d_1; "local" is d_0 + d_1; "final-rmse" is the RMSE of the full solve."""
    pool, field = pool_field
    d0, d1 = _euler_local_errors(pool, field)
    solver = BespokeSolver(1, 2)
    B = pool.size  # the whole pool in one batch: the batch mean does not depend on the draw
    gen = lambda: torch.Generator().manual_seed(0)
    local = BespokeObjective(field, pool, pool, loss="local", batch_size=B).loss(solver, gen())
    assert local.shape == (B,)
    assert local.mean().item() == pytest.approx((d0 + d1).mean().item(), rel=1e-10)
    for L in (0.0, 1.0, 3.0):
        bound = BespokeObjective(field, pool, pool, lipschitz=L, batch_size=B).loss(solver, gen())
        assert bound.mean().item() == pytest.approx(((1 + L / 2) * d0 + d1).mean().item(), rel=1e-10)
    final = BespokeObjective(field, pool, pool, loss="final-rmse", batch_size=B).loss(solver, gen())
    x = pool.xs[0] + 0.5 * field(torch.zeros(B, dtype=torch.float64), pool.xs[0])
    x = x + 0.5 * field(torch.full((B,), 0.5, dtype=torch.float64), x)
    assert final.mean().item() == pytest.approx(rms(x - pool.xs[-1], 1).mean().item(), rel=1e-10)


def test_bespoke_objective_batches_and_bad_input(pool_field):
    pool, field = pool_field
    solver = BespokeSolver(2, 2)
    obj = BespokeObjective(field, pool, pool, batch_size=10)
    assert obj.loss(solver, torch.Generator().manual_seed(0)).shape == (10,)
    assert BespokeObjective(field, pool, pool, batch_size=1000).loss(solver).shape == (pool.size,)
    # the batch is drawn from the generator: same seed, same batch; another seed, another batch
    a, b, c = (obj.loss(solver, torch.Generator().manual_seed(k)) for k in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    default = BespokeObjective(field, pool, pool)  # the paper's L_tau = 1, the RMSE bound, 256 paths a batch
    assert (default.lipschitz, default.loss_name, default.batch_size) == (1.0, "rmse-bound", 256)
    with pytest.raises(ValueError, match="unknown Bespoke loss 'l2'"):
        BespokeObjective(field, pool, pool, loss="l2")
    with pytest.raises(ValueError, match="L_tau must be >= 0, got -1"):
        BespokeObjective(field, pool, pool, lipschitz=-1)
    with pytest.raises(ValueError, match="got nan"):
        BespokeObjective(field, pool, pool, lipschitz=math.nan)


def test_a_rank_computes_whole_label_groups_of_the_batch(mixture_ot, f64):
    """Data parallel (objective.rows = (rank, world)): each rank's per-sample losses are its
    contiguous part of the batch, cut in whole label groups of a conditional model (3 labels:
    8 groups over 3 ranks = 2, 3, 3 groups), and the parts concatenated are the full batch's."""
    from core.solvers.bespoke import BespokeSolver
    from core.solvers.gt import GTPool
    mixture_ot.labels = torch.arange(3)  # rows bind labels 0, 1, 2, 0, ... (the field ignores them)
    x0 = torch.randn(48, 2, generator=torch.Generator().manual_seed(2))
    train, val = GTPool.build(mixture_ot, x0, n_grid=9, atol=1e-6, rtol=1e-6).split(12)
    obj = BespokeObjective(mixture_ot, train, val, batch_size=24)
    solver = BespokeSolver(2, 2)
    with torch.no_grad():
        full = obj.loss(solver, torch.Generator().manual_seed(3))
        parts = []
        for r in range(3):
            obj.rows = (r, 3)
            parts.append(obj.loss(solver, torch.Generator().manual_seed(3)))
    assert [p.numel() for p in parts] == [6, 9, 9]
    torch.testing.assert_close(torch.cat(parts), full, rtol=0, atol=0)


def test_gt_pool_velocities_are_u_at_the_grid_in_solve_sized_batches():
    """The pool's u values are u(t_k, x(t_k)) per path, and the field is called with at most one
    solve batch of rows at a time (one call on all grid x paths rows held a U-Net's activations
    for 65x the batch: 22 GB for 250 MNIST paths)."""
    field = mixture_field(CondOTPath(), torch.tensor([[1.0, 0.0], [-1.0, 0.5]], dtype=torch.float64), c=0.2)
    rows = []
    base = field.fn

    def counted(t, x):
        rows.append(x.shape[0])
        return base(t, x)

    field.fn = counted
    x0 = torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pool = GTPool.build(field, x0, n_grid=9, atol=1e-8, rtol=1e-8, batch_size=6)
    assert max(rows) <= 6
    field.fn = base
    for k, t in enumerate(pool.grid):
        assert torch.allclose(pool.us[k], field(t.expand(12), pool.xs[k]), rtol=0, atol=1e-12)
