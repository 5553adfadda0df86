"""The command line: `python -m core <command> --help`.

    train-model   train a flow / diffusion model on a built-in data set -> model checkpoint
    train-solver  learn a Bespoke / BNS solver for a model at one NFE   -> solver checkpoint
    sample        run a solver from noise                               -> .npy or .png
    evaluate      RMSE / PSNR against GT from the same noise, distances to the data -> JSON + table
    info          print a checkpoint's header
    export        a solver as a diffusers scheduler folder or a sigma grid (core/export.py)
    make-gt       solve GT paths once into a sharded data set for train-solver --gt

Every user error (unknown name, missing or bad file, impossible NFE, a size over its cap in
core/limits.py, an output that cannot be written, a solver made for another model, non-finite
samples) exits with status 2 and one line on stderr, never a traceback. Training commands check
that their --out can be written BEFORE training; Ctrl-C in train-solver saves the best solver so
far (marked interrupted) and exits with status 130.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .checkpoint import CheckpointError
from .limits import MAX_FILE_BYTES, MAX_NFE, MAX_SAMPLES, MAX_TRAIN_ITERS, MAX_TRAIN_SAMPLES, check_count

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the command line or its inputs; printed as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line too."""

    def error(self, message: str):  # noqa: D102
        raise UserError(f"{self.prog}: {message}")


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------

def _load_field(args, device=None):
    from .model_io import load_model
    if not Path(args.model).exists():
        raise UserError(f"model file not found: {args.model!r}")
    field = load_model(args.model, guidance_scale=getattr(args, "guidance", None), device=device,
                       labels=getattr(args, "label", None))
    return field


def _device(name: str) -> torch.device:
    from .train_model import resolve_device
    return _check_device(resolve_device(name), name)


def _check_device(dev: torch.device, name) -> torch.device:
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: only cpu and cuda devices can run models")
    return dev


def _check_out(path: str, what: str = "--out") -> Path:
    """Make sure `path` can be written (its folder is created if missing) before any work: a probe
    file next to it is created and removed. UserError (one line) otherwise."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"{what} {path!r} is a directory; give a file name")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{what} {str(path)[:200]!r} cannot be written: {str(parent)[:200]!r} is a file, not a folder")
    probe = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as e:
        raise UserError(f"{what} {str(path)[:200]!r} cannot be written: {e.strerror or e}") from None
    return out


def _check_finite_samples(x: torch.Tensor, what: str) -> None:
    bad = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(1)
    if bad.any():
        raise UserError(f"{what} produced non-finite samples (NaN or inf in {int(bad.sum())} of {x.shape[0]}); "
                        f"nothing written")


def _noise(args, field, device) -> torch.Tensor:
    """x0 from --noise FILE.npy, else N(0, I) from --seed and --n."""
    if args.noise:
        p = Path(args.noise)
        if not p.is_file():
            raise UserError(f"noise file not found: {args.noise!r}")
        if p.stat().st_size > MAX_FILE_BYTES:
            raise UserError(f"noise file {args.noise!r} is over the {MAX_FILE_BYTES}-byte limit")
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise UserError(f"cannot read noise file {args.noise!r} as a .npy array ({e})".replace("\n", " "))
        if arr.dtype.kind != "f" or arr.ndim < 1 or tuple(arr.shape[1:]) != tuple(field.data_shape) or len(arr) == 0:
            raise UserError(f"noise file {args.noise!r} holds a {arr.dtype} array of shape {arr.shape}; this model "
                            f"needs floats of shape (N, {', '.join(map(str, field.data_shape))})")
        if len(arr) > MAX_SAMPLES:
            raise UserError(f"noise file {args.noise!r} holds {len(arr):,} samples, over the limit of {MAX_SAMPLES:,}")
        if not np.isfinite(arr).all():
            raise UserError(f"noise file {args.noise!r} has non-finite values")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(device)
    check_count("--n", args.n, MAX_SAMPLES)
    return field.noise(args.n, torch.Generator().manual_seed(args.seed)).to(device)


def _get_solver(name: str, field, device=None):
    from .solvers.registry import get_solver
    if not Path(name).exists() and ("/" in name or name.endswith((".safetensors", ".bespoke", ".solver"))):
        raise UserError(f"solver file not found: {name!r}")
    return get_solver(name, field, device=device)


def _threads_option(p) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: half the cores not already busy, at most 4, at least 1: "
                   "1 on a 2-core machine; 0 = torch's own default, one per core)")


def _apply_threads(args) -> int:
    """Set torch's thread count from --threads (core/threads.py)."""
    from .threads import set_threads
    return set_threads(args.threads)


