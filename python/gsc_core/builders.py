"""Building networks: initialisers and the paper's MLP and ResNet families (SPEC §5).

Random numbers come from NumPy's PCG64 seeded with ``[seed, 0x6773635F]`` — a stream of its own, so
weights are never a copy of data drawn with ``numpy.random.default_rng(seed)`` — drawn in float64 in
one fixed order (every Dense layer depth-first, its weight then its bias) and then cast to the
network's dtype: a seed gives the same network on every machine and for any thread count. A
``numpy.random.Generator`` can be passed as ``seed`` instead.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from .layers import Activation, BatchNorm, Dense, Layer, LayerNorm, Residual
from .network import Network

#: Weight initialisers (SPEC §5).
INITS = ("gaussian", "lecun", "he", "glorot_normal", "glorot_uniform", "orthogonal", "looks_linear", "pytorch_default")

_NORMS = {"layer": LayerNorm, "layernorm": LayerNorm, "layer_norm": LayerNorm, "batch": BatchNorm, "batchnorm": BatchNorm, "batch_norm": BatchNorm}


def _orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """QR of a Gaussian matrix, columns times sign(diag R); semi-orthogonal when not square
    (orthonormal rows if ``rows <= cols``, orthonormal columns otherwise), as PyTorch's ``orthogonal_``."""
    a = rng.standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    signs = np.sign(np.diag(r))
    q = q * np.where(signs == 0, 1.0, signs)
    return q.T if rows < cols else q


