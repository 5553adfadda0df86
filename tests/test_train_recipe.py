"""The training recipe's pieces: learning-rate schedules, plateau detection and early stop,
coarse-to-fine stages and the final-RMSE fine-tune (core.train)."""
import math

import pytest
import torch

from core.losses import BespokeObjective
from core.solvers.bespoke import BespokeSolver
from core.solvers.gt import GTPool
from core.train import Plateau, SolverSpec, TrainConfig, fit, lr_factor, train_solver


def test_lr_factor():
    assert lr_factor("cosine", 1, 100) == 1.0 and abs(lr_factor("cosine", 101, 100) - 0.1) < 1e-12
    assert lr_factor("constant", 50, 100) == lr_factor("plateau", 50, 100) == 1.0


def test_plateau_counts_validations_without_relative_progress():
    p = Plateau("min", 0.01, 1.0)
    assert p.update(0.98) and p.stale == 0  # 2 % better
    assert not p.update(0.975) and p.stale == 1  # 0.5 % better: not enough
    assert not p.update(0.99) and p.stale == 2
    assert p.update(0.95) and p.stale == 0 and p.ref == 0.95
    q = Plateau("max", 0.01, 30.0)  # PSNR in dB: 1 % RMSE is 0.0873 dB
    assert not q.update(30.08) and q.update(30.1)
    with pytest.raises(ValueError, match="'mid'"):
        Plateau("mid", 0.01, 1.0)


class _FlatObjective:
    """An objective whose validation never improves: training must stop at the plateau."""

    metric, mode = "rmse", "min"

    def loss(self, solver, gen):
        return (solver.raw_s ** 2).sum().expand(4)

    def validate(self, solver):
        return {"rmse": 1.0, "psnr": 0.0}


def test_early_stop_and_halvings_on_plateau():
    cfg = TrainConfig(iters=1000, val_every=5, patience=3, lr_schedule="plateau", max_decays=2)
    lrs = []
    res = fit(BespokeSolver(1, 2), _FlatObjective(), cfg,
              callback=lambda ev: lrs.append(None))
    # 3 plateaus of 3 validations each (2 halvings, then stop): 9 validations, 45 iterations
    assert res.stop_reason == "plateau" and res.history[-1]["iteration"] == 45, res.history[-1]
    res = fit(BespokeSolver(1, 2), _FlatObjective(), TrainConfig(iters=1000, val_every=5, patience=3))
    assert res.stop_reason == "plateau" and res.history[-1]["iteration"] == 15
    res = fit(BespokeSolver(1, 2), _FlatObjective(), TrainConfig(iters=30, val_every=5, patience=0))
    assert res.stop_reason == "iterations" and res.history[-1]["iteration"] == 30


def test_coarse_to_fine_and_finetune_stages(mixture_ot):
    cfg = TrainConfig(iters=40, val_every=10, n_train=128, n_val=64, batch_size=64, coarse_to_fine=True,
                      finetune_iters=10, lr=1e-2)
    res = train_solver(mixture_ot, SolverSpec("rk2-bespoke", 8), cfg)
    assert [(s["stage"], s["nfe"]) for s in res.stages] == [("coarse", 4), ("final-rmse", 8)]
    assert all(s["iterations"] >= 1 for s in res.stages)
    assert res.elapsed >= sum(s["seconds"] for s in res.stages)
    coarse = res.stages[0]
    assert coarse["best"]["rmse"] < coarse["init"]["rmse"] and res.best["rmse"] <= res.init["rmse"]
    # odd or fewer than 4 step counts have no coarse stage
    for family, nfe in (("rk1-bespoke", 5), ("rk2-bespoke", 4)):
        short = train_solver(mixture_ot, SolverSpec(family, nfe), TrainConfig(iters=2, n_train=32, n_val=16,
                                                                               coarse_to_fine=True))
        assert short.stages == []


def test_bad_recipe_values():
    for kw, msg in [({"patience": -1}, "patience"), ({"lr_schedule": "step"}, "'step'"),
                    ({"min_delta": 1.5}, "min_delta"), ({"finetune_lr": 0.0}, "finetune_lr"),
                    ({"max_decays": 1.5}, "max_decays")]:
        with pytest.raises(ValueError, match=msg):
            TrainConfig(**kw)
