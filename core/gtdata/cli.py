"""The `make-gt` command and the `train-solver` options for GT data sets and many processes.

Both run the same way on one process or under torchrun:

    python -m core make-gt --model M --n 4096 --out gt/
    torchrun --standalone --nproc_per_node 4 -m core make-gt --model M --n-train 4096 --out gt/
    torchrun --standalone --nproc_per_node 4 -m core train-solver --model M --gt gt/ --solver bns ...
"""
from __future__ import annotations

import sys
from pathlib import Path

from .spec import DTYPES, STORE_KINDS, GTSpec


def add_make_gt_parser(sub, model_options) -> None:
    """Register `make-gt` on the CLI's subparsers (model_options: the CLI's shared --model,
    --guidance, --label, --device options)."""
    p = sub.add_parser("make-gt", help="solve GT paths once into a sharded on-disk data set (many processes "
                       "under torchrun)",
                       description="Solve ground-truth paths with dopri5 and write them as sharded safe files with "
                       "a manifest, for train-solver --gt. Rerunning the same command finishes an interrupted run; "
                       "under `torchrun --nproc_per_node K` the K processes share the shards.")
    model_options(p)
    p.add_argument("--n", "--n-train", dest="n", type=int, default=1024,
                   help="training paths (default 1024); under torchrun write --n-train (torchrun takes --n as "
                   "an abbreviation of its own options)")
    p.add_argument("--n-val", type=int, default=256, help="validation paths, from their own noise (default 256)")
    p.add_argument("--shard-size", type=int, default=256, help="paths per shard file (default 256)")
    p.add_argument("--seed", type=int, default=0, help="root seed of the shards' noise (default 0)")
    p.add_argument("--atol", type=float, default=1e-5, help="dopri5 absolute tolerance (default 1e-5)")
    p.add_argument("--rtol", type=float, default=1e-5, help="dopri5 relative tolerance (default 1e-5)")
    p.add_argument("--store", default="pairs", choices=STORE_KINDS,
                   help="pairs: x0, x1 (BNS); paths: x and dx/dt on a time grid (Bespoke, and BNS) (default pairs)")
    p.add_argument("--grid", type=int, default=65, help="time grid points of --store paths (default 65)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="solve and store precision")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process (default: as the other commands; under torchrun, its "
                   "OMP_NUM_THREADS, 1 unless set)")
    p.add_argument("--quiet", action="store_true", help="no per-shard messages")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_make_gt)


def cmd_make_gt(args) -> None:
    from ..distributed import from_env
    from .make import make_gt
    from ..model_io import load_model
    from ..train import resolve_device
    from ..threads import set_threads
    if not Path(args.model).exists():
        raise ValueError(f"model file not found: {args.model!r}")
    dist = from_env(args.device)
    try:
        set_threads(torchrun_threads(args.threads, dist))
        device = dist.device if dist is not None else resolve_device(args.device)
        field = load_model(args.model, guidance_scale=args.guidance, device=device, labels=args.label)
        spec = GTSpec.for_field(field, n_train=args.n, n_val=args.n_val, shard_size=args.shard_size, seed=args.seed,
                                atol=args.atol, rtol=args.rtol, store=args.store, grid=args.grid, dtype=args.dtype)
        main = dist is None or dist.is_main
        if main and not args.quiet:
            n = spec.n_train + spec.n_val
            print(f"{n} GT paths ({spec.n_train} train + {spec.n_val} validation) in {len(spec.shards())} shards, "
                  f"{spec.path_bytes} bytes per path ({spec.store}, {spec.dtype}), {n * spec.path_bytes} bytes in "
                  f"all, on {1 if dist is None else dist.world} process(es)", file=sys.stderr)
        say = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
        m = make_gt(field, spec, args.out, dist=dist, model_file=str(args.model), progress=say)
        if main:
            t = m["totals"]
            print(f"wrote {args.out}: {t['paths']} paths in {len(m['shards'])} shards, dataset {m['dataset_id'][:16]}, "
                  f"NFE {t['nfe']}, {t['bytes']} bytes, {t['seconds']:.1f} s of solving")
        if dist is not None:
            dist.barrier()  # every rank leaves together
    finally:
        if dist is not None:
            dist.close()


def add_train_solver_options(p) -> None:
    """`train-solver` options: --gt DIR, --checkpoint-activations."""
    p.add_argument("--gt", default=None, metavar="DIR",
                   help="train and validate on this GT data set (from make-gt) instead of solving GT; its sizes "
                   "replace --n-train / --n-val")
    p.add_argument("--checkpoint-activations", action="store_true",
                   help="recompute the model in backward instead of keeping its activations through the unrolled "
                   "steps (bounded memory on big models, one extra forward per step)")


def torchrun_threads(threads, dist):
    """--threads for core.threads.set_threads: under torchrun with no --threads, 0 (keep torch's
    setting, i.e. torchrun's OMP_NUM_THREADS per process), so K processes do not each take the
    one-process default."""
    return 0 if dist is not None and threads is None else threads


def start_processes(args):
    """(dist, device) for a command: joins torchrun's group when there is one."""
    from ..distributed import from_env
    from ..train import resolve_device
    dist = from_env(args.device)
    if hasattr(args, "threads"):
        args.threads = torchrun_threads(args.threads, dist)
    return dist, (dist.device if dist is not None else resolve_device(args.device))


def open_dataset(args, field):
    """The --gt data set, checked against `field` (None without --gt)."""
    if not getattr(args, "gt", None):
        return None
    from .dataset import open_gt
    return open_gt(args.gt, field)
