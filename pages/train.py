"""Train: learn a Bespoke or BNS solver for the current model, live, in the background."""
import dataclasses
import hashlib
import os

import streamlit as st

from core.checkpoint import CheckpointError
from core.solvers.learned import load_solver
from core.solvers.bns import BNS_INITS
from core.train import LEARNED_FAMILIES, SolverSpec, TrainConfig
from explorer import autosave, compute, evaluation, figures, jobs, livechart, state, ui, workers
from explorer.models import MAX_UPLOAD_MB, UPLOAD_LIMIT_LABEL

# Short enough for the selectbox's width (a longer label was cut off); the help says the rest.
FAMILY_LABELS = {"rk1-bespoke": "RK1-Bespoke (Euler)", "rk2-bespoke": "RK2-Bespoke (midpoint)",
                 "bns": "BNS (non-stationary)"}
FAMILY_HELP = ("RK1/RK2-Bespoke: Euler / midpoint on a learned scale-time path. BNS (Bespoke Non-Stationary): "
               "a learned time grid and, per step, learned weights of the start point and all velocities so far.")
BESPOKE_INITS = ("identity", "fm-cs", "edm")
SPEC0, CFG0 = SolverSpec(), TrainConfig()  # the form's defaults: core.train's, the CLI's too

ui.header(
    "Train a solver",
    "A **Bespoke** solver runs a classical RK method on a *transformed* sampling path "
    "$\\bar x(r) = s_r\\, x(t_r)$, whose time change $t_r$ and scale $s_r$ are learned for this model "
    "(a few dozen numbers). It keeps the base method's order (Theorem 2.2). Training minimises an upper "
    "bound on the error to the GT sample, built from the local errors $d_i$ weighted by Lipschitz "
    "factors $M_i$ that depend on $L_\\tau$. A **BNS** solver learns a time grid and, at every step, its "
    "own linear combination of the start point and all velocities so far, trained on the PSNR to GT.",
    r"\bar u_r(x) = \frac{\dot s_r}{s_r}\,x + \dot t_r\, s_r\, u_{t_r}\!\left(\frac{x}{s_r}\right),\qquad "
    r"\mathcal L_{\mathrm{RMSE\text{-}B}} = \mathbb E_{x_0} \sum_{i=1}^{n} M_i\, d_i,\qquad "
    r"x_{i+1}^{\mathrm{BNS}} = a_i x_0 + \sum_{j\le i} b_{ij}\, u_{t_j}(x_j)",
    "train RK2-Bespoke at NFE 8 and watch t_r bend away from the identity (the diagonal) where the "
    "model's paths curve; then compare it with RK2 on the Samples and Paths pages.",
)

field = state.current_field()
model_key = state.field_key()

# --- The form ------------------------------------------------------------------------------
c1, c2, c3 = st.columns(3)
with c1:
    family = st.selectbox("Solver family", LEARNED_FAMILIES, key=state.kept("train.family", SPEC0.family),
                          format_func=lambda f: FAMILY_LABELS.get(f, f), help=FAMILY_HELP)
    nfe = st.number_input("NFE (network evaluations)", 1, 64, step=1, key=state.kept("train.nfe", SPEC0.nfe),
                          help="RK2-Bespoke uses 2 evaluations per step, so its NFE must be even.")
with c2:
    is_bns = family == "bns"
    if is_bns:
        sigma0 = st.number_input("sigma0 (BNS preconditioning)", 0.05, 100.0, step=0.5,
                                 key=state.kept("train.sigma0", SPEC0.sigma0),
                                 help="The NS solver runs on the path alpha_r = r, sigma_r = sigma0 (1 - r) "
                                      "(a reconstruction of the paper's preconditioning; 1 = none on FM-OT).")
        init_options = tuple(i for i in BNS_INITS if i in ("euler", "midpoint") or field.path is not None)
    else:
        lipschitz = st.number_input("L_tau (Lipschitz constant in the loss)", 0.0, 50.0, step=0.5,
                                    key=state.kept("train.lipschitz", SPEC0.lipschitz),
                                    help="Weights M_i of the local errors; the paper uses 1.")
        init_options = BESPOKE_INITS if field.path is not None else ("identity",)
    init_key = state.kept(f"train.init.{'bns' if is_bns else 'bespoke'}", init_options[0])
    if st.session_state[init_key] not in init_options:
        st.session_state[init_key] = init_options[0]
    init = st.selectbox("Initialisation", init_options, key=init_key,
                        help="identity = the base RK solver itself; a path name = the ST map to that path "
                             "(e.g. EDM's schedule); for BNS, the base solver it starts as.")