def _write_json(path: str, obj) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=2) + "\n")


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------

def cmd_train_model(args) -> None:
    from .model_io import save_model
    from .train_model import ModelTrainConfig, train_model
    if not args.out.endswith(".safetensors"):
        raise UserError(f"--out must end in .safetensors, got {args.out!r}")
    check_count("--steps", args.steps, MAX_TRAIN_ITERS)
    check_count("--batch-size", args.batch_size, MAX_TRAIN_SAMPLES)
    _device(args.device)
    _check_out(args.out)
    cfg = ModelTrainConfig(data=args.data, path=args.path, prediction=args.prediction, arch=args.arch,
                           hidden=args.hidden, layers=args.layers, x_freq=args.x_freq, steps=args.steps,
                           batch_size=args.batch_size, lr=args.lr, ema=args.ema, p_uncond=args.p_uncond,
                           guidance_scale=args.guidance_scale, seed=args.seed, device=args.device)
    _apply_threads(args)
    result = train_model(cfg, progress=not args.quiet)
    digest = save_model(args.out, result.net, result.header)
    print(f"saved {args.out}  model_id {digest[:16]}  final loss {result.history[-1][1]:.4f}  "
          f"{result.seconds:.1f} s")


def cmd_train_solver(args) -> None:
    from .gtdata.cli import start_processes
    from .train import SolverSpec
    for name, value, cap in (("--iters", args.iters, MAX_TRAIN_ITERS), ("--n-train", args.n_train, MAX_TRAIN_SAMPLES),
                             ("--n-val", args.n_val, MAX_TRAIN_SAMPLES),
                             ("--batch-size", args.batch_size, MAX_TRAIN_SAMPLES)):
        check_count(name, value, cap)
    SolverSpec(family=args.solver, nfe=args.nfe, lipschitz=args.lipschitz, loss=args.loss, init=args.init,
               sigma0=args.sigma0)  # checks the NFE against its cap before anything is loaded
    _check_out(args.out)
    if args.history:
        _check_out(args.history, "--history")
    dist, device = start_processes(args)  # under torchrun: this process's rank and device
    _check_device(device, args.device)
    try:
        _train_solver(args, device, dist)
        if dist is not None:
            dist.barrier()  # every rank leaves together, after rank 0 has saved
    finally:
        if dist is not None:
            dist.close()


