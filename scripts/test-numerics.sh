#!/usr/bin/env bash
# Runs the numerical test binaries under several OpenBLAS kernels and LibTorch intra-op thread
# counts, on this one machine: each kernel (and each thread count, through LibTorch's
# reductions) sums in its own order, so float32 results differ in their last bits as they do
# between machines. A tolerance that holds only for one kernel fails here before it fails on a
# user's CPU. Needs a build (scripts/test.sh or cmake --build build).
#
#   scripts/test-numerics.sh                 # build/, kernels Haswell Sandybridge Prescott, 1 and 2 threads
#   KERNELS="Prescott" THREADS="1" scripts/test-numerics.sh out/
#
# Kernels the CPU cannot run (Haswell needs AVX2 and FMA, Sandybridge AVX) are skipped with a
# note. The last line is "numerics: N passed, N failed" over (kernel, threads, binary) runs;
# the exit status is non-zero when any run failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${1:-$ROOT/build}"
read -r -a KERNELS <<<"${KERNELS:-Haswell Sandybridge Prescott}"
read -r -a THREADS <<<"${THREADS:-1 2}"
# Every test binary whose assertions compare floating-point results of LibTorch computations.
TESTS=(svd_compress_test merge_methods_test twin_weights_test router_test script_model_test
       tokenizer_test merge_job_test cluster_key_test fused_cache_test twin_server_test
       kserve_service_test reload_test byte_transformer_test eval_test workload_test
       load_generator_test serving_modes_test ngram_features_test mixed_params_test
       linear_group_test
       hf_encoder_test eval_native_test native_serving_test multi_stage_test)

cpu_has() { grep -qw "$1" /proc/cpuinfo; }
kernel_runs_here() {
  case "$1" in
    Haswell|Zen) cpu_has avx2 && cpu_has fma ;;
    Sandybridge) cpu_has avx ;;
    SkylakeX|Cooperlake) cpu_has avx512f ;;
    *) true ;;
  esac
}

logs="$(mktemp -d)"
passed=0
failed=0
failures=()
for kernel in "${KERNELS[@]}"; do
  if ! kernel_runs_here "$kernel"; then
    echo "numerics: skipping kernel $kernel (this CPU lacks its instructions)"
    continue
  fi
  for threads in "${THREADS[@]}"; do
    for test in "${TESTS[@]}"; do
      bin="$BUILD_DIR/tests/$test"
      if [[ ! -x $bin ]]; then
        echo "numerics: $bin is missing (build first)" >&2
        exit 2
      fi
      log="$logs/$test.$kernel.$threads.log"
      # OpenBLAS itself single-threaded, as everywhere in the project; LibTorch's intra-op
      # pool from OMP_NUM_THREADS.
      if (cd "$BUILD_DIR/tests" && OPENBLAS_CORETYPE="$kernel" OPENBLAS_NUM_THREADS=1 \
            OMP_NUM_THREADS="$threads" "$bin" --gtest_brief=1 >"$log" 2>&1); then
        passed=$((passed + 1))
      else
        failed=$((failed + 1))
        failures+=("$test [OPENBLAS_CORETYPE=$kernel OMP_NUM_THREADS=$threads]: $log")
        grep -E "Failure|FAILED|which exceeds|evaluates to" "$log" | head -20
      fi
    done
    echo "numerics: kernel $kernel, $threads intra-op thread(s): done"
  done
done
for f in "${failures[@]}"; do echo "numerics: FAILED $f"; done
((failed == 0)) && rm -rf "$logs"
echo "numerics: $passed passed, $failed failed"
((failed == 0))
