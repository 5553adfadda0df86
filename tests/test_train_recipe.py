"""The training recipe's pieces: learning-rate schedules, plateau detection and early stop,
coarse-to-fine stages and the final-RMSE fine-tune (core.train)."""
import math
from dataclasses import replace

import pytest
import torch

from core.losses import BespokeObjective
from core.solvers.bespoke import BespokeSolver
from core.solvers.gt import GTPool
from core.train import Plateau, SolverSpec, TrainConfig, fit, lr_factor, lr_scale, schedule_for, train_solver


def test_lr_factor():
    assert lr_factor("cosine", 1, 100) == 1.0 and abs(lr_factor("cosine", 101, 100) - 0.1) < 1e-12
    assert lr_factor("constant", 50, 100) == lr_factor("plateau", 50, 100) == 1.0


def test_cosine_schedule_values():
    """Cosine from 1 at the first iteration to 0.1 after the last, hand-computed values:
    0.1 + 0.45 (1 + cos(pi k / iters)) at iteration k + 1."""
    expected = {1: 1.0, 26: 0.1 + 0.45 * (1 + 0.5**0.5), 51: 0.55, 76: 0.1 + 0.45 * (1 - 0.5**0.5), 101: 0.1,
                500: 0.1}  # held at 0.1 past the end (a fine-tune or a resumed count)
    for it, want in expected.items():
        assert lr_factor("cosine", it, 100) == pytest.approx(want, abs=1e-12), it
    f = [lr_factor("cosine", it, 100) for it in range(1, 102)]
    assert all(a > b for a, b in zip(f, f[1:])), "strictly decreasing over the run"
    assert all(lr_factor(s, it, 100) == 1.0 for s in ("constant", "plateau") for it in (1, 50, 100, 1000))


class _ConstantGradient:
    """loss = the sum of the parameters (the gradient is 1 for every entry, every iteration): Adam's
    step is then exactly the learning rate (m_hat / sqrt(v_hat) = 1), so the change of a parameter between two
    iterations reads back the learning rate used. Validation returns `values` in order (the
    first one at initialisation), then repeats the last."""

    metric, mode = "rmse", "min"

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def loss(self, solver, gen):
        return sum(p.sum() for p in solver.parameters()).expand(4)

    def validate(self, solver):
        v = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return {"rmse": v, "psnr": -v}


def _lr_used(cfg, values, solver=None):
    """The learning rate of every iteration of fit(cfg), read back from the parameter moves."""
    solver = BespokeSolver(1, 2) if solver is None else solver
    flat = lambda: torch.cat([p.detach().reshape(-1) for p in solver.parameters()])  # noqa: E731
    seen = [flat()]
    res = fit(solver, _ConstantGradient(values), cfg, callback=lambda ev: ev.iteration and seen.append(flat()))
    steps = [(a - b) for a, b in zip(seen, seen[1:])]
    for st in steps:  # every entry moves by the same amount
        torch.testing.assert_close(st, st[:1].expand_as(st), rtol=1e-9, atol=0)
    return [float(st[0]) for st in steps], res


def test_fit_uses_the_cosine_schedule():
    cfg = TrainConfig(iters=8, lr=0.05, lr_schedule="cosine", patience=0, grad_clip=0.0)
    lrs, res = _lr_used(cfg, [1.0])
    want = [0.05 * (0.1 + 0.45 * (1 + math.cos(math.pi * k / 8))) for k in range(8)]
    assert lrs == pytest.approx(want, rel=1e-6)
    assert res.stop_reason == "iterations" and len(lrs) == 8


def test_fit_halves_the_rate_on_each_plateau_then_stops():
    """lr_schedule "plateau", patience 2, validation every iteration, a flat metric: two stale
    validations make a plateau; the rate halves at the first max_decays of them and training
    stops at the next one, after the iteration that completed it."""
    cfg = TrainConfig(iters=100, lr=0.04, lr_schedule="plateau", patience=2, max_decays=2, val_every=1,
                      grad_clip=0.0, min_delta=0.01)
    lrs, res = _lr_used(cfg, [1.0])
    assert lrs == pytest.approx([0.04, 0.04, 0.02, 0.02, 0.01, 0.01], rel=1e-6)
    assert res.stop_reason == "plateau" and res.history[-1]["iteration"] == 6
    # progress (more than min_delta) resets the count; less than min_delta does not
    lrs, res = _lr_used(cfg, [1.0, 0.98, 0.975, 0.9, 0.9])
    # validations: it1 0.98 (progress), it2 0.975 (0.5 %: stale 1), it3 0.9 (progress), it4, it5 stale -> halve
    assert lrs == pytest.approx([0.04] * 5 + [0.02] * 2 + [0.01] * 2, rel=1e-6)
    assert res.history[-1]["iteration"] == 9
    # "constant" does not halve: it stops at the first plateau
    lrs, res = _lr_used(TrainConfig(iters=100, lr=0.04, lr_schedule="constant", patience=3, val_every=2,
                                    grad_clip=0.0), [1.0])
    assert lrs == pytest.approx([0.04] * 6, rel=1e-6) and res.stop_reason == "plateau"


