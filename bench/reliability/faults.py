#!/usr/bin/env python3
"""Fault figures of twin-server (bench/results/reliability.md), one phase each:

  sigterm    SIGTERM under open-loop load, --trials times: every request must end OK or
             UNAVAILABLE; the server must exit 0. Records codes, drain time, exit codes.
  kill9      kill -9 under open-loop load and a restart on the same port and cache folder:
             time from the kill to SERVING, with the blob cache intact and with one cached
             blob corrupted (the restart must re-verify it and fetch it again).
  malformed  --malformed calls of random and mutated bytes over every gRPC method (TwinMerge,
             KServe v2, health, Admin): crashes, codes returned, health and RSS afterwards.
  corrupt    new versions published with damaged blobs or manifests while a version serves:
             each must be refused with a message naming the problem, the old version kept and
             answering.

Needs Debian's python3-grpcio for `malformed` (run with /usr/bin/python3); the rest is the
standard library and the built binaries.

  faults.py --build build --store file:///zoo/store --data DATA --out_json f.json
  faults.py --render f.json          # Markdown sections on stdout
"""
import argparse
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overload import codes_text, read_bench_json, report_header, rss_mb  # noqa: E402

ALLOWED_DRAIN_CODES = {"UNAVAILABLE"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One twin-server process on fixed ports (so a restart takes the same address)."""

    def __init__(self, args, work, name, store, port=None, admin_port=None, cache=None,
                 extra_yaml=""):
        self.args, self.work, self.name, self.store = args, work, name, store
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        self.cache = cache or os.path.join(work, f"cache-{name}")
        self.yaml = os.path.join(work, f"server-{name}.yaml")
        with open(self.yaml, "w") as f:
            f.write(f"intra_op_threads: {args.threads}\nwarmup_requests: 2\nlog_level: info\n"
                    "drain_grace_ms: 500\ndrain_timeout_ms: 20000\n" + extra_yaml)
        self.proc = None
        self.log_path = None
        self.starts = 0

    def start(self):
        self.starts += 1
        self.log_path = os.path.join(self.work, f"server-{self.name}.{self.starts}.log")
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS=str(self.args.threads))
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [os.path.join(self.args.build, "bin", "twin-server"), "--config", self.yaml,
             "--artifact_uri", self.store, "--cache_dir", self.cache,
             "--listen", f"127.0.0.1:{self.port}", "--metrics_listen", "off",
             "--admin_listen", f"127.0.0.1:{self.admin_port}", "--device", "cpu"],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT, env=env)
        return self

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def client(self, *argv, admin=False, timeout_ms=5000):
        port = self.admin_port if admin else self.port
        return subprocess.run(
            [os.path.join(self.args.build, "bin", "twin-client"), "--target",
             f"127.0.0.1:{port}", "--timeout_ms", str(timeout_ms)] + list(argv),
            capture_output=True, text=True)

    def wait_serving(self, timeout_s=600):
        """Seconds from start() until health says SERVING."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"faults: twin-server exited ({self.proc.returncode}):\n{self.log()}")
            if self.client("health", timeout_ms=1000).returncode == 0:
                return time.time() - self.started_at
            time.sleep(0.05)
        sys.exit(f"faults: twin-server not SERVING after {timeout_s} s:\n{self.log()}")

    def status(self):
        r = self.client("status", admin=True)
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition(": ")
            out[k] = v
        return out

    def term(self, timeout_s=60):
        self.proc.send_signal(signal.SIGTERM)
        t0 = time.time()
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return rc, time.time() - t0

    def kill9(self):
        self.proc.kill()
        self.proc.wait()


def bench_async(server, args, work, tag, rate, duration_s, health_check=True, timeout_ms=10000):
    out = os.path.join(work, f"bench-{tag}.json")
    cmd = [os.path.join(args.build, "bin", "twin-client"), "--target",
           f"127.0.0.1:{server.port}", "--timeout_ms", str(timeout_ms)]
    if health_check:
        cmd.append("--health_check")
    cmd += ["bench", "--data", args.data, "--rate", str(rate), "--duration_s", str(duration_s),
            "--max_outstanding", "100000", "--out_json", out, "--seed", str(args.seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, out


def bench_result(proc, out):
    _, err = proc.communicate()
    return read_bench_json(out, err, "faults")


# ------------------------------------------------------------------------------- sigterm
def phase_sigterm(args, work):
    server = Server(args, work, "sigterm", args.store)
    trials = []
    for trial in range(1, args.trials + 1):
        server.start()
        server.wait_serving()
        load_s = 4.0
        proc, out = bench_async(server, args, work, f"term{trial}", args.rate, load_s)
        # 1 s for the client's own start, then 20% .. 60% into the load.
        time.sleep(1.0 + load_s * (0.2 + 0.4 * ((trial * 7) % 10) / 10))
        rc, drain_s = server.term()
        r = bench_result(proc, out)
        codes = dict(r.get("errors", {}))
        lost = {k: v for k, v in codes.items() if k not in ALLOWED_DRAIN_CODES}
        if r.get("dropped"):
            lost["dropped by the client"] = r["dropped"]
        trials.append({"trial": trial, "exit_code": rc, "drain_s": round(drain_s, 3),
                       "ok": r["ok"], "codes": codes, "lost": lost})
        print(f"faults: sigterm trial {trial}: exit {rc}, drain {drain_s:.2f} s, ok {r['ok']}, "
              f"codes {codes}", file=sys.stderr)
    return {"rate_per_s": args.rate, "trials": trials,
            "lost": sum(sum(t["lost"].values()) for t in trials),
            "nonzero_exits": sum(1 for t in trials if t["exit_code"] != 0)}


# --------------------------------------------------------------------------------- kill9
def largest_cached_blob(cache):
    files = [p for p in glob.glob(os.path.join(cache, "**", "*"), recursive=True)
             if os.path.isfile(p) and not os.path.islink(p)]
    return max(files, key=os.path.getsize) if files else None


def phase_kill9(args, work):
    server = Server(args, work, "kill9", args.store)
    server.start()
    cold_s = server.wait_serving()
    runs = []
    for variant in ("cache intact", "one cached blob corrupted"):
        duration = 12.0
        proc, out = bench_async(server, args, work, "kill9", args.rate, duration,
                                health_check=False, timeout_ms=2000)
        time.sleep(4.0)
        server.kill9()
        killed_at = time.time()
        corrupted = None
        if variant != "cache intact":
            corrupted = largest_cached_blob(server.cache)
            with open(corrupted, "r+b") as f:
                f.seek(os.path.getsize(corrupted) // 2)
                b = f.read(1)
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([b[0] ^ 0xFF]))
        server.start()
        server.wait_serving()
        to_serving = time.time() - killed_at
        r = bench_result(proc, out)
        answer = server.client("infer", "--text", "after the restart")
        runs.append({"variant": variant, "kill_to_serving_s": round(to_serving, 2),
                     "corrupted_blob": os.path.relpath(corrupted, server.cache) if corrupted
                     else None,
                     "ok": r["ok"], "codes": r.get("errors", {}),
                     "answers_after": answer.returncode == 0,
                     "log_mentions": [l for l in server.log().splitlines()
                                      if re.search(r"mismatch|serving version|refetch|verif", l)]
                     [:4]})
        print(f"faults: kill9 ({variant}): SERVING {to_serving:.2f} s after the kill, "
              f"codes {r.get('errors', {})}", file=sys.stderr)
    rc, _ = server.term()
    return {"rate_per_s": args.rate, "cold_start_s": round(cold_s, 2), "runs": runs,
            "final_exit_code": rc}


# ----------------------------------------------------------------------------- malformed
METHODS = [
    ("main", "/twinmerge.v1.TwinMerge/Infer", "unary"),
    ("main", "/twinmerge.v1.TwinMerge/GetModelInfo", "unary"),
    ("main", "/twinmerge.v1.TwinMerge/InferStream", "stream"),
    ("main", "/inference.GRPCInferenceService/ModelInfer", "unary"),
    ("main", "/inference.GRPCInferenceService/ModelMetadata", "unary"),
    ("main", "/inference.GRPCInferenceService/ModelReady", "unary"),
    ("main", "/inference.GRPCInferenceService/ServerMetadata", "unary"),
    ("main", "/grpc.health.v1.Health/Check", "unary"),
    ("main", "/twinmerge.v1.NoSuch/Method", "unary"),
    ("admin", "/twinmerge.v1.Admin/GetServingStatus", "unary"),
]


def mutate(rng, seed):
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(5)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            data.insert(rng.randint(0, len(data)), rng.randrange(256))
        elif op == 2 and data:
            del data[rng.randrange(len(data))]
        elif op == 3 and data:
            data = data[:rng.randint(0, len(data))]
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(data)


def phase_malformed(args, work):
    import grpc  # Debian's python3-grpcio

    seeds = []
    for target in ("infer_request", "kserve_codec"):
        for path in sorted(glob.glob(os.path.join(args.seeds, target, "*"))):
            with open(path, "rb") as f:
                seeds.append(f.read())
    server = Server(args, work, "malformed", args.store)
    server.start()
    server.wait_serving()
    rss_before = rss_mb(server.proc.pid)
    rng = random.Random(args.seed)
    channels = {"main": grpc.insecure_channel(f"127.0.0.1:{server.port}"),
                "admin": grpc.insecure_channel(f"127.0.0.1:{server.admin_port}")}
    stubs = {}
    for where, method, kind in METHODS:
        ch = channels[where]
        stubs[method] = ch.stream_stream(method) if kind == "stream" else ch.unary_unary(method)
    codes = {}
    lock = threading.Lock()
    sem = threading.Semaphore(64)

    def record(method, code):
        with lock:
            per = codes.setdefault(method, {})
            per[code] = per.get(code, 0) + 1

    def done(method):
        def callback(future):
            try:
                future.result()
                record(method, "OK")
            except grpc.RpcError as e:
                record(method, e.code().name)
            finally:
                sem.release()
        return callback

    t0 = time.time()
    for i in range(args.malformed):
        where, method, kind = METHODS[i % len(METHODS)]
        if rng.random() < 0.5 and seeds:
            payload = mutate(rng, rng.choice(seeds))
        else:
            payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 256)))
        if kind == "stream":
            # A short stream of junk messages, read to the end in the caller's thread.
            try:
                for _ in stubs[method](iter([payload, mutate(rng, payload)]), timeout=10):
                    pass
                record(method, "OK")
            except grpc.RpcError as e:
                record(method, e.code().name)
            continue
        sem.acquire()
        stubs[method].future(payload, timeout=10).add_done_callback(done(method))
    for _ in range(64):
        sem.acquire()
    elapsed = time.time() - t0
    alive = server.proc.poll() is None
    health = server.client("health").stdout.strip() if alive else "(exited)"
    answer = server.client("infer", "--text", "after the malformed calls").returncode == 0
    rss_after = rss_mb(server.proc.pid)
    for ch in channels.values():
        ch.close()
    rc, _ = server.term() if alive else (server.proc.returncode, 0)
    total = {}
    for per in codes.values():
        for k, v in per.items():
            total[k] = total.get(k, 0) + v
    print(f"faults: malformed: {args.malformed} calls in {elapsed:.1f} s, alive {alive}, "
          f"{total}", file=sys.stderr)
    return {"calls": args.malformed, "seconds": round(elapsed, 1), "alive": alive,
            "health_after": health, "answers_after": answer, "exit_code": rc,
            "rss_mb_before": rss_before, "rss_mb_after": rss_after, "codes": total,
            "codes_by_method": codes}


