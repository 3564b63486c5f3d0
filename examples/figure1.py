"""Reproduce the claims of Figure 1 (A-C) of Philipp, Song & Carbonell, "The exploding gradient
problem demystified" (arXiv 1712.05577), at initialisation.

50-layer, width-100 networks on Gaussian inputs with a 10-way cross-entropy loss on random labels.
For each architecture this prints the numbers the paper's claims rest on:

- Figure 1A (gradient explosion): the GSC of the input to the loss, ``G(0 -> loss)``, and the
  explosion rate ``r``, the factor by which the GSC grows per Dense layer towards the input
  (least-squares fit of ``ln G(i -> loss)`` against the number of Dense layers after point i).
  Claim: batch-ReLU, batch-tanh, layer-tanh and SELU explode (r clearly above 1).
- Figure 1B (collapsing domain, magnitude): the pre-activation std (mean over units of the std
  over the batch) at the first and the last activation layer. Claim: in the tanh MLP it falls far
  below its first-layer value.
- Figure 1C (collapsing domain, sign): the pre-activation sign diversity at the last activation
  layer. Claim: in the ReLU MLP it is far below 0.5.
- Residual networks and looks-linear ReLU: r near 1 and no collapse.

BatchNorm architectures are analysed with the batch as one input (``mode="batch"``), as the
paper does; the others per sample (geometric mean over samples).

Run:  python examples/figure1.py [--batch 512] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import gsc_core
from gsc_core.architectures import ARCHITECTURES, analysis_mode, paper_network


def figure1(depth: int = 50, width: int = 100, batch: int = 512, seed: int = 0, classes: int = 10) -> dict:
    """The Figure 1 numbers per architecture: {name: gsc_core.Report}."""
    rng = np.random.default_rng([seed, 1])  # the data's own stream
    x = rng.standard_normal((batch, width))
    y = rng.integers(0, classes, size=batch)
    reports = {}
    for name in ARCHITECTURES:
        net = paper_network(name, depth=depth, width=width, out_dim=classes, seed=seed)
        reports[name] = gsc_core.analyze(net, x, y, loss="cross_entropy", mode=analysis_mode(name), spectrum=False)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    reports = figure1(args.depth, args.width, args.batch, args.seed)
    elapsed = time.perf_counter() - start
    print(f"Figure 1 at initialisation: depth {args.depth}, width {args.width}, B={args.batch}, seed {args.seed} ({elapsed:.1f} s)\n")
    print(f"{'architecture':18} {'mode':6} {'G(0->loss)':>11} {'rate r':>8} {'std first':>10} {'std last':>9} {'sign last':>10}  verdict")
    for name, r in reports.items():
        print(f"{name:18} {r.mode:6} {r.gsc[0]:>11.4g} {r.explosion_rate:>8.4f} {r.pre_activation_std[0]:>10.4g} "
              f"{r.pre_activation_std[-1]:>9.4g} {r.sign_diversity[-1]:>10.4f}  {r.verdict()}")
    print("\nThe paper's claims rest on: rate r > 1 (1A) for batch-ReLU, batch-tanh, layer-tanh, SELU; the last")
    print("layer's std far below the first (1B) for tanh; the last layer's sign diversity far below 0.5 (1C) for ReLU;")
    print("r close to 1 without collapse for the ResNets and looks-linear ReLU. Verdict thresholds: gsc_core.report.VERDICT_THRESHOLDS.")


if __name__ == "__main__":
    main()
