#!/usr/bin/env bash
# Installs dependencies, configures, builds (ccache) and runs the whole test suite with CTest.
#   scripts/test.sh            # build dir: build/
#   BUILD_DIR=out scripts/test.sh -R merge   # extra args go to ctest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
JOBS="${JOBS:-$(nproc)}"

"$ROOT/scripts/install-deps.sh"
export OPENBLAS_NUM_THREADS=1
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# Paths relative to the checkout in ccache's keys, so that another clone of the same sources
# (a CI checkout, a second worktree) reuses the cache instead of recompiling everything.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-true}"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD_DIR" -j "$JOBS"
cd "$BUILD_DIR"
ctest --output-on-failure -j "$JOBS" "$@"
