"""Independent clients against a running twin-server (started by tests/integration/run.sh).

A Python gRPC client with stubs generated from proto/ calls the health service, Infer,
GetModelInfo and Admin; a new version published while serving must be hot-reloaded; a real
Prometheus scraping the server must report the traffic, cache and reload metrics.

Environment: TWIN_ADDRESS, TWIN_SERVER_PID, PROMETHEUS_URL, TWIN_READY_TIMEOUT_S, TWIN_MERGE and
TWIN_MERGE_CONFIG (to publish new versions).
"""

import json
import os
import subprocess
import time
import unittest
import urllib.parse
import urllib.request

import grpc

from twin_health import health_pb2, health_pb2_grpc
from twinmerge.v1 import admin_pb2, admin_pb2_grpc
from twinmerge.v1 import twinmerge_pb2 as pb
from twinmerge.v1 import twinmerge_pb2_grpc as pb_grpc

TASKS = ["task0", "task1", "task2"]
RPC_TIMEOUT_S = 30
TEXTS = ["hello there", "the quick brown fox", "x", "lorem ipsum dolor"]


def server_alive():
    try:
        os.kill(int(os.environ["TWIN_SERVER_PID"]), 0)
        return True
    except OSError:
        return False


def wait_until(predicate, what, timeout_s=None):
    deadline = time.time() + (timeout_s or float(os.environ.get("TWIN_READY_TIMEOUT_S", "120")))
    last = None
    while time.time() < deadline:
        if not server_alive():
            raise AssertionError("twin-server exited while waiting for " + what)
        try:
            last = predicate()
            if last:
                return last
        except grpc.RpcError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def publish(version):
    subprocess.run([os.environ["TWIN_MERGE"], "--config", os.environ["TWIN_MERGE_CONFIG"],
                    "--version", version, "--threads", "1", "--quiet"], check=True)


def prometheus_value(query):
    url = os.environ["PROMETHEUS_URL"] + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise AssertionError("prometheus query %s failed: %s" % (query, body))
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


class ServerClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.channel = grpc.insecure_channel(os.environ["TWIN_ADDRESS"])
        cls.infer = pb_grpc.TwinMergeStub(cls.channel)
        # Admin listens on its own (loopback) address, apart from inference.
        cls.admin_channel = grpc.insecure_channel(os.environ["TWIN_ADMIN_ADDRESS"])
        cls.admin = admin_pb2_grpc.AdminStub(cls.admin_channel)
        cls.health = health_pb2_grpc.HealthStub(cls.channel)

        def serving():
            r = cls.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            return r.status == health_pb2.HealthCheckResponse.SERVING
        wait_until(serving, "health SERVING")

    def status(self):
        return self.admin.GetServingStatus(admin_pb2.GetServingStatusRequest(),
                                           timeout=RPC_TIMEOUT_S)

    def infer_text(self, text, task=""):
        return self.infer.Infer(pb.InferRequest(text=text, task=task, request_id="py-" + text),
                                timeout=RPC_TIMEOUT_S)

    def test_1_health_for_the_service_name(self):
        r = self.health.Check(health_pb2.HealthCheckRequest(service="twinmerge.v1.TwinMerge"),
                              timeout=RPC_TIMEOUT_S)
        self.assertEqual(r.status, health_pb2.HealthCheckResponse.SERVING)
        with self.assertRaises(grpc.RpcError) as e:
            self.health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"),
                              timeout=RPC_TIMEOUT_S)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_2_model_info_and_infer(self):
        info = self.infer.GetModelInfo(pb.GetModelInfoRequest(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(info.artifact_version, "v1")
        self.assertEqual([t.name for t in info.tasks], TASKS)
        for i in range(30):
            text = TEXTS[i % len(TEXTS)]
            task = TASKS[i % len(TASKS)] if i % 2 else ""
            r = self.infer_text(text, task)
            self.assertEqual(r.request_id, "py-" + text)
            self.assertEqual(r.artifact_version, "v1")
            self.assertIn(r.task, TASKS)
            if task:
                self.assertEqual(r.task, task)
            labels = info.tasks[TASKS.index(r.task)].labels
            self.assertEqual(len(r.probabilities), len(labels))
            self.assertAlmostEqual(sum(r.probabilities), 1.0, places=4)
            self.assertEqual(r.label, labels[r.label_index])
            self.assertAlmostEqual(sum(w.weight for w in r.router_weights), 1.0, places=4)
        # Token input, and a bad request with its code.
        r = self.infer.Infer(pb.InferRequest(tokens=pb.TokenInput(input_ids=[5, 6, 7]),
                                             task="task1"), timeout=RPC_TIMEOUT_S)
        self.assertEqual(r.task, "task1")
        with self.assertRaises(grpc.RpcError) as e:
            self.infer_text("hello", task="no-such-task")
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("no-such-task", e.exception.details())

    def test_3_admin_status(self):
        s = self.status()
        self.assertEqual(s.version, "v1")
        self.assertTrue(s.serving)
        self.assertEqual(s.target, "LATEST")
        self.assertEqual(s.reloads, 1)
        self.assertEqual(s.last_error, "")

    def test_4_hot_reload_of_a_new_version(self):
        publish("v2")
        wait_until(lambda: self.status().version == "v2", "the server to follow LATEST to v2")
        self.assertEqual(self.infer_text("after reload").artifact_version, "v2")
        # An explicit version pins it (a rollback), "" follows LATEST again.
        r = self.admin.Reload(admin_pb2.ReloadRequest(version="v1"), timeout=120)
        self.assertEqual((r.previous_version, r.version, r.changed), ("v2", "v1", True))
        self.assertEqual(self.status().target, "v1")
        self.assertEqual(self.infer_text("pinned").artifact_version, "v1")
        with self.assertRaises(grpc.RpcError) as e:
            self.admin.Reload(admin_pb2.ReloadRequest(version="v99"), timeout=120)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("v99", e.exception.details())
        self.assertEqual(self.status().version, "v1")
        r = self.admin.Reload(admin_pb2.ReloadRequest(version=""), timeout=120)
        self.assertEqual(r.version, "v2")
        self.assertEqual(self.status().target, "LATEST")

    def test_5_prometheus_scraped_the_metrics(self):
        def settled(query, want):
            """Waits until Prometheus's value for `query` satisfies `want`, returns it."""
            holder = []

            def check():
                value = prometheus_value(query)
                holder[:] = [value]
                return value is not None and want(value)
            try:
                wait_until(check, "Prometheus: " + query, timeout_s=60)
            except AssertionError as e:
                targets = urllib.request.urlopen(os.environ["PROMETHEUS_URL"] + "/api/v1/targets",
                                                 timeout=10).read().decode()
                raise AssertionError("%s; last value %r; targets: %s" % (e, holder, targets))
            return holder[0]

        # 30 text requests and 1 token request in test_2, 2 more in test_4.
        self.assertEqual(settled('sum(twin_requests_total{code="OK"})', lambda v: v >= 33), 33)
        self.assertEqual(settled('sum(twin_requests_total{code="INVALID_ARGUMENT"})',
                                 lambda v: v >= 1), 1)
        self.assertGreater(settled("twin_cache_hits_total + twin_cache_misses_total",
                                   lambda v: v > 0), 0)
        self.assertEqual(settled('up{job="twin-server"}', lambda v: v == 1), 1)
        # v1 at start, then v2, v1 (pinned), v2 (LATEST again).
        self.assertEqual(settled('twin_reloads_total{outcome="loaded"}', lambda v: v >= 4), 4)
        self.assertEqual(settled("twin_reload_failures_total", lambda v: v >= 1), 1)
        self.assertEqual(settled('twin_artifact_info{version="v2"}', lambda v: v == 1), 1)
        self.assertEqual(settled('twin_ready', lambda v: v == 1), 1)

if __name__ == "__main__":
    unittest.main()
