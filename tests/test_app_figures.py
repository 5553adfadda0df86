"""The app's pure figure builders: the traces they draw and the numbers inside them."""
import numpy as np
import pytest

from explorer import figures


def _traces(fig):
    return figures.decode_traces(fig.to_json())


def test_training_curves_has_loss_and_validation_traces():
    hist = [{"iteration": 0, "loss": float("nan"), "rmse": 0.2, "psnr": 20.0},
            {"iteration": 1, "loss": 0.5}, {"iteration": 2, "loss": 0.25, "rmse": 0.1, "psnr": 26.0}]
    tr = _traces(figures.training_curves(hist))
    assert [t["name"] for t in tr] == ["loss", "val RMSE", "val PSNR"]
    np.testing.assert_allclose(tr[0]["x"], [0, 1, 2])
    assert np.isnan(tr[0]["y"][0]) and tr[0]["y"][2] == 0.25  # NaN loss at init stays a gap
    np.testing.assert_allclose(tr[1]["y"], [0.2, 0.1])
    np.testing.assert_allclose(tr[2]["y"], [20.0, 26.0])


def test_training_live_is_one_figure_with_the_solver_in_row_two():
    hist = [{"iteration": 0, "loss": float("nan"), "rmse": 0.2, "psnr": 20.0}, {"iteration": 1, "loss": 0.5}]
    r = np.linspace(0, 1, 5)
    learned = {"r": r, "t": r**2, "dt": np.ones(4), "s": 1 + r * (1 - r), "ds": np.zeros(4)}
    fig = figures.training_live(hist, {"learned (now)": learned, "identity": {"r": r, "t": r, "s": np.ones(5)}},
                                ("learned (now)",), grid=r[::2] ** 2)
    tr = _traces(fig)
    assert [(t["name"], t.get("xaxis")) for t in tr] == [
        ("loss", None), ("val RMSE", "x2"), ("val PSNR", "x3"), ("learned (now)", "x4"), ("identity", "x4"),
        ("learned (now)", "x5"), ("identity", "x5"), ("uniform grid", "x6"), ("time grid t_i", "x6")]
    np.testing.assert_allclose(tr[5]["y"], 1 + r * (1 - r))  # s_r in panel 5
    np.testing.assert_allclose(tr[8]["y"], [0, 0.25, 1])
    assert [a.text for a in fig.layout.annotations][:6] == ["training loss", "validation RMSE to GT",
                                                            "validation PSNR to GT", "time t_r", "scale s_r",
                                                            "time grid t_i"]
    only_curves = figures.training_live(hist)
    assert len(only_curves.data) == 3 and only_curves.layout.height == 330


def test_decimate_keeps_ends_is_stable_and_bounded():
    assert list(figures.decimate(5, 10)) == [0, 1, 2, 3, 4]
    for n in (11, 400, 401, 1000, 5001):
        idx = figures.decimate(n, 100)
        assert idx[0] == 0 and idx[-1] == n - 1 and len(idx) <= 101 + 1 and np.all(np.diff(idx) > 0)
    # A growing run keeps the points it drew until the stride doubles.
    a, b = figures.decimate(1000, 100), figures.decimate(1010, 100)
    assert set(a[:-1]) <= set(b)


def test_training_live_draws_a_subsample_of_a_long_run_but_the_last_point_and_every_validation():
    n = 5000
    hist = [{"iteration": i, "loss": 1.0 + i, **({"rmse": 1.0 / (i + 1), "psnr": float(i)} if i % 10 == 0 else {})}
            for i in range(n)]
    hist.append({"iteration": n, "loss": -1.0})  # a non-positive loss anywhere: no log axis
    fig = figures.training_live(hist)
    tr = _traces(fig)
    assert len(tr[0]["x"]) <= figures.LIVE_MAX_POINTS + 1 and tr[0]["x"][-1] == n and tr[0]["y"][-1] == -1.0
    assert len(tr[1]["x"]) == n // 10  # validation points are few: all drawn
    assert fig.layout.yaxis.type != "log"
    assert fig.layout.xaxis.automargin is False and fig.layout.yaxis2.nticks == figures.LIVE_AXIS["nticks"]


