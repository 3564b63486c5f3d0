"""Networks from PyTorch modules and from plain weight arrays.

- :func:`from_torch` (also :meth:`gsc_core.Network.from_torch`) converts an ``nn.Sequential`` stack;
  PyTorch is imported only when it is called (``pip install "gsc-core[torch]"``).
- :func:`from_arrays` (also :meth:`gsc_core.Network.from_arrays`) builds an MLP from weight
  matrices from anywhere (NumPy, JAX, Keras, a checkpoint file).

Module to layer, one top-level layer per module, so point ``i`` of the network is the output of the
i-th module of the (flattened) ``Sequential``:

=============================================  ==================================================
PyTorch                                         gsc_core
=============================================  ==================================================
``nn.Linear``                                   ``Dense(weight, bias)`` (same layout)
``nn.ReLU``, ``nn.SELU``, ``nn.SiLU``,          ``Activation("relu")``, ``"selu"``, ``"silu"``,
``nn.Tanh``, ``nn.Sigmoid``, ``nn.Identity``    ``"tanh"``, ``"sigmoid"``, ``"identity"``
``nn.LeakyReLU(negative_slope)``                ``Activation("leaky_relu", negative_slope=...)``
``nn.ELU(alpha)``                               ``Activation("elu", alpha=...)``
``nn.GELU()`` (``approximate="none"`` only)     ``Activation("gelu")`` (exact, erf form)
``nn.Softplus()`` (``beta=1`` only)             ``Activation("softplus")`` (PyTorch switches to
                                                 ``x`` above ``threshold=20``: differs by < 3e-9)
``nn.LayerNorm(d)`` (one normalised dim)        ``LayerNorm(eps, weight, bias)``
``nn.BatchNorm1d(d)`` on ``(B, d)`` inputs      ``BatchNorm(eps, weight, bias)``: batch statistics,
                                                 i.e. PyTorch's *training-mode* forward
``nn.Sequential``                               flattened into its parent
:class:`Residual` (this module)                 ``gsc_core.Residual(body, alpha, shortcut)``
=============================================  ==================================================

A ``BatchNorm1d`` in eval mode that tracks running statistics is refused (PyTorch would normalise
with the running statistics, gsc_core with the batch's): call ``model.train()`` first, or build the
module with ``track_running_stats=False``. Any other module raises ``ValueError`` naming every
unsupported module and where it is.

**The residual wrapper.** ``gsc_core.torch_interop.Residual(*body, alpha=1.0, shortcut=None)`` is an
``nn.Module`` computing ``shortcut(x) + alpha * body(x)``, with ``body`` the given modules in
sequence (an ``nn.Sequential``) and ``shortcut`` ``None`` (identity) or an ``nn.Linear``
projection, exactly :class:`gsc_core.Residual`. Use it inside your ``nn.Sequential``; it trains and
saves like any module. Only this class is converted to a residual block: other modules with skip
connections have forwards gsc_core cannot see, so they are refused rather than guessed.

>>> import numpy as np, gsc_core
>>> rng = np.random.default_rng(0)
>>> net = gsc_core.Network.from_arrays([rng.normal(size=(8, 4)), rng.normal(size=(2, 8))], activation="tanh")
>>> net.layers
[Dense(4 -> 8, bias=None), Activation('tanh'), Dense(8 -> 2, bias=None)]
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, cast

import numpy as np

from .layers import Activation, BatchNorm, Dense, LayerNorm
from .layers import Residual as _GscResidual
from .network import Network

__all__ = ["from_arrays", "from_torch", "Residual", "SUPPORTED_MODULES"]

#: The PyTorch module classes :func:`from_torch` converts (besides :class:`Residual`).
SUPPORTED_MODULES = (
    "Linear", "ReLU", "LeakyReLU", "ELU", "SELU", "GELU", "SiLU", "Tanh", "Sigmoid", "Softplus", "Identity",
    "LayerNorm", "BatchNorm1d", "Sequential",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- arrays


def _to_numpy(a: Any, what: str) -> np.ndarray:
    """An array from NumPy, lists, PyTorch tensors (detached, on the CPU) or anything array-like."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor
        t = a.detach()
        if getattr(t, "is_meta", False):
            raise ValueError(f"{what} is on the 'meta' device and holds no values; materialise the module first")
        t = t.cpu()
        if str(t.dtype) not in ("torch.float32", "torch.float64"):
            t = t.float() if t.is_floating_point() else t
        return np.array(t.numpy(), copy=True)
    return np.asarray(a)


