"""Benchmark: error to GT against NFE for every solver on the current model (Figure 5)."""
import streamlit as st

from explorer import cached, compute, evaluation, figures, state, ui, workers

ui.header(
    "Benchmark",
    "The papers' Figure 5 on our models: for every solver, the error of its samples to the GT samples "
    "from the same noise, against the number of network evaluations. A solver of order $p$ has a "
    "global error that falls like $\\mathrm{NFE}^{-p}$ for small enough steps, a straight line of slope "
    "$-p$ on these log axes. Learned solvers (stars) are trained for one NFE each: the question is how far "
    "below the classical and dedicated solvers' lines they sit.",
    r"\text{global error} = \big\| x^{\text{solver}}_1 - x^{\text{GT}}_1 \big\| = O\!\left(h^{p}\right) = "
    r"O\!\left(\mathrm{NFE}^{-p}\right)",
    "train RK2-Bespoke at NFE 4, 8 and 16 on the Train page and watch the stars line up below RK2.",
)

field = state.current_field()
available = compute.available_baselines(field)
# Defaults per kind of model (kept per kind: 512 samples chosen on a 2-D model must not carry
# over to digits, where they cost ~40 s): the evaluation set's size, fewer NFEs for images.
kind = evaluation.kind(field)
DEFAULT_NFES = {"image": "2, 4, 6, 8, 10, 12, 16, 20", "large image": "4, 8, 16"}.get(
    kind, "2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 16, 17, 20")
# A U-Net on 28x28 images costs ~0.3 s per NFE here: three solvers by default, the rest one click away.
LARGE_DEFAULT = [s for s in ("euler", "midpoint", "dpm++2m") if s in available]
c1, c2, c3 = st.columns([3, 2, 1])
with c1:
    names = st.multiselect("Built-in solvers", available, format_func=compute.solver_label,
                           key=state.kept("bench.solvers.large", LARGE_DEFAULT) if kind == "large image"
                           else state.kept("bench.solvers", list(available)))
with c2:
    nfe_text = st.text_input("NFEs", key=state.kept(f"bench.nfes.{kind}", DEFAULT_NFES))
with c3:
    n = st.number_input("Samples", 8, 4096, step=64, key=state.kept(f"bench.n.{kind}", evaluation.size(field)),
                        help=f"Noise samples of seed {evaluation.EVAL_SEED}; at the default "
                             f"({evaluation.size(field)}) they are the evaluation set the other pages use.")
learned = state.solvers(field)
use_learned = st.checkbox(f"Include this session's learned solvers ({len(learned)})", key=state.kept("bench.learned", True))

try:
    values = workers.parse_values(nfe_text)
    if any(v != int(v) for v in values):
        raise ValueError(f"NFEs are whole numbers, got {[v for v in values if v != int(v)]}")
except ValueError as e:
    ui.show_error(f"NFEs: {e}")
    st.stop()
nfes = sorted({int(v) for v in values})
chosen = [(e.label, e.solver) for e in learned] if use_learned else []
seed = evaluation.EVAL_SEED
rows = cached.benchmark(state.field_key(), tuple(s for s in names if s in available), tuple(nfes),
                        tuple(e.digest for e in learned) if use_learned else (), int(n), seed, field, chosen)
st.plotly_chart(figures.benchmark(rows), key="bench.fig")
which = (evaluation.describe(field) if int(n) == evaluation.size(field) else
         f"{n} noise samples of seed {evaluation.EVAL_SEED} (not the {evaluation.size(field)}-sample evaluation set "
         "of the other pages: set Samples to that to compare numbers)")
st.caption(f"Every point: {which}. GT: adaptive dopri5 at {rows[0]['nfe']} NFE on the same noise.")
for a, b in compute.coinciding(rows):
    st.caption(f"{a} and {b} give the same samples on this model, up to rounding (on an FM-OT path DDIM's update "
               "is Euler's): their curves lie on top of each other; each keeps its own marker and dash.")
st.dataframe([r for r in rows[1:]], hide_index=True, key="bench.table")
