#!/bin/bash
# Merge benchmark: twin-merge against the reference algorithm (task arithmetic, then a full
# torch.linalg.svd per tensor) on a ~21M-parameter model with T = 2, 4, 8 experts, side by
# side in one run. Writes bench/results/merge.md (wall time, peak RSS, mean relative
# reconstruction error, ratios, commands, machine).
#
#   BUILD_DIR=/work/main/build bench/merge_bench/run.sh
#
# Environment: BUILD_DIR (default <repo>/build, needs bin/twin-merge and bin/twin-bench-models),
# THREADS (2), TASKS ("2 4 8"), REPEATS (3; runs of the two tools alternate, medians are
# reported), RESULT (bench/results/merge.md), KEEP_WORK=1 keeps the scratch directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
THREADS=${THREADS:-2}
TASKS=${TASKS:-"2 4 8"}
REPEATS=${REPEATS:-3}
RESULT=${RESULT:-$ROOT/bench/results/merge.md}
PYTHON=/usr/bin/python3
REFERENCE=$ROOT/bench/merge_bench/reference_merge.py
MERGE=$BUILD_DIR/bin/twin-merge
MODELS=$BUILD_DIR/bin/twin-bench-models
LAMBDA=0.3
RATIO=0.1

for tool in "$MERGE" "$MODELS" /usr/bin/time "$PYTHON"; do
  [[ -x $tool ]] || { echo "run.sh: $tool is missing (build twin-merge twin-bench-models)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/twin-merge-bench.XXXXXX)
cleanup() { [[ ${KEEP_WORK:-0} == 1 ]] || rm -rf "$WORK"; }
trap cleanup EXIT
export OPENBLAS_NUM_THREADS=1
# libgomp's default active wait spins at every parallel-region barrier; on a shared 2-core
# machine a descheduled worker then stalls the spinning one for a whole time slice, which
# made twin-merge (many short parallel ops) 3x slower in wall and CPU time. Both tools get
# the passive policy.
export OMP_WAIT_POLICY=PASSIVE
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

max_t=0
min_t=1000000
subsets=""
for t in $TASKS; do
  (( t > max_t )) && max_t=$t
  (( t < min_t )) && min_t=$t
  subsets+="${subsets:+,}$t"
done
echo "run.sh: writing models with $max_t experts under $WORK/models" >&2
GEN_COMMAND="twin-bench-models --out \$WORK/models --experts $max_t --subsets $subsets"
"$MODELS" --out "$WORK/models" --experts "$max_t" --subsets "$subsets" > "$WORK/models.txt"

# One timed run; appends "tool T repeat wall_s rss_kib error cpu_s" to $WORK/runs.tsv.
wall_seconds() {  # "Elapsed (wall clock) time (h:mm:ss or m:ss): 1:02.34" -> 62.34
  sed -n 's/.*Elapsed (wall clock) time.*: //p' "$1" |
    awk -F: '{ s = 0; for (i = 1; i <= NF; ++i) s = s * 60 + $i; printf "%.2f", s }'
}
peak_rss_kib() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
cpu_seconds() {  # user + system
  awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "$1"
}

run_twin() {
  local t=$1 rep=$2 version="T$1-r$2"
  /usr/bin/time -v -o "$WORK/twin.time" "$MERGE" --config "$WORK/models/merge_T$t.yaml" \
    --threads "$THREADS" --quiet --output "file://$WORK/store" --version "$version" > /dev/null
  local err
  err=$("$PYTHON" -c 'import json, sys
m = json.load(open(sys.argv[1]))
e = [x["rel_error"] for x in m["twin"]["tensors"]]
print(f"{sum(e) / len(e):.6f}")' "$WORK/store/$version/manifest.json")
  printf 'twin\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rep" "$(wall_seconds "$WORK/twin.time")" \
    "$(peak_rss_kib "$WORK/twin.time")" "$err" "$(cpu_seconds "$WORK/twin.time")" \
    >> "$WORK/runs.tsv"
  rm -rf "${WORK:?}/store/$version"
}

experts_of() { for ((i = 0; i < $1; ++i)); do printf '%s ' "$WORK/models/expert$i.safetensors"; done; }

run_reference() {
  local t=$1 rep=$2
  # shellcheck disable=SC2046
  /usr/bin/time -v -o "$WORK/ref.time" "$PYTHON" "$REFERENCE" \
    --base "$WORK/models/base.safetensors" --experts $(experts_of "$t") \
    --lam "$LAMBDA" --ratio "$RATIO" --threads "$THREADS" --out "$WORK/ref" \
    > "$WORK/ref.out" 2> "$WORK/ref.err"
  printf 'reference\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rep" "$(wall_seconds "$WORK/ref.time")" \
    "$(peak_rss_kib "$WORK/ref.time")" "$(sed -n 's/^mean_rel_error //p' "$WORK/ref.out")" \
    "$(cpu_seconds "$WORK/ref.time")" >> "$WORK/runs.tsv"
  sed -n 's/^stages: //p' "$WORK/ref.err" | sed "s/^/T=$t repeat $rep: /" >> "$WORK/ref_stages.txt"
  rm -rf "${WORK:?}/ref"
}

: > "$WORK/runs.tsv"
: > "$WORK/ref_stages.txt"
for ((rep = 1; rep <= REPEATS; ++rep)); do
  for t in $TASKS; do
    echo "run.sh: repeat $rep/$REPEATS, T=$t" >&2
    # Alternate which tool goes first so that neither always runs on a warmer machine.
    if (( rep % 2 )); then run_twin "$t" "$rep"; run_reference "$t" "$rep"
    else run_reference "$t" "$rep"; run_twin "$t" "$rep"; fi
  done
done

# Stage breakdown of twin-merge from its progress lines (extra runs, not in the tables).
: > "$WORK/twin_stages.txt"
for t in "$min_t" "$max_t"; do
  echo "run.sh: stage breakdown at T=$t" >&2
  echo "T=$t" >> "$WORK/twin_stages.txt"
  "$MERGE" --config "$WORK/models/merge_T$t.yaml" --threads "$THREADS" \
    --output "file://$WORK/store" --version "stages-T$t" 2>&1 >/dev/null |
    "$PYTHON" -u -c 'import sys, time
start = time.time()
for line in sys.stdin:
    print(f"{time.time() - start:7.2f}s {line.rstrip()}")' |
    grep -v -E ': [0-9]+/[0-9]+ .*ETA' >> "$WORK/twin_stages.txt" || true
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$(dirname "$RESULT")"
"$PYTHON" "$ROOT/bench/merge_bench/render_results.py" \
  --runs "$WORK/runs.tsv" --models "$WORK/models.txt" \
  --twin_stages "$WORK/twin_stages.txt" --ref_stages "$WORK/ref_stages.txt" \
  --gen_command "$GEN_COMMAND" --threads "$THREADS" --lam "$LAMBDA" --ratio "$RATIO" \
  --repeats "$REPEATS" --load "$LOAD_BEFORE -> $LOAD_AFTER" \
  --torch "$("$PYTHON" -c 'import torch; print(torch.__version__)')" > "$RESULT"
echo "run.sh: wrote $RESULT" >&2
