#!/usr/bin/env python3
"""The serving benchmark: twin-server configurations side by side against the static model.

Starts one twin-server per configuration (each its own ports and cache directory, all serving
the same published artifact set), then for every traffic shape x task mode x load runs
`twin-client bench` against each configuration in turn, rotating the order from cell to cell so
that no configuration always runs first or last on a shared, noisy machine. Open-loop rates
are fractions of the static configuration's closed-loop throughput at the highest concurrency
of the same traffic and task mode, measured earlier in the same run.

Per run it records the client's figures (replies/s, latency percentiles, errors, accuracy per
task, cache hits, the server's time split) and, from the server's /metrics and /proc, the mean
batch size, fusions, throttled fusions, resident weight bytes by part (theta*, twins, heads,
router, experts, cached fused sets) and the RSS. Writes one JSON file; render.py turns it into
the Markdown table. Standard library only.

  serving_bench.py --build build --store file:///zoo/store --zoo ZOO_DIR --data DATA_DIR \
      --out results.json [--duration_s 5] [--concurrency 1,8,32] [--open 0.5,0.9] \
      [--traffic identical,skewed,uniform,distinct] [--configs static,experts,twin,twin-router]

With --generate (a causal LM's version, e.g. the generative zoo), every run is
`twin-client bench --generate` instead (closed loop only: generated tokens/s, time to first
token, inter-token latency), over the prompts of DATA_DIR/<task>.test.jsonl, each call
generating --max_new_tokens tokens (end-of-sequence ignored, so runs compare); the
configurations default to static,twin and the traffic to uniform,skewed.
"""

import argparse
import datetime
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TRAFFIC = ("identical", "skewed", "uniform", "distinct")
CONFIGS = ("static", "experts", "twin", "twin-router")
# More twin configurations, each one option changed from twin's defaults:
#   twin-ngram   the version published with router.features: ngram (--ngram_store)
#   twin-prefix  the version published with twin.from_layer: k and router.features: prefix
#                (--prefix_store; multi-stage merging: the router reads the forward's own
#                first k layers, which every batch continues from)
#   twin-bg      cache.background_fusion: true (misses served by the nearest set meanwhile)
#   twin-top1    cluster_key.top_k: 1 (one twin per request: fewer, larger batches)
# Native models only (a version with model.native, e.g. the zoo in Hugging Face form):
#   twin-fused   serving.batches: fused (every batch one cluster key's fused weights)
#   twin-unfused serving.batches: unfused (mixed batches: theta* + each row's mixture)
#   twin-rate    serving.batch_choice.aging_us: 0 (the per-batch choice by rate alone)
# (twin itself is serving.batches: auto there, the per-batch choice.)
EXTRA_CONFIGS = ("twin-ngram", "twin-prefix", "twin-bg", "twin-top1", "twin-fused",
                 "twin-unfused", "twin-rate")
ZIPF_S = 1.1
DISTINCT_TEMPERATURES = "0.25,4"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tasks_of(data_dir):
    names = set()
    for f in os.listdir(data_dir):
        m = re.match(r"(.+)\.test\.(tsv|safetensors|jsonl)$", f)
        if m:
            names.add(m.group(1))
    if not names:
        sys.exit(f"serving_bench: no <task>.test.tsv, .test.safetensors or .test.jsonl in {data_dir}")
    return sorted(names)


def mix_for(traffic, tasks):
    if traffic == "identical":
        return f"{tasks[0]}=1"
    if traffic == "skewed":
        return ",".join(f"{t}={1.0 / (i + 1) ** ZIPF_S:.6f}" for i, t in enumerate(tasks))
    return ""  # uniform, distinct


def expert_path(zoo, task):
    """A task's expert: the Hugging Face directory ZOO/<task>/ when there is one, else ZOO/<task>.pt."""
    d = os.path.join(zoo, task)
    return d if os.path.isfile(os.path.join(d, "config.json")) else d + ".pt"


