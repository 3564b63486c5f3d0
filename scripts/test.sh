#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs every test: the Rust core's unit tests and the
# Python suite (pytest + hypothesis + doctests). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== Rust tests (cargo test -p gsc-core)"
cargo test --release -p gsc-core
echo "== native-module stubs against the binary (mypy.stubtest)"
.venv/bin/python -m mypy.stubtest gsc_core._core
echo "== Python tests (pytest)"
HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci} .venv/bin/python -m pytest -q -p no:cacheprovider python tests
echo "== all tests passed"
