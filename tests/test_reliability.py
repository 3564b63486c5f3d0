"""The reliability battery (issue #6, SPEC §8): nothing crashes, nothing is silently wrong.

Organised by the issue's seven categories:

1. hostile inputs: every public function against other dtypes/layouts (must work, bit-identical)
   and hostile arrays (clear ValueError/TypeError naming the problem); the random fuzz over the
   whole API, in-process and in a subprocess, is ``tests/test_fuzz.py``; ``tests/test_errors.py``
   covers the engine's individual messages;
2. extreme depths (5,000 layers, exploding and vanishing) and inputs of magnitude 1e300 (float64)
   / 1e30 (float32): finite logs, ``inf``/``0`` exactly where the true value leaves the dtype, no
   NaN; overflowing forward passes are rejected naming the layer (also
   ``test_analysis.py::test_five_thousand_layer_exploding_network_has_finite_logs``);
3. degenerate statistics: BatchNorm over one sample, constant inputs, zero losses, dead ReLUs;
4. threads: eight Python threads analysing shared networks at once, and 1 vs 2 rayon threads
   (also ``test_engine.py::test_results_identical_for_one_and_two_threads``);
5. interrupts: Ctrl-C (SIGINT) during long calls, in a subprocess;
6. memory: requests too large fail fast with MemoryError before allocating (in a subprocess under
   an address-space limit), and the peak RSS of ``jacobian_norms`` stays within its documented bound;
7. forced internal errors and panics (on the worker thread and inside a pool job) reach Python as
   exceptions and leave the library usable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

import gsc_core
from gsc_core import _core

RNG = np.random.default_rng(20240606)
HERE = os.path.dirname(os.path.abspath(__file__))
NAN_WORD = re.compile(r"\bnan\b", re.IGNORECASE)


def run_python(script: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs ``script`` in a fresh interpreter; a death by signal fails the calling test loudly."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    assert out.returncode >= 0, f"the subprocess was killed by signal {-out.returncode}:\n{out.stdout}\n{out.stderr}"
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    return out


def quiet(fn, *args, **kwargs):
    """Calls fn, returning (result, the GSCWarnings it emitted); any other warning fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    others = [w for w in caught if not issubclass(w.category, gsc_core.GSCWarning)]
    assert not others, [str(w.message) for w in others]
    return out, [w for w in caught if issubclass(w.category, gsc_core.GSCWarning)]


def arrays_of(obj) -> list:
    """Every array in a result (lists, tuples, dicts, Gradients, Reports), as float64."""
    if obj is None:
        return []
    if isinstance(obj, np.ndarray):
        return [obj.astype(np.float64)]
    if isinstance(obj, (float, np.floating, int)):
        return [np.asarray(obj, dtype=np.float64)]
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in arrays_of(v)]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in arrays_of(v)]
    if isinstance(obj, gsc_core.Report):
        return arrays_of({k: getattr(obj, k) for k in obj.__dataclass_fields__ if not k.startswith("_") and k not in ("mode", "loss", "notes")})
    if hasattr(obj, "points"):  # Gradients, Trace
        return [a for k in ("points", "weights", "biases", "pre_activations") for a in arrays_of(getattr(obj, k, None))]
    return []


def assert_identical(a, b, what: str = "") -> None:
    xs, ys = arrays_of(a), arrays_of(b)
    assert len(xs) == len(ys), what
    for k, (x, y) in enumerate(zip(xs, ys)):
        assert x.shape == y.shape and np.array_equal(x, y, equal_nan=True), f"{what}: array {k} differs"


# =============================================================================================
# 1. hostile inputs: every public function


def small_net(dtype: str = "float64") -> gsc_core.Network:
    rng = np.random.default_rng(1)
    return gsc_core.Network(
        [
            gsc_core.Dense(rng.normal(size=(6, 4)) / 2, rng.normal(size=6) / 4),
            gsc_core.Activation("tanh"),
            gsc_core.Residual([gsc_core.LayerNorm(), gsc_core.Activation("gelu"), gsc_core.Dense(rng.normal(size=(6, 6)) / 2.5)], alpha=0.5),
            gsc_core.Dense(rng.normal(size=(3, 6)) / 2),
        ],
        dtype=dtype,
    )


def _b(x) -> int:
    """The batch size of a (possibly hostile) input, for building matching cotangents."""
    shape = np.shape(x) if x is not None else ()
    return shape[0] if len(shape) else 1


#: every public function of an input batch (x of shape (B, 4) into small_net, 3 outputs)
PUBLIC = {
    "forward": lambda net, x: net.forward(x),
    "loss_and_grad": lambda net, x: net.loss_and_grad(x),
    "loss_and_grad_ce": lambda net, x: net.loss_and_grad(x, np.arange(_b(x)) % 3, loss="cross_entropy"),
    "vjp": lambda net, x: net.vjp(x, np.ones((_b(x), 2, 3)), point=-1),
    "jvp": lambda net, x: net.jvp(x, np.ones((_b(x), 4)), point=0),
    "jacobian": lambda net, x: net.jacobian(x),
    "gsc": lambda net, x: gsc_core.gsc(net, x),
    "gsc_batch": lambda net, x: gsc_core.gsc(net, x, mode="batch"),
    "gsc_per_sample": lambda net, x: gsc_core.gsc_per_sample(net, x),
    "gsc_matrix": lambda net, x: gsc_core.gsc_matrix(net, x),
    "gsc_matrix_probes": lambda net, x: gsc_core.gsc_matrix(net, x, mode="batch", probes=3, seed=1),
    "explosion_rate": lambda net, x: gsc_core.explosion_rate(net, x),
    "preactivation_stats": lambda net, x: gsc_core.preactivation_stats(net, x),
    "dilution": lambda net, x: gsc_core.dilution(net, x),
    "jacobian_norms": lambda net, x: gsc_core.jacobian_norms(net, x),
    "jacobian_spectrum": lambda net, x: gsc_core.jacobian_spectrum(net, x),
    "analyze": lambda net, x: gsc_core.analyze(net, x),
}

#: integer-valued inputs, exact in every dtype tried below
X_INT = np.array([[1.0, -2.0, 0.0, 3.0], [2.0, 1.0, -1.0, 0.0], [0.0, 0.0, 2.0, -3.0], [-1.0, 1.0, 1.0, 1.0], [3.0, -1.0, 0.0, 2.0]])