# ------------------------------------------------------------------------------- corrupt
def store_root(uri):
    if not uri.startswith("file://"):
        sys.exit("faults: the corrupt phase needs a file:// store")
    return uri[len("file://"):]


def flip_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))


def phase_corrupt(args, work):
    src = store_root(args.store)
    with open(os.path.join(src, "LATEST")) as f:
        good = f.read().strip()
    root = os.path.join(work, "corrupt-store")
    os.makedirs(root)
    shutil.copytree(os.path.join(src, good), os.path.join(root, good))
    with open(os.path.join(root, "LATEST"), "w") as f:
        f.write(good + "\n")
    server = Server(args, work, "corrupt", "file://" + root,
                    extra_yaml="reload: {poll_interval_ms: 300, retry_interval_ms: 300}\n")
    server.start()
    server.wait_serving()

    def damage_manifest(vdir, edit):
        p = os.path.join(vdir, "manifest.json")
        with open(p) as f:
            m = json.load(f)
        edit(m)
        with open(p, "w") as f:
            json.dump(m, f)

    def shared_blob(vdir):
        return os.path.join(vdir, "shared.safetensors")

    def consistent_bad_header(vdir):
        # A blob whose bytes match the manifest (digest and size updated), but whose
        # safetensors header is broken: what a buggy publisher would upload.
        import hashlib
        p = shared_blob(vdir)
        with open(p, "r+b") as f:
            f.seek(8)
            f.write(b"[")
        h = hashlib.sha256(open(p, "rb").read()).hexdigest()
        damage_manifest(vdir, lambda m: m["blobs"]["shared.safetensors"].update(sha256=h))

    def evict_shared(vdir):
        # The server keeps verified blobs by digest (cache/@sha256/<digest>) and links them into
        # each version it loads; removed there, the new version's copy must come from the store.
        with open(os.path.join(vdir, "manifest.json")) as f:
            digest = json.load(f)["blobs"]["shared.safetensors"]["sha256"]
        path = os.path.join(server.cache, "@sha256", digest)
        if os.path.exists(path):
            os.remove(path)

    def evicted(damage):
        return lambda v: (evict_shared(v), damage(v))

    cases = [
        ("blob with one byte flipped", evicted(lambda v: flip_byte(shared_blob(v)))),
        ("blob truncated", evicted(lambda v: os.truncate(shared_blob(v),
                                                         os.path.getsize(shared_blob(v)) // 2))),
        ("blob missing", evicted(lambda v: os.remove(shared_blob(v)))),
        ("manifest not JSON", lambda v: open(os.path.join(v, "manifest.json"), "w").write("{\"blobs\": ")),
        ("manifest of a future schema", lambda v: damage_manifest(v, lambda m: m.update(schema_version=99))),
        ("manifest without blobs", lambda v: damage_manifest(v, lambda m: m.pop("blobs"))),
        ("manifest missing", lambda v: os.remove(os.path.join(v, "manifest.json"))),
        ("blob digest matches, header broken", consistent_bad_header),
    ]
    results = []
    for i, (label, damage) in enumerate(cases, 1):
        version = f"{good}-bad{i}"
        vdir = os.path.join(root, version)
        shutil.copytree(os.path.join(root, good), vdir)
        # A manifest names its own version: the copy is a well-formed version of its own
        # until the damage.
        damage_manifest(vdir, lambda m: m.update(version=version))
        damage(vdir)
        before = int(server.status().get("reload failures", "0") or 0)
        with open(os.path.join(root, "LATEST"), "w") as f:
            f.write(version + "\n")
        t0 = time.time()
        st = {}
        while time.time() - t0 < 60:
            st = server.status()
            if int(st.get("reload failures", "0") or 0) > before or st.get("version") == version:
                break
            time.sleep(0.1)
        refused_s = time.time() - t0
        answer = server.client("infer", "--text", "still answering")
        results.append({"case": label, "refused": int(st.get("reload failures", "0") or 0) > before,
                        "seconds_to_refuse": round(refused_s, 2),
                        "serving_version": st.get("version"),
                        "old_version_kept": st.get("version") == good,
                        "answers": answer.returncode == 0,
                        "error": (st.get("last error") or "").replace(root, "STORE")[:240]})
        if st.get("version") == version:
            results[-1]["error"] = f"loaded {version}: its blobs' digests were all verified " \
                "in the cache, the damaged store copy was never read"
        print(f"faults: corrupt ({label}): kept {st.get('version') == good}, "
              f"error {st.get('last error', '')[:120]}", file=sys.stderr)
        with open(os.path.join(root, "LATEST"), "w") as f:
            f.write(good + "\n")
        shutil.rmtree(vdir)
    rc, _ = server.term()
    return {"good_version": good, "cases": results, "exit_code": rc}


# -------------------------------------------------------------------------------- render
def yes_no(flag):
    return "yes" if flag else "NO"


def render(report):
    out = []
    m = report["machine"]
    out += ["## Faults", "",
            f"Command: `{report['command']}`", "",
            f"Date {report['date']}; {m['cpus']} CPUs, load average "
            f"{', '.join(f'{x:.2f}' for x in m['load_before'])} before; the client on the same "
            "machine.", ""]
    s = report.get("sigterm")
    if s:
        drains = [t["drain_s"] for t in s["trials"]]
        codes = {}
        for t in s["trials"]:
            for k, v in t["codes"].items():
                codes[k] = codes.get(k, 0) + v
        out += ["### SIGTERM under load", "",
                f"{len(s['trials'])} trials; open loop at {s['rate_per_s']} requests/s over unary "
                "calls from a client that watches health (`twin-client --health_check`); SIGTERM "
                "20% to 60% into a 4 s load.", "",
                "| trials | answered OK | refused UNAVAILABLE | lost (any other end) | "
                "non-zero exits | drain s (min / max) |", "|---|---|---|---|---|---|",
                f"| {len(s['trials'])} | {sum(t['ok'] for t in s['trials'])} | "
                f"{codes.get('UNAVAILABLE', 0)} | {s['lost']} | {s['nonzero_exits']} | "
                f"{min(drains):.2f} / {max(drains):.2f} |", ""]
    k = report.get("kill9")
    if k:
        out += ["### kill -9 and restart under load", "",
                f"Open loop at {k['rate_per_s']} requests/s (client deadline 2 s, no health "
                f"watch); kill -9 4 s in, restart at once on the same port and cache folder. "
                f"Cold start (empty cache, first load): {k['cold_start_s']:.2f} s to SERVING.", "",
                "| variant | kill -> SERVING (s) | OK | other codes | answers after |",
                "|---|---|---|---|---|"]
        for r in k["runs"]:
            codes = codes_text(r["codes"])
            variant = r["variant"] + (f" (`{r['corrupted_blob']}`)" if r["corrupted_blob"] else "")
            out.append(f"| {variant} | {r['kill_to_serving_s']:.2f} | {r['ok']} | {codes} | "
                       f"{yes_no(r['answers_after'])} |")
        out += ["", "The restart verifies every cached blob against the manifest's sha256 "
                "before using it; a corrupted one is fetched again from the store.", ""]
    mf = report.get("malformed")
    if mf:
        codes = codes_text(mf["codes"])
        out += ["### Malformed requests", "",
                f"{mf['calls']} calls in {mf['seconds']} s over {len(mf['codes_by_method'])} "
                "methods (TwinMerge Infer/GetModelInfo/InferStream, KServe v2, health, Admin on "
                "its port, an unknown method): half random bytes, half mutated seeds from "
                "tests/fuzz/corpus.", "",
                "| server alive | health after | answers after | exit code | RSS before -> after "
                "(MB) | codes |", "|---|---|---|---|---|---|",
                f"| {yes_no(mf['alive'])} | {mf['health_after']} | "
                f"{yes_no(mf['answers_after'])} | {mf['exit_code']} | "
                f"{mf['rss_mb_before']:.0f} -> {mf['rss_mb_after'] or 0:.0f} | {codes} |", ""]
    c = report.get("corrupt")
    if c:
        out += ["### Corrupted versions", "",
                "A good version serves; each damaged copy of it is published as the new LATEST "
                "(reload polling every 300 ms), then LATEST goes back. The time is until "
                "`twin-client status` on the Admin port shows the failed load (each call costs "
                "about 0.5 s of client start), an upper bound of the server's own. Blob damage "
                "is tested with the blob's digest removed from the server's blob cache first: a "
                "digest the cache already holds verified is linked from there, and the store's "
                "copy is never read.", "",
                "| damage | refused | old version kept | answers | refusal seen after (s) | error |",
                "|---|---|---|---|---|---|"]
        for r in c["cases"]:
            err = r["error"].replace("|", "\\|")
            out.append(f"| {r['case']} | {yes_no(r['refused'])} | "
                       f"{yes_no(r['old_version_kept'])} | "
                       f"{yes_no(r['answers'])} | {r['seconds_to_refuse']:.2f} | "
                       f"{err} |")
        out.append("")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build")
    p.add_argument("--store")
    p.add_argument("--data")
    p.add_argument("--out_json")
    p.add_argument("--render")
    p.add_argument("--phases", default="sigterm,kill9,malformed,corrupt")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rate", type=float, default=400)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--malformed", type=int, default=100000)
    p.add_argument("--seeds", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", "..", "tests", "fuzz", "corpus"))
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.render:
        with open(args.render) as f:
            print(render(json.load(f)))
        return
    if not (args.build and args.store and args.data and args.out_json):
        p.error("--build, --store, --data and --out_json are required (or --render)")
    report = report_header("faults.py")
    phases = {"sigterm": phase_sigterm, "kill9": phase_kill9, "malformed": phase_malformed,
              "corrupt": phase_corrupt}
    with tempfile.TemporaryDirectory() as work:
        for name in args.phases.split(","):
            report[name] = phases[name](args, work)
    report["machine"]["load_after"] = list(os.getloadavg())
    with open(args.out_json, "w") as f:
        json.dump(report, f, indent=1)
    print(render(report))


if __name__ == "__main__":
    main()
