"""gsc_core.plot and Report.plot: the figures hold the report's numbers at the right depths, render
without warnings, and matplotlib stays optional for the core."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib", reason="gsc_core.plot needs matplotlib (pip install 'gsc-core[plot]')")
matplotlib.use("Agg")

import gsc_core  # noqa: E402
from gsc_core import plot  # noqa: E402
from gsc_core.architectures import analysis_mode, paper_network  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DEPTH, WIDTH, BATCH = 6, 16, 48


def _data(seed=0, width=WIDTH, batch=BATCH):
    rng = np.random.default_rng([seed, 1])
    return rng.standard_normal((batch, width)), rng.integers(0, 10, size=batch)


@pytest.fixture(scope="module")
def setup():
    x, y = _data()
    names = ["ReLU", "tanh", "layer-tanh", "batch-ReLU", "ResNet-tanh", "ResNet-ReLU"]
    nets = {n: paper_network(n, DEPTH, WIDTH, out_dim=10, seed=1) for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gsc_core.GSCWarning)
        reports = {n: gsc_core.analyze(nets[n], x, y, loss="cross_entropy", mode=analysis_mode(n)) for n in names}
    return x, y, nets, reports


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return buf.getvalue()


def test_import_does_not_need_matplotlib():
    code = "import sys, gsc_core, gsc_core.plot, gsc_core.cli, gsc_core.torch_interop; assert 'matplotlib' not in sys.modules, 'imported'; assert 'torch' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_point_and_activation_depths(setup):
    _, _, nets, reports = setup
    for name, net in nets.items():
        r = reports[name]
        depth = plot.point_depths(r)
        assert depth[0] == 0 and np.all(np.diff(depth) >= 0)
        np.testing.assert_array_equal(depth, plot._depths_from_net(net))
        act = plot.activation_depths(net)
        assert len(act) == len(r.pre_activation_std)
        # in the paper's families, Activation layer k sits after k Dense layers
        np.testing.assert_array_equal(act, np.arange(1, len(act) + 1))
    assert depth[-1] == DEPTH
    # a top-level Activation's depth is that of the point feeding it
    net = nets["tanh"]
    tops = [i for i, layer in enumerate(net.layers) if isinstance(layer, gsc_core.Activation)]
    np.testing.assert_array_equal(plot.activation_depths(net), plot._depths_from_net(net)[tops])


def test_activation_depths_nested_residuals():
    rng = np.random.default_rng(0)
    d = lambda: gsc_core.Dense(rng.normal(size=(4, 4)))  # noqa: E731
    act = gsc_core.Activation("tanh")
    inner = gsc_core.Residual([act, d(), act, d()])
    net = gsc_core.Network([act, d(), gsc_core.Residual([act, d(), inner, act], shortcut=d()), act, d()])
    assert plot.activation_depths(net).tolist() == [0, 1, 2, 3, 4, 4]
    np.testing.assert_array_equal(plot._depths_from_net(net), [0, 0, 1, 4, 4, 5])


def test_gsc_depth_lines_hold_the_report(setup):
    _, _, _, reports = setup
    fig = plot.gsc_depth(reports)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "depth" in ax.get_xlabel() and "GSC" in ax.get_ylabel()
    lines = [line for line in ax.get_lines() if line.get_label() and not line.get_label().startswith("_")]
    assert len(lines) == len(reports)
    for line, (name, r) in zip(lines, reports.items()):
        assert line.get_label() == f"{name} ({r.verdict()})"
        np.testing.assert_array_equal(line.get_xdata(), plot.point_depths(r))
        np.testing.assert_allclose(line.get_ydata(), r.gsc)
    assert len(_png(fig)) > 1000
    # into the caller's axes
    host = Figure()
    ax = host.add_subplot()
    assert plot.gsc_depth(reports["tanh"], ax=ax, verdicts=False) is host
    assert [l.get_label() for l in ax.get_lines() if not l.get_label().startswith("_")] == ["network"]


def test_domain(setup):
    _, _, nets, reports = setup
    fig = plot.domain(reports, nets)
    ax_std, ax_sign = fig.axes[:2]
    assert ax_std.get_yscale() == "log" and ax_sign.get_ylim()[1] <= 0.6
    assert "compositional depth" in ax_std.get_xlabel()
    std_lines = [l for l in ax_std.get_lines() if not l.get_label().startswith("_")]
    for line, (name, r) in zip(std_lines, reports.items()):
        assert line.get_label() == name
        np.testing.assert_array_equal(line.get_xdata(), plot.activation_depths(nets[name]))
        np.testing.assert_allclose(line.get_ydata(), r.pre_activation_std)
    sign_lines = [l for l in ax_sign.get_lines() if not l.get_label().startswith("_")]
    np.testing.assert_allclose(sign_lines[0].get_ydata(), reports["ReLU"].sign_diversity)
    _png(fig)
    # without the networks: Activation layer k at x = k, said so on the axis
    fig = plot.domain(list(reports.values()))
    assert "Activation layer" in fig.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="Activation layers"):
        plot.domain({"tanh": reports["tanh"]}, {"tanh": gsc_core.mlp(3, 4)})


def test_unit_profiles_by_hand(setup):
    x, y, nets, _ = setup
    for name in ("tanh", "ResNet-tanh", "batch-ReLU"):
        net = nets[name]
        prof = plot.unit_profiles(net, x, y, loss="cross_entropy")
        trace = net.forward(x)
        _, grads = net.loss_and_grad(x, y, loss="cross_entropy")
        depth = plot._depths_from_net(net)
        expected = [int(np.argmax(depth == d)) for d in range(1, DEPTH) if np.any(depth == d)]
        assert prof["point"].tolist() == expected
        assert prof["depth"].tolist() == [int(depth[i]) for i in expected]
        for col, i in enumerate(expected):
            np.testing.assert_allclose(prof["activation_rms"][:, col], np.sqrt(np.mean(trace.points[i] ** 2, axis=0)))
            np.testing.assert_allclose(prof["gradient_rms"][:, col], np.sqrt(np.mean(grads.points[i] ** 2, axis=0)))
    assert plot.unit_profiles(nets["ResNet-tanh"], x, y, "cross_entropy")["depth"].tolist() == [1, 3, 5]


def test_heatmaps(setup):
    x, y, nets, _ = setup
    fig = plot.heatmaps({"tanh": nets["tanh"], "ResNet-tanh": nets["ResNet-tanh"]}, x, y, loss="cross_entropy")
    meshes = [c for ax in fig.axes[:4] for c in ax.collections]
    assert len(meshes) == 4
    # each row shares one colour scale
    assert meshes[0].norm.vmin == meshes[1].norm.vmin and meshes[2].norm.vmax == meshes[3].norm.vmax
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "tanh: activations p" in titles and "ResNet-tanh: gradients dL/dp" in titles
    _png(fig)
    with pytest.raises(ValueError, match="inputs x"):
        plot.heatmaps({"tanh": nets["tanh"]})


def test_spectra(setup):
    _, _, _, reports = setup
    fig = plot.spectra(reports, ncols=3)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == len(reports)
    by_title = {ax.get_title().split("\n")[0]: ax for ax in axes}
    assert any("BatchNorm" in t.get_text() for t in by_title["batch-ReLU"].texts)
    relu = by_title["ReLU"]
    assert relu.get_xscale() == "log" and "mean field" in relu.get_title()
    counts = sum(p.get_height() for p in relu.patches)
    assert counts == reports["ReLU"].spectrum.size
    _png(fig)


def test_mean_field(setup):
    _, _, _, reports = setup
    fig = plot.mean_field(reports)  # only ReLU and tanh have theories
    assert len(fig.axes) == 4
    r = reports["tanh"]
    measured, predicted, depth = plot.gradient_growth(r)
    assert depth.tolist() == list(range(1, DEPTH)) and measured[-1] == 1.0 and predicted[-1] == 1.0
    chi = np.asarray(r.theory["chi"])
    np.testing.assert_allclose(predicted[0], np.prod(np.sqrt(chi[: DEPTH - 2])))
    after = r.dense_layers_after
    dense = [i for i in range(1, len(after)) if after[i] < after[i - 1]][: DEPTH - 1]
    np.testing.assert_allclose(measured, r.gradient_norm[dense] / r.gradient_norm[dense[-1]])
    std_ax = fig.axes[1]
    np.testing.assert_allclose(std_ax.get_lines()[0].get_ydata(), r.pre_activation_std)
    np.testing.assert_allclose(std_ax.get_lines()[1].get_ydata(), r.theory["pre_activation_std"])
    _png(fig)
    with pytest.raises(ValueError, match="mean-field"):
        plot.mean_field({"batch-ReLU": reports["batch-ReLU"]})


def test_predicted_rms_singular_value_matches_a_wide_net():
    # mean field is exact in the infinite-width limit: a wide, shallow ReLU net should be close
    net = gsc_core.mlp(depth=3, width=800, in_dim=200, out_dim=50, activation="relu", init="he", seed=0)
    x = np.random.default_rng(1).standard_normal((16, 200))
    r = gsc_core.analyze(net, x)
    rms = np.sqrt(np.mean(r.spectrum**2))
    assert plot.predicted_rms_singular_value(r) == pytest.approx(rms, rel=0.05)
    assert plot.predicted_rms_singular_value(gsc_core.analyze(gsc_core.mlp(3, 8, norm="layer"), x[:, :8])) is None


def test_report_plot_kinds(setup):
    x, _, nets, reports = setup
    r = reports["tanh"]
    for kind in plot.PLOTS:
        fig = r.plot(kind, label="tanh")
        assert isinstance(fig, Figure) and fig.axes
        _png(fig)
    fig = r.plot(net=nets["tanh"])
    assert "compositional depth" in fig.axes[1].get_xlabel()
    fig = reports["batch-ReLU"].plot()  # no spectrum: the weight-gradient panel instead
    assert "Weight-gradient" in fig.axes[3].get_title()
    with pytest.raises(ValueError, match="unknown plot kind"):
        r.plot("nope")
    # drawing into the caller's figure
    mine = Figure()
    assert r.plot("domain", fig=mine) is mine and len(mine.axes) == 2


def test_bad_inputs(setup):
    _, _, _, reports = setup
    with pytest.raises(TypeError, match="gsc_core.Report"):
        plot.gsc_depth([1, 2])
    with pytest.raises(TypeError, match="gsc_core.Report"):
        plot.gsc_depth("tanh")
    with pytest.raises(ValueError, match="empty"):
        plot.gsc_depth({})
    with pytest.raises(ValueError, match="mapping"):
        plot.domain(reports, gsc_core.mlp(3, 4))


def test_colours_are_fixed_per_architecture(setup):
    _, _, _, reports = setup
    a = plot.gsc_depth(reports)
    b = plot.gsc_depth({"ResNet-tanh": reports["ResNet-tanh"]})
    colour = lambda fig: {l.get_label().split(" (")[0]: l.get_color() for l in fig.axes[0].get_lines()}  # noqa: E731
    assert colour(a)["ResNet-tanh"] == colour(b)["ResNet-tanh"] == plot.COLOURS["ResNet-tanh"]
    assert len(set(plot.COLOURS.values())) == len(plot.COLOURS)
