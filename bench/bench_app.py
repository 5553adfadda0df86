"""Responsiveness of the app in a real browser (headless Chromium via Playwright).

    python3 bench/bench_app.py [--screenshots docs/screenshots] [--iters 300] [--json out.json]
    python3 bench/bench_app.py --cold-start 3 [--before REF]   # cold start only; REF's code too

Measures, on the default model:
- cold start: `streamlit run` launched -> server healthy -> first page (Model) fully rendered
  (script finished, no skeletons, its charts drawn);
- page switch: click a sidebar link -> the new page fully rendered, for every page;
- chart updates per second during training: the live training chart (a plotly graph in a
  component frame, explorer/livechart.py) is sampled every 20 ms; every change of its data
  counts as one update.
The same harness (server, browser, waits) serves tests/test_browser.py.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
# (sidebar link text, page title, how many charts the page draws at least with no solver trained)
PAGES = [("Model", "Model", 2), ("Train", "Train a solver", 0), ("Schedules", "Schedules", 1),
         ("Paths", "Sampling paths", 2), ("Samples", "Samples side by side", 1), ("Ablations", "Ablations", 0),
         ("Benchmark", "Benchmark", 1)]


def chromium_path() -> str | None:
    for p in CHROMIUM_CANDIDATES:
        if os.path.exists(p):
            return p
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run streamlit_app.py` on a free localhost port, stopped on exit."""

    def __init__(self, log_path: Path | None = None, root: Path = ROOT):
        self.root = Path(root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.t_launch = 0.0
        self.t_healthy = 0.0

    def __enter__(self) -> "Server":
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.t_launch = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
             "--server.port", str(self.port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"], cwd=self.root, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {self.proc.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1).read().strip() == b"ok":
                    self.t_healthy = time.perf_counter()
                    return self
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError("streamlit did not become healthy within 120 s")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    """A headless Chromium page (Debian's chromium; Playwright cannot download its own here)."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium is not installed: run `apt-get install -y chromium` (CI's .ci/run does)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def wait_rendered(page, title: str, min_charts: int = 0, timeout: float = 120.0) -> None:
    """Wait until the page titled `title` has finished its script run the way Streamlit's own
    e2e tests do (connected, script not running, no skeletons) and drawn `min_charts` charts."""
    ms = timeout * 1000
    page.wait_for_selector("[data-testid=stApp][data-test-connection-state=CONNECTED]", timeout=ms)
    page.locator("h1", has_text=title).first.wait_for(timeout=ms)
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = page.evaluate("""() => {
            const app = document.querySelector('[data-testid=stApp]');
            return {running: app && app.getAttribute('data-test-script-state'),
                    skeletons: document.querySelectorAll('[data-testid=stSkeleton]').length,
                    charts: document.querySelectorAll('[data-testid=stPlotlyChart] .js-plotly-plot .main-svg').length > 0
                      ? document.querySelectorAll('[data-testid=stPlotlyChart] .js-plotly-plot').length : 0};
        }""")
        if state["running"] == "notRunning" and state["skeletons"] == 0 and state["charts"] >= min_charts:
            return
        time.sleep(0.05)
    raise TimeoutError(f"page {title!r} did not finish rendering within {timeout} s (last state {state})")


def chart_titles(page) -> list[str]:
    """The titles of the plotly charts drawn on the page, top to bottom."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid=stPlotlyChart] .js-plotly-plot')]
        .map(gd => { const t = gd.querySelector('.gtitle'); return t ? t.textContent : ''; })""")


def exceptions_shown(page) -> list[str]:
    return page.locator("[data-testid=stException]").all_inner_texts()


def goto(page, link: str, title: str, min_charts: int = 0, timeout: float = 120.0) -> float:
    """Click the sidebar link and wait for the page; returns the seconds it took."""
    t0 = time.perf_counter()
    page.locator("[data-testid=stSidebarNavLink]", has_text=link).first.click()
    time.sleep(0.05)  # let the rerun start before waiting for it to end
    wait_rendered(page, title, min_charts, timeout)
    return time.perf_counter() - t0


def set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    time.sleep(0.3)


def live_frame(page):
    """The iframe of the live training chart (explorer/livechart.py), or None."""
    for frame in page.frames:
        if "bespoke_live_chart" in frame.url:
            return frame
    return None


def live_points(frame) -> int:
    """Points in the live chart's first trace (the loss), -1 if not drawn yet."""
    return frame.evaluate("""() => { const gd = document.getElementById('chart');
        const tr = gd && gd._fullData && gd._fullData[0];
        return tr && tr.x ? tr.x.length : -1; }""")


CHART_PROBE = """(seconds) => new Promise(resolve => {
    // In the live chart's frame: sample its data every 20 ms; count how often it changes.
    const sig = () => {
        const gd = document.getElementById('chart');
        if (!gd || !gd._fullData || !gd._fullData.length) return null;
        const x = gd._fullData[0].x;  // decoded arrays (gd.data keeps plotly's base64 form)
        return x ? String(x.length) + ':' + String(x[x.length - 1]) : null;
    };
    let last = sig(), changes = 0, samples = [];
    const draws0 = window.liveChart.draws, skipped0 = window.liveChart.skipped;
    const t0 = performance.now();
    const timer = setInterval(() => {
        const s = sig();
        if (s !== null && s !== last) { changes += 1; samples.push([performance.now() - t0, s]); }
        last = s;
        if (performance.now() - t0 > seconds * 1000) {
            clearInterval(timer);
            resolve({changes, seconds, samples, draws: window.liveChart.draws - draws0,
                     skipped: window.liveChart.skipped - skipped0}); }
    }, 20);
})"""

BUSY_START = """() => { window.__busy = 0;
    // Main-thread time spent in long tasks (> 50 ms): how saturated the browser is.
    window.__busyObs = new PerformanceObserver(list => { for (const e of list.getEntries()) window.__busy += e.duration; });
    window.__busyObs.observe({entryTypes: ['longtask']}); }"""
BUSY_STOP = "() => { window.__busyObs.disconnect(); return window.__busy; }"


def start_training(page, iters: int, n_train: int = 512) -> None:
    set_number(page, "Iterations", iters)
    page.get_by_text("Budget").first.click()
    set_number(page, "GT paths to train on", n_train)
    page.get_by_role("button", name="Train", exact=True).first.click()


def wait_training_chart(page, timeout: float = 120.0):
    """The live chart's frame, once it has drawn the training curves (its first trace is 'loss')."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        frame = live_frame(page)
        if frame is not None:
            with contextlib.suppress(Exception):  # the frame may still be loading
                if frame.evaluate("""() => { const gd = document.getElementById('chart');
                        return !!(gd && gd.data && gd.data.length && gd.data[0].name === 'loss'); }"""):
                    return frame
        page.wait_for_timeout(100)  # not time.sleep: Playwright learns of new frames while in its calls
    raise TimeoutError("the live training chart did not appear")


def iterations_per_second(samples: list) -> float | None:
    """Training speed seen through the chart: its last x (the iteration) over the probe's samples."""
    if len(samples) < 2:
        return None
    (t0, s0), (t1, s1) = samples[0], samples[-1]
    return (float(s1.split(":")[1]) - float(s0.split(":")[1])) / ((t1 - t0) / 1000)


def measure_updates(page, seconds: float, warmup: float = 2.0) -> dict:
    """Count live-chart updates over `seconds`, after the chart exists and `warmup` seconds
    more; with the browser main thread's long-task time over the same window."""
    frame = wait_training_chart(page)
    time.sleep(warmup)
    page.evaluate(BUSY_START)
    probe = frame.evaluate(CHART_PROBE, seconds)
    probe["busy_ms"] = page.evaluate(BUSY_STOP)
    return probe


def wait_training_done(page, timeout: float = 300.0) -> None:
    """The run is listed once finished: the solver table appears under 'Solvers in this session'."""
    page.locator("[data-testid=stDataFrame]").first.wait_for(timeout=timeout * 1000)


def shot(page, out_dir: Path | None, name: str) -> Path | None:
    """A full-page screenshot, downscaled so each PNG stays well under 300 KB."""
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    # Streamlit scrolls inside its main container, so grow the viewport to the content's height.
    size = page.viewport_size
    height = page.evaluate("""() => { const m = document.querySelector('[data-testid=stMain]');
        return m ? m.scrollHeight : document.body.scrollHeight; }""")
    page.set_viewport_size({"width": size["width"], "height": min(max(size["height"], int(height)), 6000)})
    time.sleep(0.5)  # let plotly relayout to the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    try:
        from PIL import Image
        img = Image.open(path)
        scale = min(1.0, 1100 / img.width)
        if scale < 1.0:
            img = img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        img = img.convert("P", palette=Image.ADAPTIVE, colors=256)
        img.save(path, optimize=True)
    except ImportError:
        pass
    return path


def run_sweep(page, values: str = "0, 1, 4", iters: int = 40, n_train: int = 256, timeout: float = 600) -> None:
    """Run a small L_tau sweep on the Ablations page and wait for its result chart."""
    box = page.get_by_label("Values (comma-separated)", exact=True)
    box.fill(values)
    box.press("Enter")
    time.sleep(0.3)
    set_number(page, "Iterations per run", iters)
    set_number(page, "GT paths per run", n_train)
    page.get_by_role("button", name="Run the sweep").first.click()
    page.locator("h3", has_text="Sweep").first.wait_for(timeout=timeout * 1000)
    wait_rendered(page, "Ablations", 1)


def record_requests(page) -> list[str]:
    """Every URL the page's browser context requests from now on (frames and workers included),
    appended as the requests start."""
    urls: list[str] = []
    page.context.on("request", lambda req: urls.append(req.url))
    return urls


LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def off_machine(urls: list[str]) -> list[str]:
    """The URLs among `urls` that would leave the machine (not 127.0.0.1 / localhost; data:,
    blob: and about: URLs never do)."""
    from urllib.parse import urlsplit

    out = []
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme in ("data", "blob", "about", "chrome-error"):
            continue
        if parts.hostname not in {h.strip("[]") for h in LOCAL_HOSTS}:
            out.append(u)
    return out


FIRST_PAINT = """() => {
    // The Model page's first paint: its title, its 'What it is' table and one drawn chart.
    const h1 = [...document.querySelectorAll('h1')].some(h => h.innerText.trim().startsWith('Model'));
    const table = document.querySelectorAll('[data-testid=stTable]').length > 0;
    const chart = document.querySelectorAll('[data-testid=stPlotlyChart] .js-plotly-plot .main-svg').length > 0;
    return h1 && table && chart; }"""


def cold_start(root: Path = ROOT, log_path: Path | None = None, timeout: float = 180.0) -> dict:
    """One cold start of the app in `root`: the browser is started first, then `streamlit run`;
    seconds from the launch to the server answering, to the Model page's title, to its first
    paint (title, info table and a chart drawn) and to the page fully drawn (script finished, GT samples
    included). Also every URL the page requested."""
    with browser_page() as page:
        urls = record_requests(page)
        with Server(log_path, root) as server:
            out = {"server_healthy_seconds": server.t_healthy - server.t_launch}
            page.goto(server.url)
            page.locator("h1", has_text="Model").first.wait_for(timeout=timeout * 1000)
            out["title_seconds"] = time.perf_counter() - server.t_launch
            page.wait_for_function(FIRST_PAINT, timeout=timeout * 1000, polling=50)
            out["first_paint_seconds"] = time.perf_counter() - server.t_launch
            wait_rendered(page, "Model", min_charts=2, timeout=timeout)
            out["fully_drawn_seconds"] = time.perf_counter() - server.t_launch
            out["exceptions"] = exceptions_shown(page)
    out["requests"] = len(urls)
    out["off_machine_requests"] = off_machine(urls)
    return out


def export_ref(ref: str, dest: Path) -> Path:
    """The tree of git commit `ref` extracted into `dest` (git archive: the repository and its
    worktrees are left untouched)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def cold_start_table(repeats: int, before: str | None) -> dict:
    """Cold starts of this tree (and of commit `before`, alternating with it so that both see the
    same machine load), after one unmeasured start of each (bytecode compiled, files cached)."""
    import statistics
    import tempfile

    trees = {"after (this tree)": ROOT}
    tmp = None
    if before:
        tmp = tempfile.mkdtemp(prefix="bench_app_before_")
        trees = {f"before ({before})": export_ref(before, Path(tmp)), **trees}
    # A fresh cache folder: the first start of each tree really is a first start on this machine
    # (this tree keeps the evaluation set's GT samples there, explorer/gtcache.py).
    os.environ["BESPOKE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_app_cache_")
    try:
        first = {name: cold_start(root) for name, root in trees.items()}
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        load = [os.getloadavg()[0]]
        for _ in range(repeats):
            for name, root in trees.items():
                runs[name].append(cold_start(root))
                load.append(os.getloadavg()[0])
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    keys = ("server_healthy_seconds", "title_seconds", "first_paint_seconds", "fully_drawn_seconds")
    table = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    print(f"\nCold start, median of {repeats} (load average 1 min: {min(load):.1f}-{max(load):.1f} during the runs; "
          f"{os.cpu_count()} CPUs)\n")
    print("| code | server answers | page title shown | first paint (title, info table, a chart) "
          "| fully drawn (GT samples included) |")
    print("|---|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.2f} s" for k in keys) + " |")
    for name, row in first.items():
        print(f"| {name}, first start (one run, before the above) | " + " | ".join(f"{row[k]:.2f} s" for k in keys) + " |")
    return {"repeats": repeats, "median": table, "runs": runs, "first_start": first, "load_average_1min": load}


def run(screenshots: Path | None, iters: int, update_seconds: float, log_path: Path | None = None,
        sweep: bool = True) -> dict:
    """The whole tour: cold start, every page, a training run (its updates/s), page switches."""
    out: dict = {"switch_seconds": {}, "exceptions": {}, "cpus": os.cpu_count(), "load_average_before": os.getloadavg()}
    with Server(log_path) as server, browser_page() as page:
        out["server_healthy_seconds"] = server.t_healthy - server.t_launch
        t0 = time.perf_counter()
        page.goto(server.url)
        wait_rendered(page, "Model", min_charts=2, timeout=180)
        out["first_page_seconds"] = time.perf_counter() - t0
        out["cold_start_seconds"] = time.perf_counter() - server.t_launch
        out["exceptions"]["Model"] = exceptions_shown(page)
        shot(page, screenshots, "1_model")
        # Train: start a long run, count chart updates while it trains, then Stop (keeps the best).
        out["switch_seconds"]["Train"] = goto(page, "Train", "Train a solver")
        start_training(page, iters)
        probe = measure_updates(page, update_seconds)
        out["training_updates"] = {"changes": probe["changes"], "seconds": probe["seconds"],
                                   "updates_per_second": probe["changes"] / probe["seconds"],
                                   "browser_long_task_fraction": probe["busy_ms"] / 1000 / probe["seconds"],
                                   "draws": probe["draws"], "unchanged_skipped": probe["skipped"],
                                   "points_first_last": [probe["samples"][0][1], probe["samples"][-1][1]]
                                   if probe["samples"] else None,
                                   "training_iterations_per_second": iterations_per_second(probe["samples"])}
        page.get_by_role("button", name="Stop", exact=True).first.click()
        wait_training_done(page)
        wait_rendered(page, "Train a solver")
        out["exceptions"]["Train"] = exceptions_shown(page)
        shot(page, screenshots, "2_train")
        for k, (link, title, min_charts) in enumerate(PAGES[2:], start=3):
            out["switch_seconds"][link] = goto(page, link, title, max(min_charts, 1) if link != "Ablations" else 0)
            if link == "Ablations" and sweep:  # a small L_tau sweep, so the page shows a result
                t0 = time.perf_counter()
                run_sweep(page)
                out["sweep_seconds"] = time.perf_counter() - t0
            out["exceptions"][link] = exceptions_shown(page)
            shot(page, screenshots, f"{k}_{link.lower()}")
        # Warm switches (caches filled): back to Model and across again.
        warm = {}
        for link, title, min_charts in PAGES:
            warm[link] = goto(page, link, title, min_charts if link not in ("Train", "Ablations") else 0)
        out["warm_switch_seconds"] = warm
    out["load_average_after"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--screenshots", type=Path, default=None, help="folder for one PNG per page")
    ap.add_argument("--iters", type=int, default=5000, help="iterations asked for (the run is stopped after the count)")
    ap.add_argument("--update-seconds", type=float, default=8.0, help="how long to count chart updates")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    ap.add_argument("--log", type=Path, default=None, help="streamlit's output")
    ap.add_argument("--cold-start", type=int, default=0, metavar="N",
                    help="only measure cold starts, N times (median), and print their table")
    ap.add_argument("--before", default=None, metavar="REF",
                    help="with --cold-start: also measure git commit REF, alternating with this tree")
    args = ap.parse_args()
    if not os.environ.get("BESPOKE_RUNS_DIR"):  # the server's autosaved runs: not in the user's cache
        import tempfile
        os.environ["BESPOKE_RUNS_DIR"] = tempfile.mkdtemp(prefix="bench_app_runs_")
    if args.cold_start:
        res = cold_start_table(args.cold_start, args.before)
    else:
        res = run(args.screenshots, args.iters, args.update_seconds, args.log)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
