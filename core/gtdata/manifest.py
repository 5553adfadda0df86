"""manifest.json of a GT data set: the spec, the shard plan with each shard's noise seed, the NFE
it cost and its content hash, and whether every shard is there.

    {"format": "bespoke-gt", "version": 1, "dataset_id": sha256 of the spec,
     "spec": {...GTSpec...}, "model_file": "...", "complete": true | false,
     "shards": [{"index", "split", "k", "file", "start", "count", "seed", "nfe", "seconds",
                 "content_hash", "bytes"}, ...],
     "totals": {"paths", "nfe", "bytes", "seconds"}}

Written atomically (temp file + rename) by rank 0 only: first with "complete": false and no
shards (so a second run with other settings into the same folder is refused before any work),
then once every shard is on disk.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from .spec import GTSpec

MANIFEST = "manifest.json"
FORMAT, VERSION = "bespoke-gt", 1


def new_manifest(spec: GTSpec, model_file: Optional[str] = None) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "dataset_id": spec.dataset_id, "spec": spec.content_dict(),
            "model_file": model_file, "complete": False, "shards": [], "totals": {}}


def finish_manifest(manifest: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest with every shard's record (sorted by index) and the totals."""
    records = sorted(records, key=lambda r: r["index"])
    totals = {"paths": sum(r["count"] for r in records), "nfe": sum(r["nfe"] for r in records),
              "bytes": sum(r["bytes"] for r in records), "seconds": round(sum(r["seconds"] or 0.0 for r in records), 3)}
    return {**manifest, "complete": True, "shards": records, "totals": totals}


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    path = Path(root) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the data set in `root`, checked for format and self-consistency."""
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise ValueError(f"GT data set folder not found: {str(root)!r}")
    if not path.is_file():
        raise ValueError(f"{str(root)!r} holds no {MANIFEST}: not a GT data set (make one with "
                         f"`python -m core make-gt`)")
    try:
        m = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a {FORMAT} manifest")
    if m.get("version") != VERSION:
        raise ValueError(f"{str(path)!r} has format version {m.get('version')!r}; this code reads {VERSION}")
    spec = spec_of(m, path)
    if spec.dataset_id != m.get("dataset_id"):
        raise ValueError(f"{str(path)!r}: the dataset id does not match its spec (the manifest was edited)")
    return m


def spec_of(manifest: dict[str, Any], where="the manifest") -> GTSpec:
    try:
        return GTSpec.from_dict(manifest["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{str(where)!r}: bad GT spec ({e})") from None
