"""AppTest of every page with the default model: what each shows (figures with the expected
traces, finite numbers), a training run driven through the Train page, a sweep through the
Ablations page, and uploads of corrupt files that must give a message, never an exception."""
import json
import math
import os
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.train import SolverSpec, TrainConfig, train_solver
from explorer import evaluation, figures, state
from explorer.models import load_entry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "streamlit_app.py")
TIMEOUT = 180  # seconds for one script run (the first one imports torch and solves the GT)


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def charts(at) -> list[list[dict]]:
    """The traces of every plotly chart on the page (base64 arrays decoded)."""
    return [figures.decode_traces(c.proto.spec) for c in at.get("plotly_chart")]


def chart_with(at, name: str) -> list[dict]:
    for traces in charts(at):
        if any(t.get("name") == name for t in traces):
            return traces
    raise AssertionError(f"no chart with a trace named {name!r}; charts: {[[t.get('name') for t in c] for c in charts(at)]}")


def chart_layout(at, name: str) -> dict:
    """The layout of the first chart with a trace named `name`."""
    for c in at.get("plotly_chart"):
        if any(t.get("name") == name for t in figures.decode_traces(c.proto.spec)):
            return json.loads(c.proto.spec)["layout"]
    raise AssertionError(f"no chart with a trace named {name!r}")


