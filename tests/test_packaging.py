"""What the installed distribution says about itself: the version (one home, the Cargo workspace)
and complete package metadata. Runs against the source tree's development install and, in
tests/test_wheel.py, against the wheel installed into a fresh virtual environment."""

from __future__ import annotations

import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

import gsc_core

ROOT = Path(__file__).resolve().parents[1]
IN_SOURCE_TREE = (ROOT / "Cargo.toml").is_file() and (ROOT / "python" / "gsc_core").is_dir()
source_tree_only = pytest.mark.skipif(not IN_SOURCE_TREE, reason="needs the source tree (Cargo.toml, python/)")


def test_version_is_the_distributions():
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?(a|b|rc|dev|post)\d+)*", gsc_core.__version__)
    assert metadata.version("gsc-core") == gsc_core.__version__


def test_imported_from_where_the_wheel_test_installed_it():
    """Inside tests/test_wheel.py's fresh environment: this suite runs against the installed
    wheel, not the source tree."""
    site = os.environ.get("GSC_CORE_EXPECT_INSTALLED_IN")
    if not site:
        pytest.skip("only in tests/test_wheel.py's fresh virtual environment")
    assert Path(gsc_core.__file__).resolve().is_relative_to(Path(site).resolve()), gsc_core.__file__
    assert Path(gsc_core._core.__file__).name.endswith(".abi3.so")


def test_metadata_is_complete():
    meta = metadata.metadata("gsc-core")
    assert meta["Name"] == "gsc-core"
    assert meta["Summary"] and "gradient" in meta["Summary"]
    assert meta.get("License-Expression") == "MIT" or meta.get("License") == "MIT"
    assert meta["Requires-Python"] == ">=3.9"
    classifiers = set(meta.get_all("Classifier") or [])
    for minor in range(9, 14):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    for c in ("Programming Language :: Rust", "Operating System :: POSIX :: Linux", "Topic :: Scientific/Engineering", "Intended Audience :: Science/Research"):
        assert c in classifiers
    urls = {entry.split(",", 1)[0].strip().lower() for entry in meta.get_all("Project-URL") or []}
    assert {"homepage", "repository", "documentation", "changelog"} <= urls
    assert {"plot", "report", "torch", "jax", "test"} <= set(meta.get_all("Provides-Extra") or [])
    assert any(req.startswith("numpy") for req in meta.get_all("Requires-Dist") or [])
    assert (meta.get("Description-Content-Type") or "").startswith("text/markdown")
    assert "gsc_core" in (meta.get_payload() or meta.get("Description") or "")  # the README


def _workspace_version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    section = re.search(r"^\[workspace\.package\]\n(.*?)(?=^\[|\Z)", text, re.S | re.M)
    assert section, "Cargo.toml has no [workspace.package]"
    found = re.search(r'^version\s*=\s*"([^"]+)"', section.group(1), re.M)
    assert found, "[workspace.package] has no version"
    return found.group(1)


@source_tree_only
def test_version_has_one_home():
    """The Cargo workspace's version is the only one: the crates inherit it, pyproject.toml declares
    it dynamic (maturin takes it from the bindings crate), and the native module reports it."""
    version = _workspace_version()
    assert gsc_core.__version__ == version
    for crate in ("rust", "bindings"):
        assert re.search(r"^version\.workspace\s*=\s*true", (ROOT / crate / "Cargo.toml").read_text(), re.M), crate
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic\s*=\s*\["version"\]', pyproject, re.M)
    assert not re.search(r"^version\s*=", pyproject, re.M)


@source_tree_only
def test_no_other_file_hard_codes_the_version():
    version = _workspace_version()
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    # Cargo.toml is the home; Cargo.lock is generated from it; the changelog names releases
    allowed = {"Cargo.toml", "Cargo.lock", "CHANGELOG.md"}
    pattern = re.compile(r"(?<![\w.])" + re.escape(version) + r"(?![\w.])")
    offenders = []
    for name in files:
        path = ROOT / name
        if not name or name in allowed or not path.is_file() or path.suffix in {".npz", ".png"}:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"the version {version} is written out in: {', '.join(offenders)}"
