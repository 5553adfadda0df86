"""BNS solvers: parameter count, init == base solver (float64) for every supported base and
sigma0, the preconditioned (r-space) form, consistency order, gradients, training, save/load,
guidance and bad input."""
import math
import threading

import numpy as np
import pytest
import torch

from core.analytic import gaussian_data_field, gaussian_data_solution, mixture_field
from core.checkpoint import CheckpointError
from core.field import VelocityField
from core.paths import CondOTPath, CosinePath, EDMPath, ScaledOTPath, VPPath, path_st_map, st_transform
from core.solvers.base import rk_sample, uniform_grid
from core.solvers.bespoke import BespokeSolver
from core.solvers.bns import BNSObjective, BNSSolver, bespoke_scheme, build_bns
from core.solvers.dedicated import sample_dedicated
from core.solvers.learned import load_solver, save_solver
from core.train import SolverSpec, TrainConfig, fit, train_solver

PATHS = [CondOTPath(), CosinePath(), VPPath()]
MEANS = torch.tensor([[1.0, 1.0], [-1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)


def _x0(n=32, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _perturb(solver, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in solver.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype) * (1 if p is solver.raw_r else 1 / solver.n))
    return solver


def test_parameter_count():
    for n, k in [(1, 2), (4, 17), (8, 51), (16, 167)]:
        s = BNSSolver(n)
        assert s.num_free_parameters == k == sum(p.numel() for p in s.parameters()) == n * (n + 5) // 2 - 1


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
@pytest.mark.parametrize("sigma0", [1.0, 5.0])
@pytest.mark.parametrize("init", ["euler", "midpoint", "ddim", "dpm++2m"])
def test_init_equals_base_solver(path, sigma0, init):
    field = mixture_field(path, MEANS, 0.3)
    x0 = _x0()
    for n in (2, 6):
        solver = BNSSolver(n, sigma0, path).init_from(init, field)
        if init in ("euler", "midpoint"):
            ref = rk_sample(field, x0, uniform_grid(n if init == "euler" else n // 2), init)
        else:
            ref = sample_dedicated(init, field, x0, n)
        out = solver.solve(field, x0)
        assert out.nfe == ref.nfe == n
        torch.testing.assert_close(out.x, ref.x, rtol=1e-12, atol=1e-12)
        with torch.no_grad():
            torch.testing.assert_close(solver.solve(field, x0).x, ref.x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("sigma0", [1.0, 3.0])
def test_init_from_bespoke_equals_bespoke(order, sigma0, tmp_path):
    """A non-trivial Bespoke solver (EDM's ST map, then perturbed) maps exactly into BNS, also
    from its saved file."""
    path = CondOTPath()
    field = mixture_field(path, MEANS, 0.3)
    bes = BespokeSolver(order, 3).init_from_st(lambda r: path_st_map(path, EDMPath(), r, normalize=True))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in bes.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x0 = _x0()
    ref = bes.solve(field, x0).x
    sch = bespoke_scheme(bes)
    assert sch.nfe == bes.nfe and sch.strictly_increasing
    bns = BNSSolver(bes.nfe, sigma0, path).init_from_scheme(sch)
    torch.testing.assert_close(bns.solve(field, x0).x, ref, rtol=1e-12, atol=1e-12)
    f = tmp_path / "bes.safetensors"
    save_solver(bes, f, field)
    bns2 = BNSSolver(bes.nfe, sigma0, path).init_from(str(f), field)
    torch.testing.assert_close(bns2.solve(field, x0).x, ref, rtol=1e-12, atol=1e-12)
    assert bns2.config()["init"] == "bes.safetensors"


def test_sigma0_one_on_fm_ot_is_the_identity():
    s = _perturb(BNSSolver(5, 1.0, CondOTPath()))
    p = s.decode()
    torch.testing.assert_close(p["t"], p["r"], rtol=0, atol=1e-15)
    torch.testing.assert_close(p["s"], torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(p["A"][1:], p["a"], rtol=0, atol=1e-14)
    torch.testing.assert_close(p["B"][1:], p["b"], rtol=0, atol=1e-14)
    assert p["r"][0] == 0 and p["r"][-1] == 1 and (torch.diff(p["r"]) > 0).all()


@pytest.mark.parametrize("path,sigma0", [(CondOTPath(), 4.0), (CosinePath(), 0.5), (VPPath(), 2.0)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_model_space_form_equals_the_preconditioned_solve(path, sigma0):
    """Run the NS recursion directly on u_bar (core.paths.st_transform of the model's VF to
    ScaledOTPath(sigma0)) from x_bar_0 = s_0 x0: it ends on the same sample as `solve`."""
    field = mixture_field(path, MEANS, 0.3)
    solver = _perturb(BNSSolver(5, sigma0, path), seed=3)
    p = {k: v.detach() for k, v in solver.decode().items()}
    u_bar = st_transform(field, lambda r: path_st_map(path, ScaledOTPath(sigma0), r))
    x0 = _x0()
    xb0 = p["s"][0] * x0
    xb, us = xb0, []
    for i in range(solver.n):
        us.append(u_bar(p["r"][i], xb))
        xb = p["a"][i] * xb0 + sum(p["b"][i, j] * us[j] for j in range(i + 1))
    torch.testing.assert_close(solver.solve(field, x0).x, xb / p["s"][-1], rtol=1e-11, atol=1e-11)
    if path.name == "fm-ot":
        assert abs(p["s"][0] - sigma0) < 1e-12  # x_bar_0 = sigma0 x0 (docs/MATH.md §4.5)


@pytest.mark.parametrize("init,order", [("euler", 1), ("midpoint", 2)])
def test_consistent_at_init(init, order):
    """At init from an order-k base, BNS (here on a preconditioned cosine model) converges at order k."""
    path, mean, c = CosinePath(), torch.tensor([0.5, -0.3], dtype=torch.float64), 0.5
    field = gaussian_data_field(path, mean, c)
    x0 = _x0(64)
    exact = gaussian_data_solution(path, mean, c, x0, 1.0)
    nfes = [8, 16, 32, 64]
    errs = [((BNSSolver(n, 2.0, path).init_from(init, field).solve(field, x0).x - exact) ** 2).mean().sqrt().item()
            for n in nfes]
    slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.25, errs


def test_gradients_reach_every_parameter(mixture_ot):
    path = mixture_ot.path
    solver = BNSSolver(4, 2.0, path).init_from("euler", mixture_ot)
    x0 = _x0(64)
    x1 = x0.flip(0)  # any target will do
    obj = BNSObjective(mixture_ot, x0, x1, x0[:8], x1[:8], batch_size=64)
    loss = obj.loss(solver, torch.Generator().manual_seed(0))
    assert loss.shape == (64,)
    loss.mean().backward()
    for name, p in solver.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and (p.grad != 0).all(), name
    assert set(obj.validate(solver)) >= {"rmse", "psnr"}


def test_short_training_raises_psnr(mixture_ot):
    seen = []
    cfg = TrainConfig(iters=40, lr=1e-2, batch_size=64, val_every=10, n_train=128, n_val=64, seed=0)
    spec = SolverSpec("bns", 4, init="euler")
    solver, obj = build_bns(mixture_ot, spec, cfg, torch.device("cpu"))
    res = fit(solver, obj, cfg, callback=seen.append, spec=spec)
    assert res.best["psnr"] > res.init["psnr"] + 10, (res.init, res.best)
    assert res.best_iteration > 0 and not res.stopped and obj.gt_seconds > 0
    assert len(seen) == 41 and seen[0].iteration == 0 and set(seen[-1].params) >= {"t", "a", "b", "A", "B"}
    # the returned solver holds the best-validation parameters
    assert abs(obj.validate(res.solver)["psnr"] - res.best["psnr"]) < 1e-4


def test_stop_event_stops_cleanly(mixture_ot):
    ev = threading.Event()
    ev.set()
    res = train_solver(mixture_ot, SolverSpec("bns", 3, init="euler"),
                       TrainConfig(iters=50, n_train=64, n_val=32), stop_event=ev)
    assert res.stopped and res.best == res.init
    torch.testing.assert_close(res.solver.solve(mixture_ot, _x0()).x,
                               rk_sample(mixture_ot, _x0(), uniform_grid(3), "euler").x, rtol=1e-12, atol=1e-12)


def test_save_load_roundtrip(tmp_path):
    path = VPPath()
    field = mixture_field(path, MEANS, 0.3)
    solver = _perturb(BNSSolver(6, 3.0, path).init_from("dpm++2m", field), seed=5)
    f = tmp_path / "bns.safetensors"
    save_solver(solver, f, field)
    loaded, header = load_solver(f, field=field)
    assert isinstance(loaded, BNSSolver) and header["family"] == "bns" and loaded.nfe == 6
    assert loaded.config() == solver.config() and loaded.config()["sigma0"] == 3.0
    x0 = _x0()
    torch.testing.assert_close(loaded.solve(field, x0).x, solver.solve(field, x0).x, rtol=1e-13, atol=1e-13)


def test_guidance_scale_is_recorded_and_enforced(tmp_path):
    def guided(w):
        base = mixture_field(CondOTPath(), MEANS, 0.3)
        return VelocityField(base.fn, (2,), path=base.path, model_id="guided-toy", guidance_scale=w)

    field = guided(2.0)
    solver = BNSSolver(4, 1.0, field.path, guidance_scale=2.0)
    solver.solve(field, _x0())
    with pytest.raises(ValueError, match="guidance scale 2.0.*3.0"):
        solver.solve(guided(3.0), _x0())
    f = tmp_path / "g.safetensors"
    save_solver(solver, f, field)
    with pytest.raises(CheckpointError, match="guidance scale"):
        load_solver(f, field=guided(3.0))
    loaded, _ = load_solver(f, field=field)
    assert loaded.guidance_scale == 2.0


def test_bad_input_is_refused(mixture_ot):
    no_path = VelocityField(lambda t, x: -x, (2,), model_id="no-path")
    with pytest.raises(ValueError, match="sigma0=2.0.*Gaussian path"):
        BNSSolver(4, 2.0, None)
    BNSSolver(4, 1.0, None).init_from("midpoint", no_path).solve(no_path, _x0())  # fine without a path
    with pytest.raises(ValueError, match="'ddim' needs a model with a Gaussian path"):
        BNSSolver(4, 1.0, None).init_from("ddim", no_path)
    for bad, msg in [("edm", "evaluates twice"), ("rk4", "evaluates twice"), ("dopri", "unknown BNS init 'dopri'")]:
        with pytest.raises(ValueError, match=msg):
            BNSSolver(4, 1.0, mixture_ot.path).init_from(bad, mixture_ot)
    with pytest.raises(ValueError, match="even NFE, got 5"):
        BNSSolver(5, 1.0, mixture_ot.path).init_from("midpoint", mixture_ot)
    with pytest.raises(ValueError, match="trained for NFE 4.*NFE 6"):
        BNSSolver(4, 1.0, mixture_ot.path).solve(mixture_ot, _x0(), nfe=6)
    with pytest.raises(ValueError, match="path"):
        BNSSolver(4, 1.0, VPPath()).solve(mixture_ot, _x0())
    with pytest.raises(ValueError, match="sigma0 must be a positive"):
        BNSSolver(4, -1.0, CondOTPath())
    with pytest.raises(ValueError, match="loss 'local' does not apply"):
        train_solver(mixture_ot, SolverSpec("bns", 4, loss="local"), TrainConfig(iters=1, n_train=8, n_val=4))


def test_a_bns_file_is_not_a_base_to_start_bns_from(tmp_path, mixture_ot):
    from core.solvers.bns import base_scheme
    f = tmp_path / "bns.safetensors"
    save_solver(BNSSolver(4, path=mixture_ot.path), f, mixture_ot)
    with pytest.raises(ValueError, match=r"BNS can start from a Bespoke solver file; .* holds a bns solver"):
        base_scheme(str(f), 4, mixture_ot)
