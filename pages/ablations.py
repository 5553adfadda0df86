"""Ablations: sweep L_tau (Bespoke) or sigma0 (BNS) with a small budget."""
import dataclasses

import streamlit as st

from core.train import SolverSpec, TrainConfig
from explorer import figures, jobs, state, ui, workers

ui.header(
    "Ablations",
    "Two knobs the papers single out. **$L_\\tau$** (Bespoke) is the Lipschitz constant assumed for the "
    "model in the RMSE bound: the local error of step $i$ is weighted by how much the later steps can "
    "amplify it; $L_\\tau = 0$ weights all steps by the scale ratios only. **$\\sigma_0$** (BNS) "
    "preconditions the solve: the NS solver runs on the path $\\alpha_r = r,\\ \\sigma_r = \\sigma_0(1-r)$, "
    "which changes how hard the optimisation is, not the family of solvers. Each value below trains "
    "one solver with the same small budget.",
    r"M_i = \prod_{j=i}^{n-1} L_j,\quad L_j = \frac{s_j}{s_{j+1}}\Big(1 + h\,\big(\tfrac{|\dot s_{r_j}|}{s_{r_j}} "
    r"+ \dot t_{r_j} L_\tau\big)\Big)\ \text{(RK1)};\qquad \bar\alpha_r = r,\ \bar\sigma_r = \sigma_0 (1 - r)\ \text{(BNS)}",
    "sweep sigma0 over 0.5, 1, 2, 5, 10 with BNS, or L_tau over 0, 1, 4 with RK2-Bespoke; results stay "
    "on this page for the session.",
)

field = state.current_field()
model_key = state.field_key()
SWEEPS = {"rk2-bespoke": ("lipschitz", "0, 0.5, 1, 2, 5"), "rk1-bespoke": ("lipschitz", "0, 0.5, 1, 2, 5"),
          "bns": ("sigma0", "0.5, 1, 2, 5, 10")}

c1, c2, c3 = st.columns(3)
with c1:
    family = st.selectbox("Solver family", list(SWEEPS), key=state.kept("abl.family", "rk2-bespoke"))
    param, default_values = SWEEPS[family]
    st.caption(f"Swept: {workers.ABLATION_PARAMS[param]}")
with c2:
    nfe = st.number_input("NFE", 1, 64, step=1, key=state.kept("abl.nfe", 8))
    values_text = st.text_input("Values (comma-separated)", key=state.kept(f"abl.values.{param}", default_values))
with c3:
    iters = st.number_input("Iterations per run", 1, 5000, step=10, key=state.kept("abl.iters", 100))
    n_train = st.number_input("GT paths per run", 16, 10000, step=128, key=state.kept("abl.n_train", 512))

if st.button("Run the sweep", type="primary", key="abl.start", icon=":material/play_arrow:"):
    try:
        values = workers.parse_values(values_text, positive=(param == "sigma0"))
        spec = SolverSpec(family=family, nfe=int(nfe))
        cfg = TrainConfig(iters=int(iters), n_train=int(n_train), n_val=128, batch_size=128,
                          val_every=max(1, int(iters) // 5))
        work = workers.ablation_job(field, spec, cfg, param, values)
    except ValueError as e:
        ui.show_error(str(e))
    else:
        job = jobs.Job("ablation", f"{family} NFE {spec.nfe}: {param} in {values}", model_key=model_key,
                       params={"spec": dataclasses.asdict(spec), "cfg": dataclasses.asdict(cfg), "param": param,
                               "values": values})
        state.add_job(jobs.start(job, work))
        st.rerun()  # redraw everything with the new job (the sidebar's job count included)

running = [j for j in state.session_jobs("ablation", model_key) if not j.harvested]
if running:
    @st.fragment(run_every=0.5)
    def live():
        for job in running:
            if job.is_finished and not job.harvested:
                state.harvest()
                st.rerun()
            c_a, c_b = st.columns([4, 1])
            with c_a:
                st.progress(job.progress, text=f"Sweep {job.id} · {job.label} · **{job.status}** · {job.message}")
            with c_b:
                if st.button("Stop", key=f"abl.stop.{job.id}", icon=":material/stop:"):
                    job.stop.set()
            rows = list(job.history)
            if rows:
                st.plotly_chart(figures.sweep(rows, job.params["param"], job.params["param"],
                                              log_x=job.params["param"] == "sigma0"), key=f"abl.live.{job.id}")
    live()

done = [a for a in st.session_state[state.ABLATIONS] if a["model_key"] == model_key]
for k, a in enumerate(reversed(done)):
    p = a["params"]
    st.subheader(f"Sweep {len(done) - k}: {p['spec']['family']} at NFE {p['spec']['nfe']}, "
                 f"{p['cfg']['iters']} iterations per run ({a['status']})")
    if a.get("error"):
        ui.show_error(a["error"])
    if a["rows"]:
        st.plotly_chart(figures.sweep(a["rows"], p["param"], workers.ABLATION_PARAMS[p["param"]],
                                      log_x=p["param"] == "sigma0"), key=f"abl.fig.{a['job']}")
        st.dataframe(a["rows"], hide_index=True, key=f"abl.table.{a['job']}")
if not done and not running:
    st.info("No sweep yet for this model: press **Run the sweep**. With the default budget each run takes a few "
            "seconds on the 2-D models.")
