#!/usr/bin/env bash
# Fuzzes every tests/fuzz target with libFuzzer (clang-14, ASan + UBSan) for a bounded time,
# starting from the seed corpus in tests/fuzz/corpus/<target>/. Exits 1 when any target found
# a crash, a broken invariant (FUZZ_CHECK), a timeout or an out-of-memory; the input is saved
# under $BUILD_DIR/fuzz-findings/<target>/ and the summary names it.
#
#   scripts/fuzz.sh                       # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh manifest safetensors
#   scripts/fuzz.sh --build-only
#
# Environment:
#   BUILD_DIR=build-asan   the clang build (shared with scripts/test-sanitizers.sh)
#   FUZZ_SECONDS=60        time per target
#   FUZZ_JOBS=1            parallel fuzzing processes per target (libFuzzer -fork)
#   FUZZ_MAX_LEN=16384     longest mutated input (larger seeds are still replayed whole by
#                          the CTests fuzz_replay_*)
#
# New inputs that reach new coverage accumulate in $BUILD_DIR/fuzz-corpus/<target>/ across
# runs. To keep a finding as a regression seed, fix it, then copy the input into
# tests/fuzz/corpus/<target>/ (or add it to tests/fuzz/make_seeds.py) so that every build's
# fuzz_replay_<target> runs it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-asan}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_JOBS="${FUZZ_JOBS:-1}"
FUZZ_MAX_LEN="${FUZZ_MAX_LEN:-16384}"
TARGETS=(safetensors manifest s3_xml tokenizer merge_config server_config kserve_codec
         infer_request)

BUILD_ONLY=0
if [[ ${1:-} == --build-only ]]; then BUILD_ONLY=1; shift; fi
if (($#)); then TARGETS=("$@"); fi

log() { echo "fuzz: $*" >&2; }

"$ROOT/scripts/test-sanitizers.sh" --configure-only
cmake --build "$BUILD_DIR" -j "$(nproc)" --target "${TARGETS[@]/#/fuzz_}"
((BUILD_ONLY)) && exit 0

export OPENBLAS_NUM_THREADS=1
# Leaks are checked by scripts/test-sanitizers.sh at process exit; inside the fuzz loop a
# target's long-lived state (a running server, LibTorch's caches) would read as per-input leaks.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:detect_odr_violation=0:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

summary=()
failed=0
for t in "${TARGETS[@]}"; do
  bin="$BUILD_DIR/fuzz/fuzz_$t"
  seeds="$ROOT/tests/fuzz/corpus/$t"
  work="$BUILD_DIR/fuzz-corpus/$t"
  findings="$BUILD_DIR/fuzz-findings/$t"
  logf="$BUILD_DIR/fuzz-findings/$t.log"
  mkdir -p "$work" "$findings"
  log "$t: ${FUZZ_SECONDS} s from $(find "$seeds" -type f | wc -l) seeds"
  rc=0
  args=(-max_total_time="$FUZZ_SECONDS" -timeout=30 -rss_limit_mb=6144
        -max_len="$FUZZ_MAX_LEN" -print_final_stats=1 -artifact_prefix="$findings/")
  if ((FUZZ_JOBS > 1)); then args+=(-fork="$FUZZ_JOBS" -ignore_crashes=0); fi
  "$bin" "${args[@]}" "$work" "$seeds" >"$logf" 2>&1 || rc=$?
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logf" | grep -o '[0-9]*$' | tail -1)"
  cov="$(grep -o 'cov: [0-9]*' "$logf" | tail -1 | grep -o '[0-9]*')"
  corpus="$(find "$work" -type f | wc -l)"
  found="$(find "$findings" -type f | wc -l)"
  if ((rc != 0 || found > 0)); then
    failed=1
    summary+=("$t: FAILED (exit $rc), $found finding(s) in $findings; log $logf")
    grep -m3 -E 'ERROR:|FUZZ_CHECK|runtime error' "$logf" >&2 || true
  else
    summary+=("$t: ok, ${runs:-?} inputs in ${FUZZ_SECONDS} s, coverage ${cov:-?} edges, corpus $corpus")
  fi
done

printf '%s\n' "${summary[@]}" | tee "$BUILD_DIR/fuzz-findings/summary.txt"
exit "$failed"
