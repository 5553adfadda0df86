"""GT data sets on disk (core/gtdata): deterministic shards, a manifest that says what is there,
resume after a killed run, reuse by training, refusal of a data set made for another model."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from core import load_model
from core.cli import main
from core.gtdata import GTSpec, bytes_per_path, make_gt, open_gt
from core.gtdata.spec import shard_seed
from core.solvers.gt import GTPool, gt_solve
from core.train import SolverSpec, TrainConfig, train_solver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOONS = os.path.join(ROOT, "assets", "moons_fm-ot.safetensors")
SPIRALS = os.path.join(ROOT, "assets", "spirals_fm-ot.safetensors")
DIGITS = os.path.join(ROOT, "assets", "digits_fm-ot.safetensors")
SMALL = dict(n_train=48, n_val=16, shard_size=16)


@pytest.fixture(scope="module")
def moons():
    return load_model(MOONS)


@pytest.fixture(scope="module")
def pairs_dir(moons, tmp_path_factory):
    d = tmp_path_factory.mktemp("gt") / "pairs"
    make_gt(moons, GTSpec.for_field(moons, **SMALL), d)
    return d


def hashes(d):
    return [s["content_hash"] for s in json.loads((d / "manifest.json").read_text())["shards"]]


def test_shards_hold_the_gt_of_their_own_noise(moons, pairs_dir):
    ds = open_gt(pairs_dir, moons)
    m = ds.manifest
    assert m["complete"] and [s["file"] for s in m["shards"]] == [
        "train-00000.safetensors", "train-00001.safetensors", "train-00002.safetensors", "val-00000.safetensors"]
    assert m["totals"]["paths"] == 64 and m["totals"]["nfe"] == sum(s["nfe"] for s in m["shards"]) > 0
    assert m["spec"]["model_id"] == moons.model_id and m["model_file"] is None
    x0, x1, x0v, x1v = ds.pairs()
    assert x0.shape == (48, 2) and x0v.shape == (16, 2) and x0.dtype == torch.float32
    # Shard 1 of the train split: noise from its own seed, solved as one dopri5 batch.
    gen = torch.Generator().manual_seed(shard_seed(0, "train", 1))
    noise = moons.noise(16, generator=gen)
    assert torch.equal(x0[16:32], noise)
    assert torch.equal(x1[16:32], gt_solve(moons, noise, atol=1e-5, rtol=1e-5).x)
    # Validation noise is its own stream: no validation x0 is a training x0.
    assert torch.cdist(x0v, x0).min() > 0
    assert shard_seed(0, "train", 0) != shard_seed(0, "val", 0) != shard_seed(1, "val", 0)


def test_paths_store_and_size_per_path(moons, tmp_path):
    spec = GTSpec.for_field(moons, n_train=16, n_val=16, shard_size=16, store="paths", grid=9)
    make_gt(moons, spec, tmp_path)
    train, val = open_gt(tmp_path, moons).pools()
    assert isinstance(train, GTPool) and train.xs.shape == (9, 16, 2) and val.us.shape == (9, 16, 2)
    ref = GTPool.build(moons, val.x0, n_grid=9, batch_size=16)
    assert torch.equal(val.xs, ref.xs) and torch.equal(val.us, ref.us)
    ds = open_gt(tmp_path, moons)  # Bespoke trains on the stored paths (and BNS on their ends)
    res = train_solver(moons, SolverSpec("rk2-bespoke", nfe=4), TrainConfig(iters=2, batch_size=8, val_every=2,
                                                                             device="cpu"), gt=ds)
    assert res.gt_nfe == ds.nfe and set(res.best) >= {"rmse", "psnr"}
    assert torch.equal(ds.pairs()[3], val.x1)
    assert bytes_per_path((3, 32, 32), "pairs") == 2 * 3072 * 4
    assert bytes_per_path((3, 32, 32), "paths", grid=65, dtype="float64") == 2 * 65 * 3072 * 8
    assert spec.path_bytes == 2 * 9 * 2 * 4
    with pytest.raises(ValueError, match="file limit"):
        GTSpec.for_field(moons, store="paths", shard_size=10**7)


def test_conditional_shards_keep_label_alignment():
    digits = load_model(DIGITS)
    with pytest.raises(ValueError, match="multiple of 10"):
        GTSpec.for_field(digits, n_train=25, n_val=10, shard_size=10)
    spec = GTSpec.for_field(digits, n_train=20, n_val=10, shard_size=10)
    assert spec.labels == list(range(10)) and spec.guidance_scale == 2.0


KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import core.gtdata.make as mk
    from core import load_model
    from core.gtdata import GTSpec, make_gt
    real_save, calls = mk.checkpoint.save, []
    def save(path, tensors, header, kind):
        calls.append(path)
        if len(calls) == 3:  # die while writing the third shard: half its bytes in the temp file
            raw = mk.checkpoint.dumps(tensors, header, kind)
            open(str(path) + ".tmp", "wb").write(raw[: len(raw) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(path, tensors, header, kind)
    mk.checkpoint.save = save
    field = load_model({model!r})
    make_gt(field, GTSpec.for_field(field, n_train=48, n_val=16, shard_size=16), {out!r})
""")


