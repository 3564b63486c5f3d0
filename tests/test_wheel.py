"""The wheel users install: built by scripts/build_dist.sh, installed into a fresh virtual
environment whose PATH has no Rust toolchain, and exercised there (`gsc-core --help`, then this
whole test suite, copied away from the source tree so only the installed wheel can be imported).

Slow (about five minutes: the release build is shared with scripts/setup.sh's, so only the
packaging is redone, and pip installs the dependencies from its cache; building a wheel from the
sdist is a full compile) but part of CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Iterator
from xml.etree import ElementTree

import pytest

import gsc_core

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "scripts" / "build_dist.sh"
#: set inside the fresh environment's test run, so that it does not build and test a wheel again
NESTED = "GSC_CORE_IN_WHEEL_TEST"
TAG = os.environ.get("GSC_CORE_MANYLINUX", "manylinux_2_34")
#: the fresh environment's PATH: its own bin, then the system's, and nothing with cargo or rustc
SYSTEM_PATH = "/usr/bin:/bin"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(os.environ.get(NESTED)), reason="already inside the wheel's fresh environment"),
    pytest.mark.skipif(not BUILD.is_file(), reason="needs the source tree (scripts/build_dist.sh)"),
    pytest.mark.skipif(not sys.platform.startswith("linux") or sysconfig.get_platform() != "linux-x86_64", reason="the wheel is built for x86-64 Linux"),
]


def _run(args: list, timeout: float, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    return proc


class Fresh:
    """The built distributables and a fresh virtual environment with the wheel installed."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.dist = tmp / "dist"
        self.build = _run(["bash", BUILD, self.dist], timeout=1200, cwd=ROOT)
        (self.wheel,) = self.dist.glob("gsc_core-*.whl")
        (self.sdist,) = self.dist.glob("gsc_core-*.tar.gz")
        self.venv = tmp / "venv"
        # the base interpreter of the one running this test, not its virtual environment
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", self.venv], timeout=300)
        self.bin = self.venv / "bin"
        self.path = f"{self.bin}:{SYSTEM_PATH}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CARGO_TARGET_DIR", "GSC_CORE_SIMD")}
        self.env.update(PATH=self.path, MPLBACKEND="Agg", PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        # the test extra and what the suite's optional parts need (the report extra); no torch/jax
        _run([self.bin / "python", "-m", "pip", "install", "-q", f"{self.wheel}[test,report]"], timeout=900, env=self.env, cwd=tmp)
        self.site = Path(_run([self.bin / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout=60, env=self.env, cwd=tmp).stdout.strip())


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Iterator[Fresh]:
    env = Fresh(tmp_path_factory.mktemp("wheel"))
    yield env
    shutil.rmtree(env.venv, ignore_errors=True)  # some 400 MB (SciPy, scikit-learn, matplotlib)


def test_wheel_is_abi3_manylinux_and_auditwheel_accepts_it(fresh):
    version = gsc_core.__version__
    # (a manylinux_2_17 wheel also carries its legacy alias manylinux2014)
    assert re.fullmatch(rf"gsc_core-{re.escape(version)}-cp39-abi3-([\w.]+\.)?{TAG}_x86_64(\.[\w.]+)?\.whl", fresh.wheel.name), fresh.wheel.name
    assert fresh.sdist.name == f"gsc_core-{version}.tar.gz"
    shown = " ".join((fresh.dist / "auditwheel-show.txt").read_text().split())
    assert f'is consistent with the following platform tag: "{TAG}_x86_64"' in shown
    # the native module links only the system libraries manylinux allows (no bundled copies needed)
    assert "libs/" not in shown and fresh.wheel.stat().st_size < 20 * 2**20


def test_sdist_has_what_a_build_needs(fresh):
    import tarfile

    with tarfile.open(fresh.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        workspace = tar.extractfile(f"gsc_core-{gsc_core.__version__}/Cargo.toml").read().decode()
    for need in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "LICENSE", "README.md", "CHANGELOG.md", "bindings/Cargo.toml", "bindings/src/lib.rs", "rust/Cargo.toml", "rust/src/lib.rs", "rust/src/simd.rs", "python/gsc_core/__init__.py", "python/gsc_core/_core.pyi", "python/gsc_core/py.typed"):
        assert need in names, need
    # the bench-only workspace member is not shipped, so the workspace must not list it
    members = re.search(r"^members\s*=\s*\[(.*?)\]", workspace, re.M | re.S)
    assert members and re.findall(r'"([^"]+)"', members.group(1)) == ["rust", "bindings"]
    assert not any(n.startswith("benches/") for n in names)


def test_sdist_builds_a_wheel_from_scratch(fresh):
    """`pip wheel` on the sdist, with cargo but none of this checkout's build (a fresh cargo target
    directory): a full release compile, about 2.5 minutes on 2 cores."""
    out = fresh.tmp / "from-sdist"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(CARGO_TARGET_DIR=str(fresh.tmp / "sdist-target"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, fresh.sdist], timeout=1800, env=env, cwd=fresh.tmp)
    (wheel,) = out.glob("gsc_core-*.whl")
    assert wheel.name.startswith(f"gsc_core-{gsc_core.__version__}-cp39-abi3-")
    shutil.rmtree(fresh.tmp / "sdist-target", ignore_errors=True)


def test_fresh_environment_has_no_rust_toolchain(fresh):
    for tool in ("cargo", "rustc"):
        assert shutil.which(tool, path=fresh.path) is None, f"{tool} is on the fresh environment's PATH"
    probe = "import shutil; print(shutil.which('cargo'), shutil.which('rustc'))"
    assert _run([fresh.bin / "python", "-c", probe], timeout=60, env=fresh.env, cwd=fresh.tmp).stdout.split() == ["None", "None"]


def test_installed_package_comes_from_the_wheel(fresh):
    code = "import gsc_core, importlib.metadata as m; print(gsc_core.__file__); print(gsc_core.__version__, m.version('gsc-core')); print(gsc_core._core._simd_level())"
    out = _run([fresh.bin / "python", "-c", code], timeout=120, env=fresh.env, cwd=fresh.tmp).stdout.split("\n")
    assert Path(out[0]).resolve().is_relative_to(fresh.site.resolve()), out[0]
    assert out[1].split() == [gsc_core.__version__] * 2
    assert out[2] in ("scalar", "avx2", "avx512")


def test_console_script_runs(fresh):
    script = fresh.bin / "gsc-core"
    assert script.is_file()
    help_ = _run([script, "--help"], timeout=120, env=fresh.env, cwd=fresh.tmp).stdout
    assert help_.startswith("usage: gsc-core") and "report" in help_
    assert gsc_core.__version__ in _run([script, "--version"], timeout=120, env=fresh.env, cwd=fresh.tmp).stdout


def test_suite_passes_against_the_installed_wheel(fresh):
    """This test suite, copied out of the source tree (with pyproject.toml for pytest's settings),
    plus the doctests of the installed package, run by the fresh environment's pytest."""
    suite = fresh.tmp / "suite"
    shutil.copytree(ROOT / "tests", suite / "tests", ignore=shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache"))
    shutil.copy2(ROOT / "pyproject.toml", suite / "pyproject.toml")
    env = dict(fresh.env, **{NESTED: "1", "GSC_CORE_EXPECT_INSTALLED_IN": str(fresh.site), "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci")})
    report = suite / "results.xml"
    args = [fresh.bin / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", "tests", fresh.site / "gsc_core"]
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=1500, env=env, cwd=suite)
    tail = proc.stdout[-3000:]
    print(tail)
    assert proc.returncode == 0, f"pytest in the fresh environment exited {proc.returncode}\n{tail}\n{proc.stderr[-3000:]}"
    cases = ElementTree.parse(report).getroot().iter("testcase")
    outcome: dict = {}
    for case in cases:
        kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        outcome.setdefault(kind, []).append((case.get("classname"), case.get("name")))
    assert not outcome.get("failure") and not outcome.get("error"), outcome.get("failure", []) + outcome.get("error", [])
    passed = outcome.get("passed", [])
    # the whole suite ran (hundreds of tests), the installed modules' doctests and the forced
    # SIMD fallback among them, and the suite's own check that it imported the wheel
    assert len(passed) >= 300, f"only {len(passed)} tests passed: {tail}"
    assert any(not cls.startswith("tests.") and name.startswith("gsc_core.") for cls, name in passed), "no doctest of the installed package ran"
    assert ("tests.test_simd", "test_forced_level_gives_the_default_paths_numbers[scalar]") in passed
    assert ("tests.test_packaging", "test_imported_from_where_the_wheel_test_installed_it") in passed


#: run in the fresh environment, natively and under an emulated CPU: the numbers of a tanh MLP
OLD_CPU_PROBE = r"""
import sys
import numpy as np
import gsc_core
net = gsc_core.mlp(depth=6, width=64, activation="tanh", sigma_b=0.1, seed=3)
x = np.random.default_rng(7).normal(size=(33, 64))
losses, grads = net.loss_and_grad(x)
np.savez(sys.argv[1], level=np.array(gsc_core._core._simd_level()), losses=losses, g0=grads.points[0],
         w0=grads.weights[0], jn=gsc_core.jacobian_norms(net, x))
"""


def test_wheel_runs_on_a_cpu_without_avx2(fresh):
    """The installed wheel under qemu-user emulating a Sandy Bridge (AVX, but no AVX2 or FMA; the
    oldest model NumPy 2.x itself still runs on under this qemu): the kernels and the GEMM take
    their fallback paths, and the numbers agree with the native run. Needs qemu-x86_64 (Debian's
    qemu-user); skipped without it."""
    import numpy as np

    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (apt-get install qemu-user)")
    script = fresh.tmp / "old_cpu_probe.py"
    script.write_text(OLD_CPU_PROBE)
    native, emulated = fresh.tmp / "native.npz", fresh.tmp / "emulated.npz"
    _run([fresh.bin / "python", script, native], timeout=120, env=fresh.env, cwd=fresh.tmp)
    _run([qemu, "-cpu", "SandyBridge", fresh.bin / "python", script, emulated], timeout=600, env=fresh.env, cwd=fresh.tmp)
    with np.load(native) as a, np.load(emulated) as b:
        assert str(b["level"]) == "scalar"
        for key in ("losses", "g0", "w0", "jn"):
            err = float(np.linalg.norm(a[key] - b[key]) / np.linalg.norm(a[key]))
            assert err <= 1e-13, f"{key}: the emulated old CPU differs by {err:.1e} (relative)"
