"""Schedules: what a learned solver learned (t_r, s_r, the time grid, the coefficients)."""
import numpy as np
import streamlit as st
import torch

from core.trajectories import equivalent_path
from explorer import compute, figures, state, ui

ui.header(
    "Schedules",
    "A Bespoke solver is a **scale-time map**: it walks the model's ODE on the transformed path "
    "$\\bar x(r) = s_r\\,x(t_r)$ with uniform steps in $r$. $t_r$ says *where* in the model's time the "
    "steps land (steep = big steps in $t$), $s_r$ rescales the state. The dedicated schedules of the "
    "literature are such maps too: EDM's noise levels, or switching to the cosine path, are the maps "
    "that take the model's path to theirs. By Theorem 2.3, a map also defines a Gaussian path: the "
    "solver is plain RK on the model *as if it had been trained on that path*.",
    r"t_r = \rho^{-1}\!\big(\bar\rho(r)\big),\quad s_r = \frac{\bar\sigma_r}{\sigma_{t_r}},\qquad "
    r"\bar\alpha_r = s_r\,\alpha_{t_r},\quad \bar\sigma_r = s_r\,\sigma_{t_r}\qquad(\rho = \alpha/\sigma)",
    "compare a solver trained at NFE 4 with one at NFE 16; try the EDM initialisation on the Train page "
    "and see how far training moves it.",
)

field = state.current_field()
references = compute.reference_maps(field, 101)
entry = ui.solver_picker(field, "schedules.solver")

if entry is None:
    st.plotly_chart(figures.st_schedule(references, title="Reference scale-time maps for this model"),
                    key="schedules.st")
    st.stop()

params = compute.to_numpy_params(entry.solver.decode())
st.caption(f"{entry.label}: {entry.family}, NFE {entry.solver.nfe}, {entry.solver.num_free_parameters} free "
           f"parameters. Time grid t_i: " + ", ".join(f"{t:.3f}" for t in params.get("time_grid", [])))

if compute.is_st_params(params):
    curves = {"learned": params, **references}
    st.plotly_chart(figures.st_schedule(curves, learned=("learned",), title="Learned scale-time map vs references"),
                    key="schedules.st")
    st.markdown("Dashed: the identity (plain RK) and the maps to the dedicated schedules. Markers: the learned "
                "values at the solver's nodes (RK2 also learns the half steps).")
    if field.path is not None:
        alpha_bar, sigma_bar = equivalent_path(field.path, torch.from_numpy(params["t"]), torch.from_numpy(params["s"]))
        c = field.path(torch.from_numpy(params["r"]))
        st.plotly_chart(figures.equivalent_path(params["r"], alpha_bar.numpy(), sigma_bar.numpy(),
                                                c.alpha.double().numpy(), c.sigma.double().numpy(), field.path.name),
                        key="schedules.path")
        st.caption("The solver's path starts at alpha_bar_0 = s_0 alpha_0 = 0 and ends at sigma_bar_1 = 0 like any "
                   "Gaussian path, but its SNR grows at its own pace: where the log-SNR curve is steeper than the "
                   "model's, the solver spends fewer steps.")
elif compute.is_ns_params(params):
    spec = entry.solver.config()
    st.markdown(
        "A **BNS** solver spends one evaluation per grid time $t_i$ and, at step $i$, combines the start point "
        "and *all* velocities so far with its own weights: $\\bar x_{i+1} = a_i \\bar x_0 + \\sum_{j\\le i} b_{ij} "
        "\\bar u_j$ on the preconditioned field, or equally $x_k = A_k x_0 + \\sum_{j<k} B_{kj}\\, u(t_j, x_j)$ in the "
        "model's own variables. Blank cells are weights no step uses.")
    grids = {"learned t_i": params["time_grid"], "uniform": np.linspace(0, 1, len(params["time_grid"]))}
    st.plotly_chart(figures.time_grid(grids, "Learned time grid vs uniform"), key="schedules.grid")
    st.plotly_chart(figures.coefficient_heatmaps(compute.used_coefficients(params),
                                                 "Coefficients of each step (rows: steps)"), key="schedules.coeffs")
    pre = {k: params[k] for k in ("r", "t", "dt", "s", "ds")}
    st.plotly_chart(figures.st_schedule({f"preconditioning (sigma0 = {spec.get('sigma0', 1.0):g})": pre,
                                         **references}, title="The fixed preconditioning map the NS solver runs on"),
                    key="schedules.pre")
else:
    st.warning(f"{entry.label}: no schedule view for solver family {entry.family!r}.")

if entry.history:  # trained in this session, or shipped with its training curve (core/history.py)
    st.plotly_chart(figures.training_curves(entry.history, entry.family), key="schedules.curve")
    st.caption(f"How {entry.label} was trained: its loss at every iteration and its validation RMSE / PSNR on its "
               "run's own held-out noise" + (" (the curve shipped with the model's solver)" if entry.source == "shipped"
                                             else "") + ".")
