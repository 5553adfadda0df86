"""The live training chart: one plotly graph per run that is moved, not rebuilt, as points
arrive (a Streamlit component; its page is explorer/live_chart.html).

st.plotly_chart hashes the figure into the element's identity, so a chart whose data changes
several times a second is re-mounted as often and drawn from scratch each time (Plotly.newPlot:
every axis, tick label and margin measured again). Measured with bench/bench_app.py on the
2-core machine during training, that capped the Train page at ~2 chart updates a second with
the browser's main thread busy 80 % of the time; with this component it keeps up with the
page's 5 requests a second at about half that load. Here the component keeps its iframe (its
identity is its key) and calls Plotly.react on each new figure, dropping figures that arrive
while it is still drawing.

The figure goes over as plotly's own JSON (numpy arrays base64-encoded), so it is exactly the
figure the rest of the app would draw with st.plotly_chart. The component's folder is made
once per plotly version in the cache: our page plus the plotly.min.js of the installed plotly
package (no download, no bundled copy of plotly.js in this repository).
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import plotly
import plotly.io as pio
import streamlit.components.v1 as components

PAGE = Path(__file__).with_name("live_chart.html")
NAME = "bespoke_live_chart"


def plotly_js() -> Path:
    """plotly.min.js of the installed plotly package."""
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.js not found at {path}: reinstall plotly (pip install plotly)")
    return path


def _cache_root() -> Path:
    return Path(os.environ.get("BESPOKE_CACHE_DIR") or Path.home() / ".cache" / "bespoke-explorer")


def component_dir(root: Optional[Path] = None) -> Path:
    """The folder Streamlit serves the component from: index.html (our page) and plotly.min.js.
    Named after the page's content hash and the plotly version, written atomically once; falls
    back to the system temp folder where the cache is not writable."""
    page = PAGE.read_bytes()
    tag = f"{plotly.__version__}-{hashlib.sha256(page).hexdigest()[:12]}"
    for base in ([root] if root is not None else [_cache_root(), Path(tempfile.gettempdir()) / "bespoke-explorer"]):
        target = base / f"live_chart-{tag}"
        if (target / "index.html").is_file() and (target / "plotly.min.js").is_file():
            return target
        try:
            base.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".live_chart-", dir=base))
            shutil.copyfile(plotly_js(), tmp / "plotly.min.js")
            (tmp / "index.html").write_bytes(page)
            try:
                tmp.rename(target)
            except OSError:  # made by another process meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
            if (target / "index.html").is_file():
                return target
        except OSError:
            continue
    raise OSError(f"could not write the live chart's files under {root or _cache_root()} or the temp folder")


@functools.lru_cache(maxsize=None)
def _served_dir() -> str:
    return str(component_dir())


def _component():
    # Declared on every call (cheap and idempotent): each Streamlit runtime (the server, every
    # AppTest) keeps its own component registry.
    return components.declare_component(NAME, path=_served_dir())


def to_spec(fig) -> str:
    """The figure as plotly JSON (what st.plotly_chart would send), without re-validation."""
    return pio.to_json(fig, validate=False)


def live_chart(fig, key: str) -> None:
    """Draw `fig` in the live chart named `key`; later calls with the same key move the same
    graph (Plotly.react) instead of re-mounting it."""
    _component()(spec=to_spec(fig), key=key, default=None)
