"""Hostile checkpoints (issue 10, items 1-3 and 6): every one is refused with one line, before
anything large is allocated, and a bounded fuzz loop over a shipped model and a solver file finds
no traceback, no hang and no silently accepted change."""
import json
import math
import random
import re
import struct
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch

from bench.bench_hostile import ROOT, SHIPPED, forge, hostile_files, solver_bytes, split
from core import checkpoint, load_model
from core.checkpoint import CheckpointError
from core.limits import MAX_NFE, MAX_WEIGHT_ABS
from core.solvers.learned import load_solver


def _refused(loader, raw, match):
    with pytest.raises(CheckpointError, match=match) as e:
        loader(raw)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.fixture(scope="module")
def field():
    return load_model(SHIPPED)


@pytest.fixture(scope="module")
def bns_raw():
    return solver_bytes("bns", 4)


# --- item 1: sizes from the header are capped before anything is built -----------------------

@pytest.mark.parametrize("name", list(hostile_files()))
def test_every_hostile_file_is_refused_with_one_line(name):
    kind, raw = hostile_files()[name]
    loader = load_model if kind == "model" else load_solver
    _refused(loader, raw, ".")


def test_memory_bomb_solvers_refused_by_their_caps(bns_raw):
    files = hostile_files()
    assert len(files["BNS n = 20000 (1.2 KB file)"][1]) < 1200
    msg = _refused(load_solver, files["BNS n = 20000 (1.2 KB file)"][1], "20000")
    assert str(MAX_NFE) in msg
    _refused(load_solver, files["RK2-Bespoke n_steps = 1e9"][1], str(MAX_NFE))


