"""Bespoke Explorer: `streamlit run streamlit_app.py`. This script only routes (st.navigation);
each page is a short script in pages/, the app's own code lives in explorer/."""
import traceback
from pathlib import Path

import streamlit as st

# A local favicon: a ":material/...:" page icon makes the browser fetch an SVG from Google's font
# host, and the app must work offline without a single request off the machine.
st.set_page_config(page_title="Bespoke Explorer", page_icon=str(Path(__file__).parent / "explorer" / "favicon.png"),
                   layout="wide")

from explorer import jobs, state, ui  # noqa: E402  (after the page config: torch takes a second to import)
jobs.configure_torch()
state.init()
state.harvest()

pages = [
    st.Page(ui.PAGES["model"], title="Model", icon=":material/deployed_code:", default=True),
    st.Page(ui.PAGES["train"], title="Train", icon=":material/model_training:"),
    st.Page(ui.PAGES["schedules"], title="Schedules", icon=":material/timeline:"),
    st.Page(ui.PAGES["paths"], title="Paths", icon=":material/route:"),
    st.Page(ui.PAGES["samples"], title="Samples", icon=":material/grid_view:"),
    st.Page(ui.PAGES["ablations"], title="Ablations", icon=":material/tune:"),
    st.Page(ui.PAGES["benchmark"], title="Benchmark", icon=":material/speed:"),
]
page = st.navigation(pages)
ui.sidebar()
try:
    page.run()
except Exception as e:  # one readable line (the config shows only an error's type); traceback in the log
    traceback.print_exc()
    ui.show_error(f"This page stopped: {jobs.readable_error(e)}")
state.save_kept()
