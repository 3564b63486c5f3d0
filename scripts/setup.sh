#!/usr/bin/env bash
# Sets up a development environment from nothing but python3 and cargo: a virtualenv in .venv
# with the runtime, test and report dependencies, and gsc_core built (release) and installed into it
# (with the `gsc-core` command).
# Idempotent: re-running only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "$PY" -m venv .venv
fi
echo "== installing Python dependencies"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check "maturin>=1.9.4,<2" "numpy>=1.22" "pytest>=7" "hypothesis>=6" "mypy>=1.18"
# building and checking the distributables (scripts/build_dist.sh, tests/test_wheel.py)
.venv/bin/python -m pip install -q --disable-pip-version-check "auditwheel>=6"
# the report's extras (gsc-core[report]): figures, progress bar, the bundled digits dataset
.venv/bin/python -m pip install -q --disable-pip-version-check "matplotlib>=3.7" "tqdm>=4.40" "scikit-learn>=1.0"
echo "== building gsc_core (release)"
.venv/bin/maturin develop --release -q
.venv/bin/python -c "import gsc_core; print('gsc_core', gsc_core.__version__, 'ready,', gsc_core.get_num_threads(), 'threads')"
