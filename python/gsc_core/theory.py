"""Mean-field theory beside the measurement (SPEC §6).

Random networks with weights ``N(0, sigma_w2 / fan_in)`` and biases ``N(0, sigma_b2)``
(Poole et al. 2016, Schoenholz et al. 2017, Pennington et al. 2017). In the wide limit the
pre-activations of layer ``l`` are Gaussian with variance ``q^l``, and

* the **length map** ``q^{l+1} = sigma_w2 * E_z[phi(sqrt(q^l) z)^2] + sigma_b2`` (``z ~ N(0, 1)``);
  the first layer acts on the input: ``q^1 = sigma_w2 * q0 + sigma_b2`` with
  ``q0 = ||x||^2 / d_in``, the mean squared input per feature. So ``sqrt(q^l)`` predicts the
  pre-activation std of the l-th ``Activation`` layer of :func:`gsc_core.mlp`, whose first
  ``Dense`` acts on the raw input;
* ``q*``, the fixed point the length map converges to from ``q^1``;
* ``chi_1 = sigma_w2 * E[phi'(sqrt(q*) z)^2]``: squared gradients grow by about ``chi_1`` per layer,
  the GSC by about ``sqrt(chi_1)``, the mean squared singular value of the input-output Jacobian of
  ``L`` layers by about ``chi_1^L``;
* the correlation map ``c' = (sigma_w2 * E[phi(u1) phi(u2)] + sigma_b2) / q*`` (``u1, u2`` Gaussian
  with variances ``q*`` and correlation ``c``) and its stable fixed point ``c*``: 1 in the ordered
  phase (``chi_1 <= 1``), below 1 in the chaotic phase;
* depth scales ``xi_q = -1/ln chi_q``, ``xi_c = -1/ln chi_c``, ``xi_grad = -1/ln chi_1`` with
  ``chi_q = sigma_w2 E[phi'(u)^2 + phi(u) phi''(u)]`` (the slope of the length map at ``q*``) and
  ``chi_c = sigma_w2 E[phi'(u1) phi'(u2)]`` at ``c*`` (the slope of the correlation map). A depth
  scale is ``inf`` at criticality (``chi = 1``) and negative when ``chi > 1``: the quantity then
  grows by ``e`` every ``|xi|`` layers instead of decaying;
* the **edge of chaos**: the ``sigma_w2`` with ``chi_1 = 1`` for a given ``sigma_b2``.

Gaussian expectations are exact to about 1e-13 (1e-10 for the two-dimensional ones): closed forms
for identity, relu, leaky_relu (arc-cosine kernels) and sin, otherwise adaptive Gauss–Kronrod
quadrature on the two half-lines ``z < 0`` and ``z > 0`` separately, so kinks (relu-like
activations, elu, selu: always at 0) never fall inside a panel.

``activation`` is a name (``"tanh"``) or a :class:`gsc_core.Activation` (for parameters, e.g.
``Activation("leaky_relu", negative_slope=0.2)``).

Degenerate cases (see ``fixed_point``): ``q*`` may be ``0`` (e.g. tanh or relu without bias in the
ordered phase) or ``inf`` (the length map diverges: activations that grow linearly, e.g. relu with
``sigma_w2 > 2``); quantities "at ``q*``" are then the limits ``q -> 0+`` or ``q -> inf``.

>>> from gsc_core import theory
>>> round(theory.fixed_point("tanh", 2.5, 0.05), 5), round(theory.chi1("tanh", 2.5, 0.05), 5)
(1.06396, 1.13352)
>>> round(theory.chi1("selu", 1.0, 0.0), 6)
1.071575
>>> theory.chi1("relu", 3.0, 0.1)
1.5
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Optional, Union

import numpy as np

from . import _core
from .layers import Activation

__all__ = [
    "bivariate_expectations",
    "chi1",
    "chi1_map",
    "correlation_fixed_point",
    "correlation_map",
    "depth_scales",
    "edge_of_chaos",
    "fixed_point",
    "gaussian_expectations",
    "length_map",
    "mean_field",
]

ActivationLike = Union[str, Activation]


def _activation(activation: Any) -> tuple[str, list[tuple[str, float]]]:
    """``(name, [(param, value), ...])`` from a name or an Activation (validated as gsc_core.Activation)."""
    if isinstance(activation, str):
        act = Activation(activation)
    elif hasattr(activation, "name") and hasattr(activation, "params"):
        act = activation if isinstance(activation, Activation) else Activation(activation.name, **dict(activation.params))
    else:
        raise TypeError(f"activation must be a name or a gsc_core.Activation, got {activation!r}")
    return act.name, [(str(k), float(v)) for k, v in act.params.items()]


def _real(value: Any, name: str, *, variance: bool = True) -> float:
    """A finite real number (non-negative if ``variance``), as a float."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if variance and v < 0:
        raise ValueError(f"{name} must be non-negative (it is a variance), got {value!r}")
    return v