def test_bns_trains_at_a_rate_scaled_by_its_nfe_with_halvings_on_plateaus():
    """The "auto" schedule is cosine for Bespoke and plateau halvings for BNS; BNS's rate is
    lr * min(1, 4 / NFE)."""
    from core.solvers.bns import BNSSolver
    cfg = TrainConfig(iters=100, lr=0.04, patience=2, val_every=1, max_decays=1, grad_clip=0.0)
    assert cfg.lr_schedule == "auto"
    lrs, res = _lr_used(cfg, [1.0], BNSSolver(16))
    assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005], rel=1e-6) and res.stop_reason == "plateau"
    lrs, _ = _lr_used(cfg, [1.0], BNSSolver(5))
    assert lrs == pytest.approx([0.032, 0.032, 0.016, 0.016], rel=1e-6)
    lrs, _ = _lr_used(cfg, [1.0], BNSSolver(2))  # at most the configured rate
    assert lrs == pytest.approx([0.04, 0.04, 0.02, 0.02], rel=1e-6)
    lrs, _ = _lr_used(replace(cfg, lr_schedule="constant"), [1.0], BNSSolver(8))
    assert lrs == pytest.approx([0.02, 0.02], rel=1e-6)  # an explicit schedule is kept: no halving
    lrs, res = _lr_used(replace(cfg, iters=4, patience=0), [1.0], BespokeSolver(1, 16))
    assert lrs == pytest.approx([0.04 * (0.1 + 0.45 * (1 + math.cos(math.pi * k / 4))) for k in range(4)], rel=1e-6)
    assert schedule_for("auto", BNSSolver(4)) == "plateau" and schedule_for("auto", BespokeSolver(2, 4)) == "cosine"
    assert schedule_for("cosine", BNSSolver(4)) == "cosine" and lr_scale(BespokeSolver(2, 64)) == 1.0


def test_plateau_stop_counts_validations_not_iterations():
    """patience 3, validation every 4 iterations and at the last: a flat run stops after the
    third validation (iteration 12); patience 0 never stops early; the cap ends a run that is
    still improving, with the last iteration validated even when iters is not a multiple."""
    res = fit(BespokeSolver(1, 2), _ConstantGradient([1.0]),
              TrainConfig(iters=100, val_every=4, patience=3, grad_clip=0.0))
    assert res.stop_reason == "plateau" and res.history[-1]["iteration"] == 12
    res = fit(BespokeSolver(1, 2), _ConstantGradient([1.0]),
              TrainConfig(iters=10, val_every=4, patience=0, grad_clip=0.0))
    assert res.stop_reason == "iterations" and [h["iteration"] for h in res.history if "rmse" in h] == [0, 4, 8, 10]
    improving = [1.0 - 0.1 * k for k in range(10)]
    res = fit(BespokeSolver(1, 2), _ConstantGradient(improving),
              TrainConfig(iters=10, val_every=4, patience=1, grad_clip=0.0))
    assert res.stop_reason == "iterations" and res.best["rmse"] == pytest.approx(0.7)


def test_plateau_in_psnr_uses_the_same_relative_margin():
    """mode "max" (BNS validates PSNR in dB): progress means more than -20 log10(1 - min_delta) dB,
    the PSNR gain of an RMSE min_delta smaller; a non-finite reference accepts any value."""
    margin = -20 * math.log10(1 - 0.05)  # 0.4455 dB
    p = Plateau("max", 0.05, 40.0)
    assert not p.update(40.0 - 20 * math.log10(1 - 0.05)) and p.stale == 1  # exactly the margin: not progress
    assert not p.update(40.0 + margin - 1e-6) and p.stale == 2
    assert p.update(40.0 + margin + 1e-6) and p.stale == 0 and p.ref == pytest.approx(40.0 + margin)
    q = Plateau("min", 0.05, float("inf"))
    assert q.update(5.0) and q.ref == 5.0
    r = Plateau("min", 0.0, 1.0)  # min_delta 0: any decrease is progress, a tie is not
    assert r.update(0.999999) and not r.update(0.999999)


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


