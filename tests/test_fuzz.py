"""Reliability battery, category 1 (issue #6): hostile inputs, by fuzzing the whole public API.

Hypothesis draws a random network (every layer kind and activation, both dtypes) and then a
sequence of calls to public functions — ``Network`` methods, ``gsc``, ``gsc_per_sample``,
``gsc_matrix``, ``explosion_rate``, ``preactivation_stats``, ``dilution``, ``jacobian_norms``,
``jacobian_spectrum``, ``analyze`` (and the report's ``summary``/``to_dict``/``verdict``),
``spectrum_summary``, ``Network``/layer construction, the ``mlp``/``resnet`` builders and the
``theory`` functions — each argument either valid (possibly in another dtype or memory layout:
float16, integers, bool, Fortran order, strided and negatively strided views, lists, values of
magnitude 1e300/1e30 or 1e-300) or hostile (wrong shapes and ndim, widths that do not chain,
unknown names, NaN/Inf in inputs and weights, empty batches, zero widths, complex, object, string,
bytes, datetime arrays, out-of-range and non-integer indices, absurd counts).

Every call must return or raise one of the documented exceptions (``ValueError``, ``TypeError``,
``MemoryError``); the only warning allowed is ``GSCWarning``. When every argument was valid, the
result must also be free of NaN except where the SPEC puts it (below the diagonal of
``gsc_matrix``, summaries reported by a ``GSCWarning``, undefined ratios 0/0), and a report's
``summary()`` never prints ``nan``. ``test_fuzz_in_a_subprocess`` runs another batch of examples in
a fresh interpreter and checks that it is never killed by a signal (abort, segfault, OOM kill).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import warnings
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

import gsc_core
from conftest import cases, has_batchnorm

ALLOWED = (ValueError, TypeError, MemoryError)
HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------------------------
# arguments


def _layout(draw, a: np.ndarray) -> np.ndarray:
    """The same values in another memory layout."""
    kind = draw(st.sampled_from(["fortran", "strided", "reversed"]))
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "strided" and a.ndim == 2:
        big = np.zeros((a.shape[0] * 2, a.shape[1] * 3), dtype=a.dtype)
        big[::2, 1::3] = a
        return big[::2, 1::3]
    return np.ascontiguousarray(a[::-1, ...])[::-1, ...]


def array_arg(draw, good: np.ndarray, dtype: str, *, batch_axis: bool = True) -> tuple[Any, bool]:
    """``good`` (a valid ``(B, ...)`` array), valid in another guise, or hostile: ``(value, valid)``."""
    big = 1e300 if dtype == "float64" else 1e30
    if draw(st.integers(0, 3)):  # valid three times in four
        kind = draw(st.sampled_from(["same", "same", "same", "layout", "float16", "int", "bool", "uint8", "other_float", "list", "huge", "tiny", "zeros", "constant"]))
    else:
        kind = draw(st.sampled_from(["nan", "inf", "-inf", "empty", "zero_width", "wider", "narrower", "1d", "3d", "0d",
                                     "complex", "object", "str", "bytes", "datetime", "none", "string", "scalar"]))
    a = good.copy()
    if kind == "same":
        return a, True
    if kind == "layout":
        return _layout(draw, a), True
    if kind == "float16":
        return a.astype(np.float16), True
    if kind == "int":
        return np.round(a).astype(np.int64), True
    if kind == "bool":
        return a > 0, True
    if kind == "uint8":
        return np.abs(np.round(a)).astype(np.uint8), True
    if kind == "other_float":
        return a.astype(np.float32 if dtype == "float64" else np.float64), True
    if kind == "list":
        return a.tolist(), True
    if kind == "huge":
        return a * big, True
    if kind == "tiny":
        return a * 1e-300, True
    if kind == "zeros":
        return np.zeros_like(a), True
    if kind == "constant":
        return np.full_like(a, 0.3), True
    if kind in ("nan", "inf", "-inf") and a.size:
        flat = a.reshape(-1).copy()
        flat[draw(st.integers(0, flat.size - 1))] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
        return flat.reshape(a.shape), False
    if kind == "empty" and batch_axis:
        return a[:0], False
    if kind == "zero_width":
        return a[..., :0], False
    if kind == "wider":
        return np.concatenate([a, a[..., :1]], axis=-1), False
    if kind == "narrower" and a.shape[-1] > 1:
        return a[..., 1:], False
    if kind == "1d":
        return a.reshape(-1), False
    if kind == "3d":
        return a[None], False
    if kind == "0d":
        return np.float64(1.0), False
    if kind == "complex":
        return a.astype(complex), False
    if kind == "object":
        return a.astype(object), False
    if kind == "str":
        return a.astype(str), False
    if kind == "bytes":
        return a.astype(str).astype(bytes), False
    if kind == "datetime":
        return np.zeros(a.shape, dtype="datetime64[s]"), False
    if kind == "none":
        return None, False
    if kind == "string":
        return "x", False
    if kind == "scalar":
        return 3.0, False
    return a, True


def index_arg(draw, n: int) -> tuple[Any, bool]:
    """A point index of an N-layer network: valid (``-N-1..N``, Python or NumPy ints) or not."""
    if draw(st.integers(0, 3)):
        p = draw(st.integers(-n - 1, n))
        return (np.int64(p) if draw(st.booleans()) else p), True
    return draw(st.sampled_from([n + 1, -n - 2, 10**30, -(10**30), 2**63, 1.0, "1", None, True, np.float64(0.0), [0]])), False


def count_arg(draw, good: list, bad: list) -> tuple[Any, bool]:
    if draw(st.integers(0, 3)):
        return draw(st.sampled_from(good)), True
    return draw(st.sampled_from(bad)), False


def targets(draw, case, net, loss: str) -> tuple[Any, bool]:
    b = case.batch
    if loss == "mse":
        if draw(st.booleans()):
            return None, True
        return array_arg(draw, case.y_mse.astype(net.dtype), net.dtype.name)
    good = case.y_classes.copy()
    if draw(st.integers(0, 3)):
        kind = draw(st.sampled_from(["good", "good", "float", "list"]))
    else:
        kind = draw(st.sampled_from(["out_of_range", "negative", "fraction", "nan", "2d", "short", "none", "str"]))
    if kind == "good":
        return good, True
    if kind == "float":
        return good.astype(np.float64), True
    if kind == "list":
        return good.tolist(), True
    if kind == "out_of_range":
        bad = good.copy()
        bad[0] = 10**6
        return bad, False
    if kind == "negative":
        bad = good.copy()
        bad[-1] = -1
        return bad, False
    if kind == "fraction":
        return good + 0.5, False
    if kind == "nan":
        return np.full(b, np.nan), False
    if kind == "2d":
        return good[:, None], False
    if kind == "short":
        return good[:-1], False
    if kind == "none":
        return None, False
    return good.astype(str), False


# ---------------------------------------------------------------------------------------------
# checks on results of valid calls


def no_nan(obj: Any, what: str) -> None:
    for a in _arrays(obj):
        assert not np.isnan(a).any(), f"{what}: NaN in a result of a valid call"


def _arrays(obj: Any) -> list:
    if obj is None:
        return []
    if isinstance(obj, np.ndarray):
        return [np.asarray(obj, dtype=np.float64)] if obj.dtype.kind in "fiub" else []
    if isinstance(obj, (float, np.floating)):
        return [np.asarray(obj, dtype=np.float64)]
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in _arrays(v)]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in _arrays(v)]
    if hasattr(obj, "points"):
        return _arrays(obj.points) + _arrays(getattr(obj, "weights", None)) + _arrays(getattr(obj, "biases", None))
    return []


NAN_WORD = re.compile(r"\bnan\b", re.IGNORECASE)


def check_report(report: gsc_core.Report, warned: bool, net) -> None:
    assert report.verdict() in ("explodes", "vanishes", "collapses", "healthy", "undefined")
    text = report.summary()
    assert not NAN_WORD.search(text), f"the summary prints NaN:\n{text}"
    json.dumps(report.to_dict())
    repr(report)
    no_nan([report.losses, report.activation_norm, report.gradient_norm, report.pre_activation_std, report.sign_diversity, report.spectrum], "analyze")
    if report.spectrum_summary is not None:
        no_nan(report.spectrum_summary, "analyze spectrum summary")
    if not warned:
        no_nan(report.gsc, "analyze gsc without a GSCWarning")
    if np.isnan(report.explosion_rate):
        assert report.verdict() in ("undefined", "collapses")


def check_valid_result(name: str, out: Any, warned: bool, net) -> None:
    """Where a valid call may legitimately give NaN (SPEC §3), and nowhere else."""
    if name in ("forward", "loss_and_grad", "vjp", "jvp", "jacobian", "jacobian_norms", "jacobian_spectrum", "preactivation_stats"):
        no_nan(out, name)
    elif name == "gsc" and not warned:
        no_nan(out, "gsc without a GSCWarning")
    elif name == "gsc_matrix":
        m = out[0] if isinstance(out, tuple) else out
        upper = m[np.triu_indices(m.shape[0], 1)]
        if not warned:
            assert not np.isnan(upper).any(), "gsc_matrix: NaN above the diagonal without a GSCWarning"
        assert set(np.unique(np.diag(m)).tolist()) <= {0.0, 1.0}
    elif name == "analyze":
        check_report(out, warned, net)


# ---------------------------------------------------------------------------------------------
# the calls


def _mode(draw) -> tuple[str, bool]:
    return count_arg(draw, ["sample", "batch"], ["Sample", "nope", None, 3])


def _loss(draw) -> tuple[str, bool]:
    return count_arg(draw, ["mse", "cross_entropy"], ["hinge", "MSE", None, 1.5])


def call_network_method(draw, case, net) -> tuple[str, Callable[[], Any], bool]:
    n = len(net)
    x, ok = array_arg(draw, case.xin(), case.dtype)
    widths = net.point_widths(case.x.shape[1])
    name = draw(st.sampled_from(["forward", "loss_and_grad", "vjp", "jvp", "jacobian"]))
    if name == "forward":
        return name, lambda: net.forward(x), ok
    if name == "loss_and_grad":
        loss, ok_l = _loss(draw)
        y, ok_y = targets(draw, case, net, loss if loss in ("mse", "cross_entropy") else "mse")
        return name, lambda: net.loss_and_grad(x, y, loss), ok and ok_l and ok_y
    if name in ("vjp", "jvp"):
        point, ok_p = index_arg(draw, n)
        p = int(point) if ok_p else draw(st.integers(0, n))
        k = draw(st.sampled_from([None, 1, 3]))
        shape = (case.batch, widths[p]) if k is None else (case.batch, k, widths[p])
        good = np.random.default_rng(case.seed).normal(size=shape).astype(net.dtype)
        block, ok_b = array_arg(draw, good, case.dtype)
        method = net.vjp if name == "vjp" else net.jvp
        return name, lambda: method(x, block, point=point), ok and ok_p and ok_b
    start, ok_s = index_arg(draw, n)
    end, ok_e = index_arg(draw, n)
    valid = ok and ok_s and ok_e and not has_batchnorm(case.layers)
    if valid:
        s = int(start) % (n + 1)
        e = int(end) % (n + 1)
        valid = s <= e
    return name, lambda: net.jacobian(x, start, end), valid


def call_analysis(draw, case, net) -> tuple[str, Callable[[], Any], bool]:
    n = len(net)
    x, ok = array_arg(draw, case.xin(), case.dtype)
    bn = has_batchnorm(case.layers)
    name = draw(st.sampled_from(["gsc", "gsc_per_sample", "gsc_matrix", "explosion_rate", "preactivation_stats", "dilution",
                                 "jacobian_norms", "jacobian_spectrum", "analyze"]))
    if name in ("gsc", "explosion_rate", "analyze"):
        loss, ok_l = _loss(draw)
        mode, ok_m = _mode(draw)
        y, ok_y = targets(draw, case, net, loss if loss in ("mse", "cross_entropy") else "mse")
        valid = ok and ok_l and ok_m and ok_y and not (bn and mode == "sample")
        if name == "gsc":
            log = draw(st.booleans())
            return name, lambda: gsc_core.gsc(net, x, y, loss, mode, log=log), valid
        if name == "explosion_rate":
            return name, lambda: gsc_core.explosion_rate(net, x, y, loss, mode), valid
        spectrum = draw(st.booleans())
        return name, lambda: gsc_core.analyze(net, x, y, loss, mode, spectrum=spectrum), valid
    if name == "gsc_per_sample":
        loss, ok_l = _loss(draw)
        y, ok_y = targets(draw, case, net, loss if loss in ("mse", "cross_entropy") else "mse")
        return name, lambda: gsc_core.gsc_per_sample(net, x, y, loss), ok and ok_l and ok_y and not bn
    if name == "gsc_matrix":
        mode, ok_m = _mode(draw)
        probes, ok_p = count_arg(draw, [None, 1, 4], [0, -1, 2.5, "3", True, 10**30])
        seed, ok_s = count_arg(draw, [0, 7], [-1, 1.5, None, 2**70])
        stderr, log = draw(st.booleans()), draw(st.booleans())
        valid = ok and ok_m and ok_p and ok_s and not (bn and (mode == "sample" or probes is None))
        return name, lambda: gsc_core.gsc_matrix(net, x, mode, probes, seed, stderr, log=log), valid
    if name in ("preactivation_stats", "dilution"):
        fn = getattr(gsc_core, name)
        return name, lambda: fn(net, x), ok
    if name == "jacobian_norms":
        end, ok_e = index_arg(draw, n)
        return name, lambda: gsc_core.jacobian_norms(net, x, end), ok and ok_e and not bn
    start, ok_s = index_arg(draw, n)
    end, ok_e = index_arg(draw, n)
    valid = ok and ok_s and ok_e and not bn and int(start) % (n + 1) <= int(end) % (n + 1)
    return name, lambda: gsc_core.jacobian_spectrum(net, x, start, end), valid


def call_construction(draw, case, net) -> tuple[str, Callable[[], Any], bool]:
    """Networks and layers from hostile parts."""
    rng = np.random.default_rng(case.seed)
    d = case.x.shape[1]
    w, _ = array_arg(draw, rng.normal(size=(3, d)), case.dtype, batch_axis=False)
    b, _ = array_arg(draw, rng.normal(size=(3,)), case.dtype, batch_axis=False)
    kind = draw(st.sampled_from(["dense", "norm", "activation", "residual", "chain", "dtype", "not_layers", "from_arrays", "paper", "nested"]))
    if kind == "from_arrays":
        w2, _ = array_arg(draw, rng.normal(size=(2, 3)), case.dtype, batch_axis=False)
        weights = draw(st.sampled_from([[w], [w, w2], [w2, w], w, None, [], [None], "w"]))
        biases = draw(st.sampled_from([None, [b], [b, None], [None, None], b, "b"]))
        act = draw(st.sampled_from(["relu", ["tanh"], [], ["relu", "relu"], "swish", 3, None]))
        layout = draw(st.sampled_from(["out_in", "in_out", "weird", None]))
        dtype = draw(st.sampled_from(["float64", "float32", "float16"]))
        return "Network.from_arrays", lambda: gsc_core.Network.from_arrays(weights, biases, activation=act, dtype=dtype, layout=layout).forward(case.xin()), False
    if kind == "paper":
        name = draw(st.sampled_from(list(gsc_core.architectures.ARCHITECTURES) + ["nope", None, ["ReLU"]]))
        depth = draw(st.sampled_from([1, 2, 5, 0, -3, 2.0, True, None]))
        width = draw(st.sampled_from([2, 4, 0, -1, 3.5]))
        return "paper_network", lambda: gsc_core.architectures.paper_network(name, depth=depth, width=width, seed=case.seed % 7), False
    if kind == "nested":
        levels = draw(st.sampled_from([1, 3, 100, 101, 400]))
        layer = gsc_core.Activation("tanh")
        for _ in range(levels):
            layer = gsc_core.Residual([layer], alpha=0.5)
        return "nested Residual", lambda: gsc_core.Network([layer]).forward(case.xin()), False
    if kind == "dense":
        return "Network(Dense)", lambda: gsc_core.Network([gsc_core.Dense(w, b), gsc_core.Activation("relu")], dtype=case.dtype).forward(case.xin()), False
    if kind == "norm":
        cls = draw(st.sampled_from([gsc_core.LayerNorm, gsc_core.BatchNorm]))
        eps = draw(st.sampled_from([1e-5, 0.0, -1.0, np.nan, np.inf, "1e-5", None, True, 1e300]))
        return "Network(norm)", lambda: gsc_core.Network([cls(eps=eps, weight=b, bias=None)]).forward(case.xin()[:, :3] if d >= 3 else case.xin()), False
    if kind == "activation":
        name = draw(st.sampled_from(["relu", "RELU", "swish", "", None, 3, "elu"]))
        params = draw(st.sampled_from([{}, {"alpha": 0.5}, {"alpha": np.nan}, {"alpha": "a"}, {"negative_slope": 0.1}, {"alpha": True}, {"alpha": 1e300}]))
        return "Activation", lambda: gsc_core.Network([gsc_core.Activation(name, **params)]).forward(case.xin()), False
    if kind == "residual":
        alpha = draw(st.sampled_from([1.0, 0.0, -2.0, np.nan, np.inf, "1", None, 1e300]))
        body = draw(st.sampled_from(["dense", "empty", "bad_width", "not_layer"]))
        layers = {"dense": [gsc_core.Dense(np.eye(d))], "empty": [], "bad_width": [gsc_core.Dense(np.ones((d + 1, d)))], "not_layer": [np.eye(d)]}[body]
        return "Residual", lambda: gsc_core.Network([gsc_core.Residual(layers, alpha=alpha)]).forward(case.xin()), False
    if kind == "chain":
        return "Network(chain)", lambda: gsc_core.Network([gsc_core.Dense(np.ones((3, d))), gsc_core.Dense(np.ones((2, 4)))]), False
    if kind == "dtype":
        dt = draw(st.sampled_from(["float16", "int32", "complex128", "banana", None, np.float32, "float32"]))
        return "Network(dtype)", lambda: gsc_core.Network(case.layers, dtype=dt), False
    return "Network(not layers)", lambda: gsc_core.Network(draw(st.sampled_from([None, 3, "dense", [None], [np.eye(2)], gsc_core.Dense(np.eye(2))]))), False


def call_builder(draw, case, net) -> tuple[str, Callable[[], Any], bool]:
    ints = [1, 2, 0, -1, 2.5, "3", None, True, np.int64(2)]
    depth, width = draw(st.sampled_from(ints)), draw(st.sampled_from(ints[:1] + [3, 4] + ints[1:]))
    kw = {}
    for key, pool in {
        "activation": ["relu", "tanh", "selu", "swish", None, 3],
        "norm": [None, "layer", "batch", "group", 1],
        "init": ["he", "lecun", "orthogonal", "looks_linear", "pytorch_default", "xavier", None],
        "seed": [0, 5, -1, 1.5, None, 2**70],
        "dtype": ["float64", "float32", "float16", "x"],
    }.items():
        if draw(st.booleans()):
            kw[key] = draw(st.sampled_from(pool))
    if draw(st.booleans()):
        sigma_w = draw(st.sampled_from([1.0, 0.0, -1.0, np.nan, np.inf, 1e300, "2"]))
        return "mlp", lambda: gsc_core.mlp(depth, width, sigma_w=sigma_w, **kw), False
    alpha = draw(st.sampled_from([1.0, 0.5, np.nan, -1.0]))
    return "resnet", lambda: gsc_core.resnet(depth, width, alpha=alpha, **kw), False


def call_theory(draw, case, net) -> tuple[str, Callable[[], Any], bool]:
    from gsc_core import theory

    act = draw(st.sampled_from(["tanh", "relu", "selu", "gelu", "sin", "softplus", "swish", None, 3, gsc_core.Activation("leaky_relu", negative_slope=0.2)]))
    real = [0.0, 0.5, 1.0, 2.0, 1e-300, 1e300, -1.0, np.nan, np.inf, "1", None, True, np.float32(1.5), np.array(1.0), np.array([1.0])]
    sw, sb, q = draw(st.sampled_from(real)), draw(st.sampled_from(real)), draw(st.sampled_from(real))
    c = draw(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 1.5, np.nan, "0"]))
    layers = draw(st.sampled_from([0, 1, 5, -1, 2.5, None, 10**15]))
    name = draw(st.sampled_from(["length_map", "fixed_point", "chi1", "edge_of_chaos", "mean_field", "depth_scales", "correlation_map",
                                 "gaussian_expectations", "bivariate_expectations", "chi1_map", "correlation_fixed_point"]))
    calls = {
        "length_map": lambda: theory.length_map(act, sw, sb, q, layers),
        "chi1_map": lambda: theory.chi1_map(act, sw, sb, q, layers),
        "fixed_point": lambda: theory.fixed_point(act, sw, sb, q0=q),
        "chi1": lambda: theory.chi1(act, sw, sb, q0=q),
        "edge_of_chaos": lambda: theory.edge_of_chaos(act, sb, q0=q),
        "mean_field": lambda: theory.mean_field(act, sw, sb, q0=q),
        "depth_scales": lambda: theory.depth_scales(act, sw, sb, q0=q),
        "correlation_fixed_point": lambda: theory.correlation_fixed_point(act, sw, sb, q0=q),
        "correlation_map": lambda: theory.correlation_map(act, sw, sb, c, q=q),
        "gaussian_expectations": lambda: theory.gaussian_expectations(act, q),
        "bivariate_expectations": lambda: theory.bivariate_expectations(act, q, c),
    }
    return f"theory.{name}", calls[name], False


def call_spectrum_summary(draw, case, net) -> tuple[str, Callable[[], Any], bool]:
    good = np.sort(np.abs(np.random.default_rng(case.seed).normal(size=(case.batch, 3))), axis=1)[:, ::-1]
    s, _ = array_arg(draw, good, "float64")
    return "spectrum_summary", lambda: gsc_core.spectrum_summary(s), False


CALLS = [call_network_method, call_network_method, call_analysis, call_analysis, call_analysis, call_construction, call_builder, call_theory, call_spectrum_summary]


def run_call(name: str, fn: Callable[[], Any], valid: bool, net) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
            if name == "analyze":
                out.summary(), out.to_dict(), out.verdict()
        except ALLOWED as e:
            assert str(e), f"{name}: {type(e).__name__} without a message"
            event(f"{name}: {'valid' if valid else 'hostile'} -> {type(e).__name__}")
            return
        finally:
            others = [w for w in caught if not issubclass(w.category, gsc_core.GSCWarning)]
            assert not others, f"{name}: unexpected warnings {[(w.category.__name__, str(w.message)) for w in others]}"
    event(f"{name}: {'valid' if valid else 'hostile'} -> result")
    if valid:
        check_valid_result(name, out, any(issubclass(w.category, gsc_core.GSCWarning) for w in caught), net)


@settings(max_examples=int(os.environ.get("GSC_FUZZ_EXAMPLES", "300")), database=None)
@given(cases(max_layers=4, max_width=5, max_batch=4), st.data())
def test_public_api_survives_hostile_calls(case, data):
    net = case.net()
    for step in range(data.draw(st.integers(3, 8), label="calls")):
        maker = data.draw(st.sampled_from(CALLS), label=f"call {step}")
        name, fn, valid = maker(data.draw, case, net)
        note(f"call {step}: {name} (valid={valid})")
        run_call(name, fn, valid, net)
    # and the network still computes what it did
    np.testing.assert_array_equal(net.forward(case.xin()).output, case.net().forward(case.xin()).output)


@pytest.mark.parametrize("n", [0, -1, 10**6, 10**30, 2.0, "2", None, True])
def test_set_num_threads_rejects_hostile_counts(n, restore_threads):
    with pytest.raises((ValueError, TypeError)):
        gsc_core.set_num_threads(n)
    assert gsc_core.get_num_threads() == restore_threads


@pytest.mark.skipif(sys.platform == "win32", reason="signals are POSIX")
def test_fuzz_in_a_subprocess():
    """Another batch of fuzz examples (a different seed) in a fresh interpreter: it must end
    normally, never by a signal (SIGABRT from a Rust abort, SIGSEGV, SIGKILL from the OOM killer)."""
    env = dict(os.environ, HYPOTHESIS_PROFILE="dev", GSC_FUZZ_EXAMPLES="300", PYTHONFAULTHANDLER="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--hypothesis-seed=20240606",
           os.path.join(HERE, "test_fuzz.py"), "-k", "hostile_calls"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(HERE), env=env)
    if out.returncode < 0:
        pytest.fail(f"the fuzz subprocess was killed by {signal.Signals(-out.returncode).name}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-3000:]
    assert "1 passed" in out.stdout
