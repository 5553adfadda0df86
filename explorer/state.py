"""Per-browser-session state that outlives a page: the chosen model, uploaded models, the
session's solvers, its background jobs and their results. Kept in non-widget
`st.session_state` keys (widgets reset when the user leaves their page; these do not).

Models are cached once per process with st.cache_resource (shared, never copied), keyed by a
hashable model key; sample arrays with st.cache_data, keyed by that key plus a solver digest.
"""
from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field as dc_field
from typing import Any, Optional

import streamlit as st

from core.solvers.learned import LearnedSolver, solver_to_bytes

from . import jobs as jobs_mod
from .models import ModelEntry, ModelLoadError, catalogue, load_entry, shipped_solver_files, upload_key

MODEL_KEY = "model_key"
UPLOADS = "uploaded_models"  # key -> (file name, bytes)
SOLVERS = "solvers"  # list[SolverEntry]
JOBS = "jobs"  # list[jobs.Job]
ABLATIONS = "ablations"  # list[dict]: finished sweeps
BENCHMARKS = "benchmarks"  # list[dict]: finished benchmark runs
KEPT = "_kept_widgets"  # widget values kept across page switches
GUIDANCE = "guidance"  # model key -> the classifier-free guidance scale chosen for it
SOLVER_NUMBER = "solver_number"  # how many solvers this session has numbered (#1, #2, ...)
HIDDEN = "hidden_shipped"  # ids of shipped solvers this session removed from its list

_solver_ids = itertools.count(1)


@dataclass(eq=False)
class SolverEntry:
    """A learned solver in the session's list."""

    label: str
    solver: LearnedSolver
    model_id: str
    guidance: Optional[float]  # the guidance scale of the field it was trained for
    source: str  # "trained" or "uploaded"
    spec: dict = dc_field(default_factory=dict)  # SolverSpec fields (trained) or the file's header
    best: dict = dc_field(default_factory=dict)  # best validation metrics
    history: list = dc_field(default_factory=list)
    summary: dict = dc_field(default_factory=dict)
    note: str = ""
    file_digest: str = ""  # sha256 of the uploaded file it came from (uploads only)
    id: int = dc_field(default_factory=lambda: next(_solver_ids))
    created: float = dc_field(default_factory=time.time)

    @property
    def family(self) -> str:
        return getattr(self.solver, "family_name", self.solver.family)

    @property
    def digest(self) -> str:
        """A content hash of the parameters: the cache key of everything computed from it."""
        h = hashlib.sha256(self.family.encode())
        for k, v in sorted(self.solver.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().double().numpy().tobytes())
        return h.hexdigest()[:16]

    def to_bytes(self, field) -> bytes:
        return solver_to_bytes(self.solver, field, extra={"label": self.label, "best": self.best, **self.summary})


def init() -> None:
    """Create the session's keys once (safe to call on every run)."""
    ss = st.session_state
    for key, default in ((UPLOADS, {}), (SOLVERS, []), (JOBS, []), (ABLATIONS, []), (BENCHMARKS, []), (KEPT, {}),
                         (GUIDANCE, {}), (SOLVER_NUMBER, 0), (HIDDEN, set())):
        if key not in ss:
            ss[key] = default
    if MODEL_KEY not in ss:
        ss[MODEL_KEY] = default_model_key()


@st.cache_data(ttl=60, show_spinner=False)
def model_catalogue() -> list[ModelEntry]:
    return catalogue()


def default_model_key() -> str:
    """The 2-D checkerboard FM-OT model when shipped, else the first shipped one, else analytic."""
    rows = model_catalogue()
    for row in rows:
        k = row.key.lower().replace("_", "-")
        if row.source == "shipped" and "checkerboard" in k and "fm-ot" in k:
            return row.key
    shipped = [r for r in rows if r.source == "shipped"]
    return (shipped or rows)[0].key


def entries() -> list[ModelEntry]:
    """The catalogue plus this session's uploads."""
    ups = [ModelEntry(k, f"Uploaded: {name}", "upload") for k, (name, _) in st.session_state[UPLOADS].items()]
    return model_catalogue() + ups