def _layouts(x: np.ndarray) -> dict:
    big = np.zeros((x.shape[0] * 2, x.shape[1] * 3))
    big[::2, 1::3] = x
    return {
        "float16": x.astype(np.float16),
        "float32": x.astype(np.float32),
        "int8": x.astype(np.int8),
        "int64": x.astype(np.int64),
        "fortran": np.asfortranarray(x),
        "strided": big[::2, 1::3],
        "negative-strides": np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1],
        "list": x.tolist(),
        "tuple": tuple(map(tuple, x.tolist())),
    }


@pytest.mark.parametrize("layout", list(_layouts(X_INT)) + ["uint8", "bool"])
@pytest.mark.parametrize("fn", list(PUBLIC))
def test_public_functions_accept_other_dtypes_and_layouts(fn, layout):
    """Real numeric input of any width and any memory layout just works, with the result of the
    same values given as a C-contiguous float64 array (bit-identical)."""
    net = small_net()
    if layout == "uint8":
        x, same = (X_INT + 3).astype(np.uint8), X_INT + 3
    elif layout == "bool":
        x, same = X_INT > 0, (X_INT > 0).astype(np.float64)
    else:
        x, same = _layouts(X_INT)[layout], X_INT
    assert_identical(quiet(PUBLIC[fn], net, x)[0], quiet(PUBLIC[fn], net, same)[0], f"{fn} on {layout}")


HOSTILE = {
    "nan": (lambda: np.where(np.eye(5, 4) > 0, np.nan, X_INT), ValueError, r"non-finite.*\[0, 0\]"),
    "inf": (lambda: np.where(np.eye(5, 4, k=1) > 0, -np.inf, X_INT), ValueError, r"non-finite.*\[0, 1\]"),
    "empty": (lambda: X_INT[:0], ValueError, "empty batch"),
    "zero-width": (lambda: X_INT[:, :0], ValueError, "width"),
    "wrong-width": (lambda: X_INT[:, :3], ValueError, "width"),
    "1-D": (lambda: X_INT[0], ValueError, "2-D"),
    "3-D": (lambda: X_INT[None], ValueError, "2-D"),
    "scalar": (lambda: 1.0, ValueError, "2-D"),
    "complex": (lambda: X_INT + 0j, TypeError, "complex"),
    "object": (lambda: X_INT.astype(object), TypeError, "object"),
    "str": (lambda: X_INT.astype(str), TypeError, "dtype <U"),
    "bytes": (lambda: X_INT.astype(str).astype(bytes), TypeError, "dtype \\|S"),
    "datetime": (lambda: np.zeros((5, 4), dtype="datetime64[s]"), TypeError, "datetime64"),
    "None": (lambda: None, TypeError, "dtype object"),
    "float64-too-large-for-float32": (lambda: X_INT * 1e300, ValueError, "too large for float32"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize("fn", list(PUBLIC))
def test_public_functions_reject_hostile_inputs_clearly(fn, kind):
    make, exc, message = HOSTILE[kind]
    net = small_net("float32" if kind == "float64-too-large-for-float32" else "float64")
    with pytest.raises(exc, match=message):
        PUBLIC[fn](net, make())
    # and nothing is left broken
    assert np.all(np.isfinite(net.forward(X_INT).output))


@pytest.mark.parametrize(
    "make, exc, message",
    [
        (lambda: [gsc_core.Dense(np.ones((3, 4), dtype=np.float16)), gsc_core.Activation("relu")], None, None),
        (lambda: [gsc_core.Dense(np.ones((3, 4), dtype=np.int32), np.arange(3)), gsc_core.Activation("relu")], None, None),
        (lambda: [gsc_core.Dense(np.asfortranarray(np.ones((3, 4))))], None, None),
        (lambda: [gsc_core.Dense(np.ones((4, 8))[:, ::-2])], None, None),
        (lambda: [gsc_core.Dense(np.ones((3, 4)) * 1e300), gsc_core.Activation("tanh"), gsc_core.Dense(np.ones((2, 3)) * 1e300)], None, None),
        (lambda: [gsc_core.Dense(np.ones((3, 4))), gsc_core.Dense(np.ones((2, 4)))], ValueError, r"layers\[1\].*width"),
        (lambda: [gsc_core.Dense(np.ones((0, 4)))], ValueError, "zero-width"),
        (lambda: [gsc_core.Dense(np.full((3, 4), np.nan))], ValueError, r"layers\[0\].*non-finite"),
        (lambda: [gsc_core.Dense(np.ones((3, 4), dtype=complex))], TypeError, "complex"),
        (lambda: [gsc_core.Dense(np.ones((3, 4)).astype(object))], TypeError, "object"),
        (lambda: [gsc_core.Activation("swish")], ValueError, "swish"),
        (lambda: [gsc_core.Activation("elu", alpha=np.inf)], ValueError, "finite"),
        (lambda: [gsc_core.LayerNorm(eps=0.0)], ValueError, "eps"),
        (lambda: [gsc_core.BatchNorm(weight=np.ones(4, dtype="U1"))], TypeError, "BatchNorm weight"),
        (lambda: [gsc_core.Residual([gsc_core.Dense(np.ones((5, 4)))])], ValueError, r"layers\[0\]"),
        (lambda: [gsc_core.Residual([np.ones((4, 4))])], TypeError, "body"),
        (lambda: gsc_core.Dense(np.eye(4)), TypeError, "list of layers"),
    ],
)
def test_networks_from_hostile_parts(make, exc, message):
    if exc is None:
        net = gsc_core.Network(make())
        assert np.all(np.isfinite(gsc_core.jacobian_norms(net, X_INT)))
    else:
        with pytest.raises(exc, match=message):
            gsc_core.Network(make())


def _nested(levels: int) -> gsc_core.Residual:
    layer = gsc_core.Activation("tanh")
    for _ in range(levels):
        layer = gsc_core.Residual([layer], alpha=0.5)
    return layer


def test_deeply_nested_residual_blocks():
    """Nesting is limited (100 levels) with a clear error: thousands of levels overflowed the native
    stack while building the network (a segfault once Python's recursion limit was raised)."""
    x = np.ones((2, 3))
    value = np.tanh(1.0)
    for _ in range(100):
        value = 1.0 + 0.5 * value  # shortcut + alpha * body
    np.testing.assert_allclose(gsc_core.Network([_nested(100)]).forward(x).output, value, rtol=1e-14)
    with pytest.raises(ValueError, match="nested more than 100 deep"):
        gsc_core.Network([_nested(101)])
    out = run_python(
        """
        import sys, numpy as np, gsc_core
        sys.setrecursionlimit(10**6)
        layer = gsc_core.Activation("tanh")
        for _ in range(20000):
            layer = gsc_core.Residual([layer])
        try:
            gsc_core.Network([layer])
        except ValueError as e:
            print("REJECTED", e)
        """
    )
    assert "REJECTED layers[0]: Residual blocks nested more than 100 deep" in out.stdout


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda: gsc_core.gsc(small_net(), X_INT, loss="hinge"), ValueError),
        (lambda: gsc_core.gsc(small_net(), X_INT, mode="population"), ValueError),
        (lambda: gsc_core.gsc_matrix(small_net(), X_INT, probes=0), ValueError),
        (lambda: gsc_core.gsc_matrix(small_net(), X_INT, probes=2**64), ValueError),
        (lambda: gsc_core.gsc_matrix(small_net(), X_INT, seed=2**64), ValueError),
        (lambda: gsc_core.jacobian_norms(small_net(), X_INT, end=2**63), ValueError),
        (lambda: small_net().vjp(X_INT, np.ones((5, 3)), point=-(10**30)), ValueError),
        (lambda: small_net().jacobian(X_INT, 0, 1.0), TypeError),
        (lambda: gsc_core.mlp(3, 8, init="xavier"), ValueError),
        (lambda: gsc_core.mlp(3, 8, activation="swish"), ValueError),
        (lambda: gsc_core.mlp(3, 0), ValueError),
        (lambda: gsc_core.resnet(2, 8, norm="group"), ValueError),
        (lambda: gsc_core.mlp(3, 8, dtype="float16"), ValueError),
        (lambda: gsc_core.theory.chi1("swish", 1.0, 0.0), ValueError),
        (lambda: gsc_core.theory.chi1("tanh", np.nan, 0.0), ValueError),
        (lambda: gsc_core.theory.chi1("tanh", 1e300, 0.0, q0=0.5), None),  # was a core panic
        (lambda: gsc_core.theory.length_map("tanh", 1.0, 0.0, 1.0, -1), ValueError),
        (lambda: gsc_core.theory.length_map("tanh", 1.0, 0.0, 1.0, 2.5), TypeError),
        (lambda: gsc_core.spectrum_summary(np.ones(3)), ValueError),
        (lambda: gsc_core.spectrum_summary(np.ones((2, 0))), ValueError),
        (lambda: gsc_core.spectrum_summary(np.ones((2, 2), dtype=complex)), TypeError),
        (lambda: gsc_core.spectrum_summary(np.full((2, 2), np.nan)), ValueError),
        (lambda: gsc_core.set_num_threads(10**30), ValueError),
        (lambda: gsc_core.architectures.paper_network("ResNet-ReLU", depth=-5), ValueError),  # built a network without blocks
        (lambda: gsc_core.architectures.paper_network(["ReLU"]), TypeError),
        (lambda: gsc_core.set_num_threads(True), TypeError),
    ],
)
def test_hostile_names_and_arguments(call, exc):
    if exc is None:
        assert np.isfinite(call())
        return
    with pytest.raises(exc):
        call()


