"""Pure plotly figure builders: numpy in, `go.Figure` out, no streamlit (unit-tested).

Conventions: one fixed colour per solver on every page (SOLVER_COLORS: GT black, RK2 orange, the
session's learned solvers blue/green by their number); data space is drawn with equal axis
scales; log axes get plain-number ticks (log_ticks); axes name their quantity and unit; every
figure has a legend or titled panels.
"""
from __future__ import annotations

import functools
import math
import re
import zlib
from typing import Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# One colour per solver on every page and every model (the issue: colours shifted with the
# model and with whether a learned solver existed). Built-in solvers and GT by their labels
# (explorer/compute.py SOLVER_LABELS, also "RK2 (midpoint) @ 8"); the session's learned solvers
# by their number ("#3 rk2-bespoke NFE 8" -> the third learned colour), so a solver keeps its
# colour wherever it is drawn; reference maps by name.
SOLVER_COLORS = {
    "GT (dopri5)": "#111111", "RK1 (Euler)": "#8c564b", "RK2 (midpoint)": "#ff7f0e", "Heun": "#bcbd22",
    "RK4": "#e377c2", "DDIM": "#9467bd", "DPM-Solver++(2M)": "#17becf", "EDM (Heun)": "#d62728",
}
REFERENCE_COLORS = {"identity": "#7f7f7f", "uniform": "#7f7f7f", "uniform grid": "#7f7f7f",
                    "EDM schedule": "#d62728", "cosine path": "#e7ba52", "data": "#1b9e77"}
LEARNED_COLORS = ["#1f77b4", "#2ca02c", "#0b3c7d", "#7fbf3f", "#4fa3d1", "#155e2c", "#5b6fd6", "#a3c94f"]
OTHER_COLORS = ["#6a3d9a", "#b15928", "#1b9e77", "#e6ab02", "#666666", "#a6761d"]
# Built-in solvers also differ in marker and dash, so that two that coincide on a model (DDIM is
# Euler on an FM-OT path) both stay visible.
SOLVER_STYLES = {"RK1 (Euler)": ("circle", "solid", 7), "DDIM": ("diamond-open", "dash", 12),
                 "RK2 (midpoint)": ("square", "solid", 7), "Heun": ("triangle-up-open", "dot", 11),
                 "RK4": ("x", "solid", 8), "DPM-Solver++(2M)": ("pentagon-open", "dashdot", 11),
                 "EDM (Heun)": ("cross", "longdash", 8)}
LEARNED_WORDS = ("learned", "learned (now)", "learned t_i", "time grid t_i")


def solver_color(label: str) -> str:
    """The fixed colour of a solver / map label (see SOLVER_COLORS)."""
    for table in (SOLVER_COLORS, REFERENCE_COLORS):
        for name, color in table.items():
            if label == name or label.startswith(name + " "):  # e.g. "RK2 (midpoint) @ 8"
                return color
    m = re.match(r"#(\d+)\b", label)
    if m:
        return LEARNED_COLORS[(int(m.group(1)) - 1) % len(LEARNED_COLORS)]
    if label in LEARNED_WORDS:
        return LEARNED_COLORS[0]
    return OTHER_COLORS[zlib.crc32(label.encode()) % len(OTHER_COLORS)]


def solver_style(label: str) -> tuple[str, str, int]:
    """(marker symbol, line dash, marker size) of a built-in solver label; learned: a star."""
    for name, style in SOLVER_STYLES.items():
        if label == name or label.startswith(name + " "):
            return style
    return ("star", "solid", 13)


def colors(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label, each its fixed one (solver_color): independent of the other labels."""
    return {label: solver_color(label) for label in labels}


def log_ticks(values, max_ticks: int = 7) -> dict:
    """Readable ticks for a log axis over the positive finite `values`: 1-2-5 steps per decade,
    or powers of ten when that would be too many, labelled in plain numbers (plotly's own log
    ticks are bare minor digits "2 5 ... 1 2"). Axis settings to pass to update_yaxes / the layout;
    {} when there is nothing to tick."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return {}
    lo, hi = float(v.min()), float(v.max())
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0 ** d for d in range(d0, d1 + 1) for m in mantissas]
        inside = [t for t in ticks if lo / 1.05 <= t <= hi * 1.05]
        if len(inside) <= max_ticks:
            break
    else:  # many decades: every k-th power of ten
        step = math.ceil(len(inside) / max_ticks)
        inside = inside[::step]
    if len(inside) < 2:  # less than a 1-2-5 step: the ends, with the 1-2-5 tick between if any
        inside = sorted({float(f"{lo:.2g}"), *inside, float(f"{hi:.2g}")})
    return {"tickmode": "array", "tickvals": inside, "ticktext": [f"{t:.3g}" for t in inside]}


