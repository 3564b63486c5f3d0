"""First timing of the core engine: forward and loss_and_grad on a 50-layer width-100 tanh MLP.

Prints seconds (best of --repeat after one warm-up call), the achieved GFLOP/s counting the
GEMMs (2 B d_in d_out per Dense forward; twice that backward: input and weight gradients),
and the same work done by plain NumPy layer-by-layer in the same run for scale.

Run:  python benches/engine_timing.py [--batch 2048] [--repeat 5]
"""

import argparse
import time

import numpy as np

import gsc_core


def best_of(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def numpy_loss_and_grad(weights, x, y):
    """Expert plain-NumPy tanh MLP: forward, cross-entropy, gradients of every point and weight."""
    points = [x]
    h = x
    for i, w in enumerate(weights):
        h = h @ w.T
        points.append(h)
        if i < len(weights) - 1:
            h = np.tanh(h)
            points.append(h)
    o = points[-1]
    e = np.exp(o - o.max(axis=1, keepdims=True))
    g = e / e.sum(axis=1, keepdims=True)
    g[np.arange(len(y)), y] -= 1
    grads_w = []
    p = len(points) - 1
    for i in range(len(weights) - 1, -1, -1):
        grads_w.append(g.T @ points[p - 1])
        g = g @ weights[i]
        p -= 1
        if i > 0:
            g = g * (1 - points[p] ** 2)
            p -= 1
    return g, grads_w


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        gsc_core.set_num_threads(args.threads)
    B, L, d = args.batch, args.depth, args.width
    flops_fwd = 2 * B * d * d * L
    print(f"tanh MLP: {L} Dense layers, width {d}, B={B}, {gsc_core.get_num_threads()} threads; best of {args.repeat}")
    print(f"{'dtype':8} {'call':22} {'seconds':>9} {'GFLOP/s':>8}")
    for dtype in ("float64", "float32"):
        net = gsc_core.mlp(L, d, activation="tanh", init="lecun", seed=0, dtype=dtype)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((B, d)).astype(dtype)
        y = rng.integers(0, d, size=B)
        t_fwd = best_of(lambda: net.forward(x), args.repeat)
        t_grad = best_of(lambda: net.loss_and_grad(x, y, loss="cross_entropy"), args.repeat)
        weights = [np.ascontiguousarray(layer.weight) for layer in net.layers if isinstance(layer, gsc_core.Dense)]
        t_np = best_of(lambda: numpy_loss_and_grad(weights, x, y), args.repeat)
        print(f"{dtype:8} {'forward':22} {t_fwd:9.4f} {flops_fwd / t_fwd / 1e9:8.1f}")
        print(f"{dtype:8} {'loss_and_grad':22} {t_grad:9.4f} {3 * flops_fwd / t_grad / 1e9:8.1f}")
        print(f"{dtype:8} {'numpy loss_and_grad':22} {t_np:9.4f} {3 * flops_fwd / t_np / 1e9:8.1f}")


if __name__ == "__main__":
    main()
