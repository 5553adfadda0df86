"""The live training chart component (explorer/livechart.py): its served folder, the figure it
is sent, and its page. The in-browser behaviour (one graph moved by Plotly.react) is checked by
tests/test_browser.py."""
import json
import os

import numpy as np
import plotly
import pytest

from explorer import figures, livechart


def test_component_dir_has_the_page_and_plotly_js_and_is_reused(tmp_path):
    d = livechart.component_dir(tmp_path)
    assert (d / "index.html").read_bytes() == livechart.PAGE.read_bytes()
    assert (d / "plotly.min.js").stat().st_size == livechart.plotly_js().stat().st_size
    assert plotly.__version__ in d.name
    assert livechart.component_dir(tmp_path) == d  # made once
    assert [p.name for p in tmp_path.iterdir()] == [d.name]  # no temporary folder left behind


def test_component_dir_falls_back_when_the_cache_is_not_writable(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("BESPOKE_CACHE_DIR", str(blocked))
    monkeypatch.setattr(livechart.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    d = livechart.component_dir()
    assert d.parent == tmp_path / "tmp" / "bespoke-explorer" and (d / "index.html").is_file()


def test_component_dir_names_the_folder_it_could_not_write(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(OSError, match="file"):
        livechart.component_dir(blocked)


def test_spec_is_the_figure_as_plotly_json():
    hist = [{"iteration": i, "loss": 1.0 / (i + 1), **({"rmse": 0.1, "psnr": 20.0} if i % 5 == 0 else {})}
            for i in range(50)]
    fig = figures.training_live(hist)
    spec = livechart.to_spec(fig)
    traces = figures.decode_traces(spec)
    assert [t["name"] for t in traces] == ["loss", "val RMSE", "val PSNR"]
    np.testing.assert_allclose(traces[0]["y"], [1.0 / (i + 1) for i in range(50)])
    layout = json.loads(spec)["layout"]
    assert layout["xaxis"]["automargin"] is False and layout["yaxis3"]["ticklabeloverflow"] == "allow"


def test_page_speaks_the_component_protocol_and_loads_plotly_locally():
    html = livechart.PAGE.read_text()
    for needle in ("streamlit:componentReady", "streamlit:render", "streamlit:setFrameHeight", "Plotly.react",
                   '<script src="plotly.min.js">'):
        assert needle in html, needle
    assert "http" not in html.split("-->", 1)[1], "the page must not fetch anything from the network"
