"""The gradient scale coefficient (GSC) and collapsing-domain statistics (SPEC §3, §4).

This is where the GSC is computed. The Rust core returns natural logs of norms (per sample, per
point), exact and free of overflow however deep the network; this module composes them:

- to the loss, per sample: ``G_b(i -> loss) = (||dl_b/dp_{i,b}|| / sqrt(d_i)) ||p_{i,b}|| / |l_b|``;
- between points, per sample: ``G_b(i -> j) = ||dp_{j,b}/dp_{i,b}||_qm ||p_{i,b}|| / ||p_{j,b}||``
  with ``||A||_qm = ||A||_F / sqrt(d_i)``;
- ``mode="sample"`` summarises over the batch by the geometric mean of the finite positive values
  (samples with a zero or non-finite value are left out, counted, and reported by a
  :class:`GSCWarning`); ``mode="batch"`` treats the batch as one input vector.

All results are float64 NumPy arrays, whatever the network's dtype.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from ._arrays import as_classes, as_float, as_real
from .network import LOSSES, Network

MODES = ("sample", "batch")


class GSCWarning(UserWarning):
    """Some samples had a zero or non-finite GSC and were left out of the geometric mean."""


# ---------------------------------------------------------------------------- helpers


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected 'sample' or 'batch'")


def _require_per_sample(net: Network, what: str) -> None:
    layers = net._native.batchnorm_layers
    if layers:
        raise ValueError(
            f"{what} with mode='sample' needs per-sample gradients, but {layers[0]} couples the samples "
            f"of a batch; use mode='batch' (the batch as one input, as the paper does with BatchNorm)"
        )


def _targets(net: Network, x: np.ndarray, y: Any, loss: str) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of: {', '.join(LOSSES)}")
    if loss == "mse":
        return (None if y is None else as_float(y, "y", net.dtype, 2)), None
    if y is None:
        raise ValueError("cross_entropy needs integer class targets y of shape (B,)")
    return None, as_classes(y, x.shape[0])


def _profile(net: Network, x: Any, y: Any, loss: str) -> tuple[np.ndarray, dict]:
    xa = net._x(x)
    values, classes = _targets(net, xa, y, loss)
    return xa, net._native.profile(xa, loss, values, classes)


@np.errstate(all="ignore")
def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _log_geometric_mean(log_values: np.ndarray, what: str, warn: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Log of the geometric mean over axis 0 (samples) of the values whose log is finite (finite
    positive values), and how many were left out; NaN where none is left."""
    finite = np.isfinite(log_values)
    counts = finite.sum(axis=0)
    left_out = log_values.shape[0] - counts
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_log = np.where(finite, log_values, 0.0).sum(axis=0) / counts
        result = np.where(counts > 0, mean_log, np.nan)
    if warn and left_out.any():
        worst = int(left_out.max())
        warnings.warn(
            GSCWarning(
                f"{what}: left {worst} of {log_values.shape[0]} samples out of the geometric mean at some points "
                f"(zero or non-finite per-sample GSC, e.g. a zero loss or dead units); points with none left are NaN"
            ),
            stacklevel=3,
        )
    return result, left_out


# ---------------------------------------------------------------------------- GSC to the loss


@np.errstate(all="ignore")  # -inf - -inf = NaN is a left-out sample, reported by GSCWarning
def _log_gsc_to_loss_per_sample(prof: dict, widths: np.ndarray) -> np.ndarray:
    """``ln G_b(i -> loss)``, shape ``(B, N+1)``. ``ln l_b`` comes from the core, exact also where
    ``l_b`` itself over- or underflows the dtype (e.g. inputs of magnitude 1e300)."""
    log_loss = prof["log_losses"]
    logs = prof["grad_log_norms"] - 0.5 * np.log(widths)[:, None] + prof["point_log_norms"] - log_loss[None, :]
    return logs.T


