"""The analysis suite (SPEC §3, §4, §7) against plain NumPy computations on the reference network
(tests/reference.py): GSC to the loss and between points in both modes, the probe estimator,
explosion rate, domain statistics, dilution, the Report, overflow-free logs, and the paper's
Figure 1 claims."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given

import gsc_core
from conftest import Case, cases, has_batchnorm, random_case
from reference import RefNet, losses_and_output_grad

RTOL = 1e-9  # float64, exact paths
UNIT64 = 2.0**-53


def elementwise_rtol(layers, compute, draws: int = 2) -> float:
    """RTOL, raised to 30x how far float64 rounding noise on every layer's output moves each element
    of ``compute(RefNet)`` relatively (GSC entries are ratios: a tiny one can be ill-conditioned,
    e.g. a LayerNorm of two features whose gradient cancels). Rejects hopeless cases."""
    from hypothesis import assume

    exact = np.asarray(compute(RefNet(layers)), dtype=np.float64)
    worst = 0.0
    for seed in range(draws):
        noisy = np.asarray(compute(RefNet(layers, noise=(UNIT64, seed))), dtype=np.float64)
        ok = np.isfinite(exact) & np.isfinite(noisy) & (exact != 0)
        if ok.any():
            worst = max(worst, float(np.max(np.abs(noisy[ok] - exact[ok]) / np.abs(exact[ok]))))
    rtol = max(RTOL, 30 * worst)
    assume(rtol < 1e-6)
    return rtol


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    ok = ~np.isnan(b)
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300), initial=0.0))


# ------------------------------------------------------------------ NumPy definitions (SPEC §3)


@np.errstate(all="ignore")
def ref_gsc_to_loss(ref: RefNet, x, y, loss, mode):
    points, _ = ref.forward(x)
    losses, grads = ref.loss_and_grad(x, y, loss)
    widths = np.array([p.shape[1] for p in points], dtype=float)
    if mode == "batch":
        B = x.shape[0]
        return np.array([np.linalg.norm(g) / np.sqrt(B * d) * np.linalg.norm(p) / abs(losses.sum()) for g, p, d in zip(grads.points, points, widths)])
    per = np.stack([np.linalg.norm(g, axis=1) / np.sqrt(d) * np.linalg.norm(p, axis=1) / np.abs(losses) for g, p, d in zip(grads.points, points, widths)], axis=1)
    return per  # (B, N+1)


@np.errstate(all="ignore")
def geometric_mean(per_sample):
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(per_sample)
    out = []
    for col in logs.T:
        keep = np.isfinite(col)
        out.append(np.exp(col[keep].mean()) if keep.any() else np.nan)
    return np.array(out)


@np.errstate(all="ignore")
def ref_gsc_matrix(ref: RefNet, x, mode):
    points, _ = ref.forward(x)
    n1 = len(points)
    out = np.full((n1, n1), np.nan)
    np.fill_diagonal(out, 1.0)
    B = x.shape[0]
    for j in range(n1):
        for i in range(j):
            J = ref.jacobian(x, i, j)
            d_i = points[i].shape[1]
            if mode == "sample":
                per = np.linalg.norm(J, axis=(1, 2)) / np.sqrt(d_i) * np.linalg.norm(points[i], axis=1) / np.linalg.norm(points[j], axis=1)
                out[i, j] = geometric_mean(per[:, None])[0]
            else:
                out[i, j] = np.linalg.norm(J) / np.sqrt(B * d_i) * np.linalg.norm(points[i]) / np.linalg.norm(points[j])
    return out


def ref_batch_frobenius_sq(ref: RefNet, x, i, j) -> float:
    """||dP_j/dP_i||_F^2 of the whole-batch Jacobian (BatchNorm included), by B*d_i JVPs."""
    points, _ = ref.forward(x)
    B, d = points[i].shape
    eye = np.eye(B * d).reshape(B * d, B, d).transpose(1, 0, 2)  # (B, K=B*d, d): whole-batch basis
    return float(np.sum(ref.jvp(x, eye, point=i)[j] ** 2))


def ref_dense_after(layers) -> list[int]:
    def count(layer) -> int:
        if isinstance(layer, gsc_core.Dense):
            return 1
        if isinstance(layer, gsc_core.Residual):
            return sum(count(l) for l in layer.body)
        return 0

    per = [count(l) for l in layers]
    return [sum(per[i:]) for i in range(len(layers) + 1)]


# ------------------------------------------------------------------ GSC to the loss


@given(cases(dtypes=("float64",), batchnorm=False))
def test_gsc_to_loss_per_sample_and_summary_match_numpy(case: Case):
    net = case.net()
    for loss, y in (("mse", case.y_mse), ("cross_entropy", case.y_classes)):
        per = ref_gsc_to_loss(case.ref(net), case.x, y, loss, "sample")
        rtol = elementwise_rtol(net.layers, lambda r: ref_gsc_to_loss(r, case.x, y, loss, "sample"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gsc_core.GSCWarning)
            got_per = gsc_core.gsc_per_sample(net, case.x, y, loss)
            got = gsc_core.gsc(net, case.x, y, loss)
        finite = np.isfinite(per) & (per > 0)
        assert rel(np.where(finite, got_per, 0), np.where(finite, per, 0)) < rtol
        assert rel(got, geometric_mean(per)) < rtol


@given(cases(dtypes=("float64",)))
def test_gsc_batch_mode_matches_numpy_with_and_without_batchnorm(case: Case):
    net = case.net()
    for loss, y in (("mse", case.y_mse), ("cross_entropy", case.y_classes)):
        want = ref_gsc_to_loss(case.ref(net), case.x, y, loss, "batch")
        rtol = elementwise_rtol(net.layers, lambda r: ref_gsc_to_loss(r, case.x, y, loss, "batch"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gsc_core.GSCWarning)
            got = gsc_core.gsc(net, case.x, y, loss, mode="batch")
        ok = np.isfinite(want) & (want > 0)
        assert np.array_equal(ok, np.isfinite(got))
        assert rel(got[ok], want[ok]) < rtol


def test_gsc_log_option_is_the_log():
    case = random_case(3, batchnorm=False)
    net = case.net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gsc_core.GSCWarning)
        g = gsc_core.gsc(net, case.x, case.y_mse)
        lg = gsc_core.gsc(net, case.x, case.y_mse, log=True)
    ok = np.isfinite(g)
    assert np.allclose(np.exp(lg[ok]), g[ok], rtol=1e-12)


def test_sample_mode_with_batchnorm_names_the_layer():
    net = gsc_core.mlp(depth=3, width=4, norm="batch", seed=0)
    x = np.random.default_rng(0).normal(size=(5, 4))
    for call in (lambda: gsc_core.gsc(net, x), lambda: gsc_core.gsc_matrix(net, x), lambda: gsc_core.analyze(net, x)):
        with pytest.raises(ValueError, match=r"layers\[1\] \(BatchNorm\).*mode='batch'"):
            call()
    with pytest.raises(ValueError, match="probes"):
        gsc_core.gsc_matrix(net, x, mode="batch")
    assert np.all(np.isfinite(gsc_core.gsc(net, x, mode="batch")))


def test_zero_loss_samples_are_left_out_and_reported():
    net = gsc_core.Network([gsc_core.Dense(np.eye(2))])
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    y = x.copy()
    y[1] += [1.0, 0.0]  # only sample 1 has a non-zero loss
    with pytest.warns(gsc_core.GSCWarning, match="left 2 of 3 samples"):
        g = gsc_core.gsc(net, x, y)
    # sample 1 alone: |dl/dp| = 1, ||p|| = ||x_1||, l = 0.5; G = 1/sqrt(2) * sqrt(10) / 0.5
    assert np.allclose(g, np.sqrt(10) / np.sqrt(2) / 0.5, rtol=1e-14)
    with pytest.warns(gsc_core.GSCWarning):
        report = gsc_core.analyze(net, x, y, spectrum=False)
    assert list(report.gsc_left_out) == [2, 2]
    with pytest.warns(gsc_core.GSCWarning, match="undefined"):
        assert np.all(np.isnan(gsc_core.gsc(net, x, x, mode="batch")))


# ------------------------------------------------------------------ GSC between points


@given(cases(dtypes=("float64",), batchnorm=False, max_layers=4))
def test_gsc_matrix_exact_matches_numpy_both_modes(case: Case):
    net = case.net()
    ref = case.ref(net)
    for mode in ("sample", "batch"):
        rtol = elementwise_rtol(net.layers, lambda r: ref_gsc_matrix(r, case.x, mode))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gsc_core.GSCWarning)
            got = gsc_core.gsc_matrix(net, case.x, mode=mode)
            want = ref_gsc_matrix(ref, case.x, mode)
        ok = np.isfinite(want)
        assert np.array_equal(ok, np.isfinite(got)), (got, want)
        assert rel(got[ok], want[ok]) < rtol
        assert np.all(np.diag(got) == 1.0) and np.all(np.isnan(got[np.tril_indices_from(got, -1)]))


def test_gsc_matrix_stderr_is_zero_when_exact_and_log_matches():
    net = gsc_core.mlp(depth=3, width=5, seed=1)
    x = np.random.default_rng(1).normal(size=(4, 5))
    m, err = gsc_core.gsc_matrix(net, x, return_stderr=True)
    lm = gsc_core.gsc_matrix(net, x, log=True)
    up = np.triu_indices_from(m, 1)
    assert np.all(err[up] == 0)
    assert np.allclose(np.exp(lm[up]), m[up], rtol=1e-12)


@pytest.mark.parametrize("mode,batchnorm", [("sample", False), ("batch", False), ("batch", True)])
def test_probe_estimator_mean_is_within_three_standard_errors(mode, batchnorm):
    rng = np.random.default_rng(5)
    layers = [gsc_core.Dense(rng.normal(size=(5, 4)) / 2), gsc_core.Activation("tanh")]
    if batchnorm:
        layers.append(gsc_core.BatchNorm(weight=rng.normal(1, 0.2, size=5)))
    layers += [gsc_core.Dense(rng.normal(size=(3, 5)) / 2), gsc_core.Activation("gelu")]
    net = gsc_core.Network(layers)
    x = rng.normal(size=(6, 4))
    ref = RefNet(net.layers)
    points, _ = ref.forward(x)
    n1 = len(points)
    B = x.shape[0]
    if mode == "sample":
        exact = gsc_core.gsc_matrix(net, x, mode="sample")
    else:
        exact = np.full((n1, n1), np.nan)
        for j in range(n1):
            for i in range(j):
                F = ref_batch_frobenius_sq(ref, x, i, j)
                exact[i, j] = np.sqrt(F) / np.sqrt(B * points[i].shape[1]) * np.linalg.norm(points[i]) / np.linalg.norm(points[j])
        if not batchnorm:
            assert rel(gsc_core.gsc_matrix(net, x, mode="batch")[np.triu_indices(n1, 1)], exact[np.triu_indices(n1, 1)]) < RTOL
    estimates, errors = zip(*(gsc_core.gsc_matrix(net, x, mode=mode, probes=8, seed=s, return_stderr=True) for s in range(40)))
    estimates = np.array(estimates)
    up = np.triu_indices(n1, 1)
    mean = estimates.mean(axis=0)[up]
    # standard error of the mean over seeds, from the spread across seeds
    se = estimates.std(axis=0, ddof=1)[up] / np.sqrt(len(estimates))
    assert np.all(np.abs(mean - exact[up]) <= 3 * se + 1e-12), (mean, exact[up], se)
    # the reported per-call standard error agrees with the spread across seeds (within a factor 2)
    spread = estimates.std(axis=0, ddof=1)[up]
    reported = np.array(errors).mean(axis=0)[up]
    assert np.all((reported > spread / 2) & (reported < spread * 2)), (reported, spread)
    # reproducible for a seed
    a = gsc_core.gsc_matrix(net, x, mode=mode, probes=8, seed=3)
    b = gsc_core.gsc_matrix(net, x, mode=mode, probes=8, seed=3)
    assert np.array_equal(a, b, equal_nan=True)


# ------------------------------------------------------------------ explosion rate, statistics


@given(cases(dtypes=("float64",), batchnorm=False))
def test_explosion_rate_is_the_least_squares_fit(case: Case):
    net = case.net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gsc_core.GSCWarning)
        g = gsc_core.gsc(net, case.x, case.y_mse)
        r, c = gsc_core.explosion_rate(net, case.x, case.y_mse)
    n = np.array(ref_dense_after(case.layers), dtype=float)
    keep = np.isfinite(g) & (g > 0)
    if keep.sum() < 2 or np.ptp(n[keep]) == 0:
        assert np.isnan(r) and np.isnan(c)
        return
    A = np.stack([np.ones(keep.sum()), n[keep]], axis=1)
    (log_c, log_r), *_ = np.linalg.lstsq(A, np.log(g[keep]), rcond=None)
    assert abs(np.log(r) - log_r) < 1e-9 * max(1, abs(log_r)) + 1e-12
    assert abs(np.log(c) - log_c) < 1e-9 * max(1, abs(log_c)) + 1e-12


def test_explosion_rate_recovers_a_known_geometric_growth():
    # A linear chain of Dense(2 I): G(i -> loss) doubles... no: G is scale-free for linear maps.
    # Instead: alternating Dense(a I) and identity activations on mse with zero targets gives
    # dl/dp_i = a^(n_i) o, ||p_i|| = ||o|| / a^(n_i): G constant -> r = 1 exactly.
    net = gsc_core.Network([gsc_core.Dense(2.0 * np.eye(3)), gsc_core.Activation("identity")] * 6)
    x = np.random.default_rng(0).normal(size=(4, 3))
    r, c = gsc_core.explosion_rate(net, x)
    assert abs(r - 1) < 1e-12
    # A tanh chain in its linear regime with growing weights: G grows like the weight scale.
    assert np.isclose(c, gsc_core.gsc(net, x)[-1], rtol=1e-12)


@given(cases(dtypes=("float64", "float32")))
def test_preactivation_stats_match_numpy(case: Case):
    net = case.net()
    _, pre = case.ref(net).forward(case.x)
    trace = net.forward(case.xin())
    stats = gsc_core.preactivation_stats(net, case.xin())
    assert len(stats["unit_std"]) == len(pre) == len(stats["std"]) == len(stats["sign_diversity"])
    for z_gsc, s, d, s_mean, d_mean in zip(trace.pre_activations, stats["unit_std"], stats["unit_sign_diversity"], stats["std"], stats["sign_diversity"]):
        z = np.asarray(z_gsc, dtype=np.float64)  # the values gsc_core saw (dtype-rounded)
        assert np.allclose(s, z.std(axis=0), rtol=1e-12, atol=1e-300)
        P, N = (z > 0).sum(axis=0), (z < 0).sum(axis=0)
        want = np.where(P + N == 0, 0.0, np.minimum(P, N) / np.maximum(P + N, 1))
        assert np.array_equal(d, want)
        assert np.isclose(s_mean, s.mean()) and np.isclose(d_mean, d.mean())
        assert np.all(d <= 0.5)


def test_dilution_is_the_ratio_of_quadratic_means():
    rng = np.random.default_rng(2)
    body = [gsc_core.Activation("relu"), gsc_core.Dense(rng.normal(size=(4, 4)))]
    shortcut = gsc_core.Dense(rng.normal(size=(4, 4)))
    net = gsc_core.Network([gsc_core.Dense(rng.normal(size=(4, 3))), gsc_core.Residual(body, alpha=0.3), gsc_core.Residual(body, alpha=-2.0, shortcut=shortcut)])
    x = rng.normal(size=(7, 3))
    points, _ = RefNet(net.layers).forward(x)
    want = []
    for p, layer in zip(points[1:3], net.layers[1:3]):
        b = RefNet(layer.body).forward(p)[0][-1]
        s = p if layer.shortcut is None else RefNet([layer.shortcut]).forward(p)[0][-1]
        want.append(np.sqrt(np.mean(np.sum(s**2, axis=1))) / np.sqrt(np.mean(np.sum((layer.alpha * b) ** 2, axis=1))))
    assert rel(gsc_core.dilution(net, x), want) < 1e-12
    assert rel(gsc_core.analyze(net, x, spectrum=False).dilution, want) < 1e-12


def test_spectrum_summary():
    s = np.array([[3.0, 1.0], [2.0, 2.0]])
    out = gsc_core.spectrum_summary(s)
    assert np.allclose(out["mean_sq"], [5.0, 4.0]) and np.allclose(out["var_sq"], [16.0, 0.0])
    assert np.allclose(out["condition"], [3.0, 1.0]) and out["condition_mean"] == 2.0


# ------------------------------------------------------------------ the report


@given(cases(dtypes=("float64",), batchnorm=False, max_layers=5))
def test_analyze_fields_match_numpy(case: Case):
    net = case.net()
    ref = case.ref(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gsc_core.GSCWarning)
        report = gsc_core.analyze(net, case.x, case.y_classes, loss="cross_entropy")
        g = gsc_core.gsc(net, case.x, case.y_classes, "cross_entropy")
        rate, _ = gsc_core.explosion_rate(net, case.x, case.y_classes, "cross_entropy")
    points, _ = ref.forward(case.x)
    losses, grads = ref.loss_and_grad(case.x, case.y_classes, "cross_entropy")
    dense = [l for l in _walk_dense(net.layers)]

    def norms(r):
        _, gr = r.loss_and_grad(case.x, case.y_classes, "cross_entropy")
        pts, _ = r.forward(case.x)
        return np.concatenate([r.losses(case.x, case.y_classes, "cross_entropy"), [np.linalg.norm(p) for p in pts], [np.linalg.norm(q) for q in gr.points],
                               [np.linalg.norm(gw) / np.linalg.norm(d.weight) for gw, d in zip(gr.weights, dense)]])

    rtol = elementwise_rtol(net.layers, norms)
    assert rel(report.losses, losses) < rtol
    assert rel(report.gsc, g) < 1e-14
    assert rel(report.activation_norm, [np.linalg.norm(p) for p in points]) < rtol
    assert rel(report.gradient_norm, [np.linalg.norm(q) for q in grads.points]) < rtol
    ratio = [np.linalg.norm(gw) / np.linalg.norm(d.weight) for gw, d in zip(grads.weights, dense)]
    assert rel(report.weight_gradient_ratio, ratio) < rtol
    spec = ref.jacobian_spectrum(case.x)
    assert rel(report.spectrum, spec) < 1e-8 or np.allclose(report.spectrum, spec, rtol=1e-8, atol=1e-10 * spec.max(initial=1))
    stats = gsc_core.preactivation_stats(net, case.x)
    assert np.array_equal(report.pre_activation_std, stats["std"])
    assert report.explosion_rate == pytest.approx(rate, nan_ok=True)
    json.dumps(report.to_dict())  # plain, serialisable
    assert "GSC->loss" in report.summary() and report.verdict() in ("explodes", "vanishes", "collapses", "healthy", "undefined")
    assert repr(report).startswith("Report(")


def _walk_dense(layers):
    for layer in layers:
        if isinstance(layer, gsc_core.Dense):
            yield layer
        elif isinstance(layer, gsc_core.Residual):
            yield from _walk_dense(layer.body)
            if layer.shortcut is not None:
                yield layer.shortcut


def test_analyze_batch_mode_with_batchnorm_has_no_spectrum_and_says_why():
    net = gsc_core.mlp(depth=4, width=6, norm="batch", activation="relu", init="he", seed=0)
    x = np.random.default_rng(0).normal(size=(8, 6))
    report = gsc_core.analyze(net, x, mode="batch")
    assert report.spectrum is None and report.gsc_per_sample is None and report.theory is None
    assert any("BatchNorm" in n for n in report.notes)
    assert np.all(np.isfinite(report.gsc))


# ------------------------------------------------------------------ extremes


def test_five_thousand_layer_exploding_network_has_finite_logs():
    net = gsc_core.mlp(5000, 8, activation="relu", norm="batch", init="he", seed=0)
    x = np.random.default_rng(0).normal(size=(16, 8))
    logs = gsc_core.gsc(net, x, mode="batch", log=True)
    assert np.all(np.isfinite(logs))
    g = gsc_core.gsc(net, x, mode="batch")
    # inf exactly where the true value exceeds float64
    assert np.array_equal(np.isinf(g), logs > np.log(np.finfo(np.float64).max))
    assert logs[0] > 710  # e^710 > float64 max: this network really overflows
    r, _ = gsc_core.explosion_rate(net, x, mode="batch")
    assert 1.05 < r < 1.5


def test_vanishing_deep_network_has_finite_logs_and_underflows_honestly():
    # sigmoid' <= 1/4: gradients shrink ~5x per layer towards the input while the activations stay
    # O(1); after 2000 layers the true GSC at the input is ~e^-1600, far below float64's range.
    net = gsc_core.mlp(2000, 6, activation="sigmoid", init="lecun", seed=0)
    x = np.random.default_rng(0).normal(size=(5, 6))
    logs = gsc_core.gsc(net, x, log=True)
    assert np.all(np.isfinite(logs))
    assert logs[0] < np.log(np.finfo(np.float64).tiny) - 50
    g = gsc_core.gsc(net, x)
    assert g[0] == 0.0 and np.all(g[-10:] > 0)  # 0 only where the true value underflows
    r, _ = gsc_core.explosion_rate(net, x)
    assert r < 0.9
    norms = gsc_core.jacobian_norms(net, x)
    assert np.all(np.isfinite(norms)) and norms[0].max() == 0.0 and norms[-1].min() > 0


# ------------------------------------------------------------------ the paper's Figure 1


def test_figure1_claims_at_initialisation():
    """Philipp et al., Figure 1 A-C, on 50-layer width-100 nets with Gaussian inputs."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, 100))
    y = rng.integers(0, 10, size=512)
    arch = gsc_core.architectures
    rep = {name: gsc_core.analyze(arch.paper_network(name, out_dim=10), x, y, "cross_entropy", arch.analysis_mode(name), spectrum=False) for name in arch.ARCHITECTURES}
    for name in ("batch-ReLU", "batch-tanh", "layer-tanh", "SELU"):
        assert rep[name].explosion_rate > 1.024, (name, rep[name].explosion_rate)
        assert rep[name].verdict() == "explodes"
    for name in ("batch-ReLU", "batch-tanh", "layer-tanh"):
        assert rep[name].explosion_rate > 1.05
    # plain ReLU and tanh do not explode, they collapse
    assert rep["ReLU"].explosion_rate < 1.02 and rep["tanh"].explosion_rate < 1.02
    assert rep["ReLU"].sign_diversity[-1] < 0.1 < 0.4 < rep["ReLU"].sign_diversity[0]
    assert rep["tanh"].pre_activation_std[-1] < 0.2 * rep["tanh"].pre_activation_std[0]
    assert rep["ReLU"].verdict() == rep["tanh"].verdict() == "collapses"
    # residual networks and looks-linear ReLU: rate near 1, no collapse
    for name in ("ResNet-ReLU", "ResNet-tanh", "looks-linear ReLU"):
        r = rep[name]
        assert abs(r.explosion_rate - 1) < 0.024, (name, r.explosion_rate)
        assert r.sign_diversity[-1] > 0.3 and r.pre_activation_std[-1] > 0.5 * r.pre_activation_std[0]
        assert r.verdict() == "healthy"
    assert abs(rep["looks-linear ReLU"].explosion_rate - 1) < 1e-3


