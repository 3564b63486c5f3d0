"""Figures of gradient flow: the paper's Figure 1 and what goes with it (matplotlib, optional).

Every function returns a :class:`matplotlib.figure.Figure`. matplotlib is imported only when a
function is called (``pip install "gsc-core[plot]"``); ``import gsc_core`` never needs it.

Figures are made without pyplot, so they work headless and are not kept alive by pyplot's figure
manager: save them with ``fig.savefig("gsc.png")``, or display them in Jupyter by leaving the figure
as a cell's value. To draw into a pyplot window, pass your own figure:
``fig = plt.figure(); gsc_core.plot.gsc_depth(reports, fig=fig); plt.show()``.

``reports`` is a :class:`~gsc_core.Report`, a list of them, or a mapping ``{label: Report}`` (one
line or panel per entry, in order). The x axis is the **compositional depth** of a point: the
number of Dense layers between the input and it (``n_0 - n_i`` with ``n_i =
Report.dense_layers_after[i]``); every point is plotted, so a Dense layer, its normalisation and its
activation share one depth.

- :func:`gsc_depth` -- GSC of every point to the loss against depth, log scale (the paper's Figure 1A);
- :func:`domain` -- pre-activation std and sign diversity per Activation layer (Figures 1B, 1C);
- :func:`heatmaps` -- per-unit RMS activations and gradients per layer, networks side by side;
- :func:`spectra` -- histograms of the input-output Jacobian's singular values;
- :func:`mean_field` -- measured against mean-field pre-activation std and gradient growth;
- :func:`overview` -- one report on four panels (what :meth:`Report.plot` draws by default).

>>> import numpy as np, gsc_core
>>> _ = __import__("pytest").importorskip("matplotlib")
>>> from gsc_core import plot
>>> net = gsc_core.mlp(depth=6, width=16, activation="tanh", seed=0)
>>> x = np.random.default_rng(0).normal(size=(32, 16))
>>> fig = plot.gsc_depth({"tanh": gsc_core.analyze(net, x)})
>>> fig.axes[0].get_yscale()
'log'
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import numpy as np

from .architectures import ARCHITECTURES
from .layers import Activation, Dense, Residual
from .network import Network

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .report import Report

ReportsLike = Union["Report", Sequence["Report"], Mapping[str, "Report"]]

#: One colour per architecture of :data:`gsc_core.architectures.ARCHITECTURES`, kept across figures.
COLOURS = dict(zip(ARCHITECTURES, ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]))
_STYLES = {"layer": "--", "batch": "-.", "ResNet": "-", "looks": ":"}
_FALLBACK = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

#: Caption of every figure (used by the ``gsc-core report`` HTML page).
CAPTIONS = {
    "gsc": "GSC of every point to the loss against compositional depth (log scale; the paper's Figure 1A). "
    "A line falling from left to right is an exploding gradient: the gradient's relative size grows on its way "
    "back to the input by the explosion rate r per Dense layer. The paper plots the same curves against the "
    "number of layers from the loss, i.e. mirrored.",
    "domain": "Collapsing domain (the paper's Figures 1B and 1C): per Activation layer, the pre-activation standard "
    "deviation over the batch (mean over units) and the sign diversity min(P, N)/(P + N) (mean over units; 0.5 = "
    "half the samples on each side of the kink, 0 = every sample on one side, i.e. the layer acts linearly).",
    "heatmaps": "Per unit (rows) and layer (columns): the RMS over the batch of the activations (top) and of the "
    "gradient of the loss (bottom) at the output of every Dense layer (the pre-activations) or, in the residual "
    "network, of every residual block (two Dense layers wide), plain and residual network side by side; each row "
    "shares one log colour scale (grey: exactly zero). Gradients that brighten towards the left explode on their way "
    "back to the input.",
    "spectra": "Singular values of the input-output Jacobian of every sample, pooled over the batch (log scale). "
    "A narrow spectrum near 1 is dynamical isometry; a wide one means some input directions are amplified far more "
    "than others. BatchNorm couples the samples, so no per-sample Jacobian exists for those networks.",
    "mean_field": "Measurements against mean-field theory for the Gaussian-initialised MLPs (Poole et al. 2016, "
    "Schoenholz et al. 2017). Top: pre-activation std; the theory gives sqrt(q^l) over random weights for one input, "
    "and the per-unit std over a batch of correlated inputs, sqrt(q^l (1 - c^l)(1 - 1/B)). Bottom: the gradient norm "
    "at each Dense layer's output relative to the last hidden one; the theory predicts a factor sqrt(chi^l) per layer.",
}


# ---------------------------------------------------------------------------------------------- helpers


def _mpl() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError('gsc_core.plot needs matplotlib: pip install "gsc-core[plot]" (or pip install matplotlib)') from exc
    return matplotlib


def _figure(fig: Optional["Figure"], figsize: tuple[float, float]) -> "Figure":
    """A new pyplot-free figure, or the caller's (cleared; constrained layout switched on)."""
    _mpl()
    from matplotlib.figure import Figure

    if fig is None:
        return Figure(figsize=figsize, layout="constrained")
    fig.clear()
    try:
        fig.set_layout_engine("constrained")
    except AttributeError:  # pragma: no cover - matplotlib < 3.6
        fig.set_constrained_layout(True)  # type: ignore[attr-defined]
    return fig