# =============================================================================================
# 2. extreme depths and magnitudes


def _without_theory(net: gsc_core.Network) -> gsc_core.Network:
    """The same network without the builder's provenance (the mean-field predictions of a
    5,000-layer report take seconds and are not under test here)."""
    return gsc_core.Network(net.layers, dtype=net.dtype)


@pytest.fixture(scope="module")
def exploding_5000():
    """tanh in the chaotic phase (sigma_w^2 = 16): the forward pass stays bounded while the GSC
    grows about e^0.2 per Dense layer, to e^1000 at the input (beyond float64's e^709)."""
    net = _without_theory(gsc_core.mlp(5000, 16, activation="tanh", init="gaussian", sigma_w=4.0, seed=0))
    return net, np.random.default_rng(0).normal(size=(4, 16))


@pytest.fixture(scope="module")
def vanishing_5000():
    """sigmoid: gradients shrink ~5x per layer, to e^-7600 at the input (below float64's e^-745)."""
    net = _without_theory(gsc_core.mlp(5000, 8, activation="sigmoid", init="lecun", seed=0))
    return net, np.random.default_rng(1).normal(size=(3, 8))


LOG_MAX = np.log(np.finfo(np.float64).max)
LOG_TINY = np.log(np.finfo(np.float64).smallest_subnormal)


def test_5000_layer_exploding_per_sample_network(exploding_5000):
    net, x = exploding_5000
    logs, warned = quiet(gsc_core.gsc, net, x, log=True)
    assert not warned and np.all(np.isfinite(logs)) and logs[0] > 900  # really beyond float64
    g = gsc_core.gsc(net, x)
    assert np.all(np.isinf(g[logs > LOG_MAX + 1e-9])) and np.all(np.isfinite(g[logs < LOG_MAX - 1e-9]))  # inf where the true value overflows
    assert not np.isnan(g).any() and np.isinf(g).sum() > 100
    per_sample = gsc_core.gsc_per_sample(net, x, log=True)
    assert np.all(np.isfinite(per_sample))
    r, c = gsc_core.explosion_rate(net, x)
    assert 1.1 < r < 1.4 and np.isfinite(c)
    # the Jacobian, its norms and spectrum, VJPs, JVPs and gradients: no NaN, inf only where the
    # true value overflows (the mantissas/exponents of the rescaled Jacobian are the truth)
    mantissa, exps = net._native.jacobian_scaled(x, 0, -1)
    assert np.all(np.isfinite(mantissa)) and exps.min() > 1024
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(net.jacobian(x), np.ldexp(mantissa, exps[:, None, None]))
    log_fro = 0.5 * np.log(np.sum(mantissa**2, axis=(1, 2))) + exps * np.log(2)
    norms = gsc_core.jacobian_norms(net, x)
    assert np.array_equal(np.isinf(norms[0]), log_fro > LOG_MAX) and np.all(np.isinf(norms[0]))
    assert not np.isnan(norms).any() and np.all(norms[-200:] < np.inf)
    for what, out in [
        ("spectrum", gsc_core.jacobian_spectrum(net, x)),
        ("loss_and_grad", net.loss_and_grad(x)),
        ("vjp", net.vjp(x, np.ones((4, 2, 16)))),
        ("jvp", net.jvp(x, np.ones((4, 16)))),
    ]:
        assert not any(np.isnan(a).any() for a in arrays_of(out)), what
    assert np.all(np.isinf(net.loss_and_grad(x)[1].points[0]))
    report, warned = quiet(gsc_core.analyze, net, x)
    assert not warned and report.verdict() == "explodes"
    assert not any(np.isnan(a).any() for a in arrays_of(report))
    assert np.isfinite(report.spectrum_summary["condition_mean"])  # a ratio: exact from the mantissas
    assert not NAN_WORD.search(report.summary())
    json.dumps(report.to_dict())


