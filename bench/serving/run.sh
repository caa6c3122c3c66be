#!/usr/bin/env bash
# The serving benchmark: static, experts and twin configurations side by side in one run.
#   bench/serving/run.sh full    # the full zoo -> bench/results/serving.md and serving.json
#   bench/serving/run.sh lite    # the lite zoo -> bench/results/serving-lite.md and .json
#   bench/serving/run.sh lite-hf # the lite zoo in Hugging Face form (twin-zoo --format hf),
#                                # served by the native engine; twin (per-batch choice),
#                                # twin-fused and twin-unfused -> bench/results/serving-lite-hf.md
#   bench/serving/run.sh full-hf # the same for the full zoo in that form, plus twin-prefix
#                                # when ZOO_DIR/store-prefix holds a multi-stage version
#                                # -> bench/results/serving-full-hf.md
#   bench/serving/run.sh gen     # the generative zoo (twin-zoo --size lite --format llama,
#                                # merged): Generate load, static and twin, c1/8/32, uniform
#                                # and skewed -> bench/results/serving-generate.md and .json
#   bench/serving/run.sh smoke   # the tiny zoo, a few short runs, into a temporary directory:
#                                # checks the tool end to end (CTest serving_bench_smoke)
# Environment: BUILD_DIR (default build), ZOO_DIR (default bench/zoo/work/zoo-<size>, its
# merge.yaml published to ZOO_DIR/store by twin-merge), DURATION_S (default 5), RESULTS_DIR
# (default bench/results), RESULTS_NAME (default serving or serving-lite: the files' name),
# EXTRA (more serving_bench.py flags, e.g. "--configs static,twin"), EVALS (twin-eval JSONs for
# the router-input table, "route_features():twin=results/router-route_features.json ..."),
# NOTES (paragraphs for the report's Notes section, separated by "|").
# The zoos: docs/zoo.md. A full run takes about 25 minutes, lite about 15 (README).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="$(cd "${BUILD_DIR:-$ROOT/build}" && pwd)"
SIZE="${1:-full}"
RESULTS_DIR="${RESULTS_DIR:-$ROOT/bench/results}"
export OPENBLAS_NUM_THREADS=1
for bin in twin-server twin-client twin-fusion-bench; do
  [[ -x "$BUILD_DIR/bin/$bin" ]] || { echo "run.sh: build $bin first ($BUILD_DIR/bin)" >&2; exit 2; }
done
case "$SIZE" in
  full|lite|lite-hf|full-hf)
    ZOO_DIR="${ZOO_DIR:-$ROOT/bench/zoo/work/zoo-$SIZE}"
    [[ -d "$ZOO_DIR/store" ]] || {
      echo "run.sh: no published store in $ZOO_DIR (build the zoo and run twin-merge: docs/zoo.md)" >&2
      exit 2; }
    NAME="${RESULTS_NAME:-serving$([[ "$SIZE" == full ]] && echo "" || echo "-$SIZE")}"
    OUT_JSON="$RESULTS_DIR/$NAME.json"
    OUT_MD="$RESULTS_DIR/$NAME.md"
    FUSION_JSON="$RESULTS_DIR/$NAME-fusion.json"
    ARGS=(--duration_s "${DURATION_S:-5}")
    if [[ "$SIZE" == lite-hf ]]; then
      ARGS+=(--configs static,experts,twin,twin-fused,twin-unfused)
    elif [[ "$SIZE" == full-hf ]]; then
      if [[ -d "$ZOO_DIR/store-prefix" ]]; then
        ARGS+=(--configs static,experts,twin,twin-fused,twin-unfused,twin-prefix
               --prefix_store "file://$ZOO_DIR/store-prefix")
      else
        ARGS+=(--configs static,experts,twin,twin-fused,twin-unfused)
      fi
    fi
    WORK=""
    ;;
  gen)
    ZOO_DIR="${ZOO_DIR:-$ROOT/bench/zoo/work/zoo-gen}"
    [[ -d "$ZOO_DIR/store" ]] || {
      echo "run.sh: no published store in $ZOO_DIR (build the generative zoo and run twin-merge: docs/zoo.md)" >&2
      exit 2; }
    NAME="${RESULTS_NAME:-serving-generate}"
    OUT_JSON="$RESULTS_DIR/$NAME.json"
    OUT_MD="$RESULTS_DIR/$NAME.md"
    CACHE="$(mktemp -d)"
    trap 'rm -rf "$CACHE"' EXIT
    # shellcheck disable=SC2086
    python3 "$ROOT/bench/serving/serving_bench.py" --build "$BUILD_DIR" --store "file://$ZOO_DIR/store" \
      --zoo "$ZOO_DIR" --data "$ZOO_DIR" --out "$OUT_JSON" --name "$SIZE" --generate \
      --duration_s "${DURATION_S:-10}" ${EXTRA:-}
    NOTE_ARGS=()
    if [[ -n "${NOTES:-}" ]]; then
      IFS='|' read -r -a notes <<<"$NOTES"
      for n in "${notes[@]}"; do NOTE_ARGS+=(--note "$n"); done
    fi
    python3 "$ROOT/bench/serving/render.py" --bench "$OUT_JSON" --out "$OUT_MD" \
      --title "Generation serving benchmark (generative zoo)" "${NOTE_ARGS[@]}"
    echo "run.sh: wrote $OUT_MD and $OUT_JSON"
    exit 0
    ;;
  smoke)
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    "$BUILD_DIR/bin/twin-zoo" --out "$WORK/zoo" --tasks 3 --store "file://$WORK/zoo/store" >/dev/null
    "$BUILD_DIR/bin/twin-merge" --config "$WORK/zoo/merge.yaml" >/dev/null
    ZOO_DIR="$WORK/zoo"
    OUT_JSON="$WORK/serving.json"
    OUT_MD="$WORK/serving.md"
    FUSION_JSON="$WORK/fusion.json"
    ARGS=(--duration_s "${DURATION_S:-0.5}" --concurrency 1,4 --open 0.5 --traffic uniform,distinct)
    ;;
  *) echo "usage: run.sh full|lite|lite-hf|full-hf|gen|smoke" >&2; exit 2 ;;
