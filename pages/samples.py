"""Samples: GT, RK2 and the learned solver side by side from the same noise."""
import numpy as np
import streamlit as st

from explorer import cached, compute, figures, state, ui
from explorer.models import is_2d, is_image

ui.header(
    "Samples side by side",
    "Every panel starts from **the same noise** $x_0$, so differences are the solvers' errors, not "
    "randomness. GT is the adaptive solve; the others spend only the NFE you choose. Under each panel: "
    "the mean per-sample RMSE and PSNR to the GT sample from the same noise ($R$ = the data range).",
    r"\mathrm{RMSE}(x, x^{\mathrm{GT}}) = \sqrt{\tfrac1D \textstyle\sum_j (x_j - x^{\mathrm{GT}}_j)^2},\qquad "
    r"\mathrm{PSNR} = 10 \log_{10} \frac{R^2}{\mathrm{MSE}(x, x^{\mathrm{GT}})}\ \mathrm{dB}",
    "lower the NFE until RK2's samples smear out, then look at the learned solver at the same NFE.",
)

field = state.current_field()
entry = ui.solver_picker(field, "samples.solver")
c1, c2 = st.columns(2)
with c1:
    nfe = st.number_input("NFE of the built-in solvers", 1, 64, step=1,
                          key=state.kept("samples.nfe", entry.solver.nfe if entry is not None else 8),
                          help="The learned solver always runs at its own NFE.")
with c2:
    extra = st.multiselect("More built-in solvers", [s for s in compute.available_baselines(field) if s != compute.RK2],
                           key=state.kept("samples.extra", []), format_func=compute.solver_label)
if entry is not None and nfe != entry.solver.nfe:
    st.button(f"Use the learned solver's NFE ({entry.solver.nfe})", key="samples.match",
              on_click=lambda: st.session_state.update({"samples.nfe": entry.solver.nfe}))

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

image = is_image(field)
n = 20 if image else 1000
result = cached.samples(state.field_key(), tuple(keys), n, 0, field, runs)
panels = {r.label: r.x for r in result}
subtitles = {r.label: (f"NFE {r.nfe} (adaptive)" if r.label == compute.GT_LABEL else
                       f"NFE {r.nfe} · {ui.metric_line(r.rmse, r.psnr)}") for r in result}
if image:
    st.plotly_chart(figures.image_grids(panels, f"{n} samples per solver", subtitles, cols=5), key="samples.fig")
elif is_2d(field):
    st.plotly_chart(figures.scatter_2d(panels, f"{n} samples per solver", subtitles), key="samples.fig")
st.dataframe([{"solver": r.label, "NFE": r.nfe, "RMSE to GT": r.rmse, "PSNR to GT (dB)": r.psnr}
              for r in result[1:]], hide_index=True, key="samples.table")
if not all(np.isfinite([r.rmse for r in result[1:]])):
    st.warning("A solver produced non-finite samples at this NFE.")