def _train_solver(args, device, dist) -> None:
    from .gtdata.cli import open_dataset
    from .solvers.learned import save_solver
    from .train import SolverSpec, TrainConfig, train_solver
    _apply_threads(args)
    field = _load_field(args, device)
    gt = open_dataset(args, field)
    if dist is not None and not dist.is_main:
        args.quiet = True  # rank 0 reports and saves
    spec = SolverSpec(family=args.solver, nfe=args.nfe, lipschitz=args.lipschitz, loss=args.loss, init=args.init,
                      sigma0=args.sigma0)
    cfg = TrainConfig(iters=args.iters, lr=args.lr, lr_schedule=args.lr_schedule, patience=args.patience,
                      coarse_to_fine=args.coarse_to_fine, finetune_iters=args.finetune_iters,
                      batch_size=args.batch_size, n_train=args.n_train, n_val=args.n_val, device=str(device),
                      seed=args.seed)
    bars = []  # the progress bar, made at the first event (after the GT solve)
    stop = threading.Event()
    training = threading.Event()  # set at the first event: from then on Ctrl-C stops and saves

    def callback(ev) -> None:
        training.set()
        if args.quiet:
            return
        if not bars:
            from tqdm.auto import tqdm
            bars.append(tqdm(total=cfg.iters, desc=f"train {spec.family}@{spec.nfe}", unit="it", dynamic_ncols=True))
        bar = bars[0]
        bar.n = ev.iteration
        post = {"loss": f"{ev.loss:.4g}"}
        if ev.metrics:
            post.update(rmse=f"{ev.metrics['rmse']:.4g}", psnr=f"{ev.metrics['psnr']:.2f}")
        bar.set_postfix(post, refresh=False)
        bar.refresh()

    if not args.quiet and gt is None:
        print(f"solving the GT paths of {cfg.n_train + cfg.n_val} noise samples (dopri5) ...", file=sys.stderr)
        if cfg.coarse_to_fine and spec.family != "bns":
            print("coarse-to-fine: the solver with half the NFE trains first (no progress bar for it)", file=sys.stderr)
        if dist is not None:
            print(f"note: each of the {dist.world} processes solves this same GT; make it once with make-gt "
                  f"and pass --gt", file=sys.stderr)
    def on_sigint(signum, frame) -> None:
        if not training.is_set() or stop.is_set():  # before training (GT solve), or a second Ctrl-C
            raise KeyboardInterrupt
        stop.set()

    from .train import NonFiniteLossError
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread and dist is None else None
    diverged = None
    try:
        result = train_solver(field, spec, cfg, callback, stop_event=stop, gt=gt, dist=dist,
                              checkpoint_activations=args.checkpoint_activations)
    except NonFiniteLossError as e:
        result, diverged = e.result, str(e)
        if not all(np.isfinite(v) for v in result.best.values()):
            raise UserError(f"{e}; nothing saved") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        for bar in bars:
            bar.close()
    if dist is not None and not dist.is_main:
        return
    interrupted = result.stopped
    summary = {**result.summary(), "interrupted": interrupted}
    if gt is not None:
        summary["gt_dataset"] = {"dir": str(args.gt), "dataset_id": gt.manifest["dataset_id"]}
    if dist is not None:
        summary["processes"] = dist.world
    digest = save_solver(result.solver, args.out, field, extra=summary)
    if args.history:
        from .history import save_history
        save_history(args.history, result.history, summary)
    init, best = result.init, result.best
    if diverged:
        print(f"warning: {diverged}", file=sys.stderr)
    if interrupted:
        print(f"interrupted at iteration {result.history[-1]['iteration']}: saved the best solver so far",
              file=sys.stderr)
    print(f"saved {args.out}  ({digest[:16]})  {spec.family}@{spec.nfe}{' (diverged)' if diverged else ''}"
          f"{' (interrupted)' if interrupted else ''}: validation RMSE "
          f"{init.get('rmse', float('nan')):.5f} -> {best.get('rmse', float('nan')):.5f}, PSNR "
          f"{init.get('psnr', float('nan')):.2f} -> {best.get('psnr', float('nan')):.2f} dB "
          f"(best at iteration {result.best_iteration}; GT {result.gt_seconds:.1f} s, training {result.elapsed:.1f} s)")
    if interrupted:
        raise KeyboardInterrupt


def cmd_sample(args) -> None:
    from .render import samples_image
    out = Path(args.out)
    if out.suffix not in (".npy", ".png"):
        raise UserError(f"--out must end in .npy or .png, got {args.out!r}")
    _check_out(args.out)
    _apply_threads(args)
    device = _device(args.device)
    field = _load_field(args, device)
    solver = _get_solver(args.solver, field, device)
    solver.check_nfe(args.nfe)
    x0 = _noise(args, field, device)
    start = time.perf_counter()
    with torch.no_grad():
        res = solver.solve(field, x0, args.nfe)
    wall = time.perf_counter() - start
    x = res.x.detach().cpu().float()
    _check_finite_samples(x, f"{solver.name} at NFE {res.nfe}")
    if out.suffix == ".npy":
        np.save(out, x.numpy())
    else:
        title = f"{Path(args.model).stem} | {solver.name} | NFE {res.nfe}"
        samples_image(x, title=title).save(out)
    print(f"wrote {args.out}: {x.shape[0]} samples, {solver.name}, NFE {res.nfe}, {wall:.2f} s")


