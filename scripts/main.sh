#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job: the gradient-flow demo on the
# paper's 50-layer, width-100 MLPs. Extra arguments are passed to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python examples/gradient_norms.py "$@"