def test_5000_layer_exploding_batchnorm_network_in_batch_mode():
    """The issue's batch-ReLU network (BatchNorm: the GSC needs mode='batch'): gradients reach
    e^1120 at the input. Gradient rows are inf exactly where their true norm (the core's logs)
    exceeds float64, finite elsewhere; nothing is NaN."""
    net = _without_theory(gsc_core.mlp(5000, 8, activation="relu", norm="batch", init="he", seed=0))
    x = np.random.default_rng(0).normal(size=(16, 8))
    report, warned = quiet(gsc_core.analyze, net, x, mode="batch")
    assert not warned and report.verdict() == "explodes" and np.all(np.isfinite(report.log_gsc))
    assert report.log_gsc[0] > 1000 and np.array_equal(np.isinf(report.gsc), report.log_gsc > LOG_MAX)
    assert not any(np.isnan(a).any() for a in arrays_of(report)) and not NAN_WORD.search(report.summary())
    _, grads = net.loss_and_grad(x)
    row_logs = net._native.profile(x, "mse", None, None)["grad_log_norms"]  # ln ||(dL/dP_i)_b||, exact
    for i in range(0, len(grads.points), 97):
        g = grads.points[i]
        assert not np.isnan(g).any()
        assert np.all(np.isinf(g).any(axis=1)[row_logs[i] > LOG_MAX + 1e-9]), i
        assert np.all(np.isfinite(g)[row_logs[i] < LOG_MAX - 2]), i
    assert not any(np.isnan(a).any() for a in arrays_of((net.vjp(x, np.ones((16, 2, 8))), net.jvp(x, np.ones((16, 8))))))


def test_5000_layer_vanishing_network(vanishing_5000):
    net, x = vanishing_5000
    logs, warned = quiet(gsc_core.gsc, net, x, log=True)
    assert not warned and np.all(np.isfinite(logs)) and logs[0] < LOG_TINY - 1000
    g = gsc_core.gsc(net, x)
    assert np.all(g[logs < LOG_TINY - 1] == 0) and np.all(g[logs > LOG_TINY] > 0)  # 0 only where the true value underflows
    assert np.all(g[-20:] > 0) and not np.isnan(g).any() and (g == 0).sum() > 100
    assert gsc_core.explosion_rate(net, x)[0] < 0.9
    norms = gsc_core.jacobian_norms(net, x)
    assert np.all(norms[0] == 0) and np.all(norms[-20:] > 0) and not np.isnan(norms).any()
    for out in (net.jacobian(x), gsc_core.jacobian_spectrum(net, x), net.loss_and_grad(x), net.vjp(x, np.ones((3, 8))), net.jvp(x, np.ones((3, 8)))):
        assert not any(np.isnan(a).any() for a in arrays_of(out))
    assert np.all(net.jacobian(x) == 0)
    report, _ = quiet(gsc_core.analyze, net, x)
    assert report.verdict() in ("vanishes", "collapses") and not NAN_WORD.search(report.summary())
    assert report.spectrum_summary["mean_sq_mean"] == 0.0  # e^-15000 underflows honestly


def test_5000_layer_float32_network_overflows_its_dtype_honestly():
    """The chaotic tanh network in float32: the input-output Jacobian (about e^1000) leaves float32's
    range (e^88.7), where the rescaled mantissas and exponents say it does."""
    net = _without_theory(gsc_core.mlp(5000, 16, activation="tanh", init="gaussian", sigma_w=4.0, seed=0, dtype="float32"))
    x = np.random.default_rng(2).normal(size=(3, 16)).astype(np.float32)
    mantissa, exps = net._native.jacobian_scaled(x, 0, -1)
    log_fro = 0.5 * np.log(np.sum(mantissa.astype(np.float64) ** 2, axis=(1, 2))) + exps * np.log(2)
    norms = gsc_core.jacobian_norms(net, x)
    assert norms.dtype == np.float32 and not np.isnan(norms).any()
    f32_max = np.log(np.finfo(np.float32).max)
    assert np.all(log_fro > f32_max + 1)  # this case really overflows float32 ...
    assert np.all(np.isinf(norms[0])) and np.all(np.isinf(net.jacobian(x)).any(axis=(1, 2)))
    logs = gsc_core.gsc(net, x, log=True)  # ... but the GSC is returned in float64, from logs
    assert np.all(np.isfinite(logs))


def _homogeneous_net(dtype: str, norm: bool) -> gsc_core.Network:
    """Bias-free ReLU layers (positively homogeneous: scaling x scales every point) or LayerNorm
    (scale-invariant): the GSC does not depend on the input's scale."""
    rng = np.random.default_rng(5)
    layers = [gsc_core.Dense(rng.normal(size=(8, 6)) / 2)]
    if norm:  # an eps negligible at every scale tried, so the network is exactly scale-invariant
        layers.append(gsc_core.LayerNorm(eps=1e-300 if dtype == "float64" else 1e-30))
    layers += [gsc_core.Activation("relu"), gsc_core.Dense(rng.normal(size=(8, 8)) / 2), gsc_core.Activation("relu"), gsc_core.Dense(rng.normal(size=(3, 8)) / 2)]
    return gsc_core.Network(layers, dtype=dtype)


@pytest.mark.parametrize(
    "dtype, scale, norm",
    [("float64", 1e300, False), ("float64", 1e300, True), ("float64", 1e-300, False), ("float32", 1e30, False), ("float32", 1e30, True), ("float32", 1e-30, False)],
)
def test_huge_and_tiny_inputs_are_handled(dtype, scale, norm):
    """|x| ~ 1e300 (float64) or 1e30 (float32): the loss itself overflows (1e600, 1e60), the GSC to
    the loss does not; LayerNorm's squares overflow, its output does not."""
    net = _homogeneous_net(dtype, norm)
    x = np.random.default_rng(6).normal(size=(5, 6)).astype(dtype)
    rtol = 1e-12 if dtype == "float64" else 2e-5
    xs = (x.astype(np.float64) * scale).astype(dtype)
    for fn in (lambda v: gsc_core.gsc(net, v), lambda v: gsc_core.gsc(net, v, mode="batch"), lambda v: gsc_core.gsc_matrix(net, v)):
        got, warned = quiet(fn, xs)
        assert not warned
        np.testing.assert_allclose(got, fn(x), rtol=rtol)
    report, warned = quiet(gsc_core.analyze, net, xs)
    assert not warned and np.all(np.isfinite(report.gsc)) and not NAN_WORD.search(report.summary())
    np.testing.assert_allclose(report.pre_activation_std, gsc_core.preactivation_stats(net, x)["std"] * (1 if norm else scale), rtol=rtol)
    if scale > 1 and not norm:
        assert np.all(np.isinf(report.losses))  # the true loss exceeds the dtype: reported as such


