"""Training faults (issue 10, items 4 and 8): a diverged run keeps its best-validation solver
(finite) and says so; Ctrl-C in train-solver and SIGTERM to the app's process save the run;
temp files of killed writes are cleaned up."""
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

import core.losses
from bench.bench_hostile import ROOT
from core import checkpoint
from core.cli import main
from core.losses import BespokeObjective
from core.solvers.bespoke import BespokeSolver
from core.solvers.gt import GTPool
from core.solvers.learned import load_solver
from core.train import NonFiniteLossError, TrainConfig, fit

MODEL = str(ROOT / "assets" / "checkerboard_fm-ot.safetensors")


# --- item 4: divergence --------------------------------------------------------------------------

def _nan_after(obj, n_ok: int):
    real, calls = obj.loss, {"n": 0}

    def loss(s, g):
        calls["n"] += 1
        out = real(s, g)
        return out * math.nan if calls["n"] > n_ok else out
    obj.loss = loss


def test_divergence_returns_the_best_validation_solver(mixture_ot, f64):
    """The NaN comes at iteration 9; validation ran at 2, 4, 6, 8. The solver handed back is the
    best-validation one (not the parameters that produced the NaN), finite, and samples finitely."""
    pool = GTPool.build(mixture_ot, torch.randn(96, 2), n_grid=33)
    train, val = pool.split(32)
    solver = BespokeSolver(2, 2)
    obj = BespokeObjective(mixture_ot, train, val)
    _nan_after(obj, 8)
    states = {}

    def cb(ev):
        if ev.metrics is not None:
            states[ev.iteration] = {k: v.detach().clone() for k, v in solver.state_dict().items()}

    with pytest.raises(NonFiniteLossError, match=r"iteration 9.*best-validation one \(iteration \d+\)") as e:
        fit(solver, obj, TrainConfig(iters=50, val_every=2, lr=5e-2), callback=cb)
    res = e.value.result
    assert res.diverged and res.summary()["diverged"] is True
    assert res.best_iteration in states and res.best_iteration in (0, 2, 4, 6, 8)
    for k, v in solver.state_dict().items():
        assert torch.equal(v, states[res.best_iteration][k]), k
    assert all(math.isfinite(v) for v in res.best.values())
    assert obj.validate(solver)["rmse"] == pytest.approx(res.best["rmse"])
    x = solver.solve(mixture_ot, torch.randn(64, 2), solver.nfe).x
    assert torch.isfinite(x).all()


def test_cli_saves_the_best_solver_of_a_diverged_run_and_says_so(capsys, tmp_path, monkeypatch):
    real = BespokeObjective.loss
    calls = {"n": 0}

    def loss(self, s, g=None):
        calls["n"] += 1
        out = real(self, s, g)
        return out * math.nan if calls["n"] > 6 else out
    monkeypatch.setattr(core.losses.BespokeObjective, "loss", loss)
    out = tmp_path / "s.safetensors"
    code = main(["train-solver", "--model", MODEL, "--solver", "rk2-bespoke", "--nfe", "4", "--iters", "40",
                 "--n-train", "64", "--n-val", "32", "--batch-size", "32", "--quiet", "--out", str(out)])
    o, err = capsys.readouterr()
    assert code == 0, err
    assert "warning: training diverged at iteration 7" in err and "(diverged)" in o
    from core import load_model
    field = load_model(MODEL)
    solver, header = load_solver(out, field=field)
    assert header["train"]["diverged"] is True
    assert torch.isfinite(solver.solve(field, field.noise(32), 4).x).all()


# --- item 8: interrupts ---------------------------------------------------------------------------

class _Output:
    """Collects a child's combined output in a thread (tqdm writes without newlines)."""

    def __init__(self, proc):
        self.proc, self.buf = proc, bytearray()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                return
            self.buf += chunk

    @property
    def text(self) -> str:
        return self.buf.decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and text not in self.text and self.proc.poll() is None:
            time.sleep(0.1)
        if text not in self.text:
            self.proc.kill()
            raise AssertionError(f"never saw {text!r}; output: {self.text[-2000:]}")

    def finish(self, timeout: float = 120) -> str:
        self.proc.wait(timeout)
        time.sleep(0.2)
        return self.text


def test_ctrl_c_in_train_solver_saves_the_best_solver_so_far(tmp_path):
    out = tmp_path / "s.safetensors"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "core", "train-solver", "--model", MODEL, "--solver", "bns",
                             "--nfe", "4", "--iters", "1000000", "--n-train", "64", "--n-val", "32",
                             "--batch-size", "32", "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = _Output(proc)
    output.wait_for("train bns@4")  # the progress bar: training has started
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    rest = output.finish()
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest and "saved the best solver so far" in rest
    _, header = checkpoint.load(out, kind="solver")
    assert header["train"]["interrupted"] is True and header["train"]["stopped"] is True
    assert 1 <= header["train"]["iterations"] < 1000000


SERVER = r"""
import signal, sys, threading, time
sys.path.insert(0, sys.argv[1])
from core import load_model
from core.train import SolverSpec, TrainConfig
from explorer import jobs, workers
field = load_model(sys.argv[2])
job = jobs.start(jobs.Job("train", "sigterm test"), workers.train_job(
    field, SolverSpec("bns", 4), TrainConfig(iters=1000000, n_train=64, n_val=32, batch_size=32)))
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())  # as Streamlit does: the server stops, the process exits
while len(job.history) < 3:
    time.sleep(0.05)
print("TRAINING", flush=True)
done.wait()
print("EXITING", flush=True)
"""


def test_sigterm_during_training_saves_the_run_as_stopped(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "BESPOKE_RUNS_DIR": str(runs), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT), MODEL], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    output = _Output(proc)
    output.wait_for("TRAINING")
    proc.send_signal(signal.SIGTERM)
    rest = output.finish()
    assert proc.returncode == 0, rest
    assert "terminate called" not in rest and "Traceback" not in rest
    files = list(runs.glob("*.safetensors"))
    assert len(files) == 1, rest
    _, header = checkpoint.load(files[0], kind="solver")
    assert header["train"]["status"] == "stopped" and header["train"]["stopped"] is True


def test_stale_tmp_files_are_cleaned_up(tmp_path, monkeypatch):
    from explorer import autosave
    monkeypatch.setenv("BESPOKE_RUNS_DIR", str(tmp_path))
    stale, fresh = tmp_path / "run.safetensors.123.tmp", tmp_path / "other.safetensors.456.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert autosave.list_runs("any") == []
    assert not stale.exists() and fresh.exists()


def test_a_failed_write_leaves_no_tmp_and_a_later_write_removes_old_ones(tmp_path, monkeypatch):
    target = tmp_path / "m.safetensors"
    leftover = tmp_path / "m.safetensors.999.tmp"
    leftover.write_bytes(b"killed half way")
    old = time.time() - 3600
    os.utime(leftover, (old, old))

    def crash(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoint.os, "replace", crash)
    with pytest.raises(OSError):
        checkpoint.write_atomic(target, b"data")
    assert not list(tmp_path.glob("*.tmp")) and not target.exists()
    monkeypatch.undo()
    checkpoint.write_atomic(target, b"data")
    assert target.read_bytes() == b"data" and not list(tmp_path.glob("*.tmp"))
