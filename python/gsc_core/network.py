"""`Network`: forward passes, losses and exact Jacobian products (SPEC §1, §2).

Points: ``p_0 = x`` and ``p_i`` is the output of the i-th top-level layer, ``i = 1..N``.
Negative point indices count from the end, as in Python (``-1`` is the output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from . import _core
from ._arrays import as_classes, as_float, resolve_dtype
from .layers import Activation, BatchNorm, Dense, Layer, LayerNorm, Residual

LOSSES = ("mse", "cross_entropy")


@dataclass(frozen=True)
class Trace:
    """Result of :meth:`Network.forward`.

    ``points``: the N+1 arrays ``p_0 .. p_N``, each ``(B, d_i)``; ``output`` = ``points[-1]``;
    ``pre_activations``: the input of every :class:`Activation` layer, depth-first (inside residual
    bodies too), in execution order. A top-level activation's input is the preceding point and
    is returned as the same array object.
    """

    points: list[np.ndarray]
    pre_activations: list[np.ndarray]

    @property
    def output(self) -> np.ndarray:
        return self.points[-1]


@dataclass(frozen=True)
class Gradients:
    """Gradients at every point and of every Dense layer's parameters.

    ``points[i]``: ``(B, d_i)`` (or ``(B, K, d_i)`` for K cotangents per sample), ``None`` for
    points after the one the cotangent sits on. ``weights[l]`` / ``biases[l]``: one entry per
    Dense layer, depth-first (inside a Residual, the body's Dense layers, then the shortcut),
    summed over the batch: ``(d_out, d_in)`` / ``(d_out,)``, or ``(K, d_out, d_in)`` /
    ``(K, d_out)`` for K cotangents; ``biases[l]`` is ``None`` for a Dense without bias.
    """

    points: list[Optional[np.ndarray]]
    weights: list[np.ndarray]
    biases: list[Optional[np.ndarray]]


#: How deep Residual blocks may nest (building a network recurses once per level; thousands of
#: levels would overflow the native stack).
MAX_NESTING = 100


def _nesting(layer: Any) -> int:
    """How many Residual blocks nest inside each other in ``layer`` (0 for a plain layer), without recursion."""
    deepest, stack = 0, [(layer, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Residual):
            deepest = max(deepest, depth + 1)
            if depth + 1 > MAX_NESTING:
                break
            stack.extend((inner, depth + 1) for inner in item.body)
    return deepest


def _native_layer(layer: Layer, dtype: np.dtype, where: str) -> tuple:
    def arr(a: Any, name: str, ndim: int) -> Optional[np.ndarray]:
        return None if a is None else as_float(a, f"{where}: {name}", dtype, ndim)

    if isinstance(layer, Dense):
        return ("dense", arr(layer.weight, "Dense weight", 2), arr(layer.bias, "Dense bias", 1))
    if isinstance(layer, Activation):
        return ("activation", layer.name, sorted(layer.params.items()))
    if isinstance(layer, (LayerNorm, BatchNorm)):
        kind = "layernorm" if isinstance(layer, LayerNorm) else "batchnorm"
        return (kind, layer.eps, arr(layer.weight, "weight", 1), arr(layer.bias, "bias", 1))
    if isinstance(layer, Residual):
        body = [_native_layer(inner, dtype, f"{where}.body[{k}]") for k, inner in enumerate(layer.body)]
        shortcut = None if layer.shortcut is None else _native_layer(layer.shortcut, dtype, f"{where}.shortcut")
        return ("residual", body, layer.alpha, shortcut)
    raise TypeError(f"{where} must be a gsc_core layer (Dense, Activation, LayerNorm, BatchNorm, Residual), got {type(layer).__name__}")


def _frozen_copy(layer: Layer, dtype: np.dtype) -> Layer:
    """The network's own copy of a layer, with read-only arrays in the network's dtype."""

    def freeze(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
        if a is None:
            return None
        out = np.array(a, dtype=dtype, copy=True)
        out.flags.writeable = False
        return out

    if isinstance(layer, Dense):
        return Dense(freeze(layer.weight), freeze(layer.bias))
    if isinstance(layer, Activation):
        return Activation(layer.name, **layer.params)
    if isinstance(layer, (LayerNorm, BatchNorm)):
        return type(layer)(layer.eps, freeze(layer.weight), freeze(layer.bias))
    assert isinstance(layer, Residual)
    shortcut = None if layer.shortcut is None else _frozen_copy(layer.shortcut, dtype)
    return Residual([_frozen_copy(inner, dtype) for inner in layer.body], layer.alpha, shortcut)  # type: ignore[arg-type]


class Network:
    """A feed-forward network of gsc_core layers, in one dtype (``"float64"`` or ``"float32"``).

    >>> import numpy as np, gsc_core
    >>> rng = np.random.default_rng(0)
    >>> net = gsc_core.Network([gsc_core.Dense(rng.normal(size=(8, 4))), gsc_core.Activation("tanh"),
    ...                         gsc_core.Dense(rng.normal(size=(2, 8)))])
    >>> x = rng.normal(size=(5, 4))
    >>> [p.shape for p in net.forward(x).points]
    [(5, 4), (5, 8), (5, 8), (5, 2)]
    >>> losses, grads = net.loss_and_grad(x)
    >>> grads.points[0].shape, grads.weights[0].shape
    ((5, 4), (8, 4))
    """

    def __init__(self, layers: Sequence[Layer], dtype: Any = "float64") -> None:
        if isinstance(layers, Layer.__args__):  # type: ignore[attr-defined]
            raise TypeError("Network takes a list of layers, e.g. Network([Dense(w), Activation('relu')])")
        layers = list(layers)
        for l, layer in enumerate(layers):
            if _nesting(layer) > MAX_NESTING:
                raise ValueError(f"layers[{l}]: Residual blocks nested more than {MAX_NESTING} deep; gsc_core supports at most {MAX_NESTING} levels")
        self._dtype = resolve_dtype(dtype)
        spec = [_native_layer(layer, self._dtype, f"layers[{l}]") for l, layer in enumerate(layers)]
        self._native = _core.Network(spec, self._dtype.name)
        self._layers = [_frozen_copy(layer, self._dtype) for layer in layers]
        self._build_info: Optional[dict] = None  # set by gsc_core.mlp / resnet

    # ------------------------------------------------------------------ other sources
    @classmethod
    def from_torch(cls, module: Any, dtype: Any = None) -> "Network":
        """The network of a PyTorch ``nn.Sequential`` (or single module) of ``Linear``, activation
        modules (``ReLU``, ``LeakyReLU``, ``ELU``, ``SELU``, ``GELU``, ``SiLU``, ``Tanh``,
        ``Sigmoid``, ``Softplus``, ``Identity``), ``LayerNorm``, ``BatchNorm1d`` (batch statistics,
        as in training mode) and :class:`gsc_core.torch_interop.Residual` blocks; nested
        ``Sequential`` containers are flattened. Anything else raises ``ValueError`` naming the
        module. ``dtype`` defaults to float64 for float64 parameters, else float32. The weights are
        copied. See :func:`gsc_core.torch_interop.from_torch`."""
        from .torch_interop import from_torch

        return from_torch(module, dtype=dtype)

    @classmethod
    def from_arrays(cls, weights: Sequence[Any], biases: Any = None, activation: Any = "relu", dtype: Any = "float64", layout: str = "out_in") -> "Network":
        """An MLP from weight matrices from anywhere: ``Dense(W_1, b_1), act, ..., act, Dense(W_L, b_L)``
        (no activation after the last). ``weights[k]`` has shape ``(d_out, d_in)`` (PyTorch layout;
        ``layout="in_out"`` for ``(d_in, d_out)`` kernels as in Keras, JAX/Flax); ``biases`` is
        ``None`` or a list with an array or ``None`` per layer; ``activation`` a name, an
        :class:`Activation`, or a list of ``len(weights) - 1`` of them.
        See :func:`gsc_core.torch_interop.from_arrays`."""
        from .torch_interop import from_arrays

        return from_arrays(weights, biases, activation=activation, dtype=dtype, layout=layout)

    # ------------------------------------------------------------------ description
    @property
    def layers(self) -> list[Layer]:
        """The network's layers (its own read-only copies of the arrays)."""
        return list(self._layers)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def in_dim(self) -> Optional[int]:
        """The input width, or ``None`` if no layer fixes it (then any width works)."""
        return self._native.in_dim

    def point_widths(self, in_dim: Optional[int] = None) -> list[int]:
        """The width ``d_i`` of every point ``p_0 .. p_N``."""
        d0 = self.in_dim if in_dim is None else in_dim
        if d0 is None:
            raise ValueError("this network does not fix its input width: pass in_dim")
        return list(self._native.point_widths(int(d0)))

    def __len__(self) -> int:
        """N, the number of top-level layers (so there are N+1 points)."""
        return len(self._layers)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self._layers)
        return f"Network([\n  {inner}\n], dtype='{self._dtype.name}')"

    # ------------------------------------------------------------------ inputs
    def _x(self, x: Any) -> np.ndarray:
        return as_float(x, "x", self._dtype, 2)

    def _point(self, point: Any, name: str) -> int:
        """A point index in ``-N-1..N`` (as given: negative ones count from the end)."""
        if isinstance(point, (bool, np.bool_)) or not isinstance(point, (int, np.integer)):
            raise TypeError(f"{name} must be an integer point index, got {point!r}")
        p, n = int(point), len(self._layers)
        if not -n - 1 <= p <= n:
            raise ValueError(f"{name}={p} is out of range: this network has points 0..={n} (or -{n + 1}..=-1)")
        return p

    def _resolve_point(self, point: Any, name: str) -> int:
        """A point index in ``0..N`` (negative ones count from the end)."""
        p, n = self._point(point, name), len(self._layers)
        return p if p >= 0 else p + n + 1

    def _block(self, a: Any, name: str, batch: int) -> tuple[np.ndarray, int, tuple[int, ...]]:
        """A ``(B, d)`` or ``(B, K, d)`` block as ``(B*K, d)`` rows, with K and the batch shape."""
        arr = as_float(a, name, self._dtype, (2, 3))
        if arr.shape[0] != batch:
            raise ValueError(f"{name} has batch size {arr.shape[0]} (shape {arr.shape}) but x has {batch} samples")
        if arr.ndim == 2:
            return arr, 1, (batch,)
        k = arr.shape[1]
        if k == 0:
            raise ValueError(f"{name} has shape {arr.shape}: K must be at least 1")
        return arr.reshape(batch * k, arr.shape[2]), k, (batch, k)

    # ------------------------------------------------------------------ passes
    def forward(self, x: Any) -> Trace:
        """Runs the network on ``x`` of shape ``(B, d_0)``; see :class:`Trace`."""
        points, pre_activations = self._native.forward(self._x(x))
        return Trace(points=list(points), pre_activations=list(pre_activations))

    def loss_and_grad(self, x: Any, y: Any = None, loss: str = "mse") -> tuple[np.ndarray, Gradients]:
        """Per-sample losses ``(B,)`` and the gradients of their sum ``L = sum_b l_b``.

        ``loss="mse"``: ``l_b = 0.5 ||o_b - y_b||^2`` with ``y`` of the output's shape (``None`` =
        zeros). ``loss="cross_entropy"``: ``l_b = logsumexp(o_b) - o_b[y_b]`` with integer classes
        ``y`` of shape ``(B,)``.
        """
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of: {', '.join(LOSSES)}")
        xa = self._x(x)
        values = classes = None
        if loss == "mse" and y is not None:
            values = as_float(y, "y", self._dtype, 2)
        elif loss == "cross_entropy":
            if y is None:
                raise ValueError("cross_entropy needs integer class targets y of shape (B,)")
            classes = as_classes(y, xa.shape[0])
        losses, points, weights, biases = self._native.loss_and_grad(xa, loss, values, classes)
        return losses, Gradients(points=list(points), weights=[w[0] for w in weights], biases=[None if b is None else b[0] for b in biases])

    def vjp(self, x: Any, cotangent: Any, point: int = -1) -> Gradients:
        """Pulls ``cotangent`` (``(B, d_j)`` or ``(B, K, d_j)``) on point ``j = point`` back:
        ``points[i] = U . dp_j/dp_i`` for every ``i <= j`` (``None`` for ``i > j``), and the Dense
        parameter gradients summed over the batch (see :class:`Gradients`). Exact; with a
        BatchNorm the samples are coupled and the product is the whole-batch one.
        """
        xa = self._x(x)
        block, k, lead = self._block(cotangent, "cotangent", xa.shape[0])
        points, weights, biases = self._native.vjp(xa, block, k, self._point(point, "point"))
        points = [None if g is None else g.reshape(*lead, g.shape[1]) for g in points]
        if len(lead) == 1:
            return Gradients(points=points, weights=[w[0] for w in weights], biases=[None if b is None else b[0] for b in biases])
        return Gradients(points=points, weights=list(weights), biases=list(biases))

    def jvp(self, x: Any, tangent: Any, point: int = 0) -> list[Optional[np.ndarray]]:
        """Pushes ``tangent`` (``(B, d_i)`` or ``(B, K, d_i)``) on point ``i = point`` forward.

        Returns a list indexed by point, like :attr:`Gradients.points`: entry ``j`` is
        ``dp_j/dp_i . V`` for every ``j >= i`` and ``None`` for ``j < i``.
        """
        xa = self._x(x)
        block, k, lead = self._block(tangent, "tangent", xa.shape[0])
        out = self._native.jvp(xa, block, k, self._point(point, "point"))
        return [None if t is None else t.reshape(*lead, t.shape[1]) for t in out]

    def jacobian(self, x: Any, start: int = 0, end: int = -1) -> np.ndarray:
        """Per-sample Jacobians ``dp_end/dp_start``, shape ``(B, d_end, d_start)``.

        Raises ``ValueError`` naming the layer when a BatchNorm between the two points couples the
        samples (the per-sample Jacobian does not exist; vjp/jvp still work on the whole batch).
        """
        return self._native.jacobian(self._x(x), self._point(start, "start"), self._point(end, "end"))
