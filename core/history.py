"""Training-curve files: a learned solver's training history next to the solver file.

`python -m core train-solver ... --out S.bespoke --history S.history.json` writes one; the app
reads the ones shipped with a model (assets/<model>/solvers/<stem>.history.json) to draw the
curve the solver was trained with. Plain JSON (never unpickled), read with a size cap:

    {"format": "bespoke-history", "version": 1,
     "history": [{"iteration", "loss", "elapsed", ["rmse", "psnr"]}, ...],   # core.train's TrainResult.history
     "summary": {...}}                                                      # TrainResult.summary()

NaN / inf (the loss before the first step) are stored as null and read back as NaN.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

FORMAT = "bespoke-history"
VERSION = 1
MAX_BYTES = 16 * 1024 * 1024  # a history of 1,000,000 iterations would not fit: the trainer caps far lower
KEYS = ("iteration", "loss", "elapsed", "rmse", "psnr")


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def save_history(path: str | os.PathLike, history: list[dict], summary: Optional[dict] = None) -> None:
    """Write a training history (and the run's summary) as JSON, atomically."""
    rows = [{k: row[k] for k in KEYS if k in row} for row in history]
    text = json.dumps(_clean({"format": FORMAT, "version": VERSION, "history": rows, "summary": summary or {}}),
                      allow_nan=False)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, p)


def load_history(path: str | os.PathLike) -> tuple[list[dict], dict[str, Any]]:
    """(history, summary) from a file written by save_history; ValueError (one line) otherwise.
    Every history row has an integer "iteration" and float values (NaN where null)."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_BYTES:
            raise ValueError(f"{str(p)!r} is over {MAX_BYTES} bytes: not a training history")
        obj = json.loads(p.read_text())
    except OSError as e:
        raise ValueError(f"cannot read {str(p)!r}: {e.strerror or e}") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{str(p)!r} is not valid JSON ({str(e)[:100]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("version") != VERSION:
        raise ValueError(f"{str(p)!r} is not a training history (format {FORMAT!r}, version {VERSION})")
    rows, out = obj.get("history"), []
    if not isinstance(rows, list):
        raise ValueError(f"{str(p)!r}: 'history' must be a list")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or isinstance(row.get("iteration"), bool) or not isinstance(row.get("iteration"), int):
            raise ValueError(f"{str(p)!r}: history row {i} has no integer 'iteration'")
        clean = {"iteration": row["iteration"]}
        for k in KEYS[1:]:
            if k not in row:
                continue
            v = row[k]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"{str(p)!r}: history row {i} has a non-number {k} {str(v)[:20]!r}")
            clean[k] = float("nan") if v is None else float(v)
        out.append(clean)
    summary = obj.get("summary")
    return out, summary if isinstance(summary, dict) else {}
