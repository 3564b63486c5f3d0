"""Turning user input into the arrays the native core takes (SPEC §1, §8).

Real numeric input (bool, int, unsigned, float of any width) is converted to the network's dtype;
complex, object, string, and other non-numeric arrays raise ``TypeError``. Any memory layout
(Fortran order, slices, negative strides) is accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32)}


def resolve_dtype(dtype: Any) -> np.dtype:
    """``"float64"``/``"float32"`` (or the NumPy types) -> ``np.dtype``."""
    try:
        d = np.dtype(dtype)
    except TypeError as e:
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}") from e
    if d not in DTYPES.values():
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    return d


def as_real(a: Any, name: str) -> np.ndarray:
    """``a`` as an ndarray of a real numeric kind, without changing its dtype yet."""
    arr = np.asarray(a)
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} is complex ({arr.dtype}); gsc_core works with real arrays")
    if kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr


def as_float(a: Any, name: str, dtype: np.dtype, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``a`` converted to ``dtype``, C-contiguous, with ``ndim`` dimensions."""
    arr = as_real(a, name)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > dtype.itemsize:
        with np.errstate(over="ignore"):
            out = np.ascontiguousarray(arr, dtype=dtype)
        if not np.all(np.isfinite(out)) and np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(out))[0]
            raise ValueError(
                f"{name} has values too large for {dtype} (first at index {tuple(int(i) for i in bad)}); "
                f"use dtype='float64'"
            )
        return out
    return np.ascontiguousarray(arr, dtype=dtype)


def as_classes(y: Any, batch: int) -> np.ndarray:
    """Integer class labels of shape ``(batch,)`` as int64 (integral floats are accepted)."""
    arr = as_real(y, "y")
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(f"cross_entropy needs y of shape ({batch},) with one class per sample, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("cross_entropy class labels y must be integers")
    return np.ascontiguousarray(arr, dtype=np.int64)
