"""gsc_core.theory (SPEC §6): mean-field predictions against the SPEC reference values, against
independent NumPy quadratures, and against a Monte-Carlo simulation of wide random networks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gsc_core
from gsc_core import theory

LAMBDA = 1.0507009873554805
ALPHA = 1.6732632423543772

# --------------------------------------------------------------------------- independent activations


def _sigmoid(u):
    return np.exp(-np.logaddexp(0.0, -u))


_erfc = np.vectorize(math.erfc, otypes=[float])


def _cdf(u):
    return 0.5 * _erfc(-u / math.sqrt(2.0))


def _pdf(u):
    return np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)


def _numpy_activation(name, **p):
    """(phi, phi', phi'') in NumPy, written independently of the library."""
    if name == "identity":
        return (lambda u: u), (lambda u: np.ones_like(u)), (lambda u: np.zeros_like(u))
    if name == "relu":
        return (lambda u: np.maximum(u, 0.0)), (lambda u: (u > 0) * 1.0), (lambda u: np.zeros_like(u))
    if name == "leaky_relu":
        a = p.get("negative_slope", 0.01)
        return (lambda u: np.where(u > 0, u, a * u)), (lambda u: np.where(u > 0, 1.0, a)), (lambda u: np.zeros_like(u))
    if name in ("elu", "selu"):
        a = p.get("alpha", 1.0) if name == "elu" else ALPHA
        s = 1.0 if name == "elu" else LAMBDA
        neg = lambda u: np.minimum(u, 0.0)  # noqa: E731
        return (
            lambda u: s * np.where(u > 0, u, a * np.expm1(neg(u))),
            lambda u: s * np.where(u > 0, 1.0, a * np.exp(neg(u))),
            lambda u: s * np.where(u > 0, 0.0, a * np.exp(neg(u))),
        )
    if name == "gelu":
        return (lambda u: u * _cdf(u)), (lambda u: _cdf(u) + u * _pdf(u)), (lambda u: _pdf(u) * (2.0 - u * u))
    if name == "silu":
        return (
            lambda u: u * _sigmoid(u),
            lambda u: _sigmoid(u) * (1.0 + u * _sigmoid(-u)),
            lambda u: _sigmoid(u) * _sigmoid(-u) * (2.0 + u * (1.0 - 2.0 * _sigmoid(u))),
        )
    if name == "tanh":
        return np.tanh, (lambda u: 1.0 / np.cosh(u) ** 2), (lambda u: -2.0 * np.tanh(u) / np.cosh(u) ** 2)
    if name == "sigmoid":
        return (
            _sigmoid,
            lambda u: _sigmoid(u) * _sigmoid(-u),
            lambda u: _sigmoid(u) * _sigmoid(-u) * (1.0 - 2.0 * _sigmoid(u)),
        )
    if name == "softplus":
        return (lambda u: np.logaddexp(0.0, u)), _sigmoid, (lambda u: _sigmoid(u) * _sigmoid(-u))
    if name == "sin":
        return np.sin, np.cos, (lambda u: -np.sin(u))
    raise AssertionError(name)


ACTIVATIONS = [(name, {}) for name in gsc_core.ACTIVATIONS] + [
    ("leaky_relu", {"negative_slope": 0.2}),
    ("elu", {"alpha": 0.7}),
]
IDS = [n + "".join(f"-{k}={v}" for k, v in p.items()) for n, p in ACTIVATIONS]


def _simpson_expectation(g, q, n=200_000, z_max=12.0):
    """E[g(sqrt(q) z)] by composite Simpson on [-z_max, 0] and [0, z_max] separately; the value at
    z = 0 on each half is the one-sided limit (matters for phi' at a kink)."""
    z = np.linspace(0.0, z_max, n + 1)
    w = np.ones(n + 1)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    w *= (z[1] - z[0]) / 3.0
    total = 0.0
    for sign in (1.0, -1.0):
        u = sign * math.sqrt(q) * z
        u[0] = sign * 1e-300
        total += np.sum(w * g(u) * _pdf(z))
    return total


def _polar_bivariate(f, g, q, c, n_theta=96):
    """E[f(u1) g(u2)] for (u1, u2) with variances q, correlation c, in polar coordinates of the
    standardised plane: u1 = sqrt(q) r cos(t), u2 = sqrt(q) r cos(t - tc). Kinks are rays; the
    angular Gauss-Legendre panels end on them, the radial integrand is smooth."""
    tc = math.atan2(math.sqrt((1 - c) * (1 + c)), c)
    kinks = sorted({(a % (2 * math.pi)) for a in (math.pi / 2, 3 * math.pi / 2, tc + math.pi / 2, tc - math.pi / 2)})
    edges = kinks + [kinks[0] + 2 * math.pi]
    xt, wt = np.polynomial.legendre.leggauss(n_theta)
    xr, wr = np.polynomial.legendre.leggauss(40)
    r_edges = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0]
    rs, rw = [], []
    for a, b in zip(r_edges[:-1], r_edges[1:]):
        rs.append(0.5 * (b - a) * xr + 0.5 * (a + b))
        rw.append(0.5 * (b - a) * wr)
    r, wr_all = np.concatenate(rs), np.concatenate(rw)
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        if b - a < 1e-15:
            continue
        t = 0.5 * (b - a) * xt + 0.5 * (a + b)
        wtt = 0.5 * (b - a) * wt
        T, R = np.meshgrid(t, r, indexing="ij")
        u1 = math.sqrt(q) * R * np.cos(T)
        u2 = math.sqrt(q) * R * np.cos(T - tc)
        vals = f(u1) * g(u2) * R * np.exp(-0.5 * R * R)
        total += wtt @ vals @ wr_all
    return total / (2 * math.pi)


