"""Shared fixtures and strategies for the gsc_core test suite.

Random networks are described by *choices* (layer kinds, widths, activations, flags) that come
either from Hypothesis (so failures shrink to a small network) or from a seeded NumPy generator (for
plain parametrised tests); the numbers inside (weights, inputs) always come from a NumPy generator
seeded by the case.

Hypothesis profiles: ``ci`` (default; deterministic, modest example counts so the whole suite runs
in well under three minutes on two cores), ``dev`` (random exploration), ``thorough`` (many
examples). Choose with ``HYPOTHESIS_PROFILE=dev pytest tests``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gsc_core  # noqa: E402
from reference import ACTIVATION_NAMES, RefNet  # noqa: E402

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=50, derandomize=True, print_blob=True, **_common)
settings.register_profile("dev", max_examples=60, **_common)
settings.register_profile("thorough", max_examples=500, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DTYPES = ("float64", "float32")
#: norm-wise relative tolerance of gsc_core against the reference, per dtype
RTOL = {"float64": 1e-10, "float32": 1e-4}
#: arrays whose norm is below FLOOR[dtype] x (the largest norm of their family) are compared
#: against that floor instead of their own norm (quantities that are zero up to cancellation,
#: e.g. the bias gradient of a Dense layer feeding a BatchNorm)
FLOOR = {"float64": 1e-4, "float32": 1e-2}

#: unit roundoff per dtype, and how results are allowed to exceed the effect of rounding noise
UNIT = {"float64": 2.0**-53, "float32": 2.0**-24}
COND_FACTOR = 30.0
#: cases whose conditioned tolerance would exceed this are too ill-conditioned to compare
MAX_RTOL = {"float64": 1e-7, "float32": 1e-2}

#: activations with a kink (or a jump in a higher derivative) at 0
KINKED = ("relu", "leaky_relu", "elu", "selu")
NORM_AFFINE = ("none", "weight", "bias", "both")


# ---------------------------------------------------------------------------------------------
# comparing arrays


def rel_err(actual: Any, expected: Any, floor: float = 0.0) -> float:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    scale = max(float(np.linalg.norm(e)), floor, 1e-300)
    return float(np.linalg.norm(a - e)) / scale


def assert_close(actual: Any, expected: Any, rtol: float, what: str = "", floor: float = 0.0) -> None:
    assert actual is not None, f"{what}: got None"
    a = np.asarray(actual)
    assert np.all(np.isfinite(a)), f"{what}: non-finite values"
    err = rel_err(actual, expected, floor)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.1e}"


def family_scale(arrays: Sequence[Optional[np.ndarray]]) -> float:
    norms = [float(np.linalg.norm(np.asarray(a, dtype=np.float64))) for a in arrays if a is not None]
    return max(norms, default=0.0)


def assert_list_close(actual: Sequence, expected: Sequence, dtype: str, what: str, rtol: Optional[float] = None, scale: float = 0.0) -> None:
    """Element-wise over a list of arrays (None where the reference has None). Arrays are compared
    norm-wise against max(own norm, FLOOR[dtype] * max(largest norm in the list, scale))."""
    rtol = RTOL[dtype] if rtol is None else rtol
    assert len(actual) == len(expected), f"{what}: {len(actual)} entries, expected {len(expected)}"
    floor = FLOOR[dtype] * max(family_scale(expected), scale)
    for k, (a, e) in enumerate(zip(actual, expected)):
        if e is None:
            assert a is None, f"{what}[{k}]: expected None, got {type(a).__name__}"
            continue
        assert_close(a, e, rtol, f"{what}[{k}]", floor)


def assert_gradients_close(actual: Any, expected: Any, dtype: str, what: str, forward_points: Sequence, rtol: Optional[float] = None) -> None:
    """Gradients (points, weights, biases) against expected ones. A parameter gradient is
    g^T x summed over the batch, so its natural scale (the floor for quantities that vanish up to
    cancellation, e.g. everything before a final non-affine BatchNorm under mse) is
    ||g|| * ||x||, bounded by the largest point gradient times the largest point."""
    assert_list_close(actual.points, expected.points, dtype, f"{what} points", rtol)
    scale = family_scale(expected.points) * (1.0 + family_scale(forward_points))
    assert_list_close(actual.weights, expected.weights, dtype, f"{what} weights", rtol, scale)
    assert_list_close(actual.biases, expected.biases, dtype, f"{what} biases", rtol, scale)


def flat(obj: Any) -> list:
    """Every array in a (nested) result: lists, tuples, Gradients-like objects; None skipped."""
    if obj is None:
        return []
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [a for item in obj for a in flat(item)]
    if hasattr(obj, "points") and hasattr(obj, "weights"):
        return flat(obj.points) + flat(obj.weights) + flat(obj.biases)
    return [np.asarray(obj, dtype=np.float64)]


def families(obj: Any) -> list:
    """The arrays of a (nested) result grouped into families that share a scale: a list of arrays
    is one family, and so is a Gradients-like object (points, weights, biases: a parameter gradient
    that vanishes up to cancellation is measured against the point gradients), a tuple or a list of
    results gives the families of its items."""
    if obj is None:
        return []
    if isinstance(obj, np.ndarray):
        return [[obj]]
    if hasattr(obj, "points") and hasattr(obj, "weights"):
        return [flat(obj)]
    if isinstance(obj, list) and all(a is None or isinstance(a, np.ndarray) for a in obj):
        return [flat(obj)]
    if isinstance(obj, (list, tuple)):
        return [fam for item in obj for fam in families(item)]
    return [[np.asarray(obj, dtype=np.float64)]]


def conditioned_rtol(dtype: str, layers: Sequence, compute: Callable[[RefNet], Any], draws: int = 2, base: Optional[float] = None) -> float:
    """RTOL[dtype] (or ``base``), raised to COND_FACTOR x how far rounding errors of the dtype's unit
    roundoff in every intermediate sum move the reference result of ``compute`` (see RefNet's
    ``noise``): ill-conditioned cases, e.g. a BatchNorm over samples that a two-wide LayerNorm has
    made nearly equal, lose digits in any implementation. Arrays are measured as in
    assert_list_close, against FLOOR[dtype] x the largest norm of their family."""
    exact = families(compute(RefNet(layers)))
    worst = 0.0
    for seed in range(draws):
        noisy = families(compute(RefNet(layers, noise=(UNIT[dtype], seed))))
        assert len(noisy) == len(exact)
        for fam_noisy, fam_exact in zip(noisy, exact):
            floor = FLOOR[dtype] * family_scale(fam_exact)
            for a, e in zip(fam_noisy, fam_exact):
                worst = max(worst, rel_err(a, e, floor))
    return max(RTOL[dtype] if base is None else base, COND_FACTOR * worst)


# ---------------------------------------------------------------------------------------------
# random networks


class Chooser:
    """Structural choices, from Hypothesis (`draw`) or from a NumPy generator."""

    def __init__(self, draw: Optional[Callable] = None, rng: Optional[np.random.Generator] = None) -> None:
        self.draw, self.rng = draw, rng

    def integer(self, lo: int, hi: int) -> int:
        if self.draw is not None:
            return self.draw(st.integers(lo, hi))
        return int(self.rng.integers(lo, hi + 1))

    def choice(self, options: Sequence) -> Any:
        if self.draw is not None:
            return self.draw(st.sampled_from(list(options)))
        return options[int(self.rng.integers(len(options)))]

    def boolean(self) -> bool:
        return bool(self.choice([False, True]))


@dataclass
class Config:
    max_layers: int = 6
    max_width: int = 7
    min_batch: int = 1
    max_batch: int = 6
    batchnorm: bool = True
    layernorm: bool = True
    residual: bool = True
    max_nesting: int = 2
    activations: Sequence[str] = ACTIVATION_NAMES
    #: scales of the inputs (repeated entries make a scale likelier)
    x_scales: Sequence[float] = (1.0, 1.0, 1.0, 0.01, 8.0)
    #: layer kinds and their weights (repeated entries make a kind likelier)
    kinds: Sequence[str] = ("dense", "dense", "activation", "activation", "layernorm", "batchnorm", "residual")


def make_dense(rng: np.random.Generator, d_in: int, d_out: int, bias: bool) -> gsc_core.Dense:
    gain = rng.uniform(0.6, 1.6)
    w = rng.normal(size=(d_out, d_in)) * gain / np.sqrt(d_in)
    b = rng.normal(scale=0.3, size=d_out) if bias else None
    return gsc_core.Dense(w, b)


def make_activation(choose: Chooser, name: str) -> gsc_core.Activation:
    if name == "leaky_relu":
        slope = choose.choice([None, 0.2, -0.3])
        return gsc_core.Activation(name) if slope is None else gsc_core.Activation(name, negative_slope=slope)
    if name == "elu":
        alpha = choose.choice([None, 0.5, 2.0])
        return gsc_core.Activation(name) if alpha is None else gsc_core.Activation(name, alpha=alpha)
    return gsc_core.Activation(name)


def make_norm(rng: np.random.Generator, kind: str, d: int, affine: str, eps: float = 1e-5):
    w = rng.normal(1.0, 0.3, size=d) if affine in ("weight", "both") else None
    b = rng.normal(0.0, 0.3, size=d) if affine in ("bias", "both") else None
    cls = gsc_core.LayerNorm if kind == "layernorm" else gsc_core.BatchNorm
    return cls(eps=eps, weight=w, bias=b)


def make_layer(choose: Chooser, rng: np.random.Generator, d: int, cfg: Config, nesting: int) -> tuple[Any, int]:
    kinds = [k for k in cfg.kinds if not (k == "batchnorm" and not cfg.batchnorm) and not (k == "layernorm" and not cfg.layernorm) and not (k == "residual" and (not cfg.residual or nesting >= cfg.max_nesting))]
    kind = choose.choice(kinds)
    if kind == "dense":
        d_out = choose.integer(1, cfg.max_width)
        return make_dense(rng, d, d_out, choose.boolean()), d_out
    if kind == "activation":
        return make_activation(choose, choose.choice(list(cfg.activations))), d
    if kind in ("layernorm", "batchnorm"):
        return make_norm(rng, kind, d, choose.choice(NORM_AFFINE), eps=choose.choice([1e-5, 1e-3])), d
    # residual
    n_body = choose.integer(1, 3)
    body, db = [], d
    for _ in range(n_body):
        layer, db = make_layer(choose, rng, db, cfg, nesting + 1)
        body.append(layer)
    shortcut = None
    if db != d or choose.boolean():
        shortcut = make_dense(rng, d, db, choose.boolean())
    alpha = choose.choice([1.0, 0.5, -0.7, 1.3])
    return gsc_core.Residual(body, alpha=alpha, shortcut=shortcut), db


@dataclass
class Case:
    """A random network (gsc_core layers, float64 arrays), an input and targets."""

    layers: list
    x: np.ndarray  # (B, d_0), float64 values exactly representable in `dtype`
    dtype: str
    y_mse: np.ndarray
    y_classes: np.ndarray
    seed: int

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def net(self, dtype: Optional[str] = None) -> gsc_core.Network:
        return gsc_core.Network(self.layers, dtype=dtype or self.dtype)

    def ref(self, net: Optional[gsc_core.Network] = None) -> RefNet:
        """The reference on exactly the parameters the network holds (rounded to its dtype)."""
        return RefNet((net or self.net()).layers)

    def rtol(self, compute: Callable[[RefNet], Any], net: Optional[gsc_core.Network] = None, base: Optional[float] = None) -> float:
        """The tolerance for comparing ``compute`` (a function of a RefNet) with gsc_core, rejecting
        (hypothesis.assume) cases too ill-conditioned for the dtype."""
        from hypothesis import assume

        rtol = conditioned_rtol(self.dtype, (net or self.net()).layers, compute, base=base)
        assume(rtol <= MAX_RTOL[self.dtype])
        return rtol

    def xin(self) -> np.ndarray:
        return self.x.astype(self.dtype)

    def rng(self, salt: int = 1) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def __repr__(self) -> str:
        return f"Case(dtype={self.dtype}, B={self.batch}, seed={self.seed}, layers={self.layers!r})"


def build_case(choose: Chooser, seed: int, cfg: Config, dtype: str) -> Case:
    rng = np.random.default_rng(seed)
    batch = choose.integer(cfg.min_batch, cfg.max_batch)
    d0 = choose.integer(1, cfg.max_width)
    n = choose.integer(1, cfg.max_layers)
    layers, d = [], d0
    for _ in range(n):
        layer, d = make_layer(choose, rng, d, cfg, 0)
        layers.append(layer)
    x_scale = choose.choice(cfg.x_scales)
    x = (x_scale * rng.normal(size=(batch, d0))).astype(dtype).astype(np.float64)
    y_mse = rng.normal(size=(batch, d)).astype(dtype).astype(np.float64)
    y_classes = rng.integers(0, d, size=batch)
    return Case(layers, x, dtype, y_mse, y_classes, seed)


@st.composite
def cases(draw, dtypes: Sequence[str] = DTYPES, **config: Any) -> Case:
    """Hypothesis strategy: a random network of every layer kind and activation, an input, targets."""
    cfg = Config(**config)
    dtype = draw(st.sampled_from(list(dtypes)))
    seed = draw(st.integers(0, 2**32 - 1))
    return build_case(Chooser(draw=draw), seed, cfg, dtype)


def random_case(seed: int, dtype: str = "float64", **config: Any) -> Case:
    """The same networks without Hypothesis (structure from the seed as well)."""
    return build_case(Chooser(rng=np.random.default_rng([seed, 99])), seed, Config(**config), dtype)


# ---------------------------------------------------------------------------------------------
# walking layer trees


def dense_layers(layers: Sequence) -> list:
    """Every Dense, depth-first: a Residual's body, then its shortcut."""
    out = []
    for layer in layers:
        if isinstance(layer, gsc_core.Dense):
            out.append(layer)
        elif isinstance(layer, gsc_core.Residual):
            out.extend(dense_layers(layer.body))
            if layer.shortcut is not None:
                out.append(layer.shortcut)
    return out