def test_mean_field_beside_extreme_networks_and_inputs():
    """Report.theory of a 1,000-layer MLP whose predicted chi_1^L = 2.25^999 exceeds float64 (a
    Python float power raised OverflowError), and of inputs whose mean square overflows (numpy
    RuntimeWarnings, which are errors here): inf, and no prediction, respectively."""
    x = np.random.default_rng(0).normal(size=(4, 8))
    deep = gsc_core.mlp(1000, 8, activation="relu", init="he", sigma_w=1.5, seed=0)
    report, _ = quiet(gsc_core.analyze, deep, x, spectrum=False)
    assert report.theory["chi1"] == 2.25 and report.theory["mean_sq_singular_value"] == np.inf
    assert not NAN_WORD.search(report.summary())
    huge, warned = quiet(gsc_core.analyze, gsc_core.mlp(3, 8, seed=0), x * 1e300)
    assert not warned and huge.theory is None and np.all(np.isfinite(huge.gsc)) and not NAN_WORD.search(huge.summary())


def test_batchnorm_gradient_of_huge_inputs_is_not_inf():
    """Two samples of magnitude 1e300 through Dense -> BatchNorm: the gradient before the
    BatchNorm is a rounding residue of ~1e-316 (subnormal); rescaling it multiplied by 2^1050,
    which is inf in float64, and gave inf/NaN gradients."""
    rng = np.random.default_rng(0)
    net = gsc_core.Network([gsc_core.Dense(rng.normal(size=(1, 3)), rng.normal(size=1)), gsc_core.BatchNorm()])
    x = rng.normal(size=(2, 3)) * 1e300
    _, grads = net.loss_and_grad(x)
    assert all(np.all(np.isfinite(a)) for a in arrays_of(grads))
    assert np.all(np.abs(grads.points[0]) < 1e-280)


def test_statistics_of_values_near_the_top_of_float64():
    """Pre-activation std and LayerNorm/BatchNorm statistics of values ~1e307 (their squares and
    sums overflow float64)."""
    z = np.random.default_rng(7).normal(size=(40, 3))
    net = gsc_core.Network([gsc_core.Activation("relu")])
    stats = gsc_core.preactivation_stats(net, z * 1e307)
    np.testing.assert_allclose(stats["unit_std"][0], z.std(axis=0) * 1e307, rtol=1e-12)
    for norm in (gsc_core.LayerNorm(eps=1e-300), gsc_core.BatchNorm(eps=1e-300)):
        out = gsc_core.Network([norm]).forward(z * 1e307).output
        ref = gsc_core.Network([norm]).forward(z).output
        np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    f32 = gsc_core.Network([gsc_core.LayerNorm(eps=1e-30)], dtype="float32")
    np.testing.assert_allclose(f32.forward((z * 1e25).astype(np.float32)).output, f32.forward(z.astype(np.float32)).output, atol=1e-5)


@pytest.mark.parametrize("dtype, x_scale, hint", [("float64", 1e307, "Scale the input down$"), ("float32", 1e37, "dtype='float64'")])
def test_forward_overflow_is_rejected_naming_the_layer(dtype, x_scale, hint):
    """Values beyond the dtype in the forward pass (from finite inputs and weights) would turn into
    inf - inf = NaN in the next layers: every call rejects them, naming the layer."""
    net = gsc_core.Network([gsc_core.Dense(np.eye(4)), gsc_core.Activation("relu"), gsc_core.Dense(np.full((3, 4), 10.0))], dtype=dtype)
    x = np.full((2, 4), x_scale)
    with pytest.raises(ValueError, match=r"layers\[2\] \(Dense\)") as err:
        net.forward(x)
    assert re.search(hint, str(err.value)) and dtype in str(err.value)
    for name, fn in PUBLIC.items():
        with pytest.raises(ValueError, match="left the range"):
            fn(net, x)
    assert np.all(np.isfinite(net.forward(x / 1e10).output))


# =============================================================================================
# 3. degenerate statistics


def _bn_net(bias: float = 0.0) -> gsc_core.Network:
    rng = np.random.default_rng(9)
    return gsc_core.Network([gsc_core.Dense(rng.normal(size=(5, 4))), gsc_core.BatchNorm(bias=np.full(5, bias)), gsc_core.Activation("relu"), gsc_core.Dense(rng.normal(size=(3, 5)))])


