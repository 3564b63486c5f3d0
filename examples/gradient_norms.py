"""Per-layer gradient norms of the paper's 50-layer, width-100 MLPs at initialisation.

Philipp, Song & Carbonell (arXiv 1712.05577), Figure 1: tanh and ReLU MLPs of depth 50 and width
100 with LeCun/He Gaussian initialisation, on Gaussian inputs. This prints, for every 5th Dense
layer, the root-mean-square gradient of the loss at the layer's output, ||dL/dp_i||_F / sqrt(B d_i),
so you can see whether gradients grow or shrink on their way back to the input.

Run:  python examples/gradient_norms.py [--batch 256] [--seed 0]
"""

import argparse
import time

import numpy as np

import gsc_core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch, args.width))
    y = rng.integers(0, 10, size=args.batch)
    nets = {
        "tanh (LeCun)": gsc_core.mlp(args.depth, args.width, out_dim=10, activation="tanh", init="lecun", seed=args.seed),
        "relu (He)": gsc_core.mlp(args.depth, args.width, out_dim=10, activation="relu", init="he", seed=args.seed),
    }
    print(f"{args.depth}-layer width-{args.width} MLPs, B={args.batch} Gaussian inputs, cross-entropy loss, {gsc_core.get_num_threads()} threads\n")
    columns = {}
    for name, net in nets.items():
        start = time.perf_counter()
        losses, grads = net.loss_and_grad(x, y, loss="cross_entropy")
        elapsed = time.perf_counter() - start
        # Dense outputs are points 1, 4, 7, ... (Dense, Activation, Dense, ...): report those.
        dense_points = [i for i, layer in enumerate(net.layers, start=1) if isinstance(layer, gsc_core.Dense)]
        columns[name] = [float(np.sqrt(np.mean(grads.points[i] ** 2))) for i in dense_points]
        print(f"{name}: mean loss {losses.mean():.4f}, forward + backward in {elapsed * 1e3:.1f} ms")
    names = list(columns)
    print(f"\n{'Dense layer':>11}  " + "  ".join(f"{n:>14}" for n in names))
    for layer in range(0, args.depth, 5):
        print(f"{layer + 1:>11}  " + "  ".join(f"{columns[n][layer]:>14.3e}" for n in names))
    print(f"{args.depth:>11}  " + "  ".join(f"{columns[n][-1]:>14.3e}" for n in names))
    for n in names:
        ratio = columns[n][0] / columns[n][-1]
        print(f"{n}: RMS gradient at Dense 1 / at Dense {args.depth} = {ratio:.3g} (per layer {ratio ** (1 / (args.depth - 1)):.4f})")


if __name__ == "__main__":
    main()
