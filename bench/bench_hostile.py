"""Hostile checkpoints: how much memory and time refusing each one costs.

    python bench/bench_hostile.py            # one fresh process per file; prints a table

Each file is built here from a shipped model (assets/) or a tiny solver for it, the way an
attacker would: the content hash is recomputed after the change (it is a checksum, not a
signature), so only the loader's own checks stand between the file and the allocation. Every
file is loaded in a fresh Python process (`core.load_model` or `core.solvers.learned.load_solver`)
and the table shows that process's peak resident memory (ru_maxrss; the interpreter with torch
imported is most of it), the wall time and the one-line refusal. tests/test_safety_checkpoint.py
runs the same builders and asserts every refusal stays under 1 GB.
"""
from __future__ import annotations

import functools
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHIPPED = ROOT / "assets" / "checkerboard_fm-ot.safetensors"


def split(raw: bytes) -> tuple[dict, dict, bytes]:
    """(tensor table, our header, data bytes) of checkpoint bytes, without any check."""
    (n,) = struct.unpack("<Q", raw[:8])
    entries = json.loads(raw[8:8 + n])
    header = json.loads(entries.pop("__metadata__")["bespoke"])
    return entries, header, raw[8 + n:]


def forge(entries: dict, header: dict, data: bytes, rehash: bool = True) -> bytes:
    """Checkpoint bytes from a table, a header and data; `rehash`: recompute the content hash as
    an attacker can (else the header keeps whatever hash it holds)."""
    from core.checkpoint import content_hash
    header = dict(header)
    if rehash:
        header["content_hash"] = content_hash(entries, header, data)
    head = json.dumps({**entries, "__metadata__": {"bespoke": json.dumps(header)}}).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data


def solver_bytes(family: str = "bns", nfe: int = 4) -> bytes:
    """A real learned solver (untrained) bound to the shipped model."""
    from core import load_model
    from core.solvers.learned import solver_to_bytes
    field = load_model(SHIPPED)
    if family == "bns":
        from core.solvers.bns import BNSSolver
        solver = BNSSolver.from_config({"n": nfe, "path": field.path.to_dict()})
    else:
        from core.solvers.bespoke import BespokeSolver
        solver = BespokeSolver(2 if family == "rk2-bespoke" else 1, nfe // (2 if family == "rk2-bespoke" else 1))
    return solver_to_bytes(solver, field)


def _with(raw: bytes, fn: Callable[[dict, dict], None], data: bytes | None = None) -> bytes:
    entries, header, old = split(raw)
    fn(entries, header)
    return forge(entries, header, old if data is None else data)


def _nested(depth: int) -> bytes:
    """A model file whose metadata holds a list nested `depth` deep (hash left as it was)."""
    entries, header, data = split(SHIPPED.read_bytes())
    text = json.dumps(header)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    head = json.dumps({**entries, "__metadata__": {"bespoke": text}}).encode()
    return struct.pack("<Q", len(head)) + head + data


@functools.lru_cache(maxsize=1)
def hostile_files() -> dict[str, tuple[str, bytes]]:
    """name -> (loader "model" or "solver", bytes). Every one must be refused."""
    model = SHIPPED.read_bytes()
    bns, rk2 = solver_bytes("bns"), solver_bytes("rk2-bespoke")

    def bns_n(e, h):
        h["config"]["n"] = 20000
        h["nfe"] = 20000

    def rk_steps(e, h):
        h["config"]["n_steps"] = 10**9
        h["nfe"] = 2 * 10**9

    def big_shape(e, h):  # one tensor claims 2^31 x 2^31 floats
        name = sorted(e)[0]
        e[name]["shape"] = [2**31 - 1, 2**31 - 1]

    def overflow_shape(e, h):  # 2^30 * 2^30 * 16 wraps to 0 in int64
        name = sorted(e)[0]
        e[name]["shape"] = [2**30, 2**30, 16]
        e[name]["data_offsets"] = [0, 0]

    def overlap(e, h):  # two tensors of one size on the same bytes (the other's bytes left as a gap)
        by_size: dict = {}
        for k, v in sorted(e.items()):
            by_size.setdefault(v["data_offsets"][1] - v["data_offsets"][0], []).append(k)
        a, b = next(names for names in by_size.values() if len(names) > 1)[:2]
        e[b]["data_offsets"] = list(e[a]["data_offsets"])

    def no_model_id(e, h):
        h["model_id"] = None

    def many_tensors(e, h):
        for i in range(5000):
            e[f"t{i}"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}

    def arch_huge(e, h):
        h["arch_args"] = {**h["arch_args"], "hidden": 10**9}

    return {
        "BNS n = 20000 (1.2 KB file)": ("solver", _with(bns, bns_n)),
        "RK2-Bespoke n_steps = 1e9": ("solver", _with(rk2, rk_steps)),
        "solver without model_id": ("solver", _with(bns, no_model_id)),
        "tensor shape 2^31 x 2^31": ("model", _with(model, big_shape)),
        "shape product overflows int64": ("model", _with(model, overflow_shape)),
        "overlapping data_offsets": ("model", _with(model, overlap)),
        "5000 extra empty tensors": ("model", _with(model, many_tensors)),
        "arch hidden = 1e9": ("model", _with(model, arch_huge)),
        "metadata nested 100000 deep": ("model", _nested(100_000)),
        "metadata nested 20 deep": ("model", _nested(20)),
    }


CHILD = r"""
import resource, sys, time
sys.path.insert(0, sys.argv[1])
from core.checkpoint import CheckpointError
raw = open(sys.argv[3], "rb").read()
t = time.perf_counter()
try:
    if sys.argv[2] == "model":
        from core import load_model
        load_model(raw)
    else:
        from core.solvers.learned import load_solver
        load_solver(raw)
    msg = "ACCEPTED"
except CheckpointError as e:
    msg = "refused: " + str(e)
except BaseException as e:
    msg = "CRASH " + type(e).__name__ + ": " + str(e)[:200]
dt = time.perf_counter() - t
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, dt, msg.replace(chr(10), " "), sep="\t")
"""


def refuse_in_child(kind: str, raw: bytes, tmp: Path, timeout: float = 120) -> dict:
    """Load one file in a fresh process: {"peak_mib", "seconds", "message"}."""
    f = tmp / "hostile.safetensors"
    f.write_bytes(raw)
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), kind, str(f)], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rss_kib, seconds, message = out.stdout.strip().split("\t", 2)
    return {"peak_mib": int(rss_kib) / 1024, "seconds": float(seconds), "message": message,
            "bytes": len(raw)}


def main() -> None:
    import tempfile
    rows = []
    with tempfile.TemporaryDirectory() as d:
        base = refuse_in_child("model", SHIPPED.read_bytes(), Path(d))
        rows.append(("the shipped model itself (accepted)", base))
        for name, (kind, raw) in hostile_files().items():
            rows.append((name, refuse_in_child(kind, raw, Path(d))))
    print("| hostile file | size | peak RSS (MiB) | seconds to refuse | message |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['bytes']:,} B | {r['peak_mib']:.0f} | {r['seconds']:.3f} | {r['message'][:90]} |")


if __name__ == "__main__":
    main()
