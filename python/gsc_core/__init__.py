"""gsc_core: exact, fast gradient-flow diagnostics for deep networks.

Build a network (:func:`mlp`, :func:`resnet`, or :class:`Network` from layers), then ask how
gradients travel through it: exact VJPs/JVPs and per-sample Jacobians, their norms and spectra.
Definitions follow SPEC.md; points count from the input (``p_0 = x``).

>>> import numpy as np, gsc_core
>>> net = gsc_core.mlp(depth=4, width=32, activation="tanh", seed=0)
>>> x = np.random.default_rng(0).normal(size=(16, 32))
>>> losses, grads = net.loss_and_grad(x)
>>> [round(float(np.linalg.norm(g)), 3) > 0 for g in grads.points][:3]
[True, True, True]
"""

from ._core import __version__, get_num_threads, set_num_threads
from . import architectures
from .analysis import GSCWarning, dilution, explosion_rate, gsc, gsc_matrix, gsc_per_sample, preactivation_stats, spectrum_summary
from .builders import INITS, mlp, resnet
from .jacobians import jacobian_norms, jacobian_spectrum
from .layers import ACTIVATIONS, Activation, BatchNorm, Dense, LayerNorm, Residual
from .network import Gradients, Network, Trace
from .report import Report, analyze
from . import theory


__all__ = [
    "__version__",
    "analyze",
    "architectures",
    "theory",
    "ACTIVATIONS",
    "INITS",
    "Activation",
    "BatchNorm",
    "Dense",
    "GSCWarning",
    "Gradients",
    "LayerNorm",
    "Network",
    "Report",
    "Residual",
    "Trace",
    "dilution",
    "explosion_rate",
    "get_num_threads",
    "gsc",
    "gsc_matrix",
    "gsc_per_sample",
    "jacobian_norms",
    "jacobian_spectrum",
    "mlp",
    "preactivation_stats",
    "resnet",
    "set_num_threads",
    "spectrum_summary",
]
