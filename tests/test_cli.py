"""The command line end to end: train a tiny model, train a solver, sample, evaluate; and every
user error exits 2 with one line on stderr."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import core.evaluate
from core.cli import main
from core.model_io import load_model
from core.solvers.registry import get_solver
from tests.helpers import fails, run  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny 2-D model and a Bespoke solver for it, made through the CLI."""
    d = tmp_path_factory.mktemp("cli")
    model, solver = d / "moons.safetensors", d / "rk2.safetensors"
    assert main(["train-model", "--data", "moons", "--hidden", "16", "--layers", "2", "--steps", "30",
                 "--batch-size", "128", "--device", "cpu", "--quiet", "--out", str(model)]) == 0
    assert main(["train-solver", "--model", str(model), "--solver", "rk2-bespoke", "--nfe", "4", "--iters", "4",
                 "--n-train", "64", "--n-val", "32", "--batch-size", "32", "--device", "cpu", "--quiet",
                 "--out", str(solver)]) == 0
    np.save(d / "noise.npy", np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32))
    return d, model, solver


def test_round_trip_train_sample_evaluate(work, capsys, monkeypatch):
    d, model, solver = work
    capsys.readouterr()
    # Sample with the learned solver from a noise file: the same as calling the library.
    code, out, _ = run(capsys, "sample", "--model", model, "--solver", solver, "--nfe", 4, "--noise",
                       d / "noise.npy", "--out", d / "s.npy")
    assert code == 0 and "NFE 4" in out
    x = np.load(d / "s.npy")
    field = load_model(model)
    ref = get_solver(str(solver), field).solve(field, torch.from_numpy(np.load(d / "noise.npy")), 4).x
    assert x.shape == (50, 2) and np.allclose(x, ref.detach().numpy(), atol=1e-6)
    # Seeded noise: reproducible.
    for name in ("a", "b"):
        assert run(capsys, "sample", "--model", model, "--solver", "midpoint", "--nfe", 6, "--seed", 3, "--n", 20,
                   "--out", d / f"{name}.npy")[0] == 0
    assert np.array_equal(np.load(d / "a.npy"), np.load(d / "b.npy"))
    # Evaluate: GT solved once; the learned solver only at its own NFE.
    calls = []
    real = core.evaluate.ground_truth
    monkeypatch.setattr(core.evaluate, "ground_truth", lambda *a, **k: calls.append(1) or real(*a, **k))
    code, out, _ = run(capsys, "evaluate", "--model", model, "--solver", "euler", "--solver", solver, "--nfe", 4, 8,
                       "--noise", d / "noise.npy", "--json", d / "e.json")
    assert code == 0 and calls == [1]
    rep = json.loads((d / "e.json").read_text())
    got = [(r["solver"], r["nfe"], r["nfe_spent"]) for r in rep["results"]]
    assert got == [("euler", 4, 4), ("euler", 8, 8), ("rk2-bespoke@4", 4, 4)]
    assert rep["gt"]["nfe"] > 8 and rep["n"] == 50 and rep["model_id"] == field.model_id
    for r in rep["results"]:
        assert r["rmse"] > 0 and np.isfinite(r["psnr"]) and r["wall_s"] >= 0
        assert f"{r['rmse']:.5f}" in out  # the table on stdout
    e4, e8 = rep["results"][0], rep["results"][1]
    assert e8["rmse"] < e4["rmse"]  # Euler converges


def test_png_outputs(work, capsys, tmp_path):
    d, model, _ = work
    assert run(capsys, "sample", "--model", model, "--solver", "euler", "--nfe", 2, "--n", 100,
               "--out", tmp_path / "s.png")[0] == 0
    assert Image.open(tmp_path / "s.png").size[0] > 100
    digits = tmp_path / "digits.safetensors"
    assert run(capsys, "train-model", "--data", "digits", "--hidden", "16", "--layers", "1", "--steps", "2",
               "--batch-size", "8", "--device", "cpu", "--quiet", "--out", digits)[0] == 0
    code, out, _ = run(capsys, "sample", "--model", digits, "--solver", "heun", "--nfe", 4, "--n", 20,
                       "--guidance", 1.5, "--label", 7, "--out", tmp_path / "d.png")
    assert code == 0
    w, h = Image.open(tmp_path / "d.png").size
    assert w > h  # a 10-wide grid of 2 rows


