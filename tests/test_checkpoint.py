"""core.checkpoint's format is stable and its re-stamping is exact: a shipped file written by an
earlier run still verifies, a current file re-stamps to the same bytes, a format-1 file (hash over
the tensor bytes only) is refused by load and re-stamped deliberately."""
import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch

from core import checkpoint
from core.checkpoint import CheckpointError

ASSET = Path(__file__).resolve().parents[1] / "assets" / "checkerboard_fm-ot.safetensors"


def _small() -> bytes:
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1.5], dtype=torch.float64)}
    return checkpoint.dumps(tensors, {"model_id": "m-old", "note": "x"}, "solver")


def _with_header(raw: bytes, edit) -> bytes:
    """The same file with our JSON header changed by `edit(header) -> header`."""
    (n,) = struct.unpack("<Q", raw[:8])
    entries = json.loads(raw[8:8 + n])
    header = edit(json.loads(entries["__metadata__"]["bespoke"]))
    entries["__metadata__"]["bespoke"] = json.dumps(header, sort_keys=True)
    head = json.dumps(entries, sort_keys=True).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + raw[8 + n:]


def test_a_shipped_file_still_verifies():
    """The hash in a file written by an earlier run is recomputed from its bytes on load: any change
    to how the hash is computed (canonical JSON, field order, tensor bytes) fails here."""
    tensors, header = checkpoint.load(ASSET)
    assert header["kind"] == "model" and header["version"] == checkpoint.FORMAT_VERSION
    assert len(header["content_hash"]) == 64 and tensors


def test_content_hash_is_sha256_of_canonical_header_table_and_data():
    raw = _small()
    (n,) = struct.unpack("<Q", raw[:8])
    entries = json.loads(raw[8:8 + n])
    header = json.loads(entries.pop("__metadata__")["bespoke"])
    data = raw[8 + n:]
    assert checkpoint.content_hash(entries, header, data) == header["content_hash"]
    # the canonical JSON is compact and key-sorted: a different spacing would be another hash
    assert checkpoint._canonical({"b": [1, 2], "a": "x"}) == b'{"a":"x","b":[1,2]}'


def test_restamp_of_a_current_file_is_the_same_file():
    raw = _small()
    assert checkpoint.restamp(raw) == raw
    assert checkpoint.content_hash_of_old(raw) == checkpoint.loads(raw)[1]["content_hash"]
    moved = checkpoint.loads(checkpoint.restamp(raw, {"m-old": "m-new"}))[1]
    assert moved["model_id"] == "m-new" and moved["note"] == "x"
    assert checkpoint.loads(checkpoint.restamp(raw, {"other": "m-new"}))[1]["model_id"] == "m-old"


def test_format_1_is_refused_by_load_and_restamped_deliberately():
    raw = _small()
    (n,) = struct.unpack("<Q", raw[:8])
    v1 = _with_header(raw, lambda h: {**h, "version": 1, "content_hash": hashlib.sha256(raw[8 + n:]).hexdigest()})
    with pytest.raises(CheckpointError, match=r"format version 1 .*`python scripts/make_assets.py --restamp FILE`"):
        checkpoint.loads(v1)
    assert checkpoint.content_hash_of_old(v1) == hashlib.sha256(raw[8 + n:]).hexdigest()
    assert checkpoint.restamp(v1) == raw  # same tensors and header, the current hash
    bad = _with_header(raw, lambda h: {**h, "version": 1})  # a version-2 hash is not a version-1 hash
    with pytest.raises(CheckpointError, match="refusing to re-stamp"):
        checkpoint.restamp(bad)
    altered = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(CheckpointError, match="refusing to re-stamp"):
        checkpoint.restamp(altered)


def _with_table(raw: bytes, edit) -> bytes:
    """The same file with its tensor table (the safetensors entries) changed by `edit(entries)`
    and the content hash recomputed, so that the table's own checks are what refuses it."""
    (n,) = struct.unpack("<Q", raw[:8])
    entries = json.loads(raw[8:8 + n])
    meta = json.loads(entries.pop("__metadata__")["bespoke"])
    entries = edit(entries)
    meta["content_hash"] = checkpoint.content_hash(entries, meta, raw[8 + n:])
    entries["__metadata__"] = {"bespoke": json.dumps(meta, sort_keys=True)}
    head = json.dumps(entries, sort_keys=True).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + raw[8 + n:]


def test_table_errors_name_the_tensor_and_the_fault():
    def dtype(e):
        e["w"]["dtype"] = "C64"
        return e

    with pytest.raises(CheckpointError, match=r"tensor 'w' has unsupported dtype 'C64'"):
        checkpoint.loads(_with_table(_small(), dtype))

    def overlap(e):  # b holds bytes [0, 8], w [8, 32]: w moved onto b's bytes
        e["w"]["data_offsets"] = [0, 24]
        return e

    with pytest.raises(CheckpointError, match=r"tensor 'w' at offsets \[0, 24\] overlaps the tensor before it"):
        checkpoint.loads(_with_table(_small(), overlap))


def test_an_empty_tensor_round_trips():
    raw = checkpoint.dumps({"e": torch.zeros(0, 3), "w": torch.ones(2)}, {"model_id": "m"}, "solver")
    tensors, _ = checkpoint.loads(raw)
    assert tensors["e"].shape == (0, 3) and torch.equal(tensors["w"], torch.ones(2))


def test_dumps_names_what_it_cannot_write():
    with pytest.raises(TypeError, match=r"checkpoint entry 'x' is a list, not a tensor"):
        checkpoint.dumps({"x": [1, 2]}, {}, "solver")
    with pytest.raises(TypeError, match=r"unsupported tensor dtype torch.complex64"):
        checkpoint.dumps({"x": torch.zeros(2, dtype=torch.complex64)}, {}, "solver")


def test_state_dict_hash_follows_the_values():
    torch.manual_seed(0)
    a = torch.nn.Linear(2, 2)
    b = torch.nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())
    assert checkpoint.state_dict_hash(a) == checkpoint.state_dict_hash(b)
    with torch.no_grad():
        b.weight[0, 0] += 1.0
    assert checkpoint.state_dict_hash(a) != checkpoint.state_dict_hash(b)


def test_metadata_must_name_the_format_and_the_size_limit_is_inclusive(monkeypatch):
    for meta in ({"format": "other", "version": 2}, ["bespoke-explorer"]):
        raw = _with_header(_small(), lambda h, meta=meta: meta)
        with pytest.raises(CheckpointError, match="metadata does not name the bespoke-explorer format"):
            checkpoint.loads(raw)
    raw = _small()
    monkeypatch.setattr(checkpoint, "MAX_FILE_BYTES", len(raw))  # a file of exactly the limit is read
    assert checkpoint.loads(raw)[1]["model_id"] == "m-old"
    monkeypatch.setattr(checkpoint, "MAX_FILE_BYTES", len(raw) - 1)
    with pytest.raises(CheckpointError, match=f"over the {len(raw) - 1}-byte limit"):
        checkpoint.loads(raw)


def test_a_file_over_the_size_limit_is_named(tmp_path, monkeypatch):
    f = tmp_path / "big.safetensors"
    f.write_bytes(_small())
    monkeypatch.setattr(checkpoint, "MAX_FILE_BYTES", 10)
    with pytest.raises(CheckpointError, match=rf"^'{f}' is {f.stat().st_size} bytes, over the 10-byte limit$"):
        checkpoint.load(f)
