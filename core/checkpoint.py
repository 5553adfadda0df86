"""A safe checkpoint container: safetensors-compatible bytes, parsed by hand, never unpickled.

Layout (the safetensors format, so `safetensors.safe_open` can read our files too):
    8 bytes  little-endian u64 N = header length
    N bytes  UTF-8 JSON: {name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
                          "__metadata__": {"bespoke": "<JSON string>"}}
    rest     the raw little-endian tensor bytes
Our JSON header (the "bespoke" entry) holds `kind` ("model" or "solver"), the format version,
free metadata, and `content_hash`, checked on load. The hash (format version 2) covers
everything that changes behaviour: the canonical JSON of our header (all of it but the hash
itself) and of every tensor's name, dtype, shape and offsets, then the tensor bytes. A model's
hash is its model_id, which solvers are bound to.

On load, before anything is allocated: the file and header sizes, the JSON nesting depth, the
number of tensors and their dimensions are checked against the caps in core/limits.py; the
tensors' offsets must tile the data exactly (no overlap, no gap, nothing after); every size is
computed with Python integers (no overflow). Every failure raises `CheckpointError` with a
one-line message naming the problem. Files of format version 1 (hash over the tensor bytes
only) are refused; `restamp` rewrites one deliberately (scripts/make_assets.py --restamp).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import time
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .limits import MAX_FILE_BYTES, MAX_HEADER_BYTES, MAX_JSON_DEPTH, MAX_TENSOR_DIMS, MAX_TENSORS

FORMAT_VERSION = 2  # 2: the content hash covers the header too (1: the tensor bytes only)

_DTYPES = {
    "F64": (torch.float64, np.float64),
    "F32": (torch.float32, np.float32),
    "F16": (torch.float16, np.float16),
    "I64": (torch.int64, np.int64),
    "I32": (torch.int32, np.int32),
    "U8": (torch.uint8, np.uint8),
    "BOOL": (torch.bool, np.bool_),
}
_TORCH_TO_CODE = {v[0]: k for k, v in _DTYPES.items()}

Source = Union[str, os.PathLike, bytes, bytearray, BinaryIO]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, foreign, hostile or mismatched.
    The message is always one line (whitespace runs, newlines included, become one space)."""

    def __init__(self, message: str = ""):
        super().__init__(" ".join(str(message).split()))