# --------------------------------------------------------------------------- SPEC reference values


def test_spec_reference_values_tanh():
    assert theory.fixed_point("tanh", 2.5, 0.05) == pytest.approx(1.06396, abs=5e-6)
    assert theory.chi1("tanh", 2.5, 0.05) == pytest.approx(1.13352, abs=5e-6)
    assert theory.fixed_point("tanh", 1.5, 0.05) == pytest.approx(0.41804, abs=5e-6)
    assert theory.chi1("tanh", 1.5, 0.05) == pytest.approx(0.93864, abs=5e-6)


def test_spec_edge_of_chaos_tanh():
    w = theory.edge_of_chaos("tanh", 0.05)
    # SPEC prints 1.76096. The root is 1.7609546 (an independent Simpson computation agrees), which
    # rounds to 1.76095: the printed figure looks double-rounded (1.7609546 -> 1.760955 -> 1.76096).
    assert w == pytest.approx(1.7609546, abs=1e-7)
    assert w == pytest.approx(1.76096, abs=1e-5)
    assert theory.fixed_point("tanh", w, 0.05) == pytest.approx(0.5700, abs=5e-5)
    assert theory.chi1("tanh", w, 0.05) == pytest.approx(1.0, abs=1e-10)


def test_spec_selu_with_lecun_init():
    assert theory.fixed_point("selu", 1.0, 0.0) == pytest.approx(1.0, abs=1e-9)
    assert theory.chi1("selu", 1.0, 0.0) == pytest.approx(1.071575, abs=5e-7)
    # Not what plain Gauss-Hermite gives (1.169 or 1.067, SPEC §6).
    assert abs(theory.chi1("selu", 1.0, 0.0) - 1.067) > 4e-3


@pytest.mark.parametrize("sigma_w2", [0.5, 1.0, 1.9, 2.0, 3.0, 7.5])
@pytest.mark.parametrize("sigma_b2", [0.0, 0.1])
def test_relu_chi1_is_half_sigma_w2(sigma_w2, sigma_b2):
    assert theory.chi1("relu", sigma_w2, sigma_b2) == pytest.approx(sigma_w2 / 2, rel=1e-15)


def test_relu_family_closed_forms():
    assert theory.edge_of_chaos("relu", 0.0) == 2.0
    assert theory.edge_of_chaos("relu", 0.4) == 2.0
    assert theory.edge_of_chaos("identity", 0.0) == 1.0
    leaky = gsc_core.Activation("leaky_relu", negative_slope=0.2)
    assert theory.edge_of_chaos(leaky, 0.0) == pytest.approx(2 / 1.04, rel=1e-15)
    assert theory.chi1(leaky, 1.5, 0.0) == pytest.approx(1.5 * 1.04 / 2, rel=1e-15)
    e = theory.gaussian_expectations("relu", 2.0)
    assert e == {"phi2": 1.0, "dphi2": 0.5, "dphi2_phi_d2phi": 0.5}