def cmd_evaluate(args) -> None:
    from .evaluate import data_distances, evaluate, format_table, ground_truth, solver_nfes
    if not args.noise:
        check_count("--n", args.n, MAX_SAMPLES)
    for nfe in args.nfe or []:
        check_count("--nfe", nfe, MAX_NFE)
    if not 1e-10 <= args.gt_tol <= 1e-1:  # tighter: dopri5 spends its step budget; looser: no GT
        raise UserError(f"--gt-tol must be in [1e-10, 0.1], got {args.gt_tol:g}")
    if args.json:
        _check_out(args.json, "--json")
    threads = _apply_threads(args)
    device = _device(args.device)
    field = _load_field(args, device)
    from .report import run_cli, wants_sweep
    if wants_sweep(args):  # NFE sweep, distances to the data, learned solvers per NFE: core/report.py
        run_cli(args, field, device, _noise(args, field, device) if args.noise else None)
        return
    solvers = [_get_solver(name, field, device) for name in args.solver]
    for s in solvers:  # check every (solver, NFE) before the expensive GT
        solver_nfes(s, args.nfe or [])
    x0 = _noise(args, field, device)
    gt = ground_truth(field, x0, atol=args.gt_tol, rtol=args.gt_tol)
    dists, why_not = None, "--no-distances" if args.no_distances else None
    if not args.no_distances:
        try:  # distances of each sample set to fresh data samples, and "% of GT" (docs/MATH.md section 8)
            dists = data_distances(field, gt.x1, seed=args.seed)
        except ValueError as e:
            why_not = str(e)
            print(f"no distribution distances: {why_not}", file=sys.stderr)
    rows = evaluate(field, solvers, args.nfe or [], x0, gt, distances=dists)
    gt_row = {"solver": "dopri5", "atol": gt.atol, "rtol": gt.rtol, "nfe": gt.nfe, "wall_s": round(gt.wall_s, 4),
              **(dists.gt if dists else {})}
    report = {"model": args.model, "model_id": field.model_id, "guidance_scale": field.guidance_scale,
              "n": int(x0.shape[0]), "noise": args.noise or {"seed": args.seed}, "threads": threads,
              "gt": gt_row, "distances": ({"names": list(dists.fns), "reference": dists.source,
                                            "pct_of_gt": "100 * solver / gt; gt = dopri5 samples of the same noise"}
                                           if dists else {"skipped": why_not}),
              "results": rows}
    if args.json:
        _write_json(args.json, report)
    print(f"GT: dopri5 (tol {args.gt_tol:g}), NFE {gt.nfe}, {gt.wall_s:.2f} s, {x0.shape[0]} samples")
    if dists:
        from .report import METRIC_LABELS
        print(f"distances to {dists.source['n']} fresh samples of the {dists.source['data']!r} data, lower is better "
              f"({'; '.join(f'{k} = {METRIC_LABELS.get(k, k)}' for k in dists.fns)}); % GT = 100 x solver / GT")
    print(format_table(rows, gt_row if dists else None))
    bad = [f"{r['solver']}@{r['nfe']}" for r in rows if not r.get("finite", True)]
    if bad:
        print(f"warning: non-finite samples (rows marked NON-FINITE): {', '.join(bad)}", file=sys.stderr)


def cmd_info(args) -> None:
    from .checkpoint import load
    if not Path(args.file).exists():
        raise UserError(f"file not found: {args.file!r}")
    tensors, header = load(args.file)
    n = sum(t.numel() for t in tensors.values())
    print(json.dumps({**header, "tensors": len(tensors), "parameters": n}, indent=2))


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------

