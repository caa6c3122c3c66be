#!/usr/bin/env python3
"""Renders serving_bench.py's JSON (and twin-fusion-bench's) as bench/results/serving.md.

  render.py --bench serving.json [--fusion fusion.json] --out serving.md [--title T]

Every figure of a run is also given as a ratio to the static configuration's in the same
traffic, task mode and load. The normalized score of a run is 100 x its accuracy on each task
divided by the experts configuration's accuracy on that task (task given, over the whole run),
averaged over tasks. Standard library only.
"""

import argparse
import json
from collections import defaultdict

LOAD_ORDER = {"c1": 0, "c8": 1, "c32": 2, "open50": 3, "open90": 4}


def ratio(a, b):
    return a / b if b else float("nan")


def fmt_ratio(x):
    return "-" if x != x else f"{x:.2f}x"


def expert_accuracy(runs, tasks):
    correct = defaultdict(int)
    labelled = defaultdict(int)
    for r in runs:
        if r["config"] == "experts" and r["task"] == "given":
            for t, s in r["result"]["per_task"].items():
                correct[t] += s["correct"]
                labelled[t] += s["labelled"]
    return {t: correct[t] / labelled[t] for t in tasks if labelled[t]}


def normalized(result, expert):
    scores = []
    for t, s in result["per_task"].items():
        if s["labelled"] and expert.get(t):
            scores.append(100.0 * s["correct"] / s["labelled"] / expert[t])
    return sum(scores) / len(scores) if scores else float("nan")


def accuracy(result):
    return result["correct"] / result["labelled"] if result["labelled"] else float("nan")


def routing_accuracy(result):
    return result["routed_correct"] / result["routed"] if result["routed"] else float("nan")


def mb(x):
    return f"{x / 1e6:.2f}"


CONFIG_TEXT = {
    "static": "theta* alone (`serving.mode: static`: no router, no fusion; the named task's "
              "head, else the first task's, so its task-unknown accuracy is not meaningful)",
    "experts": "every task's fine-tuned model resident (`serving.mode: experts`; task unknown: "
               "the router's top task's expert)",
    "twin": "twin-server's defaults (`routing.task_given: task`) on the version's own router "
            "input (the manifest's `router.features`)",
    "twin-router": "`routing.task_given: router` (the router weights named-task requests too)",
    "twin-ngram": "the same zoo merged with `router.features: ngram` (hashed token n-gram "
                  "counts, no model forward to route)",
    "twin-prefix": "the same zoo merged with `twin.from_layer: k` and `router.features: prefix` "
                   "(multi-stage: no twins below layer k; the router reads the forward's own "
                   "first k layers under theta*, which every batch continues from)",
    "twin-rate": "`serving.batch_choice.aging_us: 0` (the per-batch choice by predicted rate "
                 "alone, without weighing each option by its oldest request's wait)",
    "twin-bg": "`cache.background_fusion: true`",
    "twin-top1": "`cluster_key.top_k: 1`",
    "twin-fused": "`serving.batches: fused` (native model: every batch one cluster key's fused "
                  "weights)",
    "twin-unfused": "`serving.batches: unfused` (native model: mixed batches, theta* plus each "
                    "row's own mixture inside every layer)",
}


