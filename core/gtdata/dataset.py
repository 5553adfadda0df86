"""GTDataset: a finished GT data set on disk, read back for training.

    ds = open_gt("gt/", field)          # refuses a data set for another model / guidance / labels
    x0, x1, x0_val, x1_val = ds.pairs(device)      # BNS (either store kind)
    train, val = ds.pools(device)                  # Bespoke (store "paths"): core.solvers.gt.GTPool

Every shard's content hash is checked against the manifest as it is read.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from ..checkpoint import CheckpointError
from ..solvers.gt import GTPool
from .make import read_shard
from .manifest import read_manifest, spec_of
from .spec import GTSpec, check_field_matches


class GTDataset:
    """A complete GT data set: `root`, `manifest`, `spec`; `nfe` = what making it cost."""

    def __init__(self, root: str | Path, manifest: dict[str, Any]):
        self.root, self.manifest = Path(root), manifest
        self.spec: GTSpec = spec_of(manifest)
        self.load_seconds = 0.0
        self._cache: dict[tuple[str, str], dict[str, Tensor]] = {}  # (split, device) -> tensors

    @classmethod
    def open(cls, root: str | Path) -> "GTDataset":
        m = read_manifest(root)
        if not m.get("complete"):
            raise ValueError(f"the GT data set in {str(root)!r} is unfinished; run the same make-gt command again "
                             f"to finish it")
        planned = [s["file"] for s in spec_of(m).shards()]
        if [r["file"] for r in m["shards"]] != planned:
            raise ValueError(f"the manifest in {str(root)!r} does not list the shards its spec plans")
        return cls(root, m)

    @property
    def nfe(self) -> int:
        return int(self.manifest["totals"]["nfe"])

    def check_field(self, field) -> None:
        check_field_matches(self.spec, field, f"the GT data set in {str(self.root)!r}")

    def load_split(self, split: str, device=None) -> dict[str, Tensor]:
        """A split's tensors, its shards concatenated in order: pairs -> x0, x1 (P, *D);
        paths -> grid (K,), xs, us (K, P, *D). Read once per device, then kept."""
        key = (split, str(torch.device(device or "cpu")))
        if key in self._cache:
            return dict(self._cache[key])
        t0 = time.perf_counter()
        parts = []
        for rec in self.manifest["shards"]:
            if rec["split"] != split:
                continue
            try:
                tensors, header = read_shard(self.root, self.spec, rec)
            except CheckpointError as e:
                raise ValueError(f"GT data set {str(self.root)!r}: {e}") from None
            if header["content_hash"] != rec["content_hash"]:
                raise ValueError(f"GT data set {str(self.root)!r}: {rec['file']} is not the file the manifest "
                                 f"lists (content hash differs); make the data set again")
            parts.append(tensors)
        if not parts:
            raise ValueError(f"GT data set {str(self.root)!r} has no {split!r} shards")
        if self.spec.store == "pairs":
            out = {k: torch.cat([p[k] for p in parts]) for k in ("x0", "x1")}
        else:
            out = {"grid": parts[0]["grid"], **{k: torch.cat([p[k] for p in parts], 1) for k in ("xs", "us")}}
        self.load_seconds += time.perf_counter() - t0
        self._cache[key] = {k: v.to(device) for k, v in out.items()}
        return dict(self._cache[key])

    def pairs(self, device=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x0, x1) of the train split and of the validation split, each (P, *D)."""
        out = []
        for split in ("train", "val"):
            d = self.load_split(split, device)
            out += [d["x0"], d["x1"]] if self.spec.store == "pairs" else [d["xs"][0], d["xs"][-1]]
        return tuple(out)

    def pools(self, device=None) -> tuple[GTPool, GTPool]:
        """(train, validation) GT path pools; needs a data set stored with --store paths."""
        if self.spec.store != "paths":
            raise ValueError(f"the GT data set in {str(self.root)!r} stores only (x0, x1) pairs; Bespoke training "
                             f"reads dense paths: make one with `make-gt --store paths`")
        pools = []
        for split in ("train", "val"):
            d = self.load_split(split, device)
            pools.append(GTPool(d["grid"], d["xs"], d["us"], 0))
        pools[0].nfe = self.nfe
        return pools[0], pools[1]


def open_gt(root: str | Path, field: Optional[Any] = None) -> GTDataset:
    """Open a finished data set; with `field`, refuse it unless it was made for that field."""
    ds = GTDataset.open(root)
    if field is not None:
        ds.check_field(field)
    return ds
