"""GT samples of shipped and uploaded models kept on disk between server starts.

The Model page draws the evaluation set's GT samples (explorer/evaluation.py) on every start;
solving them (dopri5, ~1-2 s, and importing torchdiffeq / scipy, ~1 s) competed with the
browser drawing the first page. They depend only on the model's weights (its model_id is their
content hash), the guidance scale, the noise set, the tolerance and the device, so they are
written once to `$BESPOKE_CACHE_DIR/gt` (default ~/.cache/bespoke-explorer/gt) and read back by
later starts. Files are plain .npz arrays read with allow_pickle=False; a missing, unreadable
or unwritable cache only means solving again. Analytic models (defined in code, not by a
content hash) are never cached. No streamlit here.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

VERSION = "gt-v1"  # bump when the GT solve changes what it returns


def cache_dir() -> Path:
    root = os.environ.get("BESPOKE_CACHE_DIR") or Path.home() / ".cache" / "bespoke-explorer"
    return Path(root) / "gt"


def cache_key(field, n: int, seed: int, atol: float) -> Optional[str]:
    """The file stem for these GT samples, or None when the field has no content hash."""
    model_id = str(getattr(field, "model_id", "") or "")
    if not model_id or model_id.startswith("analytic"):
        return None
    device = getattr(getattr(field, "device", None), "type", str(getattr(field, "device", "cpu")))
    parts = f"{VERSION}|{model_id}|w={field.guidance_scale}|n={n}|seed={seed}|atol={atol:g}|{device}"
    return hashlib.sha256(parts.encode()).hexdigest()[:32]


def load_or_solve(field, n: int, seed: int, atol: float,
                  solve: Callable[[], tuple[np.ndarray, int]]) -> tuple[np.ndarray, int, bool]:
    """(x, nfe, from_disk): the cached GT samples if present, else solve() and keep them."""
    key = cache_key(field, n, seed, atol)
    path = cache_dir() / f"{key}.npz" if key else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                x, nfe = f["x"], int(f["nfe"])
            if x.shape[0] == n:
                return x, nfe, True
        except (OSError, ValueError, KeyError):
            pass  # unreadable: solve again and overwrite
    x, nfe = solve()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
            with os.fdopen(fd, "wb") as out:
                np.savez(out, x=np.asarray(x), nfe=np.asarray(nfe))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full disk: the samples are still returned
    return x, nfe, False
