"""Bad command lines (issue 10, items 1, 5, 7 and 9): each is one line on stderr and exit 2,
checked before any expensive work; non-finite samples are never written."""
import json

import numpy as np
import pytest
import torch

import core.train
from core.solvers.bns import BNSSolver
from core.solvers.learned import save_solver
from core.model_io import load_model

from bench.bench_hostile import ROOT
from tests.helpers import fails, run  # noqa: F401

MODEL = str(ROOT / "assets" / "checkerboard_fm-ot.safetensors")
DIGITS = str(ROOT / "assets" / "digits_fm-ot.safetensors")


@pytest.fixture
def no_training(monkeypatch):
    """Any call of the trainer fails the test: the refusal must come before training."""
    def boom(*a, **k):
        raise AssertionError("training started")
    monkeypatch.setattr(core.train, "train_solver", boom)


# --- item 1: sizes an argument controls --------------------------------------------------------

def test_builtin_solver_nfe_over_its_cap(capsys, tmp_path):
    fails(capsys, r"NFE must be at most 1000", "sample", "--model", MODEL, "--solver", "euler", "--nfe", 1000000,
          "--n", 10, "--out", tmp_path / "a.npy")
    fails(capsys, r"--nfe must be in \[1, 1,000\]", "evaluate", "--model", MODEL, "--solver", "midpoint", "--nfe", 4,
          1000000, "--n", 10)


def test_training_nfe_over_its_cap_is_refused_before_anything(capsys, tmp_path, no_training):
    for family in ("bns", "rk2-bespoke"):
        took = fails(capsys, r"NFE of a solver to train must be at most 128", "train-solver", "--model", MODEL, "--solver", family,
                     "--nfe", 1000000, "--out", tmp_path / "s.safetensors")
        assert took < 30


@pytest.mark.parametrize("opt,value,cap", [("--n", 1_000_000_000, "100,000"), ("--n", 0, "100,000")])
def test_sample_count_capped(capsys, tmp_path, opt, value, cap):
    fails(capsys, rf"{opt} must be in \[1, {cap}\]", "sample", "--model", MODEL, "--solver", "euler", "--nfe", 4,
          opt, value, "--out", tmp_path / "a.npy")


@pytest.mark.parametrize("opt,value", [("--iters", 10**9), ("--n-train", 10**8), ("--batch-size", 0), ("--n-val", 10**7)])
def test_training_budgets_capped(capsys, tmp_path, no_training, opt, value):
    fails(capsys, rf"{opt} must be in", "train-solver", "--model", MODEL, "--solver", "bns", "--nfe", 4, opt, value,
          "--out", tmp_path / "s.safetensors")


def test_evaluate_arguments_checked_before_the_gt(capsys):
    fails(capsys, r"--n must be in", "evaluate", "--model", MODEL, "--solver", "all", "--n", 10**9)
    fails(capsys, r"--gt-tol must be in", "evaluate", "--model", MODEL, "--solver", "euler", "--nfe", 4,
          "--gt-tol", 1e-300)


def test_train_model_steps_capped(capsys, tmp_path):
    fails(capsys, r"--steps must be in", "train-model", "--data", "moons", "--steps", 10**9,
          "--out", tmp_path / "m.safetensors")


# --- item 7: devices and OS errors ---------------------------------------------------------------

@pytest.mark.parametrize("device", ["meta", "cuda:99x", "nonsense"])
def test_bad_devices(capsys, tmp_path, device):
    fails(capsys, r"device", "sample", "--model", MODEL, "--solver", "euler", "--nfe", 4, "--n", 4,
          "--device", device, "--out", tmp_path / "a.npy")


def test_out_is_a_directory(capsys, tmp_path):
    d = tmp_path / "d.npy"
    d.mkdir()
    fails(capsys, r"is a directory", "sample", "--model", MODEL, "--solver", "euler", "--nfe", 4, "--n", 4,
          "--out", d)


def test_out_under_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    fails(capsys, r"is a file, not a folder", "sample", "--model", MODEL, "--solver", "euler", "--nfe", 4, "--n", 4,
          "--out", f / "a.npy")


def test_out_name_too_long(capsys, tmp_path):
    fails(capsys, r"too long", "sample", "--model", MODEL, "--solver", "euler", "--nfe", 4, "--n", 4,
          "--out", tmp_path / ("a" * 300 + ".npy"))


