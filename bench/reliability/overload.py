#!/usr/bin/env python3
"""Overload behaviour of twin-server: capacity, then open-loop load at 50% and at N x capacity.

For each admission policy (batching.deadline_admission on and off) it starts one twin-server
on the given artifact store and, with `twin-client bench`:
  1. measures capacity: closed loop at --concurrency for --capacity_s seconds;
  2. runs an open loop (Poisson) at 50% of capacity for --half_s seconds: the reference p99;
  3. runs an open loop at --overload x capacity for --overload_s seconds with a client deadline
     of --deadline_factor x the 50%-load p99 (a client whose latency objective is that), while
     sampling the server's RSS every second.
It records goodput (OK replies/s), the p99 of accepted (OK) requests, the error codes, and the
RSS over time, and writes a JSON file and a Markdown section. Standard library only.

  overload.py --build build --store file:///zoo/store --data DATA_DIR --out_json r.json \
      --out_md r.md [--overload 3] [--overload_s 60]
"""
import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def report_header(tool):
    """The command, date and machine that every reliability report starts with."""
    return {"command": f"{tool} " + " ".join(sys.argv[1:]),
            "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_before": list(os.getloadavg())}}


def codes_text(codes):
    """Status codes and counts, sorted, for a Markdown cell ("-" when there are none)."""
    return ", ".join(f"{c} {n}" for c, n in sorted(codes.items())) or "-"


def read_bench_json(out, stderr, who):
    """The figures `twin-client bench --out_json out` wrote (the file is removed)."""
    if not os.path.exists(out):
        sys.exit(f"{who}: twin-client bench wrote no result: {stderr[-2000:]}")
    with open(out) as f:
        result = json.load(f)
    os.remove(out)
    return result