with c3:
    lr = st.number_input("Learning rate (Adam)", 1e-5, 1.0, step=1e-3, format="%.4f", key=state.kept("train.lr", CFG0.lr))
    iters = st.number_input("Iterations", 1, 20000, step=50, key=state.kept("train.iters", CFG0.iters))
# A U-Net on 28x28 images spends seconds per GT path on a CPU: smaller GT budgets there (kept apart).
LARGE = evaluation.kind(field) == "large image"
BUDGET0, SUFFIX = ((64, 256, 128), ".large") if LARGE else ((CFG0.batch_size, CFG0.n_train, CFG0.n_val), "")
with st.expander("Budget: batch, GT paths, validation, seed", expanded=LARGE):
    if LARGE:
        st.caption("A 28x28 U-Net: its GT paths cost seconds each on a CPU, so the defaults here are smaller than "
                   f"the library's ({CFG0.n_train} GT paths, {CFG0.n_val} validation samples).")
    b1, b2, b3, b4, b5 = st.columns(5)
    batch = b1.number_input("Batch size", 8, 4096, step=64, key=state.kept("train.batch" + SUFFIX, BUDGET0[0]))
    n_train = b2.number_input("GT paths to train on", 16, 20000, step=256,
                              key=state.kept("train.n_train" + SUFFIX, BUDGET0[1]),
                              help="Noise samples whose adaptive-solver (dopri5) paths are solved once, before training.")
    n_val = b3.number_input("Validation samples", 8, 4096, step=64, key=state.kept("train.n_val" + SUFFIX, BUDGET0[2]),
                            help="Held-out noise: the curves' validation RMSE / PSNR to GT, and the best solver kept.")
    val_every = b4.number_input("Validate every", 1, 1000, step=5, key=state.kept("train.val_every", CFG0.val_every))
    seed = b5.number_input("Seed", 0, 10_000, step=1, key=state.kept("train.seed", CFG0.seed))

if st.button("Train", type="primary", key="train.start", icon=":material/play_arrow:"):
    try:
        spec = SolverSpec(family=family, nfe=int(nfe), init=init,
                          **({"sigma0": float(sigma0)} if is_bns else {"lipschitz": float(lipschitz)}))
        cfg = TrainConfig(iters=int(iters), lr=float(lr), batch_size=int(batch), n_train=int(n_train),
                          n_val=int(n_val), val_every=int(val_every), seed=int(seed))
        if family == "rk2-bespoke" and spec.nfe % 2:
            raise ValueError(f"RK2-Bespoke uses 2 evaluations per step, so its NFE must be even; got {spec.nfe}")
        if cfg.seed == evaluation.EVAL_SEED:
            raise ValueError(f"seed {cfg.seed} draws the evaluation set's noise (the other pages measure solvers on "
                             "it); pick another seed so that training stays held out from it")
    except ValueError as e:
        ui.show_error(str(e))
    else:
        job = jobs.Job("train", f"{family} NFE {spec.nfe}", model_key=model_key,
                       params={"spec": dataclasses.asdict(spec), "cfg": dataclasses.asdict(cfg),
                               "model_id": field.model_id, "guidance": field.guidance_scale})
        state.add_job(jobs.start(job, workers.train_job(field, spec, cfg)))
        st.session_state["train.focus"] = job.id
        st.rerun()  # redraw everything (the sidebar's job count, the run list) with the new job