def test_callback_sees_the_coarse_stage_then_the_main_stage(mixture_ot):
    events = []
    cfg = TrainConfig(iters=6, val_every=3, n_train=64, n_val=32, batch_size=32, coarse_to_fine=True)
    res = train_solver(mixture_ot, SolverSpec("rk2-bespoke", 8), cfg, callback=events.append)
    its = [e.iteration for e in events]
    assert its == list(range(13)), its  # coarse 0..6, then the main stage's iterations 1..6 as 7..12
    assert events[0].params["t"].shape == (5,) and events[-1].params["t"].shape == (9,)
    assert [h["iteration"] for h in res.history] == list(range(7)) and res.stages[0]["iterations"] == 6
    assert [e.total_iters for e in events] == [6] * 7 + [12] * 6  # the main stage's count continues too
    assert res.stages[0]["seconds"] == round(res.stages[0]["seconds"], 3)  # milliseconds
    assert [e.elapsed for e in events] == sorted(e.elapsed for e in events)
    assert all(math.isfinite(e.loss) for e in events[1:])


def test_a_coarse_start_worse_than_the_plain_one_is_not_used(mixture_ot, monkeypatch):
    """A coarse stage cut short (a stop from the app, an early plateau) can give a start at the
    full NFE worse than the plain one; the main stage then starts from the plain one, so the
    returned solver is never worse than the plain start (seen in the app: a stopped run's
    RK2-Bespoke at NFE 8 was 2.7x worse than midpoint)."""
    import dataclasses
    import threading
    original = BespokeSolver.init_from_coarse

    def spoiled(self, coarse):
        original(self, coarse)
        with torch.no_grad():
            self.raw_s.add_(1.0)  # every s_i times e: a far worse start
        return self

    monkeypatch.setattr(BespokeSolver, "init_from_coarse", spoiled)
    cfg = TrainConfig(iters=3, val_every=1, n_train=64, n_val=32, batch_size=32, coarse_to_fine=True)
    plain = train_solver(mixture_ot, SolverSpec("rk2-bespoke", 8), dataclasses.replace(cfg, coarse_to_fine=False))
    res = train_solver(mixture_ot, SolverSpec("rk2-bespoke", 8), cfg)
    assert "kept the plain start" in res.stages[0]["note"]
    assert res.init == plain.init  # the main stage started where a run without the coarse stage starts
    stop = threading.Event()

    def stop_in_the_coarse_stage(ev):
        if ev.iteration >= 2:
            stop.set()

    cut = train_solver(mixture_ot, SolverSpec("rk2-bespoke", 8), dataclasses.replace(cfg, iters=50),
                       callback=stop_in_the_coarse_stage, stop_event=stop)
    assert cut.stopped and cut.stages[0]["note"].startswith("stopped during the coarse stage")
    assert cut.stages[0]["stop_reason"] == "stopped" and cut.stages[0]["iterations"] == 2  # the event reached it
    assert cut.best["rmse"] <= plain.init["rmse"]


class _CoarseSeen(Exception):
    pass