def test_peak_memory_while_refusing_hostile_files_stays_under_1_gb(tmp_path):
    """One fresh process loads every hostile file in turn; its peak RSS (torch included) < 1 GB.
    Before the caps, the BNS n = 20000 file alone took the CLI to 4.9 GB."""
    paths = []
    for i, (name, (kind, raw)) in enumerate(hostile_files().items()):
        f = tmp_path / f"h{i}.safetensors"
        f.write_bytes(raw)
        paths.append((kind, str(f)))
    child = (
        "import json, resource, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from core import load_model\n"
        "from core.checkpoint import CheckpointError\n"
        "from core.solvers.learned import load_solver\n"
        "out = []\n"
        "for kind, path in json.loads(sys.argv[2]):\n"
        "    try:\n"
        "        (load_model if kind == 'model' else load_solver)(open(path, 'rb').read())\n"
        "        out.append('ACCEPTED')\n"
        "    except CheckpointError:\n"
        "        out.append('refused')\n"
        "print(json.dumps({'peak_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 'out': out}))\n")
    res = subprocess.run([sys.executable, "-c", child, str(ROOT), json.dumps(paths)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads(res.stdout.strip().splitlines()[-1])
    assert rep["out"] == ["refused"] * len(paths)
    assert rep["peak_kib"] / 1024 < 1024, f"peak RSS {rep['peak_kib'] / 1024:.0f} MiB"


def test_shape_product_is_computed_without_overflow():
    raw = hostile_files()["shape product overflows int64"][1]
    _refused(checkpoint.loads, raw, "do not match shape")


# --- item 2: deeply nested JSON ---------------------------------------------------------------

@pytest.mark.parametrize("depth", [20, 5000, 200_000])
def test_deeply_nested_header_is_a_checkpoint_error(depth):
    entries, header, data = split(SHIPPED.read_bytes())
    text = json.dumps(header)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    head = json.dumps({**entries, "__metadata__": {"bespoke": text}}).encode()
    raw = struct.pack("<Q", len(head)) + head + data
    _refused(checkpoint.loads, raw, "nests deeper than")
    outer = b'{"a":' * min(depth, 100_000) + b"1" + b"}" * min(depth, 100_000)
    _refused(checkpoint.loads, struct.pack("<Q", len(outer)) + outer, "nests deeper than")


def test_a_header_that_is_not_the_flat_table_is_refused():
    entries, header, data = split(SHIPPED.read_bytes())
    name = sorted(entries)[0]
    for bad in ([1, 2], {"dtype": "F32"}, {**entries[name], "extra": 1}, "x"):
        e2 = {**entries, name: bad}
        _refused(checkpoint.loads, forge(e2, header, data), "bad entry|malformed")
    head = json.dumps({**entries, "__metadata__": {"bespoke": json.dumps(header), "other": "x"}}).encode()
    _refused(checkpoint.loads, struct.pack("<Q", len(head)) + head + data, "unexpected metadata")


# --- item 3: the hash covers everything that changes behaviour ---------------------------------

@pytest.mark.parametrize("change", [
    lambda h: h.update(path={"name": "fm-cs"}),
    lambda h: h["data"].update(range=8.0),
    lambda h: h.update(prediction="x1"),
    lambda h: h.update(seed=1),
])
def test_changing_the_header_without_rehashing_is_refused(change):
    entries, header, data = split(SHIPPED.read_bytes())
    change(header)
    _refused(load_model, forge(entries, header, data, rehash=False), "content hash mismatch")


def test_changing_the_tensor_table_without_rehashing_is_refused():
    entries, header, data = split(SHIPPED.read_bytes())
    by_size = {}
    for k, v in sorted(entries.items()):
        by_size.setdefault(v["data_offsets"][1] - v["data_offsets"][0], []).append(k)
    a, b = next(n for n in by_size.values() if len(n) > 1)[:2]
    entries[a]["data_offsets"], entries[b]["data_offsets"] = entries[b]["data_offsets"], entries[a]["data_offsets"]
    _refused(load_model, forge(entries, header, data, rehash=False), "content hash mismatch")


def test_overlapping_and_gapped_offsets_are_refused_even_with_a_valid_hash():
    _refused(load_model, hostile_files()["overlapping data_offsets"][1], "overlaps|gap")
    entries, header, data = split(SHIPPED.read_bytes())
    _refused(load_model, forge(entries, header, data + b"\0" * 8), "belong to no tensor")
    last = max(entries, key=lambda k: entries[k]["data_offsets"][1])
    first = min(entries, key=lambda k: entries[k]["data_offsets"][0])
    e2 = json.loads(json.dumps(entries))
    n = e2[first]["data_offsets"][1]
    for k in e2:  # shift every tensor by 4 bytes: a gap at the start
        e2[k]["data_offsets"] = [o + 4 for o in e2[k]["data_offsets"]]
    assert n and last
    _refused(load_model, forge(e2, header, b"\0" * 4 + data), "gap")


def test_a_solver_without_a_model_binding_is_refused(bns_raw, field):
    entries, header, data = split(bns_raw)
    for bad in (None, "", 5):
        h = {**header, "model_id": bad}
        _refused(lambda r: load_solver(r, field=field), forge(entries, h, data), "model_id missing")
    del header["model_id"]
    _refused(load_solver, forge(entries, header, data), "model_id missing")


def test_the_model_id_is_the_hash_of_header_and_weights(field, bns_raw):
    """The same weights under another header are another model: its solvers do not carry over."""
    entries, header, data = split(SHIPPED.read_bytes())
    header["path"] = {"name": "fm-cs"}
    other = load_model(forge(entries, header, data))
    assert other.model_id != field.model_id
    solver, _ = load_solver(bns_raw, field=field)
    with pytest.raises(CheckpointError, match="trained for model"):
        load_solver(bns_raw, field=other)


def test_format_1_is_refused_and_restamp_rewrites_it(tmp_path):
    import hashlib
    entries, header, data = split(SHIPPED.read_bytes())
    header.update(version=1, content_hash=hashlib.sha256(data).hexdigest())
    v1 = forge(entries, header, data, rehash=False)
    _refused(checkpoint.loads, v1, "format version 1.*--restamp")
    tensors, h2 = checkpoint.loads(checkpoint.restamp(v1))
    ref_t, ref_h = checkpoint.loads(SHIPPED.read_bytes())
    assert h2 == ref_h and all(torch.equal(tensors[k], ref_t[k]) for k in ref_t)
    altered = bytearray(v1)
    altered[-1] ^= 1  # a weight changed after its v1 hash: restamp refuses it
    with pytest.raises(CheckpointError, match="hash mismatch"):
        checkpoint.restamp(bytes(altered))


# --- item 6: the load check probes every class and several times ------------------------------

DIGITS = ROOT / "assets" / "digits_fm-ot.safetensors"


def _digits_with(fn):
    tensors, header = checkpoint.loads(DIGITS.read_bytes())
    fn(tensors)
    extra = {k: v for k, v in header.items() if k not in ("format", "version", "kind", "content_hash")}
    return checkpoint.dumps(tensors, extra, "model")


def test_nan_in_one_class_embedding_is_refused():
    def poison(t):
        emb = next(k for k in t if "emb" in k and t[k].dim() == 2 and t[k].shape[0] == 11)
        t[emb][7, 0] = math.nan
    _refused(load_model, _digits_with(poison), "not finite")


def test_one_huge_weight_is_refused():
    def poison(t):
        t[sorted(t)[0]].view(-1)[0] = 3e38
    _refused(load_model, _digits_with(poison), re.escape(f"over the limit of {MAX_WEIGHT_ABS:g}"))


def test_the_probe_catches_a_class_that_blows_up():
    """The probe runs every class: a network broken for class 3 only is named (the old probe ran class 0)."""
    from core.model_io import _probe, load_network
    net, info = load_network(DIGITS)
    emb = next(m for m in net.modules() if isinstance(m, torch.nn.Embedding))
    with torch.no_grad():
        emb.weight[3].fill_(math.inf)
    with pytest.raises(CheckpointError, match=r"for class\(es\) \[3\]"):
        _probe(net, info)


# --- the fuzz loop -------------------------------------------------------------------------------

JSON_BYTES = b'{}[]",:0123456789-.eE tfnul\\ '


def _mutate(rng: random.Random, raw: bytes, header_len: int) -> bytes:
    b = bytearray(raw)
    op = rng.randrange(6)
    in_header = rng.random() < 0.6
    pos = rng.randrange(8, 8 + header_len) if in_header else rng.randrange(len(b))
    if op == 0:  # flip bits
        for _ in range(rng.randint(1, 4)):
            p = rng.randrange(8, 8 + header_len) if in_header else rng.randrange(len(b))
            b[p] ^= 1 << rng.randrange(8)
    elif op == 1:  # a JSON-significant character
        b[pos] = rng.choice(JSON_BYTES)
    elif op == 2:  # truncate
        del b[pos:]
    elif op == 3:  # insert
        b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif op == 4:  # delete
        del b[pos:pos + rng.randint(1, 8)]
    else:  # the header length
        b[rng.randrange(8)] = rng.randrange(256)
    return bytes(b)


HOSTILE_VALUES = [None, True, -1, 0, 10**30, 1e308, -1e-308, "x" * 1000, [], {}, [[[[[[[[[[1]]]]]]]]]], "fm-cs",
                  2**31, 129, 20000, "NaN"]


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list) and obj and len(obj) < 64:
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))
    else:
        yield path


