#!/usr/bin/env bash
# SIGTERM under load loses nothing: TRIALS times, twin-server (tiny zoo) is started, an
# open-loop `twin-client bench` offers RATE requests/s over unary calls, and halfway through
# the server gets SIGTERM. Every request must end OK (answered) or UNAVAILABLE (refused while
# draining, or no server to connect to): never CANCELLED, DEADLINE_EXCEEDED, INTERNAL or
# anything else. The server must exit 0 each time.
#
#   tests/integration/drain_test.sh BUILD_DIR [TRIALS] [RATE]   (CTest: drain_sigterm, 20 trials)
#
# Prints one line per trial and "drain: N passed, N failed" (trials) at the end.
set -euo pipefail

BUILD=$(cd "${1:?usage: drain_test.sh BUILD_DIR [TRIALS] [RATE]}" && pwd)
TRIALS="${2:-20}"
RATE="${3:-400}"
LOAD_S=4          # bench duration; the SIGTERM lands inside it
START_S=1         # twin-client's own start (loading LibTorch) before its load begins
READY_TIMEOUT_S=60

for bin in twin-zoo twin-merge twin-server twin-client; do
  [[ -x "$BUILD/bin/$bin" ]] || { echo "drain_test.sh: $BUILD/bin/$bin is missing" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/twin-drain.XXXXXX)
SERVER_PID=""
cleanup() {
  [[ -n $SERVER_PID ]] && kill -KILL "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export OPENBLAS_NUM_THREADS=1
"$BUILD/bin/twin-zoo" --out "$WORK/zoo" --tasks 3 --vocab 288 >/dev/null
"$BUILD/bin/twin-merge" --config "$WORK/zoo/merge.yaml" --version v1 --threads 1 --quiet
# A grace of 0.5 s: health turns NOT_SERVING and the server keeps answering before GOAWAY, time
# for the clients' health watch to see it even on a loaded machine.
printf 'warmup_requests: 2\ndrain_grace_ms: 500\ndrain_timeout_ms: 20000\n' >"$WORK/server.yaml"

passed=0
failed=0
for trial in $(seq 1 "$TRIALS"); do
  log="$WORK/server.$trial.log"
  "$BUILD/bin/twin-server" --config "$WORK/server.yaml" \
    --artifact_uri "file://$WORK/zoo/store" --listen 127.0.0.1:0 --metrics_listen 127.0.0.1:0 --admin_listen 127.0.0.1:0 \
    --cache_dir "$WORK/cache" --device cpu --threads 1 >"$log" 2>&1 &
  SERVER_PID=$!
  port=""
  for _ in $(seq 1 $((READY_TIMEOUT_S * 10))); do
    if grep -q "serving version v1" "$log"; then
      port=$(sed -n 's/.*gRPC on port \([0-9][0-9]*\),.*/\1/p' "$log" | head -n 1)
      break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $port ]]; then
    echo "drain: trial $trial: the server did not start"; tail -20 "$log"; exit 1
  fi
  "$BUILD/bin/twin-client" --target "127.0.0.1:$port" --timeout_ms 10000 --health_check bench \
    --data "$WORK/zoo" --rate "$RATE" --duration_s "$LOAD_S" --seed "$trial" \
    >"$WORK/bench.$trial.out" 2>&1 &
  bench_pid=$!
  # Somewhere between 20% and 60% into the load, a different point in every trial.
  sleep "$(awk -v s="$LOAD_S" -v b="$START_S" -v t="$trial" \
    'BEGIN { printf "%.2f", b + s * (0.2 + 0.4 * ((t * 7) % 10) / 10) }')"
  kill -TERM "$SERVER_PID"
  rc=0
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=""
  wait "$bench_pid" || true
  summary=$(grep -E "^requests:|^errors:" "$WORK/bench.$trial.out" | tr '\n' ' ')
  # Codes other than UNAVAILABLE, and requests the client dropped for lack of a slot.
  lost=$(sed -n 's/^errors://p' "$WORK/bench.$trial.out" | tr ' ' '\n' | grep -v '^$' |
         grep -v '^UNAVAILABLE=' || true)
  if [[ $rc -eq 0 && -z $lost ]] && grep -q "^requests:" "$WORK/bench.$trial.out"; then
    passed=$((passed + 1))
    echo "drain: trial $trial ok (exit $rc): $summary"
  else
    failed=$((failed + 1))
    echo "drain: trial $trial FAILED (exit $rc, lost: ${lost:-none}): $summary"
    tail -5 "$log"
  fi
done
echo "drain: $passed passed, $failed failed"
((failed == 0))