def test_user_errors_are_one_line(work, capsys, tmp_path):
    d, model, solver = work
    m, s = str(model), str(solver)
    fails(capsys, "trained for NFE 4", "sample", "--model", m, "--solver", s, "--nfe", 6, "--out", tmp_path / "x.npy")
    fails(capsys, "multiple of 2; got 3", "sample", "--model", m, "--solver", "midpoint", "--nfe", 3,
          "--out", tmp_path / "x.npy")
    fails(capsys, "multiple of 4; got 6", "evaluate", "--model", m, "--solver", "rk4", "--nfe", 6)
    fails(capsys, "positive integer", "sample", "--model", m, "--solver", "euler", "--nfe", 0, "--out", tmp_path / "x.npy")
    fails(capsys, "unknown solver 'rk9'", "sample", "--model", m, "--solver", "rk9", "--nfe", 4, "--out", tmp_path / "x.npy")
    fails(capsys, "model file not found", "sample", "--model", tmp_path / "nope.safetensors", "--solver", "euler",
          "--nfe", 4, "--out", tmp_path / "x.npy")
    fails(capsys, "solver file not found", "evaluate", "--model", m, "--solver", tmp_path / "nope.safetensors",
          "--nfe", 4)
    fails(capsys, "invalid choice: 'cifar'", "train-model", "--data", "cifar", "--out", tmp_path / "x.safetensors")
    fails(capsys, "the following arguments are required: --out", "sample", "--model", m, "--solver", "euler", "--nfe", 4)
    fails(capsys, r"needs floats of shape \(N, 2\)", "sample", "--model", m, "--solver", "euler", "--nfe", 4,
          "--noise", _save(tmp_path / "bad.npy", np.zeros((5, 3), np.float32)), "--out", tmp_path / "x.npy")
    fails(capsys, "must end in .npy or .png", "sample", "--model", m, "--solver", "euler", "--nfe", 4,
          "--out", tmp_path / "x.txt")
    fails(capsys, "unconditional", "sample", "--model", m, "--solver", "euler", "--nfe", 4, "--guidance", 2,
          "--out", tmp_path / "x.npy")


def _save(path, arr):
    np.save(path, arr)
    return path


