"""Background jobs: long work (training, ablation sweeps, benchmarks) runs in a thread and
writes into a plain `Job` object that the page reads on every redraw.

Why (design/ECOSYSTEM.md): a loop inside the Streamlit script is aborted by any widget click
and pure torch code cannot be interrupted, so the work lives in a `threading.Thread`; the page
polls the job from an `st.fragment(run_every=...)`. The worker never calls `st.*`.

Jobs are kept in each browser session's own list (explorer/state.py), so switching pages
neither kills nor loses them. At most `MAX_RUNNING` jobs compute at once across the server
(the others wait in "queued"), and torch is limited to `TORCH_THREADS` threads, so the server
keeps a core for answering the browser.
"""
from __future__ import annotations

import atexit
import itertools
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

TORCH_THREADS = max(1, (os.cpu_count() or 2) // 2)  # leave the rest of the machine to the server
MAX_RUNNING = max(1, (os.cpu_count() or 2) // 2)  # jobs computing at once, all sessions together

_slots = threading.BoundedSemaphore(MAX_RUNNING)
_ids = itertools.count(1)
_live: set = set()  # jobs started and not finished, all sessions together (for `shutdown`)
_live_lock = threading.Lock()
SHUTDOWN_WAIT_S = 30.0  # how long the exiting server waits for stopped jobs to save and return
_configured = False

QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"
FINISHED = (DONE, STOPPED, FAILED)


GIL_SWITCH_SECONDS = 0.005  # how soon a waiting thread (the server) gets the GIL from a worker


def configure_torch() -> None:
    """Once per process (the server calls this at start): limit torch's intra-op threads, and
    shorten the interpreter's thread switch interval (5 ms by default) so that the server's
    threads, which hand the GIL back and forth many times per page update, are not starved by a
    worker running a Python-heavy training loop."""
    global _configured
    if not _configured:
        torch.set_num_threads(TORCH_THREADS)
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        _configured = True


@dataclass(eq=False)
class Job:
    """What a worker reports and a page reads.

    kind: "train", "ablation" or "benchmark"; label: what the user sees; params: what was asked
    (JSON-able). The worker appends scalar rows to `history`, puts its latest snapshot (e.g. the
    solver parameters) in `latest`, advances `progress` in [0, 1] and bumps `version` on every
    update so a page can tell that there is something new to draw. `stop` asks the worker to
    finish early (it keeps the best result so far); `finished` is set when it has returned.
    """

    kind: str
    label: str
    params: dict = field(default_factory=dict)
    model_key: str = ""
    id: int = field(default_factory=lambda: next(_ids))
    status: str = QUEUED
    history: list = field(default_factory=list)
    latest: dict = field(default_factory=dict)
    progress: float = 0.0
    message: str = ""
    result: Any = None
    error: Optional[str] = None
    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    ended: Optional[float] = None
    version: int = 0
    harvested: bool = False  # the session has moved the result into its lists

    def report(self, row: dict | None = None, latest: dict | None = None, progress: float | None = None,
               message: str | None = None) -> None:
        """Called by the worker: record one update (any of a history row, a snapshot, progress)."""
        if row is not None:
            self.history.append(row)
        if latest is not None:
            self.latest = latest
        if progress is not None:
            self.progress = float(min(max(progress, 0.0), 1.0))
        if message is not None:
            self.message = message
        self.version += 1

    @property
    def is_finished(self) -> bool:
        return self.finished.is_set()

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.time()) - self.started


Worker = Callable[[Job], Any]


def _run(job: Job, work: Worker) -> None:
    try:
        _run_in_slot(job, work)
    finally:
        with _live_lock:
            _live.discard(job)


def _run_in_slot(job: Job, work: Worker) -> None:
    # Wait for a free slot, but let a queued job be cancelled.
    while not _slots.acquire(timeout=0.1):
        if job.stop.is_set():
            job.status, job.message, job.ended = STOPPED, "cancelled before it started", time.time()
            job.version += 1
            job.finished.set()
            return
    try:
        configure_torch()
        job.status, job.started = RUNNING, time.time()
        job.version += 1
        job.result = work(job)
        job.status = STOPPED if job.stop.is_set() else DONE
        job.progress = 1.0 if job.status == DONE else job.progress
    except Exception as e:  # the page shows the message; the traceback goes to the server log
        job.error = readable_error(e)
        job.status = FAILED
        partial = getattr(e, "result", None)  # e.g. NonFiniteLossError keeps the best-validation solver
        if partial is not None and job.result is None:
            job.result = partial
        traceback.print_exc()
    finally:
        _slots.release()
        job.ended = time.time()
        job.version += 1
        job.finished.set()


def start(job: Job, work: Worker) -> Job:
    """Run `work(job)` in a daemon thread; its return value becomes `job.result`."""
    with _live_lock:
        _live.add(job)
    threading.Thread(target=_run, args=(job, work), name=f"job-{job.id}-{job.kind}", daemon=True).start()
    return job


def shutdown(timeout: float = SHUTDOWN_WAIT_S) -> list[Job]:
    """Stop every unfinished job and wait (up to `timeout` s in all) until each has returned: a
    training worker then saves its run as "stopped" (explorer/workers.py). Registered with
    atexit, so a server stopped by SIGTERM or Ctrl-C ends its training threads cleanly instead
    of exiting under them (which aborted the process: "terminate called without an active
    exception") and loses no run. Returns the jobs it stopped."""
    with _live_lock:
        live = [j for j in _live if not j.is_finished]
    for j in live:
        j.stop.set()
    deadline = time.time() + timeout
    for j in live:
        j.finished.wait(max(0.0, deadline - time.time()))
    return live


atexit.register(shutdown)


def readable_error(e: BaseException) -> str:
    """One line for the user: the exception's own message, prefixed by its kind."""
    msg = str(e).strip() or repr(e)
    return f"{type(e).__name__}: {msg.splitlines()[0] if msg else ''}"
