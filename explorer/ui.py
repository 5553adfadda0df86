"""Shared page pieces: the teaching header, the sidebar, the solver picker, readable errors,
number formatting."""
from __future__ import annotations

import math
from typing import Optional

import streamlit as st

from . import state
from .state import SolverEntry

PAGES = {
    "model": "pages/model.py", "train": "pages/train.py", "schedules": "pages/schedules.py",
    "paths": "pages/paths.py", "samples": "pages/samples.py", "ablations": "pages/ablations.py",
    "benchmark": "pages/benchmark.py",
}


def header(title: str, text: str, formula: Optional[str] = None, try_this: Optional[str] = None) -> None:
    """Page title, a few sentences on what the user is looking at, the key formula, what to try."""
    st.title(title)
    st.markdown(text)
    if formula:
        st.latex(formula)
    if try_this:
        st.caption(f"Try this: {try_this}")


def fmt(v: float, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}g}"


def metric_line(rmse: float, psnr: float) -> str:
    return f"RMSE {fmt(rmse, 3)} · PSNR {fmt(psnr, 3)} dB"


def sidebar() -> None:
    """The chosen model and the session's work, on every page. The job count redraws itself
    every second while a job is queued or running, so it follows the jobs' real state."""
    with st.sidebar:
        st.caption("Model")
        st.markdown(f"**{state.current_label()}**")
        field = state.current_field()
        n_solvers = len(state.solvers(field))

        @st.fragment(run_every=1.0 if state.active_jobs() else None)
        def work_line() -> None:
            st.caption(f"{n_solvers} learned solver(s) for this model · {jobs_line(state.session_jobs())}")

        work_line()


def jobs_line(jobs: list) -> str:
    """'1 job running, 2 queued' from the jobs' status (explorer/jobs.py)."""
    from .jobs import QUEUED, RUNNING

    running = sum(j.status == RUNNING for j in jobs)
    queued = sum(j.status == QUEUED for j in jobs)
    return f"{running} job(s) running" + (f", {queued} queued" if queued else "")


def solver_picker(field, key: str, label: str = "Learned solver", allow_none: bool = False) -> Optional[SolverEntry]:
    """Pick one of the session's solvers for the current model; tells the user how to get one."""
    rows = state.solvers(field)
    if not rows:
        st.info("No learned solver for this model yet: train one on the **Train** page (or upload one there). "
                "Until then this page shows the built-in solvers only.")
        st.page_link(PAGES["train"], label="Go to Train", icon=":material/model_training:")
        return None
    options = ([None] if allow_none else []) + [r.id for r in rows]
    by_id = {r.id: r for r in rows}
    k = state.kept(key, rows[-1].id)
    if st.session_state[k] not in options:
        st.session_state[k] = rows[-1].id
    chosen = st.selectbox(label, options, key=k,
                          format_func=lambda i: "none" if i is None else by_id[i].label)
    return None if chosen is None else by_id[chosen]


def show_error(message: str) -> None:
    st.error(message, icon=":material/error:")
