"""The real app in a real browser: `streamlit run streamlit_app.py` on a free localhost port,
every page opened in headless Chromium (Playwright), no exception box anywhere, a training run
whose curve visibly updates, job status labels that follow the runs, a solver file uploaded
again after "Remove from the list", the Samples page at equal NFE, not one request off the
machine, and one screenshot per page.

Screenshots go to $BESPOKE_SCREENSHOTS if set (e.g. docs/screenshots), else to pytest's tmp dir.
Needs Debian's chromium (`apt-get install -y chromium`; .ci/run installs it): without it this
test FAILS with that instruction, it does not skip.
"""
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import bench_app as h  # noqa: E402  (the shared server / browser harness)

pytestmark = pytest.mark.browser


def test_every_page_in_chromium(tmp_path):
    if h.chromium_path() is None:
        pytest.fail("chromium is not installed, so the app cannot be tested in a browser: run "
                    "`apt-get install -y chromium` (the CI script .ci/run does this)")
    shots = Path(os.environ.get("BESPOKE_SCREENSHOTS", tmp_path / "screenshots"))
    log = tmp_path / "streamlit.log"
    step = ["starting the server"]  # what the test was doing, for the failure message
    try:
        with h.Server(log) as server, h.browser_page() as page:
            urls = h.record_requests(page)  # every request the page makes, from the first
            step[0] = "opening the Model page"
            page.goto(server.url)
            h.wait_rendered(page, "Model", min_charts=2, timeout=180)
            assert h.exceptions_shown(page) == []
            assert h.shot(page, shots, "1_model").stat().st_size > 10_000

            # Train: start a long run, see its curve grow in the browser, stop it, find the solver listed.
            step[0] = "opening the Train page"
            h.goto(page, "Train", "Train a solver")
            assert h.exceptions_shown(page) == []
            step[0] = "starting a training run"
            h.start_training(page, iters=5000, n_train=512)
            step[0] = "waiting for the training chart"
            frame = h.wait_training_chart(page, timeout=180)
            sidebar = page.locator("[data-testid=stSidebar]")
            sidebar.get_by_text("1 job(s) running").first.wait_for(timeout=30_000)
            step[0] = "watching the training curve update"
            gd = frame.evaluate_handle("() => document.getElementById('chart')")
            seen = []
            deadline = time.time() + 90
            while time.time() < deadline and len(set(seen)) < 4:
                seen.append(h.live_points(frame))
                time.sleep(0.25)
            assert len(set(seen)) >= 4 and seen[-1] > seen[0], f"training curve did not update: {seen}"
            # Moved in place (Plotly.react on one graph), not re-mounted per update.
            assert frame.evaluate("(g) => g === document.getElementById('chart') && window.liveChart.draws >= 4", gd)
            step[0] = "stopping the run"
            page.get_by_role("button", name="Stop", exact=True).first.click()
            h.wait_training_done(page, timeout=180)
            h.wait_rendered(page, "Train a solver")
            page.get_by_text("stopped: kept the best solver so far").first.wait_for(timeout=60_000)
            assert h.exceptions_shown(page) == []
            step[0] = "checking the status labels after the run"
            sidebar.get_by_text("0 job(s) running").first.wait_for(timeout=30_000)
            assert h.chart_titles(page)[0].startswith("Training: run 1 stopped after"), h.chart_titles(page)
            # A second, short run: the run selector labels each run with its real, final status.
            h.set_number(page, "Iterations", 30)  # (the budget expander is still open from the first run)
            page.get_by_role("button", name="Train", exact=True).first.click()
            page.get_by_text("finished; saved to").first.wait_for(timeout=180_000)
            run_pick = page.get_by_role("combobox", name="Run").first
            deadline, picked = time.time() + 30, ""
            while time.time() < deadline and "(done)" not in picked:  # the page redraws when the run ends
                picked = run_pick.input_value()
                time.sleep(0.2)
            assert picked.startswith("run 2:") and picked.endswith("(done)"), picked
            h.wait_rendered(page, "Train a solver")
            run_pick.click()
            page.get_by_role("option").first.wait_for(timeout=10_000)
            options = page.get_by_role("option").all_inner_texts()
            page.keyboard.press("Escape")
            assert any("run 1:" in o and "(stopped)" in o for o in options), options
            sidebar.get_by_text("0 job(s) running").first.wait_for(timeout=30_000)
            h.shot(page, shots, "2_train")

            step[0] = "uploading a solver again after removing it"
            saved = sorted(Path(os.environ["BESPOKE_RUNS_DIR"]).glob("*.safetensors"), key=os.path.getmtime)[-1]
            uploader = page.locator("[data-testid=stFileUploader]", has_text="Upload a solver")
            for number in (3, 4):  # uploaded, removed, uploaded again: listed both times (#1, #2: the runs)
                if number == 4:  # clear the uploader (its file chip's x), as a user does before uploading again
                    uploader.locator("[data-testid=stFileChipDeleteBtn]").first.click()
                    time.sleep(0.3)
                    h.wait_rendered(page, "Train a solver")
                # (the file's bytes, not its path: Chromium ignores the same path set on the input twice)
                uploader.locator("input[type=file]").set_input_files(
                    files=[{"name": saved.name, "mimeType": "application/octet-stream", "buffer": saved.read_bytes()}])
                page.get_by_text(f"Added '{saved.name}' to the list as #{number} ").first.wait_for(timeout=60_000)
                h.wait_rendered(page, "Train a solver")
                page.get_by_role("button", name="Remove from the list").first.click()  # the upload is picked
                time.sleep(0.3)
                h.wait_rendered(page, "Train a solver")
            assert h.exceptions_shown(page) == []

            # Every other page, now with a learned solver in the session.
            for n, (link, title, min_charts) in enumerate(h.PAGES[2:], start=3):
                step[0] = f"opening the {link} page"
                h.goto(page, link, title, min_charts, timeout=180)
                assert h.exceptions_shown(page) == [], f"exception on the {link} page"
                h.shot(page, shots, f"{n}_{link.lower()}")
            # The learned solver appears on the Samples page next to GT and RK2.
            step[0] = "checking the Samples page"
            h.goto(page, "Samples", "Samples side by side", 1, timeout=180)
            names = page.evaluate("""() => document.querySelector('[data-testid=stPlotlyChart] .js-plotly-plot')
                .data.map(t => t.name)""")
            assert names[0] == "GT (dopri5)" and len(names) == 3, names
            # Equal NFE by default: the built-in solver runs at the learned solver's NFE, no warning.
            panel_titles = page.evaluate("""() => document.querySelector('[data-testid=stPlotlyChart] .js-plotly-plot')
                .layout.annotations.map(a => a.text)""")
            nfes = {t.split("<sup>NFE ")[1].split(" ")[0] for t in panel_titles[1:]}
            assert len(nfes) == 1, panel_titles
            assert not page.get_by_text("Not an equal-NFE comparison").count()
            step[0] = "checking that nothing was requested off the machine"
            assert len(urls) > 20 and h.off_machine(urls) == [], h.off_machine(urls)
    except Exception as e:
        if log.exists():
            print(log.read_text()[-5000:])
        raise AssertionError(f"browser test failed while {step[0]}: {type(e).__name__}: {e}") from e
    for f in shots.glob("*.png"):
        assert f.stat().st_size < 300_000, f"{f} is {f.stat().st_size} bytes"
    assert len(list(shots.glob("*.png"))) == 7
