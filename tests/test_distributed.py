"""Many processes (core/distributed): the batch split over ranks gives the full batch's gradient,
activation checkpointing gives the same gradient with fewer saved tensors, and under torchrun
(gloo, 2 processes spawned here) make-gt and train-solver give what one process gives."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

from core.checkpoint import load
from core.distributed import checkpointed, local_rows, owned_shards
from core.field import VelocityField
from core.losses import BespokeObjective
from core.paths import CondOTPath
from core.solvers.bespoke import BespokeSolver
from core.solvers.bns import BNSObjective, BNSSolver
from core.solvers.gt import GTPool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOONS = os.path.join(ROOT, "assets", "moons_fm-ot.safetensors")


def test_rows_and_shards_partition():
    idx = torch.arange(100, 130)
    parts = [local_rows(idx, r, 4, period=3) for r in range(4)]
    assert torch.equal(torch.cat(parts), idx) and all(p.numel() % 3 == 0 for p in parts)
    assert [p.numel() for p in parts] == [6, 9, 6, 9]
    with pytest.raises(ValueError, match="cannot be split over 4 processes"):
        local_rows(torch.arange(6), 0, 4, period=2)
    assert owned_shards(7, 1, 3) == [1, 4] and sorted(sum((owned_shards(7, r, 3) for r in range(3)), [])) == list(range(7))


def mlp_field(dim=2, width=32, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                        nn.Linear(width, dim)).double().requires_grad_(False)

    def u(t, x):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        return net(torch.cat([x, t[:, None]], 1))

    return VelocityField(u, (dim,), path=CondOTPath(), data_range=4.0, module=net)


def grads(solver, objective, rows_list, seed=3):
    """Sum over simulated ranks of d(sum of own per-sample losses / global batch)/d params,
    exactly what DistContext.batch_mean + reduce_gradients compute."""
    solver.zero_grad()
    total = 0
    for rows in rows_list:
        objective.rows = rows
        per = objective.loss(solver, torch.Generator().manual_seed(seed))
        total += per.numel()
        per.sum().backward()
    return torch.cat([p.grad.flatten() for p in solver.parameters()]) / total


@pytest.mark.parametrize("family", ["bns", "rk2-bespoke"])
def test_split_batch_gradient_equals_full_batch(family):
    field = mlp_field()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(40, 2, generator=g, dtype=torch.float64)
    if family == "bns":
        solver = BNSSolver(4, path=field.path)
        obj = BNSObjective(field, x0[:32], torch.randn(32, 2, generator=g, dtype=torch.float64), x0[32:], x0[32:],
                           batch_size=24)
    else:
        solver = BespokeSolver(2, 2)
        train, val = GTPool.build(field, x0, n_grid=9, atol=1e-6, rtol=1e-6).split(8)
        obj = BespokeObjective(field, train, val, batch_size=24)
    full = grads(solver, obj, [None])
    split = grads(solver, obj, [(0, 3), (1, 3), (2, 3)])
    assert full.abs().max() > 0
    torch.testing.assert_close(split, full, rtol=1e-12, atol=1e-15)


def test_activation_checkpointing_same_gradient_fewer_saved_bytes():
    field = mlp_field(dim=8, width=256)
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(64, 8, generator=g, dtype=torch.float64), torch.randn(64, 8, generator=g, dtype=torch.float64)
    solver = BNSSolver(6, path=field.path)
    out = {}
    for name, f in (("plain", field), ("checkpointed", checkpointed(field))):
        obj = BNSObjective(f, x0, x1, x0, x1, batch_size=64)
        saved = [0]

        def pack(t):
            saved[0] += t.numel() * t.element_size()
            return t

        solver.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = obj.loss(solver, torch.Generator().manual_seed(0)).mean()
        loss.backward()
        out[name] = (torch.cat([p.grad.flatten() for p in solver.parameters()]), saved[0])
    torch.testing.assert_close(out["checkpointed"][0], out["plain"][0], rtol=1e-12, atol=0)
    assert out["checkpointed"][1] < 0.5 * out["plain"][1], out
    assert checkpointed(checkpointed(field)).field is field and checkpointed(field).path is field.path


# -------------------------------------------------------------------------------------------
# Real processes: torchrun with gloo on the CPU
# -------------------------------------------------------------------------------------------

def launch(args, nproc=None, timeout=300):
    """`python -m core ARGS` (nproc None) or under `torchrun --standalone --nproc_per_node nproc`;
    one thread per process; killed with its whole process group if it runs past `timeout`."""
    cmd = [sys.executable, "-m", "core"] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "core"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd + [str(a) for a in args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(cmd[-3:] + list(map(str, args[:1])))} ran past {timeout} s and was killed")
    assert proc.returncode == 0, err[-3000:]
    return out, err


def test_two_processes_make_and_train_what_one_process_does(tmp_path):
    gt = ["make-gt", "--model", MOONS, "--n", 64, "--n-val", 16, "--shard-size", 16, "--device", "cpu", "--quiet"]
    launch(gt + ["--out", tmp_path / "gt1"])
    gt[3] = "--n-train"  # torchrun takes "--n" as an abbreviation of its own options
    launch(gt + ["--out", tmp_path / "gt2"], nproc=2)
    m1, m2 = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("gt1", "gt2"))
    assert m1["dataset_id"] == m2["dataset_id"] and m1["complete"] and m2["complete"]
    assert [s["content_hash"] for s in m1["shards"]] == [s["content_hash"] for s in m2["shards"]]
    assert len(m1["shards"]) == 5

    train = ["train-solver", "--model", MOONS, "--gt", tmp_path / "gt1", "--solver", "bns", "--nfe", 4,
             "--iters", 8, "--batch-size", 32, "--lr", 0.01, "--device", "cpu", "--quiet"]
    out1, _ = launch(train + ["--out", tmp_path / "one.safetensors"])
    out2, _ = launch(train + ["--checkpoint-activations", "--out", tmp_path / "two.safetensors"], nproc=2)
    assert out2.count("saved") == 1  # rank 0 alone reports and saves
    (t1, h1), (t2, h2) = load(tmp_path / "one.safetensors"), load(tmp_path / "two.safetensors")
    h1, h2 = h1["train"], h2["train"]
    assert h2["processes"] == 2 and h1["gt_dataset"]["dataset_id"] == m1["dataset_id"]
    init = torch.tensor(1.0 / 4)  # b starts at 1/n: training moved the parameters
    assert (t1["b"] - init).abs().max() > 1e-3
    for k in t1:
        torch.testing.assert_close(t2[k], t1[k], rtol=1e-6, atol=1e-7)
    assert h2["best"]["psnr"] == pytest.approx(h1["best"]["psnr"], abs=1e-4)
    assert h2["best_iteration"] == h1["best_iteration"]


def test_from_env_outside_torchrun(monkeypatch):
    from core.distributed import from_env
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert from_env("cpu") is None  # one plain process
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="RANK is not set: start the processes with torchrun"):
        from_env("cpu")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(ValueError, match="each process takes cuda:LOCAL_RANK"):
        from_env("cuda:1")