def server_yaml(config, args, tasks):
    lines = [f"intra_op_threads: {args.threads}", "warmup_requests: 4",
             "reload: {poll_interval_ms: 0}", "log_level: warning"]
    if config == "static":
        lines.append("serving: {mode: static}")
    elif config == "experts":
        experts = ", ".join(f"{t}: {expert_path(args.zoo, t)}" for t in tasks)
        lines.append(f"serving: {{mode: experts, experts: {{{experts}}}}}")
    elif config == "twin-router":
        lines.append("routing: {task_given: router}")
    elif config == "twin-bg":
        lines.append("cache: {background_fusion: true}")
    elif config == "twin-top1":
        lines.append("cluster_key: {top_k: 1}")
    elif config == "twin-fused":
        lines.append("serving: {batches: fused}")
    elif config == "twin-unfused":
        lines.append("serving: {batches: unfused}")
    elif config == "twin-rate":
        lines.append("serving: {batch_choice: {aging_us: 0}}")
    elif config == "twin-stacked":
        lines.append("serving: {mix_strategy: stacked}")
    elif config not in ("twin", "twin-ngram", "twin-prefix"):
        sys.exit(f"serving_bench: unknown configuration '{config}'")
    return "\n".join(lines) + "\n"


def store_of(config, args):
    """The store a configuration serves: its own version's for twin-ngram and twin-prefix."""
    if config == "twin-ngram":
        return args.ngram_store
    if config == "twin-prefix":
        return args.prefix_store
    return args.store


class Server:
    def __init__(self, config, args, tasks, work):
        self.config = config
        self.port = free_port()
        self.metrics_port = free_port()
        yaml_path = os.path.join(work, f"{config}.yaml")
        with open(yaml_path, "w") as f:
            f.write(server_yaml(config, args, tasks))
        self.log_path = os.path.join(work, f"{config}.log")
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS=str(args.threads))
        self.proc = subprocess.Popen(
            [os.path.join(args.build, "bin", "twin-server"), "--config", yaml_path,
             "--artifact_uri", store_of(config, args), "--cache_dir", os.path.join(work, f"cache-{config}"),
             "--listen", f"127.0.0.1:{self.port}",
             "--metrics_listen", f"127.0.0.1:{self.metrics_port}", "--admin_listen", "127.0.0.1:0",
             "--device", "cpu"],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, client, timeout_s=600):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"serving_bench: {self.config} server exited:\n" + open(self.log_path).read())
            r = subprocess.run([client, "--target", f"127.0.0.1:{self.port}", "health"],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.5)
        sys.exit(f"serving_bench: {self.config} server not SERVING after {timeout_s} s")

    def metrics(self):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                      timeout=10).read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
        return values

    def memory_kb(self):
        rss = hwm = 0
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return rss, hwm

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def delta(after, before, name):
    return after.get(name, 0.0) - before.get(name, 0.0)


def weights_of(m):
    parts = {}
    for key, value in m.items():
        g = re.match(r'twin_weights_resident_bytes\{part="(\w+)"\}', key)
        if g:
            parts[g.group(1)] = value
    parts["fused_cache"] = m.get("twin_cache_bytes", 0.0)
    return parts


