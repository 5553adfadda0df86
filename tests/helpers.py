"""Helpers shared by several test files (plain functions, not fixtures)."""
import contextlib
import re
import time

import torch

from core.cli import main


def run(capsys, *argv):
    """Run the command line in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def fails(capsys, match, *argv) -> float:
    """The command exits 2 with ONE line on stderr, "error: ..." matching `match`, no traceback.
    Returns the seconds it took (refusals must come before any expensive work)."""
    start = time.perf_counter()
    code, out, err = run(capsys, *argv)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert re.search(match, lines[0]), lines[0]
    return time.perf_counter() - start


def perturbed(solver, scale=0.05, seed=1):
    """A solver moved away from its initialisation (what training does), so that equalities
    between two ways of running it are not trivially those of the base solver."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in solver.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return solver


@contextlib.contextmanager
def one_torch_thread():
    """One torch thread for the block: a U-Net on 2 busy cores ran up to 80x slower with 2 threads
    (threads waiting for each other at every operation; measured: midpoint, NFE 8, 6 samples,
    0.5 s vs 42 s). The MNIST test modules wrap themselves in it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