def test_resume_after_a_killed_run(moons, pairs_dir, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER.format(root=ROOT, model=MOONS, out=str(out))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # really killed
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train-00000.safetensors",
                                                     "train-00001.safetensors", "train-00002.safetensors.tmp"]
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(ValueError, match="unfinished"):
        open_gt(out)
    # A finished shard damaged on disk is also redone.
    raw = (out / "train-00001.safetensors").read_bytes()
    (out / "train-00001.safetensors").write_bytes(raw[: len(raw) // 2])
    kept = (out / "train-00000.safetensors").stat().st_mtime_ns
    log = []
    make_gt(moons, GTSpec.for_field(moons, **SMALL), out, progress=log.append)
    assert any("train-00000.safetensors already done, kept" in m for m in log)
    assert any("train-00001.safetensors is unusable" in m for m in log)
    assert any("removing the half-written train-00002.safetensors.tmp" in m for m in log)
    assert (out / "train-00000.safetensors").stat().st_mtime_ns == kept
    assert not list(out.glob("*.tmp"))
    assert hashes(out) == hashes(pairs_dir)  # the same data set as an uninterrupted run


def test_training_reuses_the_data_set(moons, pairs_dir):
    ds = open_gt(pairs_dir, moons)
    cfg = TrainConfig(iters=6, batch_size=16, val_every=3, device="cpu", seed=0)
    res = train_solver(moons, SolverSpec("bns", nfe=4), cfg, gt=ds)
    assert res.gt_nfe == ds.nfe and res.best["psnr"] >= res.init["psnr"]
    # Validation is on the data set's held-out split.
    from core import metrics
    from core.losses import validation_summary
    x0, x1, x0v, x1v = ds.pairs()
    with torch.no_grad():
        want = validation_summary(metrics.mse(res.solver.solve(moons, x0v).x, x1v), moons.data_range)
    assert res.best["psnr"] == pytest.approx(want["psnr"], rel=1e-6)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_refuses_a_data_set_made_for_another_model(pairs_dir, tmp_path, capsys):
    args = ["--solver", "bns", "--nfe", "4", "--iters", "2", "--batch-size", "16", "--device", "cpu", "--quiet",
            "--out", tmp_path / "s.safetensors"]
    code, _, err = run(capsys, "train-solver", "--model", SPIRALS, "--gt", pairs_dir, *args)
    assert code == 2 and "was made for model" in err and "Traceback" not in err
    code, _, err = run(capsys, "train-solver", "--model", MOONS, "--gt", pairs_dir, args[0], "rk2-bespoke",
                       *args[2:])
    assert code == 2 and "make one with `make-gt --store paths`" in err
    code, _, err = run(capsys, "train-solver", "--model", MOONS, "--gt", tmp_path / "nowhere", *args)
    assert code == 2 and "folder not found" in err
    code, out, err = run(capsys, "train-solver", "--model", MOONS, "--gt", pairs_dir, *args)
    assert code == 0 and "saved" in out
    # make-gt into a folder holding another data set: refused before any work.
    code, _, err = run(capsys, "make-gt", "--model", MOONS, "--n", 48, "--n-val", 16, "--shard-size", 16,
                       "--seed", 1, "--quiet", "--out", pairs_dir)
    assert code == 2 and "other settings (seed: 0 vs 1)" in err


def test_cli_refuses_another_guidance_scale(tmp_path, capsys):
    code, out, err = run(capsys, "make-gt", "--model", DIGITS, "--guidance", 2, "--n", 20, "--n-val", 10,
                         "--shard-size", 10, "--atol", 1e-3, "--rtol", 1e-3, "--quiet", "--device", "cpu",
                         "--out", tmp_path / "d")
    assert code == 0 and "30 paths in 3 shards" in out, err
    code, _, err = run(capsys, "train-solver", "--model", DIGITS, "--guidance", 1, "--gt", tmp_path / "d",
                       "--solver", "bns", "--nfe", 4, "--iters", 1, "--batch-size", 10, "--device", "cpu",
                       "--quiet", "--out", tmp_path / "s.safetensors")
    assert code == 2 and "made at guidance scale 2.0, not 1.0" in err


def test_report_and_ablation_train_on_the_data_set(moons, pairs_dir):
    from core.report import SweepConfig, _train_learned
    ds = open_gt(pairs_dir, moons)
    cfg = SweepConfig(learned=("bns", "rk1-bespoke"), train_iters=2, train_n=32, train_batch=16, device="cpu",
                      train_gt=str(pairs_dir))
    _, res = _train_learned(moons, "bns", 4, cfg, "cpu", gt=ds)
    assert res.gt_nfe == ds.nfe
    _, res = _train_learned(moons, "rk1-bespoke", 2, cfg, "cpu", gt=ds)  # pairs cannot serve Bespoke: own GT
    assert res.gt_nfe != ds.nfe
    # The app's ablation runs train on it too (a data set for another model is refused there as well).
    import threading
    import types
    from explorer.workers import ablation_job
    job = types.SimpleNamespace(stop=threading.Event(), report=lambda *a, **k: None)
    tcfg = TrainConfig(iters=2, batch_size=16, val_every=2, device="cpu")
    rows = ablation_job(moons, SolverSpec("bns", nfe=4), tcfg, "sigma0", [1.0], gt=ds)(job)
    assert len(rows) == 1 and rows[0]["psnr"] > 0
    with pytest.raises(ValueError, match="was made for model"):
        ablation_job(load_model(SPIRALS), SolverSpec("bns", nfe=4), tcfg, "sigma0", [1.0], gt=ds)(job)
