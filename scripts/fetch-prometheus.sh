#!/usr/bin/env bash
# Puts Debian's prometheus and promtool binaries in a tools folder without installing the
# package (which would register and start a service), and prints the folder. Idempotent.
#   scripts/fetch-prometheus.sh            # -> $HOME/.cache/twin-merging/tools
#   TWIN_TOOLS_DIR=/opt/tools scripts/fetch-prometheus.sh
set -euo pipefail
TOOLS_DIR="${TWIN_TOOLS_DIR:-$HOME/.cache/twin-merging/tools}"
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if [[ -x $TOOLS_DIR/prometheus && -x $TOOLS_DIR/promtool ]]; then
  echo "$TOOLS_DIR"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
(cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 ||
  { as_root apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; }) ||
  { echo "fetch-prometheus: cannot download Debian's prometheus package" >&2; exit 1; }
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
mkdir -p "$TOOLS_DIR"
for tool in prometheus promtool; do
  install -m 755 "$tmp/x/usr/bin/$tool" "$TOOLS_DIR/$tool.partial"
  mv "$TOOLS_DIR/$tool.partial" "$TOOLS_DIR/$tool"
done
echo "$TOOLS_DIR"