def _as_mapping(reports: Any, what: str = "reports") -> dict:
    from .report import Report

    if isinstance(reports, Report):
        return {"network": reports}
    if isinstance(reports, Mapping):
        out = dict(reports)
    elif isinstance(reports, (list, tuple)):
        out = {f"network {k}": r for k, r in enumerate(reports)}
    else:
        raise TypeError(f"{what} must be a gsc_core.Report, a list of them or a mapping {{label: Report}}, got {type(reports).__name__}")
    for label, r in out.items():
        if not isinstance(r, Report):
            raise TypeError(f"{what}[{label!r}] must be a gsc_core.Report, got {type(r).__name__}")
    if not out:
        raise ValueError(f"{what} is empty: nothing to plot")
    return out


def _nets_mapping(nets: Any, labels: Sequence[str]) -> dict:
    if nets is None:
        return {}
    if isinstance(nets, Network):
        if len(labels) != 1:
            raise ValueError("pass nets as a mapping {label: Network} when plotting several reports")
        return {labels[0]: nets}
    if isinstance(nets, Mapping):
        return dict(nets)
    if isinstance(nets, (list, tuple)):
        return dict(zip(labels, nets))
    raise TypeError(f"nets must be a Network, a list of them or a mapping {{label: Network}}, got {type(nets).__name__}")


def colour(label: str, k: int = 0) -> str:
    """The colour used for ``label`` (fixed for the paper's architectures, else the k-th of tab10)."""
    return COLOURS.get(label, _FALLBACK[k % len(_FALLBACK)])


def _style(label: str) -> dict:
    style = {"color": COLOURS.get(label), "linestyle": "-", "linewidth": 1.6}
    for key, ls in _STYLES.items():
        if label.startswith(key):
            style["linestyle"] = ls
    if label.startswith("ResNet"):
        style["linewidth"] = 2.6
    return style


def point_depths(report: "Report") -> np.ndarray:
    """Compositional depth of every point: Dense layers between the input and point i (``n_0 - n_i``)."""
    after = np.asarray(report.dense_layers_after, dtype=np.int64)
    return after[0] - after


def activation_depths(net: Network) -> np.ndarray:
    """Compositional depth of every Activation layer of ``net`` (depth-first, execution order, as
    :attr:`Report.pre_activation_std`): the Dense layers on the path from the input to its input,
    counted as :attr:`Report.dense_layers_after` counts them (through residual bodies, not shortcuts).

    >>> import gsc_core
    >>> from gsc_core import plot
    >>> plot.activation_depths(gsc_core.resnet(blocks=2, width=4, activation="tanh")).tolist()
    [1, 2, 3, 4, 5]
    """
    out: list[int] = []

    def walk(layers: Sequence[Any], depth: int) -> int:
        for layer in layers:
            if isinstance(layer, Dense):
                depth += 1
            elif isinstance(layer, Activation):
                out.append(depth)
            elif isinstance(layer, Residual):
                depth = walk(layer.body, depth)
        return depth

    walk(net.layers, 0)
    return np.asarray(out, dtype=np.int64)


