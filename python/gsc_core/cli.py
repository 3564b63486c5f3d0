"""The ``gsc-core`` command: ``gsc-core report`` reproduces and extends Figure 1 of Philipp, Song &
Carbonell, "The exploding gradient problem demystified" (arXiv 1712.05577) as a report with plots.

The default run needs no data: 50-layer, width-100 networks of the paper's architectures
(:data:`gsc_core.architectures.ARCHITECTURES`) at initialisation, on a batch of 512 Gaussian inputs
with a 10-way cross-entropy loss on random labels, each analysed with :func:`gsc_core.analyze`
(BatchNorm networks with the batch as one input, ``mode="batch"``, as the paper does). It writes
``report.html`` (self-contained), the figures as PNG and ``results.json`` (every number, the
settings and the library version) to ``--out``, and prints a summary table.

Data (``--data``): ``gaussian`` (default): ``B x width`` standard normal inputs and random labels,
drawn from ``numpy.random.default_rng([seed, 1])`` (a stream independent of the weights');
``digits``: scikit-learn's bundled 8x8 digits (1,797 x 64, pixels standardised per feature, constant
pixels set to 0) with their labels; ``PATH``: a ``.npy`` array of inputs, or a ``.npz`` file with the
inputs under ``x`` (or its only array) and optional integer labels under ``y``; inputs of more than
two dimensions are flattened per sample; used as given unless ``--standardize``; without labels
the loss uses random labels over 10 classes. With a dataset, ``B`` samples are drawn without
replacement (all of them if there are fewer), the input width is the data's, and the output width
is the number of classes.

Run ``gsc-core report --help`` for the options.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

#: Figure files of the report, in order: (key, file name, title).
FIGURES = (
    ("gsc", "figure1_gsc.png", "GSC to the loss against depth (Figure 1A)"),
    ("domain", "figure2_domain.png", "Pre-activation std and sign diversity (Figures 1B, 1C)"),
    ("heatmaps", "figure3_heatmaps.png", "Activations and gradients per unit and layer, plain and residual"),
    ("spectra", "figure4_spectra.png", "Input-output Jacobian singular values"),
    ("mean_field", "figure5_mean_field.png", "Measurement against mean-field theory"),
)

#: Plain architectures and their residual counterparts in the catalogue (same activation, norm, init).
_RESNET_OF = {"batch-ReLU": "ResNet-ReLU", "layer-tanh": "ResNet-tanh"}
_HEATMAP_CHOICES = ("ReLU", "tanh", "SELU", "layer-ReLU", "layer-tanh", "batch-ReLU", "batch-tanh", "ResNet-ReLU", "ResNet-tanh")
_CLASSES = 10

VERDICT_HELP = (
    "Verdict (gsc_core.Report.verdict, thresholds in gsc_core.report.VERDICT_THRESHOLDS), checked in this order: "
    "'collapses' if the last Activation layer's mean sign diversity is below {collapsed_sign_diversity} or its mean "
    "pre-activation std is below {collapsed_std_ratio} x the first Activation layer's; 'explodes' if the explosion rate r "
    "(least-squares growth of the GSC per Dense layer towards the input) exceeds {explodes_rate}; 'vanishes' if r is "
    "below 1/{explodes_rate}; 'undefined' if no rate can be fitted (e.g. a zero loss); else 'healthy'."
)


class CliError(Exception):
    """A user error: printed as ``gsc-core report: error: ...`` with exit status 2."""


# ---------------------------------------------------------------------------------------------- arguments


def _arch_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _parse_archs(text: str) -> list[str]:
    from .architectures import ARCHITECTURES

    if text.strip().lower() == "all":
        return list(ARCHITECTURES)
    known = {_arch_key(a): a for a in ARCHITECTURES}
    out: list[str] = []
    for part in text.split(","):
        if not part.strip():
            continue
        arch = known.get(_arch_key(part))
        if arch is None:
            raise argparse.ArgumentTypeError(f"unknown architecture {part.strip()!r}; choose from: {', '.join(ARCHITECTURES)} (comma-separated, or 'all')")
        if arch not in out:
            out.append(arch)
    if not out:
        raise argparse.ArgumentTypeError("no architecture given")
    return out


def _parse_heatmap(text: str) -> str:
    known = {_arch_key(a): a for a in _HEATMAP_CHOICES}
    arch = known.get(_arch_key(text))
    if arch is None:
        raise argparse.ArgumentTypeError(f"invalid choice {text!r}; choose from: {', '.join(_HEATMAP_CHOICES)}")
    return arch


def _positive_int(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .architectures import ARCHITECTURES
    from .report import VERDICT_THRESHOLDS

    parser = argparse.ArgumentParser(
        prog="gsc-core",
        description="gsc_core: exact, fast gradient-flow diagnostics for deep networks (the gradient scale coefficient "
        "of Philipp, Song & Carbonell, arXiv 1712.05577).",
        epilog="Run 'gsc-core report --help' for the report's options.",
    )
    parser.add_argument("--version", action="version", version=f"gsc-core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rep = sub.add_parser(
        "report",
        help="reproduce and extend the paper's Figure 1 as an HTML report with figures and a JSON file",
        description="Reproduce and extend Figure 1 of 'The exploding gradient problem demystified' (arXiv 1712.05577): "
        "networks of the paper's architectures at initialisation, analysed with gsc_core.analyze. Writes report.html "
        "(self-contained), the figures (PNG) and results.json to --out and prints a summary table. "
        "Loss: 10-way cross-entropy on random labels (the dataset's labels with --data digits or a labelled .npz).",
        epilog=VERDICT_HELP.format(**VERDICT_THRESHOLDS),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    rep.add_argument("--depth", type=_positive_int(3), default=50, help="Dense layers per network (compositional depth)")
    rep.add_argument("--width", type=_positive_int(2), default=100, help="hidden width (and the input width of Gaussian data)")
    rep.add_argument("--batch", type=_positive_int(2), default=512, help="samples in the batch")
    rep.add_argument("--archs", type=_parse_archs, default=list(ARCHITECTURES), metavar="A,B,...",
                     help="comma-separated architectures or 'all': " + ", ".join(ARCHITECTURES) + " (case, spaces and dashes ignored)")
    rep.add_argument("--heatmap", type=_parse_heatmap, default="layer-tanh", metavar="ARCH",
                     help="architecture of the heatmap figure, shown beside its residual (or plain) counterpart: " + ", ".join(_HEATMAP_CHOICES))
    rep.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="the networks' dtype")
    rep.add_argument("--seed", type=int, default=0, help="seed of the weights; the data use numpy.random.default_rng([seed, 1])")
    rep.add_argument("--threads", type=_positive_int(1), default=None, help="threads for gsc_core (default: all cores)")
    rep.add_argument("--data", default="gaussian", metavar="gaussian|digits|PATH",
                     help="inputs: Gaussian N(0, 1), scikit-learn's 8x8 digits (needs scikit-learn), or a .npy/.npz file of inputs (.npz: 'x', optional labels 'y')")
    rep.add_argument("--standardize", action="store_true", help="standardise the features of a PATH dataset (digits always are)")
    rep.add_argument("--out", type=Path, default=Path("gsc-report"), help="output directory (created)")
    rep.add_argument("--dpi", type=_positive_int(30), default=110, help="resolution of the PNG figures")
    rep.add_argument("--quiet", action="store_true", help="no progress bar or status messages on stderr (the table still goes to stdout)")
    return parser


# ---------------------------------------------------------------------------------------------- data


def _standardise(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, (x - mean) / safe, 0.0)


def _subset(rng: np.random.Generator, n: int, batch: int, notes: list) -> np.ndarray:
    if batch >= n:
        if batch > n:
            notes.append(f"the dataset has {n} samples, fewer than --batch {batch}: all of them are used")
        return np.arange(n)
    return np.sort(rng.choice(n, size=batch, replace=False))


def _load_array_file(path: Path) -> tuple[np.ndarray, Optional[np.ndarray], str]:
    if not path.exists():
        raise CliError(f"--data {path}: no such file (expected 'gaussian', 'digits' or a .npy/.npz file)")
    if path.suffix.lower() not in (".npy", ".npz"):
        raise CliError(f"--data {path}: expected a .npy or .npz file of inputs (or 'gaussian', 'digits')")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise CliError(f"--data {path}: cannot read it ({exc.strerror or exc})") from None
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise CliError(f"--data {path}: not a readable NumPy file (save the inputs with numpy.save or numpy.savez)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise CliError(f"--data {path}: cannot read it without unpickling objects ({exc}); save plain numeric arrays") from None
    except Exception as exc:  # noqa: BLE001 - any reader error becomes a clear message
        raise CliError(f"--data {path}: not a readable NumPy file ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, np.ndarray):
        return loaded, None, f"{path.name} (.npy)"
    with loaded as archive:
        keys = list(archive.files)
        x_key = next((k for k in ("x", "X", "inputs", "data") if k in keys), keys[0] if len(keys) == 1 else None)
        if x_key is None:
            raise CliError(f"--data {path}: the .npz holds {', '.join(keys) or 'no arrays'}; store the inputs as 'x' (and optional integer labels as 'y')")
        y_key = next((k for k in ("y", "Y", "labels", "targets") if k in keys and k != x_key), None)
        try:
            x = archive[x_key]
            y = None if y_key is None else archive[y_key]
        except ValueError as exc:
            raise CliError(f"--data {path}: cannot read it without unpickling objects ({exc}); save plain numeric arrays") from None
    return x, y, f"{path.name}['{x_key}']" + ("" if y_key is None else f" with labels '{y_key}'")


def _validate_inputs(x: np.ndarray, source: str, notes: list) -> np.ndarray:
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise CliError(f"--data {source}: inputs must be real numbers, got dtype {x.dtype}")
    if x.ndim < 2:
        raise CliError(f"--data {source}: inputs must be an array (samples, features), got shape {x.shape}")
    if x.ndim > 2:
        notes.append(f"inputs of shape {x.shape} were flattened to ({x.shape[0]}, {int(np.prod(x.shape[1:]))})")
        x = x.reshape(x.shape[0], -1)
    if x.shape[0] < 2:
        raise CliError(f"--data {source}: need at least 2 samples, got shape {x.shape}")
    if x.shape[1] < 1:
        raise CliError(f"--data {source}: inputs have no features (shape {x.shape})")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise CliError(f"--data {source}: inputs contain NaN or infinity ({int(bad.sum())} values; the first at sample {row}, feature {col})")
    return x


def _validate_labels(y: np.ndarray, n: int, source: str) -> np.ndarray:
    if y.ndim != 1 or y.shape[0] != n:
        raise CliError(f"--data {source}: labels must have shape ({n},) (one per sample), got {y.shape}")
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)))):
        raise CliError(f"--data {source}: labels must be integer classes 0, 1, ..., got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise CliError(f"--data {source}: labels must be non-negative class indices, found {int(y.min())}")
    return y


def load_data(spec: str, batch: int, width: int, seed: int, standardize: bool = False) -> dict:
    """The batch the report analyses: ``{"x", "y", "classes", "description", "labels", "notes"}``
    (see the module docstring for the choices)."""
    rng = np.random.default_rng([seed, 1])  # the data's own stream (as examples/figure1.py)
    notes: list[str] = []
    if spec == "gaussian":
        x = rng.standard_normal((batch, width))
        y = rng.integers(0, _CLASSES, size=batch)
        return {"x": x, "y": y, "classes": _CLASSES, "description": f"{batch} Gaussian N(0, 1) inputs of width {width}", "labels": "random", "notes": notes}
    if spec == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise CliError("--data digits needs scikit-learn: pip install scikit-learn (or pip install 'gsc-core[report]')") from None
        digits = load_digits()
        idx = _subset(rng, digits.data.shape[0], batch, notes)
        x = _standardise(np.asarray(digits.data, dtype=np.float64))[idx]
        y = np.asarray(digits.target, dtype=np.int64)[idx]
        return {"x": x, "y": y, "classes": 10, "description": f"{len(idx)} scikit-learn 8x8 digits (64 pixels, standardised per pixel)", "labels": "dataset", "notes": notes}
    path = Path(spec)
    raw_x, raw_y, source = _load_array_file(path)
    x = _validate_inputs(raw_x, str(path), notes)
    y_all = None if raw_y is None else _validate_labels(raw_y, raw_x.shape[0], str(path))
    idx = _subset(rng, x.shape[0], batch, notes)
    x = x[idx]
    if standardize:
        x = _standardise(x)
    if y_all is None:
        y = rng.integers(0, _CLASSES, size=len(idx))
        classes, labels = _CLASSES, "random"
        notes.append(f"{path.name} has no labels: the cross-entropy uses random labels over {_CLASSES} classes")
    else:
        y = y_all[idx]
        classes, labels = max(2, int(y_all.max()) + 1), "dataset"
    desc = f"{len(idx)} samples of {source}, width {x.shape[1]}" + (", standardised per feature" if standardize else "")
    return {"x": x, "y": y, "classes": classes, "description": desc, "labels": labels, "notes": notes}


# ---------------------------------------------------------------------------------------------- running


class _Progress:
    """A tqdm bar on stderr (only on a terminal and without --quiet)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm is in the report extra
                return
            self.bar = tqdm(total=total, desc="gsc-core report", unit="step", file=sys.stderr, leave=False, dynamic_ncols=True)

    def start(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _heatmap_pair(name: str, depth: int, width: int, in_dim: int, out_dim: int, seed: int, dtype: str) -> dict:
    """The chosen architecture and its residual (or, for a ResNet, plain) counterpart: {label: net}."""
    from .architectures import paper_network
    from .builders import resnet

    plain_of = {v: k for k, v in _RESNET_OF.items()}
    kw: dict[str, Any] = dict(in_dim=in_dim, out_dim=out_dim, seed=seed, dtype=dtype)
    if name in plain_of:
        return {plain_of[name]: paper_network(plain_of[name], depth, width, **kw), name: paper_network(name, depth, width, **kw)}
    plain = paper_network(name, depth, width, **kw)
    if name in _RESNET_OF:
        return {name: plain, _RESNET_OF[name]: paper_network(_RESNET_OF[name], depth, width, **kw)}
    info = plain._build_info
    assert info is not None  # paper_network builds with gsc_core.mlp
    res = resnet(blocks=max(depth - 2, 0) // 2, width=width, activation=info["activation"], norm=info["norm"], init=info["init"], **kw)
    return {name: plain, f"residual {name}": res}


def run_report(args: argparse.Namespace, progress: bool = True) -> dict:
    """Runs the analyses, writes the report files and returns the results (as in results.json)."""
    from . import __version__, analyze, get_num_threads, set_num_threads
    from . import plot
    from .analysis import GSCWarning
    from .architectures import analysis_mode, paper_network
    from .report import VERDICT_THRESHOLDS, _plain

    start = time.perf_counter()
    if args.threads is not None:
        set_num_threads(args.threads)
    data = load_data(args.data, args.batch, args.width, args.seed, args.standardize)
    x, y, classes = data["x"], data["y"], data["classes"]
    in_dim = x.shape[1]
    notes = list(data["notes"])
    if "looks-linear ReLU" in args.archs and args.width % 2:
        raise CliError(f"looks-linear ReLU needs an even --width (it stacks [U, -U]); got {args.width}")
    if args.depth % 2 and any(a.startswith("ResNet") for a in args.archs):
        notes.append(f"odd --depth {args.depth}: the ResNets have {args.depth - 1} Dense layers (2 + 2 per residual block)")

    steps = len(args.archs) + 2 + len(FIGURES)
    bar = _Progress(steps, progress)
    reports: dict = {}
    nets: dict = {}
    timings: dict = {}
    try:
        for name in args.archs:
            bar.start(name)
            t0 = time.perf_counter()
            net = paper_network(name, depth=args.depth, width=args.width, in_dim=in_dim, out_dim=classes, seed=args.seed, dtype=args.dtype)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", GSCWarning)
                reports[name] = analyze(net, x, y, loss="cross_entropy", mode=analysis_mode(name), spectrum=True)
            for w in caught:
                if issubclass(w.category, GSCWarning):
                    notes.append(f"{name}: {w.message}")
                else:  # pragma: no cover - pass anything else on
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            nets[name] = net
            timings[name] = time.perf_counter() - t0
            bar.done()

        bar.start("heatmaps")
        pair = _heatmap_pair(args.heatmap, args.depth, args.width, in_dim, classes, args.seed, args.dtype)
        profiles = {label: plot.unit_profiles(net, x, y, loss="cross_entropy") for label, net in pair.items()}
        bar.done()

        out: Path = args.out
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"--out {out}: cannot create the directory ({exc.strerror or exc})") from None
        theory_reports = {k: r for k, r in reports.items() if r.theory is not None}
        makers = {
            "gsc": lambda: plot.gsc_depth(reports),
            "domain": lambda: plot.domain(reports, nets),
            "heatmaps": lambda: plot.heatmaps(pair, profiles=profiles),
            "spectra": lambda: plot.spectra(reports),
            "mean_field": (lambda: plot.mean_field(theory_reports)) if theory_reports else None,
        }
        figures: dict = {}
        for key, filename, _title in FIGURES:
            bar.start(f"figure {filename}")
            make = makers[key]
            if make is None:
                notes.append("no mean-field figure: none of the chosen architectures is a Gaussian-initialised MLP without normalisation (ReLU, tanh, SELU)")
                bar.done()
                continue
            fig = make()
            fig.savefig(out / filename, dpi=args.dpi)
            figures[key] = filename
            bar.done()

        bar.start("writing")
        elapsed = time.perf_counter() - start
        import matplotlib

        results = {
            "gsc_core_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "gsc-core " + " ".join(getattr(args, "argv", None) or []),
            "environment": {"python": platform.python_version(), "numpy": np.__version__, "matplotlib": matplotlib.__version__, "platform": platform.platform(), "threads": get_num_threads()},
            "settings": {
                "depth": args.depth,
                "width": args.width,
                "batch": int(x.shape[0]),
                "archs": list(args.archs),
                "dtype": args.dtype,
                "seed": args.seed,
                "threads": args.threads,
                "data": args.data,
                "data_description": data["description"],
                "standardize": bool(args.standardize),
                "in_dim": int(in_dim),
                "classes": int(classes),
                "labels": data["labels"],
                "loss": "cross_entropy",
                "heatmap": args.heatmap,
                "data_stream": "numpy.random.default_rng([seed, 1])",
                "verdict_thresholds": dict(VERDICT_THRESHOLDS),
            },
            "architectures": {
                name: {
                    "mode": r.mode,
                    "verdict": r.verdict(),
                    "seconds": timings[name],
                    "point_depth": plot.point_depths(r),
                    "activation_depth": plot.activation_depths(nets[name]),
                    "predicted_rms_singular_value": plot.predicted_rms_singular_value(r),
                    "report": r.to_dict(),
                }
                for name, r in reports.items()
            },
            "heatmaps": {label: {"depth": p["depth"], "point": p["point"], "activation_rms": p["activation_rms"], "gradient_rms": p["gradient_rms"]} for label, p in profiles.items()},
            "figures": figures,
            "notes": notes,
            "seconds": elapsed,
        }
        results = _plain(results)
        with open(out / "results.json", "w", encoding="utf-8") as fh:
            json.dump(results, fh, allow_nan=False, separators=(",", ":"))
        with open(out / "report.html", "w", encoding="utf-8") as fh:
            fh.write(render_html(results, out))
        bar.done()
    finally:
        bar.close()
    return results


# ---------------------------------------------------------------------------------------------- output


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


def table_rows(results: dict) -> list[dict]:
    """Per architecture: the numbers of the summary table."""
    rows = []
    for name, a in results["architectures"].items():
        r = a["report"]
        std, sign = r["pre_activation_std"], r["sign_diversity"]
        ratio = None
        if std and std[0] and std[-1] is not None:
            ratio = std[-1] / std[0]
        rows.append({
            "architecture": name,
            "mode": a["mode"],
            "rate": r["explosion_rate"],
            "gsc_input": r["gsc"][0],
            "sign_last": sign[-1] if sign else None,
            "std_last": std[-1] if std else None,
            "std_ratio": ratio,
            "verdict": a["verdict"],
        })
    return rows


def summary_table(results: dict) -> str:
    """The stdout table: per architecture the explosion rate, GSC at the input, the last Activation
    layer's sign diversity and std, and the verdict."""
    s = results["settings"]
    head = (f"gsc-core report: depth {s['depth']}, width {s['width']}, {s['data_description']}, cross-entropy on "
            f"{'random' if s['labels'] == 'random' else 'the dataset'} labels ({s['classes']} classes), {s['dtype']}, seed {s['seed']}")
    cols = f"{'architecture':<18} {'mode':<6} {'rate r':>8} {'GSC(0->loss)':>12} {'sign div.':>9} {'std':>9} {'std/first':>9}  verdict"
    sub = f"{'':<18} {'':<6} {'/Dense':>8} {'':>12} {'(last)':>9} {'(last)':>9} {'':>9}"
    lines = [head, "", cols, sub]
    for row in table_rows(results):
        lines.append(
            f"{row['architecture']:<18} {row['mode']:<6} {_fmt(row['rate'], '.4f'):>8} {_fmt(row['gsc_input'], '.4g'):>12} "
            f"{_fmt(row['sign_last'], '.3f'):>9} {_fmt(row['std_last'], '.3g'):>9} {_fmt(row['std_ratio'], '.3g'):>9}  {row['verdict']}"
        )
    lines += ["", _wrap(VERDICT_HELP.format(**s["verdict_thresholds"]), 110)]
    return "\n".join(lines)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:1em 0;font-size:.95em} th,td{padding:.3em .7em;border-bottom:1px solid #e4e4e4;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.v-explodes{color:#b00020;font-weight:600} .v-vanishes{color:#7a4b00;font-weight:600} .v-collapses{color:#6a1b9a;font-weight:600} .v-healthy{color:#1b5e20;font-weight:600}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#444;font-size:.93em;margin-top:.4em}
.meta{color:#555;font-size:.9em} code{background:#f4f4f4;padding:0 .25em;border-radius:3px}
dl dt{font-weight:600;margin-top:.6em}
"""


def render_html(results: dict, out: Path) -> str:
    """The self-contained report page: the table, every figure embedded as base64 PNG, definitions."""
    from .plot import CAPTIONS

    s = results["settings"]
    esc = html.escape
    rows = []
    for row in table_rows(results):
        rows.append(
            f"<tr><td>{esc(row['architecture'])}</td><td>{row['mode']}</td><td>{_fmt(row['rate'], '.4f')}</td>"
            f"<td>{_fmt(row['gsc_input'], '.4g')}</td><td>{_fmt(row['sign_last'], '.3f')}</td><td>{_fmt(row['std_last'], '.3g')}</td>"
            f"<td>{_fmt(row['std_ratio'], '.3g')}</td><td class='v-{row['verdict']}'>{row['verdict']}</td></tr>"
        )
    figs = []
    for number, (key, filename, title) in enumerate(FIGURES, start=1):
        if key not in results["figures"]:
            continue
        data = base64.b64encode((out / filename).read_bytes()).decode("ascii")
        figs.append(
            f"<figure id='{key}'><h3>Figure {number}. {esc(title)}</h3><img alt='{esc(title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{esc(CAPTIONS[key])} <span class='meta'>({esc(filename)})</span></figcaption></figure>"
        )
    notes = "".join(f"<li>{esc(n)}</li>" for n in results["notes"]) or "<li>none</li>"
    env = results["environment"]
    labels = "random labels" if s["labels"] == "random" else "the dataset's labels"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>gsc-core report: gradient flow at initialisation</title><style>{_CSS}</style></head>
<body>
<h1>Gradient flow at initialisation</h1>
<p class="meta">gsc_core {esc(results['gsc_core_version'])} &middot; {esc(results['created'])} &middot; {results['seconds']:.1f} s on {env['threads']} threads</p>
<p>Reproduces and extends Figure 1 of Philipp, Song &amp; Carbonell, <em>The exploding gradient problem demystified</em>
(<a href="https://arxiv.org/abs/1712.05577">arXiv 1712.05577</a>): {len(s['archs'])} architectures with {s['depth']} Dense layers
of width {s['width']}, at initialisation (seed {s['seed']}, {s['dtype']}), on {esc(s['data_description'])}, with a
{s['classes']}-way cross-entropy loss on {labels}. Every number is in <code>results.json</code>.</p>

<h2>Summary</h2>
<table><thead><tr><th>architecture</th><th>mode</th><th>explosion rate r<br>(per Dense layer)</th><th>GSC(input &rarr; loss)</th>
<th>sign diversity<br>(last layer)</th><th>pre-act. std<br>(last layer)</th><th>std last / first</th><th>verdict</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<p class="meta">{esc(VERDICT_HELP.format(**s['verdict_thresholds']))} BatchNorm networks are analysed with the batch as one
input (mode <code>batch</code>), the others per sample (geometric mean over the batch, mode <code>sample</code>).</p>

<h2>Figures</h2>
{''.join(figs)}

<h2>Definitions</h2>
<dl>
<dt>Points and compositional depth</dt><dd><code>p_0 = x</code>, <code>p_i</code> = the output of the i-th top-level layer (a residual block is
one layer). The compositional depth of a point is the number of Dense layers between the input and it.</dd>
<dt>Gradient scale coefficient (GSC) to the loss</dt><dd>per sample <code>G_b(i &rarr; loss) = (||dl_b/dp_i|| / sqrt(d_i)) &middot; ||p_i|| / |l_b|</code>:
the relative change of the loss per relative change of the point (a GSC growing towards the input is an exploding gradient); the geometric mean over the batch
(mode <code>sample</code>) or the batch taken as one input (mode <code>batch</code>).</dd>
<dt>Explosion rate r</dt><dd>the least-squares fit <code>log G(i &rarr; loss) = log c + n_i log r</code> with <code>n_i</code> the Dense layers between point i and the
output: the factor by which the GSC grows per Dense layer towards the input.</dd>
<dt>Pre-activation std and sign diversity</dt><dd>per Activation layer, over the batch and per unit: the population standard deviation of its input, and
<code>min(P, N) / (P + N)</code> with P, N the samples on either side of zero; both averaged over units. A collapsing domain drives either towards 0.</dd>
<dt>Mean field</dt><dd>the length map <code>q' = &sigma;_w&sup2; E[&phi;(sqrt(q) z)&sup2;] + &sigma;_b&sup2;</code> and <code>&chi; = &sigma;_w&sup2; E[&phi;'(sqrt(q) z)&sup2;]</code>
(Poole et al. 2016; Schoenholz et al. 2017) for Gaussian weights.</dd>
</dl>
<p>The full contract is in the project's SPEC and README; the Python API is <code>gsc_core.analyze</code> and <code>gsc_core.plot</code>.</p>

<h2>Notes</h2><ul>{notes}</ul>
<p class="meta">Python {esc(env['python'])}, NumPy {esc(env['numpy'])}, matplotlib {esc(env['matplotlib'])}, {esc(env['platform'])}.</p>
</body></html>
"""


# ---------------------------------------------------------------------------------------------- entry point


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``gsc-core`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "report":
        try:
            import matplotlib
        except ImportError:
            print("gsc-core report: error: the report needs matplotlib: pip install 'gsc-core[plot]' (or pip install matplotlib)", file=sys.stderr)
            return 2
        if "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("Agg")  # files only: never open windows (figures are drawn without pyplot anyway)
        show = not args.quiet and sys.stderr.isatty()
        try:
            results = run_report(args, progress=show)
        except CliError as exc:
            print(f"gsc-core report: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("gsc-core report: interrupted", file=sys.stderr)
            return 130
        print(summary_table(results))
        if not args.quiet:
            names = ", ".join(["report.html", "results.json"] + list(results["figures"].values()))
            print(f"\nwrote {args.out}/: {names} ({results['seconds']:.1f} s)", file=sys.stderr)
            for note in results["notes"]:
                print(f"note: {note}", file=sys.stderr)
        return 0
    parser.print_help()  # pragma: no cover
    return 2


if __name__ == "__main__":
    sys.exit(main())