def finite(v) -> bool:
    a = np.asarray(v, dtype=float)
    return a.size > 0 and bool(np.isfinite(a).all())


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def wait_for(at, condition, timeout=120.0, what="condition"):
    """run_every timers do not tick in AppTest: rerun the script until `condition(at)`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception
        if condition(at):
            return at
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; errors on the page: {errors(at)}")


@pytest.fixture(scope="module")
def trained():
    """A quickly trained RK2-Bespoke solver (NFE 6) for the default model."""
    key = state.default_model_key()
    field = load_entry(key)
    res = train_solver(field, SolverSpec("rk2-bespoke", 6),
                       TrainConfig(iters=20, n_train=256, n_val=64, batch_size=128, val_every=10))
    return key, field, res


@pytest.fixture
def app_with_solver(trained):
    key, field, res = trained
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.SOLVERS] = [state.SolverEntry("#1 test RK2-Bespoke", res.solver, field.model_id,
                                                         field.guidance_scale, "trained", best=res.best)]
    at.run()
    assert not at.exception, at.exception
    assert at.session_state[state.MODEL_KEY] == key
    return at


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

def test_model_page_shows_the_model_and_its_gt_samples():
    at = new_app()
    assert at.title[0].value == "Model" and not errors(at)
    assert at.latex, "the page shows its key formula"
    table = at.table[0].value
    assert "Gaussian path" in list(table.iloc[:, 0])
    path = chart_with(at, "alpha_t (data weight)")
    assert finite(path[0]["y"]) and finite(path[1]["y"])
    gt = chart_with(at, "GT (dopri5)")
    if "z" in gt[0]:  # image model: a mosaic of GT samples
        z = np.asarray(gt[0]["z"], dtype=float)
        assert np.isfinite(z[~np.isnan(z)]).all() and np.isfinite(z).sum() > 0
    else:  # 2-D model: GT samples next to the data, the same number, in equal-aspect panels
        names = [t["name"] for t in gt]
        assert names == ["GT (dopri5)", "data (training distribution)"], names
        assert len(gt[0]["x"]) == len(gt[1]["x"]) == evaluation.size(load_entry(at.session_state[state.MODEL_KEY]))
        assert finite(gt[0]["x"]) and finite(gt[0]["y"]) and finite(gt[1]["x"])
        fig = next(c for c in at.get("plotly_chart") if "data (training distribution)" in c.proto.spec)
        layout = json.loads(fig.proto.spec)["layout"]
        assert layout["yaxis"]["scaleanchor"] == "x" and layout["yaxis2"]["scaleanchor"] == "x2"
        assert layout["xaxis"]["range"] == layout["yaxis"]["range"] == layout["xaxis2"]["range"]
    # The distance of GT to the data, with the floor two data samples give: a shipped model is near it.
    rows = {r["distance"]: r for r in at.dataframe[0].value.to_dict("records")}
    assert rows and all(math.isfinite(r["GT vs data"]) and r["data vs data (same size)"] > 0 for r in rows.values())
    assert all(r["GT vs data"] < 5 * r["data vs data (same size)"] for r in rows.values()), rows


def test_corrupt_model_upload_gives_a_message_not_an_exception():
    at = new_app()
    before = at.session_state[state.MODEL_KEY]
    at.file_uploader(key="model.upload").set_value(("broken.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json",
                                                    "application/octet-stream")).run()
    assert not at.exception, at.exception
    msgs = errors(at)
    assert any("Could not open 'broken.safetensors'" in m and "not a checkpoint" in m for m in msgs), msgs
    assert at.session_state[state.MODEL_KEY] == before
    # A pickle (torch.save) is refused with its own message.
    at.file_uploader(key="model.upload").set_value(("model.pt", b"\x80\x02}q\x00.", "application/octet-stream")).run()
    assert not at.exception and any("pickle" in m for m in errors(at)), errors(at)


def test_valid_model_upload_becomes_the_current_model(tmp_path):
    import torch
    from core.model_io import save_model
    from core.models import build_network

    torch.manual_seed(0)
    net = build_network("time-mlp", dim=2, hidden=16, layers=1, n_freq=2)
    header = {"arch": "time-mlp", "arch_args": {"dim": 2, "hidden": 16, "layers": 1, "n_freq": 2},
              "path": {"name": "fm-cs"}, "prediction": "velocity", "data": {"name": "tiny", "shape": [2], "range": 2.0},
              "conditioning": None}
    save_model(tmp_path / "tiny.safetensors", net, header)
    at = new_app()
    at.file_uploader(key="model.upload").set_value(("tiny.safetensors", (tmp_path / "tiny.safetensors").read_bytes(),
                                                    "application/octet-stream")).run()
    assert not at.exception and not errors(at), errors(at)
    assert at.session_state[state.MODEL_KEY].startswith("upload:")
    table = at.table[0].value
    info = dict(zip(table.iloc[:, 0], table.iloc[:, 1]))
    assert info["Gaussian path"] == "fm-cs" and info["data"] == "tiny" and info["parameters"] == f"{sum(p.numel() for p in net.parameters()):,}"
    assert finite(chart_with(at, "GT (dopri5)")[0]["x"])
    assert any("does not name a data set" in c.value for c in at.caption)  # "tiny" cannot be sampled
    uploaded = at.session_state[state.MODEL_KEY]
    # Another model picked, then the same file uploaded again: it is the current model again.
    next(s for s in at.selectbox if s.label == "Model").set_value("analytic:8gaussians-fm-ot").run()
    assert at.session_state[state.MODEL_KEY] == "analytic:8gaussians-fm-ot"
    at.file_uploader(key="model.upload").set_value(("tiny.safetensors", (tmp_path / "tiny.safetensors").read_bytes(),
                                                    "application/octet-stream")).run()
    assert not at.exception and at.session_state[state.MODEL_KEY] == uploaded


def test_switching_model_carries_across_pages():
    at = new_app()
    current = at.session_state[state.MODEL_KEY]
    other = next(r for r in state.model_catalogue() if r.source == "analytic" and r.key != current)
    pick = next(s for s in at.selectbox if s.label == "Model")
    pick.set_value(other.key).run()
    assert not at.exception, at.exception
    assert at.session_state[state.MODEL_KEY] == other.key
    at.switch_page("pages/samples.py").run()
    assert not at.exception and not errors(at)
    assert at.session_state[state.MODEL_KEY] == other.key
    assert at.title[0].value == "Samples side by side" and charts(at)[0][0]["name"] == "GT (dopri5)"


# --------------------------------------------------------------------------------------------
# Train
# --------------------------------------------------------------------------------------------

def test_train_page_runs_a_short_training_and_lists_the_solver():
    at = new_app()
    at.switch_page("pages/train.py").run()
    assert not at.exception and not errors(at)
    at.selectbox(key="train.family").set_value("rk2-bespoke")
    at.number_input(key="train.nfe").set_value(6)
    at.number_input(key="train.iters").set_value(20)
    at.number_input(key="train.n_train").set_value(256)
    at.number_input(key="train.n_val").set_value(64)
    at.number_input(key="train.val_every").set_value(5)
    at.button(key="train.start").click().run()
    assert not at.exception and not errors(at), errors(at)
    assert len(at.session_state[state.JOBS]) == 1
    wait_for(at, lambda a: len(a.session_state[state.SOLVERS]) == 1, what="the run to finish and be listed")
    job = at.session_state[state.JOBS][0]
    assert job.status == "done" and job.history[-1]["iteration"] == 20
    listed = at.dataframe[0].value
    assert len(listed) == 1 and listed["NFE"].iloc[0] == 6 and math.isfinite(listed["best validation RMSE"].iloc[0])
    assert listed["solver"].iloc[0] == "#1 rk2-bespoke NFE 6"  # no metric in the label (each page shows its own)
    layout = chart_layout(at, "val RMSE")
    assert layout["title"]["text"].startswith(f"Training: run {job.id} done after")  # not "live" once finished
    assert layout["yaxis"]["title"]["text"] == "RMSE bound (data units)"
    assert layout["yaxis2"]["tickmode"] == "array" and all(t[0] != "." for t in layout["yaxis2"]["ticktext"])
    curves = chart_with(at, "val RMSE")
    assert finite(curves[1]["y"]) and len(curves[1]["y"]) == 5  # validated at 0, 5, 10, 15, 20
    t_now = next(t for t in curves if t["name"] == "learned (now)" and t.get("xaxis") == "x4")  # t_r, same chart
    assert finite(t_now["y"]) and t_now["y"][0] == 0 and abs(t_now["y"][-1] - 1) < 1e-9
    grid = next(t for t in curves if t["name"] == "time grid t_i")
    assert len(grid["y"]) == 4  # 3 RK2 steps at NFE 6
    assert at.get("download_button"), "the solver can be downloaded"


def test_sidebar_counts_jobs_by_their_real_status():
    from explorer import jobs

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    running, queued, done = (jobs.Job("train", "x", status=s) for s in (jobs.RUNNING, jobs.QUEUED, jobs.DONE))
    done.finished.set()
    at.session_state[state.JOBS] = [running, queued, done]
    at.run()
    assert not at.exception, at.exception
    line = " ".join(c.value for c in at.sidebar.get("caption"))  # (AppTest draws the sidebar on the first page only)
    assert "1 job(s) running, 1 queued" in line, line


def test_train_page_live_chart_keeps_its_identity_while_the_run_grows():
    """While a run trains, the curves go to the live-chart component with a key of their own:
    the element's id must not change as points arrive (st.plotly_chart hashes the figure into
    its id, which re-mounts the chart on every update)."""
    at = new_app()
    at.switch_page("pages/train.py").run()
    at.number_input(key="train.iters").set_value(20000)
    at.number_input(key="train.n_train").set_value(256)
    at.number_input(key="train.val_every").set_value(5)
    at.button(key="train.start").click().run()
    job = at.session_state[state.JOBS][0]
    try:
        seen = []
        deadline = time.time() + 120
        while time.time() < deadline and len({n for _, n in seen}) < 3:
            time.sleep(0.3)
            at.run()
            assert not at.exception, at.exception
            live = at.get("component_instance")
            if live:
                assert len(live) == 1 and live[0].proto.component_name.endswith("bespoke_live_chart")
                traces = figures.decode_traces(json.loads(live[0].proto.json_args)["spec"])
                assert traces[0]["name"] == "loss" and (len(traces[0]["y"]) < 2 or finite(traces[0]["y"][1:]))
                assert traces[1]["x"][0] == 0  # the initial solver's validation heads the curve
                seen.append((live[0].proto.id, len(traces[0]["x"])))
        assert len({n for _, n in seen}) >= 3, f"the live chart did not grow: {seen}"
        assert len({i for i, _ in seen}) == 1, "the live chart changed identity between updates"
        assert not at.get("plotly_chart") or all("loss" not in [t.get("name") for t in c] for c in charts(at))
    finally:
        job.stop.set()
        job.finished.wait(60)
    wait_for(at, lambda a: len(a.session_state[state.SOLVERS]) == 1, what="the stopped run to be listed")
    assert not at.get("component_instance"), "a finished run is drawn as an ordinary chart"
    final = chart_with(at, "loss")
    assert finite(final[0]["y"][1:]) and finite(final[1]["y"])  # row 0: the validation at init, no loss


def test_train_page_falls_back_to_a_plain_chart_without_the_live_component(monkeypatch):
    from explorer import livechart

    def unavailable():
        raise OSError("could not write the live chart's files under /nowhere")

    monkeypatch.setattr(livechart, "_served_dir", unavailable)
    at = new_app()
    at.switch_page("pages/train.py").run()
    at.number_input(key="train.iters").set_value(20000)
    at.number_input(key="train.n_train").set_value(256)
    at.button(key="train.start").click().run()
    job = at.session_state[state.JOBS][0]
    try:
        wait_for(at, lambda a: any(t.get("name") == "loss" for c in charts(a) for t in c), what="the plain live chart")
        assert not at.get("component_instance")
        assert any("fast live chart is unavailable" in c.value and "/nowhere" in c.value for c in at.caption)
    finally:
        job.stop.set()
        job.finished.wait(60)


def test_solver_upload_roundtrip_and_corrupt_solver(app_with_solver, trained):
    at = app_with_solver
    _, field, res = trained
    at.switch_page("pages/train.py").run()
    entry = at.session_state[state.SOLVERS][0]
    raw = entry.to_bytes(field)
    at.file_uploader(key="train.upload").set_value(("saved.safetensors", raw, "application/octet-stream")).run()
    assert not at.exception and not errors(at), errors(at)
    rows = at.session_state[state.SOLVERS]
    assert len(rows) == 2 and rows[1].source == "uploaded" and rows[1].digest == entry.digest
    at.file_uploader(key="train.upload").set_value(("junk.safetensors", raw[:100], "application/octet-stream")).run()
    assert not at.exception, at.exception
    assert any("Could not use 'junk.safetensors'" in m for m in errors(at)), errors(at)
    assert len(at.session_state[state.SOLVERS]) == 2


# --------------------------------------------------------------------------------------------
# Schedules, Paths, Samples, Ablations, Benchmark
# --------------------------------------------------------------------------------------------

def test_schedules_page_without_and_with_a_solver(app_with_solver):
    at = new_app()
    at.switch_page("pages/schedules.py").run()
    assert not at.exception and not errors(at)
    names = [t["name"] for t in charts(at)[0]]
    assert "identity" in names and "EDM schedule" in names
    at = app_with_solver
    at.switch_page("pages/schedules.py").run()
    assert not at.exception and not errors(at)
    st_map = chart_with(at, "learned")
    learned = [t for t in st_map if t["name"] == "learned"]
    assert len(learned) == 4 and all(finite(t["y"]) for t in learned)
    assert learned[0]["y"][0] == 0 and abs(learned[0]["y"][-1] - 1) < 1e-12  # t_0 = 0, t_1 = 1
    assert np.all(np.diff(learned[0]["y"]) > 0)  # t_r increasing
    eq = chart_with(at, "alpha_bar_r (solver)")
    assert finite(eq[0]["y"]) and abs(eq[0]["y"][0]) < 1e-2  # alpha_bar_0 = s_0 alpha_0 ~ 0


def test_paths_page_projects_gt_rk2_and_learned(app_with_solver):
    at = app_with_solver
    at.switch_page("pages/paths.py").run()
    assert not at.exception and not errors(at), errors(at)
    pca = chart_with(at, "noise x0")
    names = [t["name"] for t in pca]
    assert {"GT (dopri5)", "RK2 (midpoint)", "#1 test RK2-Bespoke"} <= set(names)
    err = next(c for c in charts(at) if [t["name"] for t in c] == ["RK2 (midpoint)", "#1 test RK2-Bespoke"])
    assert finite(err[0]["y"]) and finite(err[1]["y"])
    assert err[0]["y"][0] == 0 and err[0]["y"][-1] > 0  # same noise: zero error at t = 0
    assert len(err[1]["x"]) == 4  # 3 steps of RK2-Bespoke at NFE 6 -> 4 step points
    table = at.dataframe[0].value
    assert np.isfinite(table["RMSE at t = 1 (12 drawn)"]).all()
    on_eval = table[f"RMSE, evaluation set ({evaluation.size(load_entry(at.session_state[state.MODEL_KEY]))})"]
    # The evaluation-set number is the one the Samples page shows for the same solver at the same NFE.
    at.switch_page("pages/samples.py").run()
    samples = at.dataframe[0].value
    assert list(samples["RMSE to GT"]) == list(on_eval)


def test_samples_page_side_by_side_with_metrics(app_with_solver):
    at = app_with_solver
    at.switch_page("pages/samples.py").run()
    assert not at.exception and not errors(at), errors(at)
    fig = charts(at)[0]
    assert [t["name"] for t in fig] == ["GT (dopri5)", "RK2 (midpoint) @ 6", "#1 test RK2-Bespoke"]
    table = at.dataframe[0].value
    assert list(table["NFE"]) == [6, 6]
    assert np.isfinite(table["RMSE to GT"]).all() and np.isfinite(table["PSNR to GT (dB)"]).all()
    assert (table["RMSE to GT"] > 0).all()


def test_ablations_page_runs_a_small_sweep():
    at = new_app()
    at.switch_page("pages/ablations.py").run()
    assert not at.exception and not errors(at)
    at.selectbox(key="abl.family").set_value("rk1-bespoke").run()
    at.number_input(key="abl.nfe").set_value(4)
    at.text_input(key="abl.values.lipschitz").set_value("0, 2")
    at.number_input(key="abl.iters").set_value(5)
    at.number_input(key="abl.n_train").set_value(64)
    at.button(key="abl.start").click().run()
    assert not at.exception and not errors(at), errors(at)
    wait_for(at, lambda a: len(a.session_state[state.ABLATIONS]) == 1, what="the sweep to finish")
    result = at.session_state[state.ABLATIONS][0]
    assert [r["lipschitz"] for r in result["rows"]] == [0.0, 2.0]
    fig = chart_with(at, "trained")
    assert finite(fig[0]["y"]) and list(fig[0]["x"]) == [0.0, 2.0]
    assert len(at.dataframe[0].value) == 2


def test_benchmark_page_error_vs_nfe(app_with_solver):
    at = app_with_solver
    at.switch_page("pages/benchmark.py").run()
    assert not at.exception and not errors(at), errors(at)
    fig = charts(at)[0]
    names = [t["name"] for t in fig]
    assert {"RK1 (Euler)", "RK2 (midpoint)", "RK4", "#1 test RK2-Bespoke"} <= set(names)
    for t in fig:
        assert finite(t["x"]) and finite(t["y"]), t["name"]
    euler = next(t for t in fig if t["name"] == "RK1 (Euler)")
    assert euler["y"][-1] < euler["y"][0]  # more NFE, less error
    learned = next(t for t in fig if t["name"] == "#1 test RK2-Bespoke")
    assert list(learned["x"]) == [6]


def test_schedules_page_shows_bns_grid_and_coefficient_heatmaps(trained):
    from core.solvers.bns import BNSSolver

    key, field, _ = trained
    solver = BNSSolver(6, sigma0=2.0, path=field.path, guidance_scale=field.guidance_scale).init_from("midpoint", field)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.SOLVERS] = [state.SolverEntry("#1 test BNS", solver, field.model_id, field.guidance_scale,
                                                         "trained")]
    at.run()
    at.switch_page("pages/schedules.py").run()
    assert not at.exception and not errors(at), errors(at)
    grid = chart_with(at, "learned t_i")
    t = grid[0]["y"]
    assert len(t) == 7 and t[0] == 0 and abs(t[-1] - 1) < 1e-12 and np.all(np.diff(t) > 0)
    heat = chart_with(at, "b_ij (weights of u_j)")
    b = np.asarray(next(h for h in heat if h["name"] == "b_ij (weights of u_j)")["z"], dtype=float)
    assert b.shape == (6, 6)
    assert np.isnan(b[np.triu_indices(6, 1)]).all() and np.isfinite(b[np.tril_indices(6)]).all()
    pre = chart_with(at, "preconditioning (sigma0 = 2)")
    s = next(tr for tr in pre if tr["name"] == "preconditioning (sigma0 = 2)" and tr.get("yaxis") == "y3")["y"]
    assert abs(s[-1] - 1) < 1e-9  # the preconditioned path ends on the same sample (s_1 = 1)


def test_a_closed_tab_loses_nothing_runs_are_saved_and_restored(tmp_path, monkeypatch):
    """The worker writes every finished run to disk; a NEW session (the tab was closed) lists it
    on the Train page and adds it back to its solver list."""
    monkeypatch.setenv("BESPOKE_RUNS_DIR", str(tmp_path))
    at = new_app()
    at.switch_page("pages/train.py").run()
    at.selectbox(key="train.family").set_value("rk1-bespoke")
    at.number_input(key="train.nfe").set_value(4)
    at.number_input(key="train.iters").set_value(5)
    at.number_input(key="train.n_train").set_value(128)
    at.number_input(key="train.n_val").set_value(64)
    at.button(key="train.start").click().run()
    job = at.session_state[state.JOBS][0]
    assert job.finished.wait(120), "the run did not finish"
    saved = list(tmp_path.glob("*.safetensors"))
    assert len(saved) == 1 and job.params["saved_to"] == str(saved[0])
    del at  # the tab is closed: its session state is gone

    fresh = new_app()
    fresh.switch_page("pages/train.py").run()
    assert not fresh.session_state[state.SOLVERS]
    assert fresh.selectbox(key="train.saved_pick").value == str(saved[0])
    fresh.button(key="train.saved_add").click().run()
    assert not fresh.exception and not errors(fresh), errors(fresh)
    rows = fresh.session_state[state.SOLVERS]
    assert len(rows) == 1 and rows[0].source == "restored" and rows[0].solver.nfe == 4
    assert math.isfinite(rows[0].best["rmse"])


# --------------------------------------------------------------------------------------------
# Numbers a user can trust (issue 11)
# --------------------------------------------------------------------------------------------

def test_samples_page_compares_at_equal_nfe_by_default_and_warns_otherwise(trained):
    key, field, res = trained  # a learned solver at NFE 6
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.SOLVERS] = [state.SolverEntry("#1 test", res.solver, field.model_id, field.guidance_scale,
                                                         "trained")]
    at.session_state["samples.nfe"] = 4  # left over from earlier in the session
    at.run()
    at.switch_page("pages/samples.py").run()
    assert not at.exception and not errors(at), errors(at)
    assert list(at.dataframe[0].value["NFE"]) == [6, 6] and not at.warning
    at.checkbox(key="samples.same_nfe").uncheck().run()
    at.number_input(key="samples.nfe").set_value(4).run()
    assert list(at.dataframe[0].value["NFE"]) == [4, 6]
    assert any("Not an equal-NFE comparison" in w.value and "NFE 4" in w.value for w in at.warning), at.warning


def test_a_solver_uploaded_again_after_removal_is_added_and_a_wrong_one_errors_every_time(app_with_solver, trained):
    at = app_with_solver
    _, field, _ = trained
    at.switch_page("pages/train.py").run()
    raw = at.session_state[state.SOLVERS][0].to_bytes(field)
    upload = lambda name, data: at.file_uploader(key="train.upload").set_value((name, data, "application/octet-stream")).run()
    upload("mine.safetensors", raw)
    assert len(at.session_state[state.SOLVERS]) == 2
    at.selectbox(key="train.solver_pick").set_value(at.session_state[state.SOLVERS][1].id)
    at.button(key="train.remove").click().run()
    assert len(at.session_state[state.SOLVERS]) == 1
    upload("mine.safetensors", raw)  # the same file again: processed again
    assert not at.exception and len(at.session_state[state.SOLVERS]) == 2, errors(at)
    upload("mine.safetensors", raw)  # already listed: said so, not added twice
    assert len(at.session_state[state.SOLVERS]) == 2 and any("already in the list" in i.value for i in at.info)
    # A solver made for another model: the error every time it is uploaded.
    other = load_entry("analytic:8gaussians-fm-ot")
    from core.solvers.learned import solver_to_bytes
    foreign = solver_to_bytes(at.session_state[state.SOLVERS][0].solver, other)
    for _ in range(2):
        upload("foreign.safetensors", foreign)
        assert not at.exception and any("Could not use 'foreign.safetensors'" in m for m in errors(at)), errors(at)
    assert len(at.session_state[state.SOLVERS]) == 2


def test_benchmark_defaults_are_per_kind_of_model():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["bench.n.2-D"] = 512  # chosen on a 2-D model earlier in the session
    at.session_state["bench.solvers"] = ["euler"]
    at.session_state["bench.nfes.image"] = "2, 4"
    at.session_state[state.MODEL_KEY] = "shipped:digits_fm-ot.safetensors"
    at.run()
    at.switch_page("pages/benchmark.py").run()
    assert not at.exception and not errors(at), errors(at)
    assert at.number_input(key="bench.n.image").value == evaluation.SIZES["image"]
    assert any(f"seed {evaluation.EVAL_SEED}" in c.value and "evaluation set" in c.value for c in at.caption)


def test_paths_page_explains_bns_points_and_the_pca_plane(trained):
    from core.solvers.bns import BNSSolver

    _, field, _ = trained
    solver = BNSSolver(4, sigma0=1.0, path=field.path, guidance_scale=field.guidance_scale).init_from("euler", field)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[state.SOLVERS] = [state.SolverEntry("#1 bns NFE 4", solver, field.model_id, field.guidance_scale,
                                                         "trained", spec={"family": "bns"})]
    at.run()
    at.switch_page("pages/paths.py").run()
    assert not at.exception and not errors(at), errors(at)
    assert any("trained on its **final** sample only" in i.value for i in at.info)
    assert any("holds 100% of the variance" in c.value for c in at.caption)


def test_benchmark_says_when_two_solvers_coincide():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["bench.solvers"] = ["euler", "ddim"]
    at.session_state["bench.nfes.2-D"] = "2, 3, 5"
    at.run()
    at.switch_page("pages/benchmark.py").run()
    assert not at.exception and not errors(at), errors(at)
    assert any("RK1 (Euler) and DDIM give the same samples" in c.value for c in at.caption), [c.value for c in at.caption]
