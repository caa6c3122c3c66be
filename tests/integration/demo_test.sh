#!/usr/bin/env bash
# The README's first command on a built tree: scripts/demo.sh with the tiny zoo (build and
# install skipped, fewer requests), on free ports. Fails when any step of the demo fails: the
# zoo, the merge, the read-back, the server's load, a text request, or either load run.
#   tests/integration/demo_test.sh BUILD_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$(cd "${1:?usage: demo_test.sh BUILD_DIR}" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SKIP_BUILD=1 BUILD_DIR="$BUILD" OUT="$WORK/demo" REQUESTS=200 PORT="$(port)" \
  METRICS_PORT="$(port)" "$ROOT/scripts/demo.sh" > "$WORK/demo.log" 2>&1 || {
  cat "$WORK/demo.log"; echo "demo_test: scripts/demo.sh failed" >&2; exit 1; }
for needle in "== one text, task unknown" "label:" "accuracy:" "server stopped"; do
  if ! grep -q -- "$needle" "$WORK/demo.log"; then
    cat "$WORK/demo.log"; echo "demo_test: '$needle' missing from the demo's output" >&2; exit 1
  fi
done
echo "demo_test: passed"
