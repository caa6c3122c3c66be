#!/usr/bin/env bash
# Smoke test of the byte-level benchmark zoo, end to end on a small subset:
#   prepare_data.sh (small caps) -> twin-zoo --size lite (fewer steps) -> twin-merge ->
#   twin-inspect --zoo, then checks that every expert beats chance and that Twin-Merging's mean
#   accuracy beats the shared expert's (task arithmetic alone) mean accuracy.
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
print("zoo smoke test: all checks passed")
PY
