"""Plain NumPy, as an expert would write it: batched GEMMs over whole batches (and over the K
cotangents of a sample), no Python loop over samples, one (B, K, d) block alive at a time."""

import numpy as np

NAME = "numpy"


def available():
    return True, f"numpy {np.__version__}"


def _forward(weights, biases, x):
    """Points p_0..p_N and the tanh derivatives 1 - h_k^2 of every hidden layer."""
    points = [x]
    derivs = []
    h = x
    last = len(weights) - 1
    for k, (w, b) in enumerate(zip(weights, biases)):
        z = h @ w.T
        z += b
        points.append(z)
        if k < last:
            h = np.tanh(z)
            points.append(h)
            derivs.append(1.0 - h * h)
    return points, derivs


def _sq_norms(a):
    """Per-sample squared norm of a (B, ...) array."""
    a2 = a.reshape(a.shape[0], -1)
    return np.einsum("bi,bi->b", a2, a2)


def _log_geo_mean(logs, axis=0):
    """Geometric mean (as a log) over `axis` of the finite values (SPEC §3: zeros and non-finite left out)."""
    finite = np.isfinite(logs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, logs, 0.0).sum(axis=axis) / finite.sum(axis=axis)


def w1(weights, biases, x, y):
    points, derivs = _forward(weights, biases, x)
    o = points[-1]
    bsz = x.shape[0]
    m = o.max(axis=1, keepdims=True)
    e = np.exp(o - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(bsz)
    losses = (m[:, 0] + np.log(s[:, 0])) - o[rows, y]
    g = e / s
    g[rows, y] -= 1.0
    # Backward: gradients at every point (B, d_i) and every weight.
    n = len(points) - 1
    grads = [None] * (n + 1)
    wgrads = [None] * len(weights)
    grads[n] = g
    p = n
    for k in range(len(weights) - 1, -1, -1):
        wgrads[k] = g.T @ points[p - 1]
        g = g @ weights[k]
        p -= 1
        grads[p] = g
        if k > 0:
            g = g * derivs[k - 1]
            p -= 1
            grads[p] = g
    with np.errstate(divide="ignore", invalid="ignore"):
        log_loss = np.log(np.abs(losses))
        logs = np.stack([0.5 * np.log(_sq_norms(gr)) - 0.5 * np.log(gr.shape[1]) + 0.5 * np.log(_sq_norms(pt)) - log_loss
                         for gr, pt in zip(grads, points)])
    gsc = np.exp(_log_geo_mean(logs, axis=1).astype(np.float64))
    pre = points[1:-1:2]  # the Dense outputs feeding a tanh
    std = np.array([z.std(axis=0).mean() for z in pre], dtype=np.float64)
    sign = []
    for z in pre:
        pos = np.count_nonzero(z > 0, axis=0)
        neg = np.count_nonzero(z < 0, axis=0)
        tot = pos + neg
        sign.append(np.where(tot > 0, np.minimum(pos, neg) / np.maximum(tot, 1), 0.0).mean())
    ratio = np.array([np.linalg.norm(gw) / np.linalg.norm(w) for gw, w in zip(wgrads, weights)], dtype=np.float64)
    return {"gsc": gsc, "pre_activation_std": std, "sign_diversity": np.array(sign), "weight_gradient_ratio": ratio}


def _sweep(weights, points, derivs, end_layer, row_norms):
    """Identity-seeded backward sweep from the output of Dense layer `end_layer` (0-based).

    Returns the per-sample squared Frobenius norms of d z_end / d p_i for every point i below
    (list indexed by point, ``None`` at and above the end), or with ``row_norms`` the per-row
    squared norms (B, K) instead (for the tanh-end trick of W3)."""
    end_point = 2 * end_layer + 1
    bsz = points[0].shape[0]
    out = [None] * len(points)
    w = weights[end_layer]
    k_out, d_in = w.shape
    # d z_end / d p_{end-1} = W_end for every sample: no GEMM needed for the first step.
    u = np.broadcast_to(w, (bsz, k_out, d_in))
    p = end_point - 1

    def record(u, p):
        if row_norms:
            out[p] = np.einsum("bkd,bkd->bk", u, u)
        else:
            out[p] = _sq_norms(u)

    record(u, p)
    for layer in range(end_layer - 1, -1, -1):
        u = u * derivs[layer][:, None, :]  # at z_{layer}
        p -= 1
        record(u, p)
        w = weights[layer]
        u = (u.reshape(-1, u.shape[2]) @ w).reshape(bsz, k_out, w.shape[1])
        p -= 1
        record(u, p)
    return out


def w2(weights, biases, x):
    points, derivs = _forward(weights, biases, x)
    sq = _sweep(weights, points, derivs, len(weights) - 1, row_norms=False)
    k = weights[-1].shape[0]
    sq[-1] = np.full(x.shape[0], float(k), dtype=x.dtype)  # d out / d out = I_K
    return np.sqrt(np.stack(sq))


def w3(weights, biases, x):
    """All pairs i < j. One sweep per Dense end point z_k; the end point h_k = tanh(z_k) comes from
    the same sweep: ||D J||_F^2 = sum_r D_r^2 ||J_r||^2 with the per-row norms of J = d z_k / d p_i."""
    points, derivs = _forward(weights, biases, x)
    n1 = len(points)
    with np.errstate(divide="ignore"):
        log_pn = np.stack([0.5 * np.log(_sq_norms(pt)) for pt in points])  # (N+1, B)
    log_half_w = 0.5 * np.log(np.array([pt.shape[1] for pt in points], dtype=np.float64))
    out = np.full((n1, n1), np.nan)
    np.fill_diagonal(out, 1.0)

    def put(i, j, sq):
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = 0.5 * np.log(sq) - log_half_w[i] + log_pn[i] - log_pn[j]
        out[i, j] = np.exp(_log_geo_mean(logs.astype(np.float64)))

    for layer in range(len(weights)):
        zp = 2 * layer + 1
        has_tanh = layer < len(weights) - 1
        rn = _sweep(weights, points, derivs, layer, row_norms=has_tanh)
        d2 = derivs[layer] ** 2 if has_tanh else None
        for i in range(zp):
            if has_tanh:
                put(i, zp, rn[i].sum(axis=1))
                put(i, zp + 1, np.einsum("bk,bk->b", rn[i], d2))
            else:
                put(i, zp, rn[i])
        if has_tanh:
            put(zp, zp + 1, _sq_norms(derivs[layer]))
    return out


def prepare(workload, weights, biases, x, y, dtype):
    weights = [np.ascontiguousarray(w, dtype=dtype) for w in weights]
    biases = [np.ascontiguousarray(b, dtype=dtype) for b in biases]
    x = np.ascontiguousarray(x, dtype=dtype)
    if workload == "W1":
        return lambda: w1(weights, biases, x, y)
    if workload == "W2":
        return lambda: w2(weights, biases, x)
    return lambda: w3(weights, biases, x)


def gemm_gflops(n, dtype, repeat=5):
    """Best GFLOP/s of an n x n x n matmul."""
    import time

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9