def from_arrays(weights: Sequence[Any], biases: Any = None, activation: Any = "relu", dtype: Any = "float64", layout: str = "out_in") -> Network:
    """An MLP ``Dense(W_1, b_1), act_1, Dense(W_2, b_2), ..., act_{L-1}, Dense(W_L, b_L)``: no
    activation after the last Dense layer (append one yourself with ``Network(net.layers +
    [Activation(...)])`` if your model has it).

    - ``weights``: ``L`` matrices; ``layout="out_in"`` (default, PyTorch's): shape ``(d_out, d_in)``;
      ``layout="in_out"``: ``(d_in, d_out)`` kernels (Keras, Flax/JAX, ``x @ W`` code), transposed here.
    - ``biases``: ``None`` (no biases) or ``L`` entries, each an array of shape ``(d_out,)`` or ``None``.
    - ``activation``: a name from :data:`gsc_core.ACTIVATIONS`, an :class:`~gsc_core.Activation`,
      or a list of ``L - 1`` of them (one per hidden layer).

    Consecutive widths must match; mismatches raise ``ValueError`` naming the layer.

    >>> import numpy as np, gsc_core
    >>> ws = [np.ones((4, 3)), np.ones((3, 2))]              # (d_in, d_out) kernels
    >>> gsc_core.Network.from_arrays(ws, [np.zeros(3), None], activation="relu", layout="in_out").point_widths()
    [4, 3, 3, 2]
    """
    if layout not in ("out_in", "in_out"):
        raise ValueError(f"layout must be 'out_in' (weights (d_out, d_in), PyTorch) or 'in_out' (kernels (d_in, d_out)), got {layout!r}")
    if isinstance(weights, np.ndarray) or not isinstance(weights, Sequence):
        raise TypeError("weights must be a list of 2-D weight matrices, one per Dense layer")
    ws = []
    for k, w in enumerate(weights):
        arr = _to_numpy(w, f"weights[{k}]")
        if arr.ndim != 2:
            raise ValueError(f"weights[{k}] must be 2-D, got shape {arr.shape}")
        ws.append(arr.T if layout == "in_out" else arr)
    if not ws:
        raise ValueError("weights is empty: give at least one weight matrix")
    n = len(ws)
    if biases is None:
        bs: list = [None] * n
    else:
        if isinstance(biases, np.ndarray) or not isinstance(biases, Sequence):
            raise TypeError("biases must be None or a list with one bias vector (or None) per weight matrix")
        if len(biases) != n:
            raise ValueError(f"biases has {len(biases)} entries but there are {n} weight matrices")
        bs = [None if b is None else _to_numpy(b, f"biases[{k}]") for k, b in enumerate(biases)]
    if isinstance(activation, (str, Activation)):
        acts = [activation] * (n - 1)
    elif isinstance(activation, Sequence):
        acts = list(activation)
        if len(acts) != n - 1:
            raise ValueError(f"activation is a list of {len(acts)} but {n} weight matrices need {n - 1} (one between each pair)")
    else:
        raise TypeError(f"activation must be a name, a gsc_core.Activation or a list of them, got {type(activation).__name__}")
    hint = "" if layout == "in_out" else " (weights are (d_out, d_in) as in PyTorch; pass layout='in_out' for (d_in, d_out) kernels)"
    layers: list = []
    for k, (w, b) in enumerate(zip(ws, bs)):
        if k > 0 and w.shape[1] != ws[k - 1].shape[0]:
            shape = w.T.shape if layout == "in_out" else w.shape
            raise ValueError(f"weights[{k}] has shape {shape}: it takes inputs of width {w.shape[1]} but weights[{k - 1}] outputs width {ws[k - 1].shape[0]}{hint}")
        try:
            layers.append(Dense(w, b))
        except ValueError as exc:
            raise ValueError(f"layer {k}: {exc}") from None
        if k < n - 1:
            a = acts[k]
            layers.append(a if isinstance(a, Activation) else Activation(a))
    return Network(layers, dtype=dtype)