esac
CACHE="$(mktemp -d)"
trap 'rm -rf "$CACHE" ${WORK:+"$WORK"}' EXIT
# shellcheck disable=SC2086
python3 "$ROOT/bench/serving/serving_bench.py" --build "$BUILD_DIR" --store "file://$ZOO_DIR/store" \
  --zoo "$ZOO_DIR" --data "$ZOO_DIR" --out "$OUT_JSON" --name "$SIZE" "${ARGS[@]}" ${EXTRA:-}
"$BUILD_DIR/bin/twin-fusion-bench" --store "file://$ZOO_DIR/store" --cache "$CACHE" \
  --reps "$([[ "$SIZE" == smoke ]] && echo 3 || echo 20)" --out_json "$FUSION_JSON"
# EVALS: "NAME:CONFIG=twin-eval.json ..." adds the router-input table (render.py --eval).
EVAL_ARGS=()
for e in ${EVALS:-}; do EVAL_ARGS+=(--eval "$e"); done
# NOTES: paragraphs for the Notes section, separated by "|".
if [[ -n "${NOTES:-}" ]]; then
  IFS='|' read -r -a notes <<<"$NOTES"
  for n in "${notes[@]}"; do EVAL_ARGS+=(--note "$n"); done
fi
python3 "$ROOT/bench/serving/render.py" --bench "$OUT_JSON" --fusion "$FUSION_JSON" --out "$OUT_MD" \
  --title "Serving benchmark ($SIZE zoo)" "${EVAL_ARGS[@]}"
if [[ "$SIZE" == smoke ]]; then
  # The tool's correctness, no timing: every configuration answered in every cell, no errors.
  python3 - "$OUT_JSON" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
cells = {(r["traffic"], r["task"], r["load"]) for r in b["runs"]}
bad = [r for r in b["runs"] if r["result"]["ok"] == 0 or r["result"]["failed"]]
configs = {r["config"] for r in b["runs"]}
assert configs == {"static", "experts", "twin", "twin-router"}, configs
assert len(cells) == 2 * 2 * 3, sorted(cells)   # traffic x task mode x (c1, c4, open50)
assert not bad, bad[0]
for r in b["runs"]:
    s = r["result"]["server"]
    assert s["batches"] > 0 and s["mean_batch_size"] >= 1, r
    if r["config"] == "static":
        assert s["fusions"] == 0 and r["result"]["server_time_us"]["route"] == 0, r
    if r["config"] == "experts":
        assert s["weights_bytes"]["experts"] > 0, r
print(f"serving_bench_smoke: {len(b['runs'])} runs over {len(cells)} cells, all answered")
PY
  grep -q "## Headline" "$OUT_MD" && grep -q "| uniform | unknown | c4 | twin |" "$OUT_MD"
  echo "serving_bench_smoke: passed"
else
  echo "run.sh: wrote $OUT_MD, $OUT_JSON and $FUSION_JSON"
fi
