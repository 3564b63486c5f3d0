"""Per-sample Jacobian norms and singular values between points (SPEC §2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .network import Network

# Samples per SVD batch in `jacobian_spectrum`: bounds the Jacobians held at once.
_SPECTRUM_ELEMENTS = 1 << 22


def jacobian_norms(net: Network, x: Any, end: int = -1) -> np.ndarray:
    """Per-sample Frobenius norms ``||dp_end/dp_i||_F`` for every point ``i <= end``.

    Returns shape ``(end + 1, B)`` (with ``end`` resolved to ``0..N``). Exact, computed by
    identity-seeded batched VJPs in chunks, never materialising the Jacobians.

    >>> import numpy as np, gsc_core
    >>> net = gsc_core.mlp(depth=3, width=8, seed=0)
    >>> gsc_core.jacobian_norms(net, np.ones((2, 8))).shape
    (6, 2)
    """
    return net._native.jacobian_norms(net._x(x), net._point(end, "end"))


def jacobian_spectrum(net: Network, x: Any, start: int = 0, end: int = -1) -> np.ndarray:
    """Per-sample singular values of ``dp_end/dp_start``, descending: ``(B, min(d_start, d_end))``.

    >>> import numpy as np, gsc_core
    >>> net = gsc_core.Network([gsc_core.Dense(2 * np.eye(3))])
    >>> gsc_core.jacobian_spectrum(net, np.ones((1, 3)))
    array([[2., 2., 2.]])
    """
    xa = net._x(x)
    widths = net.point_widths(xa.shape[1])
    size = widths[net._resolve_point(start, "start")] * widths[net._resolve_point(end, "end")]
    # Samples are independent here (jacobian() rejects BatchNorm), so chunking the batch is exact.
    step = max(1, _SPECTRUM_ELEMENTS // size)
    parts = [np.linalg.svd(net.jacobian(xa[b0 : b0 + step], start, end), compute_uv=False) for b0 in range(0, xa.shape[0], step)]
    return np.concatenate(parts, axis=0)
