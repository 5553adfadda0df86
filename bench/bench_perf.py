"""Performance benchmark: one table of what the solvers cost.

    python bench/bench_perf.py [--device cpu|cuda|auto] [--quick] [--threads 1] [--json out.json]

Rows (all measured here, nothing assumed):
  train-to-90%   learned-solver training (Bespoke RK2 and BNS, on the shipped 2-D and digits
                 models): wall time until the validation metric first reaches 90 % of its final
                 improvement over the initialisation, the whole run, and the GT it needed
  sample         sampling throughput per solver at equal NFE (samples/s) and the overhead per
                 network evaluation over the plain Euler step (same field, batch and NFE)
  gt-pool        GTPool.build time, NFE and memory (the stored x and u tensors)
for data dimension 2 (a 2-D model), 64 (8x8 digits) and 3072 (a synthetic 3x32x32 model: a
random-weight residual MLP, only its cost matters), at several batch sizes, so growth with batch
and dimension can be read off. Sampling times are the fastest of several round-robin repeats
after a warm-up (robust to a shared, busy machine). CPU by default;
`--device cuda` (or auto) on a GPU synchronises around every timed call.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import checkpoint  # noqa: E402
from core.field import label_period, round_to_period  # noqa: E402
from core.model_io import load_model, save_model  # noqa: E402
from core.models import build_network  # noqa: E402
from core.solvers.gt import GTPool  # noqa: E402
from core.solvers.registry import get_solver  # noqa: E402
from core.train import SolverSpec, TrainConfig, resolve_device, train_solver  # noqa: E402

NFE = 8  # equal NFE for the throughput rows (edm runs at 7: it needs an odd NFE)
BUILTIN = ("euler", "midpoint", "rk4", "ddim", "dpm++2m", "edm")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -------------------------------------------------------------------------------------------
# Fields
# -------------------------------------------------------------------------------------------

def shipped_models() -> dict[str, Path]:
    """One shipped model checkpoint per kind of data, FM-OT ones first: {"2d": path, "digits": path}."""
    found: dict[str, Path] = {}
    for p in sorted((ROOT / "assets").glob("*.safetensors"), key=lambda p: ("fm-ot" not in p.stem, p.stem)):
        try:
            _, header = checkpoint.load(p, kind="model")
        except checkpoint.CheckpointError:
            continue
        shape = tuple(header.get("data", {}).get("shape", ()))
        key = "2d" if shape == (2,) else "digits" if shape == (1, 8, 8) else None
        if key and key not in found:
            found[key] = p
    return found


def synthetic_field(shape: tuple[int, ...], device: torch.device, seed: int = 0):
    """A random-weight velocity network for data of `shape`, saved and loaded through the real
    checkpoint path (so the field carries the same wrapping as a shipped model)."""
    torch.manual_seed(seed)
    if len(shape) == 1:
        arch, args = "time-mlp", {"dim": shape[0], "hidden": 256, "layers": 3}
    else:
        arch, args = "cond-resmlp", {"channels": shape[0], "size": shape[1], "hidden": 256, "blocks": 3,
                                     "num_classes": 0}
    net = build_network(arch, **args)
    header = {"arch": arch, "arch_args": args, "path": {"name": "fm-ot"}, "prediction": "velocity",
              "data": {"name": "synthetic", "shape": list(shape), "range": 2.0}, "conditioning": None,
              "seed": seed}
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "synthetic.safetensors"
        save_model(f, net, header)
        return load_model(f, device=device)


def learned_solver(family: str, nfe: int, field, device: torch.device):
    """A learned solver at its initialisation (same cost as a trained one)."""
    if family == "bns":
        from core.solvers.bns import BNSSolver
        return BNSSolver(nfe, path=field.path, guidance_scale=field.guidance_scale).to(device)
    from core.solvers.bespoke import bespoke_from_family
    return bespoke_from_family(family, nfe).to(device)


# -------------------------------------------------------------------------------------------
# Measurements
# -------------------------------------------------------------------------------------------

def time_to_fraction(history: list[dict], metric: str, higher: bool, frac: float = 0.9) -> float | None:
    """Seconds until the validation metric first covers `frac` of its final (best) improvement
    over the initial value; None if it never improved."""
    vals = [(h["elapsed"], h[metric]) for h in history if h.get(metric) is not None]
    if len(vals) < 2:
        return None
    v0 = vals[0][1]
    best = max(v for _, v in vals) if higher else min(v for _, v in vals)
    gain = (best - v0) if higher else (v0 - best)
    if not gain > 0:
        return None
    for elapsed, v in vals:
        if ((v - v0) if higher else (v0 - v)) >= frac * gain:
            return elapsed
    return None


def bench_training(models: dict[str, Path], device: torch.device, iters: int, n_train: int) -> list[dict]:
    rows = []
    for key in ("2d", "digits"):
        if key not in models:
            rows.append({"what": "train-to-90%", "model": key, "note": "no shipped model found in assets/"})
            continue
        field = load_model(models[key], device=device)
        model_s = field.meta.get("training", {}).get("seconds")
        for family in ("rk2-bespoke", "bns"):
            cfg = TrainConfig(iters=iters, val_every=max(iters // 40, 1), n_train=n_train, n_val=max(n_train // 4, 2),
                              device=str(device), seed=0)
            res = train_solver(field, SolverSpec(family=family, nfe=NFE), cfg)
            metric, higher = ("psnr", True) if family == "bns" else ("rmse", False)
            t90 = time_to_fraction(res.history, metric, higher)
            total = res.elapsed + res.gt_seconds
            rows.append({"what": "train-to-90%", "model": f"D={field.dim} {models[key].stem}", "solver": f"{family}@{NFE}",
                         "batch": cfg.batch_size, "value": t90, "unit": "s to 90 %",
                         "note": f"{metric} {res.init[metric]:.4g} -> {res.best[metric]:.4g}; run {res.elapsed:.1f} s "
                                 f"({iters} it) + GT {res.gt_seconds:.1f} s"
                                 + (f" = {100 * total / model_s:.1f} % of model training ({model_s:.0f} s)" if model_s else "")})
    return rows


@torch.no_grad()
def bench_sampling(field, label: str, batches: list[int], device: torch.device, repeats: int) -> list[dict]:
    """Solvers timed round-robin (so a slow spell of a shared machine hits them all alike), the
    fastest of `repeats` rounds kept: contention only ever adds time."""
    rows = []
    solvers = [(name, get_solver(name, field)) for name in BUILTIN]
    solvers += [(family, learned_solver(family, NFE, field, device)) for family in ("rk2-bespoke", "bns")]
    for B in batches:
        B = round_to_period(B, label_period(field))  # conditional models bind labels by row
        x0 = field.noise(B, generator=torch.Generator().manual_seed(0)).to(device)
        runs = {}
        for name, solver in solvers:
            nfe = NFE - 1 if name == "edm" else NFE
            runs[name] = (nfe, (lambda solver=solver, nfe=nfe:
                                solver.solve(field, x0, None if hasattr(solver, "family") else nfe)))
            runs[name][1]()  # warm-up
        best = {name: float("inf") for name in runs}
        for _ in range(repeats):
            for name, (nfe, fn) in runs.items():
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                best[name] = min(best[name], time.perf_counter() - t0)
        base = best["euler"] / NFE
        for name, (nfe, _) in runs.items():
            sec = best[name]
            over = 100 * (sec / nfe / base - 1)
            rows.append({"what": "sample", "model": label, "solver": f"{name}@{nfe}", "batch": B,
                         "value": B / sec, "unit": "samples/s", "overhead_pct": over,
                         "note": f"{1e3 * sec:.2f} ms; time per NFE vs euler {over:+.0f} %"})
    return rows


def bench_gt_pool(field, label: str, batches: list[int], device: torch.device, n_grid: int = 65) -> list[dict]:
    rows = []
    for B in batches:
        B = round_to_period(B, label_period(field))
        x0 = field.noise(B, generator=torch.Generator().manual_seed(1)).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        pool = GTPool.build(field, x0, n_grid=n_grid)
        _sync(device)
        sec = time.perf_counter() - t0
        mem = (pool.xs.nbytes + pool.us.nbytes) / 2**20
        peak = f", CUDA peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if device.type == "cuda" else ""
        rows.append({"what": "gt-pool", "model": label, "solver": f"dopri5 1e-5, grid {n_grid}", "batch": B,
                     "value": sec, "unit": "s", "mib": mem,
                     "note": f"NFE {pool.nfe}; stores {mem:.1f} MiB{peak}"})
    return rows


def table(rows: list[dict]) -> str:
    out = ["| what | model | solver | batch | value | unit | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r.get("value")
        v = "-" if v is None else f"{v:.3g}" if v < 1000 else f"{v:,.0f}"
        out.append(f"| {r['what']} | {r.get('model', '')} | {r.get('solver', '')} | {r.get('batch', '')} | {v} | "
                   f"{r.get('unit', '')} | {r.get('note', '')} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Performance benchmark of the solvers (one table).")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--quick", action="store_true", help="fewer batch sizes, repeats and iterations")
    ap.add_argument("--train-iters", type=int, default=None, help="learned-solver iterations (default 300, quick 100)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--model-2d", default=None, help="2-D model file (default: the first shipped one)")
    ap.add_argument("--model-digits", default=None, help="digits model file (default: the first shipped one)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    q = args.quick
    iters = args.train_iters or (100 if q else 300)
    t_start = time.perf_counter()
    rows: list[dict] = []
    models = shipped_models()
    for key, given in (("2d", args.model_2d), ("digits", args.model_digits)):
        if given:
            models[key] = Path(given)
    if not args.skip_training:
        rows += bench_training(models, device, iters, n_train=512 if q else 1024)
    fields = [
        ("D=2 " + (models["2d"].stem if "2d" in models else "synthetic"),
         load_model(models["2d"], device=device) if "2d" in models else synthetic_field((2,), device),
         [256, 4096] if q else [256, 4096, 16384], [256, 4096]),
        ("D=64 " + (models["digits"].stem if "digits" in models else "synthetic"),
         load_model(models["digits"], device=device) if "digits" in models else synthetic_field((1, 8, 8), device),
         [256, 4096] if q else [256, 2048, 8192], [256, 2048]),
        ("D=3072 synthetic 3x32x32", synthetic_field((3, 32, 32), device),
         [64, 256] if q else [64, 256, 1024], [64] if q else [64, 256]),
    ]
    for label, field, sample_batches, pool_batches in fields:
        rows += bench_sampling(field, label, sample_batches, device, repeats=3 if q else 5)
        rows += bench_gt_pool(field, label, pool_batches, device)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"Benchmark on {dev}, torch {torch.__version__}, NFE {NFE}, {time.perf_counter() - t_start:.0f} s total\n")
    print(table(rows))
    if args.json:
        command = "python bench/bench_perf.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"device": dev, "torch": torch.__version__, "command": command.strip(),
                                               "seconds": time.perf_counter() - t_start, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
