#!/usr/bin/env bash
# Smoke test of the byte-level benchmark zoo, end to end on a small subset:
#   prepare_data.sh (small caps) -> twin-zoo --size lite (fewer steps) -> twin-merge ->
#   twin-inspect --zoo, then checks that every expert beats chance and that Twin-Merging's mean
#   accuracy beats the shared expert's (task arithmetic alone) mean accuracy; then twin-eval on
#   the first 64 test rows per task, with loose sanity checks on its JSON.
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