def _equal_ranges(panels: Sequence[np.ndarray], pad: float = 0.05) -> list[float]:
    """One [lo, hi] for both axes of every panel: covers the points' 0.5-99.5 percentiles (a
    diverged solver does not squash the rest), so that equal-aspect panels are equal squares."""
    pts = [np.asarray(p, dtype=float).reshape(-1) for p in panels]
    pts = np.concatenate([p[np.isfinite(p)] for p in pts]) if pts else np.zeros(0)
    if pts.size == 0:
        return [-1.0, 1.0]
    lo, hi = np.percentile(pts, [0.5, 99.5])
    span = max(hi - lo, 1e-9)
    return [float(lo - pad * span), float(hi + pad * span)]


def _layout(fig: go.Figure, title: str, height: int = 420, top: int = 60) -> go.Figure:
    # No plotly template: Streamlit applies its own theme in the browser, and setting a template
    # costs ~70 ms per figure here (it matters for the live training charts). `top`: the top
    # margin; two-line panel titles need ~100 px so that they stay clear of the figure's title.
    fig.update_layout(title=dict(text=title, x=0.0, xanchor="left", y=1.0, yanchor="top", yref="container",
                                 pad=dict(t=12)), height=height,
                      margin=dict(l=60, r=20, t=top, b=50),
                      legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02))
    return fig


def _finite(v) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return np.where(np.isfinite(a), a, np.nan)


# ------------------------------------------------------------------------------------------
# Model page
# ------------------------------------------------------------------------------------------

def path_coefficients(t: np.ndarray, alpha: np.ndarray, sigma: np.ndarray, name: str) -> go.Figure:
    """alpha_t and sigma_t of the model's Gaussian path x_t = alpha_t x1 + sigma_t x0."""
    fig = go.Figure()
    fig.add_scatter(x=t, y=alpha, name="alpha_t (data weight)", line=dict(color="#1f77b4"))
    fig.add_scatter(x=t, y=sigma, name="sigma_t (noise weight)", line=dict(color="#ff7f0e"))
    fig.update_xaxes(title="time t (0 = noise, 1 = data)")
    fig.update_yaxes(title="coefficient")
    return _layout(fig, f"Gaussian path: {name}", height=320)