# --------------------------------------------------------------------------- expectations vs NumPy


@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("q", [0.1, 1.0, 4.0])
def test_gaussian_expectations_match_a_fine_numpy_integral(name, params, q):
    phi, d1, d2 = _numpy_activation(name, **params)
    act = gsc_core.Activation(name, **params)
    got = theory.gaussian_expectations(act, q)
    want = {
        "phi2": _simpson_expectation(lambda u: phi(u) ** 2, q),
        "dphi2": _simpson_expectation(lambda u: d1(u) ** 2, q),
        "dphi2_phi_d2phi": _simpson_expectation(lambda u: d1(u) ** 2 + phi(u) * d2(u), q),
    }
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9, rel=1e-9), key


@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("q,c", [(1.0, 0.5), (2.5, -0.7), (0.3, 0.95), (1.0, 0.0)])
def test_bivariate_expectations_match_a_polar_numpy_integral(name, params, q, c):
    phi, d1, _ = _numpy_activation(name, **params)
    got = theory.bivariate_expectations(gsc_core.Activation(name, **params), q, c)
    assert got["phi_phi"] == pytest.approx(_polar_bivariate(phi, phi, q, c), abs=1e-9, rel=1e-9)
    assert got["dphi_dphi"] == pytest.approx(_polar_bivariate(d1, d1, q, c), abs=1e-9, rel=1e-9)


@pytest.mark.parametrize("name", ["tanh", "elu", "gelu", "sin"])
def test_bivariate_expectations_at_full_correlation(name):
    one = theory.gaussian_expectations(name, 1.7)
    two = theory.bivariate_expectations(name, 1.7, 1.0)
    assert two["phi_phi"] == pytest.approx(one["phi2"], rel=1e-12)
    assert two["dphi_dphi"] == pytest.approx(one["dphi2"], rel=1e-12)


# --------------------------------------------------------------------------- maps and fixed points


@pytest.mark.parametrize("name,params", ACTIVATIONS, ids=IDS)
def test_length_map_starts_at_the_first_layer_and_converges_to_the_fixed_point(name, params):
    act = gsc_core.Activation(name, **params)
    w, b, q0 = 1.4, 0.1, 2.0
    qs = theory.length_map(act, w, b, q0, 300)
    assert isinstance(qs, np.ndarray) and qs.shape == (300,) and qs.dtype == np.float64
    assert qs[0] == w * q0 + b
    nxt = w * theory.gaussian_expectations(act, qs[0])["phi2"] + b
    assert qs[1] == pytest.approx(nxt, rel=1e-14)
    q_star = theory.fixed_point(act, w, b, q0=q0)
    if math.isinf(q_star):
        assert qs[-1] > 1e10
    else:
        assert qs[-1] == pytest.approx(q_star, rel=1e-9, abs=1e-12)


def test_length_map_edge_cases():
    assert theory.length_map("tanh", 1.0, 0.0, 1.0, 0).shape == (0,)
    assert list(theory.length_map("relu", 4.0, 0.0, 1.0, 3)) == [4.0, 8.0, 16.0]
    assert theory.length_map("relu", 4.0, 0.0, 1.0, 1100)[-1] == math.inf  # 2^1024 overflows
    assert list(theory.length_map("identity", 1.0, 0.5, 0.0, 3)) == [0.5, 1.0, 1.5]


def test_degenerate_fixed_points():
    assert theory.fixed_point("tanh", 0.5, 0.0) == 0.0
    assert theory.chi1("tanh", 0.5, 0.0) == 0.5
    assert theory.fixed_point("relu", 1.0, 0.0) == 0.0
    assert theory.fixed_point("relu", 2.0, 0.0, q0=1.5) == 3.0  # every q is fixed: q* = q^1
    assert theory.fixed_point("relu", 2.0, 0.1) == math.inf
    assert theory.fixed_point("elu", 2.5, 0.0) == math.inf
    assert theory.chi1("elu", 2.5, 0.0) == 1.25  # the q -> inf limit
    assert theory.fixed_point("tanh", 0.0, 0.3) == 0.3
    m = theory.mean_field("tanh", 0.5, 0.0)
    assert (m["q_star"], m["c_star"], m["xi_c"]) == (0.0, 1.0, math.inf)


