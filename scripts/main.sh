#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job: `gsc-core report`, the paper's Figure 1
# and more for 50-layer, width-100 networks of ten architectures at initialisation. Writes
# gsc-report/report.html, the figures (PNG) and gsc-report/results.json, and prints a summary table.
# Extra arguments are passed to `gsc-core report` (see `.venv/bin/gsc-core report --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/gsc-core report "$@"
