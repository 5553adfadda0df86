"""A safe checkpoint container: safetensors-compatible bytes, parsed by hand, never unpickled.

Layout (the safetensors format, so `safetensors.safe_open` can read our files too):
    8 bytes  little-endian u64 N = header length
    N bytes  UTF-8 JSON: {name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
                          "__metadata__": {"bespoke": "<JSON string>"}}
    rest     the raw little-endian tensor bytes
Our JSON header (the "bespoke" entry) holds `kind` ("model" or "solver"), the format version,
free metadata, and `content_hash`: the sha256 of the tensor bytes, checked on load.

Every failure on load raises `CheckpointError` with a one-line message naming the problem.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
import torch
from torch import Tensor

FORMAT_VERSION = 1
MAX_HEADER_BYTES = 1 << 20  # 1 MiB of JSON is far more than any real header
MAX_FILE_BYTES = 512 << 20  # refuse anything above 512 MiB

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
    """A checkpoint that cannot be used: corrupt, truncated, foreign, hostile or mismatched."""


def _tensor_bytes(t: Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype not in _TORCH_TO_CODE:
        raise TypeError(f"unsupported tensor dtype {t.dtype}")
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()


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
    ours = {"format": "bespoke-explorer", "version": FORMAT_VERSION, "kind": kind,
            "content_hash": hashlib.sha256(data).hexdigest(), **header}
    entries["__metadata__"] = {"bespoke": json.dumps(ours, sort_keys=True, allow_nan=False)}
    head = json.dumps(entries, sort_keys=True).encode("utf-8")
    head += b" " * (-len(head) % 8)  # safetensors aligns the data to 8 bytes
    return struct.pack("<Q", len(head)) + head + data


def save(path: str | os.PathLike, tensors: dict[str, Tensor], header: dict[str, Any], kind: str) -> str:
    """Write atomically (temp file + rename) and return the content hash."""
    raw = dumps(tensors, header, kind)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, path)
    return loads(raw)[1]["content_hash"]


def _read_source(src: Source) -> bytes:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    if hasattr(src, "read"):
        return src.read(MAX_FILE_BYTES + 1)
    path = Path(src)
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {str(path)!r}")
    if not path.is_file():
        raise CheckpointError(f"not a file: {str(path)!r}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CheckpointError(f"{str(path)!r} is {path.stat().st_size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    return path.read_bytes()


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
    if n > MAX_HEADER_BYTES or n > len(raw) - 8:
        raise CheckpointError(f"header length {n} is impossible for a {len(raw)}-byte file (truncated or not a checkpoint)")
    try:
        entries = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"header is not valid JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(entries, dict):
        raise CheckpointError("header is not a JSON object")
    meta = entries.pop("__metadata__", None)
    if not isinstance(meta, dict) or not isinstance(meta.get("bespoke"), str):
        raise CheckpointError("no Bespoke Explorer metadata in the header (a foreign safetensors file?)")
    try:
        header = json.loads(meta["bespoke"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"metadata is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != "bespoke-explorer":
        raise CheckpointError("metadata does not name the bespoke-explorer format")
    if header.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"unsupported format version {header.get('version')!r} (this code reads {FORMAT_VERSION})")
    data = raw[8 + n:]
    if hashlib.sha256(data).hexdigest() != header.get("content_hash"):
        raise CheckpointError("content hash mismatch: the tensor data is corrupt or was altered")
    tensors: dict[str, Tensor] = {}
    for name, e in entries.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"bad entry for tensor {name!r} in the header")
        if e["dtype"] not in _DTYPES:
            raise CheckpointError(f"tensor {name!r} has unsupported dtype {e['dtype']!r}")
        shape, offs = e["shape"], e["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(d, int) and 0 <= d < 2**31 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)):
            raise CheckpointError(f"tensor {name!r} has a malformed shape or offsets")
        torch_dtype, np_dtype = _DTYPES[e["dtype"]]
        begin, end = offs
        count = int(np.prod(shape)) if shape else 1
        if not (0 <= begin <= end <= len(data)) or end - begin != count * np.dtype(np_dtype).itemsize:
            raise CheckpointError(f"tensor {name!r}: offsets {offs} do not match shape {shape} and dtype "
                                  f"{e['dtype']} within {len(data)} data bytes")
        arr = np.frombuffer(data, dtype=np.dtype(np_dtype).newbyteorder("<"), count=count, offset=begin)
        tensors[name] = torch.from_numpy(arr.astype(np_dtype).reshape(shape).copy())
    return tensors, header


def load(src: Source, kind: str | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read and validate a checkpoint from a path, bytes or a binary file object."""
    tensors, header = loads(_read_source(src))
    if kind is not None and header.get("kind") != kind:
        raise CheckpointError(f"expected a {kind} checkpoint, this file holds a {header.get('kind')!r}")
    return tensors, header