# --- Live view of the focused run ------------------------------------------------------------
train_jobs = state.session_jobs("train", model_key)
if train_jobs:
    by_id = {j.id: j for j in train_jobs}
    focus_id = st.session_state.get("train.focus")
    if focus_id not in by_id:
        focus_id = train_jobs[-1].id
    if len(train_jobs) > 1:
        focus_id = st.selectbox("Run", [j.id for j in train_jobs][::-1], index=0 if focus_id == train_jobs[-1].id
                                else [j.id for j in train_jobs][::-1].index(focus_id),
                                format_func=lambda i: f"run {i}: {by_id[i].label} ({by_id[i].status})",
                                help="Each run's status as of the last redraw; the page redraws when any run "
                                     "starts or ends.",
                                # a new widget whenever a run's status changes: the browser keeps
                                # showing a kept selectbox's old option text otherwise ("(running)")
                                key="train.run_pick." + ".".join(f"{j.id}{j.status}" for j in train_jobs))
        st.session_state["train.focus"] = focus_id
    job = by_id[focus_id]
    identity = {"identity": compute.reference_maps(field, 51)["identity"]}  # the rest: Schedules page
    drawn = {j.id: j.status for j in train_jobs}  # what this run of the page shows for each run
    watching = any(not j.is_finished or not j.harvested for j in train_jobs)
    family_of = job.params.get("spec", {}).get("family", "")

    @st.fragment(run_every=0.2 if watching else None)
    def live(job=job):
        # Any run that started, ended or failed since the page was drawn: redraw the whole page
        # (the run selector's status, the sidebar, the solver list), not just this chart.
        if any(j.status != drawn.get(j.id) or (j.is_finished and not j.harvested) for j in train_jobs):
            state.harvest()
            st.rerun()
        cols = st.columns([4, 1])
        with cols[0]:
            st.progress(job.progress, text=f"Run {job.id} · {job.label} · **{job.status}** · {job.message} · "
                                            f"{job.elapsed:.1f} s")
        with cols[1]:
            if not job.is_finished and st.button("Stop", key=f"train.stop.{job.id}", icon=":material/stop:",
                                                 help="Stop now and keep the best solver so far"):
                job.stop.set()
        if job.error:
            ui.show_error(f"Training failed: {job.error}")
        hist = list(job.history)
        params = dict(job.latest)
        if hist:
            schedule = {"learned (now)": params, **identity} if compute.is_st_params(params) else None
            title = ("Training, live" if not job.is_finished else
                     f"Training: run {job.id} {job.status} after {job.elapsed:.1f} s")
            fig = figures.training_live(hist, schedule, ("learned (now)",), params.get("time_grid"), family_of, title)
            if job.is_finished:
                st.plotly_chart(fig, key="train.live")
            else:  # moved in place several times a second (see explorer/livechart.py)
                try:
                    livechart.live_chart(fig, key=f"train.live_chart.{job.id}")
                except OSError as e:  # its files could not be set up: draw it the slower way
                    st.plotly_chart(fig, key="train.live")
                    st.caption(f"The fast live chart is unavailable ({e}); redrawing the whole chart instead.")
            last_val = [h for h in hist if "rmse" in h]
            if last_val:
                v = last_val[-1]
                n_val = job.params.get("cfg", {}).get("n_val", "?")
                seed_ = job.params.get("cfg", {}).get("seed", "?")
                st.caption(f"Latest validation at iteration {v['iteration']}: {ui.metric_line(v['rmse'], v['psnr'])} "
                           f"on the run's own {n_val} validation noise samples (seed {seed_}, never trained on; the "
                           "other pages measure on the evaluation set, so their numbers differ a little). "
                           "Row 2: the solver right now (derivatives and the comparison with the dedicated "
                           "schedules: Schedules page).")

    live()

# --- The session's solvers -------------------------------------------------------------------
st.subheader("Solvers in this session")
rows = state.solvers(field)
if rows:
    st.dataframe([{"solver": r.label, "family": r.family, "NFE": r.solver.nfe, "best validation RMSE": r.best.get("rmse"),
                   "best validation PSNR (dB)": r.best.get("psnr"), "free parameters": r.solver.num_free_parameters,
                   "source": r.source, "note": r.note} for r in rows], hide_index=True, key="train.solvers")
    st.caption("Validation: each run's own held-out noise (its seed, its number of validation samples). The "
               "Samples, Paths and Benchmark pages measure every solver on the model's evaluation set "
               f"({evaluation.describe(field)}).")
    by_id = {r.id: r for r in rows}
    if st.session_state.get("train.pick_next") in by_id:  # a solver just added: show it picked
        st.session_state["train.solver_pick"] = st.session_state.pop("train.pick_next")
    pick = st.selectbox("Solver", list(by_id)[::-1], format_func=lambda i: by_id[i].label, key="train.solver_pick")
    d1, d2 = st.columns(2)
    with d1:
        st.download_button("Download (.safetensors)", by_id[pick].to_bytes(field),
                           file_name=f"{by_id[pick].family}_nfe{by_id[pick].solver.nfe}_{by_id[pick].digest[:8]}.safetensors",
                           mime="application/octet-stream", key="train.download", on_click="ignore",
                           icon=":material/download:")
    with d2:
        if st.button("Remove from the list", key="train.remove", icon=":material/delete:"):
            state.remove_solver(pick)
            st.rerun()