def router_inputs(specs, by_cell, static):
    """The router-input table: quality from twin-eval, cost from this run."""
    out = ["## Router input", "",
           "Quality from `twin-eval` on the test split of each task (the version published with "
           "that router input, rank ratio 0.1; `results/router-*.md` hold the whole reports and "
           "their commands); cost from this run: the server's mean route time "
           "per request against static's mean forward time, closed loop c1, task unknown, "
           "averaged over the traffic shapes.", "",
           "| router input | serving config | routing accuracy | score, task given (task twin) "
           "| score, task given (router) | score, task unknown | router MB | route / static "
           "forward (us) |", "|---|---|---|---|---|---|---|---|"]
    for spec in specs:
        label, rest = spec.split(":", 1)
        config, path = rest.split("=", 1)
        with open(path) as f:
            e = json.load(f)
        routing = next((r for r in e["routing"] if r["routing"] == "router"), None)
        by_id = {m["routing"]: m for m in e["methods"] if m["family"] == "twin"}
        oracle, router = by_id.get("oracle"), by_id.get("router")
        storage = e["storage"][0] if e.get("storage") else {}
        cells = [(by_cell.get((config, tr, "unknown", "c1")), static.get((tr, "unknown", "c1")))
                 for tr in ("uniform", "skewed", "identical", "distinct")]
        cells = [(t, s) for t, s in cells if t and s]
        cost = "-"
        if cells:
            route = sum(t["server_time_us"]["route"] for t, _ in cells) / len(cells)
            forward = sum(s["server_time_us"]["forward"] for _, s in cells) / len(cells)
            cost = f"{route:.0f} / {forward:.0f} = {100 * ratio(route, forward):.0f}%"
        out.append(
            f"| {label} | {config} | {routing['mean']:.4f} | "
            f"{oracle['normalized_given']:.1f} | {router['normalized_given']:.1f} | "
            f"{router['normalized_unknown']:.1f} | {storage.get('router_bytes', 0) / 1e6:.2f} | "
            f"{cost} |")
    out.append("")
    return out


GENERATE_CONFIG_TEXT = {
    "static": "theta* alone (`serving.mode: static`): every sequence decodes with the shared "
              "expert's dense weights, no routing",
    "twin": "Twin-Merging (the default `serving.mode: twin`): each prompt routed once (task "
            "given: the named task's twin alone), every decode step through the unfused path, "
            "theta* plus each sequence's own mixture of the twin factors, sequences of different "
            "mixtures in one batch",
}


def run_line(b):
    """The run's date, machine, load and duration, as one paragraph."""
    m = b["machine"]
    return (f"Date {b['date']}; {m['cpus']} CPUs ({m['cpu']}), {m['platform']}; load average "
            f"{', '.join(f'{x:.2f}' for x in m['load_before'])} before and "
            f"{', '.join(f'{x:.2f}' for x in m['load_after'])} after; {b['duration_s']} s per "
            f"run, {len(b['runs'])} runs in {b['seconds'] / 60:.1f} minutes; every server with "
            f"{b['threads']} intra-op thread(s), OPENBLAS_NUM_THREADS=1, the client on the same "
            "machine. Configurations ran in turn within each cell, the order rotated from cell "
            "to cell.")


