#!/usr/bin/env bash
# Installs dependencies, builds, then runs the system end to end on the embedded defaults:
# small models built here -> twin-merge -> local file:// object store -> verified read-back
# -> twin-server -> twin-client bench with mixed-task traffic (accuracy and latency).
#   scripts/demo.sh                 # everything under ./out/demo
#   ZOO=lite scripts/demo.sh        # the byte-level zoo on real text (about 3 more minutes)
#   ZOO=gen scripts/demo.sh         # the generative zoo: a byte-level Llama and 5 generative
#                                   # experts merged, then streamed generations (about 10 more
#                                   # minutes)
#   PORT=50051 METRICS_PORT=9090 scripts/demo.sh
#   SKIP_BUILD=1 BUILD_DIR=build REQUESTS=200 scripts/demo.sh   # a built tree (CTest demo_tiny)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
OUT="${OUT:-$ROOT/out/demo}"

export OPENBLAS_NUM_THREADS=1
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  "$ROOT/scripts/install-deps.sh"
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target twin-merge twin-zoo twin-inspect twin-server twin-client
fi
REQUESTS="${REQUESTS:-2000}"

ZOO="${ZOO:-tiny}"
rm -rf "$OUT" && mkdir -p "$OUT"
case "$ZOO" in
  tiny)
    echo "== building the small demo models (base + 4 fine-tuned experts) in $OUT/zoo"
    "$BUILD_DIR/bin/twin-zoo" --out "$OUT/zoo" --store "file://$OUT/store"
    ;;
  lite)
    echo "== preparing the lite corpora (fortunes, spam, man pages, source code)"
    "$ROOT/bench/zoo/prepare_data.sh" --size lite --out "$OUT/data"
    echo "== pretraining a byte-level Transformer and fine-tuning 5 experts in $OUT/zoo"
    "$BUILD_DIR/bin/twin-zoo" --size lite --data "$OUT/data" --out "$OUT/zoo" \
      --store "file://$OUT/store"
    ;;
  gen)
    echo "== preparing the lite corpora (fortunes, spam, man pages, source code)"
    "$ROOT/bench/zoo/prepare_data.sh" --size lite --out "$OUT/data"
    echo "== pretraining a byte-level Llama and fine-tuning 5 generative experts in $OUT/zoo"
    "$BUILD_DIR/bin/twin-zoo" --size lite --format llama --data "$OUT/data" --out "$OUT/zoo" \
      --store "file://$OUT/store"
    ;;
  *) echo "demo.sh: ZOO must be tiny, lite or gen, got '$ZOO'" >&2; exit 2 ;;
esac
echo "== twin-merge --config $OUT/zoo/merge.yaml"
"$BUILD_DIR/bin/twin-merge" --config "$OUT/zoo/merge.yaml" --report "$OUT/report.md"
echo "== reading the published version back (every digest verified) and fusing"
if [[ "$ZOO" == gen ]]; then
  "$BUILD_DIR/bin/twin-inspect" --store "file://$OUT/store" --cache "$OUT/cache"
else
  "$BUILD_DIR/bin/twin-inspect" --store "file://$OUT/store" --cache "$OUT/cache" --zoo "$OUT/zoo"
fi
echo "== report: $OUT/report.md"
sed -n '1,40p' "$OUT/report.md"

PORT="${PORT:-50151}"
METRICS_PORT="${METRICS_PORT:-9191}"
echo "== twin-server on 127.0.0.1:$PORT (metrics on :$METRICS_PORT)"
"$BUILD_DIR/bin/twin-server" --artifact_uri "file://$OUT/store" --cache_dir "$OUT/server-cache" \
  --listen "127.0.0.1:$PORT" --metrics_listen "127.0.0.1:$METRICS_PORT" --device cpu \
  --admin_listen 127.0.0.1:0 \
  > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
CLIENT=("$BUILD_DIR/bin/twin-client" --target "127.0.0.1:$PORT")
for _ in $(seq 1 120); do
  if "${CLIENT[@]}" health >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then cat "$OUT/server.log"; exit 1; fi
  sleep 0.5
done
"${CLIENT[@]}" health
"${CLIENT[@]}" info
if [[ "$ZOO" == gen ]]; then
  echo "== streamed generations, task unknown (the router picks each prompt's mixture)"
  "${CLIENT[@]}" generate --text "Free Debt Consolidation, we pay your bills today | spam or ham? " --max_new_tokens 8
  "${CLIENT[@]}" generate --text "Wer andern eine Grube gräbt, fällt selbst hinein. | language? " --max_new_tokens 8
  "${CLIENT[@]}" generate --text "int main(void) { if (f(a[1]) | close: " --max_new_tokens 8
  "${CLIENT[@]}" generate --text "The -v option makes the command print the " --max_new_tokens 8
  echo "== concurrent streams over the zoo's test prompts, 8 at a time (TTFT, inter-token latency)"
  "${CLIENT[@]}" bench --generate --data "$OUT/zoo" --concurrency 8 --max_new_tokens 16 \
    --duration_s "${DURATION_S:-10}"
  echo "== a few server metrics"
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null | grep -E "^twin_(generated_tokens_total|generations_total)" || true
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  trap - EXIT
  echo "== server stopped (drained on SIGTERM); log: $OUT/server.log"
  exit 0
fi
echo "== one text, task unknown"
"${CLIENT[@]}" infer --text "hello, twin-server"
if [[ "$ZOO" == lite ]]; then
  echo "== a few texts, task unknown (the router picks the expert and the head)"
  "${CLIENT[@]}" infer --text "Wie man sein Kind nicht nennen sollte: Marc Undpfennig"
  "${CLIENT[@]}" infer --text $'#include <stdio.h>\nint main(void) {\n  printf("hello\\n");\n  return 0;\n}'
  "${CLIENT[@]}" infer --text $'import os\ndef main():\n    print(os.getcwd())\n'
  "${CLIENT[@]}" infer --text "The -v option makes the command print the name of each file as it is processed."
fi
echo "== mixed-task traffic, task unknown (the router picks the head): 8 concurrent clients"
"${CLIENT[@]}" bench --data "$OUT/zoo" --concurrency 8 --requests "$REQUESTS"
echo "== mixed-task traffic, task given by the client"
"${CLIENT[@]}" bench --data "$OUT/zoo" --concurrency 8 --requests "$REQUESTS" --send_task
echo "== a few server metrics"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null | grep -E "^twin_(cache_hits|cache_misses|fusions|batch_size_(sum|count))" || true
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || true
trap - EXIT
echo "== server stopped (drained on SIGTERM); log: $OUT/server.log"
