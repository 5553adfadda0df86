"""Samples: GT, RK2 and the learned solver side by side from the same noise."""
import numpy as np
import streamlit as st

from explorer import cached, compute, evaluation, figures, state, ui
from explorer.models import is_2d, is_image

ui.header(
    "Samples side by side",
    "Every panel starts from **the same noise** $x_0$ (the model's evaluation set), so differences are the "
    "solvers' errors, not randomness. GT is the adaptive solve; the others spend the NFE shown. By default "
    "the built-in solvers run at the learned solver's NFE: a fair comparison spends the same number of "
    "network evaluations. Under each panel: the mean per-sample RMSE and PSNR to the GT sample from the same "
    "noise ($R$ = the data range).",
    r"\mathrm{RMSE}(x, x^{\mathrm{GT}}) = \sqrt{\tfrac1D \textstyle\sum_j (x_j - x^{\mathrm{GT}}_j)^2},\qquad "
    r"\mathrm{PSNR} = 10 \log_{10} \frac{R^2}{\mathrm{MSE}(x, x^{\mathrm{GT}})}\ \mathrm{dB}",
    "train solvers at NFE 4 and at NFE 8 on the Train page and pick each here: RK2 follows its NFE, and at "
    "NFE 4 its samples smear out where the learned solver's stay sharp. Then untick 'Same NFE' and raise "
    "RK2's NFE until it matches the learned solver: that is the saving.",
)

field = state.current_field()
entry = ui.solver_picker(field, "samples.solver")
c1, c2 = st.columns(2)
with c1:
    same = entry is not None and st.checkbox(
        "Same NFE as the learned solver", key=state.kept("samples.same_nfe", True),
        help="The built-in solvers spend as many network evaluations as the learned one (a fair comparison).")
    if same:
        st.session_state["samples.nfe"] = entry.solver.nfe
    nfe = st.number_input("NFE of the built-in solvers", 1, 64, step=1, disabled=same,
                          key=state.kept("samples.nfe", entry.solver.nfe if entry is not None else 8),
                          help="The learned solver always runs at its own NFE.")
with c2:
    extra = st.multiselect("More built-in solvers", [s for s in compute.available_baselines(field) if s != compute.RK2],
                           key=state.kept("samples.extra", []), format_func=compute.solver_label)

runs, keys = [], []
for name in [compute.RK2, *extra]:
    solver = compute.baseline(name, field)
    k = compute.usable_nfe(solver, int(nfe))
    if k is not None:
        runs.append((f"{compute.solver_label(name)} @ {k}", solver, k))
        keys.append((name, k))
if entry is not None:
    runs.append((f"{entry.label}", entry.solver, None))
    keys.append((entry.digest, entry.solver.nfe))
    unequal = [f"{label.split(' @ ')[0]} at NFE {k}" for label, _, k in runs[:-1] if k != entry.solver.nfe]
    if unequal:
        st.warning(f"Not an equal-NFE comparison: {entry.label} runs at NFE {entry.solver.nfe}, but "
                   + ", ".join(unequal) + (" (it needs a multiple of its stages)" if same else "") + ".",
                   icon=":material/warning:")

image = is_image(field)
n, seed = evaluation.size(field), evaluation.EVAL_SEED
result = cached.samples(state.field_key(), tuple(keys), n, seed, field, runs)
panels = {r.label: r.x for r in result}
subtitles = {r.label: (f"NFE {r.nfe} (adaptive)" if r.label == compute.GT_LABEL else
                       f"NFE {r.nfe} · {ui.metric_line(r.rmse, r.psnr)}") for r in result}
large = evaluation.kind(field) == "large image"  # 28x28: two grids a row, so the digits stay readable
if image:
    st.plotly_chart(figures.image_grids(panels, "Samples per solver", subtitles, cols=10, per_row=2 if large else None),
                    key="samples.fig")
elif is_2d(field):
    st.plotly_chart(figures.scatter_2d(panels, "Samples per solver", subtitles), key="samples.fig")
st.caption(f"Every panel: {evaluation.describe(field)}.")
scores = {r["solver"]: r for r in compute.image_scores(field, result) or []}
table = []
for r in result[1:]:
    row = {"solver": r.label, "NFE": r.nfe, "RMSE to GT": r.rmse, "PSNR to GT (dB)": r.psnr}
    sc = scores.get(r.label, {})
    if "legibility" in sc:
        row["legibility"] = sc["legibility"]
    if "fd" in sc:
        row["FD (not Inception)"], row["FD, % of GT"] = sc["fd"], sc["pct_fd"]
    table.append(row)
st.dataframe(table, hide_index=True, key="samples.table")
if scores:
    gt_sc = scores.get(compute.GT_LABEL, {})
    st.caption("Legibility: the fraction of a solver's samples that the shipped MNIST classifier "
               "(assets/mnist_classifier.safetensors) reads as the digit they were asked for"
               + (f" (GT samples: {gt_sc['legibility']:.0%})" if "legibility" in gt_sc else "")
               + ". FD (not Inception): the Fréchet distance between that classifier's features of the samples and of "
               f"{n} real MNIST images, **not Inception FID**; with {n} samples it is dominated by sampling noise, so "
               "compare it with GT's own (% of GT"
               + (f"; GT: {gt_sc['fd']:.3g}" if "fd" in gt_sc else "") + "), not with published FIDs.")
if not all(np.isfinite([r.rmse for r in result[1:]])):
    st.warning("A solver produced non-finite samples at this NFE.")