def _tensor_bytes(t: Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype not in _TORCH_TO_CODE:
        raise TypeError(f"unsupported tensor dtype {t.dtype}")
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def state_dict_hash(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in name order): the
    identity of an in-memory model (other libraries' models) that solver checkpoints record."""
    h = hashlib.sha256()
    for name, v in sorted(module.state_dict().items()):
        v = v.detach().cpu().contiguous()
        h.update(f"{name}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def content_hash(entries: dict[str, Any], header: dict[str, Any], data: bytes) -> str:
    """sha256 of the tensor table, our header (without its hash) and the tensor bytes."""
    ours = {k: v for k, v in header.items() if k != "content_hash"}
    h = hashlib.sha256(_canonical({"header": ours, "tensors": entries}))
    h.update(b"\n")
    h.update(data)
    return h.hexdigest()


def dumps(tensors: dict[str, Tensor], header: dict[str, Any], kind: str) -> bytes:
    """Serialise tensors plus a JSON-able header into checkpoint bytes."""
    entries, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, Tensor):
            raise TypeError(f"checkpoint entry {name!r} is a {type(t).__name__}, not a tensor")
        blob = _tensor_bytes(t)
        entries[name] = {"dtype": _TORCH_TO_CODE[t.dtype], "shape": list(t.shape),
                         "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    data = b"".join(blobs)
    extra = {k: v for k, v in header.items() if k not in ("format", "version", "kind", "content_hash")}
    ours = {"format": "bespoke-explorer", "version": FORMAT_VERSION, "kind": kind, **extra}
    ours = json.loads(json.dumps(ours, allow_nan=False))  # what a reader will parse (tuples -> lists)
    ours["content_hash"] = content_hash(entries, ours, data)
    entries["__metadata__"] = {"bespoke": json.dumps(ours, sort_keys=True, allow_nan=False)}
    head = json.dumps(entries, sort_keys=True).encode("utf-8")
    head += b" " * (-len(head) % 8)  # safetensors aligns the data to 8 bytes
    return struct.pack("<Q", len(head)) + head + data


TMP_SUFFIX = ".tmp"


def write_atomic(path: str | os.PathLike, raw: bytes) -> None:
    """Write bytes to `path` via a temp file in the same folder + rename, so a killed write never
    leaves a half file under the real name; the temp file is removed if the write fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path.parent, pattern=f"{path.name}.*{TMP_SUFFIX}")  # left by an earlier killed write
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        tmp.write_bytes(raw)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def clean_stale_tmp(folder: str | os.PathLike, older_than_s: float = 60.0, pattern: str = f"*{TMP_SUFFIX}") -> list[Path]:
    """Remove temp files (`pattern`) left in `folder` by killed writes, if older than
    `older_than_s` (a write in progress is not touched); returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    now = time.time()
    for f in folder.glob(pattern):
        try:
            if f.is_file() and now - f.stat().st_mtime > older_than_s:
                f.unlink()
                removed.append(f)
        except OSError:
            continue
    return removed


def save(path: str | os.PathLike, tensors: dict[str, Tensor], header: dict[str, Any], kind: str) -> str:
    """Write atomically (temp file + rename) and return the content hash."""
    raw = dumps(tensors, header, kind)
    write_atomic(path, raw)
    return loads(raw)[1]["content_hash"]


def _read_source(src: Source) -> bytes:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    if hasattr(src, "read"):
        return src.read(MAX_FILE_BYTES + 1)
    path = Path(src)
    try:
        if not path.exists():
            raise CheckpointError(f"checkpoint file not found: {str(path)!r}")
        if not path.is_file():
            raise CheckpointError(f"not a file: {str(path)!r}")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CheckpointError(f"{str(path)!r} is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
        return path.read_bytes()
    except OSError as e:  # permission denied, a name too long, ...
        raise CheckpointError(f"cannot read {str(path)[:200]!r}: {e.strerror or e}") from None


def _depth(obj) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def _parse_json(text: str, what: str):
    def no_constant(name: str):
        raise CheckpointError(f"{what} holds the non-finite number {name} (not JSON)")

    try:
        obj = json.loads(text, parse_constant=no_constant)
    except ValueError as e:  # JSONDecodeError, or an integer with thousands of digits
        raise CheckpointError(f"{what} is not valid JSON ({str(e)[:200]})") from None
    except RecursionError:
        raise CheckpointError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(obj) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return obj


def _table(entries: dict, n_data: int) -> list[tuple[str, str, list[int], int, int]]:
    """Check the tensor table: (name, dtype, shape, begin, end) sorted by offset, tiling the
    data bytes exactly."""
    if len(entries) > MAX_TENSORS:
        raise CheckpointError(f"{len(entries)} tensors, over the limit of {MAX_TENSORS}")
    rows = []
    for name, e in entries.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"bad entry for tensor {name[:80]!r} in the header")
        if not isinstance(e["dtype"], str) or e["dtype"] not in _DTYPES:
            raise CheckpointError(f"tensor {name[:80]!r} has unsupported dtype {str(e['dtype'])[:20]!r}")
        shape, offs = e["shape"], e["data_offsets"]
        if (not isinstance(shape, list) or len(shape) > MAX_TENSOR_DIMS
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise CheckpointError(f"tensor {name[:80]!r} has a malformed shape or offsets")
        begin, end = offs
        size = math.prod(shape) * np.dtype(_DTYPES[e["dtype"]][1]).itemsize  # Python ints: no overflow
        if not (0 <= begin <= end <= n_data) or end - begin != size:
            raise CheckpointError(f"tensor {name[:80]!r}: offsets {offs} do not match shape {shape} and dtype "
                                  f"{e['dtype']} within {n_data} data bytes")
        rows.append((name, e["dtype"], shape, begin, end))
    rows.sort(key=lambda r: (r[3], r[4]))
    pos = 0
    for name, _, _, begin, end in rows:
        if begin != pos:
            what = "overlaps the tensor before it" if begin < pos else f"leaves a gap of {begin - pos} bytes"
            raise CheckpointError(f"tensor {name[:80]!r} at offsets [{begin}, {end}] {what}")
        pos = end
    if pos != n_data:
        raise CheckpointError(f"{n_data - pos} data bytes after the last tensor belong to no tensor")
    return rows


def loads(raw: bytes) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Parse checkpoint bytes into (tensors, our header). Never executes anything."""
    if len(raw) > MAX_FILE_BYTES:
        raise CheckpointError(f"checkpoint is over the {MAX_FILE_BYTES}-byte limit")
    # A pickle starts with 0x80; so may our u64 header length (any length = 128 mod 256): only a
    # file whose first 8 bytes are not a plausible header length followed by "{" is a pickle.
    plausible = len(raw) > 8 and struct.unpack("<Q", raw[:8])[0] <= len(raw) - 8 and raw[8:9] == b"{"
    if not plausible and (raw[:1] == b"\x80" or raw[:4] == b"PK\x03\x04"):
        raise CheckpointError("this is a pickle/torch.save file, not a Bespoke Explorer checkpoint; "
                              "pickles are refused because loading them can run arbitrary code")
    if len(raw) < 8:
        raise CheckpointError(f"file too short to be a checkpoint ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"header length {n} is impossible here: over the limit of {MAX_HEADER_BYTES} bytes")
    if n > len(raw) - 8:
        raise CheckpointError(f"header length {n} is impossible for a {len(raw)}-byte file (truncated or not a checkpoint)")
    try:
        text = raw[8:8 + n].decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"header is not valid UTF-8 ({e})") from None
    entries = _parse_json(text, "header")
    if not isinstance(entries, dict):
        raise CheckpointError("header is not a JSON object")
    meta = entries.pop("__metadata__", None)
    if not isinstance(meta, dict) or not isinstance(meta.get("bespoke"), str):
        raise CheckpointError("no Bespoke Explorer metadata in the header (a foreign safetensors file?)")
    if set(meta) != {"bespoke"}:
        raise CheckpointError(f"unexpected metadata entries {sorted(set(meta) - {'bespoke'})[:3]}")
    header = _parse_json(meta["bespoke"], "metadata")
    if not isinstance(header, dict) or header.get("format") != "bespoke-explorer":
        raise CheckpointError("metadata does not name the bespoke-explorer format")
    if header.get("version") == 1:
        raise CheckpointError("format version 1 (its hash does not cover the header): re-stamp the file "
                              "deliberately with `python scripts/make_assets.py --restamp FILE`")
    if header.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"unsupported format version {str(header.get('version'))[:20]!r} "
                              f"(this code reads {FORMAT_VERSION})")
    data = raw[8 + n:]
    try:
        digest = content_hash(entries, header, data)
    except ValueError:  # NaN / inf in the header: never written by dumps
        raise CheckpointError("metadata holds NaN or infinity") from None
    if digest != header.get("content_hash"):
        raise CheckpointError("content hash mismatch: the header or the tensor data is corrupt or was altered")
    return _tensors(_table(entries, len(data)), data), header


def restamp(raw: bytes, model_ids: Optional[dict[str, str]] = None) -> bytes:
    """Rewrite a checkpoint of format version 1 or 2 under the current format (its hash over the
    header too), keeping tensors and header. `model_ids` maps old model ids to new ones, for
    solvers bound to a re-stamped model. Only for files one trusts: the old hash is checked
    against the tensor bytes (version 1: its header was never covered, so re-stamping vouches for
    it) or the whole file (version 2) first."""
    (n,) = struct.unpack("<Q", raw[:8])
    entries = _parse_json(raw[8:8 + n].decode("utf-8"), "header")
    meta = entries.pop("__metadata__")
    header = _parse_json(meta["bespoke"], "metadata")
    data = raw[8 + n:]
    _table(entries, len(data))
    old = hashlib.sha256(data).hexdigest() if header.get("version") == 1 else content_hash(entries, header, data)
    if old != header.get("content_hash"):
        raise CheckpointError("content hash mismatch: refusing to re-stamp a corrupt or altered file")
    tensors = _tensors(_table(entries, len(data)), data)
    if model_ids and header.get("model_id") in model_ids:
        header = {**header, "model_id": model_ids[header["model_id"]]}
    return dumps(tensors, header, header["kind"])


def content_hash_of_old(raw: bytes) -> str:
    """The content hash a (trusted) file of version 1 or 2 records: its model_id before `restamp`."""
    (n,) = struct.unpack("<Q", raw[:8])
    return str(_parse_json(_parse_json(raw[8:8 + n].decode("utf-8"), "header")["__metadata__"]["bespoke"],
                           "metadata")["content_hash"])


def _tensors(rows: list, data: bytes) -> dict[str, Tensor]:
    out = {}
    for name, code, shape, begin, end in rows:
        np_dtype = np.dtype(_DTYPES[code][1])
        arr = np.frombuffer(data, dtype=np_dtype.newbyteorder("<"), count=(end - begin) // np_dtype.itemsize,
                            offset=begin)
        out[name] = torch.from_numpy(arr.astype(np_dtype).reshape(shape).copy())
    return out


def load(src: Source, kind: str | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read and validate a checkpoint from a path, bytes or a binary file object."""
    tensors, header = loads(_read_source(src))
    if kind is not None and header.get("kind") != kind:
        raise CheckpointError(f"expected a {kind} checkpoint, this file holds a {header.get('kind')!r}")
    return tensors, header
