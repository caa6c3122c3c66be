#!/usr/bin/env bash
# Reliability figures of twin-server (bench/results/reliability.md).
#   bench/reliability/run.sh lite    # the lite zoo: overload at 3x capacity for 60 s, deadline
#                                    # admission on and off (about 4 minutes), then the faults
#                                    # (faults.py: 20 SIGTERMs, kill -9 and restart, 100k
#                                    # malformed requests, corrupted versions; about 10 minutes)
#   bench/reliability/run.sh faults  # only the faults on the lite zoo, then re-render
#   bench/reliability/run.sh smoke   # the tiny zoo, a few seconds per phase, into a temporary
#                                    # directory: checks both tools end to end (CTest
#                                    # reliability_smoke; no timing is asserted)
# Environment: BUILD_DIR (default build), ZOO_DIR (default bench/zoo/work/zoo-lite with its
# published store), RESULTS_DIR (default bench/results).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="$(cd "${BUILD_DIR:-$ROOT/build}" && pwd)"
RESULTS_DIR="${RESULTS_DIR:-$ROOT/bench/results}"
MODE="${1:-lite}"
export OPENBLAS_NUM_THREADS=1
for bin in twin-server twin-client; do
  [[ -x "$BUILD_DIR/bin/$bin" ]] || { echo "run.sh: build $bin first ($BUILD_DIR/bin)" >&2; exit 2; }
done
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# faults.py needs Debian's python3-grpcio (the malformed-request phase).
FAULTS=(/usr/bin/python3 "$ROOT/bench/reliability/faults.py")
render() {
  python3 "$ROOT/bench/reliability/overload.py" --render "$RESULTS_DIR/reliability-overload.json" \
    --out_md "$RESULTS_DIR/reliability.md"
  if [[ -f $RESULTS_DIR/reliability-faults.json ]]; then
    "${FAULTS[@]}" --render "$RESULTS_DIR/reliability-faults.json" >>"$RESULTS_DIR/reliability.md"
  fi
}
case "$MODE" in
  lite|faults)
    ZOO_DIR="${ZOO_DIR:-$ROOT/bench/zoo/work/zoo-lite}"
    [[ -d "$ZOO_DIR/store" ]] || {
      echo "run.sh: no published store in $ZOO_DIR (docs/zoo.md)" >&2; exit 2; }
    if [[ $MODE == lite ]]; then
      python3 "$ROOT/bench/reliability/overload.py" --build "$BUILD_DIR" \
        --store "file://$ZOO_DIR/store" --data "$ZOO_DIR" \
        --out_json "$RESULTS_DIR/reliability-overload.json" --out_md "$WORK/overload.md"
    fi
    "${FAULTS[@]}" --build "$BUILD_DIR" --store "file://$ZOO_DIR/store" --data "$ZOO_DIR" \
      --out_json "$RESULTS_DIR/reliability-faults.json" >/dev/null
    render
    ;;
  smoke)
    "$BUILD_DIR/bin/twin-zoo" --out "$WORK/zoo" --tasks 3 --store "file://$WORK/zoo/store" >/dev/null
    "$BUILD_DIR/bin/twin-merge" --config "$WORK/zoo/merge.yaml" >/dev/null
    python3 "$ROOT/bench/reliability/overload.py" --build "$BUILD_DIR" \
      --store "file://$WORK/zoo/store" --data "$WORK/zoo" --out_json "$WORK/r.json" \
      --out_md "$WORK/r.md" --concurrency 4 --capacity_s 1 --half_s 1 --overload_s 2 >/dev/null
    python3 - "$WORK/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert [p["admission"] for p in r["policies"]] == ["on", "off"], r["policies"]
for p in r["policies"]:
    assert p["capacity_per_s"] > 0 and p["half_load"]["ok"] > 0, p
    o = p["overload"]
    assert o["ok"] + o["failed"] > 0 and p["rss_mb"], p
    assert set(o["errors_by_code"]) <= {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}, o
print("reliability_smoke: both admission policies ran every phase")
PY
    grep -q "^| on |" "$WORK/r.md"
    "${FAULTS[@]}" --build "$BUILD_DIR" --store "file://$WORK/zoo/store" --data "$WORK/zoo" \
      --out_json "$WORK/f.json" --trials 2 --rate 200 --malformed 1000 >"$WORK/f.md"
    python3 - "$WORK/f.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["sigterm"]
assert len(s["trials"]) == 2 and s["lost"] == 0 and s["nonzero_exits"] == 0, s
for k in r["kill9"]["runs"]:
    assert k["answers_after"] and k["kill_to_serving_s"] > 0, k
m = r["malformed"]
assert m["alive"] and m["answers_after"] and m["health_after"] == "SERVING", m
assert m["exit_code"] == 0 and sum(m["codes"].values()) == m["calls"], m
for c in r["corrupt"]["cases"]:
    assert c["refused"] and c["old_version_kept"] and c["answers"] and c["error"], c
print("reliability_smoke: every fault phase ran; nothing lost, every damaged version refused")
PY
    grep -q "^### Corrupted versions" "$WORK/f.md"
    ;;
  *) echo "usage: run.sh lite|faults|smoke" >&2; exit 2 ;;
esac