# ------------------------------------------------------------------ mean-field theory beside the measurement


def test_mean_field_predictions_match_a_wide_tanh_network():
    """SPEC §6 at sigma_w^2 = 2.5, sigma_b^2 = 0.05 (tanh), width 1000: the measured per-layer ratio
    of squared gradient norms matches chi_1 within 3%, the RMS pre-activation follows sqrt(q^l), and
    the per-unit std over the batch follows sqrt(q^l (1 - c^l) (1 - 1/B))."""
    sw2, sb2, depth, width, batch = 2.5, 0.05, 16, 1000, 256
    net = gsc_core.mlp(depth, width, activation="tanh", init="gaussian", sigma_w=np.sqrt(sw2), sigma_b=np.sqrt(sb2), seed=3)
    x = np.random.default_rng(7).standard_normal((batch, width))
    report = gsc_core.analyze(net, x, spectrum=False)
    t = report.theory
    assert t is not None and t["chi1"] == pytest.approx(1.13352, abs=1e-5) and t["q_star"] == pytest.approx(1.06396, abs=1e-5)
    assert np.allclose(t["pre_activation_std"], np.sqrt(gsc_core.theory.length_map("tanh", sw2, sb2, t["q0"], depth - 1)))
    _, grads = net.loss_and_grad(x)
    dense_points = [i for i, layer in enumerate(net.layers, start=1) if isinstance(layer, gsc_core.Dense)]
    sq = np.array([np.sum(grads.points[i] ** 2) for i in dense_points])
    ratios = sq[:-1] / sq[1:]
    assert np.mean(ratios[4:-1]) == pytest.approx(t["chi1"], rel=0.03)
    assert np.allclose(ratios[1:-1], t["chi"][1:-1], rtol=0.08)  # layer by layer, along the length map
    rms = np.array([np.sqrt(np.mean(np.asarray(z) ** 2)) for z in net.forward(x).pre_activations])
    assert np.allclose(rms, t["pre_activation_std"], rtol=0.03)
    assert np.allclose(report.pre_activation_std, t["pre_activation_std_batch"], rtol=0.03)


def test_theory_is_absent_where_mean_field_does_not_apply():
    x = np.random.default_rng(0).standard_normal((8, 6))
    assert gsc_core.analyze(gsc_core.mlp(3, 6, norm="layer"), x, spectrum=False).theory is None
    assert gsc_core.analyze(gsc_core.mlp(3, 6, init="orthogonal"), x, spectrum=False).theory is None
    assert gsc_core.analyze(gsc_core.resnet(2, 6, activation="tanh"), x, spectrum=False).theory is None
    assert gsc_core.analyze(gsc_core.Network([gsc_core.Dense(np.eye(6))]), x, spectrum=False).theory is None