def test_a_permission_error_is_one_line(capsys, tmp_path, monkeypatch):
    """(Tests run as root, who may write anywhere: the error is raised by the writer itself.)"""
    def denied(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(np, "save", denied)
    fails(capsys, r"Permission denied: .*a\.npy", "sample", "--model", MODEL, "--solver", "euler", "--nfe", 4,
          "--n", 4, "--out", tmp_path / "a.npy")


@pytest.mark.parametrize("cmd", ["train-solver", "train-model"])
def test_training_commands_check_the_output_before_training(capsys, tmp_path, no_training, monkeypatch, cmd):
    import core.train_model
    monkeypatch.setattr(core.train_model, "train_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    f = tmp_path / "file"
    f.write_text("x")
    for out, match in ((f / "x.safetensors", "is a file"), (tmp_path / ("b" * 300 + ".safetensors"), "too long")):
        if cmd == "train-solver":
            args = ["train-solver", "--model", MODEL, "--solver", "bns", "--nfe", 4, "--out", out]
        else:
            args = ["train-model", "--data", "moons", "--steps", 10, "--out", out]
        took = fails(capsys, match, *args)
        assert took < 30


def test_help_says_a_missing_folder_is_created(capsys):
    for cmd in ("train-solver", "train-model", "sample"):
        code, out, _ = run(capsys, cmd, "--help")
        assert code == 0 and "missing folder is created" in " ".join(out.split())


def test_missing_output_folder_is_created(capsys, tmp_path):
    code, out, err = run(capsys, "sample", "--model", MODEL, "--solver", "euler", "--nfe", 2, "--n", 4,
                         "--out", tmp_path / "new" / "deeper" / "a.npy")
    assert code == 0, err
    assert (tmp_path / "new" / "deeper" / "a.npy").is_file()
    assert not list((tmp_path / "new" / "deeper").glob("*.tmp"))


# --- item 5: non-finite outputs ------------------------------------------------------------------

def test_huge_guidance_gives_non_finite_samples_and_nothing_is_written(capsys, tmp_path):
    out = tmp_path / "a.npy"
    fails(capsys, r"non-finite samples.*nothing written", "sample", "--model", DIGITS, "--solver", "euler",
          "--nfe", 4, "--n", 10, "--guidance", 1e30, "--out", out)
    assert not out.exists()


def test_huge_guidance_in_evaluate_is_one_readable_gt_error(capsys):
    fails(capsys, r"ground-truth solve \(dopri5\) failed", "evaluate", "--model", DIGITS, "--solver", "euler",
          "--nfe", 4, "--n", 10, "--guidance", 1e30)


@pytest.fixture(scope="module")
def exploding_solver(tmp_path_factory):
    """A BNS solver with huge but finite coefficients, bound to the shipped model."""
    field = load_model(MODEL)
    solver = BNSSolver.from_config({"n": 4, "path": field.path.to_dict()})
    with torch.no_grad():
        solver.a.fill_(1e200)  # the per-step weights of x0: finite in the file, inf after a few steps
    f = tmp_path_factory.mktemp("s") / "exploding.safetensors"
    save_solver(solver, f, field)
    return f


def test_a_solver_with_huge_coefficients_writes_nothing(capsys, tmp_path, exploding_solver):
    out = tmp_path / "a.png"
    fails(capsys, r"non-finite samples", "sample", "--model", MODEL, "--solver", exploding_solver, "--nfe", 4,
          "--n", 16, "--out", out)
    assert not out.exists()


def test_evaluate_flags_non_finite_rows(capsys, tmp_path, exploding_solver):
    rep = tmp_path / "r.json"
    code, out, err = run(capsys, "evaluate", "--model", MODEL, "--solver", "euler", exploding_solver, "--nfe", 4,
                         "--n", 16, "--json", rep)
    assert code == 0, err
    row = [line for line in out.splitlines() if line.startswith("bns")]
    assert row and "NON-FINITE" in row[0]
    assert "non-finite samples" in err and "bns@4" in err
    rows = json.loads(rep.read_text())["results"]
    bad = [r for r in rows if r["solver"].startswith("bns")][0]
    assert bad["finite"] is False and bad["rmse"] is None
    good = [r for r in rows if r["solver"] == "euler"][0]
    assert good["finite"] is True and np.isfinite(good["rmse"])