def run_client(server, cmd, out_json):
    """Runs one twin-client bench; its JSON result, the server's metrics before and after, and
    the wall time."""
    before = server.metrics()
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    after = server.metrics()
    if r.returncode != 0 or not os.path.exists(out_json):
        sys.exit(f"serving_bench: {' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    with open(out_json) as f:
        result = json.load(f)
    os.remove(out_json)
    return result, before, after, wall


def run_generate(server, args, client, data, traffic, task_given, concurrency, tasks, work):
    out_json = os.path.join(work, "last.json")
    cmd = [client, "--target", f"127.0.0.1:{server.port}", "--timeout_ms", "120000", "bench",
           "--generate", "--data", data, "--duration_s", str(args.duration_s),
           "--seed", str(args.seed), "--concurrency", str(concurrency),
           "--max_new_tokens", str(args.max_new_tokens), "--out_json", out_json]
    mix = mix_for(traffic, tasks)
    if mix:
        cmd += ["--mix", mix]
    if task_given:
        cmd.append("--send_task")
    result, before, after, wall = run_client(server, cmd, out_json)
    rss, hwm = server.memory_kb()
    result["wall_s"] = wall
    result["server"] = {
        "generated_tokens": delta(after, before, "twin_generated_tokens_total"),
        "weights_bytes": weights_of(after),
        "rss_kb": rss,
        "peak_rss_kb": hwm,
    }
    return result


def run_generate_cells(args, servers, configs, client, tasks, concurrency, runs):
    cell = 0
    for traffic in args.traffic.split(","):
        for mode in args.task_modes.split(","):
            task_given = mode == "given"
            for c in concurrency:
                # Each repeat runs every configuration once, the order rotated from one run of
                # the cell to the next, so that drifts of the machine's load hit both sides.
                for repeat in range(args.repeats):
                    order = configs[cell % len(configs):] + configs[:cell % len(configs)]
                    cell += 1
                    for config in order:
                        result = run_generate(servers[config], args, client, args.data, traffic,
                                              task_given, c, tasks, args.work)
                        runs.append({"config": config, "traffic": traffic, "task": mode,
                                     "load": f"c{c}", "rate": None, "repeat": repeat,
                                     "result": result})
                        print(f"{traffic:9} {mode:7} c{c:<6} {config:12} #{repeat} "
                              f"{result['tokens_per_s']:9.1f} tok/s ttft p50 "
                              f"{result['ttft']['p50_ms']:8.2f} ms itl p50 "
                              f"{result['inter_token']['p50_ms']:7.2f} ms", flush=True)


def run_one(server, args, client, data, traffic, task_given, load, tasks, work):
    out_json = os.path.join(work, "last.json")
    cmd = [client, "--target", f"127.0.0.1:{server.port}", "--timeout_ms", "10000", "bench",
           "--data", data, "--duration_s", str(args.duration_s), "--seed", str(args.seed),
           "--out_json", out_json]
    mix = mix_for(traffic, tasks)
    if mix:
        cmd += ["--mix", mix]
    if traffic == "distinct":
        cmd += ["--temperatures", DISTINCT_TEMPERATURES]
    if task_given:
        cmd.append("--send_task")
    if load[0] == "closed":
        cmd += ["--concurrency", str(load[1])]
    else:
        cmd += ["--rate", f"{load[1]:.3f}", "--max_outstanding", "512"]
    result, before, after, wall = run_client(server, cmd, out_json)
    batches = delta(after, before, "twin_batch_size_count")
    rows = delta(after, before, "twin_batch_size_sum")
    rss, hwm = server.memory_kb()
    result["wall_s"] = wall  # the client's whole run, draining included
    result["server"] = {
        "batches": batches,
        "mean_batch_size": rows / batches if batches else 0.0,
        "fusions": delta(after, before, "twin_fusions_total"),
        "fusions_throttled": delta(after, before, "twin_cache_fusions_throttled_total"),
        "cache_nearest": delta(after, before, "twin_cache_nearest_total"),
        "weights_bytes": weights_of(after),
        "rss_kb": rss,
        "peak_rss_kb": hwm,
    }
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--build", required=True)
    p.add_argument("--store", required=True, help="object store URI of the artifact set")
    p.add_argument("--zoo", required=True,
                   help="directory with the experts: <task>.pt or Hugging Face <task>/")
    p.add_argument("--data", required=True, help="directory with <task>.test.tsv|safetensors")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--name", default="", help="label of the model set in the report")
    p.add_argument("--duration_s", type=float, default=5.0)
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--open", default="0.5,0.9", help="open-loop rates, fractions of static's capacity")
    p.add_argument("--traffic", default="")
    p.add_argument("--task_modes", default="given,unknown")
    p.add_argument("--configs", default="")
    p.add_argument("--generate", action="store_true",
                   help="Generate load (twin-client bench --generate) on a causal LM's version")
    p.add_argument("--max_new_tokens", type=int, default=32, help="--generate: tokens per call")
    p.add_argument("--repeats", type=int, default=1,
                   help="--generate: runs of every configuration per cell, alternating; the "
                        "report's ratios are the medians over the repeats")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of every server")
    p.add_argument("--ngram_store", default="",
                   help="object store URI of the same zoo merged with router.features: ngram "
                        "(for the twin-ngram configuration)")
    p.add_argument("--prefix_store", default="",
                   help="object store URI of the same zoo merged with twin.from_layer: k and "
                        "router.features: prefix (for the twin-prefix configuration)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    # SIGTERM (a CI timeout, a user) still stops the servers through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("serving_bench: terminated"))

    if not args.traffic:
        args.traffic = "uniform,skewed" if args.generate else ",".join(TRAFFIC)
    if not args.configs:
        args.configs = "static,twin" if args.generate else ",".join(CONFIGS)
    client = os.path.join(args.build, "bin", "twin-client")
    tasks = tasks_of(args.data)
    configs = args.configs.split(",")
    if configs[0] != "static":
        sys.exit("serving_bench: the first configuration must be static (the baseline)")
    if "twin-ngram" in configs and not args.ngram_store:
        sys.exit("serving_bench: twin-ngram needs --ngram_store")
    if "twin-prefix" in configs and not args.prefix_store:
        sys.exit("serving_bench: twin-prefix needs --prefix_store")
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    fractions = [float(x) for x in args.open.split(",") if x]
    started = time.time()
    load_before = os.getloadavg()
    work = tempfile.mkdtemp(prefix="serving-bench-")
    args.work = work
    servers = {c: Server(c, args, tasks, work) for c in configs}
    runs = []
    try:
        for s in servers.values():
            s.wait_ready(client)
        idle = {c: s.memory_kb()[0] for c, s in servers.items()}
        cell = 0
        if args.generate:
            run_generate_cells(args, servers, configs, client, tasks, concurrency, runs)
        for traffic in ([] if args.generate else args.traffic.split(",")):
            for mode in args.task_modes.split(","):
                task_given = mode == "given"
                loads = [("closed", c) for c in concurrency]
                capacity = None
                for load in loads + [("open", f) for f in fractions]:
                    if load[0] == "open":
                        if capacity is None:
                            continue
                        load = ("open", load[1] * capacity, load[1])
                    # Rotate the order so no configuration always goes first.
                    order = configs[cell % len(configs):] + configs[:cell % len(configs)]
                    cell += 1
                    for config in order:
                        if config == "twin-router" and not task_given:
                            continue  # identical to twin when no task is named
                        result = run_one(servers[config], args, client, args.data, traffic,
                                         task_given, load, tasks, work)
                        label = (f"c{load[1]}" if load[0] == "closed"
                                 else f"open{int(round(load[2] * 100))}")
                        runs.append({"config": config, "traffic": traffic, "task": mode,
                                     "load": label, "rate": load[1] if load[0] == "open" else None,
                                     "result": result})
                        print(f"{traffic:9} {mode:7} {label:7} {config:12} "
                              f"{result['throughput_per_s']:9.1f}/s p99 "
                              f"{result['latency_ms']['p99']:8.2f} ms  batch "
                              f"{result['server']['mean_batch_size']:.2f}", flush=True)
                        if (config == "static" and load[0] == "closed"
                                and load[1] == max(concurrency)):
                            capacity = result["throughput_per_s"]
    finally:
        for s in servers.values():
            s.stop()
    report = {
        "mode": "generate" if args.generate else "infer",
        "max_new_tokens": args.max_new_tokens if args.generate else None,
        "repeats": args.repeats if args.generate else 1,
        "name": args.name,
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "cpu": cpu_model(), "load_before": load_before, "load_after": os.getloadavg()},
        "seconds": time.time() - started,
        "duration_s": args.duration_s,
        "threads": args.threads,
        "tasks": tasks,
        "configs": configs,
        "idle_rss_kb": idle,
        "runs": runs,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"serving_bench: {len(runs)} runs in {report['seconds']:.0f} s -> {args.out}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
