#!/usr/bin/env bash
# Starts s3rver (a local S3-compatible server; npm package pinned in tests/s3/package-lock.json,
# installed by scripts/install-deps.sh) on 127.0.0.1 with a free port and a temporary data
# directory, with BUCKET created, and prints the port on stdout.
#
#   tests/s3/run_s3rver.sh BUCKET -- COMMAND [ARG...]   # runs COMMAND against it, then stops it
#   tests/s3/run_s3rver.sh BUCKET                       # serves until interrupted
#
# COMMAND runs with TWIN_TEST_S3_ENDPOINT and TWIN_S3_ENDPOINT (http://127.0.0.1:PORT),
# TWIN_TEST_S3_BUCKET, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (s3rver's fixed S3RVER/S3RVER)
# and AWS_REGION set; the script exits with COMMAND's status.
#
# When s3rver (or Node.js) is missing it exits 77, which CTest reports as skipped, unless CI=true:
# then it fails, because CI must have run scripts/install-deps.sh.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
S3RVER="$HERE/node_modules/.bin/s3rver"
START_TIMEOUT_S=60
SKIP=77

BUCKET=${1:?usage: run_s3rver.sh BUCKET [-- COMMAND ARG...]}
shift
if [[ $# -gt 0 ]]; then
  [[ $1 == "--" ]] || { echo "run_s3rver.sh: expected -- before the command" >&2; exit 2; }
  shift
fi

log() { echo "run_s3rver.sh: $*" >&2; }

if ! command -v node >/dev/null || [[ ! -x $S3RVER ]]; then
  if [[ ${CI:-} == "true" ]]; then
    log "s3rver is not installed ($S3RVER); CI must run scripts/install-deps.sh first"
    exit 1
  fi
  log "SKIPPED: s3rver is not installed; run scripts/install-deps.sh (npm ci in tests/s3)"
  exit "$SKIP"
fi

WORK=$(mktemp -d /tmp/twin-s3rver.XXXXXX)
SERVER_PID=""
cleanup() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# s3rver's ListObjectsV2 continuation tokens use DES, which OpenSSL 3 keeps in its legacy
# provider (Node.js >= 17 needs the flag to load it).
NODE_FLAGS=()
if node --openssl-legacy-provider -e 0 2>/dev/null; then NODE_FLAGS=(--openssl-legacy-provider); fi
# Port 0: s3rver binds a free port itself and prints it, so no other process can take it first.
# S3RVER_PORT picks the port instead (a test that starts its clients before the store).
node "${NODE_FLAGS[@]}" "$S3RVER" --directory "$WORK/data" --address 127.0.0.1 \
  --port "${S3RVER_PORT:-0}" --silent \
  --configure-bucket "$BUCKET" >"$WORK/s3rver.log" 2>&1 &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 $((START_TIMEOUT_S * 10))); do
  PORT=$(sed -n 's/^S3rver listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$WORK/s3rver.log" | head -n 1)
  [[ -n $PORT ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $PORT ]]; then
  log "s3rver did not start; its output:"
  cat "$WORK/s3rver.log" >&2
  exit 1
fi
echo "$PORT"
log "s3rver on 127.0.0.1:$PORT, bucket $BUCKET, data in $WORK/data"

export TWIN_TEST_S3_ENDPOINT="http://127.0.0.1:$PORT"
export TWIN_S3_ENDPOINT="$TWIN_TEST_S3_ENDPOINT"
export TWIN_TEST_S3_BUCKET="$BUCKET"
export AWS_ACCESS_KEY_ID=S3RVER
export AWS_SECRET_ACCESS_KEY=S3RVER
export AWS_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 TWIN_S3_ADDRESSING

if [[ $# -eq 0 ]]; then
  log "serving until interrupted (Ctrl-C)"
  wait "$SERVER_PID"
  exit 0
fi
cd "$ROOT"
status=0
"$@" || status=$?
exit "$status"
