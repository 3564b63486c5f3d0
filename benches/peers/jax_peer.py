"""JAX (CPU, jit), written the way the JAX documentation recommends.

- W1: ``jit(value_and_grad)`` of the summed cross-entropy with respect to the weights and to zero
  perturbations added at every point (their gradients are the point gradients), plus the
  statistics in ``jnp``, all in one compiled function.
- W2: ``vmap(jacrev(f))`` per sample, ``f`` mapping zero perturbations at every point to the
  output: one ``jacrev`` gives ``d out / d p_i`` for all ``i``; then Frobenius norms.
- W3: one ``vmap(jacrev)`` per Dense end point ``z_k`` (perturbations at the points below it),
  in one compiled function; the end point ``tanh(z_k)`` comes from the same Jacobians through
  their per-row norms (``||D J||_F^2 = sum_r D_r^2 ||J_r||^2``), halving the work.

float64 needs ``jax_enable_x64``; it is switched on at import and every array carries an explicit
dtype, so float32 runs stay float32.
"""

import numpy as np

NAME = "jax"

try:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    _ERR = None
except Exception as e:  # pragma: no cover - depends on the machine
    jax = jnp = None
    _ERR = f"{type(e).__name__}: {e}"


def available():
    if jax is None:
        return False, f"jax not importable ({_ERR})"
    return True, f"jax {jax.__version__} ({jax.default_backend()})"


def _forward(weights, biases, x, perts):
    """Points with perturbation perts[i] added at point i (perts may be shorter than the net)."""

    def add(v, i):
        return v + perts[i] if i < len(perts) else v

    h = add(x, 0)
    points = [h]
    last = len(weights) - 1
    for k, (w, b) in enumerate(zip(weights, biases)):
        z = add(h @ w.T + b, 2 * k + 1)
        points.append(z)
        if k < last:
            h = add(jnp.tanh(z), 2 * k + 2)
            points.append(h)
    return points


def _log_geo_mean(logs, axis):
    finite = jnp.isfinite(logs)
    return jnp.where(finite, logs, 0.0).sum(axis=axis) / finite.sum(axis=axis)


def _sq(a, axes):
    return jnp.sum(a * a, axis=axes)


def _make_w1():
    def loss(params, perts, x, y):
        weights, biases = params
        points = _forward(weights, biases, x, perts)
        o = points[-1]
        losses = jax.nn.logsumexp(o, axis=1) - jnp.take_along_axis(o, y[:, None], axis=1)[:, 0]
        return losses.sum(), (losses, points)

    grad_fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)

    @jax.jit
    def run(weights, biases, x, y):
        dt = x.dtype
        widths = [x.shape[1]] + [d for w in weights[:-1] for d in (w.shape[0], w.shape[0])] + [weights[-1].shape[0]]
        perts = [jnp.zeros((x.shape[0], d), dt) for d in widths]
        (_, (losses, points)), ((gw, _), gp) = grad_fn((weights, biases), perts, x, y)
        log_loss = jnp.log(jnp.abs(losses))
        logs = jnp.stack([0.5 * jnp.log(_sq(g, 1)) - 0.5 * np.log(g.shape[1]) + 0.5 * jnp.log(_sq(p, 1)) - log_loss
                          for g, p in zip(gp, points)])
        gsc = jnp.exp(_log_geo_mean(logs, 1))
        pre = points[1:-1:2]
        std = jnp.stack([jnp.std(z, axis=0).mean() for z in pre])
        sign = []
        for z in pre:
            pos = jnp.sum(z > 0, axis=0)
            neg = jnp.sum(z < 0, axis=0)
            tot = pos + neg
            sign.append(jnp.where(tot > 0, jnp.minimum(pos, neg) / jnp.maximum(tot, 1), 0.0).mean())
        ratio = jnp.stack([jnp.sqrt(_sq(g, None) / _sq(w, None)) for g, w in zip(gw, weights)])
        return gsc, std, jnp.stack(sign), ratio

    return run


