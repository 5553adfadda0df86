"""make_gt: solve a GT data set's shards and write them, on one process or many.

Every rank runs make_gt with the same spec: rank 0 checks the folder (a folder made with other
settings is refused) and writes the manifest; each rank takes the shards
sharding.owned_shards(n, rank, world); rank 0 collects the records and writes the final
manifest. Resumable: a shard already on disk whose content hash and header check out is kept
(whoever made it, however many processes there were); a missing, half-written (a leftover
.tmp: files are written to a temp name and renamed) or corrupt one is solved again. Shard k
always holds the same paths: its noise comes from its own seed and it is one dopri5 batch.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .. import checkpoint
from ..checkpoint import CheckpointError
from ..distributed.sharding import owned_shards
from ..solvers.gt import GTPool, gt_solve
from .manifest import finish_manifest, new_manifest, read_manifest, spec_of, write_manifest
from .spec import GTSpec, check_field_matches

SHARD_KIND = "gt-shard"


def solve_shard(field, spec: GTSpec, shard: dict[str, Any]) -> tuple[dict[str, torch.Tensor], int]:
    """The tensors of one shard (on the CPU) and the NFE they cost. Deterministic in (spec, shard)."""
    gen = torch.Generator().manual_seed(shard["seed"])
    x0 = field.noise(shard["count"], generator=gen, dtype=spec.torch_dtype).to(field.device)
    if spec.store == "pairs":
        res = gt_solve(field, x0, atol=spec.atol, rtol=spec.rtol, dtype=spec.torch_dtype)
        return {"x0": x0.cpu(), "x1": res.x.cpu()}, res.nfe
    pool = GTPool.build(field, x0, n_grid=spec.grid, atol=spec.atol, rtol=spec.rtol, batch_size=shard["count"],
                        dtype=spec.torch_dtype)
    return {"grid": pool.grid.cpu(), "xs": pool.xs.cpu(), "us": pool.us.cpu()}, pool.nfe


def read_shard(root: Path, spec: GTSpec, shard: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a shard file and check it is shard `shard` of this spec (CheckpointError if not)."""
    tensors, header = checkpoint.load(root / shard["file"], kind=SHARD_KIND)
    if header.get("dataset_id") != spec.dataset_id:
        raise CheckpointError(f"{shard['file']} belongs to another GT data set")
    got = header.get("shard", {})
    if any(got.get(k) != shard[k] for k in ("index", "split", "k", "start", "count", "seed")):
        raise CheckpointError(f"{shard['file']} holds shard {got}, expected {shard}")
    return tensors, header


def _record(shard: dict[str, Any], header: dict[str, Any], size: int, seconds: Optional[float]) -> dict[str, Any]:
    """The manifest's row for a shard. The wall time lives here only, not in the shard's header:
    the content hash covers the header, and a shard must hash the same whoever made it, when."""
    return {**{k: shard[k] for k in ("index", "split", "k", "file", "start", "count", "seed")},
            "nfe": int(header["nfe"]), "seconds": seconds,
            "content_hash": header["content_hash"], "bytes": size}


def _prepare(root: Path, spec: GTSpec, model_file: Optional[str]) -> Optional[str]:
    """Rank 0: refuse a folder holding another data set, else (re)write the manifest.
    Returns an error message (broadcast to every rank) or None."""
    try:
        if (root / "manifest.json").exists():
            old = read_manifest(root)
            if old["dataset_id"] != spec.dataset_id:
                diff = "; ".join(spec_of(old).differences(spec))
                return (f"{str(root)!r} already holds a GT data set made with other settings ({diff}); "
                        f"use another --out folder")
            if old.get("complete"):
                return None
        write_manifest(root, new_manifest(spec, model_file))
    except (OSError, ValueError) as e:
        return str(e)
    return None


def make_gt(field, spec: GTSpec, out_dir, dist=None, model_file: Optional[str] = None,
            progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Make (or finish) the data set `spec` for `field` in `out_dir`; returns the final manifest
    on every rank. dist: a core.distributed.DistContext (None: one process does every shard)."""
    check_field_matches(spec, field, "the GT spec")
    say = progress or (lambda msg: None)
    root = Path(out_dir)
    rank, world = (0, 1) if dist is None else (dist.rank, dist.world)
    error = _prepare(root, spec, model_file) if rank == 0 else None
    error = error if dist is None else dist.broadcast(error)
    if error:
        raise ValueError(error)
    shards = spec.shards()
    records = []
    try:  # wall times of shards finished by an earlier run (kept shards keep theirs)
        earlier = {r["file"]: r.get("seconds") for r in read_manifest(root).get("shards", [])}
    except (OSError, ValueError):
        earlier = {}
    for k in owned_shards(len(shards), rank, world):
        shard = shards[k]
        path = root / shard["file"]
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():  # a shard whose writing was interrupted
            say(f"rank {rank}: removing the half-written {tmp.name}")
            tmp.unlink()
        if path.exists():
            try:
                _, header = read_shard(root, spec, shard)
                records.append(_record(shard, header, path.stat().st_size, earlier.get(shard["file"])))
                say(f"rank {rank}: {shard['file']} already done, kept")
                continue
            except CheckpointError as e:
                say(f"rank {rank}: {shard['file']} is unusable ({e}); solving it again")
        t0 = time.perf_counter()
        tensors, nfe = solve_shard(field, spec, shard)
        seconds = time.perf_counter() - t0
        header = {"dataset_id": spec.dataset_id, "shard": {k: shard[k] for k in
                  ("index", "split", "k", "start", "count", "seed")}, "nfe": nfe, "spec": spec.content_dict()}
        digest = checkpoint.save(path, tensors, header, kind=SHARD_KIND)
        records.append(_record(shard, {**header, "content_hash": digest}, path.stat().st_size, round(seconds, 4)))
        say(f"rank {rank}: {shard['file']}: {shard['count']} {shard['split']} paths, NFE {nfe}, {seconds:.2f} s")
    if dist is not None:
        gathered = dist.gather(records)
        records = [r for part in gathered for r in part] if dist.is_main else []
    if rank == 0:
        manifest = finish_manifest(read_manifest(root), records)
        write_manifest(root, manifest)
    else:
        manifest = None
    return manifest if dist is None else dist.broadcast(manifest)