@pytest.mark.parametrize("bias", [0.0, 0.7])
def test_batchnorm_over_a_single_sample(bias):
    """Batch statistics of one sample: the BatchNorm outputs its bias exactly (as the formula says;
    PyTorch refuses B = 1 in training mode) and passes back an exactly zero gradient. The GSC before
    it is then 0 (or 0/0) and reported, never NaN-polluting the summary."""
    net = _bn_net(bias)
    x = X_INT[:1]
    trace = net.forward(x)
    assert np.array_equal(trace.points[2], np.full((1, 5), bias))
    _, grads = net.loss_and_grad(x, np.ones((1, 3)))
    assert np.all(grads.points[0] == 0) and np.all(grads.points[1] == 0) and np.all(grads.weights[0] == 0)
    for out in (net.vjp(x, np.ones((1, 2, 3))), net.jvp(x, np.ones((1, 4)))):
        assert not any(np.isnan(a).any() for a in arrays_of(out))
    m, warned = quiet(gsc_core.gsc_matrix, net, x, mode="batch", probes=2)
    assert np.all(np.diag(m) == 1)
    if bias > 0:
        assert not warned and np.all(m[:2, 2:] == 0)  # the Jacobian through it is exactly 0
    else:
        assert warned and np.all(np.isnan(m[:2, 2:]))  # ... and so are the points after it: 0/0
    g, warned = quiet(gsc_core.gsc, net, x, np.ones((1, 3)), mode="batch")
    assert warned and np.all(np.isnan(g[:2]))
    if bias > 0:  # relu passes the constant output on: the GSC after the BatchNorm is defined
        assert np.all(np.isfinite(g[2:]))
    else:  # every point after it is zero as well: G = 0 (or 0/0) everywhere
        assert np.all(np.isnan(g))
    report, _ = quiet(gsc_core.analyze, net, x, np.ones((1, 3)), mode="batch")
    text = report.summary()
    assert not NAN_WORD.search(text) and "undefined" in text and "vanishes exactly" in text
    json.dumps(report.to_dict())
    with pytest.raises(ValueError, match="BatchNorm"):
        gsc_core.gsc(net, x)  # per-sample mode needs per-sample gradients


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_constant_inputs(dtype):
    """Identical samples into a BatchNorm, constant features into a LayerNorm, all-zero inputs:
    zero variance is no NaN anywhere; BatchNorm's Jacobian at a constant batch is the finite
    rstd (I - 11^T/B)."""
    x = np.full((4, 4), 0.3)
    bn = _bn_net()
    bn = gsc_core.Network(bn.layers, dtype=dtype)
    for out in (bn.forward(x), bn.loss_and_grad(x), bn.vjp(x, np.ones((4, 3))), bn.jvp(x, np.ones((4, 4))), gsc_core.preactivation_stats(bn, x)):
        assert all(np.all(np.isfinite(a)) for a in arrays_of(out))
    assert np.all(gsc_core.preactivation_stats(bn, x)["unit_std"][0] < 1e-6)
    v = np.random.default_rng(3).normal(size=(4, 5))
    t = gsc_core.Network([gsc_core.BatchNorm()], dtype=dtype).jvp(np.full((4, 5), 0.3), v)[1]
    np.testing.assert_allclose(t, (v - v.mean(axis=0)) / np.sqrt(1e-5), rtol=1e-4)
    ln = gsc_core.Network([gsc_core.LayerNorm(bias=np.arange(4.0)), gsc_core.Dense(np.ones((2, 4)))], dtype=dtype)
    out = ln.forward(x)
    np.testing.assert_allclose(out.points[1], np.tile(np.arange(4.0), (4, 1)), atol=1e-6)
    m, warned = quiet(gsc_core.gsc_matrix, ln, x)
    assert warned and np.isnan(m[0, 2])  # dp_2/dp_0 = ones . (I - 11^T/d) rstd = 0: G = 0, reported
    assert all(np.all(np.isfinite(a)) for a in arrays_of((ln.loss_and_grad(x), gsc_core.jacobian_norms(ln, x))))
    res = gsc_core.Network([gsc_core.Residual([gsc_core.Activation("tanh")]), gsc_core.Dense(np.ones((2, 4)))], dtype=dtype)
    report, _ = quiet(gsc_core.analyze, res, np.zeros((3, 4)))
    assert np.isnan(report.dilution[0]) and "dilution per residual block: undefined" in report.summary()  # 0/0
    zero = gsc_core.Network(_homogeneous_net(dtype, False).layers, dtype=dtype)
    g, warned = quiet(gsc_core.gsc, zero, np.zeros((3, 6)))
    assert warned and np.all(np.isnan(g))  # every point is 0 and the loss is 0: 0/0, reported
    report, _ = quiet(gsc_core.analyze, zero, np.zeros((3, 6)))
    assert report.verdict() in ("undefined", "collapses") and not NAN_WORD.search(report.summary())


def test_zero_loss_is_reported_not_nan_polluting():
    net = small_net()
    y = net.forward(X_INT).output
    g, warned = quiet(gsc_core.gsc, net, X_INT, y)
    assert warned and np.all(np.isnan(g))
    for mode in ("sample", "batch"):
        report, warned = quiet(gsc_core.analyze, net, X_INT, y, mode=mode)
        assert warned and report.verdict() == "undefined" and np.isnan(report.explosion_rate)
        text = report.summary()
        assert not NAN_WORD.search(text) and "the loss is zero for every sample" in text and "explosion rate: undefined" in text
        d = report.to_dict()
        assert d["explosion_rate"] is None and all(v is None for v in d["gsc"]) and d["verdict"] == "undefined"
        json.dumps(d)
    assert np.all(np.isnan(gsc_core.gsc_per_sample(net, X_INT, y)))  # 0/0 per sample
    # one sample with zero loss: left out and counted, the others summarised exactly
    y1 = np.ones_like(y)
    y1[0] = y[0]
    g1, warned = quiet(gsc_core.gsc, net, X_INT, y1)
    assert warned and np.all(np.isfinite(g1))
    np.testing.assert_allclose(g1, gsc_core.gsc(net, X_INT[1:], y1[1:]), rtol=1e-13)
    report, _ = quiet(gsc_core.analyze, net, X_INT, y1)
    assert np.all(report.gsc_left_out == 1) and report.verdict() != "undefined"
    assert "1 of 5 samples have zero loss" in report.summary()


def test_dead_relu_layers():
    """A ReLU layer that is dead for every sample (large negative biases): gradients and Jacobians
    before it are exactly zero, the per-sample GSC there is exactly 0 (not NaN), the summaries
    report it, the spectrum's condition number is inf (singular, as numpy.linalg.cond)."""
    rng = np.random.default_rng(11)
    net = gsc_core.Network([gsc_core.Dense(rng.normal(size=(6, 4)), np.full(6, -100.0)), gsc_core.Activation("relu"),
                            gsc_core.Dense(rng.normal(size=(6, 6)), np.ones(6)), gsc_core.Activation("tanh"), gsc_core.Dense(rng.normal(size=(2, 6)))])
    x = X_INT
    _, grads = net.loss_and_grad(x)
    assert all(np.all(grads.points[i] == 0) for i in (0, 1)) and np.all(grads.weights[0] == 0) and np.linalg.norm(grads.points[2]) > 0
    ps = gsc_core.gsc_per_sample(net, x)  # G_b = 0 (zero gradient, or the zero point 2)
    assert np.all(ps[:, :3] == 0) and np.all(np.isfinite(ps)) and np.all(ps[:, 3:] > 0)
    g, warned = quiet(gsc_core.gsc, net, x)
    assert warned and np.all(np.isnan(g[:3])) and np.all(np.isfinite(g[3:]))
    norms = gsc_core.jacobian_norms(net, x)
    assert np.all(norms[:2] == 0) and np.all(norms[2:] > 0)
    s = gsc_core.jacobian_spectrum(net, x)
    assert np.all(s == 0)
    summary = gsc_core.spectrum_summary(s)
    assert np.all(summary["condition"] == np.inf) and summary["mean_sq_mean"] == 0.0
    m, warned = quiet(gsc_core.gsc_matrix, net, x)
    assert warned and np.all(np.isnan(m[:2, 2:])) and np.all(np.isnan(m[2, 3:]))
    assert np.isfinite(m[0, 1]) and np.all(np.isfinite(m[3:, 3:][np.triu_indices(3, 1)]))
    report, _ = quiet(gsc_core.analyze, net, x)
    assert report.verdict() == "collapses"  # sign diversity 0 after the dead layer
    text = report.summary()
    assert not NAN_WORD.search(text) and "GSC undefined at 3 point(s) [0, 1, 2]" in text


# =============================================================================================
# 4. threads