@np.errstate(all="ignore")
def _log_gsc_to_loss_batch(prof: dict, widths: np.ndarray) -> np.ndarray:
    """``ln G(i -> loss)`` with the batch as one input, shape ``(N+1,)``."""
    batch = prof["losses"].shape[0]
    log_loss = _logsumexp(prof["log_losses"], axis=0)  # ln L = ln sum_b l_b (every l_b >= 0)
    grad, point = prof["grad_log_batch_norms"], prof["point_log_batch_norms"]  # ln of batch norms
    return grad - 0.5 * np.log(batch * widths) + point - log_loss


def _log_gsc_from_profile(net: Network, prof: dict, d0: int, mode: str, warn: bool = True) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(ln GSC to the loss (N+1,), samples left out per point, per-sample ln G (B, N+1) or None).

    Summaries are NaN where no sample has a finite positive value (sample mode) or where the
    batch-mode value is undefined (a zero loss or a zero gradient)."""
    widths = np.asarray(net.point_widths(d0), dtype=np.float64)
    per_sample = None if net._native.batchnorm_layers else _log_gsc_to_loss_per_sample(prof, widths)
    if mode == "sample":
        _require_per_sample(net, "gsc")
        assert per_sample is not None
        values, left_out = _log_geometric_mean(per_sample, "gsc", warn)
        return values, left_out, per_sample
    logs = _log_gsc_to_loss_batch(prof, widths)
    undefined = ~np.isfinite(logs)
    if warn and undefined.any():
        warnings.warn(GSCWarning("gsc (batch mode): the GSC is undefined (zero loss or zero gradient) at some points; they are NaN"), stacklevel=3)
    return np.where(undefined, np.nan, logs), undefined.astype(np.int64), per_sample


def _exp(logs: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """``exp`` that overflows to ``inf`` silently: the true value is beyond float64."""
    if logs is None:
        return None
    with np.errstate(over="ignore"):
        return np.exp(logs)


def gsc(net: Network, x: Any, y: Any = None, loss: str = "mse", mode: str = "sample", *, log: bool = False) -> np.ndarray:
    """The GSC of every point to the loss, ``(N+1,)`` (the paper's Figure 1A).

    ``mode="sample"``: the geometric mean over samples of ``G_b(i -> loss)``; samples with a zero or
    non-finite value are left out and reported by a :class:`GSCWarning`. ``mode="batch"``: the
    batch as one input vector (needed with BatchNorm). ``log=True`` returns ``ln G``, finite even
    where ``G`` itself exceeds float64 (then ``G`` is reported as ``inf``).

    >>> import numpy as np, gsc_core
    >>> net = gsc_core.mlp(depth=3, width=8, seed=0)
    >>> g = gsc_core.gsc(net, np.random.default_rng(0).normal(size=(4, 8)))
    >>> g.shape, bool(np.all(g > 0))
    ((6,), True)
    """
    _check_mode(mode)
    if mode == "sample":
        _require_per_sample(net, "gsc")
    xa, prof = _profile(net, x, y, loss)
    logs = _log_gsc_from_profile(net, prof, xa.shape[1], mode)[0]
    return logs if log else _exp(logs)


def gsc_per_sample(net: Network, x: Any, y: Any = None, loss: str = "mse", *, log: bool = False) -> np.ndarray:
    """Per-sample ``G_b(i -> loss)``, shape ``(B, N+1)`` (``log=True``: ``ln G_b``)."""
    _require_per_sample(net, "gsc_per_sample")
    xa, prof = _profile(net, x, y, loss)
    widths = np.asarray(net.point_widths(xa.shape[1]), dtype=np.float64)
    logs = _log_gsc_to_loss_per_sample(prof, widths)
    return logs if log else _exp(logs)


# ---------------------------------------------------------------------------- GSC between points


def gsc_matrix(
    net: Network,
    x: Any,
    mode: str = "sample",
    probes: Optional[int] = None,
    seed: int = 0,
    return_stderr: bool = False,
    *,
    log: bool = False,
) -> Any:
    """``G(i -> j)`` between all points: ``(N+1, N+1)`` with entry ``[i, j]`` for ``i < j``, 1 on the
    diagonal, NaN below.

    Exact when ``probes is None`` (one chunked, identity-seeded VJP sweep per end point). With
    ``probes=k``, ``||J||_F^2`` is estimated from ``k`` Gaussian JVPs per start point
    (``E||J v||^2 = ||J||_F^2``: the mean of the probes is unbiased; its log is corrected to second
    order for Jensen's bias, so ``ln G`` and the sample-mode geometric mean are unbiased up to
    ``O(1/k^2)``), which is the only option in ``mode="batch"`` with BatchNorm. With ``return_stderr=True`` returns ``(matrix, stderr)``: the estimator's standard
    error (delta method; zeros when exact; with ``log=True`` the standard error of ``ln G``).
    ``log=True`` returns ``ln G`` (0 on the diagonal), finite even where ``G`` exceeds float64.

    >>> import numpy as np, gsc_core
    >>> net = gsc_core.mlp(depth=2, width=4, seed=0)
    >>> m = gsc_core.gsc_matrix(net, np.random.default_rng(0).normal(size=(3, 4)))
    >>> m.shape, float(m[0, 0]), bool(np.isnan(m[1, 0]))
    ((4, 4), 1.0, True)
    """
    _check_mode(mode)
    if mode == "sample":
        _require_per_sample(net, "gsc_matrix")
    if probes is not None:
        if isinstance(probes, (bool, np.bool_)) or not isinstance(probes, (int, np.integer)) or not 1 <= probes < 2**63:
            raise ValueError(f"probes must be None (exact) or a positive integer, got {probes!r}")
    elif mode == "batch" and net._native.batchnorm_layers:
        raise ValueError(
            f"the exact batch-mode Jacobian norm is not computed when {net._native.batchnorm_layers[0]} couples the samples; "
            f"pass probes=k for an unbiased Gaussian-probe estimate"
        )
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in 0..2**64, got {seed!r}")
    xa = net._x(x)
    widths = np.asarray(net.point_widths(xa.shape[1]), dtype=np.float64)
    n1 = widths.shape[0]
    batch = xa.shape[0]
    if probes is None:
        log_sq, point_logs = net._native.jacobian_log_sq_norm_matrix(xa)
        rel_var_sample = np.zeros_like(log_sq)
        rel_var_batch = np.zeros((n1, n1))
        k = 1
        log_sq_batch = _logsumexp(np.where(np.isnan(log_sq), -np.inf, log_sq), axis=2)
    else:
        est = net._native.probe_log_sq_norms(xa, int(probes), int(seed))
        k = int(probes)
        point_logs = est["point_log_norms"]
        rel_var_sample, rel_var_batch = est["sample_rel_var"], est["batch_rel_var"]
        # The mean of k probes estimates ||J||_F^2 without bias, but its log is biased low by
        # relvar / (2k) (Jensen); correct to second order so that ln G, and the geometric mean
        # over samples built from it, are unbiased up to O(1/k^2).
        with np.errstate(invalid="ignore"):
            log_sq = est["sample_log_mean"] + (np.nan_to_num(rel_var_sample) / (2 * k) if k > 1 else 0.0)
            log_sq_batch = est["batch_log_mean"] + (np.nan_to_num(rel_var_batch) / (2 * k) if k > 1 else 0.0)
    with np.errstate(all="ignore"):
        out, err = _compose_matrix(log_sq, log_sq_batch, point_logs, rel_var_sample, rel_var_batch, widths, batch, k, mode)
    if not log:
        out = _exp(out)
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.where(np.isnan(out), np.nan, out * err)
    return (out, err) if return_stderr else out


def _compose_matrix(log_sq, log_sq_batch, point_logs, rel_var_sample, rel_var_batch, widths, batch, k, mode):
    """``ln G(i -> j)`` and the standard error of ``ln G`` from the core's log norms."""
    n1 = widths.shape[0]
    upper = np.triu(np.ones((n1, n1), dtype=bool), k=1)
    out = np.full((n1, n1), np.nan)
    err = np.full((n1, n1), np.nan)
    log_width = 0.5 * np.log(widths)
    if mode == "sample":
        # [i, j, b]: ln G_b(i -> j)
        logs = 0.5 * log_sq - log_width[:, None, None] + point_logs[:, None, :] - point_logs[None, :, :]
        per_pair = np.moveaxis(logs, 2, 0)  # (B, i, j)
        values, left_out = _log_geometric_mean(np.where(upper[None], per_pair, np.nan), "gsc_matrix", warn=False)
        if (left_out[upper] > 0).any():
            warnings.warn(GSCWarning(f"gsc_matrix: left up to {int(left_out[upper].max())} of {batch} samples out of the geometric mean at some point pairs (zero or non-finite values)"), stacklevel=3)
        out[upper] = values[upper]
        # var(ln G_b) ~ relvar(F_b) / (4 k); the mean over n samples divides the sum by n^2.
        finite = np.isfinite(per_pair)
        var = np.where(finite, np.moveaxis(rel_var_sample, 2, 0), 0.0).sum(axis=0) / (4 * k) / np.maximum(finite.sum(axis=0), 1) ** 2
    else:
        point_batch = _logsumexp(2 * point_logs, axis=1) / 2
        logs = 0.5 * log_sq_batch - 0.5 * np.log(batch * widths)[:, None] + point_batch[:, None] - point_batch[None, :]
        out[upper] = logs[upper]
        if np.isnan(logs[upper]).any():
            warnings.warn(GSCWarning("gsc_matrix (batch mode): G(i -> j) is undefined (0/0: a zero point and a zero Jacobian) at some point pairs; they are NaN"), stacklevel=3)
        var = rel_var_batch / (4 * k)
    # `out` holds ln G; the standard error of ln G is sqrt(var), that of G is G sqrt(var).
    err[upper] = np.sqrt(var)[upper]
    np.fill_diagonal(out, 0.0)
    np.fill_diagonal(err, 0.0)
    return out, err


# ---------------------------------------------------------------------------- explosion rate


def _fit_explosion(logs: np.ndarray, dense_after: np.ndarray) -> tuple[float, float]:
    """Least squares ``ln G(i -> loss) = ln c + n_i ln r`` over points with a finite log GSC."""
    keep = np.isfinite(logs)
    n = np.asarray(dense_after, dtype=np.float64)[keep]
    if keep.sum() < 2 or np.ptp(n) == 0:
        return float("nan"), float("nan")
    # closed form (np.polyfit's LAPACK call would wake BLAS threads that then spin)
    y = logs[keep]
    slope = float(np.sum((n - n.mean()) * (y - y.mean())) / np.sum((n - n.mean()) ** 2))
    intercept = float(y.mean() - slope * n.mean())
    with np.errstate(over="ignore"):
        return float(np.exp(slope)), float(np.exp(intercept))


def explosion_rate(net: Network, x: Any, y: Any = None, loss: str = "mse", mode: str = "sample") -> tuple[float, float]:
    """Fits ``ln G(i -> loss) = ln c + n_i ln r`` by least squares, ``n_i`` the number of Dense
    layers between point ``i`` and the output (residual bodies counted, shortcuts not); returns
    ``(r, c)``: ``r > 1`` means gradients grow by ``r`` per Dense layer towards the input.
    """
    logs = gsc(net, x, y, loss, mode, log=True)
    return _fit_explosion(logs, np.asarray(net._native.dense_layers_after()))


# ---------------------------------------------------------------------------- domain statistics


def preactivation_stats(net: Network, x: Any) -> dict:
    """Collapsing-domain statistics of every Activation layer's input ``Z`` (SPEC §4).

    Returns ``{"std", "sign_diversity"}`` (one value per Activation layer: the mean over units)
    and ``{"unit_std", "unit_sign_diversity"}`` (lists of per-unit arrays). The std is the
    population std over the batch; sign diversity is ``min(P, N) / (P + N)`` (0 where ``P + N = 0``).

    >>> import numpy as np, gsc_core
    >>> net = gsc_core.mlp(depth=3, width=8, seed=0)
    >>> s = gsc_core.preactivation_stats(net, np.random.default_rng(0).normal(size=(64, 8)))
    >>> len(s["std"]), bool(np.all(s["sign_diversity"] <= 0.5))
    (2, True)
    """
    unit_std, unit_sign = net._native.preactivation_stats(net._x(x))
    return _stats_dict(unit_std, unit_sign)


def _stats_dict(unit_std: list, unit_sign: list) -> dict:
    return {
        "std": np.array([u.mean() for u in unit_std], dtype=np.float64),
        "sign_diversity": np.array([u.mean() for u in unit_sign], dtype=np.float64),
        "unit_std": list(unit_std),
        "unit_sign_diversity": list(unit_sign),
    }


def dilution(net: Network, x: Any) -> np.ndarray:
    """Dilution of every residual block (execution order): ``Q||s(x)|| / Q||alpha body(x)||``, the
    ratio of the quadratic means over the batch of the shortcut's and the scaled body's output
    norms. A block diluted by ``k`` cuts gradient explosion by about ``k^2 + 1`` (Philipp et al.).
    ``inf`` where the body's output is zero, NaN (undefined, 0/0) where both are."""
    xa, prof = _profile(net, x, None, "mse")
    return np.asarray(prof["dilution"], dtype=np.float64)


def spectrum_summary(singular_values: np.ndarray) -> dict:
    """Summaries of per-sample singular values ``(B, k)`` (dynamical isometry): per sample the mean
    squared singular value, its variance, and the condition number ``s_max / s_min`` (``inf`` for a
    singular Jacobian, as ``numpy.linalg.cond``); plus their means over the batch (``*_mean``).
    Values that overflow float64 are ``inf``; singular values given as ``inf`` (beyond the dtype)
    leave the variances undefined (NaN): :func:`gsc_core.analyze` summarises rescaled ones instead."""
    s = as_real(singular_values, "singular_values")
    if s.ndim != 2 or 0 in s.shape:
        raise ValueError(f"singular_values must be a non-empty 2-D array (B, k), one row per sample; got shape {s.shape}")
    s = s.astype(np.float64)
    if np.isnan(s).any() or (s < 0).any():
        raise ValueError("singular_values must be non-negative numbers (no NaN)")
    return _spectrum_summary_scaled(s, np.zeros(s.shape[0], dtype=np.int64))


def _spectrum_summary_scaled(s: np.ndarray, exps: np.ndarray) -> dict:
    """:func:`spectrum_summary` of the singular values ``s[b] * 2**exps[b]`` (descending rows),
    exact where the plain formulas would overflow."""
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(all="ignore"):
        sq = s**2
        mean_sq, var_sq = sq.mean(axis=1), sq.var(axis=1)
        cond = np.where(s[:, -1] > 0, s[:, 0] / s[:, -1], np.inf)
        shifted = np.asarray(exps) != 0
        plain_ok = np.isfinite(mean_sq) & np.isfinite(var_sq) & (s[:, 0] < 1e150) & (s[:, 0] > 1e-150)
        redo = (shifted | ~plain_ok) & np.all(np.isfinite(s), axis=1) & (s[:, 0] > 0)
        if redo.any():
            # relative to the largest singular value: r in [0, 1], the scale moved into the logs
            top = s[redo, :1]
            r2 = (s[redo] / top) ** 2
            log_top = np.log(top[:, 0]) + np.asarray(exps, dtype=np.float64)[redo] * np.log(2.0)
            mean_sq[redo] = np.exp(2 * log_top + np.log(r2.mean(axis=1)))
            var_sq[redo] = np.exp(4 * log_top + np.log(r2.var(axis=1)))
        out = {"mean_sq": mean_sq, "var_sq": var_sq, "condition": cond}
        out.update({f"{k}_mean": float(np.mean(v)) for k, v in list(out.items())})
    return out
