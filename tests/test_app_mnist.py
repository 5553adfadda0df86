"""AppTest of every page on the shipped 28x28 MNIST pipeline (assets/mnist_fm-ot): it is in the
model list (not the default), its shipped learned solvers are there the moment it is picked,
images are drawn as readable grids, the Paths page projects the 784-D paths and says how much
variance the plane holds, and the Samples page scores legibility and the FD (not Inception).
The evaluation set is cut to 10 samples here (a U-Net's GT costs seconds per sample on a CPU);
the GT is solved once and shared through the app's disk cache."""
import json
import os

import pytest
from streamlit.testing.v1 import AppTest

from explorer import evaluation, figures, state
from explorer.models import catalogue, shipped_solver_files
from tests.helpers import one_torch_thread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "streamlit_app.py")
KEY = "shipped:mnist_fm-ot"
SHIPPED = {"shipped rk2-bespoke NFE 8", "shipped bns NFE 8"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def mnist_app(monkeypatch):
    monkeypatch.setitem(evaluation.SIZES, "large image", 10)
    at = AppTest.from_file(APP, default_timeout=600)
    at.session_state[state.MODEL_KEY] = KEY
    at.session_state["paths.n"] = 4
    at.run()
    assert not at.exception, at.exception
    return at


def _charts(at) -> list[tuple[list[dict], dict]]:
    return [(figures.decode_traces(c.proto.spec), json.loads(c.proto.spec)["layout"]) for c in at.get("plotly_chart")]


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_listed_after_the_default_model_with_its_shipped_solvers():
    keys = [r.key for r in catalogue()]
    assert KEY in keys and state.default_model_key() != KEY
    names = {p.name: h for p, h in shipped_solver_files(KEY)}
    assert set(names) == {"rk2-bespoke_nfe8.bespoke", "bns_nfe8.bespoke"}
    assert all(h is not None for h in names.values()), "each shipped solver comes with its training curve"


def test_every_page_runs_on_the_mnist_model(mnist_app):
    at = mnist_app
    assert at.title[0].value == "Model" and not _errors(at)
    grids = [(t, lay) for t, lay in _charts(at) if t and t[0].get("type") == "heatmap"]
    assert grids, "the GT samples are drawn as an image grid"
    traces, layout = grids[0]
    assert [t["name"] for t in traces] == ["GT (dopri5)", "data (training distribution)"]
    assert layout["height"] > 360  # one grid a row: 28x28 digits at a readable size
    assert any("Legibility of the GT samples" in c.value for c in at.caption)
    assert "not Inception FID" in at.dataframe[0].value["distance"].iloc[0]

    at.switch_page("pages/schedules.py").run()
    assert not at.exception and not _errors(at)
    assert set(at.selectbox(key="schedules.solver").options) == SHIPPED
    assert any(t[0].get("name") == "loss" for t, _ in _charts(at) if t), "the shipped training curve is drawn"

    at.switch_page("pages/samples.py").run()
    assert not at.exception and not _errors(at)
    table = at.dataframe[0].value
    assert {"legibility", "FD (not Inception)", "FD, % of GT"} <= set(table.columns)
    assert any(s.startswith("shipped ") for s in table["solver"])
    assert ((table["legibility"] >= 0) & (table["legibility"] <= 1)).all()

    at.switch_page("pages/paths.py").run()
    assert not at.exception and not _errors(at)
    pca = [lay for t, lay in _charts(at) if any(tr.get("name") == "noise x0" for tr in t)][0]
    assert "of the variance" in pca["xaxis"]["title"]["text"]
    assert any("of 784 dimensions" in c.value for c in at.caption)
    assert set(at.selectbox(key="paths.solver").options) == SHIPPED

    at.switch_page("pages/train.py").run()
    assert not at.exception and not _errors(at)
    assert at.number_input(key="train.n_train.large").value == 96  # a U-Net's GT budget, not the 2-D one
    assert at.number_input(key="train.batch.large").value == 16
    assert SHIPPED <= set(at.dataframe[0].value["solver"])  # listed with the session's solvers

    at.switch_page("pages/ablations.py").run()
    assert not at.exception and not _errors(at)

    at.switch_page("pages/benchmark.py").run()
    assert not at.exception and not _errors(at)
    rows = at.dataframe[0].value
    assert {"shipped rk2-bespoke NFE 8", "shipped bns NFE 8"} <= set(rows["solver"])
    assert set(rows["nfe"]) >= {4, 8, 16}


def test_cold_start_on_the_default_model_does_not_import_diffusers():
    """The MNIST folder is listed, but diffusers (seconds to import) loads only when it is picked."""
    import subprocess
    import sys
    code = ("import sys; from streamlit.testing.v1 import AppTest; "
            f"at = AppTest.from_file({APP!r}, default_timeout=300).run(); "
            "assert not at.exception, at.exception; "
            "print('models', len(at.selectbox[0].options), 'diffusers', "
            "any(m.split('.')[0] == 'diffusers' for m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "diffusers False" in r.stdout, r.stdout
    n = int(r.stdout.split("models ")[1].split()[0])
    assert n == len(catalogue()) and any(e.key == KEY for e in catalogue())