def _activation_x(report: "Report", label: str, nets: dict) -> tuple[np.ndarray, bool]:
    """x positions of a report's Activation layers: depths if its network is known, else 1, 2, ..."""
    k = len(report.pre_activation_std)
    net = nets.get(label)
    if net is not None:
        depths = activation_depths(net)
        if len(depths) != k:
            raise ValueError(f"nets[{label!r}] has {len(depths)} Activation layers but its report has {k}")
        return depths.astype(float), True
    return np.arange(1, k + 1, dtype=float), False


def _positive(values: Any) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def _log_axis(ax: "Axes", which: str = "y", min_factor: float = 4.0) -> None:
    """A log axis that spans at least ``min_factor`` (so noise around a flat line is not blown up)
    and, when it spans few decades, is labelled with plain numbers (0.2, 0.5, 1, 2) instead of powers."""
    get, put, axis = (ax.get_ylim, ax.set_ylim, ax.yaxis) if which == "y" else (ax.get_xlim, ax.set_xlim, ax.xaxis)
    lo, hi = get()
    if not (lo > 0 and hi > lo and math.isfinite(hi)):
        return
    if hi / lo < min_factor:
        mid, half = math.sqrt(lo * hi), math.sqrt(min_factor)
        put(mid / half, mid * half)
        lo, hi = mid / half, mid * half
    _plain_log_labels(axis, lo, hi)