def render_generate(b, args):
    runs = b["runs"]
    repeats = b.get("repeats", 1)
    # Each twin run against the static run of the same cell and repeat.
    static = {(r["traffic"], r["task"], r["load"], r.get("repeat", 0)): r["result"] for r in runs
              if r["config"] == "static"}
    out = [f"# {args.title}", "",
           f"Command: `{b['command']}`", "",
           run_line(b), "",
           "Load: `twin-client bench --generate`, a closed loop of N streams (cN), each call a "
           "prompt of the task's test split generating "
           f"{b['max_new_tokens']} tokens (end-of-sequence ignored, so that every call "
           "decodes as much). Tokens/s: generated tokens of the successful calls over the run. "
           "TTFT: from the call to the first token, client side. ITL: between consecutive "
           "tokens. Traffic: uniform over tasks, or skewed (Zipf s = 1.1).", "",
           "Configurations: " + "; ".join(
               f"**{c}** = {GENERATE_CONFIG_TEXT.get(c, c)}" for c in b["configs"]) + ".", ""]
    cells = {}  # (traffic, task, load) -> [(tokens, ttft, itl) ratios per repeat]
    for r in runs:
        s = static.get((r["traffic"], r["task"], r["load"], r.get("repeat", 0)))
        if r["config"] != "twin" or not s:
            continue
        t = r["result"]
        cells.setdefault((r["traffic"], r["task"], r["load"]), []).append(
            (ratio(t["tokens_per_s"], s["tokens_per_s"]),
             ratio(t["ttft"]["p50_ms"], s["ttft"]["p50_ms"]),
             ratio(t["inter_token"]["p50_ms"], s["inter_token"]["p50_ms"])))

    def summary(values):
        values = sorted(v for v in values if v is not None)
        if not values:
            return "-"
        median = values[len(values) // 2] if len(values) % 2 else \
            0.5 * (values[len(values) // 2 - 1] + values[len(values) // 2])
        if len(values) == 1:
            return fmt_ratio(median)
        return f"{fmt_ratio(median)} ({values[0]:.2f}-{values[-1]:.2f})"

    head = "twin / static in the same cell"
    if repeats > 1:
        head += f"; median of {repeats} paired runs (range)"
    out += [f"## Headline ({head})", "",
            "| traffic | task | load | tokens/s | TTFT p50 | ITL p50 |", "|---|---|---|---|---|---|"]
    for (traffic, task, load), pairs in cells.items():
        out.append(f"| {traffic} | {task} | {load} | "
                   f"{summary(p[0] for p in pairs)} | {summary(p[1] for p in pairs)} | "
                   f"{summary(p[2] for p in pairs)} |")
    out += ["", "## Every run", "",
            "| traffic | task | load | run | config | tokens/s | / static | calls/s | "
            "TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | errors | RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        t = r["result"]
        s = static.get((r["traffic"], r["task"], r["load"], r.get("repeat", 0)))
        out.append(
            f"| {r['traffic']} | {r['task']} | {r['load']} | {r.get('repeat', 0) + 1} | "
            f"{r['config']} | {t['tokens_per_s']:.1f} | "
            f"{fmt_ratio(ratio(t['tokens_per_s'], s['tokens_per_s'])) if s else '-'} | "
            f"{t['requests_per_s']:.2f} | {t['ttft']['p50_ms']:.2f} | {t['ttft']['p99_ms']:.2f} | "
            f"{t['inter_token']['p50_ms']:.2f} | {t['inter_token']['p99_ms']:.2f} | "
            f"{t['failed']} | {r['result']['server']['rss_kb'] / 1000:.0f} |")
    if args.note:
        out += ["", "## Notes", ""]
        for n in args.note:
            out += [n, ""]
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bench", required=True)
    p.add_argument("--fusion")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="Serving benchmark")
    p.add_argument("--note", action="append", default=[],
                   help="a paragraph for the Notes section (repeatable)")
    p.add_argument("--eval", action="append", default=[],
                   help="NAME:CONFIG=twin-eval.json: a router input, the serving configuration "
                        "that uses it, and twin-eval's JSON for its version (repeatable)")
    args = p.parse_args()
    with open(args.bench) as f:
        b = json.load(f)
    if b.get("mode") == "generate":
        render_generate(b, args)
        return
    runs = b["runs"]
    expert = expert_accuracy(runs, b["tasks"])
    static = {(r["traffic"], r["task"], r["load"]): r["result"] for r in runs
              if r["config"] == "static"}
    by_cell = {(r["config"], r["traffic"], r["task"], r["load"]): r["result"] for r in runs}

    out = [f"# {args.title}", ""]
    fractions = sorted({int(r["load"][4:]) for r in runs if r["load"].startswith("open")})
    open_text = " and ".join(f"{f}%" for f in fractions) if fractions else "no rate"
    out += [
        f"Command: `{b['command']}`",
        "",
        run_line(b),
        "",
        "Configurations: " + "; ".join(
            f"**{c}** = {CONFIG_TEXT[c]}" for c in b["configs"] if c in CONFIG_TEXT) + ".",
        "",
        "Traffic: identical (one task), skewed (Zipf s = 1.1 over tasks), uniform, distinct "
        "(uniform, each request with its own router temperature, log-uniform in [0.25, 4]: "
        "many router-weight mixtures). Load: closed loop at concurrency N (cN), open loop "
        f"(Poisson) at {open_text} of static's closed-loop throughput at the highest "
        "concurrency of the same traffic and task mode (openNN).",
        "",
    ]
    if expert:
        out += ["Experts' accuracy (task given, whole run), the reference of the normalized "
                "score: " + ", ".join(f"{t} {a:.4f}" for t, a in sorted(expert.items())), ""]

    # Headline: the targets.
    top = max((LOAD_ORDER.get(r["load"], -1), r["load"]) for r in runs
              if r["load"].startswith("c"))[1]
    out += ["## Headline (closed loop at the highest concurrency, " + top + ")", "",
            "| figure | value |", "|---|---|"]

    def cell(config, traffic, task, load=top):
        return by_cell.get((config, traffic, task, load))

    twins = [c for c in b["configs"] if c.startswith("twin") and c != "twin-router"]
    for traffic, task in (("uniform", "unknown"), ("uniform", "given"), ("identical", "unknown"),
                          ("identical", "given"), ("skewed", "unknown"), ("distinct", "unknown")):
        s = static.get((traffic, task, top))
        parts = []
        for config in twins:
            t = cell(config, traffic, task)
            if t and s:
                parts.append(
                    f"{config} {fmt_ratio(ratio(t['throughput_per_s'], s['throughput_per_s']))}, "
                    f"{fmt_ratio(ratio(t['latency_ms']['p99'], s['latency_ms']['p99']))}")
        if parts:
            out.append(f"| / static, {traffic}, task {task}: replies/s, p99 | "
                       + "; ".join(parts) + " |")
    for task in ("given", "unknown"):
        parts = []
        for config in b["configs"]:
            scores = [normalized(r["result"], expert) for r in runs
                      if r["config"] == config and r["task"] == task]
            scores = [x for x in scores if x == x]
            if scores and config != "static":
                parts.append(f"{config} {sum(scores) / len(scores):.1f}")
        if parts:
            out.append(f"| normalized score, task {task} (mean over runs) | "
                       + "; ".join(parts) + " |")
    for config in twins:
        c1 = [(by_cell.get((config, tr, "unknown", "c1")), static.get((tr, "unknown", "c1")))
              for tr in ("uniform", "skewed", "identical", "distinct")]
        c1 = [(t, s) for t, s in c1 if t and s]
        if c1:
            route = sum(t["server_time_us"]["route"] for t, _ in c1) / len(c1)
            forward = sum(s["server_time_us"]["forward"] for _, s in c1) / len(c1)
            out.append(f"| routing cost per request ({config} route time / static forward "
                       f"time, c1, task unknown) | {route:.0f} us / {forward:.0f} us = "
                       f"{100 * ratio(route, forward):.0f}% |")
    for config in twins + ["experts"]:
        routed = [r["result"] for r in runs if r["config"] == config and r["task"] == "unknown"]
        n = sum(x["routed"] for x in routed)
        if n:
            out.append(f"| routing accuracy ({config}, task unknown, all runs) | "
                       f"{sum(x['routed_correct'] for x in routed) / n:.4f} |")
    out.append("")

    if args.eval:
        out += router_inputs(args.eval, by_cell, static)
    if args.note:
        out += ["## Notes", ""]
        for note in args.note:
            out += [note, ""]

    # Memory.
    out += ["## Resident memory", "",
            "Weights by part from `twin_weights_resident_bytes` and `twin_cache_bytes` at the "
            "end of the run (MB); RSS from /proc (MB): idle after warm-up, and peak.", "",
            "| config | theta* | twins | heads | router | experts | fused cache | idle RSS | "
            "peak RSS | peak RSS / static |", "|---|---|---|---|---|---|---|---|---|---|"]
    last = {}
    for r in runs:
        last[r["config"]] = r["result"]["server"]
    for config in b["configs"]:
        if config not in last:
            continue
        w = last[config]["weights_bytes"]
        peak = last[config]["peak_rss_kb"]
        out.append(
            f"| {config} | {mb(w.get('shared', 0))} | {mb(w.get('twins', 0))} | "
            f"{mb(w.get('heads', 0))} | {mb(w.get('router', 0))} | {mb(w.get('experts', 0))} | "
            f"{mb(w.get('fused_cache', 0))} | {b['idle_rss_kb'].get(config, 0) / 1e3:.1f} | "
            f"{peak / 1e3:.1f} | {fmt_ratio(ratio(peak, last['static']['peak_rss_kb']))} |")
    out += ["", "The static and twin configurations load the same version (theta*, twins, "
            "heads, router); static reads only theta* and the heads.", ""]

    if args.fusion:
        with open(args.fusion) as f:
            fu = json.load(f)
        out += ["## Fusion micro-benchmark", "",
                f"`twin-fusion-bench` on version {fu['version']} (median of {fu['reps']}): the "
                "time to fuse one cluster's weight set (`TwinWeights::Fuse`: the GEMMs and "
                "adds; `Engine::Fuse`: plus cloning the module and setting its parameters, what "
                "a cache miss costs) against a memcpy of the bytes the set adds beyond theta*.",
                "", "| key | tasks kept | bytes | fuse ms | fuse + module ms | memcpy ms | "
                "fuse / memcpy |", "|---|---|---|---|---|---|---|"]
        for k in fu["keys"]:
            out.append(f"| {k['key']} | {k['kept']} | {k['bytes']} | {k['fuse_s'] * 1e3:.3f} | "
                       f"{k['engine_fuse_s'] * 1e3:.3f} | {k['memcpy_s'] * 1e3:.4f} | "
                       f"{ratio(k['fuse_s'], k['memcpy_s']):.0f}x |")
        out.append("")

    # Every run.
    out += ["## Every run", "",
            "Latencies client side (ms); ratios to static in the same cell. acc: accuracy over "
            "labelled replies; norm: normalized score; route: routing accuracy (task unknown); "
            "batch: mean requests per forward batch (server); hit: fused-cache hit ratio; "
            "split: the server's mean route / fuse / forward / queue time per request (us).",
            "", "| traffic | task | load | config | replies/s | x static | p50 | p90 | p99 | "
            "p99 x static | errors | acc | norm | route | batch | hit | split r/f/fw/q | "
            "fusions |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ordered = sorted(runs, key=lambda r: (r["traffic"], r["task"], LOAD_ORDER.get(r["load"], 9),
                                          b["configs"].index(r["config"])))
    for r in ordered:
        x = r["result"]
        s = static.get((r["traffic"], r["task"], r["load"]))
        lat = x["latency_ms"]
        st = x["server_time_us"]
        errors = x["failed"] + x["dropped"]
        hit = x["cache_hits"] / x["ok"] if x["ok"] else 0.0
        out.append(
            f"| {r['traffic']} | {r['task']} | {r['load']} | {r['config']} | "
            f"{x['throughput_per_s']:.1f} | "
            f"{fmt_ratio(ratio(x['throughput_per_s'], s['throughput_per_s'])) if s else '-'} | "
            f"{lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | "
            f"{fmt_ratio(ratio(lat['p99'], s['latency_ms']['p99'])) if s else '-'} | {errors} | "
            f"{accuracy(x):.4f} | {normalized(x, expert):.1f} | "
            f"{'-' if r['task'] == 'given' else f'{routing_accuracy(x):.4f}'} | "
            f"{x['server']['mean_batch_size']:.2f} | {hit:.2f} | "
            f"{st['route']:.0f}/{st['fuse']:.0f}/{st['forward']:.0f}/{st['queue']:.0f} | "
            f"{int(x['server']['fusions'])} |")
    out.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