def _model_options(p, guidance: bool = True) -> None:
    p.add_argument("--model", required=True, help="model checkpoint (.safetensors) or a diffusers pipeline folder")
    if guidance:
        p.add_argument("--guidance", type=float, default=None,
                       help="classifier-free guidance scale (conditional models; default: the checkpoint's)")
        p.add_argument("--label", type=int, default=None,
                       help="class of every sample (conditional models; default: cycle 0, 1, ..., 9)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def _noise_options(p, n: int) -> None:
    p.add_argument("--noise", default=None, help="x0 from this .npy file (N, *data_shape); overrides --seed/--n")
    p.add_argument("--seed", type=int, default=0, help="seed of the N(0, I) noise (default 0)")
    p.add_argument("--n", type=int, default=n, help=f"number of samples (default {n})")


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .solvers.registry import BUILTIN_SOLVERS
    from .train import LEARNED_FAMILIES

    parser = _Parser(prog="python -m core", description="Bespoke Explorer: train flow models and learned "
                     "solvers, sample, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train-model", help="train a flow / diffusion model on a built-in data set",
                       description="Train a flow model (FM-OT, FM/v-CS) or a diffusion model (eps-VP) on a "
                       "built-in data set and save it as a safe checkpoint.")
    p.add_argument("--data", required=True, choices=sorted(DATASETS), help="training data")
    p.add_argument("--path", default="fm-ot", choices=["fm-ot", "fm-cs", "eps-vp"], help="Gaussian path (default fm-ot)")
    p.add_argument("--prediction", default="auto", choices=["auto", "velocity", "eps", "x1"],
                   help="what the network predicts (default: eps for eps-vp, else velocity)")
    p.add_argument("--arch", default="auto", choices=["auto", "time-mlp", "cond-resmlp"], help="network (default by data)")
    p.add_argument("--hidden", type=int, default=256, help="network width (default 256)")
    p.add_argument("--layers", type=int, default=3, help="hidden layers / residual blocks (default 3)")
    p.add_argument("--x-freq", type=int, default=0, help="Fourier features of x for time-mlp (default 0)")
    p.add_argument("--steps", type=int, default=20000, help="optimiser steps (default 20000)")
    p.add_argument("--batch-size", type=int, default=1024, help="samples per step (default 1024)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights (default 0.999)")
    p.add_argument("--p-uncond", type=float, default=0.1, help="null-label probability, labelled data (default 0.1)")
    p.add_argument("--guidance-scale", type=float, default=2.0,
                   help="default guidance scale stored in the checkpoint, labelled data (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    _threads_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors; a missing folder is created)")
    p.set_defaults(func=cmd_train_model)

    p = sub.add_parser("train-solver", help="learn a Bespoke / BNS solver for a model at one NFE",
                       description="Train a learned solver for one model at one NFE and save it.")
    _model_options(p)
    p.add_argument("--solver", required=True, choices=list(LEARNED_FAMILIES), help="learned solver family")
    p.add_argument("--nfe", type=int, required=True, help="network evaluations of the solver")
    from .train import LR_SCHEDULES, SolverSpec, TrainConfig
    d, sd = TrainConfig(), SolverSpec()  # one source of truth for the defaults (the app reads them too)
    p.add_argument("--lipschitz", type=float, default=sd.lipschitz,
                   help=f"L_tau of the RMSE-bound loss (default {sd.lipschitz:g})")
    p.add_argument("--loss", default=sd.loss, help=f"Bespoke loss: rmse-bound, local, final-rmse (default {sd.loss})")
    p.add_argument("--init", default=sd.init,
                   help=f"Bespoke: identity or a path name; BNS: a base solver (default {sd.init})")
    p.add_argument("--sigma0", type=float, default=sd.sigma0, help=f"BNS preconditioning scale (default {sd.sigma0:g})")
    p.add_argument("--iters", type=int, default=d.iters, help=f"at most this many Adam iterations per stage (default {d.iters})")
    p.add_argument("--lr", type=float, default=d.lr,
                   help=f"learning rate (default {d.lr:g}; BNS trains at lr * min(1, 4 / NFE))")
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=list(LR_SCHEDULES),
                   help=f"learning-rate schedule (default {d.lr_schedule}: cosine for Bespoke, halvings on "
                        f"plateaus for BNS)")
    p.add_argument("--patience", type=int, default=d.patience,
                   help=f"stop after this many validations without progress; 0 = never early (default {d.patience})")
    p.add_argument("--coarse-to-fine", action=argparse.BooleanOptionalAction, default=d.coarse_to_fine,
                   help="Bespoke: train the NFE/2 solver first and start from it (default: %(default)s)")
    p.add_argument("--finetune-iters", type=int, default=d.finetune_iters,
                   help=f"Bespoke: final-RMSE fine-tune iterations after training (default {d.finetune_iters})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"GT paths per iteration (default {d.batch_size})")
    p.add_argument("--n-train", type=int, default=d.n_train, help=f"GT paths to train on (default {d.n_train})")
    p.add_argument("--n-val", type=int, default=d.n_val, help=f"validation noise samples (default {d.n_val})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed (default {d.seed})")
    _threads_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output solver file (.safetensors; a missing folder is created; "
                   "checked before training; Ctrl-C saves the best solver so far, marked interrupted)")
    p.add_argument("--history", default=None, help="also write the training curve (iteration, loss, validation "
                   "RMSE / PSNR) to this JSON file (core/history.py; the app draws it for shipped solvers)")
    from .gtdata.cli import add_make_gt_parser, add_train_solver_options
    add_train_solver_options(p)  # --gt DIR, --checkpoint-activations (core/gtdata/cli.py)
    p.set_defaults(func=cmd_train_solver)

    add_make_gt_parser(sub, _model_options)  # make-gt (core/gtdata/cli.py)

    p = sub.add_parser("sample", help="run a solver from noise; write .npy or a .png picture",
                       description="Sample a model with a built-in solver "
                       f"({', '.join(BUILTIN_SOLVERS)}) or a saved learned solver file.")
    _model_options(p)
    p.add_argument("--solver", required=True, help="built-in solver name or learned solver file")
    p.add_argument("--nfe", type=int, required=True, help="network evaluations")
    _noise_options(p, 1000)
    _threads_option(p)
    p.add_argument("--out", required=True, help="samples.npy, or a .png scatter (2-D) / image grid (a missing "
                   "folder is created)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="RMSE / PSNR of solvers against GT from the same noise",
                       description="For each solver and NFE: RMSE and PSNR against dopri5 GT samples from the "
                       "same noise (GT solved once), the distance of the sample set to fresh samples of the "
                       "model's data (sliced Wasserstein and energy distance for 2-D data, the digits-classifier "
                       "Frechet distance for digits, not Inception FID) with '%% of GT' (the GT samples' own "
                       "distance = 100), the NFE spent and the wall time. A learned solver is evaluated at the "
                       "NFE it was trained for.")
    _model_options(p)
    p.add_argument("--solver", required=True, action="extend", nargs="+",
                   help="built-in names and/or learned solver files (repeatable); 'all' = every built-in "
                   "solver (sweep mode)")
    p.add_argument("--nfe", type=int, action="extend", nargs="+", default=None,
                   help="NFEs for the built-in solvers (repeatable)")
    _noise_options(p, 1000)
    p.add_argument("--gt-tol", type=float, default=1e-5, help="dopri5 atol = rtol of the GT (default 1e-5)")
    p.add_argument("--json", default=None, help="write the results to this JSON file (a missing folder is created)")
    p.add_argument("--no-distances", action="store_true",
                   help="skip the distances to the data (sliced Wasserstein / energy for 2-D, digits FD for digits)")
    _threads_option(p)
    from .report import add_cli_options
    add_cli_options(p)  # sweep mode: --train-learned, budgets, --out-dir, --plot (core/report.py)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="print a checkpoint's header", description="Print a model or solver "
                       "checkpoint's JSON header (validated, never unpickled).")
    p.add_argument("file")
    p.set_defaults(func=cmd_info)

    from .export import add_parser as add_export_parser
    add_export_parser(sub, _model_options)  # export: core/export.py
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    threads_before = torch.get_num_threads()  # --threads applies to this command only (matters in-process)
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except (UserError, CheckpointError, ValueError, FileNotFoundError, KeyError, FloatingPointError) as e:
        msg = " ".join(str(e).split()) or e.__class__.__name__
        print(f"error: {msg[:1000]}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # permission denied, a folder where a file should be, a name too long, a full disk
        where = f": {str(e.filename)[:200]!r}" if e.filename else ""
        print(f"error: {e.strerror or e.__class__.__name__}{where}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)
    return 0
