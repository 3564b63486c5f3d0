"""An independent, plain-NumPy reference for gsc_core's engine (SPEC §1–§2).

Written from SPEC.md alone; it never imports gsc_core's implementation. It takes a list of layer
objects (gsc_core's classes, or anything with the same attributes: it dispatches on the class *name*
and reads ``weight``, ``bias``, ``name``, ``params``, ``eps``, ``body``, ``alpha``, ``shortcut``) and
computes, always in float64:

* ``forward``: the points ``p_0 .. p_N`` and the pre-activations (inputs of every Activation,
  depth-first, inside residual bodies too);
* the per-sample losses ``mse`` and ``cross_entropy`` and the gradients of their sum at every
  point and for every Dense weight/bias (depth-first: a Residual's body, then its shortcut);
* ``vjp`` with ``(B, d)`` or ``(B, K, d)`` cotangents on any point, ``jvp`` likewise;
* per-sample Jacobians (JVPs of identity tangents through copies of one sample), their Frobenius
  norms and singular values.

Every layer has a hand-written forward, VJP and JVP; nothing is clever. ``(B, K, d)`` blocks are
handled by looping over K (each slice is one whole-batch product, which is what BatchNorm needs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772

ACTIVATION_NAMES = (
    "identity",
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "tanh",
    "sigmoid",
    "softplus",
    "sin",
)

_erfc = np.vectorize(math.erfc, otypes=[np.float64])
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------
# activations: value and derivative (left-hand derivative at kinks: the z <= 0 branch)


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * _erfc(-np.asarray(z, dtype=np.float64) * _INV_SQRT2)


def activation_value(name: str, params: dict, z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    pos = z > 0
    if name == "identity":
        return z.copy()
    if name == "relu":
        return np.where(pos, z, 0.0)
    if name == "leaky_relu":
        return np.where(pos, z, params.get("negative_slope", 0.01) * z)
    if name == "elu":
        return np.where(pos, z, params.get("alpha", 1.0) * np.expm1(np.minimum(z, 0.0)))
    if name == "selu":
        return SELU_LAMBDA * np.where(pos, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0)))
    if name == "gelu":
        return z * normal_cdf(z)
    if name == "silu":
        return z * sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return sigmoid(z)
    if name == "softplus":
        return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    if name == "sin":
        return np.sin(z)
    raise ValueError(f"unknown activation {name!r}")


def activation_derivative(name: str, params: dict, z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    pos = z > 0
    if name == "identity":
        return np.ones_like(z)
    if name == "relu":
        return np.where(pos, 1.0, 0.0)
    if name == "leaky_relu":
        return np.where(pos, 1.0, params.get("negative_slope", 0.01))
    if name == "elu":
        return np.where(pos, 1.0, params.get("alpha", 1.0) * np.exp(np.minimum(z, 0.0)))
    if name == "selu":
        return SELU_LAMBDA * np.where(pos, 1.0, SELU_ALPHA * np.exp(np.minimum(z, 0.0)))
    if name == "gelu":
        return normal_cdf(z) + z * _INV_SQRT_2PI * np.exp(-0.5 * z * z)
    # Saturation-accurate forms: 1 - s and 1 - tanh^2 would lose every digit for large |z|.
    if name == "silu":
        return sigmoid(z) * (1.0 + z * sigmoid(-z))
    if name == "tanh":
        with np.errstate(over="ignore"):
            return 1.0 / np.cosh(z) ** 2
    if name == "sigmoid":
        return sigmoid(z) * sigmoid(-z)
    if name == "softplus":
        return sigmoid(z)
    if name == "sin":
        return np.cos(z)
    raise ValueError(f"unknown activation {name!r}")


# ---------------------------------------------------------------------------------------------
# the layers, as plain records


def _f64(a: Any) -> Optional[np.ndarray]:
    return None if a is None else np.array(a, dtype=np.float64, copy=True)


@dataclass
class RDense:
    weight: np.ndarray
    bias: Optional[np.ndarray]
    index: int  # depth-first position among all Dense layers


@dataclass
class RAct:
    name: str
    params: dict


@dataclass
class RNorm:
    axis: int  # -1: LayerNorm (per sample over features); 0: BatchNorm (per feature over batch)
    eps: float
    weight: Optional[np.ndarray]
    bias: Optional[np.ndarray]
    kind: str


@dataclass
class RResidual:
    body: list
    alpha: float
    shortcut: Optional[RDense]


def _convert(layer: Any, dense: list) -> Any:
    kind = type(layer).__name__
    if kind == "Dense":
        rec = RDense(_f64(layer.weight), _f64(layer.bias), len(dense))
        dense.append(rec)
        return rec
    if kind == "Activation":
        return RAct(str(layer.name), dict(getattr(layer, "params", {}) or {}))
    if kind in ("LayerNorm", "BatchNorm"):
        return RNorm(-1 if kind == "LayerNorm" else 0, float(layer.eps), _f64(layer.weight), _f64(layer.bias), kind)
    if kind == "Residual":
        body = [_convert(inner, dense) for inner in layer.body]  # body first ...
        shortcut = None if layer.shortcut is None else _convert(layer.shortcut, dense)  # ... then shortcut
        return RResidual(body, float(layer.alpha), shortcut)
    raise TypeError(f"reference: unknown layer type {kind}")


# ---------------------------------------------------------------------------------------------
# per-layer forward / vjp / jvp on (B, d) arrays


@dataclass
class _Cache:
    x: np.ndarray
    extra: Any = None
    inner: list = field(default_factory=list)
    shortcut: Any = None


def _exact(y: np.ndarray, magnitude: Any = None) -> np.ndarray:
    return y


class _Noise:
    """Rounding-error model for conditioning estimates: ``nz(y, mag)`` returns
    ``y + unit * mag * delta`` with ``delta`` uniform in [-1, 1] per element, where ``mag`` bounds
    the magnitudes of the terms that were summed to give ``y`` (default ``|y|``), as in the
    standard running error bounds of floating-point sums and dot products."""

    def __init__(self, unit: float, seed: int) -> None:
        self.unit = unit
        self.rng = np.random.default_rng(seed)

    def __call__(self, y: np.ndarray, magnitude: Any = None) -> np.ndarray:
        mag = np.abs(y) if magnitude is None else np.broadcast_to(magnitude, np.shape(y))
        return y + self.unit * mag * self.rng.uniform(-1.0, 1.0, size=np.shape(y))


def _norm_stats(x: np.ndarray, axis: int, eps: float, nz=_exact):
    mean = x.mean(axis=axis, keepdims=True)
    centred = nz(x - mean, (np.abs(x) + np.abs(mean)) * (x.shape[axis] > 1))  # exact for one element
    var = nz((centred * centred).mean(axis=axis, keepdims=True))  # population variance
    std = np.sqrt(var + eps)
    return nz(centred / std), std


def _norm_backward(gh: np.ndarray, xhat: np.ndarray, std: np.ndarray, axis: int, nz=_exact) -> np.ndarray:
    """The (symmetric) derivative of x -> (x - mean) / sqrt(var + eps) applied to gh: used for both
    the VJP and the JVP. d xhat = (dx - mean(dx) - xhat * mean(xhat * dx)) / std."""
    m1 = gh.mean(axis=axis, keepdims=True)
    m2 = (gh * xhat).mean(axis=axis, keepdims=True)
    mag = np.abs(gh) + np.abs(gh).mean(axis=axis, keepdims=True) + np.abs(xhat) * np.abs(gh * xhat).mean(axis=axis, keepdims=True)
    mag = mag * (gh.shape[axis] > 1)  # over one element the result is an exact zero
    return nz(gh - m1 - xhat * m2, mag) / std


def _fwd(layer: Any, x: np.ndarray, pre: list, nz=_exact) -> tuple[np.ndarray, _Cache]:
    if isinstance(layer, RDense):
        y = x @ layer.weight.T
        mag = np.abs(x) @ np.abs(layer.weight.T)
        if layer.bias is not None:
            y = y + layer.bias
            mag = mag + np.abs(layer.bias)
        return nz(y, mag), _Cache(x)
    if isinstance(layer, RAct):
        pre.append(x)
        return nz(activation_value(layer.name, layer.params, x)), _Cache(x)
    if isinstance(layer, RNorm):
        xhat, std = _norm_stats(x, layer.axis, layer.eps, nz)
        y = xhat
        if layer.weight is not None:
            y = y * layer.weight
        if layer.bias is not None:
            y = nz(y + layer.bias, np.abs(y) + np.abs(layer.bias))
        return y, _Cache(x, (xhat, std))
    if isinstance(layer, RResidual):
        cache = _Cache(x)
        h = x
        for inner in layer.body:
            h, c = _fwd(inner, h, pre, nz)
            cache.inner.append(c)
        if layer.shortcut is None:
            s = x
        else:
            s, cache.shortcut = _fwd(layer.shortcut, x, pre, nz)
        return nz(s + layer.alpha * h, np.abs(s) + np.abs(layer.alpha * h)), cache
    raise TypeError(layer)


def _vjp(layer: Any, cache: _Cache, g: np.ndarray, wgrads: list, bgrads: list, nz=_exact) -> np.ndarray:
    """Pulls g (on the layer's output) back to its input, adding Dense parameter gradients."""
    if isinstance(layer, RDense):
        wgrads[layer.index] = wgrads[layer.index] + nz(g.T @ cache.x, np.abs(g.T) @ np.abs(cache.x))
        if layer.bias is not None:
            bgrads[layer.index] = bgrads[layer.index] + nz(g.sum(axis=0), np.abs(g).sum(axis=0))
        return nz(g @ layer.weight, np.abs(g) @ np.abs(layer.weight))
    if isinstance(layer, RAct):
        return nz(g * activation_derivative(layer.name, layer.params, cache.x))
    if isinstance(layer, RNorm):
        xhat, std = cache.extra
        gh = g * layer.weight if layer.weight is not None else g
        return _norm_backward(gh, xhat, std, layer.axis, nz)
    if isinstance(layer, RResidual):
        gb = layer.alpha * g
        for inner, c in zip(reversed(layer.body), reversed(cache.inner)):
            gb = _vjp(inner, c, gb, wgrads, bgrads, nz)
        gs = g if layer.shortcut is None else _vjp(layer.shortcut, cache.shortcut, g, wgrads, bgrads, nz)
        return nz(gs + gb, np.abs(gs) + np.abs(gb))
    raise TypeError(layer)


def _jvp(layer: Any, cache: _Cache, t: np.ndarray, nz=_exact) -> np.ndarray:
    """Pushes a tangent t (on the layer's input) to its output."""
    if isinstance(layer, RDense):
        return nz(t @ layer.weight.T, np.abs(t) @ np.abs(layer.weight.T))
    if isinstance(layer, RAct):
        return nz(t * activation_derivative(layer.name, layer.params, cache.x))
    if isinstance(layer, RNorm):
        xhat, std = cache.extra
        th = _norm_backward(t, xhat, std, layer.axis, nz)
        return th * layer.weight if layer.weight is not None else th
    if isinstance(layer, RResidual):
        h = t
        for inner, c in zip(layer.body, cache.inner):
            h = _jvp(inner, c, h, nz)
        s = t if layer.shortcut is None else _jvp(layer.shortcut, cache.shortcut, t, nz)
        return nz(s + layer.alpha * h, np.abs(s) + np.abs(layer.alpha * h))
    raise TypeError(layer)


def _has_batchnorm(layer: Any) -> bool:
    if isinstance(layer, RNorm):
        return layer.axis == 0
    if isinstance(layer, RResidual):
        return any(_has_batchnorm(inner) for inner in layer.body)
    return False


# ---------------------------------------------------------------------------------------------
# losses


def losses_and_output_grad(output: np.ndarray, y: Any = None, loss: str = "mse") -> tuple[np.ndarray, np.ndarray]:
    """Per-sample losses l_b and dL/do for L = sum_b l_b."""
    o = np.asarray(output, dtype=np.float64)
    if loss == "mse":
        target = np.zeros_like(o) if y is None else np.asarray(y, dtype=np.float64)
        diff = o - target
        return 0.5 * (diff * diff).sum(axis=1), diff
    if loss == "cross_entropy":
        # l = logsumexp(o) - o[y] = (m - o[y]) + log1p(r), m = max o at column a, r = sum over k != a of
        # exp(o_k - m): a sum of two non-negative terms, so small losses keep their relative accuracy
        # (forming m + log(s) first and then subtracting o[y] would not). The gradient is softmax - onehot
        # with its y entry formed as -(sum of the other probabilities), for the same reason.
        cls = np.asarray(y).astype(np.int64)
        rows = np.arange(o.shape[0])
        a = o.argmax(axis=1)
        m = o[rows, a]
        e = np.exp(o - m[:, None])
        e[rows, a] = 0.0
        r = e.sum(axis=1)
        losses = (m - o[rows, cls]) + np.log1p(r)
        e[rows, a] = 1.0
        p = e / (1.0 + r)[:, None]
        grad = p.copy()
        others = p.copy()
        others[rows, cls] = 0.0
        grad[rows, cls] = -others.sum(axis=1)
        return losses, grad
    raise ValueError(f"unknown loss {loss!r}")


# ---------------------------------------------------------------------------------------------
# the network


@dataclass
class RefGradients:
    points: list
    weights: list
    biases: list


class RefNet:
    """The reference network. All results are float64 NumPy arrays.

    ``noise=(unit, seed)`` perturbs every intermediate sum by random rounding errors of relative
    size ``unit`` of the magnitudes summed (see ``_Noise``; forward, VJP and JVP, inside residual
    blocks too): comparing with the exact results tells how far mere rounding to a precision with
    unit roundoff ``unit`` can move a result, i.e. the conditioning of the case (used to set
    tolerances, e.g. for a BatchNorm over two samples whose Jacobian is a near-total cancellation)."""

    def __init__(self, layers: Sequence[Any], noise: Optional[tuple[float, int]] = None) -> None:
        self.dense: list[RDense] = []
        self.layers = [_convert(layer, self.dense) for layer in layers]
        self.noise = _exact if noise is None else _Noise(*noise)

    def __len__(self) -> int:
        return len(self.layers)

    # points ---------------------------------------------------------------------------------
    def _index(self, point: int) -> int:
        n = len(self.layers)
        p = point + n + 1 if point < 0 else point
        if not 0 <= p <= n:
            raise IndexError(f"point {point} out of range for {n + 1} points")
        return p

    def _run(self, x: np.ndarray, start: int = 0, end: Optional[int] = None):
        """Runs layers start..end-1 from p_start = x: (points p_start..p_end, caches, pre-activations)."""
        end = len(self.layers) if end is None else end
        points = [np.array(x, dtype=np.float64)]
        caches = []
        pre: list = []
        for layer in self.layers[start:end]:
            y, c = _fwd(layer, points[-1], pre, self.noise)
            points.append(y)
            caches.append(c)
        return points, caches, pre

    def forward(self, x: Any) -> tuple[list, list]:
        points, _, pre = self._run(np.asarray(x, dtype=np.float64))
        return points, pre

    # losses -----------------------------------------------------------------------------------
    def losses(self, x: Any, y: Any = None, loss: str = "mse") -> np.ndarray:
        points, _ = self.forward(x)
        return losses_and_output_grad(points[-1], y, loss)[0]

    def total_loss(self, x: Any, y: Any = None, loss: str = "mse") -> float:
        return float(self.losses(x, y, loss).sum())

    def loss_and_grad(self, x: Any, y: Any = None, loss: str = "mse") -> tuple[np.ndarray, RefGradients]:
        points, caches, _ = self._run(np.asarray(x, dtype=np.float64))
        losses, g = losses_and_output_grad(points[-1], y, loss)
        if self.noise is not _exact:  # rounding model: both are differences of larger terms
            o = points[-1]
            scale = np.abs(o).max(axis=1) + np.log(o.shape[1]) + 1.0
            losses = self.noise(losses, scale)
            g = self.noise(g, np.abs(o) + np.abs(y) if loss == "mse" and y is not None else np.abs(g) + (1.0 if loss != "mse" else 0.0))
        return losses, self._backward(points, caches, g, len(self.layers))

    # products -----------------------------------------------------------------------------------
    def _zero_params(self):
        w = [np.zeros_like(d.weight) for d in self.dense]
        b = [None if d.bias is None else np.zeros_like(d.bias) for d in self.dense]
        return w, b

    def _backward(self, points, caches, g, j) -> RefGradients:
        wgrads, bgrads = self._zero_params()
        out: list = [None] * len(points)
        out[j] = g
        for i in range(j - 1, -1, -1):
            g = _vjp(self.layers[i], caches[i], g, wgrads, bgrads, self.noise)
            out[i] = g
        return RefGradients(out, wgrads, bgrads)

    def vjp(self, x: Any, cotangent: Any, point: int = -1) -> RefGradients:
        """U on point j, (B, d_j) or (B, K, d_j); points[i] = U . dp_j/dp_i for i <= j, None after.
        Parameter gradients are summed over the batch ((K, d_out, d_in) for K cotangents); Dense
        layers after point j get zeros."""
        j = self._index(point)
        points, caches, _ = self._run(np.asarray(x, dtype=np.float64))
        u = np.asarray(cotangent, dtype=np.float64)
        if u.ndim == 2:
            return self._backward(points, caches, u, j)
        per_k = [self._backward(points, caches, u[:, k, :], j) for k in range(u.shape[1])]
        pts = [None if per_k[0].points[i] is None else np.stack([r.points[i] for r in per_k], axis=1) for i in range(len(points))]
        ws = [np.stack([r.weights[l] for r in per_k]) for l in range(len(self.dense))]
        bs = [None if per_k[0].biases[l] is None else np.stack([r.biases[l] for r in per_k]) for l in range(len(self.dense))]
        return RefGradients(pts, ws, bs)

    def jvp(self, x: Any, tangent: Any, point: int = 0) -> list:
        """V on point i, (B, d_i) or (B, K, d_i); entry j = dp_j/dp_i . V for j >= i, None before."""
        i = self._index(point)
        points, caches, _ = self._run(np.asarray(x, dtype=np.float64))
        v = np.asarray(tangent, dtype=np.float64)

        def push(t):
            out: list = [None] * len(points)
            out[i] = t
            for j in range(i, len(self.layers)):
                t = _jvp(self.layers[j], caches[j], t, self.noise)
                out[j + 1] = t
            return out

        if v.ndim == 2:
            return push(v)
        per_k = [push(v[:, k, :]) for k in range(v.shape[1])]
        return [None if per_k[0][j] is None else np.stack([r[j] for r in per_k], axis=1) for j in range(len(points))]

    # per-sample Jacobians ---------------------------------------------------------------------
    def batchnorm_between(self, start: int, end: int) -> bool:
        s, e = self._index(start), self._index(end)
        return any(_has_batchnorm(layer) for layer in self.layers[s:e])

    def jacobian(self, x: Any, start: int = 0, end: int = -1) -> np.ndarray:
        """(B, d_end, d_start): for each sample b, the layers start..end-1 are run on d_start copies
        of p_start[b] and pushed the identity tangents; column k of J_b is the image of e_k."""
        s, e = self._index(start), self._index(end)
        if s > e:
            raise ValueError("start must not come after end")
        if self.batchnorm_between(s, e):
            raise ValueError("a BatchNorm lies between the points: no per-sample Jacobian")
        points, _ = self.forward(x)
        p = points[s]
        batch, d = p.shape
        jacs = []
        for b in range(batch):
            copies = np.repeat(p[b : b + 1], d, axis=0)
            sub, caches, _ = self._run(copies, s, e)
            t = np.eye(d)
            for layer, c in zip(self.layers[s:e], caches):
                t = _jvp(layer, c, t, self.noise)
            jacs.append(t.T)  # row k of t is J_b e_k
        return np.stack(jacs) if jacs else np.zeros((0, points[e].shape[1], d))

    def jacobian_norms(self, x: Any, end: int = -1) -> np.ndarray:
        e = self._index(end)
        return np.stack([np.sqrt((self.jacobian(x, i, e) ** 2).sum(axis=(1, 2))) for i in range(e + 1)])

    def jacobian_spectrum(self, x: Any, start: int = 0, end: int = -1) -> np.ndarray:
        return np.linalg.svd(self.jacobian(x, start, end), compute_uv=False)

    # finite differences (for self-checks) ------------------------------------------------------
    def forward_from(self, p: np.ndarray, start: int, end: int) -> np.ndarray:
        s, e = self._index(start), self._index(end)
        return self._run(np.asarray(p, dtype=np.float64), s, e)[0][-1]