# ---------------------------------------------------------------------------------------------- torch


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError('gsc_core.Network.from_torch needs PyTorch: pip install "gsc-core[torch]" (or pip install torch)') from exc
    return torch


_RESIDUAL_CLASS: Optional[type] = None


def _residual_class() -> type:
    global _RESIDUAL_CLASS
    if _RESIDUAL_CLASS is None:
        nn = _torch().nn

        class Residual(nn.Module):  # type: ignore[name-defined, misc]
            """``shortcut(x) + alpha * body(x)``: ``body`` the given modules in sequence, ``shortcut``
            ``None`` (identity) or an ``nn.Linear``. Converts to :class:`gsc_core.Residual`.

            >>> import torch
            >>> from gsc_core.torch_interop import Residual
            >>> block = Residual(torch.nn.Linear(4, 4), torch.nn.Tanh(), alpha=0.5)
            >>> block(torch.zeros(2, 4)).shape
            torch.Size([2, 4])
            """

            def __init__(self, *body: Any, alpha: float = 1.0, shortcut: Any = None) -> None:
                super().__init__()
                if len(body) == 1 and isinstance(body[0], nn.Sequential):
                    self.body = body[0]
                else:
                    self.body = nn.Sequential(*body)
                if shortcut is not None and not isinstance(shortcut, nn.Linear):
                    raise TypeError(f"Residual shortcut must be None (identity) or an nn.Linear, got {type(shortcut).__name__}")
                self.shortcut = shortcut
                self.alpha = float(alpha)

            def forward(self, x: Any) -> Any:
                skip = x if self.shortcut is None else self.shortcut(x)
                return skip + self.alpha * self.body(x)

            def extra_repr(self) -> str:
                return f"alpha={self.alpha}"

        Residual.__module__ = __name__
        Residual.__qualname__ = "Residual"
        _RESIDUAL_CLASS = Residual
    return _RESIDUAL_CLASS


def __getattr__(name: str) -> Any:
    if name == "Residual":
        return _residual_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _params_dtype(module: Any, torch: Any) -> str:
    kinds = {p.dtype for p in module.parameters() if p.is_floating_point()}
    if kinds:
        return "float64" if kinds == {torch.float64} else "float32"
    return "float64" if torch.get_default_dtype() == torch.float64 else "float32"