def has_batchnorm(layers: Sequence) -> bool:
    for layer in layers:
        if isinstance(layer, gsc_core.BatchNorm):
            return True
        if isinstance(layer, gsc_core.Residual) and has_batchnorm(layer.body):
            return True
    return False


def map_dense(layers: Sequence, fn: Callable[[int, gsc_core.Dense], gsc_core.Dense]) -> list:
    """A copy of the layer tree with the k-th Dense (depth-first) replaced by fn(k, dense)."""
    counter = [0]

    def walk(layer):
        if isinstance(layer, gsc_core.Dense):
            k = counter[0]
            counter[0] += 1
            return fn(k, layer)
        if isinstance(layer, gsc_core.Residual):
            body = [walk(inner) for inner in layer.body]
            shortcut = None if layer.shortcut is None else walk(layer.shortcut)
            return gsc_core.Residual(body, alpha=layer.alpha, shortcut=shortcut)
        return layer

    return [walk(layer) for layer in layers]


def activation_names(layers: Sequence) -> list:
    out = []
    for layer in layers:
        if isinstance(layer, gsc_core.Activation):
            out.append(layer.name)
        elif isinstance(layer, gsc_core.Residual):
            out.extend(activation_names(layer.body))
    return out


def smoothness_margins(case: Case, x: Optional[np.ndarray] = None) -> tuple[float, float]:
    """(smallest |input| of a kinked activation, smallest std of a LayerNorm/BatchNorm input over a
    group of more than one element): how far the network is from where finite differences fail."""
    ref = case.ref()
    points, caches, pre = ref._run(case.x if x is None else x)
    kink = np.inf
    for name, z in zip(activation_names(case.layers), pre):
        if name in KINKED and z.size:
            kink = min(kink, float(np.abs(z).min()))
    std = np.inf

    def visit(layer, cache):
        nonlocal std
        from reference import RNorm, RResidual

        if isinstance(layer, RNorm):
            xhat, s = cache.extra
            group = cache.x.shape[layer.axis]
            if group > 1:
                std = min(std, float(np.sqrt(np.maximum(s * s - layer.eps, 0.0)).min()))
        elif isinstance(layer, RResidual):
            for inner, c in zip(layer.body, cache.inner):
                visit(inner, c)

    for layer, cache in zip(ref.layers, caches):
        visit(layer, cache)
    return kink, std


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(params=DTYPES)
def dtype(request) -> str:
    return request.param


@pytest.fixture
def restore_threads():
    before = gsc_core.get_num_threads()
    yield before
    gsc_core.set_num_threads(before)