def _plain_log_labels(axis: Any, lo: float, hi: float) -> None:
    """Label a log axis spanning few decades with plain numbers (0.2, 0.5, 1, 2) rather than powers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(hi / lo)
    if decades > 2.2:
        return
    subs = (1.0, 2.0, 5.0) if decades > 0.9 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _legend_outside(fig: "Figure", ax: "Axes", ncols: int = 1) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", frameon=False, ncols=ncols)


# ---------------------------------------------------------------------------------------------- figures


def gsc_depth(reports: ReportsLike, *, fig: Optional["Figure"] = None, ax: Optional["Axes"] = None, verdicts: bool = True, title: Optional[str] = None) -> "Figure":
    """GSC of every point to the loss against compositional depth, log y axis, one line per report
    (the paper's Figure 1A). ``verdicts`` adds :meth:`Report.verdict` to each legend entry. With
    ``ax`` the lines go into those axes (legend inside)."""
    reps = _as_mapping(reports)
    own = ax is None
    if ax is None:
        fig = _figure(fig, (9.0, 5.2))
        ax = fig.add_subplot()
    else:
        fig = ax.figure  # type: ignore[assignment]
    assert fig is not None
    for k, (label, r) in enumerate(reps.items()):
        style = _style(label)
        style["color"] = colour(label, k)
        name = f"{label} ({r.verdict()})" if verdicts else label
        ax.plot(point_depths(r), _positive(r.gsc), label=name, **style)
    ax.set_yscale("log")
    ax.set_xlabel("compositional depth of the point (Dense layers from the input)")
    ax.set_ylabel("GSC to the loss, G(point -> loss) (dimensionless)")
    ax.axhline(1.0, color="0.6", linewidth=0.8, zorder=0)
    ax.grid(True, which="major", alpha=0.3)
    depth = max(int(point_depths(r)[-1]) for r in reps.values())
    ax.set_xlim(0, depth)
    _log_axis(ax)
    if own and len({int(point_depths(r)[-1]) for r in reps.values()}) == 1:
        flip = (lambda v: depth - np.asarray(v)), (lambda v: depth - np.asarray(v))
        top = ax.secondary_xaxis("top", functions=flip)
        top.set_xlabel("Dense layers between the point and the output (the paper's x axis)", fontsize="small")
    if title is None:
        title = "Gradient scale coefficient to the loss (Figure 1A); falling from left to right = exploding gradient"
    if own:
        fig.suptitle(title, fontsize="large")
        _legend_outside(fig, ax)
    else:
        ax.set_title(title, fontsize="medium")
        ax.legend(fontsize="small")
    return fig


def domain(reports: ReportsLike, nets: Any = None, *, fig: Optional["Figure"] = None) -> "Figure":
    """Pre-activation std (log scale) and sign diversity of every Activation layer against depth,
    one line per report (the paper's Figures 1B and 1C). Pass the networks (``nets``, same labels)
    to place each Activation layer at its compositional depth; without them layer k is at x = k
    (which is its depth in :func:`gsc_core.mlp` and :func:`gsc_core.resnet` networks)."""
    reps = _as_mapping(reports)
    net_map = _nets_mapping(nets, list(reps))
    fig = _figure(fig, (13.0, 5.0))
    ax_std, ax_sign = fig.subplots(1, 2)
    all_depths = True
    for k, (label, r) in enumerate(reps.items()):
        if not len(r.pre_activation_std):
            continue
        x, known = _activation_x(r, label, net_map)
        all_depths &= known
        style = _style(label)
        style["color"] = colour(label, k)
        ax_std.plot(x, _positive(r.pre_activation_std), label=label, **style)
        ax_sign.plot(x, np.asarray(r.sign_diversity, dtype=float), label=label, **style)
    flat = [label for label, r in reps.items() if len(r.pre_activation_std) and np.all(np.abs(np.asarray(r.pre_activation_std, dtype=float) - 1.0) < 0.1)]
    if len(flat) > 1:
        import textwrap

        note = "\n".join(textwrap.wrap("overlapping near 1 (normalised or norm-preserving): " + ", ".join(flat), 48, break_on_hyphens=False))
        ax_std.text(0.02, 0.02, note, transform=ax_std.transAxes, ha="left", va="bottom", fontsize="x-small", color="0.3")
    xlabel = "compositional depth of the Activation layer (Dense layers before it)" if all_depths else "Activation layer (1 = nearest the input)"
    ax_std.set_yscale("log")
    _log_axis(ax_std)
    ax_std.set_ylabel("pre-activation std over the batch (mean over units)")
    ax_std.set_title("Pre-activation standard deviation (Figure 1B)")
    ax_sign.set_ylim(0, 0.52)
    ax_sign.axhline(0.5, color="0.6", linewidth=0.8, zorder=0)
    from .report import VERDICT_THRESHOLDS

    floor = VERDICT_THRESHOLDS["collapsed_sign_diversity"]
    ax_sign.axhline(floor, color="0.3", linewidth=0.9, linestyle=":", zorder=0)
    ax_sign.text(0.99, floor + 0.006, f"verdict 'collapses' below {floor:g}", transform=ax_sign.get_yaxis_transform(), ha="right", va="bottom", fontsize="x-small", color="0.3")
    ax_sign.set_ylabel("sign diversity, min(P, N) / (P + N) (mean over units)")
    ax_sign.set_title("Pre-activation sign diversity (Figure 1C)")
    for ax in (ax_std, ax_sign):
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=0)
    _legend_outside(fig, ax_std)
    return fig


def unit_profiles(net: Network, x: Any, y: Any = None, loss: str = "mse") -> dict:
    """Per-unit RMS over the batch of the activations and of the loss gradients at one point per
    compositional depth from 1 to ``n_0 - 1``: the first point at that depth, i.e. the output of a
    Dense layer (a pre-activation) or, in a residual network, of a residual block. Returns ``depth``
    (``(P,)``), ``point`` (their indices) and ``activation_rms`` / ``gradient_rms`` of shape
    ``(d, P)`` (units x points; NaN-padded where a point is narrower than the widest).

    >>> import numpy as np, gsc_core
    >>> net = gsc_core.mlp(depth=4, width=8, activation="tanh", seed=0)
    >>> from gsc_core import plot
    >>> p = plot.unit_profiles(net, np.ones((3, 8)))
    >>> p["depth"].tolist(), p["activation_rms"].shape
    ([1, 2, 3], (8, 3))
    """
    trace = net.forward(x)
    _, grads = net.loss_and_grad(x, y, loss=loss)
    depth_of = _depths_from_net(net)
    n0 = int(depth_of[-1])
    last: dict[int, int] = {}
    for i, d in enumerate(depth_of):
        if 1 <= d <= n0 - 1:
            last.setdefault(int(d), i)
    points = [last[d] for d in sorted(last)]
    width = max((trace.points[i].shape[1] for i in points), default=0)

    def rms(arrays: list) -> np.ndarray:
        out = np.full((width, len(points)), np.nan)
        for col, i in enumerate(points):
            a = np.asarray(arrays[i], dtype=np.float64)
            out[: a.shape[1], col] = np.sqrt(np.mean(a * a, axis=0))
        return out

    return {
        "depth": np.asarray(sorted(last), dtype=np.int64),
        "point": np.asarray(points, dtype=np.int64),
        "activation_rms": rms(trace.points),
        "gradient_rms": rms(grads.points),
    }


def _depths_from_net(net: Network) -> np.ndarray:
    """Compositional depth of every point, from the network (as :func:`point_depths`)."""
    after = np.asarray(net._native.dense_layers_after(), dtype=np.int64)
    return after[0] - after


def heatmaps(
    nets: Mapping[str, Network],
    x: Any = None,
    y: Any = None,
    loss: str = "mse",
    *,
    profiles: Optional[Mapping[str, dict]] = None,
    fig: Optional["Figure"] = None,
) -> "Figure":
    """Heatmaps of the per-unit RMS activations (top row) and loss gradients (bottom row) against
    compositional depth, one column per network (e.g. a plain and a residual one, side by side as in
    the classic residual-connection illustrations). Each row shares one log colour scale, so the
    networks compare directly. Pass ``profiles`` (from :func:`unit_profiles`) instead of ``x`` to
    reuse computed values."""
    _mpl()
    from matplotlib.colors import LogNorm
    import matplotlib

    if profiles is None:
        if x is None:
            raise ValueError("heatmaps needs the inputs x (or precomputed profiles)")
        profiles = {label: unit_profiles(net, x, y, loss) for label, net in nets.items()}
    labels = list(profiles)
    if not labels:
        raise ValueError("heatmaps: no networks given")
    fig = _figure(fig, (6.0 * len(labels) + 1.5, 8.6))
    axes = np.asarray(fig.subplots(2, len(labels), sharey=True, squeeze=False))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    rows = [("activation_rms", "RMS activation", "activations p"), ("gradient_rms", "RMS gradient", "gradients dL/dp")]
    for row, (key, what, title) in enumerate(rows):
        values = np.concatenate([np.ravel(profiles[l][key]) for l in labels])
        positive = values[np.isfinite(values) & (values > 0)]
        if positive.size:
            lo, hi = float(positive.min()), float(positive.max())
            if hi <= lo:
                lo, hi = lo / 2, hi * 2
        else:
            lo, hi = 1e-3, 1.0
        norm = LogNorm(vmin=lo, vmax=hi)
        mesh = None
        for col, label in enumerate(labels):
            prof = profiles[label]
            depth = np.asarray(prof["depth"], dtype=float)
            data = np.asarray(prof[key], dtype=float)
            ax = axes[row, col]
            if depth.size == 0:
                ax.text(0.5, 0.5, "no hidden layers", ha="center", va="center", transform=ax.transAxes)
                continue
            edges = np.concatenate([[depth[0] - (depth[1] - depth[0] if depth.size > 1 else 1.0)], depth])
            edges[0] = max(edges[0], 0.0)
            units = np.arange(data.shape[0] + 1) - 0.5
            masked = np.ma.masked_where(~(np.isfinite(data) & (data > 0)), data)
            mesh = ax.pcolormesh(edges, units, masked, norm=norm, cmap=cmap, shading="flat", rasterized=True)
            ax.set_title(f"{label}: {title}")
            ax.set_xlabel("compositional depth (Dense layers from the input)")
            if col == 0:
                ax.set_ylabel("unit")
            ax.set_xlim(0, depth[-1])
        if mesh is not None:
            cbar = fig.colorbar(mesh, ax=list(axes[row]), shrink=0.95, pad=0.01)
            cbar.set_label(f"{what} over the batch (log scale)")
            _plain_log_labels(cbar.ax.yaxis, lo, hi)
    fig.suptitle("Per unit and layer, RMS over the batch: Dense-layer (or residual-block) outputs and the loss gradient there", fontsize="large")
    return fig


def spectra(reports: ReportsLike, *, fig: Optional["Figure"] = None, ncols: int = 5) -> "Figure":
    """Histograms of the input-output Jacobian's singular values (every sample's, pooled), one panel
    per report on a shared log x axis, with the measured RMS singular value (solid) and, for
    Gaussian MLPs with mean-field predictions, the predicted one (dashed). Reports without a
    spectrum (BatchNorm networks) get a panel saying why."""
    reps = _as_mapping(reports)
    n = len(reps)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = _figure(fig, (3.1 * ncols + 0.4, 2.9 * nrows + 0.7))
    axes = np.asarray(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    logs = [np.log10(_positive(r.spectrum)) for r in reps.values() if r.spectrum is not None]
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in logs]) if logs else np.zeros(0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    pad = max(0.15, 0.05 * (hi - lo))
    bins = np.logspace(lo - pad, hi + pad, 41)
    k_values = set()
    for k, (ax, (label, r)) in enumerate(zip(axes, reps.items())):
        ax.set_title(label, fontsize="medium")
        ax.set_xscale("log")
        if r.spectrum is None:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no per-sample Jacobian:\nBatchNorm couples\nthe samples", ha="center", va="center", transform=ax.transAxes, color="0.35")
            continue
        spec = np.asarray(r.spectrum, dtype=float)
        k_values.add(spec.shape[1])
        s = _positive(spec).ravel()
        s = s[np.isfinite(s)]
        counts, _, _ = ax.hist(s, bins=bins, color=colour(label, k), alpha=0.85, edgecolor=colour(label, k), linewidth=0.6)
        ax.set_ylim(0, max(float(np.max(counts)), 1.0) * 1.1)
        rms = math.sqrt(float(np.mean(spec**2)))
        ax.axvline(rms, color="black", linewidth=1.3)
        stats = f"RMS {rms:.3g}"
        pred = predicted_rms_singular_value(r)
        if pred is not None and 0 < pred < float("inf"):
            ax.axvline(pred, color="black", linestyle="--", linewidth=1.3)
            stats += f" (mean field {pred:.3g})"
        cond = r.spectrum_summary["condition_mean"] if r.spectrum_summary else float("nan")
        ax.set_title(f"{label}\n{stats}, cond. {cond:.3g}", fontsize="medium")
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[max(0, n - ncols) : n]:
        ax.set_xlabel("singular value (log scale)")
        ax.tick_params(labelbottom=True)
    for row in range(nrows):
        axes[row * ncols].set_ylabel("count")
    per = f"{k_values.pop()} per sample" if len(k_values) == 1 else "min(d_in, d_out) per sample"
    fig.suptitle(
        f"Singular values of the input-output Jacobian ({per}, all samples pooled)\n"
        "solid line: measured RMS singular value; dashed: mean-field prediction; cond.: condition number max/min, mean over samples",
        fontsize="medium",
    )
    return fig


def predicted_rms_singular_value(report: "Report") -> Optional[float]:
    """Mean-field RMS singular value of the input-output Jacobian of a Gaussian MLP (``None`` when
    the report has no theory): ``E||J||_F^2 = sigma_w^2 d_out prod_l chi^l`` over ``min(d_in, d_out)``
    singular values."""
    t = report.theory
    if t is None or t.get("chi") is None:
        return None
    widths = report.point_widths
    d_in, d_out = widths[0], widths[-1]
    with np.errstate(over="ignore"):
        log_ms = math.log(t["sigma_w2"]) + math.log(d_out) - math.log(min(d_in, d_out)) + float(np.sum(np.log(np.asarray(t["chi"], dtype=float))))
    return math.exp(0.5 * log_ms) if log_ms < 1400 else float("inf")


def mean_field(reports: ReportsLike, *, fig: Optional["Figure"] = None) -> "Figure":
    """Measured against mean-field predicted pre-activation std (top) and gradient growth (bottom),
    one column per report with a theory (Gaussian MLPs built by :func:`gsc_core.mlp`). Activation
    layer l of an MLP sits at depth l; gradient growth is ``||dL/dz^l||_F`` at the output ``z^l`` of
    Dense layer l relative to the last hidden one, predicted ``prod_{k=l}^{L-2} sqrt(chi^k)``."""
    reps = {label: r for label, r in _as_mapping(reports).items() if r.theory is not None}
    if not reps:
        raise ValueError("mean_field: none of the reports has mean-field predictions (they exist for Gaussian MLPs built by gsc_core.mlp without normalisation)")
    fig = _figure(fig, (4.6 * len(reps) + 0.6, 7.6))
    axes = np.asarray(fig.subplots(2, len(reps), squeeze=False))
    for col, (label, r) in enumerate(reps.items()):
        c = colour(label, col)
        t = r.theory
        ax = axes[0, col]
        depth = np.arange(1, len(r.pre_activation_std) + 1)
        ax.plot(depth, _positive(r.pre_activation_std), "o", color=c, markersize=3.5, label="measured: std over the batch")
        q_std = np.asarray(t["pre_activation_std"], dtype=float)
        ax.plot(np.arange(1, len(q_std) + 1), _positive(q_std), "--", color="black", linewidth=1.3, label=r"mean field $\sqrt{q^l}$ (one input)")
        if t.get("pre_activation_std_batch") is not None:
            b_std = np.asarray(t["pre_activation_std_batch"], dtype=float)
            ax.plot(np.arange(1, len(b_std) + 1), _positive(b_std), ":", color="black", linewidth=1.8, label=r"mean field over the batch, $\sqrt{q^l(1-c^l)(1-1/B)}$")
        ax.set_yscale("log")
        _log_axis(ax)
        ax.set_title(f"{label}: pre-activation std\n" + rf"($\sigma_w^2$ = {t['sigma_w2']:.3g}, $\sigma_b^2$ = {t['sigma_b2']:.3g}, $\chi_1$ = {t['chi1']:.4g} at $q^*$ = {t['q_star']:.3g})", fontsize="medium")
        ax.set_xlabel("Activation layer l (= compositional depth)")
        ax.set_ylabel("pre-activation std")
        ax.legend(fontsize="x-small")
        ax.grid(True, alpha=0.3)
        ax = axes[1, col]
        measured, predicted, dense_depth = gradient_growth(r)
        ax.plot(dense_depth, measured, "o", color=c, markersize=3.5, label=r"measured $\|dL/dz^l\|_F$")
        ax.plot(dense_depth, predicted, "--", color="black", linewidth=1.3, label=r"mean field $\prod_{k=l}^{L-2} \sqrt{\chi^k}$")
        ax.set_yscale("log")
        _log_axis(ax)
        ax.set_title(f"{label}: gradient growth towards the input", fontsize="medium")
        ax.set_xlabel(r"Dense layer l (= compositional depth of its output $z^l$)")
        ax.set_ylabel("gradient norm relative to the last hidden layer")
        ax.legend(fontsize="x-small")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Measurement against mean-field theory (Gaussian-initialised MLPs)", fontsize="large")
    return fig


def gradient_growth(report: "Report") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an MLP report with a theory: ``(measured, predicted, depth)`` for Dense layers
    ``l = 1..L-1``: ``||dL/dz^l||_F / ||dL/dz^{L-1}||_F`` and ``prod_{k=l}^{L-2} sqrt(chi^k)``."""
    t = report.theory
    if t is None:
        raise ValueError("gradient_growth needs a report with mean-field predictions (Report.theory)")
    after = np.asarray(report.dense_layers_after)
    depth = after[0] - after
    dense_points = [i for i in range(1, len(after)) if after[i] < after[i - 1]]
    hidden = [i for i in dense_points if 1 <= depth[i] <= after[0] - 1]
    g = np.asarray(report.gradient_norm, dtype=float)[hidden]
    measured = g / g[-1] if len(g) else g
    chi = np.asarray(t["chi"], dtype=float)
    log_half = 0.5 * np.log(chi)
    # predicted at depth l: prod over k = l .. L-2 of sqrt(chi^k), chi^k = chi[k-1]
    dl = depth[hidden]
    predicted = np.array([math.exp(float(np.sum(log_half[l - 1 : len(chi) - 1]))) for l in dl])
    return measured, predicted, dl.astype(float)


def overview(report: "Report", net: Optional[Network] = None, *, fig: Optional["Figure"] = None, label: str = "network") -> "Figure":
    """One report on four panels: GSC to the loss, pre-activation std, sign diversity, and the
    Jacobian spectrum (or, without one, the weight-gradient ratios per Dense layer)."""
    fig = _figure(fig, (12.0, 8.0))
    (ax_gsc, ax_std), (ax_sign, ax_last) = fig.subplots(2, 2)
    c = colour(label)
    ax_gsc.plot(point_depths(report), _positive(report.gsc), color=c, marker=".", markersize=3)
    ax_gsc.set_yscale("log")
    _log_axis(ax_gsc)
    ax_gsc.set_xlabel("compositional depth of the point (Dense layers from the input)")
    ax_gsc.set_ylabel("GSC to the loss (dimensionless)")
    ax_gsc.set_title(f"GSC: r = {report.explosion_rate:.4g} per Dense layer, verdict: {report.verdict()}")
    x, known = _activation_x(report, label, {label: net} if net is not None else {})
    xlabel = "compositional depth of the Activation layer" if known else "Activation layer (1 = nearest the input)"
    ax_std.plot(x, _positive(report.pre_activation_std), color=c, marker=".", markersize=3)
    ax_std.set_yscale("log")
    _log_axis(ax_std)
    ax_std.set_xlabel(xlabel)
    ax_std.set_ylabel("pre-activation std (mean over units)")
    ax_std.set_title("Pre-activation standard deviation")
    ax_sign.plot(x, np.asarray(report.sign_diversity, dtype=float), color=c, marker=".", markersize=3)
    ax_sign.set_ylim(0, 0.52)
    ax_sign.set_xlabel(xlabel)
    ax_sign.set_ylabel("sign diversity (mean over units)")
    ax_sign.set_title("Pre-activation sign diversity")
    if report.spectrum is not None:
        s = _positive(report.spectrum).ravel()
        s = s[np.isfinite(s)]
        if s.size:
            lo, hi = math.log10(float(s.min())), math.log10(float(s.max()))
            pad = max(0.15, 0.05 * (hi - lo))
            ax_last.hist(s, bins=np.logspace(lo - pad, hi + pad, 41), color=c, alpha=0.85)
        ax_last.set_xscale("log")
        rms = math.sqrt(float(np.mean(np.asarray(report.spectrum, dtype=float) ** 2)))
        ax_last.axvline(rms, color="black", linewidth=1.3, label=f"RMS {rms:.3g}")
        ax_last.legend(fontsize="small")
        ax_last.set_xlabel("singular value (log scale)")
        ax_last.set_ylabel("count (all samples pooled)")
        ax_last.set_title("Input-output Jacobian singular values")
    else:
        w = np.asarray(report.weight_gradient_ratio, dtype=float)
        ax_last.plot(np.arange(1, len(w) + 1), _positive(w), color=c, marker=".", markersize=3)
        ax_last.set_yscale("log")
        ax_last.set_xlabel("Dense layer (depth-first)")
        ax_last.set_ylabel("||dL/dW||_F / ||W||_F")
        ax_last.set_title("Weight-gradient ratio (no per-sample spectrum)")
    for ax in (ax_gsc, ax_std, ax_sign, ax_last):
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{label}: {len(report.gsc) - 1} layers, B = {len(report.losses)}, loss {report.loss}, mode {report.mode}", fontsize="large")
    return fig


PLOTS = ("overview", "gsc", "domain", "spectrum", "theory")


def plot_report(report: "Report", kind: str = "overview", net: Optional[Network] = None, **kwargs: Any) -> "Figure":
    """What :meth:`Report.plot` draws: ``kind`` one of :data:`PLOTS`."""
    label = kwargs.pop("label", "network")
    if kind == "overview":
        return overview(report, net, label=label, **kwargs)
    if kind == "gsc":
        return gsc_depth({label: report}, **kwargs)
    if kind == "domain":
        return domain({label: report}, None if net is None else {label: net}, **kwargs)
    if kind == "spectrum":
        return spectra({label: report}, **kwargs)
    if kind == "theory":
        return mean_field({label: report}, **kwargs)
    raise ValueError(f"unknown plot kind {kind!r}; expected one of: {', '.join(PLOTS)}")
