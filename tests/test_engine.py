"""gsc_core's engine (SPEC §1–§2) against the plain-NumPy reference (tests/reference.py) on random
networks of every layer kind and activation, plus property tests that need no reference at all:
adjointness of VJP and JVP, central finite differences, batched = looped products, Jacobians
against JVPs, the chain rule across points, thread-count invariance, input layouts, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import gsc_core
from conftest import (
    ACTIVATION_NAMES,
    FLOOR,
    MAX_RTOL,
    NORM_AFFINE,
    RTOL,
    Case,
    Chooser,
    assert_close,
    assert_gradients_close,
    assert_list_close,
    cases,
    conditioned_rtol,
    dense_layers,
    has_batchnorm,
    make_activation,
    make_dense,
    make_norm,
    map_dense,
    random_case,
    smoothness_margins,
)
from reference import SELU_ALPHA, SELU_LAMBDA, RefNet

#: relative tolerance of identities checked inside gsc_core alone (adjointness, batched = looped, ...)
SELF_RTOL = {"float64": 1e-12, "float32": 1e-5}


def n_points(case: Case) -> int:
    return len(case.layers) + 1


def widths(case: Case) -> list[int]:
    return [p.shape[1] for p in case.ref().forward(case.x)[0]]


def normal(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    """A standard normal array, rounded to dtype (returned as float64 so the reference sees the same values)."""
    return rng.normal(size=shape).astype(dtype).astype(np.float64)


def block_shape(case: Case, k, d: int) -> tuple:
    return (case.batch, d) if k is None else (case.batch, k, d)


# ---------------------------------------------------------------------------------------------
# a full comparison, used by the deterministic coverage tests


def check_against_reference(layers, x, dtype: str, seed: int = 0, out_classes=None) -> None:
    net = gsc_core.Network(layers, dtype=dtype)
    ref = RefNet(net.layers)
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64).astype(dtype).astype(np.float64)
    xin = x.astype(dtype)
    tol = conditioned_rtol(dtype, net.layers, lambda r: (r.forward(x), r.loss_and_grad(x), r.jvp(x, np.ones_like(x))))
    assert tol <= MAX_RTOL[dtype], "deterministic coverage cases must be well-conditioned"

    trace = net.forward(xin)
    pts, pre = ref.forward(x)
    assert all(p.dtype == np.dtype(dtype) for p in trace.points)
    assert_list_close(trace.points, pts, dtype, "points", tol)
    assert_list_close(trace.pre_activations, pre, dtype, "pre_activations", tol)

    d_out = pts[-1].shape[1]
    y = normal(rng, pts[-1].shape, dtype)
    classes = rng.integers(0, d_out, size=x.shape[0]) if out_classes is None else out_classes
    for loss, target in (("mse", None), ("mse", y), ("cross_entropy", classes)):
        tgt = None if target is None else (target.astype(dtype) if loss == "mse" else target)
        losses, g = net.loss_and_grad(xin, tgt, loss=loss)
        rl, rg = ref.loss_and_grad(x, target, loss)
        assert_close(losses, rl, tol, f"{loss} losses")
        assert_gradients_close(g, rg, dtype, f"{loss} grad", pts, tol)

    u = normal(rng, (x.shape[0], 2, d_out), dtype)
    assert_gradients_close(net.vjp(xin, u.astype(dtype)), ref.vjp(x, u), dtype, "vjp", pts, tol)

    v = normal(rng, (x.shape[0], 3, x.shape[1]), dtype)
    assert_list_close(net.jvp(xin, v.astype(dtype)), ref.jvp(x, v), dtype, "jvp", tol)

    if has_batchnorm(layers):
        with pytest.raises(ValueError, match="BatchNorm"):
            net.jacobian(xin)
    else:
        assert_close(net.jacobian(xin), ref.jacobian(x), tol, "jacobian")
        assert_close(gsc_core.jacobian_norms(net, xin), ref.jacobian_norms(x), tol, "jacobian_norms")
        assert_close(gsc_core.jacobian_spectrum(net, xin), ref.jacobian_spectrum(x), tol, "jacobian_spectrum")


def _x(rng, batch, d):
    return rng.normal(size=(batch, d))


# ---------------------------------------------------------------------------------------------
# deterministic coverage: every activation, every norm variant, both shortcut kinds, nesting


ACTIVATION_VARIANTS = [(name, {}) for name in ACTIVATION_NAMES] + [("leaky_relu", {"negative_slope": 0.2}), ("leaky_relu", {"negative_slope": -0.3}), ("elu", {"alpha": 0.5}), ("elu", {"alpha": 2.0})]


@pytest.mark.parametrize("name, params", ACTIVATION_VARIANTS, ids=[f"{n}{p or ''}" for n, p in ACTIVATION_VARIANTS])
def test_every_activation(name, params, dtype):
    rng = np.random.default_rng(sum(map(ord, name)))
    layers = [make_dense(rng, 4, 5, True), gsc_core.Activation(name, **params), make_dense(rng, 5, 3, True), gsc_core.Activation(name, **params), make_dense(rng, 3, 4, False)]
    check_against_reference(layers, 2.0 * _x(rng, 5, 4), dtype)
    # the generator's activations carry their parameters with defaults filled in
    act = make_activation(Chooser(rng=rng), name)
    assert act.name == name and set(act.params) == set(gsc_core.ACTIVATIONS[name])


@pytest.mark.parametrize("kind", ["layernorm", "batchnorm"])
@pytest.mark.parametrize("affine", NORM_AFFINE)
def test_every_norm(kind, affine, dtype):
    rng = np.random.default_rng(7)
    for eps in (1e-5, 0.1):
        layers = [make_dense(rng, 3, 6, True), make_norm(rng, kind, 6, affine, eps), gsc_core.Activation("tanh"), make_dense(rng, 6, 4, True), make_norm(rng, kind, 4, affine, eps)]
        check_against_reference(layers, _x(rng, 5, 3), dtype)


@pytest.mark.parametrize("shortcut", ["identity", "dense", "dense_nobias"])
@pytest.mark.parametrize("alpha", [1.0, 0.3, -1.25])
def test_residual_shortcuts(shortcut, alpha, dtype):
    rng = np.random.default_rng(11)
    d, d2 = 5, (5 if shortcut == "identity" else 3)
    short = None if shortcut == "identity" else make_dense(rng, d, d2, shortcut == "dense")
    block = gsc_core.Residual([gsc_core.LayerNorm(weight=rng.normal(1, 0.2, d), bias=rng.normal(0, 0.2, d)), gsc_core.Activation("relu"), make_dense(rng, d, d2, True)], alpha=alpha, shortcut=short)
    layers = [make_dense(rng, 4, d, True), block, gsc_core.Activation("gelu"), make_dense(rng, d2, 2, True)]
    check_against_reference(layers, _x(rng, 6, 4), dtype)


def test_nested_residuals(dtype):
    rng = np.random.default_rng(12)
    inner = gsc_core.Residual([gsc_core.Activation("selu"), make_dense(rng, 4, 4, True)], alpha=0.5)
    inner_proj = gsc_core.Residual([gsc_core.Activation("silu"), make_dense(rng, 4, 3, False)], alpha=-0.8, shortcut=make_dense(rng, 4, 3, True))
    outer = gsc_core.Residual([inner, gsc_core.LayerNorm(), inner_proj, gsc_core.Activation("softplus")], alpha=1.5, shortcut=make_dense(rng, 4, 3, False))
    layers = [make_dense(rng, 2, 4, True), outer, gsc_core.Activation("sin"), make_dense(rng, 3, 3, True)]
    check_against_reference(layers, _x(rng, 4, 2), dtype)
    # the depth-first order of Dense parameters inside nested residuals
    net = gsc_core.Network(layers, dtype=dtype)
    _, g = net.loss_and_grad(_x(rng, 4, 2).astype(dtype))
    shapes = [w.shape for w in g.weights]
    assert shapes == [(4, 2), (4, 4), (3, 4), (3, 4), (3, 4), (3, 3)]
    assert [b is None for b in g.biases] == [False, False, True, False, True, False]


def test_batchnorm_inside_residual(dtype):
    rng = np.random.default_rng(13)
    block = gsc_core.Residual([gsc_core.BatchNorm(weight=rng.normal(1, 0.2, 4)), gsc_core.Activation("elu", alpha=2.0), make_dense(rng, 4, 4, True)], alpha=0.7)
    layers = [make_dense(rng, 3, 4, True), block, gsc_core.Activation("sigmoid"), make_dense(rng, 4, 2, True)]
    check_against_reference(layers, _x(rng, 6, 3), dtype)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: [],
        lambda rng: [gsc_core.Residual([], alpha=0.5)],
        lambda rng: [gsc_core.Residual([], alpha=-2.0, shortcut=make_dense(rng, 4, 4, True))],
        lambda rng: [gsc_core.Residual([gsc_core.Residual([gsc_core.Residual([gsc_core.Activation("sin")], alpha=0.3)])], alpha=0.7)],
        lambda rng: [make_dense(rng, 4, 1, True), gsc_core.LayerNorm(bias=np.array([0.3])), gsc_core.Activation("tanh")],
        lambda rng: [make_dense(rng, 4, 3, False), gsc_core.Activation("identity"), gsc_core.Activation("identity")],
    ],
    ids=["empty", "empty-body", "empty-body-dense-shortcut", "nested-3", "width-1-layernorm", "identities"],
)
def test_degenerate_networks(make, dtype):
    rng = np.random.default_rng(15)
    check_against_reference(make(rng), _x(rng, 3, 4), dtype)


def test_network_starting_with_activation(dtype):
    rng = np.random.default_rng(14)
    layers = [gsc_core.Activation("tanh"), gsc_core.LayerNorm(), gsc_core.Residual([gsc_core.Activation("relu")], alpha=0.5)]
    net = gsc_core.Network(layers, dtype=dtype)
    assert net.in_dim is None
    assert net.point_widths(5) == [5, 5, 5, 5]
    check_against_reference(layers, _x(rng, 3, 5), dtype)


# ---------------------------------------------------------------------------------------------
# hypothesis: random networks against the reference


@given(cases())
def test_forward_matches_reference(case):
    net = case.net()
    rtol = case.rtol(lambda r: r.forward(case.x), net)
    trace = net.forward(case.xin())
    pts, pre = case.ref(net).forward(case.x)
    assert len(trace.points) == n_points(case) == len(net) + 1
    assert all(p.dtype == np.dtype(case.dtype) for p in trace.points)
    assert np.array_equal(trace.output, trace.points[-1])
    assert_list_close(trace.points, pts, case.dtype, "points", rtol)
    assert_list_close(trace.pre_activations, pre, case.dtype, "pre_activations", rtol)
    assert net.point_widths(case.x.shape[1]) == [p.shape[1] for p in pts]


@given(cases(), st.sampled_from(["mse", "mse_target", "cross_entropy"]))
def test_loss_and_grad_matches_reference(case, which):
    net = case.net()
    loss = "cross_entropy" if which == "cross_entropy" else "mse"
    y = {"mse": None, "mse_target": case.y_mse, "cross_entropy": case.y_classes}[which]
    y_in = y.astype(case.dtype) if which == "mse_target" else y
    rtol = case.rtol(lambda r: r.loss_and_grad(case.x, y, loss), net)
    # the losses on their own (their scale is not that of the gradients); the rounding model grants
    # cross_entropy an absolute error of about eps * max|o| (as PyTorch's): see
    # test_cross_entropy_small_losses_keep_their_relative_accuracy for what it should be
    loss_rtol = case.rtol(lambda r: r.loss_and_grad(case.x, y, loss)[0], net)
    losses, g = net.loss_and_grad(case.xin(), y_in, loss=loss)
    ref = case.ref(net)
    rl, rg = ref.loss_and_grad(case.x, y, loss)
    assert losses.shape == (case.batch,)
    assert losses.dtype == np.dtype(case.dtype)
    assert_close(losses, rl, loss_rtol, "losses")
    assert_gradients_close(g, rg, case.dtype, "grad", ref.forward(case.x)[0], rtol)
    assert len(g.weights) == len(dense_layers(case.layers))


@given(cases(), st.data())
def test_vjp_matches_reference(case, data):
    n = n_points(case)
    point = data.draw(st.integers(-n, n - 1), label="point")
    k = data.draw(st.sampled_from([None, 1, 3]), label="K")
    j = point % n
    d = widths(case)
    u = normal(case.rng(), block_shape(case, k, d[j]), case.dtype)
    net = case.net()
    rtol = case.rtol(lambda r: r.vjp(case.x, u, point), net)
    g = net.vjp(case.xin(), u.astype(case.dtype), point=point)
    ref = case.ref(net)
    rg = ref.vjp(case.x, u, point)
    assert len(g.points) == n
    for i in range(n):
        assert (g.points[i] is None) == (i > j), f"points[{i}] None-ness with the cotangent on {j}"
    assert_gradients_close(g, rg, case.dtype, "vjp", ref.forward(case.x)[0], rtol)
    if k is not None:
        for w, dense in zip(g.weights, dense_layers(case.layers)):
            assert w.shape == (k,) + dense.weight.shape


@given(cases(), st.data())
def test_jvp_matches_reference(case, data):
    n = n_points(case)
    point = data.draw(st.integers(-n, n - 1), label="point")
    k = data.draw(st.sampled_from([None, 1, 3]), label="K")
    i = point % n
    v = normal(case.rng(), block_shape(case, k, widths(case)[i]), case.dtype)
    net = case.net()
    rtol = case.rtol(lambda r: r.jvp(case.x, v, point), net)
    out = net.jvp(case.xin(), v.astype(case.dtype), point=point)
    assert len(out) == n
    assert all((out[j] is None) == (j < i) for j in range(n))
    assert_list_close(out, case.ref(net).jvp(case.x, v, point), case.dtype, "jvp", rtol)


@given(cases(), st.data())
def test_jacobian_matches_reference(case, data):
    n = n_points(case)
    start = data.draw(st.integers(0, n - 1), label="start")
    end = data.draw(st.integers(start, n - 1), label="end")
    net = case.net()
    ref = case.ref(net)
    if ref.batchnorm_between(start, end):
        with pytest.raises(ValueError, match="BatchNorm"):
            net.jacobian(case.xin(), start, end)
        return
    rtol = case.rtol(lambda r: r.jacobian(case.x, start, end), net)
    jac = net.jacobian(case.xin(), start, end)
    d = widths(case)
    assert jac.shape == (case.batch, d[end], d[start])
    assert jac.dtype == np.dtype(case.dtype)
    assert_close(jac, ref.jacobian(case.x, start, end), rtol, "jacobian")
    # negative indices mean the same points
    assert np.array_equal(net.jacobian(case.xin(), start - n, end - n), jac)


@given(cases(), st.data())
def test_jacobian_norms_matches_reference(case, data):
    n = n_points(case)
    end = data.draw(st.integers(0, n - 1), label="end")
    net = case.net()
    ref = case.ref(net)
    if ref.batchnorm_between(0, end):
        with pytest.raises(ValueError, match="BatchNorm"):
            gsc_core.jacobian_norms(net, case.xin(), end)
        return
    rtol = case.rtol(lambda r: r.jacobian_norms(case.x, end), net)
    norms = gsc_core.jacobian_norms(net, case.xin(), end)
    assert norms.shape == (end + 1, case.batch)
    assert_close(norms, ref.jacobian_norms(case.x, end), rtol, "jacobian_norms")
    if end == n - 1:
        assert np.array_equal(gsc_core.jacobian_norms(net, case.xin()), norms)


@given(cases(), st.data())
def test_jacobian_spectrum_matches_reference(case, data):
    n = n_points(case)
    start = data.draw(st.integers(0, n - 1), label="start")
    end = data.draw(st.integers(start, n - 1), label="end")
    net = case.net()
    ref = case.ref(net)
    if ref.batchnorm_between(start, end):
        with pytest.raises(ValueError, match="BatchNorm"):
            gsc_core.jacobian_spectrum(net, case.xin(), start, end)
        return
    rtol = case.rtol(lambda r: r.jacobian(case.x, start, end), net)
    sv = gsc_core.jacobian_spectrum(net, case.xin(), start, end)
    d = widths(case)
    assert sv.shape == (case.batch, min(d[start], d[end]))
    assert np.all(np.diff(sv, axis=1) <= 0), "singular values must be descending"
    assert np.all(sv >= 0)
    # singular values are perfectly conditioned: |s_i(A) - s_i(B)| <= ||A - B||_2
    expected = np.linalg.svd(ref.jacobian(case.x, start, end), compute_uv=False)
    assert_close(sv, expected, rtol, "jacobian_spectrum", floor=FLOOR[case.dtype] * np.linalg.norm(expected))


# ---------------------------------------------------------------------------------------------
# property tests inside gsc_core


@given(cases(), st.data())
def test_vjp_jvp_adjoint(case, data):
    """<U, J V> = <J^T U, V> for the whole-batch Jacobian dP_j/dP_i (BatchNorm included)."""
    n = n_points(case)
    i = data.draw(st.integers(0, n - 1), label="i")
    j = data.draw(st.integers(i, n - 1), label="j")
    k = data.draw(st.sampled_from([None, 2]), label="K")
    d = widths(case)
    rng = case.rng()
    u = normal(rng, block_shape(case, k, d[j]), case.dtype).astype(case.dtype)
    v = normal(rng, block_shape(case, k, d[i]), case.dtype).astype(case.dtype)
    net = case.net()
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    # |<u, Jv> - <J^T u, v>| <= err(Jv) ||u|| + err(J^T u) ||v||, the errors relative ones
    rtol = case.rtol(lambda r: (r.jvp(case.x, v64, i)[j], r.vjp(case.x, u64, j).points[i]), net, base=SELF_RTOL[case.dtype])
    jv = net.jvp(case.xin(), v, point=i)[j].astype(np.float64)
    jtu = net.vjp(case.xin(), u, point=j).points[i].astype(np.float64)
    axes = (0, 1) if k is None else (0, 2)
    lhs = np.sum(u64 * jv, axis=axes)
    rhs = np.sum(jtu * v64, axis=axes)
    scale = np.linalg.norm(u64) * np.linalg.norm(jv) + np.linalg.norm(jtu) * np.linalg.norm(v64) + 1e-300
    assert np.all(np.abs(lhs - rhs) <= rtol * scale), (lhs, rhs, rtol)


def richardson(f, x, v, h):
    """Central differences with one Richardson step (error O(h^4))."""
    d1 = (f(x + h * v) - f(x - h * v)) / (2 * h)
    d2 = (f(x + 0.5 * h * v) - f(x - 0.5 * h * v)) / h
    return (4 * d2 - d1) / 3


FD_H = 1e-4
FD_RTOL = 1e-7
#: finite differences of f lose about eps * |f| / h ~ 1e-12 |f| to rounding: results are compared
#: with FD_RTOL relative to max(their norm, FD_FLOOR * (1 + |f|)), i.e. to 1e-10 |f| at least
FD_FLOOR = 1e-3


@given(cases(dtypes=["float64"]), st.data())
def test_jvp_against_finite_differences(case, data):
    kink, std = smoothness_margins(case)
    assume(kink > 1e-2 and std > 0.05)
    n = n_points(case)
    i = data.draw(st.integers(0, n - 1), label="i")
    net = case.net()
    pts = net.forward(case.x).points
    v = case.rng().normal(size=pts[i].shape)
    v /= max(np.linalg.norm(v), 1e-300)
    # the layers after point i, as a network of their own, are differentiated numerically
    out = net.jvp(case.x, v, point=i)
    for j in range(i, n):
        if j == i:
            assert np.array_equal(out[j], v)
            continue
        f = lambda p: gsc_core.Network(case.layers[i:j]).forward(p).output
        fd = richardson(f, pts[i], v, FD_H)
        scale = max(np.linalg.norm(fd), FD_FLOOR * (1 + np.linalg.norm(pts[j])))
        assert np.linalg.norm(out[j] - fd) <= FD_RTOL * scale, f"point {i} -> {j}: {np.linalg.norm(out[j] - fd) / scale:.3e}"


@given(cases(dtypes=["float64"]), st.sampled_from(["mse", "cross_entropy"]))
def test_input_gradient_against_finite_differences(case, loss):
    kink, std = smoothness_margins(case)
    assume(kink > 1e-2 and std > 0.05)
    y = case.y_mse if loss == "mse" else case.y_classes
    net = case.net()
    _, g = net.loss_and_grad(case.x, y, loss=loss)
    v = case.rng().normal(size=case.x.shape)
    v /= np.linalg.norm(v)
    total = lambda x: np.array([net.loss_and_grad(x, y, loss=loss)[0].sum()])
    fd = richardson(total, case.x, v, FD_H)[0]
    exact = float(np.sum(g.points[0] * v))
    scale = np.linalg.norm(g.points[0]) + FD_FLOOR * (1 + abs(total(case.x)[0]))
    assert abs(exact - fd) <= FD_RTOL * scale


@given(cases(dtypes=["float64"]), st.sampled_from(["mse", "cross_entropy"]))
def test_parameter_gradients_against_finite_differences(case, loss):
    kink, std = smoothness_margins(case)
    assume(kink > 1e-2 and std > 0.05)
    denses = dense_layers(case.layers)
    assume(denses)
    y = case.y_mse if loss == "mse" else case.y_classes
    _, g = case.net().loss_and_grad(case.x, y, loss=loss)
    rng = case.rng(7)
    for k, dense in enumerate(denses):
        dw = rng.normal(size=dense.weight.shape)
        db = None if dense.bias is None else rng.normal(size=dense.bias.shape)
        norm = np.sqrt(np.sum(dw**2) + (0 if db is None else np.sum(db**2)))
        dw /= norm
        db = None if db is None else db / norm

        def total(t, k=k, dense=dense, dw=dw, db=db):
            t = float(t[0])

            def shift(idx, layer):
                if idx != k:
                    return layer
                return gsc_core.Dense(layer.weight + t * dw, None if layer.bias is None else layer.bias + t * db)

            return np.array([gsc_core.Network(map_dense(case.layers, shift)).loss_and_grad(case.x, y, loss=loss)[0].sum()])

        fd = richardson(total, np.zeros(1), np.ones(1), FD_H)[0]
        exact = float(np.sum(g.weights[k] * dw)) + (0.0 if db is None else float(np.sum(g.biases[k] * db)))
        scale = np.sqrt(np.sum(g.weights[k] ** 2) + (0 if db is None else np.sum(g.biases[k] ** 2))) + FD_FLOOR * (1 + abs(total(np.zeros(1))[0]))
        assert abs(exact - fd) <= FD_RTOL * scale, f"Dense {k}: exact {exact!r} vs finite differences {fd!r}"


@given(cases(), st.data())
def test_batched_vjp_equals_single_vjps(case, data):
    n = n_points(case)
    j = data.draw(st.integers(0, n - 1), label="point")
    k = data.draw(st.integers(1, 4), label="K")
    u = normal(case.rng(), (case.batch, k, widths(case)[j]), case.dtype).astype(case.dtype)
    net = case.net()
    batched = net.vjp(case.xin(), u, point=j)
    tol = SELF_RTOL[case.dtype]
    for c in range(k):
        single = net.vjp(case.xin(), np.ascontiguousarray(u[:, c, :]), point=j)
        for i in range(n):
            if i > j:
                assert batched.points[i] is None and single.points[i] is None
            else:
                assert_close(batched.points[i][:, c, :], single.points[i], tol, f"points[{i}] K-slice {c}")
        for l, (w, ws) in enumerate(zip(batched.weights, single.weights)):
            assert_close(w[c], ws, tol, f"weights[{l}] K-slice {c}", floor=FLOOR[case.dtype] * (np.linalg.norm(w) + 1e-300))
        for l, (b, bs) in enumerate(zip(batched.biases, single.biases)):
            assert (b is None) == (bs is None)
            if b is not None:
                assert_close(b[c], bs, tol, f"biases[{l}] K-slice {c}", floor=FLOOR[case.dtype] * (np.linalg.norm(b) + 1e-300))


@given(cases(), st.data())
def test_batched_jvp_equals_single_jvps(case, data):
    n = n_points(case)
    i = data.draw(st.integers(0, n - 1), label="point")
    k = data.draw(st.integers(1, 4), label="K")
    v = normal(case.rng(), (case.batch, k, widths(case)[i]), case.dtype).astype(case.dtype)
    net = case.net()
    batched = net.jvp(case.xin(), v, point=i)
    for c in range(k):
        single = net.jvp(case.xin(), np.ascontiguousarray(v[:, c, :]), point=i)
        for j in range(i, n):
            assert_close(batched[j][:, c, :], single[j], SELF_RTOL[case.dtype], f"jvp[{j}] K-slice {c}")


@given(cases(batchnorm=False), st.data())
def test_jacobian_times_v_equals_jvp(case, data):
    n = n_points(case)
    s = data.draw(st.integers(0, n - 1), label="start")
    e = data.draw(st.integers(s, n - 1), label="end")
    v = normal(case.rng(), (case.batch, widths(case)[s]), case.dtype).astype(case.dtype)
    net = case.net()
    u = normal(case.rng(2), (case.batch, widths(case)[e]), case.dtype).astype(case.dtype)
    v64, u64 = v.astype(np.float64), u.astype(np.float64)
    rtol = case.rtol(
        lambda r: (np.einsum("bij,bj->bi", r.jacobian(case.x, s, e), v64), r.jvp(case.x, v64, s)[e], np.einsum("bi,bij->bj", u64, r.jacobian(case.x, s, e)), r.vjp(case.x, u64, e).points[s]),
        net,
        base=SELF_RTOL[case.dtype] * 10,
    )
    jac = net.jacobian(case.xin(), s, e).astype(np.float64)
    jv = net.jvp(case.xin(), v, point=s)[e]
    assert_close(np.einsum("bij,bj->bi", jac, v.astype(np.float64)), jv, rtol, "J v vs jvp", floor=np.linalg.norm(jac) * np.linalg.norm(v) * FLOOR[case.dtype])
    jtu = net.vjp(case.xin(), u, point=e).points[s]
    assert_close(np.einsum("bi,bij->bj", u.astype(np.float64), jac), jtu, rtol, "u J vs vjp", floor=np.linalg.norm(jac) * np.linalg.norm(u) * FLOOR[case.dtype])


@given(cases(batchnorm=False), st.data())
def test_chain_rule_across_points(case, data):
    n = n_points(case)
    i = data.draw(st.integers(0, n - 1), label="i")
    j = data.draw(st.integers(i, n - 1), label="j")
    k = data.draw(st.integers(j, n - 1), label="k")
    net = case.net()
    x = case.xin()
    rtol = case.rtol(lambda r: (r.jacobian(case.x, i, k), r.jacobian(case.x, j, k) @ r.jacobian(case.x, i, j)), net, base=SELF_RTOL[case.dtype] * 10)
    jik = net.jacobian(x, i, k).astype(np.float64)
    composed = net.jacobian(x, j, k).astype(np.float64) @ net.jacobian(x, i, j).astype(np.float64)
    scale = np.linalg.norm(net.jacobian(x, j, k)) * np.linalg.norm(net.jacobian(x, i, j))
    assert_close(jik, composed, rtol, f"J({i}->{k}) vs J({j}->{k}) J({i}->{j})", floor=FLOOR[case.dtype] * scale)
    # a Jacobian from a point to itself is the identity
    d = widths(case)[i]
    assert np.array_equal(net.jacobian(x, i, i), np.broadcast_to(np.eye(d, dtype=case.dtype), (case.batch, d, d)))


@given(cases())
def test_loss_gradient_is_vjp_of_output_gradient(case):
    """loss_and_grad = vjp of dL/d(output) (mse with zero targets: dL/do = o)."""
    net = case.net()
    out = net.forward(case.xin()).output
    _, g = net.loss_and_grad(case.xin())
    v = net.vjp(case.xin(), out)
    assert_gradients_close(g, v, case.dtype, "loss_and_grad vs vjp", net.forward(case.xin()).points, rtol=SELF_RTOL[case.dtype])


@given(cases(dtypes=["float32"]))
def test_float32_agrees_with_float64(case):
    net32 = case.net("float32")
    net64 = gsc_core.Network(net32.layers, dtype="float64")  # the same (float32-representable) parameters
    rtol = case.rtol(lambda r: (r.forward(case.x), r.loss_and_grad(case.x, case.y_classes, "cross_entropy")), net32)
    loss_rtol = case.rtol(lambda r: r.loss_and_grad(case.x, case.y_classes, "cross_entropy")[0], net32)
    x32 = case.x.astype(np.float32)
    p32, p64 = net32.forward(x32).points, net64.forward(case.x).points
    assert all(p.dtype == np.float32 for p in p32)
    assert_list_close(p32, p64, "float32", "points", rtol)
    l32, g32 = net32.loss_and_grad(x32, case.y_classes, loss="cross_entropy")
    l64, g64 = net64.loss_and_grad(case.x, case.y_classes, loss="cross_entropy")
    assert_close(l32, l64, loss_rtol, "losses")
    assert_gradients_close(g32, g64, "float32", "grad", p64, rtol)
    # a float64 input to a float32 network is converted (same values, same results)
    assert_list_close(net32.forward(case.x).points, p32, "float32", "float64 input", rtol=0.0)


# ---------------------------------------------------------------------------------------------
# kinks, identities, shapes


@pytest.mark.parametrize(
    "name, params, expected",
    [
        ("relu", {}, 0.0),
        ("leaky_relu", {}, 0.01),
        ("leaky_relu", {"negative_slope": 0.2}, 0.2),
        ("elu", {}, 1.0),
        ("elu", {"alpha": 0.5}, 0.5),
        ("selu", {}, SELU_LAMBDA * SELU_ALPHA),
        ("identity", {}, 1.0),
        ("gelu", {}, 0.5),
        ("silu", {}, 0.5),
        ("tanh", {}, 1.0),
        ("sigmoid", {}, 0.25),
        ("softplus", {}, 0.5),
        ("sin", {}, 1.0),
    ],
)
def test_derivative_at_zero(name, params, expected, dtype):
    """At a kink the derivative is the left-hand one (the z <= 0 branch), as in PyTorch."""
    net = gsc_core.Network([gsc_core.Activation(name, **params)], dtype=dtype)
    x = np.zeros((2, 3), dtype=dtype)
    ones = np.ones((2, 3), dtype=dtype)
    tol = 1e-15 if dtype == "float64" else 1e-7
    assert np.allclose(net.vjp(x, ones).points[0], expected, rtol=tol, atol=0)
    assert np.allclose(net.jvp(x, ones)[1], expected, rtol=tol, atol=0)
    assert np.allclose(net.jacobian(x), expected * np.eye(3), rtol=tol, atol=0)
    assert np.allclose(RefNet([gsc_core.Activation(name, **params)]).vjp(x, ones).points[0], expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_values_against_formulas(name, dtype):
    """Activation values at a grid of points, against the SPEC formulas written out in NumPy."""
    import math

    z = np.array([[-30.0, -5.0, -1.5, -0.25, 0.0, 0.3, 1.0, 4.0, 30.0]])
    formulas = {
        "identity": lambda t: t,
        "relu": lambda t: max(t, 0.0),
        "leaky_relu": lambda t: t if t > 0 else 0.01 * t,
        "elu": lambda t: t if t > 0 else math.expm1(t),
        "selu": lambda t: SELU_LAMBDA * (t if t > 0 else SELU_ALPHA * math.expm1(t)),
        "gelu": lambda t: 0.5 * t * math.erfc(-t / math.sqrt(2)),
        "silu": lambda t: t / (1 + math.exp(-t)),
        "tanh": math.tanh,
        "sigmoid": lambda t: 1 / (1 + math.exp(-t)),
        "softplus": lambda t: max(t, 0.0) + math.log1p(math.exp(-abs(t))),
        "sin": math.sin,
    }
    expected = np.vectorize(formulas[name])(z)
    got = gsc_core.Network([gsc_core.Activation(name)], dtype=dtype).forward(z.astype(dtype)).output
    tol = 1e-15 if dtype == "float64" else 1e-6
    assert np.allclose(got, expected, rtol=tol * 4, atol=tol * 1e-3), (got, expected)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_derivatives_on_a_grid(name, dtype):
    """Derivatives (VJP with ones) over a grid including the tails, against the reference."""
    from reference import activation_derivative

    z = np.concatenate([-np.geomspace(40, 1e-6, 30), [0.0], np.geomspace(1e-6, 40, 30)])[None, :].astype(dtype)
    act = gsc_core.Activation(name)
    net = gsc_core.Network([act], dtype=dtype)
    got = net.vjp(z, np.ones_like(z)).points[0]
    expected = activation_derivative(name, act.params, z.astype(np.float64))
    tol = 1e-13 if dtype == "float64" else 1e-6
    assert np.allclose(got, expected, rtol=tol, atol=tol * 1e-2), np.max(np.abs(got - expected))
    assert np.array_equal(net.jvp(z, np.ones_like(z))[1], got)


def test_softplus_is_stable():
    net = gsc_core.Network([gsc_core.Activation("softplus")])
    z = np.array([[-800.0, -40.0, 40.0, 800.0]])
    out = net.forward(z).output
    assert np.all(np.isfinite(out))
    assert out[0, 3] == 800.0 and out[0, 2] == 40.0
    assert 0 < out[0, 0] < 1e-300 or out[0, 0] == 0.0
    assert np.isclose(out[0, 1], np.exp(-40.0), rtol=1e-14)
    g = net.vjp(z, np.ones_like(z)).points[0]
    assert np.all(np.isfinite(g)) and g[0, 3] == 1.0


@pytest.mark.parametrize("loss_dtype", ["float64", "float32"])
def test_cross_entropy_small_losses_keep_their_relative_accuracy(loss_dtype):
    """A confident, correct sample has a tiny loss l = log1p(sum_{k != y} exp(o_k - o_y)); GSC
    divides by |l_b| (SPEC §3), so l_b must keep its relative accuracy (computing it as
    (m + log(sum exp(o - m))) - o_y leaves an absolute error of eps * |m|, and an exact 0 once the
    margin passes ~37 in float64, which turns a finite GSC into inf). Likewise dl/do_y = -(1 - p_y)."""
    import math

    margins = np.array([8.0, 30.0, 30.0, 40.0, 60.0])
    top = np.array([3.0, 10.0, 0.0, -20.0, 7.0])
    o = np.stack([top, top - margins], axis=1)
    net = gsc_core.Network([gsc_core.Activation("identity")], dtype=loss_dtype)
    losses, g = net.loss_and_grad(o.astype(loss_dtype), np.zeros(5, dtype=np.int64), loss="cross_entropy")
    true = np.array([math.log1p(math.exp(-d)) for d in margins])
    true_g = -np.array([math.exp(-d) / (1 + math.exp(-d)) for d in margins])
    ref_losses, ref_g = RefNet([gsc_core.Activation("identity")]).loss_and_grad(o, np.zeros(5, dtype=np.int64), "cross_entropy")
    assert np.allclose(ref_losses, true, rtol=1e-14, atol=0) and np.allclose(ref_g.points[0][:, 0], true_g, rtol=1e-14, atol=0)
    tol = 1e-12 if loss_dtype == "float64" else 1e-5
    rel = np.abs(losses - true) / true
    assert np.all(rel <= tol), f"cross_entropy losses {losses} vs {true}: relative errors {rel}"
    rel_g = np.abs(g.points[0][:, 0] - true_g) / np.abs(true_g)
    assert np.all(rel_g <= tol), f"dl/do_y {g.points[0][:, 0]} vs {true_g}: relative errors {rel_g}"


def test_cross_entropy_is_stable():
    net = gsc_core.Network([gsc_core.Dense(np.eye(3))])
    x = np.array([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 999.0]])
    losses, g = net.loss_and_grad(x, np.array([0, 2]), loss="cross_entropy")
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(g.points[0]))
    assert losses[0] == pytest.approx(0.0, abs=1e-12)
    assert losses[1] == pytest.approx(np.log1p(np.exp(-1.0)) + 1.0, rel=1e-12)


def test_batchnorm_couples_samples_and_jacobian_refuses(dtype):
    rng = np.random.default_rng(3)
    layers = [make_dense(rng, 3, 4, True), gsc_core.Activation("tanh"), gsc_core.BatchNorm(weight=rng.normal(1, 0.2, 4), bias=rng.normal(0, 0.2, 4)), gsc_core.Activation("relu"), make_dense(rng, 4, 2, True)]
    net = gsc_core.Network(layers, dtype=dtype)
    x = _x(rng, 5, 3).astype(dtype)
    for start, end in ((0, -1), (2, 3), (0, 3), (2, 5)):
        with pytest.raises(ValueError, match="BatchNorm"):
            net.jacobian(x, start, end)
    with pytest.raises(ValueError, match="BatchNorm"):
        gsc_core.jacobian_spectrum(net, x)
    with pytest.raises(ValueError, match="BatchNorm"):
        gsc_core.jacobian_norms(net, x)
    # the Jacobians that do not cross the BatchNorm still exist
    ref = RefNet(net.layers)
    assert_close(net.jacobian(x, 0, 2), ref.jacobian(x, 0, 2), RTOL[dtype], "before the BatchNorm")
    assert_close(net.jacobian(x, 3, 5), ref.jacobian(x, 3, 5), RTOL[dtype], "after the BatchNorm")
    # vjp/jvp still work, on the whole batch: a cotangent on one sample reaches every sample
    u = np.zeros((5, 2), dtype=dtype)
    u[0] = 1.0
    g = net.vjp(x, u)
    assert np.all(np.linalg.norm(g.points[0][1:], axis=1) > 0)
    assert_list_close(g.points, ref.vjp(x, u).points, dtype, "vjp")
    v = np.zeros((5, 3), dtype=dtype)
    v[0] = 1.0
    t = net.jvp(x, v)
    assert np.all(np.linalg.norm(t[-1][1:], axis=1) > 0)
    assert_list_close(t, ref.jvp(x, v), dtype, "jvp")


def test_vjp_parameter_gradients_after_the_point_are_zero(dtype):
    rng = np.random.default_rng(5)
    layers = [make_dense(rng, 3, 4, True), gsc_core.Activation("tanh"), make_dense(rng, 4, 2, True)]
    net = gsc_core.Network(layers, dtype=dtype)
    x = _x(rng, 4, 3).astype(dtype)
    g = net.vjp(x, rng.normal(size=(4, 4)).astype(dtype), point=2)
    assert g.points[3] is None
    assert np.array_equal(g.weights[1], np.zeros((2, 4))) and np.array_equal(g.biases[1], np.zeros(2))
    assert np.linalg.norm(g.weights[0]) > 0


# ---------------------------------------------------------------------------------------------
# threads and layouts


def _everything(net, x, seed=0):
    """Every engine result as a flat list of arrays."""
    rng = np.random.default_rng(seed)
    dt = net.dtype
    trace = net.forward(x)
    out = list(trace.points) + list(trace.pre_activations)
    d = [p.shape[1] for p in trace.points]
    b = trace.points[0].shape[0]
    losses, g = net.loss_and_grad(x, rng.integers(0, d[-1], size=b), loss="cross_entropy")
    out += [losses] + g.points + g.weights + [a for a in g.biases if a is not None]
    g = net.vjp(x, rng.normal(size=(b, 9, d[-1])).astype(dt), point=-1)
    out += g.points + g.weights + [a for a in g.biases if a is not None]
    out += [t for t in net.jvp(x, rng.normal(size=(b, 5, d[1])).astype(dt), point=1) if t is not None]
    if not has_batchnorm(net.layers):
        out += [net.jacobian(x), gsc_core.jacobian_norms(net, x), gsc_core.jacobian_spectrum(net, x)]
    return out


def _big_networks():
    yield gsc_core.resnet(blocks=3, width=40, in_dim=24, out_dim=10, norm="layer", seed=1)
    yield gsc_core.mlp(depth=4, width=40, in_dim=24, out_dim=10, norm="batch", activation="selu", seed=2)
    yield gsc_core.mlp(depth=3, width=33, in_dim=24, out_dim=10, activation="gelu", seed=3, dtype="float32")


@pytest.mark.parametrize("which", [0, 1, 2])
def test_results_identical_for_one_and_two_threads(which, restore_threads):
    net = list(_big_networks())[which]
    x = np.random.default_rng(4).normal(size=(301, 24)).astype(net.dtype)
    gsc_core.set_num_threads(1)
    assert gsc_core.get_num_threads() == 1
    one = _everything(net, x)
    gsc_core.set_num_threads(2)
    assert gsc_core.get_num_threads() == 2
    two = _everything(net, x)
    assert len(one) == len(two)
    for k, (a, b) in enumerate(zip(one, two)):
        assert np.array_equal(a, b), f"result {k} differs between 1 and 2 threads"


@given(cases(min_batch=2))
def test_thread_count_invariance_random(case):
    net = case.net()
    before = gsc_core.get_num_threads()
    try:
        gsc_core.set_num_threads(1)
        one = _everything(net, case.xin())
        gsc_core.set_num_threads(2)
        two = _everything(net, case.xin())
    finally:
        gsc_core.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def _layouts(a: np.ndarray):
    """The same values as a Fortran-ordered array, a strided slice and a negative-strided view."""
    yield "fortran", np.asfortranarray(a)
    big = np.zeros((a.shape[0] * 2, a.shape[1] * 3), dtype=a.dtype)
    big[::2, 1::3] = a
    yield "strided", big[::2, 1::3]
    yield "reversed", np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1]
    yield "python list", a.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_input_layouts_give_identical_results(seed, dtype):
    case = random_case(seed, dtype, min_batch=3)
    net = case.net()
    x = case.xin()
    base = _everything(net, x)
    for label, xv in _layouts(x):
        assert not isinstance(xv, np.ndarray) or label == "fortran" or not xv.flags.c_contiguous
        got = _everything(net, xv)
        assert all(np.array_equal(a, b) for a, b in zip(got, base)), f"x layout {label!r} changes results"
    # cotangents, tangents and weights in other layouts
    d = widths(case)
    u = np.random.default_rng(1).normal(size=(case.batch, d[-1])).astype(dtype)
    v = np.random.default_rng(2).normal(size=(case.batch, 2, d[0])).astype(dtype)
    g0 = net.vjp(x, u)
    t0 = net.jvp(x, v)
    for label, uv in _layouts(u):
        g = net.vjp(x, uv)
        assert all(np.array_equal(a, b) for a, b in zip(g.points, g0.points)), f"cotangent layout {label!r}"
        assert all(np.array_equal(a, b) for a, b in zip(g.weights, g0.weights)), f"cotangent layout {label!r}"
    for label, vv in (("fortran", np.asfortranarray(v)), ("reversed", np.ascontiguousarray(v[::-1, :, ::-1])[::-1, :, ::-1]), ("transposed", np.ascontiguousarray(v.transpose(1, 0, 2)).transpose(1, 0, 2))):
        t = net.jvp(x, vv)
        assert all(np.array_equal(a, b) for a, b in zip(t, t0) if b is not None), f"tangent layout {label!r}"
    fortran_layers = map_dense(case.layers, lambda k, dl: gsc_core.Dense(np.asfortranarray(dl.weight), None if dl.bias is None else dl.bias[::-1].copy()[::-1]))
    other = gsc_core.Network(fortran_layers, dtype=dtype)
    assert all(np.array_equal(a, b) for a, b in zip(_everything(other, x), base)), "weight layout changes results"


def test_network_copies_its_parameters():
    rng = np.random.default_rng(8)
    w = rng.normal(size=(3, 2))
    layer = gsc_core.Dense(w, np.zeros(3))
    net = gsc_core.Network([layer])
    x = rng.normal(size=(2, 2))
    before = net.forward(x).output.copy()
    w[:] = 0.0
    layer.bias[:] = 5.0
    assert np.array_equal(net.forward(x).output, before)


def test_integer_inputs_are_converted_not_truncated():
    net = gsc_core.Network([gsc_core.Dense(np.array([[0.5, 0.25]]))])
    out = net.forward(np.array([[1, 2], [3, 4]])).output
    assert out.dtype == np.float64
    assert np.array_equal(out, np.array([[1.0], [2.5]]))
    # a float64 input to a float32 network is rounded to float32, not truncated to an integer
    net32 = gsc_core.Network([gsc_core.Activation("identity")], dtype="float32")
    assert np.array_equal(net32.forward(np.array([[0.7, -1.3]])).output, np.array([[0.7, -1.3]], dtype=np.float32))


@pytest.mark.parametrize("wide", ["output", "input"])
def test_wide_jacobians_and_large_k(wide, dtype):
    """Widths beyond any plausible chunk size: jacobian_norms/spectrum and a large-K VJP."""
    rng = np.random.default_rng(21)
    d_in, d_out = (6, 700) if wide == "output" else (700, 6)
    layers = [make_dense(rng, d_in, 9, True), gsc_core.LayerNorm(weight=rng.normal(1, 0.2, 9)), gsc_core.Activation("tanh"),
              gsc_core.Residual([gsc_core.Activation("gelu"), make_dense(rng, 9, 9, True)], alpha=0.5), make_dense(rng, 9, d_out, True)]
    net = gsc_core.Network(layers, dtype=dtype)
    ref = RefNet(net.layers)
    x = rng.normal(size=(3, d_in)).astype(dtype)
    x64 = x.astype(np.float64)
    tol = RTOL[dtype]
    assert_close(net.jacobian(x), ref.jacobian(x64), tol, "jacobian")
    assert_close(gsc_core.jacobian_norms(net, x), ref.jacobian_norms(x64), tol, "jacobian_norms")
    sv = gsc_core.jacobian_spectrum(net, x)
    assert sv.shape == (3, 6)
    assert_close(sv, ref.jacobian_spectrum(x64), tol, "jacobian_spectrum")
    u = rng.normal(size=(3, d_out)).astype(dtype)
    assert_gradients_close(net.vjp(x, u), ref.vjp(x64, u.astype(np.float64)), dtype, "vjp", ref.forward(x64)[0])


def test_large_k(dtype):
    """K beyond any plausible chunk size, for VJPs and JVPs."""
    rng = np.random.default_rng(22)
    layers = [make_dense(rng, 5, 7, True), gsc_core.BatchNorm(bias=rng.normal(0, 0.2, 7)), gsc_core.Activation("tanh"),
              gsc_core.Residual([gsc_core.Activation("relu"), make_dense(rng, 7, 4, True)], alpha=0.5, shortcut=make_dense(rng, 7, 4, False)), make_dense(rng, 4, 3, True)]
    net = gsc_core.Network(layers, dtype=dtype)
    ref = RefNet(net.layers)
    x = rng.normal(size=(4, 5)).astype(dtype)
    x64 = x.astype(np.float64)
    k = 1500
    u = rng.normal(size=(4, k, 3)).astype(dtype)
    g = net.vjp(x, u)
    assert g.weights[0].shape == (k, 7, 5)
    assert_gradients_close(g, ref.vjp(x64, u.astype(np.float64)), dtype, "large-K vjp", ref.forward(x64)[0])
    v = rng.normal(size=(4, k, 5)).astype(dtype)
    assert_list_close(net.jvp(x, v), ref.jvp(x64, v.astype(np.float64)), dtype, "large-K jvp")


@given(cases(dtypes=["float64"]), st.data())
def test_reference_is_self_consistent(case, data):
    """The reference itself: adjointness of its VJP and JVP, and its JVP and parameter gradients
    against finite differences (so it is trusted beyond the three shared vectors)."""
    ref = case.ref()
    n = n_points(case)
    i = data.draw(st.integers(0, n - 1), label="i")
    j = data.draw(st.integers(i, n - 1), label="j")
    rng = case.rng(5)
    d = widths(case)
    u, v = rng.normal(size=(case.batch, d[j])), rng.normal(size=(case.batch, d[i]))
    jv, jtu = ref.jvp(case.x, v, i)[j], ref.vjp(case.x, u, j).points[i]
    rtol = case.rtol(lambda r: (r.jvp(case.x, v, i)[j], r.vjp(case.x, u, j).points[i]), base=1e-12)
    assert abs(np.sum(u * jv) - np.sum(jtu * v)) <= rtol * (np.linalg.norm(u) * np.linalg.norm(jv) + np.linalg.norm(jtu) * np.linalg.norm(v) + 1e-300)
    kink, std = smoothness_margins(case)
    assume(kink > 1e-2 and std > 0.05)
    pts = ref.forward(case.x)[0]
    v = v / max(np.linalg.norm(v), 1e-300)
    fd = richardson(lambda p: ref.forward_from(p, i, j), pts[i], v, FD_H)
    assert np.linalg.norm(ref.jvp(case.x, v, i)[j] - fd) <= FD_RTOL * max(np.linalg.norm(fd), FD_FLOOR * (1 + np.linalg.norm(pts[j])))
    _, g = ref.loss_and_grad(case.x, case.y_classes, "cross_entropy")
    for k, dense in enumerate(ref.dense):
        dw = rng.normal(size=dense.weight.shape)
        dw /= np.linalg.norm(dw)
        w0 = dense.weight.copy()

        def total(t):
            dense.weight = w0 + t[0] * dw
            try:
                return np.array([ref.total_loss(case.x, case.y_classes, "cross_entropy")])
            finally:
                dense.weight = w0

        fd = richardson(total, np.zeros(1), np.ones(1), FD_H)[0]
        exact = float(np.sum(g.weights[k] * dw))
        assert abs(exact - fd) <= FD_RTOL * (np.linalg.norm(g.weights[k]) + FD_FLOOR * (1 + abs(total(np.zeros(1))[0])))