def test_st_schedule_draws_four_panels_per_map_and_marks_learned_nodes():
    r = np.linspace(0, 1, 5)
    learned = {"r": r, "t": r**2, "dt": 2 * r[:-1], "s": np.ones(5), "ds": np.zeros(4)}
    ident = {"r": r, "t": r, "dt": np.ones(5), "s": np.ones(5), "ds": np.zeros(5)}
    tr = _traces(figures.st_schedule({"learned": learned, "identity": ident}, learned=("learned",)))
    assert [t["name"] for t in tr] == ["learned"] * 4 + ["identity"] * 4
    assert tr[0]["mode"] == "lines+markers" and tr[4]["mode"] == "lines"
    np.testing.assert_allclose(tr[0]["y"], r**2)
    assert len(tr[1]["x"]) == 4  # dt known at nodes 0..M-1 only


def test_paths_plane_joins_paths_and_marks_samples():
    K, B = 5, 3
    pts = np.random.default_rng(0).normal(size=(K, B, 2))
    tr = _traces(figures.paths_plane({"GT (dopri5)": {"times": np.linspace(0, 1, K), "pts": pts},
                                      "RK2 (midpoint)": {"times": np.linspace(0, 1, K), "pts": pts + 1}},
                                     "GT (dopri5)", "t", ("a", "b")))
    names = [t["name"] for t in tr]
    assert names == ["GT (dopri5)", "GT (dopri5): samples", "RK2 (midpoint)", "RK2 (midpoint): samples", "noise x0"]
    assert len(tr[0]["x"]) == B * (K + 1)  # B paths of K points separated by gaps
    np.testing.assert_allclose(tr[1]["x"], pts[-1, :, 0])
    np.testing.assert_allclose(tr[4]["y"], pts[0, :, 1])


def test_image_grid_tiles_images_with_gaps():
    imgs = np.arange(6 * 4 * 4, dtype=float).reshape(6, 1, 4, 4)
    tr = _traces(figures.image_grids({"GT": imgs, "RK2": imgs}, "t", cols=3))
    assert len(tr) == 2
    z = tr[0]["z"]
    assert z.shape == (2 * 5 - 1, 3 * 5 - 1)
    np.testing.assert_allclose(z[::-1][:4, :4], imgs[0, 0])  # flipped back: first image top-left
    assert np.isnan(z[::-1][4, 0])  # the gap row


def test_sweep_and_benchmark_figures():
    rows = [{"sigma0": 2.0, "rmse": 0.1, "psnr": 30.0, "init_rmse": 0.2, "init_psnr": 25.0},
            {"sigma0": 0.5, "rmse": 0.3, "psnr": 20.0, "init_rmse": 0.4, "init_psnr": 18.0}]
    tr = _traces(figures.sweep(rows, "sigma0", "sigma0", log_x=True))
    np.testing.assert_allclose(tr[0]["x"], [0.5, 2.0])  # sorted by the swept value
    np.testing.assert_allclose(tr[0]["y"], [0.3, 0.1])
    bench = [{"solver": "GT (dopri5)", "kind": "GT", "nfe": 100, "rmse": 0.0, "psnr": float("inf")},
             {"solver": "RK2", "kind": "built-in", "nfe": 8, "rmse": 0.1, "psnr": 25.0},
             {"solver": "RK2", "kind": "built-in", "nfe": 4, "rmse": 0.3, "psnr": 15.0},
             {"solver": "bes", "kind": "learned", "nfe": 8, "rmse": 0.01, "psnr": 40.0}]
    tr = _traces(figures.benchmark(bench))
    assert [t["name"] for t in tr] == ["RK2", "RK2", "bes", "bes"]  # GT is not a line
    np.testing.assert_allclose(tr[0]["x"], [4, 8])
    assert tr[2]["marker"]["symbol"] == "star"


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8)])
def test_decode_traces_roundtrip(shape):
    x = np.random.default_rng(1).normal(size=(7, *shape))
    fig = figures.scatter_2d({"a": x.reshape(7, -1)[:, :2]}, "t")
    np.testing.assert_allclose(_traces(fig)[0]["x"], x.reshape(7, -1)[:, 0])


def test_each_solver_keeps_one_colour_whatever_else_is_drawn():
    alone = figures.colors(["RK2 (midpoint)"])
    crowd = figures.colors(["GT (dopri5)", "#2 bns NFE 8", "RK1 (Euler)", "RK2 (midpoint) @ 8", "DDIM", "#1 rk2-bespoke NFE 8"])
    assert crowd["RK2 (midpoint) @ 8"] == alone["RK2 (midpoint)"]
    assert crowd["#1 rk2-bespoke NFE 8"] == figures.colors(["#1 x"])["#1 x"]  # by its number only
    assert len(set(crowd.values())) == len(crowd)  # all different
    assert figures.solver_color("#1 a") not in figures.SOLVER_COLORS.values()