def _weight(rng: np.random.Generator, init: str, d_out: int, d_in: int, gain: float, position: str) -> np.ndarray:
    """One weight ``(d_out, d_in)``; ``position`` is ``first``/``hidden``/``last``/``only`` (for looks_linear)."""
    fan_in, fan_out = d_in, d_out
    if init in ("gaussian", "lecun"):
        return rng.normal(0.0, gain / np.sqrt(fan_in), size=(d_out, d_in))
    if init == "he":
        return rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), size=(d_out, d_in))
    if init == "glorot_normal":
        return rng.normal(0.0, gain * np.sqrt(2.0 / (fan_in + fan_out)), size=(d_out, d_in))
    if init == "glorot_uniform":
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        return gain * rng.uniform(-bound, bound, size=(d_out, d_in))
    if init == "pytorch_default":
        bound = 1.0 / np.sqrt(fan_in)
        return gain * rng.uniform(-bound, bound, size=(d_out, d_in))
    if init == "orthogonal":
        return gain * _orthogonal(rng, d_out, d_in)
    assert init == "looks_linear"
    # Balduzzi et al. 2017: relu(a) - relu(-a) = a makes the network an orthogonal linear map.
    if position == "only":
        return gain * _orthogonal(rng, d_out, d_in)
    if position == "first":
        u = _orthogonal(rng, d_out // 2, d_in)
        return gain * np.concatenate([u, -u], axis=0)
    if position == "last":
        u = _orthogonal(rng, d_out, d_in // 2)
        return gain * np.concatenate([u, -u], axis=1)
    u = _orthogonal(rng, d_out // 2, d_in // 2)
    return gain * np.block([[u, -u], [-u, u]])


class _DenseMaker:
    """Draws Dense layers in network order from one generator."""

    def __init__(self, init: str, seed: Any, gain: float, sigma_b: float, count: int, width: int) -> None:
        if not isinstance(init, str) or init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of: {', '.join(INITS)}")
        if init == "looks_linear" and width % 2:
            raise ValueError(f"init='looks_linear' needs an even width (it stacks [U, -U]); got width={width}")
        if not (np.isfinite(gain) and gain > 0):
            raise ValueError(f"sigma_w must be positive and finite, got {gain!r}")
        if not (np.isfinite(sigma_b) and sigma_b >= 0):
            raise ValueError(f"sigma_b must be non-negative and finite, got {sigma_b!r}")
        if init == "pytorch_default" and sigma_b != 0:
            raise ValueError("init='pytorch_default' draws biases as PyTorch does (U(+-1/sqrt(fan_in))); leave sigma_b=0")
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(None if seed is None else [_seed(seed), _SALT])
        self.init, self.gain, self.sigma_b, self.count, self.made = init, gain, sigma_b, count, 0

    def __call__(self, d_out: int, d_in: int) -> Dense:
        position = "only" if self.count == 1 else "first" if self.made == 0 else "last" if self.made == self.count - 1 else "hidden"
        self.made += 1
        weight = _weight(self.rng, self.init, d_out, d_in, self.gain, position)
        if self.init == "pytorch_default":
            bound = 1.0 / np.sqrt(d_in)
            bias = self.rng.uniform(-bound, bound, size=d_out)
        elif self.sigma_b > 0:
            bias = self.rng.normal(0.0, self.sigma_b, size=d_out)
        else:
            bias = np.zeros(d_out)
        return Dense(weight, bias)


# Salts the builders' random stream (ASCII "gsc_").
_SALT = 0x6773635F


def _seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, None or a numpy Generator, got {seed!r}")
    return int(seed)


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _activation(activation: Union[str, Activation]) -> Activation:
    return activation if isinstance(activation, Activation) else Activation(activation)


def _norm(norm: Optional[str]) -> list[Layer]:
    if norm is None:
        return []
    if not isinstance(norm, str) or norm.lower() not in _NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected None, 'layer' or 'batch'")
    return [_NORMS[norm.lower()]()]


def mlp(
    depth: int,
    width: int,
    in_dim: Optional[int] = None,
    out_dim: Optional[int] = None,
    activation: Union[str, Activation] = "tanh",
    norm: Optional[str] = None,
    init: str = "lecun",
    sigma_w: Optional[float] = None,
    sigma_b: float = 0.0,
    seed: Any = 0,
    dtype: Any = "float64",
) -> Network:
    """A plain MLP with ``depth`` Dense layers: each hidden layer is
    ``Dense -> [LayerNorm | BatchNorm] -> Activation`` (the paper's order), the last a plain Dense.

    ``in_dim``/``out_dim`` default to ``width``. ``norm`` is ``None``, ``"layer"`` or ``"batch"``.
    ``sigma_w`` is a gain on the initialiser's weights (default 1): with ``init="gaussian"`` the
    weights are ``N(0, sigma_w^2 / fan_in)``; ``orthogonal`` scales by it. Biases are
    ``N(0, sigma_b^2)`` (zeros by default, still present as in PyTorch).

    >>> import gsc_core
    >>> net = gsc_core.mlp(depth=3, width=16, in_dim=4, out_dim=2, activation="relu", init="he")
    >>> len(net), net.point_widths()
    (5, [4, 16, 16, 16, 16, 2])
    """
    depth = _positive_int(depth, "depth")
    width = _positive_int(width, "width")
    in_dim = width if in_dim is None else _positive_int(in_dim, "in_dim")
    out_dim = width if out_dim is None else _positive_int(out_dim, "out_dim")
    act = _activation(activation)
    _norm(norm)  # validate before drawing anything
    make = _DenseMaker(init, seed, 1.0 if sigma_w is None else float(sigma_w), float(sigma_b), depth, width)
    layers: list[Layer] = []
    d = in_dim
    for _ in range(depth - 1):
        layers += [make(width, d), *_norm(norm), act]
        d = width
    layers.append(make(out_dim, d))
    net = Network(layers, dtype=dtype)
    # Provenance, for the mean-field predictions of gsc_core.analyze.
    net._build_info = {"kind": "mlp", "activation": act, "norm": norm, "init": init, "gain": make.gain, "sigma_b": make.sigma_b, "depth": depth}
    return net


def resnet(
    blocks: int,
    width: int,
    in_dim: Optional[int] = None,
    out_dim: Optional[int] = None,
    activation: Union[str, Activation] = "relu",
    norm: Optional[str] = None,
    block_depth: int = 2,
    alpha: float = 1.0,
    init: str = "he",
    seed: Any = 0,
    dtype: Any = "float64",
) -> Network:
    """A residual network: ``Dense(in -> width)``, then ``blocks`` x
    ``Residual([[norm], act, Dense] * block_depth, alpha)``, then ``[norm], act, Dense(width -> out)``.

    Biases are zeros. Points: the input, the first Dense, one per block, then the head's layers.

    >>> import gsc_core
    >>> net = gsc_core.resnet(blocks=3, width=8, in_dim=4, out_dim=2)
    >>> len(net), net.point_widths()
    (6, [4, 8, 8, 8, 8, 8, 2])
    """
    blocks = _positive_int(blocks, "blocks", minimum=0)
    width = _positive_int(width, "width")
    block_depth = _positive_int(block_depth, "block_depth")
    in_dim = width if in_dim is None else _positive_int(in_dim, "in_dim")
    out_dim = width if out_dim is None else _positive_int(out_dim, "out_dim")
    act = _activation(activation)
    _norm(norm)
    make = _DenseMaker(init, seed, 1.0, 0.0, 2 + blocks * block_depth, width)
    layers: list[Layer] = [make(width, in_dim)]
    for _ in range(blocks):
        body: list[Layer] = []
        for _ in range(block_depth):
            body += [*_norm(norm), act, make(width, width)]
        layers.append(Residual(body, alpha=alpha))
    layers += [*_norm(norm), act, make(out_dim, width)]
    net = Network(layers, dtype=dtype)
    net._build_info = {"kind": "resnet", "activation": act, "norm": norm, "init": init, "gain": 1.0, "sigma_b": 0.0, "depth": blocks}
    return net
