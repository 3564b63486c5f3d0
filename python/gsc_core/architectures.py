"""The architectures of Philipp, Song & Carbonell's Figure 1 (arXiv 1712.05577), at initialisation.

``depth`` counts Dense layers (the paper's compositional depth). The plain, layer- and
batch-normalised MLPs are :func:`gsc_core.mlp` with LeCun init (He for ReLU); the residual nets add
identity skip connections around pairs of ``[norm], act, Dense`` to the batch-ReLU and layer-tanh
MLPs; looks-linear ReLU starts as an orthogonal linear map (Balduzzi et al. 2017).
"""

from __future__ import annotations

from typing import Any, Callable

from .builders import mlp, resnet
from .network import Network

# name -> (builder(depth, width, in_dim, out_dim, seed, dtype), needs whole-batch mode)
_CATALOGUE: dict[str, tuple[Callable[..., Network], bool]] = {
    "ReLU": (lambda **k: mlp(activation="relu", init="he", **k), False),
    "tanh": (lambda **k: mlp(activation="tanh", init="lecun", **k), False),
    "SELU": (lambda **k: mlp(activation="selu", init="lecun", **k), False),
    "layer-ReLU": (lambda **k: mlp(activation="relu", norm="layer", init="he", **k), False),
    "layer-tanh": (lambda **k: mlp(activation="tanh", norm="layer", init="lecun", **k), False),
    "batch-ReLU": (lambda **k: mlp(activation="relu", norm="batch", init="he", **k), True),
    "batch-tanh": (lambda **k: mlp(activation="tanh", norm="batch", init="lecun", **k), True),
    "ResNet-ReLU": (lambda depth, **k: resnet(blocks=max(depth - 2, 0) // 2, activation="relu", norm="batch", init="he", **k), True),
    "ResNet-tanh": (lambda depth, **k: resnet(blocks=max(depth - 2, 0) // 2, activation="tanh", norm="layer", init="lecun", **k), False),
    "looks-linear ReLU": (lambda **k: mlp(activation="relu", init="looks_linear", **k), False),
}

#: The architecture names, in the paper's order.
ARCHITECTURES = tuple(_CATALOGUE)


def paper_network(name: str, depth: int = 50, width: int = 100, in_dim: Any = None, out_dim: Any = None, seed: int = 0, dtype: Any = "float64") -> Network:
    """One of :data:`ARCHITECTURES` with ``depth`` Dense layers of width ``width``.

    >>> import gsc_core
    >>> net = gsc_core.architectures.paper_network("ResNet-tanh", depth=6, width=8)
    >>> sum(isinstance(l, gsc_core.Residual) for l in net.layers)
    2
    """
    _check_name(name)
    if isinstance(depth, bool) or not isinstance(depth, int) and not hasattr(depth, "__index__"):
        raise TypeError(f"depth must be an integer, got {depth!r}")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")  # ResNets would silently get 0 blocks
    build, _ = _CATALOGUE[name]
    return build(depth=depth, width=width, in_dim=in_dim, out_dim=out_dim, seed=seed, dtype=dtype)


def analysis_mode(name: str) -> str:
    """``"batch"`` for the BatchNorm architectures (samples are coupled), else ``"sample"``."""
    _check_name(name)
    return "batch" if _CATALOGUE[name][1] else "sample"


def _check_name(name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError(f"the architecture must be given by name (one of: {', '.join(ARCHITECTURES)}), got {name!r}")
    if name not in _CATALOGUE:
        raise ValueError(f"unknown architecture {name!r}; expected one of: {', '.join(ARCHITECTURES)}")
