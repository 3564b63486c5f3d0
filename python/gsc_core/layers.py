"""The layers a :class:`gsc_core.Network` is made of (SPEC §1).

Layers are plain descriptions holding NumPy arrays; a :class:`~gsc_core.Network` copies them into
its own dtype when it is built, so changing an array afterwards does not change the network.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from ._arrays import as_real

#: Activation names and the parameters each accepts, with defaults (SPEC §1).
ACTIVATIONS: dict[str, dict[str, float]] = {
    "identity": {},
    "relu": {},
    "leaky_relu": {"negative_slope": 0.01},
    "elu": {"alpha": 1.0},
    "selu": {},
    "gelu": {},
    "silu": {},
    "tanh": {},
    "sigmoid": {},
    "softplus": {},
    "sin": {},
}


def _vector(a: Any, name: str) -> np.ndarray | None:
    if a is None:
        return None
    arr = as_real(a, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


class Dense:
    """``y = x @ weight.T + bias``, with ``weight`` of shape ``(d_out, d_in)`` (PyTorch layout).

    >>> import numpy as np, gsc_core
    >>> layer = gsc_core.Dense(np.eye(3), bias=np.zeros(3))
    >>> layer.weight.shape
    (3, 3)
    """

    def __init__(self, weight: Any, bias: Any = None) -> None:
        w = as_real(weight, "Dense weight")
        if w.ndim != 2:
            raise ValueError(f"Dense weight must be 2-D (d_out, d_in), got shape {w.shape}")
        b = _vector(bias, "Dense bias")
        if b is not None and b.shape[0] != w.shape[0]:
            raise ValueError(f"Dense bias has shape {b.shape} but weight has shape {w.shape}; expected ({w.shape[0]},)")
        self.weight = w
        self.bias = b

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def __repr__(self) -> str:
        bias = "" if self.bias is not None else ", bias=None"
        return f"Dense({self.in_features} -> {self.out_features}{bias})"


class Activation:
    """An elementwise nonlinearity by name: ``identity``, ``relu``, ``leaky_relu``
    (``negative_slope=0.01``), ``elu`` (``alpha=1.0``), ``selu``, ``gelu`` (exact, erf form),
    ``silu``, ``tanh``, ``sigmoid``, ``softplus``, ``sin``.

    At a kink the derivative is the left-hand one, as in PyTorch: relu'(0) = 0.

    >>> import gsc_core
    >>> gsc_core.Activation("leaky_relu", negative_slope=0.2).params
    {'negative_slope': 0.2}
    """

    def __init__(self, name: str, **params: float) -> None:
        if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; expected one of: {', '.join(ACTIVATIONS)}")
        name = name.lower()
        allowed = ACTIVATIONS[name]
        for key, value in params.items():
            if key not in allowed:
                takes = ", ".join(allowed) if allowed else "no parameters"
                raise ValueError(f"activation {name!r} has no parameter {key!r} (it takes: {takes})")
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"activation {name!r}: {key} must be a real number, got {value!r}")
            if not np.isfinite(value):
                raise ValueError(f"activation {name!r}: {key} must be finite, got {value!r}")
        self.name = name
        self.params: dict[str, float] = {**allowed, **{k: float(v) for k, v in params.items()}}

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Activation({self.name!r}{extra})"


class _Norm:
    kind = ""

    def __init__(self, eps: float = 1e-5, weight: Any = None, bias: Any = None) -> None:
        if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)):
            raise TypeError(f"{self.kind} eps must be a real number, got {eps!r}")
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"{self.kind} eps must be positive and finite, got {eps!r}")
        w = _vector(weight, f"{self.kind} weight")
        b = _vector(bias, f"{self.kind} bias")
        if w is not None and b is not None and w.shape != b.shape:
            raise ValueError(f"{self.kind} weight has shape {w.shape} but bias has shape {b.shape}")
        self.eps = float(eps)
        self.weight = w
        self.bias = b

    def __repr__(self) -> str:
        affine = "" if self.weight is None and self.bias is None else ", affine"
        return f"{self.kind}(eps={self.eps!r}{affine})"


class LayerNorm(_Norm):
    """Normalises each sample over its features:
    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the population variance (as PyTorch).
    """

    kind = "LayerNorm"


class BatchNorm(_Norm):
    """Normalises each feature over the batch, with batch statistics (training-mode forward):
    ``y = (x - mean_b) / sqrt(var_b + eps) * weight + bias``. It couples the samples of a batch, so
    per-sample Jacobians through it do not exist (use whole-batch VJPs/JVPs or ``mode="batch"``).
    """

    kind = "BatchNorm"


class Residual:
    """``y = shortcut(x) + alpha * body(x)``: ``body`` a list of layers, ``shortcut`` the identity
    (``None``) or a :class:`Dense` projection. One top-level layer: its inside is not a point.

    >>> import numpy as np, gsc_core
    >>> block = gsc_core.Residual([gsc_core.Activation("relu"), gsc_core.Dense(np.eye(4))], alpha=0.5)
    >>> len(block.body)
    2
    """

    def __init__(self, body: Sequence["Layer"], alpha: float = 1.0, shortcut: Dense | None = None) -> None:
        if isinstance(body, Layer.__args__):  # type: ignore[attr-defined]
            body = [body]
        body = list(body)
        for k, layer in enumerate(body):
            if not isinstance(layer, Layer.__args__):  # type: ignore[attr-defined]
                raise TypeError(f"Residual body[{k}] must be a gsc_core layer, got {type(layer).__name__}")
        if shortcut is not None and not isinstance(shortcut, Dense):
            raise TypeError(f"Residual shortcut must be None (identity) or a Dense layer, got {type(shortcut).__name__}")
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise TypeError(f"Residual alpha must be a real number, got {alpha!r}")
        if not np.isfinite(alpha):
            raise ValueError(f"Residual alpha must be finite, got {alpha!r}")
        self.body = body
        self.alpha = float(alpha)
        self.shortcut = shortcut

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.body)
        shortcut = "" if self.shortcut is None else f", shortcut={self.shortcut!r}"
        return f"Residual([{inner}], alpha={self.alpha!r}{shortcut})"


Layer = Union[Dense, Activation, LayerNorm, BatchNorm, Residual]