def test_chi_q_is_the_slope_of_the_length_map():
    for name in ["tanh", "elu", "selu", "gelu", "softplus", "sigmoid", "sin"]:
        w, b = 1.3, 0.2
        m = theory.mean_field(name, w, b)
        q, h = m["q_star"], 1e-5 * m["q_star"]
        step = lambda q: w * theory.gaussian_expectations(name, q)["phi2"] + b  # noqa: E731
        assert step(q) == pytest.approx(q, rel=1e-12)
        assert m["chi_q"] == pytest.approx((step(q + h) - step(q - h)) / (2 * h), rel=1e-6)
        assert m["xi_q"] == pytest.approx(-1 / math.log(m["chi_q"]), rel=1e-14)


def test_depth_scales():
    assert theory.depth_scales("relu", 2.0, 0.0) == {"xi_q": math.inf, "xi_c": math.inf, "xi_grad": math.inf}
    ordered = theory.depth_scales("tanh", 1.5, 0.05)
    assert set(ordered) == {"xi_q", "xi_c", "xi_grad"}
    chi = theory.chi1("tanh", 1.5, 0.05)
    assert ordered["xi_grad"] == pytest.approx(-1 / math.log(chi), rel=1e-14)
    assert ordered["xi_c"] == ordered["xi_grad"]  # c* = 1 in the ordered phase: chi_c = chi_1
    chaotic = theory.depth_scales("tanh", 2.5, 0.05)
    assert chaotic["xi_grad"] < 0 < chaotic["xi_c"] < math.inf
    # the depth scale of correlations diverges at the edge of chaos
    w = theory.edge_of_chaos("tanh", 0.05)
    assert theory.depth_scales("tanh", w, 0.05)["xi_c"] > 1e6


def test_correlation_fixed_point():
    assert theory.correlation_fixed_point("tanh", 1.5, 0.05) == 1.0
    assert abs(theory.correlation_fixed_point("tanh", 2.5, 0.0)) < 1e-12  # odd phi, no bias
    for name, w in [("tanh", 2.5), ("elu", 1.7), ("sin", 2.5), ("relu", 1.9)]:
        m = theory.mean_field(name, w, 0.05)
        if m["chi_1"] > 1:
            c = m["c_star"]
            assert 0 < c < 1, name
            assert theory.correlation_map(name, w, 0.05, c) == pytest.approx(c, abs=1e-10)
            assert m["chi_c"] < 1
        else:
            assert m["c_star"] == 1.0
    assert theory.correlation_map("tanh", 2.5, 0.05, 1.0) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", ["tanh", "selu", "elu", "sigmoid", "sin", "softplus"])
@pytest.mark.parametrize("sigma_b2", [0.05, 0.5])
def test_edge_of_chaos_gives_chi1_one(name, sigma_b2):
    w = theory.edge_of_chaos(name, sigma_b2)
    assert theory.chi1(name, w, sigma_b2) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_no_edge_of_chaos_when_the_fixed_point_jumps(name):
    with pytest.raises(ValueError, match="no edge of chaos"):
        theory.edge_of_chaos(name, 0.05)


