#!/usr/bin/env bash
# Installs dependencies, builds, then runs the merge job end to end on the embedded defaults:
# small models built here -> twin-merge -> local file:// object store -> verified read-back.
#   scripts/demo.sh                 # everything under ./out/demo
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
OUT="${OUT:-$ROOT/out/demo}"

"$ROOT/scripts/install-deps.sh"
export OPENBLAS_NUM_THREADS=1
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target twin-merge twin-zoo twin-inspect

rm -rf "$OUT" && mkdir -p "$OUT"
echo "== building the small demo models (base + 4 fine-tuned experts) in $OUT/zoo"
"$BUILD_DIR/bin/twin-zoo" --out "$OUT/zoo" --store "file://$OUT/store"
echo "== twin-merge --config $OUT/zoo/merge.yaml"
"$BUILD_DIR/bin/twin-merge" --config "$OUT/zoo/merge.yaml" --report "$OUT/report.md"
echo "== reading the published version back (every digest verified) and fusing"
"$BUILD_DIR/bin/twin-inspect" --store "file://$OUT/store" --cache "$OUT/cache" --zoo "$OUT/zoo"
echo "== report: $OUT/report.md"
sed -n '1,40p' "$OUT/report.md"