def _count(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if n < 0:
        raise ValueError(f"{name} must be non-negative, got {n}")
    return n


def length_map(activation: ActivationLike, sigma_w2: float, sigma_b2: float, q0: float, layers: int) -> np.ndarray:
    """The pre-activation variances ``q^1, ..., q^layers`` (shape ``(layers,)``).

    ``q0`` is the mean squared input per feature, ``||x||^2 / d_in``; ``out[0] = q^1 =
    sigma_w2 * q0 + sigma_b2`` (the first Dense acts on the input) and ``out[l] =
    sigma_w2 * E[phi(sqrt(out[l-1]) z)^2] + sigma_b2``. So ``np.sqrt(out[l - 1])`` predicts the
    pre-activation std of the l-th Activation layer of an MLP. A diverging map reaches ``inf``.

    >>> from gsc_core import theory
    >>> theory.length_map("relu", 2.0, 0.0, 1.0, 3)
    array([2., 2., 2.])
    >>> round(float(theory.length_map("tanh", 2.5, 0.05, 1.0, 40)[-1]), 5)
    1.06396
    """
    name, params = _activation(activation)
    return _core.theory_length_map(
        name, params, _real(sigma_w2, "sigma_w2"), _real(sigma_b2, "sigma_b2"), _real(q0, "q0"), _count(layers, "layers")
    )


def fixed_point(activation: ActivationLike, sigma_w2: float, sigma_b2: float, *, q0: float = 1.0) -> float:
    """``q*``, the fixed point of the length map reached from ``q^1 = sigma_w2 * q0 + sigma_b2``.

    The length map is nondecreasing for every supported activation, so the sequence ``q^l`` is
    monotone and ``q*`` is its limit; it depends on ``q0`` (default 1: unit mean squared input)
    only when the map has several attracting fixed points or diverges from some starting points.
    Returns ``0.0`` when the map converges to 0 (e.g. ``tanh`` or ``relu`` with ``sigma_b2 = 0`` and
    ``chi_1 < 1``), ``inf`` when it diverges (only activations with linear growth, e.g. ``relu``
    with ``sigma_w2 > 2``, or ``sigma_w2 = 2`` and ``sigma_b2 > 0``), and ``q^1`` when every ``q``
    is fixed (``relu`` with ``sigma_w2 = 2``, ``sigma_b2 = 0``).

    >>> from gsc_core import theory
    >>> round(theory.fixed_point("tanh", 1.5, 0.05), 5)
    0.41804
    >>> theory.fixed_point("relu", 1.0, 0.5), theory.fixed_point("relu", 3.0, 0.0)
    (1.0, inf)
    """
    name, params = _activation(activation)
    return _core.theory_fixed_point(name, params, _real(sigma_w2, "sigma_w2"), _real(sigma_b2, "sigma_b2"), _real(q0, "q0"))


def chi1(activation: ActivationLike, sigma_w2: float, sigma_b2: float, *, q0: float = 1.0) -> float:
    """``chi_1 = sigma_w2 * E[phi'(sqrt(q*) z)^2]`` at the fixed point ``q*`` (the ``q -> 0+`` or
    ``q -> inf`` limit when ``q*`` is 0 or infinite). At a kink ``phi'`` is one-sided, which does
    not matter inside an expectation.

    >>> from gsc_core import theory
    >>> round(theory.chi1("tanh", 1.5, 0.05), 5)
    0.93864
    >>> theory.chi1("relu", 1.0, 0.0)
    0.5
    """
    name, params = _activation(activation)
    return _core.theory_chi1(name, params, _real(sigma_w2, "sigma_w2"), _real(sigma_b2, "sigma_b2"), _real(q0, "q0"))


def edge_of_chaos(activation: ActivationLike, sigma_b2: float, *, q0: float = 1.0) -> float:
    """The ``sigma_w2`` at which ``chi_1(sigma_w2, sigma_b2) = 1``: the first crossing scanning
    ``sigma_w2`` upwards, refined by Brent's method. Closed form for identity (1), relu (2) and
    leaky_relu (``2 / (1 + slope^2)``), whatever ``sigma_b2``. Raises ``ValueError`` when
    ``chi_1`` never reaches 1 or jumps across it because ``q*`` changes discontinuously (gelu and
    silu with small ``sigma_b2``: their length map diverges before ``chi_1`` reaches 1).

    >>> from gsc_core import theory
    >>> round(theory.edge_of_chaos("tanh", 0.05), 7)
    1.7609546
    >>> theory.edge_of_chaos("relu", 0.0)
    2.0
    """
    name, params = _activation(activation)
    return _core.theory_edge_of_chaos(name, params, _real(sigma_b2, "sigma_b2"), _real(q0, "q0"))


def mean_field(activation: ActivationLike, sigma_w2: float, sigma_b2: float, *, q0: float = 1.0) -> dict[str, float]:
    """Everything at once: ``q_star``, ``chi_1``, ``chi_q``, ``c_star``, ``chi_c``, ``xi_q``,
    ``xi_c``, ``xi_grad``.

    At a degenerate fixed point (``q* = 0`` or ``inf``) the correlation map, normalised by the
    variance, becomes that of the piecewise-linear limit of ``phi``; its slope at ``c = 1`` is 1, so
    ``c_star = 1``, ``chi_c = 1`` and ``xi_c = inf`` (correlations are not forgotten exponentially).

    >>> from gsc_core import theory
    >>> m = theory.mean_field("tanh", 2.5, 0.05)
    >>> round(m["c_star"], 4), m["xi_grad"] < 0
    (0.4468, True)
    """
    name, params = _activation(activation)
    values = _core.theory_mean_field(name, params, _real(sigma_w2, "sigma_w2"), _real(sigma_b2, "sigma_b2"), _real(q0, "q0"))
    keys = ("q_star", "chi_1", "chi_q", "c_star", "chi_c", "xi_q", "xi_c", "xi_grad")
    return dict(zip(keys, values))


def depth_scales(activation: ActivationLike, sigma_w2: float, sigma_b2: float, *, q0: float = 1.0) -> dict[str, float]:
    """``{"xi_q", "xi_c", "xi_grad"}`` (Schoenholz et al. 2017): ``-1/ln chi`` for the length map,
    the correlation map and the gradients. ``inf`` at criticality; negative when ``chi > 1``
    (``xi_grad`` in the chaotic phase: gradients explode by ``e`` every ``|xi_grad|`` layers).

    >>> from gsc_core import theory
    >>> theory.depth_scales("relu", 2.0, 0.0)
    {'xi_q': inf, 'xi_c': inf, 'xi_grad': inf}
    >>> {k: round(v, 3) for k, v in theory.depth_scales("tanh", 1.5, 0.05).items()}
    {'xi_q': 1.683, 'xi_c': 15.791, 'xi_grad': 15.791}
    """
    m = mean_field(activation, sigma_w2, sigma_b2, q0=q0)
    return {"xi_q": m["xi_q"], "xi_c": m["xi_c"], "xi_grad": m["xi_grad"]}


def correlation_fixed_point(activation: ActivationLike, sigma_w2: float, sigma_b2: float, *, q0: float = 1.0) -> float:
    """``c*``, the stable fixed point of the correlation map: 1 in the ordered phase
    (``chi_1 <= 1``), the unique root in ``[0, 1)`` in the chaotic phase (0 for an odd ``phi``
    without bias).

    >>> from gsc_core import theory
    >>> theory.correlation_fixed_point("tanh", 1.5, 0.05)
    1.0
    >>> abs(theory.correlation_fixed_point("tanh", 2.5, 0.0)) < 1e-12
    True
    """
    return mean_field(activation, sigma_w2, sigma_b2, q0=q0)["c_star"]


def correlation_map(
    activation: ActivationLike, sigma_w2: float, sigma_b2: float, c: float, *, q: Optional[float] = None, q0: float = 1.0
) -> float:
    """One step of the correlation map, ``(sigma_w2 * E[phi(u1) phi(u2)] + sigma_b2) / q`` with
    ``u1, u2`` Gaussian of variance ``q`` (default: ``q*``, which must then be finite and positive)
    and correlation ``c`` in ``[-1, 1]``.

    >>> from gsc_core import theory
    >>> round(theory.correlation_map("tanh", 2.5, 0.05, 1.0), 10)
    1.0
    """
    name, params = _activation(activation)
    w, b = _real(sigma_w2, "sigma_w2"), _real(sigma_b2, "sigma_b2")
    if q is None:
        q = _core.theory_fixed_point(name, params, w, b, _real(q0, "q0"))
        if not (0.0 < q < math.inf):
            raise ValueError(f"the fixed point q* = {q} is degenerate; pass the variance q explicitly")
    return _core.theory_correlation_map(name, params, w, b, _real(q, "q"), _real(c, "c", variance=False))


def gaussian_expectations(activation: ActivationLike, q: float) -> dict[str, float]:
    """``E[phi(u)^2]``, ``E[phi'(u)^2]`` and ``E[phi'(u)^2 + phi(u) phi''(u)]`` (= d/dq of the first)
    for ``u ~ N(0, q)``, as ``{"phi2", "dphi2", "dphi2_phi_d2phi"}``. ``q = 0`` gives the
    ``q -> 0+`` limits.

    >>> from gsc_core import theory
    >>> theory.gaussian_expectations("relu", 3.0)
    {'phi2': 1.5, 'dphi2': 0.5, 'dphi2_phi_d2phi': 0.5}
    """
    name, params = _activation(activation)
    values = _core.theory_gaussian_expectations(name, params, _real(q, "q"))
    return dict(zip(("phi2", "dphi2", "dphi2_phi_d2phi"), values))


def bivariate_expectations(activation: ActivationLike, q: float, c: float) -> dict[str, float]:
    """``E[phi(u1) phi(u2)]`` and ``E[phi'(u1) phi'(u2)]`` for ``(u1, u2)`` Gaussian with variances
    ``q`` and correlation ``c`` in ``[-1, 1]``, as ``{"phi_phi", "dphi_dphi"}``.

    >>> from gsc_core import theory
    >>> e = theory.bivariate_expectations("relu", 1.0, 0.0)
    >>> round(e["phi_phi"] * 2 * 3.141592653589793, 12), e["dphi_dphi"]
    (1.0, 0.25)
    """
    name, params = _activation(activation)
    values = _core.theory_bivariate_expectations(name, params, _real(q, "q"), _real(c, "c", variance=False))
    return dict(zip(("phi_phi", "dphi_dphi"), values))


def chi1_map(activation: ActivationLike, sigma_w2: float, sigma_b2: float, q0: float, layers: int) -> np.ndarray:
    """``chi^l = sigma_w2 * E[phi'(sqrt(q^l) z)^2]`` along the length map, ``l = 1..layers``
    (shape ``(layers,)``): the predicted growth of squared gradients across the l-th activation
    layer of an MLP (``sqrt(chi^l)`` per-layer GSC factor; the product over layers predicts the
    mean squared singular value gain of the Jacobian). Tends to ``chi_1`` as ``q^l -> q*``.

    >>> from gsc_core import theory
    >>> theory.chi1_map("relu", 2.0, 0.0, 1.0, 2)
    array([1., 1.])
    """
    w = _real(sigma_w2, "sigma_w2")
    qs = length_map(activation, w, sigma_b2, q0, layers)
    name, params = _activation(activation)
    out = np.empty_like(qs)
    for i, q in enumerate(qs):
        if math.isinf(q):
            out[i:] = chi1(activation, w, sigma_b2, q0=q0)  # the q -> inf limit (q* = inf)
            break
        out[i] = w * _core.theory_gaussian_expectations(name, params, float(q))[1]
    return out