def _set(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def _rehashed_mutation(rng: random.Random, raw: bytes) -> bytes:
    """What an attacker writes: a header or table value replaced, the hash recomputed."""
    entries, header, data = split(raw)
    target = rng.choice([entries, header])
    leaves = [p for p in _leaves(target) if p and p[0] != "content_hash"]
    _set(target, rng.choice(leaves), rng.choice(HOSTILE_VALUES))
    try:
        return forge(entries, header, data)
    except (ValueError, TypeError):  # e.g. NaN is not JSON: write it unhashed
        return forge(entries, header, data, rehash=False)


def test_fuzz_shipped_model_and_solver_file(field, bns_raw):
    """Hundreds of mutations: each is refused with one line (CheckpointError) or, for raw byte
    changes, accepted only when it decodes to the very same checkpoint (JSON whitespace);
    never a traceback, never a hang."""
    rng = random.Random(0)
    stats = Counter()
    start = time.perf_counter()
    slowest = 0.0
    for kind, raw, loader in (("model", SHIPPED.read_bytes(), load_model),
                              ("solver", bns_raw, lambda r: load_solver(r, field=field))):
        ref_t, ref_h = checkpoint.loads(raw)
        (hlen,) = struct.unpack("<Q", raw[:8])
        cases = [("raw", _mutate(rng, raw, hlen)) for _ in range(300)]
        cases += [("rehashed", _rehashed_mutation(rng, raw)) for _ in range(120)]
        for how, m in cases:
            if m == raw:
                continue
            t0 = time.perf_counter()
            try:
                loader(m)
            except CheckpointError as e:
                assert "\n" not in str(e)
                stats[f"{kind} {how} refused"] += 1
            else:
                if how == "raw":  # a changed byte was accepted: it must not change anything
                    t, h = checkpoint.loads(m)
                    assert h == ref_h and set(t) == set(ref_t) and all(torch.equal(t[k], ref_t[k]) for k in t), \
                        "a changed behaviour-relevant byte was accepted"
                stats[f"{kind} {how} accepted"] += 1
            slowest = max(slowest, time.perf_counter() - t0)
    assert slowest < 10, f"one load took {slowest:.1f} s"
    assert time.perf_counter() - start < 240
    assert stats["model raw refused"] > 250 and stats["solver raw refused"] > 250, stats
    assert stats["model rehashed refused"] > 50 and stats["solver rehashed refused"] > 50, stats
