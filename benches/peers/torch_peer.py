"""PyTorch (CPU), the usual ways: eager autograd with ``retain_grad`` for W1;
``torch.func.vmap(jacrev)`` for W2 (zero perturbations at every point, one ``jacrev``) and W3 (one
per Dense end point, the tanh end point from the same Jacobians' per-row norms)."""

import numpy as np

NAME = "torch"

try:
    import torch
    from torch.func import jacrev, vmap

    _ERR = None
except Exception as e:  # pragma: no cover - depends on the machine
    torch = None
    _ERR = f"{type(e).__name__}: {e}"


def available():
    if torch is None:
        return False, f"torch not importable ({_ERR})"
    return True, f"torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _forward(weights, biases, x, perts=()):
    def add(v, i):
        return v + perts[i] if i < len(perts) else v

    h = add(x, 0)
    points = [h]
    last = len(weights) - 1
    for k, (w, b) in enumerate(zip(weights, biases)):
        z = add(torch.addmm(b, h, w.t()) if h.dim() == 2 else h @ w.t() + b, 2 * k + 1)
        points.append(z)
        if k < last:
            h = add(torch.tanh(z), 2 * k + 2)
            points.append(h)
    return points


def _log_geo_mean(logs, dim):
    finite = torch.isfinite(logs)
    return torch.where(finite, logs, torch.zeros_like(logs)).sum(dim=dim) / finite.sum(dim=dim)


def _sq(a, dims):
    return (a * a).sum(dim=dims)


def w1(weights, biases, x, y):
    for w in weights:
        w.grad = None
    x = x.detach().requires_grad_()
    points = _forward(weights, biases, x)
    for p in points[1:]:
        p.retain_grad()
    o = points[-1]
    losses = torch.logsumexp(o, dim=1) - o.gather(1, y[:, None])[:, 0]
    losses.sum().backward()
    with torch.no_grad():
        log_loss = torch.log(losses.abs())
        logs = torch.stack([0.5 * torch.log(_sq(p.grad, 1)) - 0.5 * np.log(p.shape[1]) + 0.5 * torch.log(_sq(p, 1)) - log_loss
                            for p in points])
        gsc = torch.exp(_log_geo_mean(logs, 1))
        pre = points[1:-1:2]
        std = torch.stack([z.std(dim=0, correction=0).mean() for z in pre])
        sign = []
        for z in pre:
            pos = (z > 0).sum(dim=0)
            neg = (z < 0).sum(dim=0)
            tot = pos + neg
            sign.append(torch.where(tot > 0, torch.minimum(pos, neg).to(z.dtype) / tot.clamp(min=1).to(z.dtype), torch.zeros((), dtype=z.dtype)).mean())
        ratio = torch.stack([w.grad.norm() / w.norm() for w in weights])
    return {"gsc": gsc.double().numpy(), "pre_activation_std": std.double().numpy(),
            "sign_diversity": torch.stack(sign).double().numpy(), "weight_gradient_ratio": ratio.double().numpy()}


def _widths(weights, d0):
    return [d0] + [d for w in weights[:-1] for d in (w.shape[0], w.shape[0])] + [weights[-1].shape[0]]


def w2(weights, biases, x):
    perts = tuple(torch.zeros(d, dtype=x.dtype) for d in _widths(weights, x.shape[1]))

    def f(xb, pp):
        return _forward(weights, biases, xb, pp)[-1]

    with torch.no_grad():
        jac = vmap(jacrev(f, argnums=1), in_dims=(0, None))(x, perts)
        return torch.sqrt(torch.stack([_sq(j, (1, 2)) for j in jac])).double().numpy()


def w3(weights, biases, x):
    with torch.no_grad():
        points = _forward(weights, biases, x)
        n1 = len(points)
        widths = [p.shape[1] for p in points]
        log_pn = torch.stack([0.5 * torch.log(_sq(p, 1)) for p in points]).double()
        log_half_w = 0.5 * np.log(np.array(widths, dtype=np.float64))
        out = np.full((n1, n1), np.nan)
        np.fill_diagonal(out, 1.0)

        def put(i, j, sq):
            logs = 0.5 * torch.log(sq.double()) - log_half_w[i] + log_pn[i] - log_pn[j]
            out[i, j] = float(torch.exp(_log_geo_mean(logs, 0)))

        for k in range(len(weights)):
            zp = 2 * k + 1
            perts = tuple(torch.zeros(d, dtype=x.dtype) for d in widths[:zp])
            ws, bs = weights[: k + 1], biases[: k + 1]
            jac = vmap(jacrev(lambda xb, pp: _forward(ws, bs, xb, pp)[-1], argnums=1), in_dims=(0, None))(x, perts)
            if k < len(weights) - 1:
                d2 = (1.0 - points[zp + 1] ** 2) ** 2
                for i, j in enumerate(jac):
                    rn = _sq(j, 2)
                    put(i, zp, rn.sum(dim=1))
                    put(i, zp + 1, (rn * d2).sum(dim=1))
                put(zp, zp + 1, d2.sum(dim=1))
            else:
                for i, j in enumerate(jac):
                    put(i, zp, _sq(j, (1, 2)))
    return out


def prepare(workload, weights, biases, x, y, dtype):
    tdt = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    if workload == "W1":
        weights = [torch.tensor(np.asarray(w), dtype=tdt, requires_grad=True) for w in weights]
        biases = [torch.tensor(np.asarray(b), dtype=tdt, requires_grad=True) for b in biases]
    else:
        weights = [torch.tensor(np.asarray(w), dtype=tdt) for w in weights]
        biases = [torch.tensor(np.asarray(b), dtype=tdt) for b in biases]
    x = torch.tensor(np.asarray(x), dtype=tdt)
    if workload == "W1":
        yt = torch.tensor(np.asarray(y), dtype=torch.int64)
        return lambda: w1(weights, biases, x, yt)
    if workload == "W2":
        return lambda: w2(weights, biases, x)
    return lambda: w3(weights, biases, x)


def gemm_gflops(n, dtype, repeat=5):
    """Best GFLOP/s of an n x n x n torch.mm."""
    import time

    rng = np.random.default_rng(0)
    a = torch.tensor(rng.standard_normal((n, n)).astype(dtype))
    b = torch.tensor(rng.standard_normal((n, n)).astype(dtype))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9
