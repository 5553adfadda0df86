"""Benchmark of issue 15 (scale out): GT data sets made by many processes, data-parallel training,
activation checkpointing. Prints markdown tables (medians over --repeats runs).

    python bench/bench_scale.py equality   # 2-process == 1-process: make-gt shard hashes, train-solver params
    python bench/bench_scale.py gt         # GT paths/s at 1 and 2 processes (torchrun, gloo), efficiency
    python bench/bench_scale.py memory     # BNS training memory with / without activation checkpointing
    python bench/bench_scale.py size       # bytes per GT path at D = 3x32x32

Every multi-process run is `torchrun --standalone --nproc_per_node K -m core ...`, the command a
user runs; on a CUDA machine add `--device cuda` (nccl, one GPU per process). Each process runs
one CPU thread. The machine's load average is printed with each table: on a machine shared with
other work the 2-process figures measure what the other work left free, not the code.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import print_table  # noqa: E402


def load_note() -> str:
    la = os.getloadavg()
    return f"{os.cpu_count()} CPU cores, load average {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} (1 / 5 / 15 min)"


def core_cmd(args, nproc=None) -> list[str]:
    head = [sys.executable, "-m", "core"] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "core"]
    return head + [str(a) for a in args]


def run_core(args, nproc=None) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    p = subprocess.run(core_cmd(args, nproc), cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {' '.join(core_cmd(args, nproc))}\n{p.stderr[-3000:]}")
    return wall, p.stdout


# -------------------------------------------------------------------------------------------
def cmd_equality(a) -> None:
    from core.checkpoint import load
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt = ["make-gt", "--model", a.model, "--n-train", a.n, "--n-val", a.n_val, "--shard-size", a.shard_size,
              "--device", a.device, "--quiet"]
        run_core(gt + ["--out", tmp / "gt1"])
        run_core(gt + ["--out", tmp / "gt2"], nproc=2)
        m1, m2 = (json.loads((tmp / d / "manifest.json").read_text()) for d in ("gt1", "gt2"))
        same = sum(x["content_hash"] == y["content_hash"] for x, y in zip(m1["shards"], m2["shards"]))
        train = ["train-solver", "--model", a.model, "--gt", tmp / "gt1", "--solver", "bns", "--nfe", a.nfe,
                 "--iters", a.iters, "--batch-size", a.batch_size, "--device", a.device, "--quiet"]
        run_core(train + ["--out", tmp / "one.safetensors"])
        run_core(train + ["--out", tmp / "two.safetensors"], nproc=2)
        run_core(train + ["--checkpoint-activations", "--out", tmp / "two_ckpt.safetensors"], nproc=2)
        (t1, h1) = load(tmp / "one.safetensors")
        rows = [("model", Path(a.model).name),
                ("GT data set", f"{a.n} train + {a.n_val} validation paths, shards of {a.shard_size}"),
                ("shards with equal content hash, 2 vs 1 process", f"{same} / {len(m1['shards'])}"),
                ("dataset id equal", str(m1["dataset_id"] == m2["dataset_id"]))]
        for name in ("two", "two_ckpt"):
            t2, h2 = load(tmp / f"{name}.safetensors")
            d = max((t2[k] - t1[k]).abs().max().item() for k in t1)
            label = "2 processes" + (" + checkpointing" if name == "two_ckpt" else "")
            rows.append((f"BNS@{a.nfe}, {a.iters} it, batch {a.batch_size}: max abs param diff, {label} vs 1",
                         f"{d:.2e}"))
            rows.append((f"best validation PSNR, {label} vs 1",
                         f"{h2['train']['best']['psnr']:.6f} vs {h1['train']['best']['psnr']:.6f} dB"))
        scale = max(t1[k].abs().max().item() for k in t1)
        rows.append(("largest abs param (scale of the above)", f"{scale:.3g}"))
    print_table(f"2 processes vs 1 (torchrun, {a.device}); {load_note()}", rows)


# -------------------------------------------------------------------------------------------
def rank_seconds(manifest: dict, world: int) -> float:
    """The busiest rank's solve seconds (shards go round robin: shard i to rank i % world)."""
    per = [0.0] * world
    for s in manifest["shards"]:
        per[s["index"] % world] += s["seconds"] or 0.0
    return max(per)


