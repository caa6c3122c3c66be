#!/usr/bin/env bash
# End to end through a real S3-compatible server (run under tests/s3/run_s3rver.sh, which sets
# TWIN_S3_ENDPOINT, TWIN_TEST_S3_BUCKET and the credentials):
#   twin-zoo (tiny zoo) -> twin-merge --output s3://BUCKET/models -> twin-inspect reads it back
#   -> boto3 (an independent client) verifies every blob against manifest.json and publishes a
#      copy under a new version plus LATEST -> twin-inspect verifies that copy through our store.
#
#   tests/s3/run_s3rver.sh twin-e2e -- tests/s3/publish_test.sh BUILD_DIR/bin
#                                                       (CTest s3_publish_e2e; 77 = skipped)
set -euo pipefail

BIN=$(cd "${1:?usage: publish_test.sh BIN_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
SKIP=77
V1=v1
V2=v1-copy

log() { echo "publish_test.sh: $*" >&2; }

: "${TWIN_S3_ENDPOINT:?run under tests/s3/run_s3rver.sh}"
: "${TWIN_TEST_S3_BUCKET:?run under tests/s3/run_s3rver.sh}"
for bin in twin-zoo twin-merge twin-inspect; do
  [[ -x $BIN/$bin ]] || { log "$BIN/$bin is missing; build the default target first"; exit 1; }
done
if ! "$PY" -c 'import boto3' 2>/dev/null; then
  if [[ ${CI:-} == "true" ]]; then
    log "python3-boto3 is not installed; CI must run scripts/install-deps.sh first"
    exit 1
  fi
  log "SKIPPED: python3-boto3 is not installed (scripts/install-deps.sh installs it)"
  exit "$SKIP"
fi

WORK=$(mktemp -d /tmp/twin-s3-e2e.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
STORE="s3://$TWIN_TEST_S3_BUCKET/models/twin"
export OPENBLAS_NUM_THREADS=1

"$BIN/twin-zoo" --out "$WORK/zoo" --tasks 3 --vocab 288 >/dev/null
"$BIN/twin-merge" --config "$WORK/zoo/merge.yaml" --output "$STORE" --version "$V1" \
  --threads 1 --quiet >/dev/null
log "twin-merge published $V1 to $STORE"

"$BIN/twin-inspect" --store "$STORE" --cache "$WORK/cache1" >"$WORK/inspect1.txt"
grep -q "^version $V1 " "$WORK/inspect1.txt" || { log "twin-inspect did not report $V1:"; cat "$WORK/inspect1.txt" >&2; exit 1; }
log "twin-inspect verified $V1 from $STORE"

"$PY" "$HERE/boto3_copy_version.py" --endpoint "$TWIN_S3_ENDPOINT" \
  --bucket "$TWIN_TEST_S3_BUCKET" --prefix models/twin --version "$V1" --new-version "$V2" \
  --require-latest

# LATEST now names the copy written by boto3; its blobs are verified against its manifest.
"$BIN/twin-inspect" --store "$STORE" --cache "$WORK/cache2" >"$WORK/inspect2.txt"
grep -q "^version $V2 " "$WORK/inspect2.txt" || { log "twin-inspect did not report $V2:"; cat "$WORK/inspect2.txt" >&2; exit 1; }
cmp "$WORK/cache1/$V1/shared.safetensors" "$WORK/cache2/$V2/shared.safetensors"
log "twin-inspect verified the boto3-written $V2 through the S3 store"

# Wrong credentials are refused with PERMISSION_DENIED, and the secret is never printed.
if AWS_ACCESS_KEY_ID=AKIDWRONG AWS_SECRET_ACCESS_KEY=secret-must-not-leak \
  "$BIN/twin-inspect" --store "$STORE" --cache "$WORK/cache3" >"$WORK/denied.txt" 2>&1; then
  log "twin-inspect succeeded with wrong credentials"
  exit 1
fi
grep -q "PERMISSION_DENIED" "$WORK/denied.txt" || { cat "$WORK/denied.txt" >&2; exit 1; }
if grep -q "secret-must-not-leak" "$WORK/denied.txt"; then
  log "the secret appears in twin-inspect's output"
  exit 1
fi
echo "publish_test.sh: passed"