def _shared_networks():
    return {
        "mlp-tanh": (gsc_core.mlp(12, 24, activation="tanh", seed=1), "sample"),
        "resnet-ln": (gsc_core.resnet(4, 24, norm="layer", seed=2), "sample"),
        "mlp-bn-f32": (gsc_core.mlp(6, 24, activation="relu", norm="batch", init="he", seed=3, dtype="float32"), "batch"),
    }


def _inputs(k: int) -> np.ndarray:
    return np.random.default_rng(100 + k).normal(size=(33, 24))


def _analysis(net, mode, x):
    """Everything analyze computes (the full report), plus the exact and probed GSC matrices."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gsc_core.GSCWarning)
        report = gsc_core.analyze(net, x, mode=mode)
        probed = gsc_core.gsc_matrix(net, x, mode="batch", probes=3, seed=5)
        exact = gsc_core.gsc_matrix(net, x, mode=mode) if mode == "sample" else None
    return [report, report.theory, probed, exact]


def test_eight_python_threads_analyse_shared_networks_like_one():
    nets = _shared_networks()
    jobs = [(name, k) for name in nets for k in range(3)]
    expected = {(name, k): _analysis(*nets[name], _inputs(k)) for name, k in jobs}
    results: dict = {}
    errors: list = []
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for step in range(len(jobs)):
                name, k = jobs[(t + step) % len(jobs)]
                results[(t, name, k)] = _analysis(*nets[name], _inputs(k))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors
    assert len(results) == 8 * len(jobs)
    for (t, name, k), got in results.items():
        assert_identical(got, expected[(name, k)], f"thread {t}, {name}, input {k}")


def test_threads_changing_the_pool_size_while_others_compute(restore_threads):
    net, mode = _shared_networks()["resnet-ln"]
    x = _inputs(0)
    expected = _analysis(net, mode, x)
    stop = threading.Event()
    errors: list = []

    def flip() -> None:
        n = 0
        while not stop.is_set():
            gsc_core.set_num_threads(1 + n % 2)
            n += 1
            time.sleep(0.002)

    def analyse() -> None:
        try:
            for _ in range(4):
                assert_identical(_analysis(net, mode, x), expected, "while the pool changes")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    flipper = threading.Thread(target=flip)
    workers = [threading.Thread(target=analyse) for _ in range(3)]
    flipper.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    stop.set()
    flipper.join()
    assert not errors, errors


@pytest.mark.parametrize("name", list(_shared_networks()))
def test_analysis_bit_identical_for_one_and_two_rayon_threads(name, restore_threads):
    net, mode = _shared_networks()[name]
    x = np.random.default_rng(7).normal(size=(301, 24))
    gsc_core.set_num_threads(1)
    one = _analysis(net, mode, x) + [gsc_core.jacobian_norms(net, x) if mode == "sample" else None]
    gsc_core.set_num_threads(2)
    two = _analysis(net, mode, x) + [gsc_core.jacobian_norms(net, x) if mode == "sample" else None]
    assert_identical(one, two, name)


# =============================================================================================
# 5. interrupts


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery to a child differs on Windows")
def test_ctrl_c_interrupts_long_calls_within_a_second():
    """SIGINT half a second into a long gsc_matrix, jacobian_norms, analyze and theory.length_map
    (each would run for many seconds) raises KeyboardInterrupt within a second, and afterwards
    the library gives bit-identical results to before; a second Ctrl-C works as well."""
    out = run_python(
        """
        import os, signal, threading, time
        import numpy as np, gsc_core
        gsc_core.set_num_threads(2)  # every call below runs for seconds, far past the signal
        small = gsc_core.mlp(3, 8, seed=0)
        xs = np.random.default_rng(1).normal(size=(5, 8))
        before = gsc_core.gsc_matrix(small, xs), gsc_core.jacobian_norms(small, xs)
        net = gsc_core.mlp(64, 200, activation="tanh", seed=0)
        x = np.random.default_rng(0).normal(size=(256, 200))
        wide = gsc_core.Network([gsc_core.Activation("tanh")] * 40)
        xw = np.random.default_rng(0).normal(size=(1024, 1500))
        xa = np.random.default_rng(0).normal(size=(2000, 400))
        calls = {
            "gsc_matrix": lambda: gsc_core.gsc_matrix(net, x),
            "gsc_matrix again": lambda: gsc_core.gsc_matrix(net, x),
            "jacobian_norms": lambda: gsc_core.jacobian_norms(wide, xw),
            "analyze": lambda: gsc_core.analyze(wide, xa),  # 2000 Jacobians of 400 x 400 and their SVDs
            "theory.length_map": lambda: gsc_core.theory.length_map("tanh", 1.0, 0.0, 1.0, 10**8),  # never converges exactly
        }
        for name, call in calls.items():
            t0 = time.perf_counter()
            timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
            timer.start()
            try:
                call()
                print("NOT-INTERRUPTED", name.replace(" ", "_"), time.perf_counter() - t0)
            except KeyboardInterrupt:
                print("LATENCY", name.replace(" ", "_"), f"{time.perf_counter() - t0 - 0.5:.3f}")
            finally:
                timer.cancel()
                timer.join()
            after = gsc_core.gsc_matrix(small, xs), gsc_core.jacobian_norms(small, xs)
            assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after))
        print("USABLE")
        """
    )
    lines = [l.split() for l in out.stdout.splitlines()]
    latencies = {l[1]: float(l[2]) for l in lines if l[0] == "LATENCY"}
    assert not [l for l in lines if l[0] == "NOT-INTERRUPTED"], out.stdout
    assert len(latencies) == 5 and ["USABLE"] in lines, out.stdout
    assert max(latencies.values()) < 1.0 and min(latencies.values()) >= 0, latencies


# =============================================================================================
# 6. memory


def test_requests_beyond_memory_fail_fast_before_allocating():
    """A 7.2 TB jacobian (and other absurd requests) raise MemoryError at once, naming the size and
    what to use instead; the subprocess runs under a 6 GB address-space limit, so a request that
    did allocate would die there instead of taking the machine down."""
    out = run_python(
        """
        import resource, time
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        import numpy as np, gsc_core
        net = gsc_core.Network([gsc_core.Activation("tanh")])
        x = np.ones((10, 300_000))   # 24 MB of input, 7.2 TB of Jacobians
        cases = {
            "jacobian": lambda: net.jacobian(x),
            "jacobian_spectrum": lambda: gsc_core.jacobian_spectrum(net, x),
            "vjp with huge K": lambda: gsc_core.Network([gsc_core.Dense(np.ones((1000, 1000)))]).vjp(np.ones((1, 1000)), np.ones((1, 1000, 1000))),  # (K, 1000, 1000) weight gradients: 8 GB
            "gsc_matrix of 20000 points": lambda: gsc_core.gsc_matrix(gsc_core.Network([gsc_core.Activation("tanh")] * 20000), np.ones((64, 2))),
            "probes": lambda: gsc_core.gsc_matrix(net, x[:, :10], mode="batch", probes=2**50),
            "length_map": lambda: gsc_core.theory.length_map("tanh", 1.0, 0.0, 1.0, 10**15),
            "deep forward": lambda: gsc_core.Network([gsc_core.Activation("relu")] * 20_000).forward(np.ones((1000, 1000))),  # 160 GB of trace
        }
        for name, call in cases.items():
            t0 = time.perf_counter()
            try:
                call()
                print("NO-ERROR", name)
            except MemoryError as e:
                print("MEMORYERROR", f"{time.perf_counter() - t0:.3f}", name, "|", e)
        print("USABLE", gsc_core.jacobian_norms(net, x[:2, :5]).shape)
        """,
        timeout=120,
    )
    lines = out.stdout.splitlines()
    errors = [l for l in lines if l.startswith("MEMORYERROR")]
    assert len(errors) == 7 and "USABLE (2, 2)" in lines, out.stdout
    for line in errors:
        seconds = float(line.split()[1])
        assert seconds < 1.0, line
        assert re.search(r"needs about [\d.]+ (TB|GB)", line) and re.search("available memory|address-space limit", line), line
    jac = next(l for l in errors if " jacobian |" in l)
    assert "TB" in jac and "jacobian_norms" in jac, jac


def test_memory_budget_from_the_environment():
    """GSC_CORE_MAX_MEMORY sets the budget explicitly (e.g. for a container): requests above it
    fail with MemoryError naming it, requests below it run."""
    out = run_python(
        """
        import numpy as np, gsc_core
        net = gsc_core.mlp(4, 64, seed=0)
        x = np.random.default_rng(0).normal(size=(4000, 64))   # trace ~ 16 MB; Jacobians 4000 x 64 x 64 x 8 = 131 MB
        print("NORMS", gsc_core.jacobian_norms(net, x).shape)
        for name, call in {"jacobian": lambda: net.jacobian(x), "gsc_matrix": lambda: gsc_core.gsc_matrix(net, np.ones((20000, 64)))}.items():
            try:
                call()
                print("NO-ERROR", name)
            except MemoryError as e:
                print("MEMORYERROR", name, "|", e)
        """,
        env={"GSC_CORE_MAX_MEMORY": "64M"},
    )
    assert "NORMS (8, 4000)" in out.stdout, out.stdout
    errors = [l for l in out.stdout.splitlines() if l.startswith("MEMORYERROR")]
    assert len(errors) == 2 and all("GSC_CORE_MAX_MEMORY is 67.1 MB" in l for l in errors), out.stdout


def _peak_script(depth: int, width: int, batch: int, threads: int) -> str:
    return f"""
        import numpy as np, gsc_core
        def rss(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        gsc_core.set_num_threads({threads})
        net = gsc_core.mlp({depth}, {width}, activation="tanh", seed=0)
        x = np.random.default_rng(0).normal(size=({batch}, {width}))
        gsc_core.jacobian_norms(net, x[:2])      # warm up: pool, allocator
        base = rss("VmHWM")
        norms = gsc_core.jacobian_norms(net, x)
        widths = net.point_widths()               # mlp: every slot is a point
        slopes = sum(w for layer, w in zip(net.layers, widths[1:]) if isinstance(layer, gsc_core.Activation))
        print("PEAK", rss("VmHWM") - base, {batch} * (sum(widths) + slopes) * 8, norms.nbytes, int(norms.shape[0]))
    """


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("depth, width, batch", [(1000, 16, 256), (3, 512, 32), (60, 128, 128)], ids=["deep-narrow", "shallow-wide", "medium"])
def test_jacobian_norms_peak_memory_stays_within_its_documented_bound(depth, width, batch):
    """The bound of jacobian_norms' docstring: beyond what was held before, at most the forward
    trace with the activations' slopes + 3 x the (end+1, B) float64 result + 4 MiB per thread
    (+ 8 MiB of allocator slack); far below the B x d_end x sum(d_i) x 8 bytes the Jacobians
    would take."""
    threads = 2
    out = run_python(_peak_script(depth, width, batch, threads))
    peak, trace, result, points = (int(v) for v in out.stdout.split("PEAK")[1].split())
    bound = trace + 3 * points * batch * 8 + threads * (4 << 20) + (8 << 20)
    naive = batch * width * width * points * 8
    assert peak <= bound, f"peak {peak / 2**20:.1f} MiB > bound {bound / 2**20:.1f} MiB (trace {trace / 2**20:.1f} MiB)"
    assert bound < naive / 4


# =============================================================================================
# 7. internal errors and panics


@pytest.mark.parametrize(
    "kind, exc, message",
    [
        ("panic", RuntimeError, "internal error in gsc_core.*deliberate panic for testing"),
        ("pool_panic", RuntimeError, "internal error in gsc_core.*deliberate panic in a pool job"),
        ("internal", RuntimeError, "internal error in gsc_core.*deliberate internal error"),
        ("memory", MemoryError, "deliberately absurd test request"),
        ("nonsense", ValueError, "unknown kind"),
    ],
)
def test_forced_internal_errors_become_python_exceptions(kind, exc, message, restore_threads):
    net, mode = _shared_networks()["resnet-ln"]
    x = _inputs(1)
    before = _analysis(net, mode, x)
    for _ in range(3):  # repeatedly: the pool survives panics in its jobs
        with pytest.raises(exc, match=message):
            _core._panic_for_testing(kind)
    assert gsc_core.get_num_threads() == restore_threads
    assert_identical(_analysis(net, mode, x), before, f"after {kind}")


def test_a_panic_in_the_core_becomes_a_runtime_error():
    with pytest.raises(RuntimeError, match="internal error in gsc_core.*deliberate panic"):
        _core._panic_for_testing()
    # and the library still works afterwards
    assert gsc_core.gsc(gsc_core.mlp(2, 4), np.ones((2, 4))).shape == (4,)


def test_panics_never_abort_the_interpreter():
    """In a fresh interpreter (a build with panic=abort would die by SIGABRT here)."""
    out = run_python(
        """
        import gsc_core
        from gsc_core import _core
        for kind in ["panic", "pool_panic", "internal", "memory"] * 5:
            try:
                _core._panic_for_testing(kind)
            except (RuntimeError, MemoryError) as e:
                pass
        print("ALIVE", gsc_core.get_num_threads() >= 1)
        """
    )
    assert "ALIVE True" in out.stdout
