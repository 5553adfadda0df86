"""What a GT data set holds, and how it is cut into shards.

A data set is two splits of GT paths from independent noise streams: "train" (n_train paths)
and "val" (n_val paths). Validation noise is held out by construction: it is drawn from its own
seed stream and lives in its own shards, which training never reads. Each split is cut into
shards of `shard_size` paths; shard k of a split holds the paths from noise drawn with
`shard_seed(seed, split, k)`, solved together as one dopri5 batch, so its content depends only
on the spec and k, never on which process made it or in what order.

What is stored per path ("store"):
    pairs  x0 and x1 = the dopri5 solution at t = 1 (BNS; final-RMSE Bespoke)    2 |D| numbers
    paths  x and u = dx/dt on a uniform grid of `grid` times in [0, 1] (Bespoke's
           RMSE-bound loss reads x(t) between nodes by cubic Hermite, core.solvers.gt.GTPool;
           x0, x1 are the grid's ends, so BNS can use it too)                     2 grid |D| numbers
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

from ..checkpoint import MAX_FILE_BYTES

STORE_KINDS = ("pairs", "paths")
SPLITS = ("train", "val")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class GTSpec:
    """Everything that decides a data set's content (two data sets with equal specs are equal)."""

    model_id: str  # the model checkpoint's content hash
    guidance_scale: Optional[float]  # the classifier-free guidance scale bound into u (None: unguided)
    labels: Optional[list[int]]  # conditional models: row i of a batch gets labels[i % L]
    path: Optional[dict]  # the model's Gaussian path (to_dict()), for the record
    data_shape: list[int]  # D
    n_train: int = 1024  # training paths
    n_val: int = 256  # validation paths (their own noise stream)
    shard_size: int = 256  # paths per shard file (one dopri5 batch)
    seed: int = 0  # root of every shard's noise seed
    atol: float = 1e-5  # dopri5 tolerances
    rtol: float = 1e-5
    store: str = "pairs"  # "pairs" (x0, x1) or "paths" (x, u on the grid)
    grid: int = 65  # "paths": grid points in [0, 1]
    dtype: str = "float32"  # solve and store precision: "float32" or "float64"

    def __post_init__(self):
        for name in ("n_train", "n_val", "shard_size", "grid"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.grid < 2:
            raise ValueError(f"grid must be >= 2 points, got {self.grid}")
        if not (math.isfinite(self.atol) and self.atol > 0 and math.isfinite(self.rtol) and self.rtol > 0):
            raise ValueError(f"tolerances must be positive, got atol={self.atol!r}, rtol={self.rtol!r}")
        if self.store not in STORE_KINDS:
            raise ValueError(f"store must be one of {STORE_KINDS}, got {self.store!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        period = len(self.labels) if self.labels and len(self.labels) > 1 else 1
        for name in ("n_train", "n_val", "shard_size"):
            if getattr(self, name) % period:
                raise ValueError(f"{name} = {getattr(self, name)} must be a multiple of {period}: this conditional "
                                 f"model cycles {period} labels over the rows of a batch")
        if self.shard_bytes > MAX_FILE_BYTES:
            raise ValueError(f"a shard of {self.shard_size} paths would be {self.shard_bytes} bytes, over the "
                             f"{MAX_FILE_BYTES}-byte file limit; use a shard size <= "
                             f"{max(period, MAX_FILE_BYTES // self.path_bytes // period * period)}")

    @classmethod
    def for_field(cls, field, **kw) -> "GTSpec":
        """The spec of a data set for `field` (its model id, guidance, labels, path, shape)."""
        return cls(**field_identity(field), **kw)

    # -- identity ----------------------------------------------------------------------------
    def content_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def dataset_id(self) -> str:
        """sha256 of the canonical JSON of everything that decides the content."""
        raw = json.dumps(self.content_dict(), sort_keys=True, allow_nan=False)
        return hashlib.sha256(raw.encode()).hexdigest()

    def differences(self, other: "GTSpec") -> list[str]:
        a, b = self.content_dict(), other.content_dict()
        return [f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k]]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GTSpec":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GT spec field(s) {sorted(unknown)}")
        return cls(**d)

    # -- shards ------------------------------------------------------------------------------
    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def split_size(self, split: str) -> int:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.n_train if split == "train" else self.n_val

    def shards(self) -> list[dict[str, Any]]:
        """Every shard: {"index", "split", "k" (index within the split), "start", "count", "seed",
        "file"}; the train shards first. A split's last shard may be shorter."""
        out: list[dict[str, Any]] = []
        for split in SPLITS:
            n = self.split_size(split)
            for k, start in enumerate(range(0, n, self.shard_size)):
                count = min(self.shard_size, n - start)
                out.append({"index": len(out), "split": split, "k": k, "start": start, "count": count,
                            "seed": shard_seed(self.seed, split, k), "file": f"{split}-{k:05d}.safetensors"})
        return out

    @property
    def path_bytes(self) -> int:
        return bytes_per_path(self.data_shape, self.store, self.grid, self.dtype)

    @property
    def shard_bytes(self) -> int:
        return self.shard_size * self.path_bytes


def shard_seed(seed: int, split: str, k: int) -> int:
    """The noise seed of shard k of a split: a hash of (seed, split, k), so splits and shards
    never share a noise stream and adding shards never changes earlier ones."""
    h = hashlib.sha256(f"bespoke-gt/{int(seed)}/{split}/{int(k)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def bytes_per_path(data_shape, store: str = "pairs", grid: int = 65, dtype: str = "float32") -> int:
    """Bytes one GT path takes on disk: 2 |D| numbers (pairs) or 2 grid |D| (paths)."""
    if store not in STORE_KINDS:
        raise ValueError(f"store must be one of {STORE_KINDS}, got {store!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    dim = math.prod(int(d) for d in data_shape)
    per = torch.empty((), dtype=DTYPES[dtype]).element_size()
    return 2 * dim * per * (grid if store == "paths" else 1)


def field_identity(field) -> dict[str, Any]:
    """What a data set records of the field it was made for: model id, guidance, labels, path, D."""
    labels = getattr(field, "labels", None)
    path = getattr(field, "path", None)
    return {"model_id": str(field.model_id), "guidance_scale": field.guidance_scale,
            "labels": None if labels is None else [int(v) for v in labels.tolist()],
            "path": None if path is None else path.to_dict(), "data_shape": [int(d) for d in field.data_shape]}


def check_field_matches(spec: GTSpec, field, where: str = "this GT data set") -> None:
    """Refuse a field whose model, guidance, labels, path or shape differ from the spec's."""
    got = field_identity(field)
    if got["model_id"] != spec.model_id:
        raise ValueError(f"{where} was made for model {spec.model_id[:16]}, not for this model "
                         f"{got['model_id'][:16]}; make one for it with `python -m core make-gt`")
    w = got["guidance_scale"]
    if (w is None) != (spec.guidance_scale is None) or (w is not None and abs(w - spec.guidance_scale) > 1e-12):
        raise ValueError(f"{where} was made at guidance scale {spec.guidance_scale!r}, not {w!r}")
    if got["labels"] != spec.labels:
        raise ValueError(f"{where} was made with class labels {_short(spec.labels)}, not {_short(got['labels'])}")
    if got["data_shape"] != spec.data_shape or got["path"] != spec.path:
        raise ValueError(f"{where} holds data of shape {spec.data_shape} on path {spec.path}, this model "
                         f"{got['data_shape']} on {got['path']}")


def _short(labels) -> str:
    return "none" if labels is None else str(labels if len(labels) <= 12 else labels[:12] + ["..."])
