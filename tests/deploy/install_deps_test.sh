#!/usr/bin/env bash
# scripts/install-deps.sh run from a copy outside the source tree, as the Dockerfile's build
# stage runs it: --build must succeed with what the build needs (and no Node.js); the default
# mode, which also sets up the tests' npm packages, must say why it cannot instead of failing
# inside sha256sum. Needs the build packages installed (it runs after the build), so apt-get
# is not reached.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp"
cp "$ROOT/scripts/install-deps.sh" "$work/tmp/install-deps.sh"

if ! "$work/tmp/install-deps.sh" --build >"$work/build.log" 2>&1; then
  echo "FAIL: install-deps.sh --build from a copy outside the tree:"; cat "$work/build.log"; exit 1
fi
grep -q "all packages present" "$work/build.log" || { echo "FAIL: unexpected output"; cat "$work/build.log"; exit 1; }
if grep -q "npm\|nodejs" "$work/build.log"; then
  echo "FAIL: --build touched Node.js/npm:"; cat "$work/build.log"; exit 1
fi
# The build list names no Node.js package.
if sed -n '/^BUILD_PACKAGES=(/,/^)/p' "$ROOT/scripts/install-deps.sh" | grep -qw "nodejs\|npm"; then
  echo "FAIL: BUILD_PACKAGES names Node.js"; exit 1
fi

set +e
"$work/tmp/install-deps.sh" >"$work/default.log" 2>&1
rc=$?
set -e
if [[ $rc -eq 0 ]] || ! grep -q "package-lock.json not found: run the script from the source tree" "$work/default.log"; then
  echo "FAIL: default mode outside the tree (rc $rc) should name the missing lock file:"
  cat "$work/default.log"; exit 1
fi
if grep -q "sha256sum" "$work/default.log"; then
  echo "FAIL: sha256sum error leaked"; cat "$work/default.log"; exit 1
fi
echo "install-deps outside the tree: ok"
