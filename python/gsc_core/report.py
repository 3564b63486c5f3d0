"""`analyze`: everything about a network's gradient flow in one object (SPEC §7)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from . import analysis
from .jacobians import _scaled_spectrum
from .network import Network


@dataclass
class Report:
    """The result of :func:`analyze`. Arrays are float64; ``N + 1`` points, one entry per Dense,
    Activation or Residual layer where stated.

    - ``gsc`` ``(N+1,)``: GSC of every point to the loss (``mode``), ``log_gsc`` its natural log
      (finite where ``gsc`` overflows to ``inf``); ``gsc_per_sample`` ``(B, N+1)`` (``None`` with
      BatchNorm, where per-sample values do not exist); ``gsc_left_out``: samples left out per point;
    - ``activation_norm`` / ``gradient_norm`` ``(N+1,)``: ``||P_i||_F`` and ``||dL/dP_i||_F`` over the batch;
    - ``weight_gradient_ratio``: ``||dL/dW||_F / ||W||_F`` per Dense layer (depth-first);
    - ``pre_activation_std``, ``sign_diversity``: per Activation layer, means over units
      (``unit_std``, ``unit_sign_diversity``: the per-unit arrays);
    - ``explosion_rate``, ``explosion_intercept``: ``r`` and ``c`` of ``G(i) ~ c r^{n_i}``;
    - ``dilution``: per residual block; ``spectrum``: input-output singular values ``(B, k)`` or None;
    - ``theory``: mean-field predictions for networks built by :func:`gsc_core.mlp` with Gaussian
      weights and no normalisation, else None.
    """

    mode: str
    loss: str
    losses: np.ndarray
    gsc: np.ndarray
    log_gsc: np.ndarray
    gsc_left_out: np.ndarray
    gsc_per_sample: Optional[np.ndarray]
    activation_norm: np.ndarray
    gradient_norm: np.ndarray
    weight_gradient_ratio: np.ndarray
    pre_activation_std: np.ndarray
    sign_diversity: np.ndarray
    unit_std: list
    unit_sign_diversity: list
    explosion_rate: float
    explosion_intercept: float
    dense_layers_after: np.ndarray
    point_widths: list
    dilution: np.ndarray
    spectrum: Optional[np.ndarray]
    spectrum_summary: Optional[dict]
    notes: list = field(default_factory=list)
    # What the mean-field predictions need (cheap statistics of the input); `theory` computes the
    # predictions on first access, so sweeps that never look at them do not pay for the integrals.
    _theory_inputs: Optional[dict] = field(default=None, repr=False, compare=False)
    _theory_cache: Any = field(default=None, repr=False, compare=False)

    @property
    def theory(self) -> Optional[dict]:
        """Mean-field predictions (see :func:`_theory_from`), or None where mean field does not apply."""
        if self._theory_cache is None:
            self._theory_cache = (_theory_from(self._theory_inputs),) if self._theory_inputs is not None else (None,)
        return self._theory_cache[0]

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict:
        """Plain floats and lists (JSON-serialisable; non-finite floats become ``None``)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__ if not k.startswith("_")}
        return _plain({**fields, "theory": self.theory, "verdict": self.verdict()})

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def verdict(self) -> str:
        """One word, checked in this order (thresholds in :data:`VERDICT_THRESHOLDS`):
        ``collapses`` if the last Activation layer's mean sign diversity is below 0.1 or its mean
        pre-activation std fell below 0.2 x the first layer's; ``explodes`` if the explosion rate
        exceeds 1.024 per Dense layer (x3.3 over 50 layers); ``vanishes`` if it is below 1/1.024;
        ``undefined`` if no rate can be fitted (fewer than two points with a defined GSC, e.g. a zero
        loss, or no Dense layer); else ``healthy``. At depth 50 the rate threshold sits between residual networks, whose GSC
        grows only polynomially thanks to dilution (fitted rate about 1.02 there, falling with depth),
        and SELU (about 1.026-1.032; mean field predicts sqrt(chi_1) = 1.035)."""
        t = VERDICT_THRESHOLDS
        sign, std = self.sign_diversity, self.pre_activation_std
        if len(sign) and (sign[-1] < t["collapsed_sign_diversity"] or (std[0] > 0 and std[-1] / std[0] < t["collapsed_std_ratio"])):
            return "collapses"
        r = self.explosion_rate
        if np.isfinite(r) and r > t["explodes_rate"]:
            return "explodes"
        if np.isfinite(r) and r < t["vanishes_rate"]:
            return "vanishes"
        if not np.isfinite(r):
            return "undefined"
        return "healthy"

    def summary(self) -> str:
        """A readable table: per point the GSC to the loss, activation and gradient norms; per
        layer the domain statistics; then the fitted explosion rate and the spectrum."""
        with np.errstate(over="ignore"):
            mean_loss = np.mean(self.losses)
        lines = [f"gsc_core report: {len(self.gsc) - 1} layers, B={len(self.losses)}, loss={self.loss}, mode={self.mode}, "
                 f"mean loss {_fmt(mean_loss, '.4g')}"]
        lines.append(f"{'point':>5} {'width':>5} {'GSC->loss':>11} {'||P||_F':>11} {'||dL/dP||_F':>11}")
        for i, (g, a, d) in enumerate(zip(self.gsc, self.activation_norm, self.gradient_norm)):
            lines.append(f"{i:>5} {self.point_widths[i]:>5} {_fmt(g, '.4g'):>11} {a:>11.4g} {d:>11.4g}")
        if len(self.pre_activation_std):
            lines.append(f"{'activation':>10} {'pre-act std':>12} {'sign div.':>10}")
            for k, (s, d) in enumerate(zip(self.pre_activation_std, self.sign_diversity)):
                lines.append(f"{k:>10} {s:>12.4g} {d:>10.4f}")
        if np.isfinite(self.explosion_rate):
            lines.append(f"explosion rate r = {_fmt(self.explosion_rate, '.4g')} per Dense layer (intercept c = {_fmt(self.explosion_intercept, '.4g')}); verdict: {self.verdict()}")
        else:
            lines.append(f"explosion rate: undefined (fewer than two points with a defined GSC, or no Dense layer); verdict: {self.verdict()}")
        if len(self.weight_gradient_ratio):
            w = self.weight_gradient_ratio
            lines.append(f"||dL/dW|| / ||W||: first Dense {_fmt(w[0], '.4g')}, last Dense {_fmt(w[-1], '.4g')}")
        if len(self.dilution):
            lines.append("dilution per residual block: " + ", ".join(_fmt(d, ".3g") for d in self.dilution))
        if self.spectrum_summary is not None:
            s = self.spectrum_summary
            lines.append(f"input-output Jacobian: mean squared singular value {_fmt(s['mean_sq_mean'], '.4g')}, "
                         f"its variance {_fmt(s['var_sq_mean'], '.4g')}, condition number {_fmt(s['condition_mean'], '.4g')} (batch means)")
        if self.theory is not None:
            t = self.theory
            lines.append(f"mean field ({t['activation']}, sigma_w^2={_fmt(t['sigma_w2'], '.4g')}, sigma_b^2={_fmt(t['sigma_b2'], '.4g')}): "
                         f"q*={_fmt(t['q_star'], '.4g')}, chi_1={_fmt(t['chi1'], '.4g')}, predicted GSC factor per layer sqrt(chi_1)={_fmt(t['gsc_factor'], '.4g')}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def plot(self, kind: str = "overview", net: Optional[Network] = None, **kwargs: Any) -> Any:
        """A matplotlib figure of this report (needs ``pip install "gsc-core[plot]"``); see
        :mod:`gsc_core.plot`. ``kind``: ``"overview"`` (GSC, pre-activation std, sign diversity and
        the spectrum on four panels), ``"gsc"``, ``"domain"``, ``"spectrum"`` or ``"theory"``. Pass
        the analysed ``net`` to place Activation layers at their compositional depth; other keyword
        arguments (``fig``, ``label``, ...) go to the plotting function.
        Save with ``report.plot().savefig("report.png")``."""
        from . import plot as _plot

        return _plot.plot_report(self, kind, net=net, **kwargs)

    def __repr__(self) -> str:
        return (f"Report(points={len(self.gsc)}, mode={self.mode!r}, gsc[0]={self.gsc[0]:.4g}, "
                f"explosion_rate={self.explosion_rate:.4g}, verdict={self.verdict()!r})")


#: Thresholds of :meth:`Report.verdict`, per Dense layer and at the last Activation layer.
VERDICT_THRESHOLDS = {
    "explodes_rate": 1.024,
    "vanishes_rate": 1 / 1.024,
    "collapsed_sign_diversity": 0.1,
    "collapsed_std_ratio": 0.2,
}


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def analyze(net: Network, x: Any, y: Any = None, loss: str = "mse", mode: str = "sample", spectrum: bool = True) -> Report:
    """Analyses a network's gradient flow on a batch: one forward and one backward pass for
    everything but the spectrum (which needs one batched Jacobian).

    >>> import numpy as np, gsc_core
    >>> net = gsc_core.mlp(depth=10, width=32, activation="tanh", init="gaussian", sigma_w=1.5 ** 0.5, seed=0)
    >>> report = gsc_core.analyze(net, np.random.default_rng(0).normal(size=(64, 32)))
    >>> report.gsc.shape, report.spectrum.shape, sorted(report.theory)[:3]
    ((20,), (64, 32), ['activation', 'c', 'chi'])
    """
    analysis._check_mode(mode)
    if mode == "sample":
        analysis._require_per_sample(net, "analyze")
    xa, prof = analysis._profile(net, x, y, loss)
    log_gsc, left_out, log_per_sample = analysis._log_gsc_from_profile(net, prof, xa.shape[1], mode)
    dense_after = np.asarray(net._native.dense_layers_after())
    rate, intercept = analysis._fit_explosion(log_gsc, dense_after)
    stats = analysis._stats_dict(prof["unit_std"], prof["unit_sign_diversity"])
    notes = []
    spec = summ = None
    if spectrum:
        if net._native.batchnorm_layers:
            notes.append(f"no Jacobian spectrum: {net._native.batchnorm_layers[0]} couples the samples, so per-sample Jacobians do not exist")
        else:
            # singular values of rescaled Jacobians: exact summaries at any depth
            scaled, exps = _scaled_spectrum(net, xa, 0, -1)
            spec = scaled
            if exps.any():
                with np.errstate(over="ignore", under="ignore"):
                    spec = np.ldexp(scaled.astype(np.float64), exps[:, None]).astype(net.dtype)
            summ = analysis._spectrum_summary_scaled(scaled, exps)
    notes += _undefined_notes(prof, log_gsc, left_out, mode)
    with np.errstate(over="ignore"):
        ratio = np.exp(np.asarray(prof["weight_grad_log_norms"]) - np.asarray(prof["weight_log_norms"]))
    return Report(
        mode=mode,
        loss=loss,
        losses=np.asarray(prof["losses"], dtype=np.float64),
        gsc=analysis._exp(log_gsc),
        log_gsc=log_gsc,
        gsc_left_out=left_out,
        gsc_per_sample=analysis._exp(log_per_sample),
        activation_norm=analysis._exp(prof["point_log_batch_norms"]),
        gradient_norm=analysis._exp(prof["grad_log_batch_norms"]),
        weight_gradient_ratio=ratio,
        pre_activation_std=stats["std"],
        sign_diversity=stats["sign_diversity"],
        unit_std=stats["unit_std"],
        unit_sign_diversity=stats["unit_sign_diversity"],
        explosion_rate=rate,
        explosion_intercept=intercept,
        dense_layers_after=dense_after,
        point_widths=net.point_widths(xa.shape[1]),
        dilution=np.asarray(prof["dilution"], dtype=np.float64),
        spectrum=spec,
        spectrum_summary=summ,
        notes=notes,
        _theory_inputs=_theory_inputs(net, xa),
    )


def _undefined_notes(prof: dict, log_gsc: np.ndarray, left_out: np.ndarray, mode: str) -> list:
    """Notes saying where and why the GSC is undefined (NaN) or left samples out (SPEC §3)."""
    notes = []
    losses = np.asarray(prof["losses"])
    batch = losses.shape[0]
    zero = int(np.sum(losses == 0))
    if zero == batch:
        notes.append("the loss is zero for every sample: the GSC (the gradient relative to the loss) is undefined at every point "
                     "and no explosion rate can be fitted (use a nonzero target, or gsc_matrix between points)")
    elif zero:
        notes.append(f"{zero} of {batch} samples have zero loss: their GSC is undefined and they are left out of the geometric mean")
    undefined = np.flatnonzero(~np.isfinite(log_gsc))
    if len(undefined) and zero < batch:
        where = ", ".join(str(i) for i in undefined[:8]) + (", ..." if len(undefined) > 8 else "")
        how = "every sample's" if mode == "sample" else "the batch's"
        notes.append(f"GSC undefined at {len(undefined)} point(s) [{where}]: {how} G is zero or not finite there, e.g. "
                     f"the gradient vanishes exactly (dead ReLU units, BatchNorm over a single sample or constant features)")
    partial = int(np.sum((left_out > 0) & (left_out < batch))) if mode == "sample" else 0
    if partial:
        notes.append(f"at {partial} point(s) some samples had a zero or non-finite G_b and were left out of the geometric mean (gsc_left_out)")
    return notes


def _fmt(v: float, spec: str) -> str:
    """A number for the summary table; NaN (undefined) is spelled out."""
    return "undefined" if np.isnan(v) else format(v, spec)


def _theory_inputs(net: Network, x: np.ndarray) -> Optional[dict]:
    """The network's provenance and the input statistics mean field starts from, or None for
    networks mean field does not describe (only plain MLPs with Gaussian weights built by ``mlp``)."""
    info = getattr(net, "_build_info", None)
    if not info or info["kind"] != "mlp" or info["norm"] is not None or info["init"] not in ("gaussian", "lecun", "he"):
        return None
    batch, d_in = x.shape
    with np.errstate(over="ignore", invalid="ignore"):
        # float64 sums without a float64 copy of x, and no BLAS call (its idle threads would spin
        # against the core's)
        sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        total = np.sum(x, axis=0, dtype=np.float64)
        pair = (np.sum(total * total) - np.sum(sq)) / (batch * (batch - 1) * d_in) if batch > 1 else 0.0
    if not (np.all(np.isfinite(sq)) and np.isfinite(pair)):
        return None  # inputs beyond float64 squared (|x| ~ 1e154 and more): mean field has no q0 to start from
    return {
        "activation": info["activation"],
        "sigma_w2": info["gain"] ** 2 * (2.0 if info["init"] == "he" else 1.0),
        "sigma_b2": info["sigma_b"] ** 2,
        "hidden": info["depth"] - 1,
        "batch": batch,
        "q0": float(np.mean(sq) / d_in),
        # mean over pairs a != b of x_a . x_b / d_in
        "pair_mean": float(pair),
    }


def _power(base: float, exponent: int) -> float:
    """``base ** exponent`` for ``base >= 0``, ``inf``/``0`` where it leaves float64."""
    if base == 0 or exponent == 0:
        return float(base**exponent)
    with np.errstate(over="ignore", under="ignore"):
        return float(np.exp(exponent * np.log(base)))


def _theory_from(inputs: dict) -> Optional[dict]:
    """Mean-field predictions (SPEC §6) for plain MLPs with Gaussian weights built by ``mlp``.

    ``q[l]``, ``pre_activation_std = sqrt(q[l])`` (SPEC) and ``chi[l]`` along the length map for
    the hidden layers ``l = 1..depth-1``, starting from the input's mean square ``q0``; ``c[l]``,
    the correlation between two samples' pre-activations (correlation map from the input's mean
    pairwise correlation), and ``pre_activation_std_batch = sqrt(q (1 - c) (1 - 1/B))``: what the
    per-unit std over a batch (``Report.pre_activation_std``) measures — correlated samples share
    part of their variance. ``gsc_factor = sqrt(chi_1)``; ``mean_sq_singular_value = chi_1^L``.
    """
    from . import theory

    act, sigma_w2, sigma_b2 = inputs["activation"], inputs["sigma_w2"], inputs["sigma_b2"]
    hidden, batch, q0 = inputs["hidden"], inputs["batch"], inputs["q0"]
    try:
        q = np.asarray(theory.length_map(act, sigma_w2, sigma_b2, q0, hidden), dtype=np.float64) if hidden > 0 else np.zeros(0)
        chi = np.asarray(theory.chi1_map(act, sigma_w2, sigma_b2, q0, hidden), dtype=np.float64) if hidden > 0 else np.zeros(0)
        q_star = theory.fixed_point(act, sigma_w2, sigma_b2, q0=q0)
        chi1 = theory.chi1(act, sigma_w2, sigma_b2, q0=q0)
        scales = theory.depth_scales(act, sigma_w2, sigma_b2, q0=q0)
    except ValueError:
        return None
    out = {
        "activation": act.name,
        "sigma_w2": sigma_w2,
        "sigma_b2": sigma_b2,
        "q0": q0,
        "q": q,
        "pre_activation_std": np.sqrt(q),
        "chi": chi,
        "q_star": float(q_star),
        "chi1": float(chi1),
        "gsc_factor": float(np.sqrt(chi1)),
        # chi_1^L in log space: a Python float power raises OverflowError at depth 5000
        "mean_sq_singular_value": _power(float(chi1), hidden),
        "depth_scales": {k: float(v) for k, v in scales.items()},
        "c": None,
        "pre_activation_std_batch": None,
    }
    if hidden > 0 and batch > 1 and np.all((q > 0) & np.isfinite(q)):
        c = [min(1.0, max(-1.0, (sigma_w2 * inputs["pair_mean"] + sigma_b2) / q[0]))]
        try:
            for l in range(1, hidden):
                nxt = theory.correlation_map(act, sigma_w2, sigma_b2, c[-1], q=q[l - 1]) * q[l - 1] / q[l]
                c.append(min(1.0, max(-1.0, nxt)))
        except ValueError:
            return out
        c_arr = np.asarray(c)
        out["c"] = c_arr
        out["pre_activation_std_batch"] = np.sqrt(q * (1 - c_arr) * (1 - 1 / batch))
    return out
