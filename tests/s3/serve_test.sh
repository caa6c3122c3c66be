#!/usr/bin/env bash
# twin-server serving from a real S3-compatible server (s3rver), through the faults:
#   1. the store is unreachable at start: NOT_SERVING, retrying; s3rver comes up and a version
#      is published: SERVING.
#   2. a version whose blob was corrupted (written by boto3, an independent client) is refused
#      with the blob named; the old version keeps serving; a version boto3 wrote intact is
#      served.
#   3. a twin-merge killed while publishing leaves nothing visible; the next run publishes the
#      same version cleanly and the server follows it.
#   4. the store goes down while the server polls it: it keeps serving.
#   5. SIGTERM: drains and exits 0.
#
#   tests/s3/serve_test.sh BUILD_DIR/bin      (CTest s3_serve_faults; 77 = skipped)
set -euo pipefail

BIN=$(cd "${1:?usage: serve_test.sh BIN_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
SKIP=77
BUCKET=twin-serve
PREFIX=models/serve
STORE="s3://$BUCKET/$PREFIX"
TIMEOUT_S=120

log() { echo "serve_test.sh: $*" >&2; }
for bin in twin-zoo twin-merge twin-server twin-client twin-inspect; do
  [[ -x $BIN/$bin ]] || { log "$BIN/$bin is missing; build the default target first"; exit 1; }
done
if ! command -v node >/dev/null || [[ ! -x $HERE/node_modules/.bin/s3rver ]] ||
  ! "$PY" -c 'import boto3' 2>/dev/null; then
  if [[ ${CI:-} == "true" ]]; then
    log "s3rver or python3-boto3 is missing; CI must run scripts/install-deps.sh first"
    exit 1
  fi
  log "SKIPPED: s3rver or python3-boto3 is missing (scripts/install-deps.sh installs them)"
  exit "$SKIP"
fi

WORK=$(mktemp -d /tmp/twin-s3-serve.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  log "FAILED: $*"
  for f in "$WORK"/*.log; do echo "--- $f ---" >&2; tail -n 30 "$f" >&2; done
  exit 1
}
wait_until() {  # description command...
  local what=$1
  shift
  for _ in $(seq 1 $((TIMEOUT_S * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || fail "twin-server exited while waiting for $what"
    sleep 0.2
  done
  fail "timed out waiting for $what"
}

S3_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export TWIN_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" AWS_ACCESS_KEY_ID=S3RVER \
  AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1 TWIN_S3_MAX_ATTEMPTS=2
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 TWIN_S3_ADDRESSING
export OPENBLAS_NUM_THREADS=1
"$BIN/twin-zoo" --out "$WORK/zoo" --tasks 3 --vocab 288 >/dev/null

# 1. Store unreachable at start.
"$BIN/twin-server" --artifact_uri "$STORE" --listen 127.0.0.1:0 --metrics_listen off --admin_listen 127.0.0.1:0 \
  --cache_dir "$WORK/cache" --device cpu --threads 1 --load_retry_ms 200 \
  --poll_interval_ms 300 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_until "the gRPC port" grep -q "gRPC on port" "$WORK/server.log"
PORT=$(sed -n 's/.*gRPC on port \([0-9][0-9]*\),.*/\1/p' "$WORK/server.log" | head -n 1)
ADMIN_PORT=$(sed -n 's/.*admin on port \([0-9][0-9]*\).*/\1/p' "$WORK/server.log" | head -n 1)
client() { "$BIN/twin-client" --target "127.0.0.1:$PORT" "$@"; }
admin() { "$BIN/twin-client" --target "127.0.0.1:$ADMIN_PORT" "$@"; }
wait_until "a failed load while the store is down" grep -q "load of version LATEST failed" "$WORK/server.log"
if client health >/dev/null 2>&1; then fail "SERVING while the store is unreachable"; fi
grep "load of version LATEST failed" "$WORK/server.log" | head -n 1 | grep -q "127.0.0.1 port $S3_PORT" ||
  fail "the failed load does not name the endpoint"
log "1: NOT_SERVING while $TWIN_S3_ENDPOINT is down"

S3RVER_PORT=$S3_PORT "$HERE/run_s3rver.sh" "$BUCKET" >"$WORK/s3rver.log" 2>&1 &
S3_PID=$!
PIDS+=("$S3_PID")
for _ in $(seq 1 $((TIMEOUT_S * 5))); do
  grep -q "s3rver on 127.0.0.1:$S3_PORT" "$WORK/s3rver.log" && break
  kill -0 "$S3_PID" 2>/dev/null || fail "s3rver did not start"
  sleep 0.2
done
"$BIN/twin-merge" --config "$WORK/zoo/merge.yaml" --output "$STORE" --version v1 --threads 1 \
  --quiet >/dev/null
wait_until "SERVING once the store is up" client health
client infer --text "hello" >"$WORK/infer.out" || fail "infer failed"
grep -q "artifact_version: v1" "$WORK/infer.out" || fail "not served from v1: $(cat "$WORK/infer.out")"
log "1: SERVING v1 from $STORE once s3rver came up"

# 2. A corrupted blob (boto3 copies v1 to v2 with one byte of the router flipped, and moves
#    LATEST): the reload is refused, v1 keeps serving.
"$PY" "$HERE/boto3_copy_version.py" --endpoint "$TWIN_S3_ENDPOINT" --bucket "$BUCKET" \
  --prefix "$PREFIX" --version v1 --new-version v2 --corrupt router.safetensors >/dev/null
wait_until "the refused load of v2" grep -q "blob router.safetensors of version v2: sha256 mismatch" "$WORK/server.log"
admin status >"$WORK/status.out"
grep -q "^version: v1$" "$WORK/status.out" || fail "not on v1 after the corrupt v2: $(cat "$WORK/status.out")"
grep -q "^last error: .*router.safetensors" "$WORK/status.out" || fail "status lacks the error"
client infer --text "still there" | grep -q "artifact_version: v1" || fail "v1 stopped serving"
log "2: corrupted v2 refused (router.safetensors named), v1 still serving"

# 2b. A version written entirely by boto3 (an independent client) is served.
"$PY" "$HERE/boto3_copy_version.py" --endpoint "$TWIN_S3_ENDPOINT" --bucket "$BUCKET" \
  --prefix "$PREFIX" --version v1 --new-version v2-boto3 >/dev/null 2>&1 ||
  fail "boto3 could not copy v1"
wait_until "the server to load the boto3-written v2-boto3" sh -c \
  "'$BIN/twin-client' --target 127.0.0.1:$ADMIN_PORT status | grep -q '^version: v2-boto3$'"
client infer --text "boto3" | grep -q "artifact_version: v2-boto3" || fail "v2-boto3 not served"
log "2b: the boto3-written v2-boto3 is served"

# 3. twin-merge killed while publishing v3: nothing visible; a second run publishes v3 cleanly.
"$BIN/twin-merge" --config "$WORK/zoo/merge.yaml" --output "$STORE" --version v3 --threads 1 \
  >"$WORK/merge-killed.log" 2>&1 &
MERGE_PID=$!
for _ in $(seq 1 $((TIMEOUT_S * 100))); do
  grep -q "\] publish" "$WORK/merge-killed.log" && break
  kill -0 "$MERGE_PID" 2>/dev/null || break
  sleep 0.01
done
kill -KILL "$MERGE_PID" 2>/dev/null || fail "twin-merge finished before it could be killed"
wait "$MERGE_PID" 2>/dev/null || true
if "$BIN/twin-inspect" --store "$STORE" --version v3 --cache "$WORK/inspect" >/dev/null 2>&1; then
  fail "the killed publish of v3 is visible"
fi
sleep 1  # a few polls
grep -q "loading version v3" "$WORK/server.log" && fail "the server tried to load the unpublished v3"
"$BIN/twin-merge" --config "$WORK/zoo/merge.yaml" --output "$STORE" --version v3 --threads 1 \
  --quiet >/dev/null || fail "republishing v3 after the killed run failed"
wait_until "the server to follow LATEST to v3" sh -c \
  "'$BIN/twin-client' --target 127.0.0.1:$ADMIN_PORT status | grep -q '^version: v3$'"
log "3: killed publish invisible, republished v3 served"

# 4. The store goes down: polls fail, v3 keeps serving.
kill "$S3_PID"
wait "$S3_PID" 2>/dev/null || true
failures_before=$(admin status | sed -n 's/^reload failures: //p')
wait_until "a failed poll while the store is down" sh -c \
  "[ \"\$('$BIN/twin-client' --target 127.0.0.1:$ADMIN_PORT status | sed -n 's/^reload failures: //p')\" -gt $failures_before ]"
client infer --text "store is down" | grep -q "artifact_version: v3" || fail "v3 stopped serving"
client health >/dev/null || fail "not SERVING while the store is down"
log "4: store down, v3 still serving"

# 5. SIGTERM.
kill -TERM "$SERVER_PID"
rc=0
wait "$SERVER_PID" || rc=$?
[[ $rc -eq 0 ]] || fail "twin-server exited $rc after SIGTERM"
log "passed"
