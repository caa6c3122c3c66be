#!/usr/bin/env bash
# Drives a real twin-server with an independent Open Inference Protocol client: Python gRPC
# stubs generated from proto/ (not the C++ code), tiny artifacts built by the project's own
# binaries, the server on a loopback port it picks itself.
#
#   tests/kserve/run.sh BUILD_DIR      (CTest: kserve_python_client)
set -euo pipefail

BUILD=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
READY_TIMEOUT_S=120

for bin in twin-zoo twin-merge twin-server; do
  if [ ! -x "$BUILD/bin/$bin" ]; then
    echo "run.sh: $BUILD/bin/$bin is missing; build the default target first" >&2
    exit 1
  fi
done

# Debian's gRPC for Python (grpc_tools here is 1.14: old, but its protoc is all we need).
if ! "$PY" -c 'import grpc, grpc_tools.protoc' 2>/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q python3-grpcio python3-grpc-tools >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q python3-grpcio python3-grpc-tools >/dev/null; }
fi

WORK=$(mktemp -d /tmp/twin-kserve.XXXXXX)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

export OPENBLAS_NUM_THREADS=1
"$BUILD/bin/twin-zoo" --out "$WORK/zoo" --tasks 3 --vocab 288 >/dev/null
"$BUILD/bin/twin-merge" --config "$WORK/zoo/merge.yaml" --version v1 --threads 1 --quiet

mkdir "$WORK/stubs"
"$PY" -m grpc_tools.protoc -I "$ROOT/proto" --python_out="$WORK/stubs" \
  --grpc_python_out="$WORK/stubs" inference/grpc_predict_v2.proto twinmerge/v1/twinmerge.proto

# Port 0: the server picks a free port and logs it, so no other process can take it first.
"$BUILD/bin/twin-server" --artifact_uri "file://$WORK/zoo/store" --listen 127.0.0.1:0 --admin_listen 127.0.0.1:0 \
  --metrics_listen 127.0.0.1:0 --cache_dir "$WORK/cache" --device cpu --threads 1 \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 $((READY_TIMEOUT_S * 10))); do
  PORT=$(sed -n 's/.*gRPC on port \([0-9][0-9]*\).*/\1/p' "$WORK/server.log" | head -n 1)
  [ -n "$PORT" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$PORT" ]; then
  echo "run.sh: twin-server did not start:" >&2
  cat "$WORK/server.log" >&2
  exit 1
fi

# The client waits for ServerReady itself, then runs every case.
status=0
KSERVE_ADDRESS="127.0.0.1:$PORT" KSERVE_SERVER_PID="$SERVER_PID" \
  KSERVE_READY_TIMEOUT_S="$READY_TIMEOUT_S" PYTHONPATH="$WORK/stubs" \
  "$PY" "$HERE/kserve_client_test.py" -v || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- twin-server log ---" >&2
  cat "$WORK/server.log" >&2
fi
exit "$status"