def test_log_ticks_are_plain_numbers_in_1_2_5_steps():
    t = figures.log_ticks([0.013, 0.3, float("nan"), 0.0])
    assert t["tickvals"] == [0.02, 0.05, 0.1, 0.2] and t["ticktext"] == ["0.02", "0.05", "0.1", "0.2"]
    wide = figures.log_ticks([1e-6, 1.0])
    assert len(wide["tickvals"]) <= 7 and wide["tickvals"][0] == 1e-6
    narrow = figures.log_ticks([0.0102, 0.0161])
    assert len(narrow["tickvals"]) >= 2
    assert figures.log_ticks([float("nan")]) == {}


def test_data_space_is_drawn_with_equal_axis_scales():
    pts = np.random.default_rng(0).uniform([-4, -1], [4, 1], size=(100, 2))  # wide, flat data
    lay = figures.scatter_2d({"GT (dopri5)": pts, "data": pts}, "t").layout
    assert lay.yaxis.scaleanchor == "x" and lay.yaxis2.scaleanchor == "x2" and lay.yaxis.scaleratio == 1
    assert tuple(lay.xaxis.range) == tuple(lay.yaxis.range) == tuple(lay.xaxis2.range)
    series = {"GT (dopri5)": {"times": np.linspace(0, 1, 3), "pts": np.zeros((3, 2, 2))}}
    assert figures.paths_plane(series, "GT (dopri5)", "t", ("a", "b")).layout.yaxis.scaleanchor == "x"


def test_benchmark_keeps_coinciding_solvers_visible():
    rows = [{"solver": "GT (dopri5)", "kind": "GT", "nfe": 100, "rmse": 0.0, "psnr": float("inf")}]
    for name in ("RK1 (Euler)", "DDIM"):
        rows += [{"solver": name, "kind": "built-in", "nfe": k, "rmse": 1.0 / k, "psnr": 10.0 * k} for k in (2, 4, 8)]
    fig = figures.benchmark(rows)
    euler, ddim = fig.data[0], fig.data[2]
    assert (euler.name, ddim.name) == ("RK1 (Euler)", "DDIM")
    assert euler.marker.symbol != ddim.marker.symbol and euler.line.dash != ddim.line.dash
    assert euler.marker.size < ddim.marker.size  # the open diamond rings Euler's dot
    assert euler.line.color != ddim.line.color
    from explorer import compute
    assert compute.coinciding(rows) == [("RK1 (Euler)", "DDIM")]
    assert list(fig.layout.yaxis.ticktext) == ["0.2", "0.5"]


def test_coefficient_heatmaps_share_one_colour_bar_and_label_their_axes():
    n = 4
    b = np.tril(np.ones((n, n)))
    b[np.triu_indices(n, 1)] = np.nan
    fig = figures.coefficient_heatmaps({"a_i (weight of x0)": np.ones(n), "b_ij (weights of u_j)": b}, "t")
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 2 and all(t.coloraxis == "coloraxis" for t in heat)
    assert fig.layout.coloraxis.colorbar.x >= 1.0  # right of every panel, so it overlaps none
    assert list(fig.layout.xaxis.ticktext) == ["x0"] and fig.layout.xaxis2.title.text == "j"
    assert fig.layout.xaxis.domain[1] - fig.layout.xaxis.domain[0] < fig.layout.xaxis2.domain[1] - fig.layout.xaxis2.domain[0]
    assert fig.layout.yaxis.dtick == 1


def test_bns_loss_is_labelled_negative_psnr():
    hist = [{"iteration": 0, "loss": float("nan"), "rmse": 0.2, "psnr": 20.0}, {"iteration": 1, "loss": -30.0}]
    fig = figures.training_curves(hist, family="bns")
    assert fig.layout.yaxis.title.text == "loss = -PSNR (dB)" and fig.layout.annotations[0].text == "training loss = -PSNR"
    live = figures.training_live(hist, family="rk2-bespoke", title="Training: run 1 done after 3.0 s")
    assert live.layout.yaxis.title.text == "RMSE bound (data units)" and live.layout.title.text.startswith("Training: run 1 done")


