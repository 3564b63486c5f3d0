"""gsc_core against NumPy, JAX and PyTorch on the three canonical workloads (issue "Performance:
beat JAX and PyTorch on the canonical workloads").

Workloads: tanh MLPs, LeCun init N(0, 1/fan_in), zero biases, Gaussian inputs, float32 and float64.
Every peer gets exactly gsc_core's weights; its numbers are validated against gsc_core's.

- W1 profile: 50 Dense, width 100, in 100, out 10, B = 2048. Forward, cross-entropy on random
  labels, gradients at every point and weight, per-sample GSC to the loss (geometric mean),
  pre-activation std and sign diversity per Activation layer; gsc_core: ``analyze(spectrum=False)``.
- W2 jacobian: 50 Dense, width 100, out 100, B = 256: per-sample ``||d out / d p_i||_F`` for every
  point; gsc_core: ``jacobian_norms``.
- W3 matrix: 32 Dense, width 100, out 100, B = 32: the exact sample-mode ``gsc_matrix``.

FLOPs counted (nominal, the same for every implementation): W1 = 3 x sum_Dense 2 B d_in d_out
(forward, then input and weight gradients); W2 = sum_Dense 2 B K d_in d_out, K = output width;
W3 = sum over end points j of the same with K = d_j (an implementation may do less: gsc_core and
the peers here get the end point tanh(z_k) from z_k's sweep, about half the nominal count; the
targets table shows both).

Per (workload, dtype, implementation): first call (in the main process, including JAX
compilation; and in a fresh process, see below), steady state (best of --repeat, the repeats
round-robin over the implementations, capped at --budget seconds per implementation and cell),
GFLOP/s, % of this machine's GEMM peak (a 2048^3 matmul with NumPy, gsc_core (one Dense layer's
forward) and every loaded peer, before and after the runs; the best counts: NumPy's OpenBLAS may
use only AVX2 on a CPU with AVX-512), time relative to gsc_core, and peak memory: each (workload,
dtype, implementation) is re-run in a fresh subprocess (``--one W2 jax float64``), which reports
its peak RSS (VmHWM; ``ru_maxrss`` survives exec on Linux and would report the parent's) and that
minus its RSS right after imports.

Timings on a shared machine are only as good as its quiet: the 1-minute load average before and
after the run is printed; PyTorch's OpenMP pool suffers most from other busy processes.

Run (from the repository root, in the dev venv):

    python benches/compare.py                 # everything, a few minutes on 2 cores
    python benches/compare.py --quick         # fewer repeats, shorter budget
    python benches/compare.py --threads 1     # gsc_core.set_num_threads(1); peers via env vars
    python benches/compare.py --json out.json --peers numpy,jax --workloads W2
    python benches/compare.py --scaling       # gsc_core alone, 1 vs 2 threads
    python benches/compare.py --one W2 jax float64   # internal: one cell, prints a JSON line

Peers other than NumPy are optional: a missing one is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("W1", "W2", "W3")
DTYPES = ("float32", "float64")
# Validation tolerances (max relative error against gsc_core).
TOL = {"float32": 1e-3, "float64": 1e-8}
# Targets of the issue.
TARGET_PEER_SPEEDUP = 2.0
TARGET_FIRST_CALL_VS_JAX = 10.0
TARGET_GEMM_FRACTION = 0.70
TARGET_MEMORY_VS_JAX = 0.25
TARGET_THREAD_SPEEDUP = 1.8

SPECS = {
    # depth (Dense layers), width, in_dim, out_dim, batch
    "W1": dict(depth=50, width=100, in_dim=100, out_dim=10, batch=2048),
    "W2": dict(depth=50, width=100, in_dim=100, out_dim=100, batch=256),
    "W3": dict(depth=32, width=100, in_dim=100, out_dim=100, batch=32),
}


# ----------------------------------------------------------------------------- environment


def thread_env(n: int | None) -> dict:
    """Variables that limit the peers' thread pools; must be set before they are imported."""
    if not n:
        return {}
    env = {k: str(n) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    if flags:
        env["XLA_FLAGS"] = flags
    return env


def apply_threads(n: int | None) -> None:
    """Set the peers' thread variables and pin the process to n CPUs (before heavy imports)."""
    if not n:
        return
    os.environ.update(thread_env(n))
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if n < len(cpus):
            os.sched_setaffinity(0, cpus[:n])
    except (AttributeError, OSError):
        pass


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    """Peak RSS of this process image. On Linux ``ru_maxrss`` survives ``execve`` (a child started
    by a big parent reports the parent's peak), so VmHWM, which belongs to the new image, comes first."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ----------------------------------------------------------------------------- workloads


def build(workload: str, dtype: str):
    """gsc_core network, its weights and zero biases, inputs and labels (deterministic)."""
    import numpy as np

    import gsc_core

    s = SPECS[workload]
    net = gsc_core.mlp(s["depth"], s["width"], in_dim=s["in_dim"], out_dim=s["out_dim"], activation="tanh",
                       init="lecun", seed=0, dtype=dtype)
    dense = [l for l in net.layers if isinstance(l, gsc_core.Dense)]
    weights = [np.asarray(l.weight) for l in dense]
    biases = [np.zeros(w.shape[0], dtype=dtype) if l.bias is None else np.asarray(l.bias) for l, w in zip(dense, weights)]
    assert all(not np.any(b) for b in biases), "the workloads have zero biases"
    rng = np.random.default_rng(1234)
    x = rng.normal(size=(s["batch"], s["in_dim"])).astype(dtype)
    y = rng.integers(0, s["out_dim"], size=s["batch"]) if workload == "W1" else None
    return net, weights, biases, x, y


def flops(workload: str, weights) -> float:
    s = SPECS[workload]
    b = s["batch"]
    layer = [2.0 * b * w.shape[0] * w.shape[1] for w in weights]  # 2 B d_in d_out per Dense
    if workload == "W1":
        return 3.0 * sum(layer)
    if workload == "W2":
        return s["out_dim"] * sum(layer)
    # W3: end points z_1, h_1, ..., z_L; end point j sees the Dense layers up to it, K = d_j.
    total = 0.0
    for k, w in enumerate(weights):
        cost = w.shape[0] * sum(layer[: k + 1])
        total += cost if k == len(weights) - 1 else 2 * cost  # z_k and h_k = tanh(z_k)
    return total


def needed_fraction(workload: str, weights) -> float | None:
    """W3: the share of the nominal FLOPs that the sweeps from the Dense end points alone cost
    (the end point tanh(z_k) follows from z_k's sweep through per-row norms, as gsc_core and every
    peer here do it)."""
    if workload != "W3":
        return None
    b = SPECS[workload]["batch"]
    layer = [2.0 * b * w.shape[0] * w.shape[1] for w in weights]
    needed = sum(w.shape[0] * sum(layer[: k + 1]) for k, w in enumerate(weights))
    return needed / flops(workload, weights)


def gsc_core_callable(workload, net, x, y):
    import numpy as np

    import gsc_core

    if workload == "W1":
        def run():
            r = gsc_core.analyze(net, x, y, loss="cross_entropy", spectrum=False)
            return {"gsc": np.asarray(r.gsc), "pre_activation_std": np.asarray(r.pre_activation_std),
                    "sign_diversity": np.asarray(r.sign_diversity), "weight_gradient_ratio": np.asarray(r.weight_gradient_ratio)}
        return run
    if workload == "W2":
        return lambda: np.asarray(gsc_core.jacobian_norms(net, x), dtype=np.float64)
    return lambda: np.asarray(gsc_core.gsc_matrix(net, x), dtype=np.float64)


def load_peer(name: str):
    """(module or None, note)."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import peers

    try:
        mod = peers.load(name)
    except Exception as e:  # a peer that cannot even be imported is skipped, not fatal
        return None, f"{name}: {type(e).__name__}: {e}"
    ok, note = mod.available()
    return (mod if ok else None), note


def make_callable(impl, workload, dtype, built, peer_mod=None):
    net, weights, biases, x, y = built
    if impl == "gsc_core":
        return gsc_core_callable(workload, net, x, y)
    return peer_mod.prepare(workload, weights, biases, x, y, dtype)


# ----------------------------------------------------------------------------- measurement


def time_it(fn, repeat: int, budget: float):
    """(result of the first call, first-call seconds, best steady seconds, steady runs done)."""
    t = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t
    best = float("inf")
    runs = 0
    spent = 0.0
    while runs < max(1, repeat) and (runs == 0 or spent + best <= budget):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best = min(best, dt)
        spent += dt
        runs += 1
    return result, first, best, runs


def gemm_peak(peer_mods: dict, n: int = 2048, repeat: int = 5) -> dict:
    """{dtype: {library: GFLOP/s}} of an n^3 matmul with NumPy and every loaded peer. NumPy's
    OpenBLAS may not use the widest vector units of a new CPU (it reports its kernel as
    ``np.show_runtime()``'s architecture), so the machine's peak is the best library's."""
    out = {}
    for dt in DTYPES:
        out[dt] = {}
        for name, mod in [("numpy", load_peer("numpy")[0])] + [(k, m) for k, m in peer_mods.items() if k != "numpy"]:
            try:
                out[dt][name] = mod.gemm_gflops(n, dt, repeat)
            except Exception:  # a peer without float64 or a GEMM of its own: not a peak
                pass
        try:
            out[dt]["gsc_core"] = gsc_core_gemm_gflops(n, dt, repeat)
        except Exception:
            pass
    return out


def gsc_core_gemm_gflops(n: int, dtype: str, repeat: int = 5) -> float:
    """gsc_core's own GEMM: the forward pass of one n x n Dense layer (no bias) on n samples."""
    import numpy as np

    import gsc_core

    rng = np.random.default_rng(0)
    net = gsc_core.Network([gsc_core.Dense(rng.standard_normal((n, n)).astype(dtype))])
    x = rng.standard_normal((n, n)).astype(dtype)
    net.forward(x)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        net.forward(x)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9


def describe_gemm(g: dict) -> str:
    return "; ".join(f"{d}: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(libs.items())) + " GFLOP/s" for d, libs in g.items())


def rel_error(peer, ref) -> float:
    """Max elementwise relative error of peer against ref (dicts: over all keys); NaN patterns must
    match (a mismatch is an infinite error)."""
    import numpy as np

    if isinstance(ref, dict):
        return max(rel_error(peer[k], ref[k]) for k in ref)
    p = np.asarray(peer, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape:
        return float("inf")
    if not np.array_equal(np.isnan(p), np.isnan(r)):
        return float("inf")
    both = ~np.isnan(r)
    if not both.any():
        return 0.0
    p, r = p[both], r[both]
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.abs(p - r) / np.maximum(np.abs(r), np.finfo(np.float64).tiny)
    err = np.where(p == r, 0.0, err)
    return float(np.max(err))


def run_one(workload: str, impl: str, dtype: str, threads: int | None) -> dict:
    """Internal mode: one cell in this (fresh) process; peak RSS and the fresh-process first call."""
    import numpy as np  # noqa: F401

    import gsc_core

    if threads:
        gsc_core.set_num_threads(threads)
    mod = None
    if impl != "gsc_core":
        mod, note = load_peer(impl)
        if mod is None:
            return {"skipped": note}
    base = current_rss_mb()
    base_peak = peak_rss_mb()
    built = build(workload, dtype)
    fn = make_callable(impl, workload, dtype, built, mod)
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    t = time.perf_counter()
    fn()
    second = time.perf_counter() - t
    peak = peak_rss_mb()
    return {"rss_after_imports_mb": base, "peak_rss_after_imports_mb": base_peak, "peak_rss_mb": peak,
            "delta_rss_mb": peak - base, "first_fresh_s": first, "second_fresh_s": second}


def run_subprocess(workload, impl, dtype, threads, timeout=900) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", workload, impl, dtype]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    env.update(thread_env(threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- reporting


def fmt(v, spec=".3g", none="–"):
    if v is None:
        return none
    if isinstance(v, float) and v != v:
        return none
    return format(v, spec)


def secs(v):
    if v is None:
        return "–"
    return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def markdown_table(rows, memory: bool) -> str:
    head = ["workload", "dtype", "impl", "first call", "first (fresh proc.)", "steady", "GFLOP/s", "% GEMM peak",
            "time / gsc_core", "peak RSS MB", "Δ RSS MB", "max rel. err"]
    if not memory:
        head = [h for h in head if h not in ("first (fresh proc.)", "peak RSS MB", "Δ RSS MB")]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        if r.get("skipped"):
            continue
        cells = {
            "workload": r["workload"], "dtype": r["dtype"], "impl": r["impl"],
            "first call": secs(r["first_s"]), "first (fresh proc.)": secs(r.get("first_fresh_s")),
            "steady": secs(r["steady_s"]), "GFLOP/s": fmt(r["gflops"], ".1f"),
            "% GEMM peak": fmt(100 * r["gemm_fraction"], ".0f") + "%",
            "time / gsc_core": fmt(r["vs_gsc_core"], ".2f") + "x",
            "peak RSS MB": fmt(r.get("peak_rss_mb"), ".0f"), "Δ RSS MB": fmt(r.get("delta_rss_mb"), ".1f"),
            "max rel. err": "reference" if r["impl"] == "gsc_core" else "–" if "rel_err" not in r else
            (fmt(r["rel_err"], ".1e") + ("" if r["valid"] else " **MISMATCH**")),
        }
        out.append("| " + " | ".join(cells[h] for h in head) + " |")
    return "\n".join(out)


def targets_table(rows, memory: bool) -> str:
    by = {(r["workload"], r["dtype"], r["impl"]): r for r in rows if not r.get("skipped")}
    lines = ["| workload | dtype | target | measured | met? |", "|---|---|---|---|---|"]

    def add(w, d, target, measured, ok):
        lines.append(f"| {w} | {d} | {target} | {measured} | {'yes' if ok else '**no**'} |")

    for w in WORKLOADS:
        for d in DTYPES:
            g = by.get((w, d, "gsc_core"))
            if g is None:
                continue
            peers = [r for (ww, dd, i), r in by.items() if ww == w and dd == d and i != "gsc_core"]
            if peers:
                fast = min(peers, key=lambda r: r["steady_s"])
                sp = fast["steady_s"] / g["steady_s"]
                add(w, d, f"steady >= {TARGET_PEER_SPEEDUP:g}x faster than the fastest peer", f"{sp:.2f}x vs {fast['impl']}", sp >= TARGET_PEER_SPEEDUP)
            jx = by.get((w, d, "jax"))
            if jx is not None:
                key = "first_fresh_s" if g.get("first_fresh_s") and jx.get("first_fresh_s") else "first_s"
                sp = jx[key] / g[key]
                add(w, d, f"first call >= {TARGET_FIRST_CALL_VS_JAX:g}x faster than JAX's", f"{sp:.1f}x" + (" (fresh processes)" if key == "first_fresh_s" else ""), sp >= TARGET_FIRST_CALL_VS_JAX)
            if w in ("W2", "W3"):
                f = g["gemm_fraction"]
                extra = ""
                if w == "W3" and g.get("needed_fraction"):
                    extra = f" nominal; {100 * f * g['needed_fraction']:.0f}% counting only the Dense end points' sweeps"
                add(w, d, f">= {100 * TARGET_GEMM_FRACTION:.0f}% of GEMM peak", f"{100 * f:.0f}%{extra}", f >= TARGET_GEMM_FRACTION)
            if w == "W2" and memory and jx is not None and g.get("delta_rss_mb") and jx.get("delta_rss_mb"):
                ratio = g["delta_rss_mb"] / jx["delta_rss_mb"]
                add(w, d, f"peak memory (Δ RSS) < {TARGET_MEMORY_VS_JAX:g} x JAX's", f"{ratio:.3f} x ({g['delta_rss_mb']:.1f} vs {jx['delta_rss_mb']:.1f} MB)", ratio < TARGET_MEMORY_VS_JAX)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- modes


def run_cells(args, workloads, dtypes, impls, peer_mods, peak, log):
    """Times every implementation on every (workload, dtype). First calls in order, then the
    steady-state repeats round-robin over the implementations (rotating the order), so that a
    burst of load from other processes hits all of them alike; best of the repeats, each
    implementation stopping once its repeats exceed the budget."""
    rows = []
    for w in workloads:
        for d in dtypes:
            built = build(w, d)
            nominal = flops(w, built[1])
            cell = {}
            ref = None
            for impl in impls:
                row = {"workload": w, "dtype": d, "impl": impl, "gflop": nominal / 1e9, "needed_fraction": needed_fraction(w, built[1])}
                rows.append(row)
                try:
                    fn = make_callable(impl, w, d, built, peer_mods.get(impl))
                    t = time.perf_counter()
                    result = fn()
                    row["first_s"] = time.perf_counter() - t
                except Exception as e:  # report, keep going
                    row["skipped"] = f"{type(e).__name__}: {e}"
                    log(f"{w} {d} {impl}: FAILED {row['skipped']}")
                    continue
                if impl == "gsc_core":
                    ref = result
                elif ref is not None:
                    err = rel_error(result, ref)
                    row.update(rel_err=err, valid=bool(err <= TOL[d]))
                    if isinstance(ref, dict):
                        row["rel_err_by_key"] = {k: rel_error(result[k], ref[k]) for k in ref}
                cell[impl] = (fn, row)
                row.update(steady_s=float("inf"), steady_runs=0, spent_s=0.0)
                time.sleep(0.1)
            order = list(cell)
            for r in range(max(1, args.repeat)):
                for impl in order[r % len(order):] + order[: r % len(order)]:
                    fn, row = cell[impl]
                    if row["steady_runs"] >= 1 and row["spent_s"] + row["steady_s"] > args.budget:
                        continue
                    t = time.perf_counter()
                    fn()
                    dt = time.perf_counter() - t
                    row["steady_s"] = min(row["steady_s"], dt)
                    row["spent_s"] += dt
                    row["steady_runs"] += 1
                    time.sleep(0.1)  # let BLAS / OpenMP spinning threads go idle
            base = cell["gsc_core"][1]["steady_s"] if "gsc_core" in cell else float("nan")
            for impl, (_, row) in cell.items():
                row.update(gflops=nominal / row["steady_s"] / 1e9, gemm_fraction=nominal / row["steady_s"] / 1e9 / peak[d],
                           vs_gsc_core=row["steady_s"] / base)
                log(f"{w} {d} {impl:8s} first {row['first_s']:8.3f} s  steady {row['steady_s']:8.4f} s ({row['steady_runs']} runs)  "
                    f"{row['gflops']:7.1f} GFLOP/s" + (f"  rel.err {row['rel_err']:.2e}" + ("" if row["valid"] else "  MISMATCH")
                                                       if "rel_err" in row else ""))
    return rows


def main_compare(args) -> int:
    import numpy as np

    import gsc_core

    if args.threads:
        gsc_core.set_num_threads(args.threads)
    threads = gsc_core.get_num_threads()
    workloads = [w.strip().upper() for w in args.workloads.split(",")]
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    peer_names = [p.strip() for p in args.peers.split(",") if p.strip()]
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    peer_mods, notes = {}, []
    for name in peer_names:
        mod, note = load_peer(name)
        notes.append(note if mod is not None else f"skipped {note}")
        if mod is not None:
            peer_mods[name] = mod
        log(("peer " if mod is not None else "SKIP ") + note)

    load_start = load_average()
    if load_start > 0.5:
        log(f"warning: 1-minute load average {load_start:.2f} before the run: other processes will skew the timings")
    log("measuring the GEMM peak ...")
    peak_start = gemm_peak(peer_mods, n=args.gemm_size)
    log("  " + describe_gemm(peak_start))
    peak = {d: max(v.values()) for d, v in peak_start.items()}

    impls = ["gsc_core"] + [p for p in peer_names if p in peer_mods]
    rows = run_cells(args, workloads, dtypes, impls, peer_mods, peak, log)
    # The GEMM peak again after the runs; the better of the two is the machine's peak.
    log("measuring the GEMM peak again ...")
    peak_end = gemm_peak(peer_mods, n=args.gemm_size)
    log("  " + describe_gemm(peak_end))
    gemm_best = {d: {k: max(peak_start[d].get(k, 0.0), peak_end[d].get(k, 0.0)) for k in set(peak_start[d]) | set(peak_end[d])} for d in DTYPES}
    peak = {d: max(v.values()) for d, v in gemm_best.items()}
    peak_lib = {d: max(v, key=v.get) for d, v in gemm_best.items()}
    for row in rows:
        if not row.get("skipped"):
            row["gemm_fraction"] = row["gflops"] / peak[row["dtype"]]

    if args.memory:
        for row in rows:
            if row.get("skipped"):
                continue
            log(f"fresh process: {row['workload']} {row['impl']} {row['dtype']} ...")
            m = run_subprocess(row["workload"], row["impl"], row["dtype"], args.threads)
            if "error" in m or "skipped" in m:
                row["memory_error"] = m.get("error") or m.get("skipped")
                log("  " + row["memory_error"])
                continue
            row.update(m)
            log(f"  peak RSS {m['peak_rss_mb']:.0f} MB (+{m['delta_rss_mb']:.1f} MB after imports), first call {m['first_fresh_s']:.3f} s")

    meta = {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads, "quick": args.quick,
        "repeat": args.repeat, "budget_s": args.budget, "python": platform.python_version(),
        "numpy": np.__version__, "gsc_core": gsc_core.__version__, "gemm_peak_gflops": peak,
        "gemm_size": args.gemm_size, "gemm_by_library_gflops": gemm_best, "gemm_peak_start_gflops": peak_start, "gemm_peak_end_gflops": peak_end, "notes": notes, "load_average_start": load_start, "load_average_end": load_average(),
    }
    print(f"## gsc_core vs peers — {meta['cpu']}, {meta['logical_cpus']} logical CPUs, gsc_core threads = {threads}"
          f"{' (quick)' if args.quick else ''}\n")
    print(f"GEMM peak ({args.gemm_size}^3 matmul, the best library, best of before and after the runs): "
          + ", ".join(f"{d} {v:.1f} GFLOP/s ({peak_lib[d]})" for d, v in peak.items()) + "; by library: " + describe_gemm(gemm_best)
          + f". 1-minute load average {meta['load_average_start']:.2f} before, {meta['load_average_end']:.2f} after the run.\n")
    print(markdown_table(rows, args.memory))
    print("\nFirst call: in this process (JAX: including tracing and compilation); fresh proc.: the first call in a new "
          "process (`--one`), whose peak RSS and Δ RSS (peak minus RSS right after imports) are shown. "
          "time / gsc_core: steady-state time relative to gsc_core (> 1: gsc_core is faster). GFLOP/s and % GEMM peak use the nominal "
          "FLOP count of each workload for every implementation (for W3 about twice what the sweeps from the Dense end points "
          "cost, which is all that gsc_core and the peers compute, so W3 can exceed 100%).\n")
    print("### Targets\n")
    print(targets_table(rows, args.memory))
    print()
    for n in notes:
        print(f"- {n}")
    bad = [r for r in rows if "rel_err" in r and not r.get("valid")]
    if bad:
        print("\n**Validation failures** (peer vs gsc_core): " + "; ".join(f"{r['workload']} {r['dtype']} {r['impl']}: {r['rel_err']:.2e}"
                                                                       + (f" {r['rel_err_by_key']}" if 'rel_err_by_key' in r else "") for r in bad))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1, default=float)
        log(f"wrote {args.json}")
    return 1 if bad else 0


def main_scaling(args) -> int:
    import gsc_core

    workloads = [w.strip().upper() for w in args.workloads.split(",")]
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    counts = [1, os.cpu_count() or 1] if not args.threads else [1, args.threads]
    print(f"## gsc_core thread scaling — {cpu_model()}, {os.cpu_count()} logical CPUs\n")
    head = ["workload", "dtype"] + [f"{n} thread{'s' if n > 1 else ''}" for n in counts] + ["speedup", f"target >= {TARGET_THREAD_SPEEDUP:g}x"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    rows = []
    for w in workloads:
        for d in dtypes:
            net, _, _, x, y = build(w, d)
            fn = gsc_core_callable(w, net, x, y)
            times = []
            for n in counts:
                gsc_core.set_num_threads(n)
                times.append(time_it(fn, args.repeat, args.budget)[2])
            sp = times[0] / times[-1]
            rows.append({"workload": w, "dtype": d, "threads": counts, "steady_s": times, "speedup": sp})
            print(f"| {w} | {d} | " + " | ".join(secs(t) for t in times) + f" | {sp:.2f}x | {'yes' if sp >= TARGET_THREAD_SPEEDUP else '**no**'} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scaling": rows}, f, indent=1)
    return 0


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats and a shorter time budget per cell")
    p.add_argument("--threads", type=int, default=None, help="gsc_core.set_num_threads(N); the peers via OMP/OPENBLAS/XLA env vars and CPU affinity")
    p.add_argument("--repeat", type=int, default=None, help="steady-state repeats (best of; default 5, quick 2)")
    p.add_argument("--budget", type=float, default=None, help="seconds of steady-state repeats per cell (default 15, quick 4)")
    p.add_argument("--peers", default="numpy,jax,torch", help="comma-separated subset of numpy,jax,torch")
    p.add_argument("--workloads", default="W1,W2,W3")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the fresh-process memory runs")
    p.add_argument("--gemm-size", type=int, default=2048)
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--scaling", action="store_true", help="gsc_core alone, 1 vs N threads")
    p.add_argument("--one", nargs=3, metavar=("WORKLOAD", "IMPL", "DTYPE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.repeat is None:
        a.repeat = 2 if a.quick else 5
    if a.budget is None:
        a.budget = 4.0 if a.quick else 15.0
    if a.threads is not None and a.threads < 1:
        p.error("--threads must be at least 1")
    return a


def main(argv=None) -> int:
    args = parse(argv)
    if args.one:
        apply_threads(args.threads)
        w, impl, d = args.one
        print(json.dumps(run_one(w.upper(), impl, d, args.threads)), flush=True)
        return 0
    if args.scaling:
        return main_scaling(args)
    apply_threads(args.threads)
    return main_compare(args)


if __name__ == "__main__":
    sys.exit(main())
