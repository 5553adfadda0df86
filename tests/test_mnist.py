"""The shipped 28x28 MNIST model (assets/mnist_fm-ot, a diffusers pipeline folder): it loads with
its folder's defaults, its GT samples are legible to the shipped MNIST classifier while a
network with random weights is not, a learned solver at initialisation is its base solver on it,
and the command line runs on it. Small n and loose GT tolerances keep this to seconds per test."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import load_model
from core.features_mnist import legibility, row_labels
from core.history import load_history
from core.solvers.bespoke import BespokeSolver
from core.solvers.bns import BNSSolver
from core.solvers.gt import gt_solve
from core.solvers.learned import load_solver
from core.solvers.registry import get_solver
from tests.helpers import one_torch_thread

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "assets" / "mnist_fm-ot"
N = 20  # two samples of each class (the labels cycle 0, 1, ..., 9)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def mnist():
    return load_model(MODEL)


def _noise(field, n: int = N, seed: int = 0) -> torch.Tensor:
    return field.noise(n, generator=torch.Generator().manual_seed(seed))


def test_loads_as_a_guided_28x28_model_with_the_folders_defaults(mnist):
    facts = json.loads((MODEL / "bespoke.json").read_text())
    assert mnist.data_shape == (1, 28, 28) and mnist.num_classes == 10
    assert mnist.guidance_scale == facts["guidance_scale"] == 2.0 and mnist.data_range == facts["data_range"] == 2.0
    assert mnist.path.name == "fm-ot" and mnist.meta["data"]["name"] == "mnist"
    assert mnist.meta["training"]["seconds"] == facts["train_seconds"]
    size = sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file() and "solvers" not in f.parts)
    assert size <= 10 * 2**20, f"the model folder is {size / 2**20:.1f} MiB"
    assert load_model(MODEL, guidance_scale=1.0).guidance_scale == 1.0  # an explicit scale wins


def test_gt_samples_are_legible_and_random_weights_are_not(mnist, tmp_path):
    gt = gt_solve(mnist, _noise(mnist), atol=1e-4, rtol=1e-4)
    labels = row_labels(mnist, N)
    assert legibility(gt.x, labels) >= 0.9

    from diffusers import UNet2DModel
    torch.manual_seed(0)
    config = json.loads((MODEL / "unet" / "config.json").read_text())
    rand = tmp_path / "random_mnist"
    shutil.copytree(MODEL, rand, ignore=shutil.ignore_patterns("solvers"))
    UNet2DModel.from_config(config).save_pretrained(rand / "unet", safe_serialization=True)
    random = load_model(rand)
    assert random.model_id != mnist.model_id
    x = get_solver("midpoint").solve(random, _noise(random), 16).x
    assert legibility(x, labels) <= 0.4  # about 0.1 by chance


def test_learned_solvers_at_init_are_their_base_solvers(mnist):
    x0 = _noise(mnist, 6)
    with torch.no_grad():
        mid = get_solver("midpoint").solve(mnist, x0, 8).x
        rk2b = BespokeSolver(2, 4).solve(mnist, x0).x  # identity scale-time map
        bns = BNSSolver(8, path=mnist.path, guidance_scale=mnist.guidance_scale).init_from("midpoint", mnist)
        bns_x = bns.solve(mnist, x0).x
    torch.testing.assert_close(rk2b, mid, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bns_x, mid, rtol=1e-4, atol=1e-4)


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_command_line_samples_evaluates_and_trains_on_it(tmp_path, mnist):
    png = tmp_path / "mnist.png"
    r = _cli("sample", "--model", str(MODEL), "--solver", "midpoint", "--nfe", "4", "--n", "10", "--threads", "1",
             "--out", str(png))
    assert r.returncode == 0, r.stderr
    assert png.stat().st_size > 1000

    out = tmp_path / "eval.json"
    r = _cli("evaluate", "--model", str(MODEL), "--solver", "euler", "midpoint", "--nfe", "4", "--n", "10",
             "--gt-tol", "1e-3", "--threads", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert rep["guidance_scale"] == 2.0 and rep["distances"]["names"] == ["fd"]
    assert rep["distances"]["reference"]["data"] == "mnist"
    euler, mid = rep["results"]
    assert mid["rmse"] < euler["rmse"] and mid["fd"] > 0 and rep["gt"]["fd"] > 0

    # BNS: it trains on (noise, GT sample) pairs, far cheaper to solve than the dense GT paths Bespoke
    # needs (measured on this model: 18 s against 154 s of GT for 30 paths, one busy thread)
    solver, hist = tmp_path / "bns4.bespoke", tmp_path / "bns4.history.json"
    r = _cli("train-solver", "--model", str(MODEL), "--solver", "bns", "--init", "midpoint", "--nfe", "4", "--iters", "3",
             "--n-train", "4", "--n-val", "2", "--batch-size", "4", "--threads", "1", "--quiet",
             "--out", str(solver), "--history", str(hist))
    assert r.returncode == 0, r.stderr
    history, summary = load_history(hist)
    assert [h["iteration"] for h in history] == [0, 1, 2, 3] and summary["spec"]["family"] == "bns"
    learned, _ = load_solver(str(solver), field=mnist)  # bound to this model and its default guidance
    assert learned.nfe == 4 and learned.solve(mnist, _noise(mnist, 2)).x.shape == (2, 1, 28, 28)


def test_its_readme_section_is_measured_and_its_picture_drawn():
    """`python scripts/make_assets.py --mnist` measured the shipped model (not the placeholder)."""
    readme = (ROOT / "assets" / "README.md").read_text()
    section = readme[readme.index("## mnist_fm-ot"):]
    facts = json.loads((MODEL / "bespoke.json").read_text())
    assert "not yet" not in section and "| GT legibility |" in section
    assert f"`{facts['command']}`" in section and (ROOT / "assets" / "mnist_fm-ot.png").is_file()
    measured = json.loads((ROOT / "assets" / "mnist_fm-ot.json").read_text())
    assert measured["legibility"] >= 0.9 and measured["facts"] == facts