def scatter_2d(panels: Mapping[str, np.ndarray], title: str, subtitles: Optional[Mapping[str, str]] = None,
               max_points: int = 2000) -> go.Figure:
    """One scatter panel per entry: points (N, 2), drawn in data space with equal axis scales and
    the same square range in every panel (a checkerboard's squares stay square)."""
    names = list(panels)
    titles = [f"{n}<br><sup>{subtitles[n]}</sup>" if subtitles and n in subtitles else n for n in names]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=titles, horizontal_spacing=0.04)
    cmap = colors(names)
    for i, n in enumerate(names):
        x = np.asarray(panels[n])[:max_points]
        fig.add_scattergl(x=x[:, 0], y=x[:, 1], mode="markers", name=n, row=1, col=i + 1,
                          marker=dict(size=3, color=cmap[n], opacity=0.6))
    rng = _equal_ranges([np.asarray(panels[n])[:max_points] for n in names])
    fig.update_xaxes(title="x<sub>1</sub>", range=rng, constrain="domain")
    for i in range(1, len(names) + 1):
        fig.update_yaxes(range=rng, scaleanchor="x" if i == 1 else f"x{i}", scaleratio=1, constrain="domain",
                         showticklabels=(i == 1), row=1, col=i)
    fig.update_yaxes(title="x<sub>2</sub>", col=1)
    fig.update_layout(showlegend=False)
    return _layout(fig, title, height=max(380, 900 // max(len(names), 1) + 110), top=100 if subtitles else 60)


def _tile(images: np.ndarray, cols: int) -> np.ndarray:
    """(N, C, H, W) -> one (rows*H + gaps, cols*W + gaps) grayscale mosaic (first channel)."""
    imgs = np.asarray(images)[:, 0]
    n, h, w = imgs.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = imgs[k]
    return out


IMAGE_GRID_WIDTH = 900  # px a chart gets in the app beside the sidebar (about 940 measured at a 1400 px window)


def image_grids(panels: Mapping[str, np.ndarray], title: str, subtitles: Optional[Mapping[str, str]] = None,
                cols: int = 4, value_range: tuple[float, float] = (-1.0, 1.0),
                per_row: Optional[int] = None) -> go.Figure:
    """One image mosaic per entry: images (N, C, H, W) with values in value_range, `cols` images
    per mosaic row. per_row: at most this many mosaics side by side (the rest wrap onto further
    rows, each row as tall as its mosaics need: 28x28 digits stay readable); default all in one
    row of fixed height."""
    names = list(panels)
    titles = [f"{n}<br><sup>{subtitles[n]}</sup>" if subtitles and n in subtitles else n for n in names]
    per_row = max(1, min(per_row or len(names), len(names)))
    n_rows = math.ceil(len(names) / per_row)
    tiles = {n: _tile(panels[n], cols) for n in names}
    head = 70 if subtitles else 35  # px for a row's panel titles
    fig = make_subplots(rows=n_rows, cols=per_row, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=min(0.3, head / max(1, 130 * n_rows)) if n_rows > 1 else 0.0)
    for i, n in enumerate(names):
        r, c = divmod(i, per_row)
        fig.add_heatmap(z=tiles[n][::-1], colorscale="gray_r", zmin=value_range[0],
                        zmax=value_range[1], showscale=False, name=n, row=r + 1, col=c + 1,
                        hovertemplate="pixel value %{z:.2f}<extra>" + n + "</extra>")
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, scaleanchor="x")
    for i in range(2, len(names) + 1):
        fig.update_yaxes(scaleanchor=f"x{i}", row=(i - 1) // per_row + 1, col=(i - 1) % per_row + 1)
    fig.update_layout(showlegend=False)
    if per_row == len(names):
        height = 360
    else:  # each row as tall as its mosaics at the width they get
        aspect = max(t.shape[0] / t.shape[1] for t in tiles.values())
        height = int(n_rows * (IMAGE_GRID_WIDTH / per_row * aspect + head) + 60)
    return _layout(fig, title, height=height, top=100 if subtitles else 60)


# ------------------------------------------------------------------------------------------
# Train page
# ------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _grid(rows: int, cols: int, titles: tuple, h_space: float, v_space: float) -> str:
    """make_subplots' layout (axis domains, panel titles) as JSON, computed once per shape:
    make_subplots costs ~0.1 s, too much for charts redrawn several times a second."""
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=h_space,
                        vertical_spacing=v_space)
    return fig.layout.to_json()


def _fast_subplots(rows: int, cols: int, titles: Sequence[str], traces: list[dict],
                   axes: Mapping[str, dict], title: str, height: int, h_space: float = 0.08,
                   v_space: float = 0.14) -> go.Figure:
    """A subplot figure from trace dicts (with "xaxis": "x2" etc.) and per-axis settings
    ({"xaxis2": {...}}), built without make_subplots or per-trace validation calls."""
    import json

    layout = json.loads(_grid(rows, cols, tuple(titles), h_space, v_space))
    # No Python-side template: applying one costs ~10x the rest of the figure, and these charts
    # are redrawn several times a second. Streamlit's theme still styles them in the browser.
    layout["template"] = "none"
    for name, settings in axes.items():
        layout.setdefault(name, {}).update(settings)
    fig = go.Figure(data=traces, layout=layout)
    return _layout(fig, title, height)


def _ax(k: int) -> tuple[str, str]:
    """Trace axis references of subplot k (1-based): ("x", "y"), ("x2", "y2"), ..."""
    return ("x", "y") if k == 1 else (f"x{k}", f"y{k}")


def _curve_traces(history: Sequence[Mapping[str, float]], max_points: Optional[int] = None) -> tuple[list[dict], bool]:
    """Loss, validation RMSE and PSNR traces on subplots 1, 2, 3; and whether the loss is > 0.
    `max_points`: draw at most about that many loss points (see `decimate`)."""
    rows = history if max_points is None else [history[i] for i in decimate(len(history), max_points)]
    it = np.array([h["iteration"] for h in rows], dtype=float)
    loss = _finite([h.get("loss", np.nan) for h in rows])
    val = [h for h in history if "rmse" in h]
    v_it = np.array([h["iteration"] for h in val], dtype=float)
    traces = [
        dict(type="scatter", x=it, y=loss, mode="lines", name="loss", line=dict(color="#1f77b4")),
        dict(type="scatter", x=v_it, y=_finite([h["rmse"] for h in val]), mode="lines+markers", name="val RMSE",
             line=dict(color="#d62728"), xaxis="x2", yaxis="y2"),
        dict(type="scatter", x=v_it, y=_finite([h["psnr"] for h in val]), mode="lines+markers", name="val PSNR",
             line=dict(color="#2ca02c"), xaxis="x3", yaxis="y3"),
    ]
    all_loss = loss if max_points is None else _finite([h.get("loss", np.nan) for h in history])
    positive = bool(len(all_loss)) and np.nanmin(np.where(np.isfinite(all_loss), all_loss, np.inf)) > 0
    return traces, positive


# What the training loss is, per solver family (core/train.py): Bespoke minimises the RMSE upper
# bound (data units); BNS minimises minus the PSNR to GT, so its loss runs from about -20 to -60.
LOSS_LABELS = {"bespoke": ("training loss (RMSE bound)", "RMSE bound (data units)"),
               "bns": ("training loss = -PSNR", "loss = -PSNR (dB)")}


def loss_label(family: str) -> tuple[str, str]:
    """(panel title, axis title) of the training loss of a solver family ("rk2-bespoke", "bns")."""
    return LOSS_LABELS["bns" if family == "bns" else "bespoke"]


def _curve_axes(positive: bool, history: Sequence[Mapping[str, float]] = (), family: str = "") -> dict:
    # The x range grows with the run (a fixed [0, iters] squeezes a run that is stopped early).
    axes = {f"xaxis{'' if k == 1 else k}": {"title": {"text": "iteration"}} for k in (1, 2, 3)}
    loss_axis = loss_label(family)[1] if family else "loss"
    loss_ticks = log_ticks([h.get("loss", np.nan) for h in history]) if positive else {}
    axes.update({"yaxis": {"title": {"text": loss_axis}, **({"type": "log", **loss_ticks} if positive else {})},
                 "yaxis2": {"title": {"text": "RMSE (data units)"}, "type": "log",
                            **log_ticks([h["rmse"] for h in history if "rmse" in h])},
                 "yaxis3": {"title": {"text": "PSNR (dB)"}}})
    return axes


CURVE_TITLES = ("training loss", "validation RMSE to GT", "validation PSNR to GT")


def _curve_titles(family: str) -> list[str]:
    return [loss_label(family)[0] if family else CURVE_TITLES[0], *CURVE_TITLES[1:]]


def training_curves(history: Sequence[Mapping[str, float]], family: str = "") -> go.Figure:
    """Training loss per iteration and validation RMSE / PSNR (to GT) where validated; `family`
    names what the loss is (loss_label)."""
    traces, positive = _curve_traces(history)
    fig = _fast_subplots(1, 3, _curve_titles(family), traces, _curve_axes(positive, history, family), "Training", 330)
    return fig.update_layout(showlegend=False)  # each panel is titled


def training_live(history: Sequence[Mapping[str, float]], schedule: Optional[ScheduleCurves] = None,
                  learned: Sequence[str] = (), grid: Optional[np.ndarray] = None, family: str = "",
                  title: str = "Training, live") -> go.Figure:
    """ONE figure for the live view (one graph for explorer/livechart.py to move per update; when
    it was drawn with st.plotly_chart, a second chart halved the browser's redraw rate): row 1
    the training curves; row 2 the solver now: t_r and s_r of each map in
    `schedule` (learned ones with markers) and the time grid t_i against the step index.
    `family` names the loss (loss_label); `title` says whether the run is still going."""
    traces, positive = _curve_traces(history, max_points=LIVE_MAX_POINTS)
    axes = _curve_axes(positive, history, family)
    titles = _curve_titles(family)
    k = 4
    cmap = colors(list(schedule or {}))
    for key, label in (("t", "time t_r"), ("s", "scale s_r")):
        if not schedule:
            break
        xa, ya = _ax(k)
        for name, c in schedule.items():
            is_learned = name in learned
            traces.append(dict(type="scatter", x=np.asarray(c["r"]), y=_finite(c[key]), name=name, legendgroup=name,
                               showlegend=(key == "t"), xaxis=xa, yaxis=ya,
                               mode="lines+markers" if is_learned else "lines",
                               line=dict(color=cmap[name], dash=None if is_learned else "dash")))
        axes[f"xaxis{k}"] = {"title": {"text": "r (solver time)"}}
        axes[f"yaxis{k}"] = {"title": {"text": key}}
        titles.append(label)
        k += 1
    if grid is not None:
        xa, ya = _ax(k)
        g = np.asarray(grid, dtype=float)
        steps = np.arange(len(g))
        traces.append(dict(type="scatter", x=steps, y=np.linspace(0, 1, len(g)), mode="lines", name="uniform grid",
                           line=dict(color="#7f7f7f", dash="dash"), xaxis=xa, yaxis=ya))
        traces.append(dict(type="scatter", x=steps, y=_finite(g), mode="lines+markers", name="time grid t_i",
                           line=dict(color="#1f77b4"), xaxis=xa, yaxis=ya))
        axes[f"xaxis{k}"] = {"title": {"text": "step i"}}
        axes[f"yaxis{k}"] = {"title": {"text": "t_i"}, "range": [-0.02, 1.02]}
        titles.append("time grid t_i")
        k += 1
    rows = 1 if k == 4 else 2
    titles += [""] * (3 * rows - len(titles))
    for tr in traces[:3]:
        tr["showlegend"] = False
    for name in [f"{a}axis{'' if j == 1 else j}" for j in range(1, 3 * rows + 1) for a in "xy"]:
        axes.setdefault(name, {}).update(LIVE_AXIS)
    return _fast_subplots(rows, 3, titles, traces, axes, title, 330 * rows, h_space=0.08, v_space=0.2)


# The live chart is redrawn several times a second, and in the browser most of a redraw is axis
# work: measuring every tick label to hide overflowing ones, and re-fitting the margins to them
# (bench/bench_app.py, Chrome profile). Fixed margins, few ticks and no overflow check cut that.
LIVE_AXIS = {"automargin": False, "ticklabeloverflow": "allow", "nticks": 6}
LIVE_MAX_POINTS = 400  # loss points drawn live: an every-2^k-th-iteration subsample, plus the last


def decimate(n: int, max_points: int) -> np.ndarray:
    """Indices 0, k, 2k, ... and n - 1 with k the smallest power of two that keeps at most
    `max_points` (+1) of n: stable while a run grows (the drawn points only change when k doubles)."""
    if n <= max_points:
        return np.arange(n)
    k = 1 << int(np.ceil(np.log2(n / max_points)))
    idx = np.arange(0, n, k)
    return idx if idx[-1] == n - 1 else np.append(idx, n - 1)


# ------------------------------------------------------------------------------------------
# Schedules
# ------------------------------------------------------------------------------------------

ScheduleCurves = Mapping[str, Mapping[str, np.ndarray]]  # name -> {"r", "t", "dt", "s", "ds"}


def st_schedule(curves: ScheduleCurves, learned: Sequence[str] = (), title: str = "Scale-time map") -> go.Figure:
    """t_r, t'_r, s_r, s'_r against r for each named map; learned maps get markers at their nodes
    (dt and ds are known at the nodes 0..M-1, t and s at 0..M)."""
    traces, cmap = [], colors(list(curves))
    for name, c in curves.items():
        color = cmap[name]
        is_learned = name in learned
        r = np.asarray(c["r"])
        for k, key in enumerate(("t", "dt", "s", "ds")):
            y = np.asarray(c[key])
            xa, ya = _ax(k + 1)
            traces.append(dict(type="scatter", x=r[: len(y)], y=_finite(y), mode="lines+markers" if is_learned else "lines",
                               name=name, legendgroup=name, showlegend=(k == 0), xaxis=xa, yaxis=ya,
                               line=dict(color=color, dash=None if is_learned else "dash", width=3 if is_learned else 2),
                               marker=dict(size=7)))
    axes = {f"xaxis{'' if k == 1 else k}": {"title": {"text": "r (solver time)"}} for k in (1, 2, 3, 4)}
    axes.update({"yaxis": {"title": {"text": "t"}}, "yaxis2": {"title": {"text": "dt/dr"}},
                 "yaxis3": {"title": {"text": "s"}}, "yaxis4": {"title": {"text": "ds/dr"}}})
    return _fast_subplots(2, 2, ("time t_r", "time derivative t'_r", "scale s_r", "scale derivative s'_r"), traces,
                          axes, title, 620, h_space=0.09, v_space=0.14)


def equivalent_path(r: np.ndarray, alpha_bar: np.ndarray, sigma_bar: np.ndarray, alpha: np.ndarray,
                    sigma: np.ndarray, model_path: str) -> go.Figure:
    """The Gaussian path a Bespoke solver's ST map is equivalent to, next to the model's own path,
    and the log-SNR of both."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("path coefficients", "log SNR log(alpha/sigma)"),
                        horizontal_spacing=0.1)
    fig.add_scatter(x=r, y=alpha_bar, mode="lines+markers", name="alpha_bar_r (solver)", line=dict(color="#1f77b4"),
                    row=1, col=1)
    fig.add_scatter(x=r, y=sigma_bar, mode="lines+markers", name="sigma_bar_r (solver)", line=dict(color="#ff7f0e"),
                    row=1, col=1)
    fig.add_scatter(x=r, y=alpha, mode="lines", name=f"alpha_t ({model_path})",
                    line=dict(color="#1f77b4", dash="dash"), row=1, col=1)
    fig.add_scatter(x=r, y=sigma, mode="lines", name=f"sigma_t ({model_path})",
                    line=dict(color="#ff7f0e", dash="dash"), row=1, col=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr_bar = np.log(np.asarray(alpha_bar) / np.asarray(sigma_bar))
        snr = np.log(np.asarray(alpha) / np.asarray(sigma))
    fig.add_scatter(x=r, y=_finite(snr_bar), mode="lines+markers", name="solver's path", line=dict(color="#2ca02c"),
                    row=1, col=2)
    fig.add_scatter(x=r, y=_finite(snr), mode="lines", name=f"model path {model_path}",
                    line=dict(color="#7f7f7f", dash="dash"), row=1, col=2)
    fig.update_xaxes(title="r (solver time; t = r for the model's path)")
    fig.update_yaxes(title="coefficient", row=1, col=1)
    fig.update_yaxes(title="log SNR", row=1, col=2)
    return _layout(fig, "The Gaussian path the solver is equivalent to (Theorem 2.3)", height=380)


def time_grid(grids: Mapping[str, np.ndarray], title: str = "Time grid") -> go.Figure:
    """Step times t_i against step index i, one line per solver (uniform = the diagonal)."""
    fig, cmap = go.Figure(), colors(list(grids))
    for name, t in grids.items():
        t = np.asarray(t)
        fig.add_scatter(x=np.arange(len(t)), y=t, mode="lines+markers", name=name, line=dict(color=cmap[name]))
    fig.update_xaxes(title="step index i")
    fig.update_yaxes(title="time t_i", range=[-0.02, 1.02])
    return _layout(fig, title, height=340)


def coefficient_heatmaps(mats: Mapping[str, np.ndarray], title: str,
                         column_titles: Optional[Mapping[str, str]] = None) -> go.Figure:
    """One heatmap per coefficient matrix (rows = steps i); NaN cells (unused) are blank. All
    panels share one colour scale (symmetric about 0) with a single colour bar at the right, so
    no bar overlaps a neighbouring panel. A one-column matrix (a_i: the weight of x0) is a narrow
    panel whose single column is labelled by `column_titles[name]` (default "x0"); the others
    number their columns j."""
    names = list(mats)
    arrays = [np.asarray(mats[n], dtype=float) for n in names]
    arrays = [m[:, None] if m.ndim == 1 else m for m in arrays]
    widths = [1.0 if m.shape[1] == 1 else float(m.shape[1]) for m in arrays]
    finite = np.concatenate([m[np.isfinite(m)] for m in arrays]) if arrays else np.zeros(0)
    zmax = float(np.abs(finite).max()) if finite.size else 1.0
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.07,
                        column_widths=widths)
    for i, (n, m) in enumerate(zip(names, arrays)):
        col = i + 1
        fig.add_heatmap(z=m, coloraxis="coloraxis", name=n, row=1, col=col,
                        hovertemplate="step i = %{y}, column %{x}: %{z:.4g}<extra>" + n + "</extra>")
        fig.update_yaxes(autorange="reversed", tickmode="linear", tick0=0, dtick=1, row=1, col=col,
                         title="step i" if i == 0 else None)
        if m.shape[1] == 1:
            label = (column_titles or {}).get(n, "x0")
            fig.update_xaxes(tickmode="array", tickvals=[0], ticktext=[label], row=1, col=col)
        else:
            fig.update_xaxes(tickmode="linear", tick0=0, dtick=1, title="j", row=1, col=col)
    fig.update_layout(coloraxis=dict(colorscale="RdBu", cmin=-zmax, cmax=zmax, cmid=0.0,
                                     colorbar=dict(title=dict(text="weight"), thickness=12, len=0.85, x=1.01)))
    fig = _layout(fig, title, height=400)
    fig.update_layout(showlegend=False, margin=dict(r=80))
    return fig


# ------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------

PathSeries = Mapping[str, Mapping[str, np.ndarray]]  # label -> {"times": (K,), "pts": (K, B, 2)}


def paths_plane(series: PathSeries, gt_label: str, title: str, axis_titles: tuple[str, str]) -> go.Figure:
    """Sampling paths in a plane: GT as thin lines, each solver as lines with its step points
    marked; end points (samples) as bigger markers. pts: (K, B, 2)."""
    fig, cmap = go.Figure(), colors(list(series))
    for name, s in series.items():
        pts = np.asarray(s["pts"])
        K, B = pts.shape[:2]
        color = cmap[name]
        # One trace per solver: the B paths joined with None gaps (fast and one legend entry).
        xs = np.concatenate([np.append(pts[:, b, 0], np.nan) for b in range(B)])
        ys = np.concatenate([np.append(pts[:, b, 1], np.nan) for b in range(B)])
        is_gt = name == gt_label
        fig.add_scatter(x=xs, y=ys, name=name, legendgroup=name, mode="lines" if is_gt else "lines+markers",
                        line=dict(color=color, width=1.5 if is_gt else 2, dash=None if is_gt else "solid"),
                        marker=dict(size=6, symbol="circle"), hoverinfo="skip")
        fig.add_scatter(x=pts[-1, :, 0], y=pts[-1, :, 1], mode="markers", name=f"{name}: samples",
                        legendgroup=name, showlegend=False,
                        marker=dict(size=11 if is_gt else 9, color=color, symbol="star" if is_gt else "x"),
                        hovertemplate=name + " sample<extra></extra>")
    fig.add_scatter(x=np.asarray(next(iter(series.values()))["pts"])[0, :, 0],
                    y=np.asarray(next(iter(series.values()))["pts"])[0, :, 1], mode="markers", name="noise x0",
                    marker=dict(size=8, color="#bbbbbb", line=dict(color="#555", width=1)))
    fig.update_xaxes(title=axis_titles[0], constrain="domain")
    # Data space (or an orthonormal projection of it): one unit is as long on both axes.
    fig.update_yaxes(title=axis_titles[1], scaleanchor="x", scaleratio=1, constrain="domain")
    return _layout(fig, title, height=560)


def step_errors(errors: Mapping[str, Mapping[str, np.ndarray]], title: str = "Error to GT at every step point") -> go.Figure:
    """Mean RMSE to the GT path at each step point, against time t."""
    fig, cmap = go.Figure(), colors(list(errors))
    for name, e in errors.items():
        fig.add_scatter(x=np.asarray(e["times"]), y=_finite(e["errors"]), mode="lines+markers", name=name,
                        line=dict(color=cmap[name]))
    fig.update_xaxes(title="time t of the step point")
    fig.update_yaxes(title="RMSE to the GT path (data units)")
    return _layout(fig, title, height=340)


# ------------------------------------------------------------------------------------------
# Ablations and benchmark
# ------------------------------------------------------------------------------------------

def sweep(rows: Sequence[Mapping[str, float]], param: str, param_title: str, log_x: bool = False) -> go.Figure:
    """Final validation RMSE and PSNR of each run against the swept value (init as a reference)."""
    rows = sorted(rows, key=lambda r: r[param])
    x = np.array([r[param] for r in rows], dtype=float)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("RMSE to GT (lower is better)", "PSNR to GT (higher is better)"),
                        horizontal_spacing=0.1)
    for col, key, unit in ((1, "rmse", "RMSE (data units)"), (2, "psnr", "PSNR (dB)")):
        fig.add_scatter(x=x, y=_finite([r[key] for r in rows]), mode="lines+markers", name="trained",
                        legendgroup="trained", showlegend=(col == 1), line=dict(color="#1f77b4"),
                        marker=dict(size=9), row=1, col=col)
        if all(f"init_{key}" in r for r in rows):
            fig.add_scatter(x=x, y=_finite([r[f"init_{key}"] for r in rows]), mode="lines+markers",
                            name="at initialisation", legendgroup="init", showlegend=(col == 1),
                            line=dict(color="#7f7f7f", dash="dash"), row=1, col=col)
        fig.update_yaxes(title=unit, row=1, col=col)
    fig.update_yaxes(type="log", row=1, col=1, **log_ticks([r[k] for r in rows for k in ("rmse", "init_rmse") if k in r]))
    fig.update_xaxes(title=param_title, type="log" if log_x else "linear")
    return _layout(fig, f"Ablation over {param_title}", height=380)


def benchmark(rows: Sequence[Mapping[str, float]], gt_label: str = "GT (dopri5)") -> go.Figure:
    """Error to GT against NFE for every solver (log-log RMSE, log-x PSNR): the papers' Figure 5."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("RMSE to GT vs NFE", "PSNR to GT vs NFE"),
                        horizontal_spacing=0.1)
    solvers = [s for s in dict.fromkeys(r["solver"] for r in rows) if s != gt_label]
    cmap = colors(solvers)
    for s in solvers:
        rs = sorted((r for r in rows if r["solver"] == s), key=lambda r: r["nfe"])
        learned = rs[0].get("kind") == "learned"
        symbol, dash, size = ("star", "solid", 13) if learned else solver_style(s)
        for col, key in ((1, "rmse"), (2, "psnr")):
            fig.add_scatter(x=[r["nfe"] for r in rs], y=_finite([r[key] for r in rs]), name=s, legendgroup=s,
                            showlegend=(col == 1), mode="lines+markers",
                            line=dict(color=cmap[s], dash=dash, width=2),
                            marker=dict(size=size, symbol=symbol, line=dict(width=2, color=cmap[s])),
                            row=1, col=col)
    nfes = sorted({int(r["nfe"]) for r in rows if r["solver"] != gt_label})
    nice = [v for v in nfes if v in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128)] or nfes
    fig.update_xaxes(title="NFE (network evaluations)", type="log", tickmode="array", tickvals=nice)
    fig.update_yaxes(title="RMSE (data units)", type="log", row=1, col=1,
                     **log_ticks([r["rmse"] for r in rows if r["solver"] != gt_label]))
    fig.update_yaxes(title="PSNR (dB)", row=1, col=2)
    return _layout(fig, "Error vs NFE (learned solvers are stars)", height=460)


def trace_names(fig: go.Figure) -> list[str]:
    """Names of a figure's traces (for tests and the app's own checks)."""
    return [t.name for t in fig.data]


def decode_traces(spec: str | dict) -> list[dict]:
    """The traces of a figure's JSON (e.g. an st.plotly_chart's spec) with plotly 7's base64
    "bdata" arrays decoded back into numpy arrays."""
    import base64
    import json

    def decode(v):
        if isinstance(v, dict) and "bdata" in v and "dtype" in v:
            a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
            shape = v.get("shape")
            if isinstance(shape, str):  # plotly writes "rows, cols"
                shape = [int(d) for d in shape.split(",")]
            return a.reshape(shape) if shape else a
        if isinstance(v, dict):
            return {k: decode(x) for k, x in v.items()}
        if isinstance(v, list):
            return [decode(x) for x in v]
        return v

    data = json.loads(spec) if isinstance(spec, str) else spec
    return [decode(t) for t in data.get("data", [])]