@st.cache_resource(max_entries=12, show_spinner="Loading the model...")
def _load(key: str, _raw: Optional[bytes] = None):
    return load_entry(key, _raw)


def load(key: str):
    """The velocity field for a model key (cached per process); raises ModelLoadError."""
    raw = st.session_state[UPLOADS].get(key, (None, None))[1] if key.startswith("upload:") else None
    return _load(key, raw)


@st.cache_resource(max_entries=12, show_spinner=False)
def _guided(key: str, w: float, _base):
    return _base.with_guidance(w)


def model_key() -> str:
    return st.session_state[MODEL_KEY]


def set_model(key: str) -> None:
    st.session_state[MODEL_KEY] = key


def guidance() -> Optional[float]:
    """The guidance scale chosen for the current model (None: the checkpoint's default)."""
    return st.session_state[GUIDANCE].get(model_key())


def set_guidance(w: Optional[float]) -> None:
    st.session_state[GUIDANCE][model_key()] = w


def field_key() -> str:
    """The cache key of the current field: the model key plus the guidance scale if chosen."""
    w = guidance()
    return model_key() if w is None else f"{model_key()}|w={w:g}"


def base_field():
    """The chosen model as loaded (its checkpoint's default guidance); falls back to the
    default model if the chosen one fails to load."""
    try:
        return load(model_key())
    except ModelLoadError as e:
        fallback = default_model_key()
        if fallback == model_key():
            fallback = next(r.key for r in model_catalogue() if r.source == "analytic")
        st.warning(f"Could not open the chosen model ({e}); switched to {fallback}.")
        set_model(fallback)
        return load(model_key())


def current_field():
    """The chosen model with the chosen guidance scale: what every page works on."""
    base = base_field()
    w = guidance()
    if w is None or not hasattr(base, "with_guidance") or w == base.guidance_scale:
        return base
    return _guided(model_key(), float(w), base)


def current_label() -> str:
    key = model_key()
    for e in entries():
        if e.key == key:
            return e.label
    return key


def add_upload(name: str, raw: bytes) -> str:
    """Validate and register an uploaded model; returns its key. Raises ModelLoadError."""
    key = upload_key(raw)
    load_entry(key, raw)  # fail here, with a message, before it enters the session
    st.session_state[UPLOADS][key] = (name, raw)
    return key


# ------------------------------------------------------------------------------------------
# Solvers and jobs
# ------------------------------------------------------------------------------------------

@st.cache_resource(max_entries=12, show_spinner="Loading the model's shipped solvers...")
def _shipped_solvers(key: str, guidance: Optional[float], _field) -> list[SolverEntry]:
    """The learned solvers shipped with a model (explorer.models.shipped_solver_files), loaded for
    this field (a solver for another guidance scale is left out), with their training curves.
    Shared by every session (loaded once per process)."""
    from core.checkpoint import CheckpointError
    from core.history import load_history
    from core.solvers.learned import load_solver

    out = []
    for path, hist_path in shipped_solver_files(key):
        try:
            solver, header = load_solver(str(path), field=_field)
        except (CheckpointError, ValueError):
            continue  # made for another guidance scale (or damaged): not offered for this field
        history, summary = load_history(hist_path) if hist_path is not None else ([], {})
        extra = header.get("train") if isinstance(header.get("train"), dict) else {}
        summary = summary or extra
        family = getattr(solver, "family_name", solver.family)
        out.append(SolverEntry(f"shipped {family} NFE {solver.nfe}", solver, _field.model_id, _field.guidance_scale,
                               "shipped", spec=header, best=dict(summary.get("best") or {}), history=history,
                               summary=summary, note=f"shipped with the model: {path.name}"))
    return out


def shipped_solvers(field) -> list[SolverEntry]:
    """The current model's shipped solvers for `field`, less those this session removed."""
    key = model_key()
    if not key.startswith("shipped:") or not shipped_solver_files(key):
        return []
    hidden = st.session_state.get(HIDDEN, set())
    return [s for s in _shipped_solvers(key, field.guidance_scale, field) if s.id not in hidden]


