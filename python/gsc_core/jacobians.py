"""Per-sample Jacobian norms and singular values between points (SPEC §2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .network import Network

# Samples per SVD batch in `jacobian_spectrum`: bounds the Jacobians held at once.
_SPECTRUM_ELEMENTS = 1 << 22


def jacobian_norms(net: Network, x: Any, end: int = -1) -> np.ndarray:
    """Per-sample Frobenius norms ``||dp_end/dp_i||_F`` for every point ``i <= end``.

    Returns shape ``(end + 1, B)`` (with ``end`` resolved to ``0..N``), in the network's dtype.
    Exact, computed by identity-seeded batched VJPs in chunks, never materialising the Jacobians.
    Norms are formed from logs, so they are finite at any depth unless the true norm itself
    exceeds the dtype (then ``inf``; ``0`` where it underflows).

    Memory (checked before anything is allocated; ``MemoryError`` if it does not fit): beyond what
    the process held before the call, at most the forward trace with the activations' slopes
    (``B x (the output width of every layer, residual bodies included, plus that of every
    Activation) x itemsize`` bytes; only the tiles of samples in flight hold theirs, so with many
    samples far less), plus three copies of the ``(end + 1, B)`` result in float64, plus about
    4 MiB per thread (the VJP blocks of a tile hold at most 64 Ki values each), plus a converted
    copy of ``x`` if it is not C-contiguous in the network's dtype. Nothing grows with the
    Jacobians' size ``B x d_end x d_i``.

    >>> import numpy as np, gsc_core
    >>> net = gsc_core.mlp(depth=3, width=8, seed=0)
    >>> gsc_core.jacobian_norms(net, np.ones((2, 8))).shape
    (6, 2)
    """
    return net._native.jacobian_norms(net._x(x), net._point(end, "end"))


def _scaled_spectrum(net: Network, xa: np.ndarray, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Singular values as ``(s, e)``: the true values of sample ``b`` are ``s[b] * 2**e[b]``, with
    ``s`` in range however deep the network (the SVDs run on rescaled Jacobians, never on ``inf``)."""
    widths = net.point_widths(xa.shape[1])
    size = widths[net._resolve_point(start, "start")] * widths[net._resolve_point(end, "end")]
    # Samples are independent here (jacobian() rejects BatchNorm), so chunking the batch is exact.
    step = max(1, _SPECTRUM_ELEMENTS // size)
    start_i, end_i = net._point(start, "start"), net._point(end, "end")
    values, exps = [], []
    for b0 in range(0, max(xa.shape[0], 1), step):  # an empty batch reaches the core's clear error
        j, e = net._native.jacobian_scaled(xa[b0 : b0 + step], start_i, end_i)
        values.append(np.linalg.svd(j, compute_uv=False))
        exps.append(e)
    return np.concatenate(values, axis=0), np.concatenate(exps, axis=0)


def jacobian_spectrum(net: Network, x: Any, start: int = 0, end: int = -1) -> np.ndarray:
    """Per-sample singular values of ``dp_end/dp_start``, descending: ``(B, min(d_start, d_end))``,
    in the network's dtype: ``inf``/``0`` only where the true value overflows/underflows it (the
    SVDs run on exactly rescaled Jacobians).

    >>> import numpy as np, gsc_core
    >>> net = gsc_core.Network([gsc_core.Dense(2 * np.eye(3))])
    >>> gsc_core.jacobian_spectrum(net, np.ones((1, 3)))
    array([[2., 2., 2.]])
    """
    s, e = _scaled_spectrum(net, net._x(x), start, end)
    if not e.any():
        return s
    with np.errstate(over="ignore", under="ignore"):
        return np.ldexp(s.astype(np.float64), e[:, None]).astype(net.dtype)
