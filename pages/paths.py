"""Paths: GT, RK2 and the learned solver from the same noise, in the GT paths' PCA plane."""
import numpy as np
import streamlit as st

from explorer import cached, compute, evaluation, figures, state, ui
from explorer.models import is_2d

ui.header(
    "Sampling paths",
    "Each curve is one sample's journey from noise ($t=0$) to data ($t=1$). The black lines are the "
    "GT paths (adaptive solver), the coloured ones what a cheap solver does with a few steps; each "
    "marker is a step point. Images live in many dimensions, so the paths are projected on the first "
    "two principal components of the GT paths (the plane in which they vary most). The lower plot "
    "shows how far each solver is from the GT path at each of its step points.",
    r"e(t_i) = \frac{1}{B}\sum_{b=1}^{B} \big\| x^{\text{solver}}_{i,b} - x^{\text{GT}}_b(t_i) \big\|_{\mathrm{RMS}}",
    "RK2 cuts corners where the GT paths bend; a Bespoke solver moves its steps (and rescales the "
    "state) so that its few steps follow the bend. Compare the errors at the last step.",
)

field = state.current_field()
entry = ui.solver_picker(field, "paths.solver")
c1, c2, c3 = st.columns(3)
with c1:
    nfe = st.number_input("NFE of the built-in solvers", 1, 64, step=1,
                          key=state.kept("paths.nfe", entry.solver.nfe if entry is not None else 8),
                          help="The learned solver always runs at its own NFE.")
with c2:
    n = st.slider("Paths to draw", 2, 32, key=state.kept("paths.n", 12))
with c3:
    extra = st.multiselect("More built-in solvers", [s for s in compute.available_baselines(field) if s != compute.RK2],
                           key=state.kept("paths.extra", []), format_func=compute.solver_label)
seed, pool = evaluation.EVAL_SEED, evaluation.size(field)  # the first n paths of the evaluation set
if entry is not None and nfe != entry.solver.nfe:
    st.button(f"Use the learned solver's NFE ({entry.solver.nfe}) for the built-in solvers", key="paths.match",
              on_click=lambda: st.session_state.update({"paths.nfe": entry.solver.nfe}))

runs, keys, notes = [], [], []
for name in [compute.RK2, *extra]:
    solver = compute.baseline(name, field)
    k = compute.usable_nfe(solver, int(nfe))
    if k is None:
        notes.append(f"{compute.solver_label(name)} cannot run at NFE {nfe}")
        continue
    if k != nfe:
        notes.append(f"{compute.solver_label(name)} runs at NFE {k} (it needs a multiple of its stages)")
    runs.append((compute.solver_label(name), solver, k))
    keys.append((name, k))
if entry is not None:
    runs.append((entry.label, entry.solver, None))
    keys.append((entry.digest, entry.solver.nfe))
if notes:
    st.caption("; ".join(notes))

bundle = cached.paths(state.field_key(), tuple(keys), int(n), seed, field, runs, pool=pool)
series = {compute.GT_LABEL: {"times": bundle.gt.times, "pts": bundle.gt.proj}}
series.update({r.label: {"times": r.times, "pts": r.proj} for r in bundle.runs})
ev = bundle.explained
st.plotly_chart(figures.paths_plane(series, compute.GT_LABEL, "Paths in the GT paths' PCA plane",
                                    (f"PC 1 ({ev[0]:.0%} of the variance)", f"PC 2 ({ev[1]:.0%})")), key="paths.pca")
held = ev[0] + ev[1]
dims = int(np.prod(field.data_shape))
st.caption(f"This plane holds {held:.0%} of the variance of the GT paths' states (PC 1 {ev[0]:.0%}, PC 2 {ev[1]:.0%}) "
           + ("of the 2 dimensions: the whole of it, up to a rotation."
              if dims == 2 else
              f"of {dims} dimensions: the other {1 - held:.0%} is not drawn, so two points close in this plane can "
              "still be far apart. The table below measures the full distance."))
if is_2d(field):
    xy = {compute.GT_LABEL: {"times": bundle.gt.times, "pts": bundle.gt.xy}}
    xy.update({r.label: {"times": r.times, "pts": r.xy} for r in bundle.runs})
    st.plotly_chart(figures.paths_plane(xy, compute.GT_LABEL, "Paths in data space", ("x1", "x2")), key="paths.xy")
if entry is not None and entry.family == "bns":
    st.info(f"Why {entry.label}'s points leave the GT path: a BNS solver is trained on its **final** sample only. "
            "Its intermediate points $x_i$ are the places where it evaluates the model, each a learned combination "
            "$x_i = A_i x_0 + \\sum_{j<i} B_{ij}\\, u(t_j, x_j)$ chosen so that the last combination lands on the GT "
            "sample; they are not estimates of $x(t_i)$, and nothing pulls them onto the GT path. Judge it by its "
            "error at $t = 1$. (A Bespoke solver's points are estimates of $x(t_i)$: it is an RK method on a "
            "rescaled path.)", icon=":material/info:")
st.plotly_chart(figures.step_errors({r.label: {"times": r.times, "errors": r.errors} for r in bundle.runs},
                                    f"Error to the GT path at every step point ({n} drawn paths)"),
                key="paths.errors")
n_eval = evaluation.size(field)
on_eval = cached.samples(state.field_key(), tuple(keys), n_eval, seed, field, runs)[1:]  # same order as runs
st.dataframe([{"solver": r.label, "NFE": r.nfe, "steps": len(r.times) - 1,
               f"RMSE at t = 1 ({n} drawn)": float(r.errors[-1]),
               f"max RMSE on the path ({n} drawn)": float(np.max(r.errors)),
               f"RMSE, evaluation set ({n_eval})": e.rmse}
              for r, e in zip(bundle.runs, on_eval)], hide_index=True, key="paths.table")
st.caption(f"Drawn: the first {n} paths of the evaluation set; the last column is on all of it "
           f"({evaluation.describe(field)}), the number the Samples and Benchmark pages show.")