def solvers(field=None) -> list[SolverEntry]:
    """The session's solvers; with `field`, only those made for that model and guidance scale,
    the model's shipped solvers first."""
    rows = st.session_state[SOLVERS]
    if field is None:
        return list(rows)
    rows = shipped_solvers(field) + list(rows)
    return [s for s in rows if s.model_id == field.model_id and s.guidance == field.guidance_scale]


def numbered(text: str) -> str:
    """'#k text' with k the session's next solver number: a solver's label, never reused in the
    session, which also fixes its colour on every page (explorer/figures.py solver_color)."""
    st.session_state[SOLVER_NUMBER] = st.session_state.get(SOLVER_NUMBER, 0) + 1
    return f"#{st.session_state[SOLVER_NUMBER]} {text}"


def add_solver(entry: SolverEntry) -> SolverEntry:
    st.session_state[SOLVERS].append(entry)
    return entry


def remove_solver(entry_id: int) -> None:
    st.session_state[SOLVERS] = [s for s in st.session_state[SOLVERS] if s.id != entry_id]
    st.session_state.setdefault(HIDDEN, set()).add(entry_id)  # a shipped one stays out of this session's list


def session_jobs(kind: Optional[str] = None, model_key_: Optional[str] = None) -> list[jobs_mod.Job]:
    return [j for j in st.session_state[JOBS] if (kind is None or j.kind == kind)
            and (model_key_ is None or j.model_key == model_key_)]


def add_job(job: jobs_mod.Job) -> jobs_mod.Job:
    st.session_state[JOBS].append(job)
    return job


def active_jobs() -> list[jobs_mod.Job]:
    return [j for j in st.session_state[JOBS] if not j.is_finished]


def harvest() -> int:
    """Move finished jobs' results into the session's lists (once each). Returns how many."""
    n = 0
    for job in st.session_state[JOBS]:
        if not job.is_finished or job.harvested:
            continue
        job.harvested = True
        n += 1
        if job.kind == "train" and job.result is not None:
            res = job.result
            spec = job.params.get("spec", {})
            note = job.error or ("stopped early; best solver so far" if job.status == jobs_mod.STOPPED else "")
            best = dict(res.best)
            # No metric in the label: the validation RMSE is on the run's own noise, the pages'
            # numbers on the evaluation set (explorer/evaluation.py); each is shown where it belongs.
            label = numbered(f"{spec.get('family', '?')} NFE {res.solver.nfe}")
            add_solver(SolverEntry(label, res.solver, job.params.get("model_id", ""), job.params.get("guidance"),
                                   "trained", spec=spec,
                                   best=best, history=list(res.history), summary=res.summary(), note=note))
        elif job.kind == "ablation" and job.result is not None:
            st.session_state[ABLATIONS].append({"job": job.id, "model_key": job.model_key, "params": job.params,
                                                "rows": list(job.result), "status": job.status,
                                                "error": job.error})
        elif job.kind == "benchmark" and job.result is not None:
            st.session_state[BENCHMARKS].append({"job": job.id, "model_key": job.model_key, "params": job.params,
                                                 "rows": list(job.result), "status": job.status})
    return n


# ------------------------------------------------------------------------------------------
# Widget values that survive a page switch
# ------------------------------------------------------------------------------------------

def kept(key: str, default: Any) -> str:
    """Use as `key=state.kept("train.nfe", 8)` on a widget (and pass no value=): the widget
    starts from its last value in this session, or `default`."""
    store = st.session_state[KEPT]
    if key not in st.session_state:
        st.session_state[key] = store.get(key, default)
    store.setdefault(key, st.session_state[key])
    return key


def save_kept() -> None:
    """Copy the current values of kept widgets into the store (call at the end of a run)."""
    store = st.session_state.get(KEPT, {})
    for key in list(store):
        if key in st.session_state:
            store[key] = st.session_state[key]
