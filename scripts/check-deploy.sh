#!/usr/bin/env bash
# Offline checks of the deployment files: Dockerfile, deploy/ (kustomize base and overlays,
# Prometheus rules, Grafana dashboard) and helm/twin-merging. No cluster, Docker engine or
# helm binary is needed; see helm/twin-merging/README.md for what that leaves unchecked.
#
#   scripts/check-deploy.sh             # run by CTest as the test deploy_checks (label deploy)
#   TWIN_BIN_DIR=build/bin scripts/check-deploy.sh   # also check the runtime image's libraries
#
# Installs what it needs, idempotently: yamllint (Debian package), promtool (extracted from
# Debian's prometheus package into a cache folder, so no service is installed or started) and
# the npm packages of tests/deploy/package-lock.json into tests/deploy/node_modules.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESTS="$ROOT/tests/deploy"
TOOLS_DIR="${TWIN_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/twin-merging/tools}"

log() { echo "check-deploy: $*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root (or sudo) for: $*"; return 1
  fi
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

install_tools() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    log "installing nodejs and npm"
    apt_install nodejs npm || return 1
  fi
  if ! command -v yamllint >/dev/null; then
    log "installing yamllint"
    apt_install yamllint || return 1
  fi
  if command -v promtool >/dev/null; then
    PROMTOOL="$(command -v promtool)"
  else
    PROMTOOL="$TOOLS_DIR/promtool"
    if [[ ! -x $PROMTOOL ]]; then
      log "extracting promtool from Debian's prometheus package into $TOOLS_DIR"
      local tmp
      tmp="$(mktemp -d)" && chmod 755 "$tmp"
      (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 ||
        { as_root apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; }) &&
        dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x" &&
        mkdir -p "$TOOLS_DIR" && install -m 755 "$tmp/x/usr/bin/promtool" "$PROMTOOL.partial" &&
        mv "$PROMTOOL.partial" "$PROMTOOL"
      local rc=$?
      rm -rf "$tmp"
      [[ $rc -eq 0 ]] || { log "cannot get promtool"; return 1; }
    fi
  fi
  # npm ci only when package-lock.json changed since the last install.
  local stamp="$TESTS/node_modules/.package-lock.sha256"
  local want
  want="$(sha256sum "$TESTS/package-lock.json" | cut -d' ' -f1)"
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    log "installing npm packages into tests/deploy/node_modules"
    (cd "$TESTS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || { log "npm ci failed"; return 1; }
    echo "$want" >"$stamp"
  fi
}

passed=0
failed=0
step() {
  local name="$1"
  shift
  local out
  if out="$("$@" 2>&1)"; then
    passed=$((passed + 1))
    echo "ok   - $name"
  else
    failed=$((failed + 1))
    echo "FAIL - $name"
  fi
  [[ -n $out ]] && sed 's/^/       /' <<<"$out"
}

# The binaries whose linked libraries the runtime image must provide: $TWIN_BIN_DIR, or the
# build tree CTest runs this from (<build>/tests -> <build>/bin).
bin_dir() {
  local d="${TWIN_BIN_DIR:-$PWD/../bin}"
  [[ -x $d/twin-server && -x $d/twin-merge && -x $d/twin-client && -x $d/twin-inspect ]] && echo "$d"
}

if ! install_tools; then
  echo "0 passed, 1 failed"
  exit 1
fi

mapfile -t YAML_FILES < <(cd "$ROOT" && find deploy tests/deploy/helm-values -name '*.yaml' | sort)
YAML_FILES+=(helm/twin-merging/Chart.yaml helm/twin-merging/values.yaml tests/deploy/yamllint.yaml)

step "yamllint (${#YAML_FILES[@]} files)" \
  bash -c 'cd "$1" && shift && yamllint -s -c tests/deploy/yamllint.yaml "$@"' _ "$ROOT" "${YAML_FILES[@]}"
step "manifests, chart, dashboard and rules (tests/deploy/check.js)" node "$TESTS/check.js"
step "promtool check rules deploy/prometheus/rules.yaml" "$PROMTOOL" check rules "$ROOT/deploy/prometheus/rules.yaml"
step "promtool test rules deploy/prometheus/rules_test.yaml" \
  bash -c 'cd "$1/deploy/prometheus" && "$2" test rules rules_test.yaml' _ "$ROOT" "$PROMTOOL"
step "Dockerfile runtime packages (tests/deploy/runtime-libs.js)" node "$TESTS/runtime-libs.js" $(bin_dir)

echo "deploy: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