def test_solver_for_another_model_and_hostile_files(work, capsys, tmp_path):
    d, model, solver = work
    other = tmp_path / "other.safetensors"
    assert run(capsys, "train-model", "--data", "moons", "--hidden", "16", "--layers", "2", "--steps", "2",
               "--batch-size", "16", "--seed", "1", "--device", "cpu", "--quiet", "--out", other)[0] == 0
    fails(capsys, "trained for model", "sample", "--model", other, "--solver", solver, "--nfe", 4,
          "--out", tmp_path / "x.npy")
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"a": 1}))
    fails(capsys, "pickle", "evaluate", "--model", evil, "--solver", "euler", "--nfe", 2)
    fails(capsys, "pickle", "sample", "--model", model, "--solver", evil, "--nfe", 2, "--out", tmp_path / "x.npy")
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(model.read_bytes()[:300])
    fails(capsys, "truncated|impossible|hash", "info", trunc)
    pickled_noise = tmp_path / "noise.npy"
    np.save(pickled_noise, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    fails(capsys, "cannot read noise file", "sample", "--model", model, "--solver", "euler", "--nfe", 2,
          "--noise", pickled_noise, "--out", tmp_path / "x.npy")


def test_help_for_every_command(capsys):
    for cmd in ("train-model", "train-solver", "sample", "evaluate", "info"):
        code, out, _ = run(capsys, cmd, "--help")
        assert code == 0 and "usage: python -m core " + cmd in out


def test_python_dash_m_core_exit_status_and_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "core", "sample", "--model", str(tmp_path / "none.safetensors"),
                        "--solver", "euler", "--nfe", "4", "--out", str(tmp_path / "x.npy")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: model file not found: {str(tmp_path / 'none.safetensors')!r}"]


# --- --threads and the distances of `evaluate` (issue 11) --------------------------------------

CHECKERBOARD = os.path.join(ROOT, "assets", "checkerboard_fm-ot.safetensors")
DIGITS = os.path.join(ROOT, "assets", "digits_fm-ot.safetensors")


def test_evaluate_reports_distances_with_percent_of_gt(capsys, tmp_path):
    """Without --out-dir, evaluate gives each sample set's distance to fresh data samples and its
    % of GT's own distance; a 1-step Euler is far from the data, a 16-step midpoint close to GT."""
    from core.evaluate import data_distances, ground_truth
    from core.report import distance_metrics, reference_samples
    code, out, _ = run(capsys, "evaluate", "--model", CHECKERBOARD, "--solver", "euler", "midpoint", "--nfe", 16,
                       "--n", 400, "--threads", 1, "--json", tmp_path / "e.json")
    assert code == 0
    rep = json.loads((tmp_path / "e.json").read_text())
    assert rep["distances"]["names"] == ["sw", "energy"] and rep["distances"]["reference"]["data"] == "checkerboard"
    assert rep["gt"]["sw"] > 0 and rep["gt"]["energy"] > 0 and rep["threads"] == 1
    for r in rep["results"]:
        for d in ("sw", "energy"):
            assert r[f"pct_{d}"] == pytest.approx(100 * r[d] / rep["gt"][d])
    # The numbers are those of core.metrics on the same reference (independent recomputation).
    field = load_model(CHECKERBOARD)
    x0 = field.noise(400, torch.Generator().manual_seed(0))
    ref = reference_samples(field, 400, 0).double()
    x = get_solver("midpoint", field).solve(field, x0, 16).x.detach().double()
    mid = next(r for r in rep["results"] if r["solver"] == "midpoint")
    assert mid["energy"] == pytest.approx(distance_metrics((2,))["energy"](x, ref), rel=1e-4)
    assert "% GT" in out and "gt (dopri5)" in out and "sliced Wasserstein" in out
    # A clearly worse solver scores clearly worse, relative to GT.
    code, _, _ = run(capsys, "evaluate", "--model", CHECKERBOARD, "--solver", "euler", "--nfe", 1, "--n", 400,
                     "--threads", 1, "--json", tmp_path / "bad.json")
    bad = json.loads((tmp_path / "bad.json").read_text())["results"][0]
    assert code == 0 and bad["pct_energy"] > 3 * mid["pct_energy"] and bad["pct_sw"] > 1.5 * mid["pct_sw"]
    assert 50 < mid["pct_energy"] < 200


def test_evaluate_digits_reports_the_digits_fd(capsys, tmp_path):
    code, out, _ = run(capsys, "evaluate", "--model", DIGITS, "--solver", "euler", "--nfe", 4, "--n", 60,
                       "--threads", 1, "--json", tmp_path / "d.json")
    assert code == 0
    rep = json.loads((tmp_path / "d.json").read_text())
    r = rep["results"][0]
    assert rep["distances"]["names"] == ["fd"] and rep["gt"]["fd"] > 0 and r["fd"] > 0
    assert r["pct_fd"] == pytest.approx(100 * r["fd"] / rep["gt"]["fd"])
    assert "not Inception FID" in out


def test_evaluate_no_distances(work, capsys, tmp_path):
    _, model, _ = work
    code, out, _ = run(capsys, "evaluate", "--model", model, "--solver", "euler", "--nfe", 2, "--n", 20,
                       "--no-distances", "--json", tmp_path / "n.json")
    rep = json.loads((tmp_path / "n.json").read_text())
    assert code == 0 and "sw" not in rep["results"][0] and rep["distances"] == {"skipped": "--no-distances"}
    assert "% GT" not in out


def test_threads_option_applies_to_the_command_only(work, capsys, tmp_path, monkeypatch):
    """--threads sets torch's thread count while the command runs (train-solver, sample, evaluate,
    train-model) and the caller's count comes back afterwards; a bad value is a one-line error."""
    import core.train
    _, model, _ = work
    seen = []
    real = core.train.train_solver
    monkeypatch.setattr(core.train, "train_solver", lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert run(capsys, "train-solver", "--model", model, "--solver", "rk1-bespoke", "--nfe", 2, "--iters", 2,
                   "--n-train", 32, "--n-val", 16, "--batch-size", 16, "--device", "cpu", "--quiet", "--threads", 1,
                   "--out", tmp_path / "s.safetensors")[0] == 0
        assert seen == [1] and torch.get_num_threads() == 2
        fails(capsys, "--threads must be a whole number >= 0", "sample", "--model", model, "--solver", "euler",
              "--nfe", 2, "--threads", -1, "--out", tmp_path / "x.npy")
        for cmd in ("train-model", "train-solver", "sample", "evaluate"):
            assert "--threads" in run(capsys, cmd, "--help")[1]
    finally:
        torch.set_num_threads(before)


def test_train_solver_recipe_options(work, capsys, tmp_path):
    d, model, _ = work
    out = tmp_path / "rk2_8.safetensors"
    code, stdout, _ = run(capsys, "train-solver", "--model", model, "--solver", "rk2-bespoke", "--nfe", 8, "--iters", 3,
                          "--n-train", 32, "--n-val", 16, "--batch-size", 16, "--lr-schedule", "plateau",
                          "--patience", 1, "--finetune-iters", 2, "--device", "cpu", "--quiet", "--out", out)
    assert code == 0 and "saved" in stdout
    from core.solvers.learned import load_solver
    _, header = load_solver(out)
    assert [s["stage"] for s in header["train"]["stages"]] == ["coarse", "final-rmse"]
    fails(capsys, "patience", "train-solver", "--model", model, "--solver", "rk2-bespoke", "--nfe", 4,
          "--patience", -1, "--device", "cpu", "--quiet", "--out", tmp_path / "x.safetensors")