def _make_w2():
    def f(x, perts, weights, biases):  # one sample
        return _forward(weights, biases, x, perts)[-1]

    @jax.jit
    def run(weights, biases, x):
        dt = x.dtype
        widths = [x.shape[1]] + [d for w in weights[:-1] for d in (w.shape[0], w.shape[0])] + [weights[-1].shape[0]]
        perts = [jnp.zeros((d,), dt) for d in widths]
        jac = jax.vmap(jax.jacrev(f, argnums=1), in_axes=(0, None, None, None))(x, perts, weights, biases)
        return jnp.sqrt(jnp.stack([_sq(j, (1, 2)) for j in jac]))

    return run


def _make_w3():
    def f(x, perts, weights, biases, end_layer):
        return _forward(weights[: end_layer + 1], biases[: end_layer + 1], x, perts)[-1]

    @jax.jit
    def run(weights, biases, x):
        dt = x.dtype
        points = _forward(weights, biases, x, [])
        n1 = len(points)
        widths = [p.shape[1] for p in points]
        log_pn = jnp.stack([0.5 * jnp.log(_sq(p, 1)) for p in points])  # (N+1, B)
        log_half_w = 0.5 * np.log(np.array(widths, dtype=np.float64))
        out = jnp.full((n1, n1), jnp.nan, dtype=dt)
        out = out.at[np.diag_indices(n1)].set(1.0)
        rows, cols, sqs = [], [], []
        for k in range(len(weights)):
            zp = 2 * k + 1
            perts = [jnp.zeros((d,), dt) for d in widths[:zp]]
            jac = jax.vmap(jax.jacrev(lambda xx, pp: f(xx, pp, weights, biases, k), argnums=1), in_axes=(0, None))(x, perts)
            if k < len(weights) - 1:
                d2 = (1.0 - points[zp + 1] ** 2) ** 2  # (B, K)
                for i, j in enumerate(jac):
                    rn = _sq(j, 2)  # (B, K) per-row squared norms
                    rows += [i, i]
                    cols += [zp, zp + 1]
                    sqs += [rn.sum(axis=1), jnp.sum(rn * d2, axis=1)]
                rows.append(zp)
                cols.append(zp + 1)
                sqs.append(d2.sum(axis=1))
            else:
                for i, j in enumerate(jac):
                    rows.append(i)
                    cols.append(zp)
                    sqs.append(_sq(j, (1, 2)))
        rows, cols = np.array(rows), np.array(cols)
        logs = 0.5 * jnp.log(jnp.stack(sqs)) - log_half_w[rows][:, None].astype(dt) + log_pn[rows] - log_pn[cols]
        return out.at[rows, cols].set(jnp.exp(_log_geo_mean(logs, 1)))

    return run


_RUNNERS = {}


def prepare(workload, weights, biases, x, y, dtype):
    if workload not in _RUNNERS:
        _RUNNERS[workload] = {"W1": _make_w1, "W2": _make_w2, "W3": _make_w3}[workload]()
    run = _RUNNERS[workload]
    dev = lambda a: jnp.asarray(np.asarray(a, dtype=dtype))  # noqa: E731
    weights = [dev(w) for w in weights]
    biases = [dev(b) for b in biases]
    x = dev(x)
    if workload == "W1":
        yj = jnp.asarray(np.asarray(y, dtype=np.int32))

        def call():
            gsc, std, sign, ratio = jax.device_get(run(weights, biases, x, yj))
            return {"gsc": np.asarray(gsc, np.float64), "pre_activation_std": np.asarray(std, np.float64),
                    "sign_diversity": np.asarray(sign, np.float64), "weight_gradient_ratio": np.asarray(ratio, np.float64)}

        return call
    return lambda: np.asarray(jax.device_get(run(weights, biases, x)), np.float64)



def gemm_gflops(n, dtype, repeat=5):
    """Best GFLOP/s of a jitted n x n x n matmul (XLA's own GEMM)."""
    import time

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((n, n)).astype(dtype))
    b = jnp.asarray(rng.standard_normal((n, n)).astype(dtype))
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9
