#!/usr/bin/env bash
# twin-server against real, independent programs: a Python gRPC client (stubs generated from
# proto/ by grpc_tools, not our C++ code) calls Infer, GetModelInfo, the health service and
# Admin; a real Prometheus scrapes /metrics and is asked for the request, cache and reload
# metrics over its HTTP API; a new version published while serving is hot-reloaded; and a
# SIGTERM that lands while a version is loading drains and exits cleanly.
#
#   tests/integration/run.sh BUILD_DIR      (CTest: server_integration)
set -euo pipefail

BUILD=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
TOOLS_DIR="${TWIN_TOOLS_DIR:-$HOME/.cache/twin-merging/tools}"
READY_TIMEOUT_S=120

for bin in twin-zoo twin-merge twin-server twin-client; do
  [[ -x "$BUILD/bin/$bin" ]] || { echo "run.sh: $BUILD/bin/$bin is missing" >&2; exit 1; }
done
"$ROOT/scripts/install-deps.sh" --only python3-grpcio python3-grpc-tools >/dev/null 2>&1
PROMETHEUS="$(TWIN_TOOLS_DIR="$TOOLS_DIR" "$ROOT/scripts/fetch-prometheus.sh")/prometheus"

WORK=$(mktemp -d /tmp/twin-integration.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "run.sh: $*" >&2
  for log in "$WORK"/*.log; do echo "--- $log ---" >&2; tail -n 40 "$log" >&2; done
  exit 1
}
# Waits until a log line matches a sed pattern with one group, prints the group.
wait_for_log() {  # file pattern pid
  local value=""
  for _ in $(seq 1 $((READY_TIMEOUT_S * 10))); do
    value=$(sed -n "$2" "$1" | head -n 1)
    [[ -n $value ]] && { echo "$value"; return 0; }
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

export OPENBLAS_NUM_THREADS=1
"$BUILD/bin/twin-zoo" --out "$WORK/zoo" --tasks 3 --vocab 288 >/dev/null
"$BUILD/bin/twin-merge" --config "$WORK/zoo/merge.yaml" --version v1 --threads 1 --quiet

mkdir -p "$WORK/stubs" "$WORK/health_proto/twin_health"
"$PY" -m grpc_tools.protoc -I "$ROOT/proto" --python_out="$WORK/stubs" \
  --grpc_python_out="$WORK/stubs" twinmerge/v1/twinmerge.proto twinmerge/v1/admin.proto
# The health proto's Python module may not live under grpc/ (that is grpcio's own package):
# generate it as twin_health.health (the service is still grpc.health.v1.Health).
cp "$ROOT/proto/grpc/health/v1/health.proto" "$WORK/health_proto/twin_health/"
"$PY" -m grpc_tools.protoc -I "$WORK/health_proto" --python_out="$WORK/stubs" \
  --grpc_python_out="$WORK/stubs" twin_health/health.proto

# A long warm-up (routing passes) makes each load take a second or more, so that the SIGTERM
# at the end lands while a version is loading.
echo "warmup_requests: 20000" >"$WORK/server.yaml"
"$BUILD/bin/twin-server" --config "$WORK/server.yaml" \
  --artifact_uri "file://$WORK/zoo/store" --listen 127.0.0.1:0 --admin_listen 127.0.0.1:0 \
  --metrics_listen 127.0.0.1:0 --cache_dir "$WORK/cache" --device cpu --threads 1 \
  --poll_interval_ms 200 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
PORT=$(wait_for_log "$WORK/server.log" 's/.*gRPC on port \([0-9][0-9]*\),.*/\1/p' "$SERVER_PID") ||
  fail "twin-server did not start"
METRICS_PORT=$(sed -n 's/.*metrics on port \([0-9][0-9]*\).*/\1/p' "$WORK/server.log" | head -n 1)
ADMIN_PORT=$(sed -n 's/.*admin on port \([0-9][0-9]*\).*/\1/p' "$WORK/server.log" | head -n 1)

# Prometheus scrapes every second; its own port is picked free by the OS first.
PROM_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: twin-server
    static_configs: [{targets: ["127.0.0.1:$METRICS_PORT"]}]
YAML
"$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=("$!")

status=0
TWIN_ADDRESS="127.0.0.1:$PORT" TWIN_ADMIN_ADDRESS="127.0.0.1:$ADMIN_PORT" TWIN_SERVER_PID="$SERVER_PID" \
  PROMETHEUS_URL="http://127.0.0.1:$PROM_PORT" TWIN_READY_TIMEOUT_S="$READY_TIMEOUT_S" \
  TWIN_MERGE="$BUILD/bin/twin-merge" TWIN_MERGE_CONFIG="$WORK/zoo/merge.yaml" \
  PYTHONPATH="$WORK/stubs" "$PY" "$HERE/server_client_test.py" -v || status=$?
[[ $status -eq 0 ]] || fail "the Python client failed"

# The CLI's admin commands against the same server (v2 serving, following LATEST).
"$BUILD/bin/twin-client" --target "127.0.0.1:$ADMIN_PORT" reload --version v1 >"$WORK/cli.out" ||
  fail "twin-client reload --version v1 failed"
grep -q "serving v1 (was v2" "$WORK/cli.out" || fail "unexpected reload output: $(cat "$WORK/cli.out")"
"$BUILD/bin/twin-client" --target "127.0.0.1:$ADMIN_PORT" status >"$WORK/cli.out"
grep -q "^target: v1$" "$WORK/cli.out" || fail "unexpected status output: $(cat "$WORK/cli.out")"
"$BUILD/bin/twin-client" --target "127.0.0.1:$ADMIN_PORT" reload >"$WORK/cli.out"
grep -q "serving v2" "$WORK/cli.out" || fail "unexpected reload output: $(cat "$WORK/cli.out")"
if "$BUILD/bin/twin-client" --target "127.0.0.1:$ADMIN_PORT" reload --version v77 2>"$WORK/cli.err"; then
  fail "reloading a missing version succeeded"
fi
grep -q "NOT_FOUND" "$WORK/cli.err" || fail "unexpected error: $(cat "$WORK/cli.err")"

# SIGTERM while a version is loading: publish v4, wait for the server to start loading it,
# signal at once. The server must drain, stop, and exit 0 without serving v4.
"$BUILD/bin/twin-merge" --config "$WORK/zoo/merge.yaml" --version v4 --threads 1 --quiet
wait_for_log "$WORK/server.log" 's/.*\(loading version v4\).*/\1/p' "$SERVER_PID" >/dev/null ||
  fail "the server never started loading v4"
kill -TERM "$SERVER_PID"
rc=0
timeout 60 tail --pid="$SERVER_PID" -f /dev/null || fail "twin-server did not exit after SIGTERM"
wait "$SERVER_PID" || rc=$?
[[ $rc -eq 0 ]] || fail "twin-server exited with $rc after SIGTERM during a reload"
grep -q "stopped" "$WORK/server.log" || fail "no 'stopped' line after SIGTERM"
if grep -q "serving version v4" "$WORK/server.log"; then
  fail "the load of v4 completed after SIGTERM (it should have been cancelled)"
fi
grep -E "load of version .* failed.*version v4" "$WORK/server.log" || fail "the cancelled load of v4 was not logged"
echo "run.sh: SIGTERM during a reload: cancelled, drained and exited 0"
