"""The run-time SIMD dispatch of the elementwise kernels (rust/src/simd.rs).

The wheel is built for baseline x86-64 (no ``target-cpu`` flags): the tanh/tanh' kernels are
compiled for SSE2, AVX2+FMA and AVX-512F and the widest the CPU has is chosen at run time.
``GSC_CORE_SIMD=scalar|avx2|avx512`` forces a level (read once per process), so each level the
CPU supports is run here in a subprocess, on the same networks, and must give the default path's
numbers. (The GEMM is the ``gemm`` crate's, with its own run-time dispatch and no override.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

#: what each process computes and saves: a tanh MLP's losses and gradients, its per-sample
#: Jacobian norms, and tanh / tanh' on a grid straight through an Activation layer
SCRIPT = r"""
import sys
import numpy as np
import gsc_core
from gsc_core import _core

out = {"level": np.array(_core._simd_level())}
rng = np.random.default_rng(7)
for dtype in ("float64", "float32"):
    net = gsc_core.mlp(depth=8, width=48, activation="tanh", sigma_w=1.3, sigma_b=0.1, seed=3, dtype=dtype)
    x = rng.normal(size=(33, 48)).astype(dtype)  # an odd batch: vector bodies and remainders
    losses, grads = net.loss_and_grad(x)
    out[f"{dtype}/losses"] = losses
    for kind in ("points", "weights", "biases"):
        for k, g in enumerate(getattr(grads, kind)):
            if g is not None:
                out[f"{dtype}/{kind}/{k}"] = g
    out[f"{dtype}/jacobian_norms"] = gsc_core.jacobian_norms(net, x)
    z = np.concatenate([np.linspace(-30.0, 30.0, 2001), [0.0, -0.0, 1e-300, -1e-20, 1e-8, 0.3, 19.06, -354.0, 710.0]])
    act = gsc_core.Network([gsc_core.Activation("tanh")], dtype=dtype)
    zz = z.astype(dtype).reshape(-1, 1)
    out[f"{dtype}/tanh"] = act.forward(zz).points[-1]
    out[f"{dtype}/tanh_derivative"] = act.vjp(zz, np.ones_like(zz)).points[0]
    out[f"{dtype}/z"] = zz
np.savez(sys.argv[1], **out)
"""


#: the levels a CPU whose best level is the key can run
LEVELS = {"scalar": ["scalar"], "avx2": ["scalar", "avx2"], "avx512": ["scalar", "avx2", "avx512"]}


def _run(level: Optional[str]) -> dict:
    """SCRIPT's arrays from a fresh process, with ``GSC_CORE_SIMD=level`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "GSC_CORE_SIMD"}
    if level is not None:
        env["GSC_CORE_SIMD"] = level
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "out.npz"
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        with np.load(path) as data:
            return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def default_run() -> dict:
    return _run(None)


def test_default_level_is_the_best_the_cpu_has(default_run):
    flags = set()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if not flags:
        pytest.skip("no /proc/cpuinfo flags to compare with")
    expected = "avx512" if {"avx512f", "fma"} <= flags else "avx2" if {"avx2", "fma"} <= flags else "scalar"
    assert str(default_run["level"]) == expected


@pytest.mark.parametrize("level", ["scalar", "avx2", "avx512"])
def test_forced_level_gives_the_default_paths_numbers(level, default_run):
    if level not in LEVELS[str(default_run["level"])]:
        pytest.skip(f"this CPU has no {level}")
    forced = _run(level)
    assert str(forced["level"]) == level, "GSC_CORE_SIMD was not honoured"
    assert sorted(forced) == sorted(default_run)
    for key, expected in default_run.items():
        if key == "level":
            continue
        actual = forced[key]
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, key
        scale = max(float(np.linalg.norm(expected.astype(np.float64))), 1e-300)
        err = float(np.linalg.norm(actual.astype(np.float64) - expected.astype(np.float64))) / scale
        # float64: the kernels are the same branch-free code at every width (fused multiply-adds
        # are exact in all of them), so at most the last bits may differ
        tol = 1e-15 if expected.dtype == np.float64 else 1e-7
        assert err <= tol, f"{key}: GSC_CORE_SIMD={level} differs from the default path by {err:.2e} (relative)"


def test_unknown_or_unsupported_level_falls_back_to_the_detected_one(default_run):
    assert str(_run("bogus")["level"]) == str(default_run["level"])
    best = str(default_run["level"])
    if best != "avx512":  # asking for more than the CPU has must not run illegal instructions
        assert str(_run("avx512")["level"]) == best


def test_default_path_agrees_with_numpy_tanh(default_run):
    for dtype in ("float64", "float32"):
        z = default_run[f"{dtype}/z"].astype(np.float64)
        t = default_run[f"{dtype}/tanh"].astype(np.float64)
        d = default_run[f"{dtype}/tanh_derivative"].astype(np.float64)
        ulp = np.spacing(np.abs(np.tanh(z)).astype(dtype)).astype(np.float64)
        assert np.all(np.abs(t - np.tanh(z)) <= 2 * ulp)
        sech2 = 1.0 / np.cosh(np.clip(z, -350, 350)) ** 2
        assert np.allclose(d, sech2, rtol=1e-13 if dtype == "float64" else 1e-6, atol=1e-300)