class Server:
    def __init__(self, args, work, admission):
        self.work = work
        self.log_path = os.path.join(work, f"server-{admission}.log")
        yaml_path = os.path.join(work, f"server-{admission}.yaml")
        with open(yaml_path, "w") as f:
            f.write(f"intra_op_threads: {args.threads}\nwarmup_requests: 4\n"
                    "reload: {poll_interval_ms: 0}\nlog_level: info\n"
                    f"batching: {{deadline_admission: {str(admission == 'on').lower()}}}\n")
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS=str(args.threads))
        pin = ["taskset", "-c", args.server_cpus] if args.server_cpus else []
        self.client_pin = ["taskset", "-c", args.client_cpus] if args.client_cpus else []
        self.proc = subprocess.Popen(
            pin + [os.path.join(args.build, "bin", "twin-server"), "--config", yaml_path,
             "--artifact_uri", args.store, "--cache_dir", os.path.join(work, f"cache-{admission}"),
             "--listen", "127.0.0.1:0", "--metrics_listen", "off", "--admin_listen", "127.0.0.1:0",
             "--device", "cpu"],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT, env=env)
        self.port = None
        deadline = time.time() + 600
        while time.time() < deadline and self.port is None:
            if self.proc.poll() is not None:
                sys.exit(f"overload: twin-server exited; log:\n{open(self.log_path).read()}")
            m = re.search(r"gRPC on port (\d+),", open(self.log_path).read())
            if m:
                self.port = int(m.group(1))
            time.sleep(0.2)
        self.client = os.path.join(args.build, "bin", "twin-client")
        while time.time() < deadline:
            r = subprocess.run([self.client, "--target", f"127.0.0.1:{self.port}", "health"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                return
            time.sleep(0.5)
        sys.exit("overload: twin-server never became SERVING")

    def bench(self, args, extra, timeout_ms):
        out = os.path.join(self.work, "bench.json")
        cmd = self.client_pin + [self.client, "--target", f"127.0.0.1:{self.port}", "--timeout_ms",
               str(int(timeout_ms)), "bench", "--data", args.data, "--out_json", out,
               "--seed", str(args.seed)] + extra
        r = subprocess.run(cmd, capture_output=True, text=True)
        return read_bench_json(out, r.stderr, "overload")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def summary(result):
    return {"goodput_per_s": result["throughput_per_s"], "ok": result["ok"],
            "failed": result["failed"], "dropped": result["dropped"],
            "errors_by_code": result.get("errors", {}),
            "p50_ms": result["latency_ms"]["p50"], "p99_ms": result["latency_ms"]["p99"]}


def run_policy(args, work, admission):
    server = Server(args, work, admission)
    try:
        capacity = server.bench(args, ["--concurrency", str(args.concurrency),
                                       "--duration_s", str(args.capacity_s)], 30000)
        cap = capacity["throughput_per_s"]
        half = server.bench(args, ["--rate", f"{0.5 * cap:.3f}", "--duration_s",
                                   str(args.half_s), "--max_outstanding", "100000"], 30000)
        deadline_ms = max(1.0, args.deadline_factor * half["latency_ms"]["p99"])
        samples = []
        stop = threading.Event()

        def sample():
            start = time.time()
            while not stop.is_set():
                samples.append((round(time.time() - start, 1), rss_mb(server.proc.pid)))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample)
        sampler.start()
        over = server.bench(args, ["--rate", f"{args.overload * cap:.3f}", "--duration_s",
                                   str(args.overload_s), "--max_outstanding", "100000"],
                            deadline_ms)
        stop.set()
        sampler.join()
        return {"admission": admission, "capacity_per_s": cap,
                "capacity": summary(capacity), "half_load": summary(half),
                "deadline_ms": deadline_ms, "overload": summary(over),
                "offered_per_s": args.overload * cap, "rss_mb": samples}
    finally:
        server.stop()


def markdown(report):
    lines = ["## Overload", "",
             f"Command: `{report['command']}`", "",
             f"Date {report['date']}; {report['machine']['cpus']} CPUs, load average "
             f"{', '.join(f'{x:.2f}' for x in report['machine']['load_before'])} before. "
             f"Open loop at {report['overload']}x the measured capacity for "
             f"{report['overload_s']} s; client deadline = {report['deadline_factor']}x the "
             "p99 at 50% load (a client whose latency objective is that)." +
             (f" twin-server pinned to CPU {report['server_cpus']} and the client to CPU "
              f"{report['client_cpus']} (taskset), so the load generator does not take the "
              "server's core." if report.get("server_cpus") else
              " Server and client share the CPUs."), "",
             "| admission | capacity /s | p99 at 50% (ms) | deadline (ms) | offered /s | "
             "goodput /s | goodput / capacity | accepted p99 (ms) | p99 / p99 at 50% | "
             "codes | RSS start -> max (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in report["policies"]:
        o, h = p["overload"], p["half_load"]
        rss = [r for _, r in p["rss_mb"] if r is not None]
        codes = codes_text(o["errors_by_code"])
        lines.append(
            f"| {p['admission']} | {p['capacity_per_s']:.1f} | {h['p99_ms']:.1f} | "
            f"{p['deadline_ms']:.1f} | {p['offered_per_s']:.1f} | {o['goodput_per_s']:.1f} | "
            f"{o['goodput_per_s'] / p['capacity_per_s']:.2f} | {o['p99_ms']:.1f} | "
            f"{o['p99_ms'] / h['p99_ms']:.2f}x | {codes} (OK {o['ok']}) | "
            f"{rss[0]:.0f} -> {max(rss):.0f} |" if rss else "")
    lines += ["", "`deadline_admission: on` refuses at once (RESOURCE_EXHAUSTED) a request whose "
              "expected queue wait exceeds its deadline; off, such requests wait and expire "
              "(DEADLINE_EXCEEDED) without costing a forward.", ""]
    return "\n".join(lines)


def reliability_md(report):
    on = [p for p in report["policies"] if p["admission"] == "on"]
    on_ratio = (f"{on[0]['overload']['goodput_per_s'] / on[0]['capacity_per_s']:.2f} at a "
                f"{on[0]['deadline_ms']:.0f} ms deadline") if on else "(no run with admission)"
    return "\n".join([
        "# Reliability of twin-server", "",
        "Produced by `bench/reliability/run.sh lite` (the lite zoo, twin-server's defaults, one "
        "intra-op thread, the client on the same 2-core machine).", "",
        markdown(report),
        "Reading: with a client deadline D an accepted request is answered within D by "
        "construction (later it would fail DEADLINE_EXCEEDED), so accepted p99 is bounded by "
        "the client's deadline; goodput is what admission changes. A client without a deadline "
        "is never refused by this policy and waits behind the whole queue "
        "(`batching.max_queue_size`).", "",
        "What bounds goodput here:", "",
        "- **Refusals are not free.** Every refused call is a whole gRPC call on the server's "
        "cores. In a `perf` profile of twin-server pinned to one core at 3x load, gRPC's "
        "threads took 36% of its CPU (`nexting_thread` 29%, `default-executor` 7%), most of it "
        "for calls that were then refused; the load generator shares the same 2 cores. "
        "Admission runs before a request is validated or tokenized (`RequestQueue::Admit`), so "
        "a refusal costs only the call itself.", "",
        "- **Capacity is a closed loop of 32 clients**, which never holds more than 32 "
        "requests. Under the 3x open loop the queue sits at the admission limit instead, "
        "which is deeper or shallower than 32 depending on the deadline. Batches (one "
        "cluster key each) fill accordingly, so goodput can exceed the closed-loop figure. "
        "The deadline is 2x the 50%-load p99, itself noisy on 2 shared cores (23 ms to 41 ms "
        "between runs on 2026-12-01), so the ratio moves between runs: 0.83 at a 46 ms "
        "deadline in the run of 20:59 (before the margin below), "
        f"{on_ratio} in the run above.", "",
        "- **Predictions at the limit.** Under sustained overload the queue sits at the "
        "admission limit, so most accepted requests are predicted to finish just before their "
        "deadline, and each underestimate used to end as DEADLINE_EXCEEDED after holding a "
        "place. The margin learned from earlier predictions (the smoothed error plus two "
        "smoothed deviations, as TCP sets its timeout) cut these from 23% of accepted requests "
        "(10,645 of 45,344 in the run of 2026-12-01 20:59 without it) to the share in the "
        "codes column above.", "",
        ""])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build")
    p.add_argument("--store")
    p.add_argument("--data")
    p.add_argument("--out_json")
    p.add_argument("--out_md", required=True)
    p.add_argument("--render", help="only write reliability.md (--out_md) from this JSON")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--capacity_s", type=float, default=10)
    p.add_argument("--half_s", type=float, default=20)
    p.add_argument("--overload", type=float, default=3.0)
    p.add_argument("--overload_s", type=float, default=60)
    p.add_argument("--deadline_factor", type=float, default=2.0)
    p.add_argument("--policies", default="on,off")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server_cpus", default="",
                   help="taskset CPU list for twin-server (with --client_cpus: no shared core)")
    p.add_argument("--client_cpus", default="", help="taskset CPU list for twin-client bench")
    args = p.parse_args()
    if args.render:
        with open(args.render) as f:
            report = json.load(f)
        with open(args.out_md, "w") as f:
            f.write(reliability_md(report))
        return
    if not (args.build and args.store and args.data and args.out_json):
        p.error("--build, --store, --data and --out_json are required (or --render)")
    report = {**report_header("overload.py"),
              "overload": args.overload, "overload_s": args.overload_s,
              "server_cpus": args.server_cpus, "client_cpus": args.client_cpus,
              "deadline_factor": args.deadline_factor, "policies": []}
    with tempfile.TemporaryDirectory() as work:
        for admission in args.policies.split(","):
            report["policies"].append(run_policy(args, work, admission))
    report["machine"]["load_after"] = list(os.getloadavg())
    with open(args.out_json, "w") as f:
        json.dump(report, f, indent=1)
    with open(args.out_md, "w") as f:
        f.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