def cmd_gt(a) -> None:
    rows, results = [], {}
    before = load_note()
    for k in a.procs:
        walls, solves = [], []
        for rep in range(a.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                args = ["make-gt", "--model", a.model, "--n-train", a.n, "--n-val", a.n_val, "--shard-size",
                        a.shard_size, "--device", a.device, "--quiet", "--out", Path(tmp) / "gt"]
                wall, _ = run_core(args, nproc=k)
                m = json.loads((Path(tmp) / "gt" / "manifest.json").read_text())
                walls.append(wall)
                solves.append(rank_seconds(m, k))
        n = a.n + a.n_val
        results[k] = (n / statistics.median(walls), n / statistics.median(solves))
        rows.append((f"{k} process(es): paths/s, whole command (start-up included)", f"{results[k][0]:.2f}"))
        rows.append((f"{k} process(es): paths/s, solving (busiest rank)", f"{results[k][1]:.2f}"))
    base = min(a.procs)
    for k in a.procs:
        if k != base:
            for j, what in enumerate(("whole command", "solving")):
                eff = results[k][j] / results[base][j] * base / k
                rows.append((f"scaling efficiency {k} vs {base} process(es), {what}", f"{100 * eff:.0f} %"))
    print_table(f"GT paths/s, make-gt on {Path(a.model).name} ({a.n + a.n_val} paths, shards of {a.shard_size}, "
                f"{a.device}, 1 thread per process, median of {a.repeats}); before: {before}; after: {load_note()}",
                rows)


# -------------------------------------------------------------------------------------------
class TinyConv(nn.Module):
    """A small conv velocity network on 3x32x32 (t as an extra input channel)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, t, x):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.net(torch.cat([x, t[:, None, None, None].expand(-1, 1, *x.shape[2:])], 1))


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_worker(a) -> None:
    """One configuration in a fresh process; prints one JSON line."""
    from core.distributed import checkpointed
    from core.field import VelocityField
    from core.paths import CondOTPath
    from core.solvers.bns import BNSObjective, BNSSolver
    from core.train import TrainConfig, fit
    torch.set_num_threads(1)
    dev = torch.device(a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    net = TinyConv(a.width).to(dev).requires_grad_(False)
    field = VelocityField(net, (3, 32, 32), path=CondOTPath(), data_range=2.0, module=net)
    g = torch.Generator().manual_seed(0)
    # Random targets: memory does not depend on what x1 is (no dopri5 GT needed to measure it).
    x0, x1 = (torch.randn(a.batch, 3, 32, 32, generator=g).to(dev) for _ in range(2))
    obj = BNSObjective(field, x0, x1, x0[:4], x1[:4], batch_size=a.batch)
    if a.checkpoint:
        obj.field = checkpointed(field)
    solver = BNSSolver(a.nfe, path=field.path).to(dev)
    with torch.no_grad():
        net(torch.zeros(a.batch), x0)  # warm the allocator with one forward
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    rss0, peak0 = current_rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fit(solver, obj, TrainConfig(iters=a.iters, val_every=a.iters, batch_size=a.batch, seed=0))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {"checkpoint": bool(a.checkpoint), "rss_before": rss0, "peak_rss": peak, "peak_before": peak0,
           "peak_increase": peak - max(rss0, 0), "saved_bytes_per_iter": saved[0] / a.iters, "seconds": seconds}
    if dev.type == "cuda":
        out["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


def cmd_memory(a) -> None:
    rows = []
    res = {}
    for ck in (0, 1):
        p = subprocess.run([sys.executable, __file__, "memory-worker", "--checkpoint", str(ck), "--device", a.device,
                            "--batch", str(a.batch), "--nfe", str(a.nfe), "--width", str(a.width), "--n-iters",
                            str(a.iters)], cwd=ROOT, capture_output=True, text=True, timeout=3600)
        if p.returncode:
            sys.exit(p.stderr[-3000:])
        res[ck] = json.loads(p.stdout.strip().splitlines()[-1])
    mib = 1 << 20
    for ck, name in ((0, "without checkpointing"), (1, "with checkpointing")):
        r = res[ck]
        rows.append((f"{name}: peak RSS increase during training", f"{r['peak_increase'] / mib:.0f} MiB"))
        rows.append((f"{name}: tensors autograd keeps per iteration", f"{r['saved_bytes_per_iter'] / mib:.0f} MiB"))
        if "cuda_peak_allocated" in r:
            rows.append((f"{name}: CUDA peak allocated", f"{r['cuda_peak_allocated'] / mib:.0f} MiB"))
        rows.append((f"{name}: seconds per iteration (validation included)", f"{r['seconds'] / a.iters:.2f}"))
    print_table(f"BNS@{a.nfe} training memory at D = 3x32x32 (conv net width {a.width}, batch {a.batch}, "
                f"{a.device}, {a.iters} iterations, fresh process each); {load_note()}", rows)


def cmd_size(a) -> None:
    from core.gtdata import bytes_per_path
    rows = []
    for store in ("pairs", "paths"):
        for dtype in ("float32", "float64"):
            b = bytes_per_path(a.shape, store, a.grid, dtype)
            rows.append((f"{store}{f' (grid {a.grid})' if store == 'paths' else ''}, {dtype}",
                         f"{b / 1024:.1f} KiB per path; {a.n} paths: {a.n * b / (1 << 20):.1f} MiB"))
    print_table(f"GT set size at D = {'x'.join(map(str, a.shape))} (core.gtdata.bytes_per_path)", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("equality")
    p.add_argument("--model", default=str(ROOT / "assets" / "moons_fm-ot.safetensors"))
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=32)
    p.add_argument("--nfe", type=int, default=6)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_equality)
    p = sub.add_parser("gt")
    p.add_argument("--model", default=str(ROOT / "assets" / "digits_fm-ot.safetensors"))
    p.add_argument("--n", type=int, default=320)
    p.add_argument("--n-val", type=int, default=80)
    p.add_argument("--shard-size", type=int, default=40)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_gt)
    for name, fn in (("memory", cmd_memory), ("memory-worker", memory_worker)):
        p = sub.add_parser(name)
        p.add_argument("--device", default="cpu")
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--nfe", type=int, default=8)
        p.add_argument("--width", type=int, default=64)
        p.add_argument("--n-iters", dest="iters", type=int, default=2, help="training iterations (default 2)")
        p.add_argument("--checkpoint", type=int, default=0)
        p.set_defaults(func=fn)
    p = sub.add_parser("size")
    p.add_argument("--shape", type=int, nargs="+", default=[3, 32, 32])
    p.add_argument("--grid", type=int, default=65)
    p.add_argument("--n", type=int, default=1280, help="paths in a set (default 1024 train + 256 validation)")
    p.set_defaults(func=cmd_size)
    a = ap.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