def from_torch(module: Any, dtype: Any = None) -> Network:
    """A :class:`~gsc_core.Network` equal to ``module`` (see the module docstring for what is
    supported). ``dtype``: the network's dtype; default float64 if every floating parameter is
    float64, else float32. Parameters are copied (later training does not change the network).

    >>> torch = __import__("pytest").importorskip("torch")
    >>> import numpy as np, gsc_core
    >>> from gsc_core.torch_interop import Residual
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(),
    ...                             Residual(torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 8)),
    ...                             torch.nn.Linear(8, 2)).double()
    >>> net = gsc_core.Network.from_torch(model)
    >>> x = np.random.default_rng(0).normal(size=(5, 3))
    >>> bool(np.allclose(net.forward(x).output, model(torch.from_numpy(x)).detach().numpy()))
    True
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_torch takes a torch.nn.Module (e.g. an nn.Sequential), got {type(module).__name__}")
    residual_cls = _residual_class()
    unsupported: list[str] = []
    problems: list[str] = []

    def arr(t: Any, what: str) -> Optional[np.ndarray]:
        return None if t is None else _to_numpy(t, what)

    def convert(m: Any, where: str) -> list:
        name = type(m).__name__
        if isinstance(m, nn.Sequential):
            out: list = []
            for child_name, child in m.named_children():
                out += convert(child, f"{where}[{child_name}]")
            return out
        if isinstance(m, residual_cls):
            m = cast(Any, m)
            body = convert(m.body, f"{where}.body")
            shortcut = None
            if m.shortcut is not None:
                sc = convert(m.shortcut, f"{where}.shortcut")
                shortcut = sc[0] if sc else None
            if not body:
                problems.append(f"{where} (Residual) has an empty body")
                return []
            return [_GscResidual(body, alpha=m.alpha, shortcut=shortcut)]
        if isinstance(m, nn.Linear):
            return [Dense(arr(m.weight, f"{where}.weight"), arr(m.bias, f"{where}.bias"))]
        simple = {nn.ReLU: "relu", nn.SELU: "selu", nn.SiLU: "silu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Identity: "identity"}
        for cls, act in simple.items():
            if type(m) is cls:
                return [Activation(act)]
        if isinstance(m, nn.LeakyReLU):
            return [Activation("leaky_relu", negative_slope=float(m.negative_slope))]
        if isinstance(m, nn.ELU):
            return [Activation("elu", alpha=float(m.alpha))]
        if isinstance(m, nn.GELU):
            if getattr(m, "approximate", "none") != "none":
                problems.append(f"{where} (GELU) uses approximate={m.approximate!r}; gsc_core's gelu is the exact erf form (approximate='none')")
                return []
            return [Activation("gelu")]
        if isinstance(m, nn.Softplus):
            if float(m.beta) != 1.0:
                problems.append(f"{where} (Softplus) has beta={m.beta}; gsc_core's softplus is log(1 + e^x) (beta=1)")
                return []
            return [Activation("softplus")]
        if isinstance(m, nn.LayerNorm):
            shape = tuple(m.normalized_shape)
            if len(shape) != 1:
                problems.append(f"{where} (LayerNorm) normalises over {shape}; gsc_core normalises over the last dimension of (B, d) inputs only")
                return []
            return [LayerNorm(eps=float(m.eps), weight=arr(m.weight, f"{where}.weight"), bias=arr(m.bias, f"{where}.bias"))]
        if isinstance(m, nn.BatchNorm1d):
            if not m.training and m.track_running_stats and m.running_mean is not None:
                problems.append(
                    f"{where} (BatchNorm1d) is in eval mode and would normalise with its running statistics, but gsc_core's "
                    "BatchNorm uses the batch's statistics (training-mode forward): call model.train() before converting"
                )
                return []
            return [BatchNorm(eps=float(m.eps), weight=arr(m.weight, f"{where}.weight"), bias=arr(m.bias, f"{where}.bias"))]
        unsupported.append(f"{where} ({name})")
        return []

    layers = convert(module, "module")
    if unsupported:
        hint = ""
        if any("(Dropout" in u for u in unsupported):
            hint = " (Dropout is the identity in eval mode: leave it out, e.g. nn.Sequential(*[m for m in model if not isinstance(m, nn.Dropout)]))"
        raise ValueError(
            "Network.from_torch cannot convert " + ", ".join(unsupported) + ". Supported: " + ", ".join(SUPPORTED_MODULES)
            + " and gsc_core.torch_interop.Residual (see its docstring)" + hint
        )
    if problems:
        raise ValueError("Network.from_torch: " + "; ".join(problems))
    if not layers:
        raise ValueError("Network.from_torch: the module has no layers to convert")
    return Network(layers, dtype=_params_dtype(module, torch) if dtype is None else dtype)
