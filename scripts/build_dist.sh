#!/usr/bin/env bash
# Builds the distributables into dist/ (or the directory given as the first argument):
#   - the wheel: one abi3 wheel for CPython 3.9 and newer, x86-64 Linux, release build, stripped,
#     tagged manylinux_2_34 (the oldest glibc whose symbol versions the binary needs when built
#     on this Debian 12 machine; maturin refuses to build if the binary needs more, and
#     `auditwheel show` below must agree);
#   - the sdist, which builds the same wheel with `pip install` wherever cargo is available.
# No CPU-specific flags: the SIMD kernels pick AVX2/AVX-512 at run time (GSC_CORE_SIMD forces a
# level), so the wheel runs on any x86-64 CPU.
#
# Options (environment):
#   GSC_CORE_MANYLINUX=manylinux_X_Y   another platform tag (e.g. on a build host with an older glibc)
#   GSC_CORE_ZIG=1                     link with zig (`maturin build --zig`, ziglang from PyPI) against
#                                      old glibc symbol versions: with GSC_CORE_MANYLINUX=manylinux_2_17
#                                      this gives a manylinux2014 wheel that installs on glibc 2.17+.
#                                      A cross build: its own cargo target directory, a full compile.
#   GSC_CORE_CHECK_SDIST=1             also build a wheel from the sdist with `pip wheel`, from
#                                      scratch in a temporary directory (a full compile: minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-dist}
TAG=${GSC_CORE_MANYLINUX:-manylinux_2_34}

if [ ! -x .venv/bin/maturin ] || [ ! -x .venv/bin/auditwheel ]; then
    scripts/setup.sh
fi
mkdir -p "$OUT"
rm -f "$OUT"/gsc_core-*.whl "$OUT"/gsc_core-*.tar.gz

ZIG=()
if [ "${GSC_CORE_ZIG:-0}" = 1 ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check ziglang
    ZIG=(--zig)
    export PATH="$PWD/.venv/bin:$PATH"  # maturin runs zig as `python3 -m ziglang`
fi
echo "== wheel (maturin build --release ${ZIG[*]} --compatibility $TAG)"
.venv/bin/maturin build --release --strip "${ZIG[@]}" --compatibility "$TAG" --out "$OUT"
echo "== sdist (maturin sdist)"
.venv/bin/maturin sdist --out "$OUT"

wheel=$(ls "$OUT"/gsc_core-*-cp39-abi3-*"${TAG}"_x86_64*.whl)
sdist=$(ls "$OUT"/gsc_core-*.tar.gz)
echo "== auditwheel show $(basename "$wheel")"
.venv/bin/auditwheel show "$wheel" | tee "$OUT/auditwheel-show.txt"
if ! tr -s ' \n' ' ' < "$OUT/auditwheel-show.txt" | grep -q "consistent with the following platform tag: \"${TAG}_x86_64\""; then
    echo "auditwheel does not accept the $TAG tag" >&2
    exit 1
fi

if [ "${GSC_CORE_CHECK_SDIST:-0}" = 1 ]; then
    echo "== building a wheel from the sdist (pip wheel --no-deps $(basename "$sdist"), from scratch)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    start=$(date +%s)
    # a fresh cargo target directory: nothing of this checkout's build is reused
    CARGO_TARGET_DIR="$tmp/target" .venv/bin/python -m pip wheel --no-deps --no-cache-dir -w "$tmp/wheel" "$sdist"
    echo "built $(basename "$tmp"/wheel/*.whl) from the sdist in $(($(date +%s) - start)) s"
fi

echo "== built"
ls -l "$wheel" "$sdist"