def test_every_builder_draws_against_the_right_x():
    """x values, not only lengths: dt/ds at the nodes r_0..r_{M-1}, curves against iterations,
    step errors against the step points' times t, the time grid against the step index."""
    r = np.linspace(0, 1, 5)
    learned = {"r": r, "t": r**2, "dt": 2 * r[:-1] + 0.1, "s": np.ones(5), "ds": np.arange(4.0)}
    tr = _traces(figures.st_schedule({"learned": learned}, learned=("learned",)))
    for k, key in enumerate(("t", "dt", "s", "ds")):
        np.testing.assert_allclose(tr[k]["x"], r[: len(learned[key])])  # dt, ds: r_0..r_3, not r_1..r_4
        np.testing.assert_allclose(tr[k]["y"], learned[key])
    hist = [{"iteration": 0, "loss": float("nan"), "rmse": 0.3, "psnr": 20.0}, {"iteration": 5, "loss": 0.5},
            {"iteration": 10, "loss": 0.25, "rmse": 0.1, "psnr": 26.0}, {"iteration": 15, "loss": 0.2}]
    tr = _traces(figures.training_curves(hist))
    np.testing.assert_allclose(tr[0]["x"], [0, 5, 10, 15])  # iterations, not row numbers
    np.testing.assert_allclose(tr[1]["x"], [0, 10])
    np.testing.assert_allclose(tr[2]["x"], [0, 10])
    grid = np.array([0.0, 0.1, 0.5, 1.0])
    tr = _traces(figures.training_live(hist, {"learned (now)": learned}, ("learned (now)",), grid=grid))
    np.testing.assert_allclose(tr[0]["x"], [0, 5, 10, 15])
    np.testing.assert_allclose(tr[3]["x"], r)  # t_r against r
    np.testing.assert_allclose(tr[5]["x"], [0, 1, 2, 3])  # uniform grid: step index
    np.testing.assert_allclose(tr[5]["y"], [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tr[6]["x"], [0, 1, 2, 3])
    np.testing.assert_allclose(tr[6]["y"], grid)
    times = np.array([0.0, 0.2, 0.7, 1.0])
    tr = _traces(figures.step_errors({"RK2": {"times": times, "errors": np.array([0.0, 0.1, 0.2, 0.3])}}))
    np.testing.assert_allclose(tr[0]["x"], times)  # against t, not the step index
    tr = _traces(figures.time_grid({"learned": grid}))
    np.testing.assert_allclose(tr[0]["x"], [0, 1, 2, 3])
    np.testing.assert_allclose(tr[0]["y"], grid)
    t = np.linspace(0, 1, 6)
    tr = _traces(figures.path_coefficients(t, 1 - t, t, "fm-ot"))
    np.testing.assert_allclose(tr[0]["x"], t)
    np.testing.assert_allclose(tr[1]["y"], t)


def test_gt_samples_are_kept_on_disk_for_hashed_models_only(tmp_path, monkeypatch):
    from explorer import compute, gtcache
    from explorer.models import load_entry

    monkeypatch.setenv("BESPOKE_CACHE_DIR", str(tmp_path))
    field = load_entry("shipped:checkerboard_fm-ot.safetensors")
    first = compute.gt_samples(field, 16, 3, disk=True)
    files = list((tmp_path / "gt").glob("*.npz"))
    assert len(files) == 1
    calls = []
    x, nfe, from_disk = gtcache.load_or_solve(field, 16, 3, 1e-5, lambda: calls.append(1))
    assert from_disk and not calls and nfe == first.nfe
    np.testing.assert_array_equal(x, first.x)
    np.testing.assert_array_equal(x, compute.gt_samples(field, 16, 3).x)  # the same as a fresh solve
    assert gtcache.cache_key(field, 16, 4, 1e-5) != gtcache.cache_key(field, 16, 3, 1e-5)
    files[0].write_bytes(b"garbage")  # an unreadable file: solved again, and rewritten
    x2, _, from_disk = gtcache.load_or_solve(field, 16, 3, 1e-5, lambda: (np.zeros((16, 2)), 7))
    assert not from_disk and x2.sum() == 0
    analytic = load_entry("analytic:8gaussians-fm-ot")
    assert gtcache.cache_key(analytic, 16, 3, 1e-5) is None
    compute.gt_samples(analytic, 8, 0, disk=True)
    assert len(list((tmp_path / "gt").glob("*.npz"))) == 1
