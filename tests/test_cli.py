"""The ``gsc-core`` command: ``gsc-core report`` on a small configuration, its files against
``gsc_core.analyze``, its figures and HTML page, its options and its errors."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="gsc-core report needs matplotlib (pip install 'gsc-core[plot]')")

import gsc_core  # noqa: E402
from gsc_core import cli  # noqa: E402
from gsc_core.architectures import analysis_mode, paper_network  # noqa: E402

SMALL = ["--depth", "6", "--width", "16", "--batch", "32", "--seed", "3"]
ARCHS = ["ReLU", "batch-tanh", "ResNet-tanh"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    """One small run shared by the tests that only read its files."""
    out = tmp_path_factory.mktemp("report")
    argv = ["report", *SMALL, "--archs", ",".join(ARCHS), "--out", str(out), "--quiet"]
    import io
    from contextlib import redirect_stderr, redirect_stdout

    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = cli.main(argv)
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


def _expected(name, seed=3, depth=6, width=16, batch=32, dtype="float64"):
    rng = np.random.default_rng([seed, 1])  # the report's data stream (as examples/figure1.py)
    x = rng.standard_normal((batch, width))
    y = rng.integers(0, 10, size=batch)
    net = paper_network(name, depth=depth, width=width, out_dim=10, seed=seed, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gsc_core.GSCWarning)
        return gsc_core.analyze(net, x, y, loss="cross_entropy", mode=analysis_mode(name), spectrum=True)


def _close(actual, expected, rtol=1e-12):
    a = np.array([np.nan if v is None else v for v in np.ravel(np.asarray(actual, dtype=object))], dtype=float)
    e = np.asarray(expected, dtype=float).ravel()
    np.testing.assert_allclose(a, e, rtol=rtol, atol=0, equal_nan=True)


def test_json_numbers_match_analyze(small_report):
    out, _, _ = small_report
    results = json.loads((out / "results.json").read_text())
    assert results["gsc_core_version"] == gsc_core.__version__
    s = results["settings"]
    assert (s["depth"], s["width"], s["batch"], s["seed"], s["dtype"], s["data"], s["loss"], s["classes"]) == (6, 16, 32, 3, "float64", "gaussian", "cross_entropy", 10)
    assert s["archs"] == ARCHS and s["verdict_thresholds"] == gsc_core.report.VERDICT_THRESHOLDS
    assert list(results["architectures"]) == ARCHS
    for name in ARCHS:
        got = results["architectures"][name]
        want = _expected(name)
        r = got["report"]
        assert got["mode"] == want.mode == analysis_mode(name)
        assert got["verdict"] == want.verdict()
        for key in ("gsc", "log_gsc", "activation_norm", "gradient_norm", "weight_gradient_ratio", "pre_activation_std", "sign_diversity", "losses", "dilution"):
            _close(r[key], getattr(want, key))
        _close(r["explosion_rate"], want.explosion_rate)
        _close(r["explosion_intercept"], want.explosion_intercept)
        assert r["dense_layers_after"] == want.dense_layers_after.tolist()
        assert got["point_depth"] == (want.dense_layers_after[0] - want.dense_layers_after).tolist()
        assert len(got["activation_depth"]) == len(want.pre_activation_std)
        for k, unit in enumerate(want.unit_std):
            _close(r["unit_std"][k], unit)
        if want.spectrum is None:
            assert r["spectrum"] is None and any("BatchNorm" in n for n in r["notes"])
        else:
            _close(r["spectrum"], want.spectrum)
        if want.gsc_per_sample is not None:
            _close(r["gsc_per_sample"], want.gsc_per_sample)
        assert (r["theory"] is None) == (want.theory is None)
    assert set(results["heatmaps"]) == {"layer-tanh", "ResNet-tanh"}


def test_figures_are_pngs_embedded_in_the_html(small_report):
    from matplotlib.image import imread

    out, _, _ = small_report
    results = json.loads((out / "results.json").read_text())
    html = (out / "report.html").read_text()
    assert set(results["figures"]) == {key for key, _, _ in cli.FIGURES}
    for key, filename, _title in cli.FIGURES:
        path = out / filename
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE, filename
        img = imread(path)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300, (filename, img.shape)
        assert "data:image/png;base64," + base64.b64encode(data).decode("ascii") in html, f"{filename} not embedded"
    # self-contained: nothing is fetched when the page opens
    assert "<script" not in html and "stylesheet" not in html
    assert "src='http" not in html and 'src="http' not in html
    for name in ARCHS:
        assert name in html


def test_summary_table(small_report):
    out, stdout, stderr = small_report
    results = json.loads((out / "results.json").read_text())
    assert stderr == ""  # --quiet: no progress bar, no status lines
    lines = stdout.splitlines()
    assert "rate r" in stdout and "GSC(0->loss)" in stdout and "verdict" in stdout
    for name in ARCHS:
        row = next(line for line in lines if line.startswith(name + " "))
        a = results["architectures"][name]
        assert row.split()[-1] == a["verdict"]
        assert f"{a['report']['explosion_rate']:.4f}" in row
    assert "1.024" in stdout  # the verdict thresholds are printed


def test_status_lines_without_quiet_and_no_bar_off_a_terminal(tmp_path, capsys):
    code, out, err = run(["report", *SMALL, "--archs", "tanh", "--out", str(tmp_path / "r")], capsys)
    assert code == 0
    assert "tanh" in out
    assert "wrote" in err and "report.html" in err
    assert "step" not in err and "it/s" not in err  # stderr is not a terminal: no progress bar
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["figures"]["mean_field"] == "figure5_mean_field.png"  # tanh has a mean-field theory


def test_mean_field_figure_skipped_without_gaussian_mlps(tmp_path, capsys):
    code, _, _ = run(["report", *SMALL, "--archs", "layer-ReLU", "--out", str(tmp_path), "--quiet", "--heatmap", "batch-ReLU", "--dtype", "float32"], capsys)
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert "mean_field" not in results["figures"] and not (tmp_path / "figure5_mean_field.png").exists()
    assert any("mean-field" in n for n in results["notes"])
    assert set(results["heatmaps"]) == {"batch-ReLU", "ResNet-ReLU"}
    assert results["settings"]["dtype"] == "float32"


def test_gsc_warnings_become_notes(tmp_path, capsys, monkeypatch):
    real = gsc_core.analyze

    def analyze(*args, **kwargs):
        warnings.warn(gsc_core.GSCWarning("left 1 of 32 samples out"), stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(gsc_core, "analyze", analyze)
    code, _, _ = run(["report", *SMALL, "--archs", "ReLU", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    notes = json.loads((tmp_path / "results.json").read_text())["notes"]
    assert any(n.startswith("ReLU:") and "left 1 of 32" in n for n in notes)


def test_npz_with_labels_and_npy_without(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2, 6))  # flattened to width 12
    y = rng.integers(0, 4, size=50)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, _, _ = run(["report", *SMALL, "--archs", "tanh", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "a"), "--quiet"], capsys)
    assert code == 0
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    s = res["settings"]
    assert (s["in_dim"], s["classes"], s["labels"], s["batch"]) == (12, 4, "dataset", 32)
    assert res["architectures"]["tanh"]["report"]["point_widths"][0] == 12
    assert any("flattened" in n for n in res["notes"])

    np.save(tmp_path / "d.npy", x[:20].reshape(20, 12))
    code, _, _ = run(["report", *SMALL, "--archs", "tanh", "--data", str(tmp_path / "d.npy"), "--out", str(tmp_path / "b"), "--quiet", "--standardize"], capsys)
    assert code == 0
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    s = res["settings"]
    assert (s["in_dim"], s["classes"], s["labels"], s["batch"], s["standardize"]) == (12, 10, "random", 20, True)
    assert any("fewer than --batch" in n for n in res["notes"]) and any("random labels" in n for n in res["notes"])


def test_digits(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="--data digits needs scikit-learn")
    code, _, _ = run(["report", "--depth", "4", "--width", "8", "--batch", "40", "--archs", "ReLU", "--data", "digits", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    s = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert (s["in_dim"], s["classes"], s["labels"], s["batch"]) == (64, 10, "dataset", 40)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: str(d / "missing.npy"), "no such file"),
        (lambda d: (d / "a.txt").write_text("1 2") and str(d / "a.txt"), "expected a .npy or .npz"),
        (lambda d: np.save(d / "v.npy", np.ones(5)) or str(d / "v.npy"), "(samples, features)"),
        (lambda d: np.save(d / "n.npy", np.array([[1.0, np.nan], [0.0, 1.0]])) or str(d / "n.npy"), "NaN or infinity"),
        (lambda d: np.save(d / "b.npy", np.ones((4, 3), dtype=bool)) or str(d / "b.npy"), "real numbers"),
        (lambda d: np.save(d / "s.npy", np.ones((1, 3))) or str(d / "s.npy"), "at least 2 samples"),
        (lambda d: np.savez(d / "k.npz", a=np.ones((4, 3)), b=np.ones(4)) or str(d / "k.npz"), "store the inputs as 'x'"),
        (lambda d: np.savez(d / "l.npz", x=np.ones((4, 3)), y=np.array([0.5, 1, 2, 3])) or str(d / "l.npz"), "integer classes"),
        (lambda d: np.savez(d / "m.npz", x=np.ones((4, 3)), y=np.array([0, 1])) or str(d / "m.npz"), "one per sample"),
        (lambda d: (d / "c.npy").write_bytes(b"not numpy") and str(d / "c.npy"), "not a readable NumPy file"),
        (lambda d: np.save(d / "o.npy", np.array([[1, "a"]], dtype=object)) or str(d / "o.npy"), "unpickling"),
    ],
)
def test_bad_data_is_a_clear_error(tmp_path, capsys, make, message):
    path = make(tmp_path)
    code, out, err = run(["report", *SMALL, "--archs", "tanh", "--data", path, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and out == ""
    assert err.startswith("gsc-core report: error: --data") and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--archs", "ReLU,nope"], "unknown architecture 'nope'"),
        (["--depth", "1"], "must be at least 3"),
        (["--batch", "x"], "expected an integer"),
        (["--dtype", "float16"], "invalid choice"),
        (["--heatmap", "looks-linear ReLU"], "invalid choice"),
    ],
)
def test_bad_options(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_odd_width_with_looks_linear(tmp_path, capsys):
    code, _, err = run(["report", "--depth", "4", "--width", "7", "--batch", "8", "--archs", "looks-linear-relu", "--out", str(tmp_path)], capsys)
    assert code == 2 and "even --width" in err


def test_arch_names_are_forgiving():
    assert cli._parse_archs("relu, Looks_Linear_ReLU,resnet-TANH") == ["ReLU", "looks-linear ReLU", "ResNet-tanh"]
    assert cli._parse_archs("all") == list(gsc_core.architectures.ARCHITECTURES)


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--depth", "--width", "--batch", "--archs", "--dtype", "--seed", "--threads", "--data", "--out", "--quiet", "--heatmap"):
        assert option in text
    assert "collapses" in text and "explodes" in text  # the verdict thresholds are documented
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert gsc_core.__version__ in capsys.readouterr().out
    assert cli.main([]) == 2


def test_module_entry_point_runs():
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "gsc_core", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "report" in proc.stdout


def test_console_script_is_declared():
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert 'gsc-core = "gsc_core.cli:main"' in pyproject.read_text()
    try:
        scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    except TypeError:  # pragma: no cover - Python < 3.10
        scripts = {ep.name: ep.value for ep in metadata.entry_points().get("console_scripts", [])}
    if "gsc-core" not in scripts:
        pytest.skip("gsc-core is not installed with its entry points in this environment (run scripts/setup.sh)")
    assert scripts["gsc-core"] == "gsc_core.cli:main"