else:
    st.caption("None yet for this model: press Train above, or upload a solver saved earlier.")

up = st.file_uploader(f"Upload a solver saved earlier (.safetensors, {UPLOAD_LIMIT_LABEL})",
                      max_upload_size=MAX_UPLOAD_MB, key="train.upload")
if up is not None:
    # Every upload is processed once: an upload is one file_id (the same file uploaded again,
    # e.g. after "Remove from the list", is a new one); the outcome stays shown while the file does.
    outcome = st.session_state.setdefault("train.upload_outcome", {})
    if up.file_id not in outcome:
        raw = up.getvalue()
        try:
            if len(raw) > MAX_UPLOAD_MB * 10**6:
                raise ValueError(f"the file is {len(raw) / 1e6:.1f} MB, over the limit ({UPLOAD_LIMIT_LABEL})")
            solver, header = load_solver(raw, field=field)
        except (CheckpointError, ValueError) as e:
            outcome[up.file_id] = ("error", f"Could not use {up.name!r}: {e}")
        else:
            digest = hashlib.sha256(raw).hexdigest()
            same = [r for r in state.solvers(field) if r.file_digest == digest]
            if same:
                outcome[up.file_id] = ("info", f"{up.name!r} is already in the list as {same[0].label}.")
            else:
                extra = header.get("train") or {}
                best = extra.get("best") if isinstance(extra.get("best"), dict) else {}
                entry = state.add_solver(state.SolverEntry(state.numbered(f"uploaded {up.name}"), solver,
                                                           field.model_id, field.guidance_scale, "uploaded",
                                                           spec=header, best=best, file_digest=digest))
                outcome[up.file_id] = ("success", f"Added {up.name!r} to the list as {entry.label}.")
                st.session_state["train.pick_next"] = entry.id
                st.rerun()
    kind_, message = outcome[up.file_id]
    if kind_ == "error":
        ui.show_error(message)
    elif kind_ == "info":
        st.info(message)
    else:
        st.success(message)

saved_runs = autosave.list_runs(field.model_id, field.guidance_scale)
if saved_runs:
    with st.expander(f"{len(saved_runs)} run(s) saved on this machine for this model (they survive a closed tab "
                     f"or a restart)"):
        st.caption(f"Every finished, stopped or diverged run is written to `{autosave.runs_dir()}` by the training "
                   "thread itself. Add one back to this session's list:")
        labels = {str(p): f"{p.name} · {h.get('train', {}).get('label', '?')} · "
                          f"{h.get('train', {}).get('status', '?')} · best RMSE "
                          f"{(h.get('train', {}).get('best') or {}).get('rmse', float('nan')):.4g}"
                  for p, h in saved_runs}
        chosen = st.selectbox("Saved run", list(labels), format_func=labels.get, key="train.saved_pick")
        if st.button("Add to this session", key="train.saved_add", icon=":material/restore:"):
            try:
                solver, header = load_solver(chosen, field=field)
            except (CheckpointError, ValueError) as e:
                ui.show_error(f"Could not restore {chosen!r}: {e}")
            else:
                extra = header.get("train") or {}
                best = extra.get("best") if isinstance(extra.get("best"), dict) else {}
                state.add_solver(state.SolverEntry(state.numbered(f"restored {os.path.basename(chosen)}"),
                                                   solver, field.model_id, field.guidance_scale, "restored",
                                                   spec=header, best=best))
                st.rerun()

others = [j for j in state.session_jobs("train") if j.model_key != model_key]
if others:
    with st.expander(f"{len(others)} run(s) on other models in this session"):
        for j in others:
            st.write(f"run {j.id}: {j.label} on {j.model_key} · {j.status} · {j.progress:.0%}")
