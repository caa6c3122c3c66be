#!/usr/bin/env bash
# Smoke test of the byte-level benchmark zoo, end to end on a small subset:
#   prepare_data.sh (small caps) -> twin-zoo --size lite (fewer steps) -> twin-merge ->
#   twin-inspect --zoo, then checks that every expert beats chance and that Twin-Merging's mean
#   accuracy beats the shared expert's (task arithmetic alone) mean accuracy; then twin-eval on
#   the first 64 test rows per task, with loose sanity checks on its JSON; then the generative
#   zoo (smoke size) merged, evaluated by twin-eval and served by run.sh gen in short runs.
#   tests/bench/zoo_smoke_test.sh BUILD_BIN_DIR
# Installs the corpora's packages on first use (bench/zoo/prepare_data.sh).
set -euo pipefail
BIN="$(cd "$1" && pwd)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TMP="$(mktemp -d /tmp/zoo-smoke.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
export OPENBLAS_NUM_THREADS=1

"$ROOT/bench/zoo/prepare_data.sh" --size lite --caps 192,32,32 --out "$TMP/data" >/dev/null
"$BIN/twin-zoo" --size lite --data "$TMP/data" --out "$TMP/zoo" --threads 1 \
  --pretrain_steps 500 --finetune_steps 200 >/dev/null
"$BIN/twin-merge" --config "$TMP/zoo/merge.yaml" --threads 1 --quiet >/dev/null
"$BIN/twin-inspect" --store "file://$TMP/zoo/store" --cache "$TMP/cache" --zoo "$TMP/zoo" \
  --max_examples 96 --threads 1 | tee "$TMP/inspect.txt"

python3 - "$TMP/zoo/merge.yaml" "$TMP/inspect.txt" <<'PY'
import re, sys
yaml, table = open(sys.argv[1]).read(), open(sys.argv[2]).read()
classes = dict(re.findall(r"name: (\S+)\n    labels: \[([^\]]*)\]", yaml))
rows = re.findall(r"^\| (\w+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$",
                  table, re.M)
assert len(rows) == len(classes) == 5, f"expected 5 evaluated tasks, got {rows}"
failures = []
for task, _, expert, shared, twin, routing in rows:
    chance = 1.0 / len(classes[task].split(","))
    if float(expert) < chance + 0.05:
        failures.append(f"{task}: expert accuracy {expert} is not above chance {chance:.3f}")
mean = lambda i: sum(float(r[i]) for r in rows) / len(rows)
print(f"mean accuracy: expert {mean(2):.4f}, shared only {mean(3):.4f}, "
      f"Twin-Merging {mean(4):.4f}, routing {mean(5):.4f}")
if mean(4) <= mean(3):
    failures.append(f"Twin-Merging {mean(4):.4f} is not above shared only {mean(3):.4f}")
if failures:
    sys.exit("FAILED: " + "; ".join(failures))
print("zoo smoke test: twin-inspect checks passed")
PY

"$BIN/twin-eval" --zoo "$TMP/zoo" --data "$TMP/data" --cache "$TMP/cache" --max_test 64 \
  --max_val 32 --threads 1 --out_md "$TMP/quality.md" --out_json "$TMP/quality.json" --quiet
python3 - "$TMP/quality.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
methods = {m["id"]: m for m in r["methods"]}
failures = []
for m in r["methods"]:
    for mode in ("given", "unknown"):
        if not all(0.0 <= a <= 1.0 for a in m[mode].values()):
            failures.append(f"{m['id']}: accuracy outside [0, 1] ({mode})")
mean = lambda i, mode="given": methods[i]["mean_" + mode]
if mean("expert") < mean("base"):
    failures.append(f"experts {mean('expert'):.4f} below the base with heads {mean('base'):.4f}")
for task, acc in methods["expert"]["given"].items():
    oracle = methods["twin:ratio=1:oracle"]["given"][task]
    if abs(oracle - acc) > 0.03:
        failures.append(f"{task}: oracle Twin-Merging at full rank {oracle:.4f}, "
                        f"expert {acc:.4f}")
twin, ta = mean("twin:ratio=0.1:router"), mean("task_arithmetic")
unknown = mean("twin:ratio=0.1:router", "unknown")
print(f"twin-eval: experts {mean('expert'):.4f}, task arithmetic {ta:.4f}, "
      f"Twin-Merging (ratio 0.1, router) {twin:.4f} given, {unknown:.4f} unknown")
if twin <= ta:
    failures.append(f"Twin-Merging (ratio 0.1, task given) {twin:.4f} is not above "
                    f"task arithmetic {ta:.4f}")
if failures:
    sys.exit("FAILED: " + "; ".join(failures))
print("zoo smoke test: all checks passed")
PY

# The generative zoo on the same corpora (twin-zoo --size smoke --format llama), merged, then
# twin-eval's generative evaluation and the Generate serving benchmark's tool (run.sh gen, short
# runs): every method scored, every cell answered with tokens; no timing is checked.
"$BIN/twin-zoo" --size smoke --format llama --data "$TMP/data" --out "$TMP/gen" --threads 1 \
  >/dev/null 2>"$TMP/gen-zoo.log" || { cat "$TMP/gen-zoo.log" >&2; exit 1; }
"$BIN/twin-merge" --config "$TMP/gen/merge.yaml" --threads 1 --quiet >/dev/null
"$BIN/twin-eval" --zoo "$TMP/gen" --cache "$TMP/gen-cache" --max_test 32 --max_val 16 \
  --lambdas 0.3,1.0 --ties_lambdas 1.0 --ratios 0.1,1.0 --energy 0 --threads 1 \
  --out_md "$TMP/gen-quality.md" --out_json "$TMP/gen-quality.json" --quiet
ZOO_DIR="$TMP/gen" RESULTS_DIR="$TMP" DURATION_S=0.5 BUILD_DIR="$BIN/.." \
  EXTRA="--concurrency 1,4 --max_new_tokens 8" "$ROOT/bench/serving/run.sh" gen >/dev/null
python3 - "$TMP/gen-quality.json" "$TMP/serving-generate.json" <<'PY'
import json, sys
q, s = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
failures = []
methods = {m["id"]: m for m in q["methods"]}
for want in ("base", "expert", "task_arithmetic", "ties", "twin:ratio=1:task", "twin:ratio=0.1:router"):
    if want not in methods:
        failures.append(f"twin-eval: no method {want}")
for m in q["methods"]:
    exact = m["exact"]  # task -> exact match
    if sorted(exact) != sorted(t["name"] for t in q["tasks"]) or \
            not all(0.0 <= e <= 1.0 for e in exact.values()):
        failures.append(f"{m['id']}: exact match outside [0, 1] or not one per task")
# A loose sanity bound (the rounding-derived one is generative_eval_test's): at full rank the
# task-given twin is its expert.
if "expert" in methods and "twin:ratio=1:task" in methods:
    for task, e in methods["expert"]["loss"].items():
        w = methods["twin:ratio=1:task"]["loss"][task]
        if abs(e - w) > 1e-3 * max(1.0, e):
            failures.append(f"{task}: full-rank task-given twin loss {w:.5f}, expert {e:.5f}")
if s.get("mode") != "generate" or len(s["runs"]) != 16:
    failures.append(f"serving: {len(s.get('runs', []))} generate runs, expected 16")
for r in s.get("runs", []):
    res = r["result"]
    if res["ok"] == 0 or res["failed"] != 0 or res["tokens"] <= 0:
        failures.append(f"serving: {r['config']} {r['traffic']} {r['task']} {r['load']}: "
                        f"{res['ok']} ok, {res['failed']} failed, {res['tokens']} tokens")
if failures:
    sys.exit("FAILED: " + "; ".join(failures))
print("zoo smoke test: generative checks passed")
PY