def test_chi1_map_follows_the_length_map():
    chis = theory.chi1_map("tanh", 2.5, 0.05, 1.0, 60)
    assert chis.shape == (60,)
    assert chis[-1] == pytest.approx(theory.chi1("tanh", 2.5, 0.05), rel=1e-9)
    q1 = 2.5 + 0.05
    assert chis[0] == pytest.approx(2.5 * theory.gaussian_expectations("tanh", q1)["dphi2"], rel=1e-14)
    assert list(theory.chi1_map("relu", 3.0, 0.0, 1.0, 3)) == [1.5, 1.5, 1.5]


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises():
    with pytest.raises(ValueError, match="tanh"):  # the message lists the valid names
        theory.fixed_point("swish", 1.0, 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        theory.fixed_point("tanh", -1.0, 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        theory.chi1("tanh", 1.0, -0.1)
    with pytest.raises(ValueError, match="finite"):
        theory.chi1("tanh", float("nan"), 0.0)
    with pytest.raises(ValueError, match="finite"):
        theory.edge_of_chaos("tanh", float("inf"))
    with pytest.raises(ValueError, match="finite"):
        theory.length_map("tanh", 1.0, 0.0, np.inf, 3)
    with pytest.raises(ValueError):
        theory.length_map("tanh", 1.0, 0.0, 1.0, -1)
    with pytest.raises(TypeError):
        theory.length_map("tanh", 1.0, 0.0, 1.0, 2.5)
    with pytest.raises(TypeError):
        theory.fixed_point("tanh", "1.0", 0.0)
    with pytest.raises(TypeError):
        theory.fixed_point("tanh", True, 0.0)
    with pytest.raises(TypeError):
        theory.fixed_point(3, 1.0, 0.0)
    with pytest.raises(ValueError):
        theory.bivariate_expectations("tanh", 1.0, 1.5)
    with pytest.raises(ValueError):
        theory.gaussian_expectations("tanh", -1.0)
    with pytest.raises(ValueError, match="degenerate"):
        theory.correlation_map("tanh", 0.5, 0.0, 0.3)  # q* = 0
    with pytest.raises(ValueError):
        theory.chi1(gsc_core.Activation("relu"), 1.0, 0.0, q0=-1.0)


def test_native_functions_validate_too():
    core = gsc_core._core
    with pytest.raises(ValueError, match="unknown activation"):
        core.theory_chi1("swish", [], 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="no parameter"):
        core.theory_chi1("relu", [("alpha", 1.0)], 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        core.theory_fixed_point("tanh", [], -1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        core.theory_edge_of_chaos("tanh", [], float("nan"), 1.0)


def test_numpy_scalars_and_activation_objects_are_accepted():
    a = theory.chi1(gsc_core.Activation("elu", alpha=0.7), np.float32(1.5), np.int64(0))
    b = theory.chi1(gsc_core.Activation("elu", alpha=0.7), 1.5, 0.0)
    assert a == b
    assert theory.fixed_point("TANH", 1.5, np.array(0.05)) == theory.fixed_point("tanh", 1.5, 0.05)


# --------------------------------------------------------------------------- theory beside measurement


def test_monte_carlo_wide_network_follows_the_length_map():
    """SPEC §6: a wide random tanh network (pure NumPy) has mean squared pre-activations q^l and
    squared-gradient growth chi^l per layer, as the length map predicts."""
    rng = np.random.default_rng(0)
    width, batch, layers = 1000, 40, 6
    w2, b2 = 2.5, 0.05
    x = rng.standard_normal((batch, width))
    q0 = float(np.mean(x**2))
    predicted = theory.length_map("tanh", w2, b2, q0, layers)
    chis = theory.chi1_map("tanh", w2, b2, q0, layers)
    h, pre, weights = x, [], []
    for layer in range(layers):
        W = rng.normal(0.0, math.sqrt(w2 / width), size=(width, width))
        b = rng.normal(0.0, math.sqrt(b2), size=width)
        h = (np.tanh(h) if layer else h) @ W.T + b
        pre.append(h)
        weights.append(W)
    measured = np.array([np.mean(p**2) for p in pre])
    np.testing.assert_allclose(measured, predicted, rtol=0.03)
    # Backward: a random cotangent on p^{l+1} pulled back through phi'(h^l) and W^{l+1} grows in
    # squared norm by about chi^l (per sample, averaged over the batch).
    for layer in range(layers - 1):
        v = rng.standard_normal((batch, width))
        back = (v @ weights[layer + 1]) * (1.0 / np.cosh(pre[layer]) ** 2)
        ratio = np.mean(np.sum(back**2, axis=1) / np.sum(v**2, axis=1))
        assert ratio == pytest.approx(chis[layer], rel=0.05), layer


def test_results_do_not_depend_on_the_thread_count():
    before = gsc_core.get_num_threads()
    try:
        gsc_core.set_num_threads(1)
        one = (theory.mean_field("tanh", 2.5, 0.05), theory.bivariate_expectations("gelu", 1.3, 0.4))
        gsc_core.set_num_threads(3)
        three = (theory.mean_field("tanh", 2.5, 0.05), theory.bivariate_expectations("gelu", 1.3, 0.4))
    finally:
        gsc_core.set_num_threads(before)
    assert one == three