def test_the_coarse_stage_starts_from_the_spec_init_on_the_solver_device(mixture_ot, monkeypatch):
    """The coarse solver is the spec's start (here the ST map to the cosine path) at half the NFE,
    on the fine solver's device ("meta" stands for another device: nothing runs on it)."""
    import core.train as train
    from core.train import bespoke_start, coarse_to_fine_start
    seen = {}

    def fake_fit(coarse, *args, **kwargs):
        seen["device"], seen["state"], seen["nfe"] = coarse.raw_t.device, coarse.state_dict(), coarse.nfe
        raise _CoarseSeen

    monkeypatch.setattr(train, "fit", fake_fit)
    spec = SolverSpec("rk2-bespoke", 8, init="fm-cs")
    fine = bespoke_start(mixture_ot, "rk2-bespoke", 8, "fm-cs").to("meta")
    with pytest.raises(_CoarseSeen):
        coarse_to_fine_start(mixture_ot, fine, None, spec, TrainConfig())
    assert seen["device"].type == "meta" and seen["nfe"] == 4 and isinstance(seen["nfe"], int)
    want = bespoke_start(mixture_ot, "rk2-bespoke", 4, "fm-cs").state_dict()
    assert want.keys() == seen["state"].keys()
    for k in want:
        assert seen["state"][k].shape == want[k].shape
    on_cpu = bespoke_start(mixture_ot, "rk2-bespoke", 8, "fm-cs")
    with pytest.raises(_CoarseSeen):
        coarse_to_fine_start(mixture_ot, on_cpu, None, spec, TrainConfig())
    for k in want:
        torch.testing.assert_close(seen["state"][k], want[k], rtol=0, atol=0)
    identity = bespoke_start(mixture_ot, "rk2-bespoke", 4, "identity").state_dict()
    assert any(not torch.equal(want[k], identity[k]) for k in want)  # the init is visible in the state


def test_the_gt_pool_is_solved_on_the_training_device(mixture_ot, monkeypatch):
    from core.train import build_bespoke
    seen = {}

    def fake_build(field, x0, **kwargs):
        seen["device"] = x0.device
        raise _CoarseSeen

    monkeypatch.setattr(GTPool, "build", staticmethod(fake_build))
    with pytest.raises(_CoarseSeen):
        build_bespoke(mixture_ot, SolverSpec("rk1-bespoke", 2), TrainConfig(n_train=8, n_val=8), torch.device("meta"))
    assert seen["device"].type == "meta"


def test_the_finetune_runs_on_the_final_rmse_loss_then_restores_the_loss(mixture_ot, monkeypatch):
    from core.train import build_bespoke, final_rmse_finetune
    seen = []
    original = BespokeObjective.loss

    def spy(self, solver, generator=None):
        seen.append(self.loss_name)
        return original(self, solver, generator)

    monkeypatch.setattr(BespokeObjective, "loss", spy)
    cfg = TrainConfig(iters=3, finetune_iters=2, val_every=1, n_train=32, n_val=16, batch_size=16, patience=0,
                      gt_grid=9, gt_atol=1e-4, gt_rtol=1e-4)
    solver, obj = build_bespoke(mixture_ot, SolverSpec("rk1-bespoke", 2), cfg, torch.device("cpu"))
    tuned = final_rmse_finetune(solver, obj, cfg)
    assert seen == ["final-rmse"] * 2 and tuned.history[-1]["iteration"] == 2
    assert obj.loss_name == "rmse-bound"  # the objective's own loss is back
    obj.loss_name = "final-rmse"  # already trained on the final RMSE: nothing to fine-tune
    assert final_rmse_finetune(solver, obj, cfg) is None and len(seen) == 2
    assert final_rmse_finetune(solver, object(), cfg) is None  # BNS's objective has no loss_name
    obj.loss_name = "rmse-bound"
    assert final_rmse_finetune(solver, obj, replace(cfg, finetune_iters=0)) is None


def test_the_finetune_rate_stop_and_spec():
    """The fine-tune trains at lr * finetune_lr for finetune_iters, obeys the stop event and
    records the spec it was given."""
    import threading
    from core.train import final_rmse_finetune

    class Tunable(_ConstantGradient):
        loss_name = "rmse-bound"

    cfg = TrainConfig(lr=0.04, finetune_lr=0.25, finetune_iters=3, lr_schedule="constant", patience=0,
                      grad_clip=0.0, val_every=1)
    solver = BespokeSolver(1, 2)
    before = solver.raw_s.detach().clone()
    spec = SolverSpec("rk1-bespoke", 2, lipschitz=0.5)
    tuned = final_rmse_finetune(solver, Tunable([1.0, 0.9, 0.8, 0.7]), cfg, spec=spec)  # the last is the best
    torch.testing.assert_close(before - solver.raw_s.detach(), torch.full_like(before, 3 * 0.01), rtol=1e-6, atol=0)
    assert tuned.history[-1]["iteration"] == 3 and tuned.spec == spec
    stop = threading.Event()
    stop.set()
    stopped = final_rmse_finetune(BespokeSolver(1, 2), Tunable([1.0]), cfg, stop_event=stop)
    assert stopped.stopped and stopped.history[-1]["iteration"] == 0
