"""An independent Open Inference Protocol client against a running twin-server.

Started by tests/kserve/run.sh, which builds the artifacts, starts the server and puts stubs
generated from proto/ on PYTHONPATH. Environment: KSERVE_ADDRESS (host:port),
KSERVE_SERVER_PID (to notice a crashed server), KSERVE_READY_TIMEOUT_S.

Every RPC is called, inputs go in both typed and raw form, answers are checked against the
twinmerge.v1 service on the same port, and every protocol error is checked for its code and
message.
"""

import math
import os
import struct
import time
import unittest

import grpc

from inference import grpc_predict_v2_pb2 as pb
from inference import grpc_predict_v2_pb2_grpc as pb_grpc
from twinmerge.v1 import twinmerge_pb2 as twin_pb
from twinmerge.v1 import twinmerge_pb2_grpc as twin_grpc

MODEL = "twin-merging"
VERSION = "v1"
TASKS = ["task0", "task1", "task2"]
RPC_TIMEOUT_S = 30

# Token rows of one length (ids < the zoo's vocabulary of 288); row 1 ends in padding.
ROWS = [[3, 40, 41, 42, 43, 7], [100, 101, 102, 103, 0, 0], [200, 201, 5, 210, 220, 230]]
MASKS = [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
TEXTS = ["hello there", "the quick brown fox", "x"]


def pack_int64(values):
    return struct.pack("<%dq" % len(values), *values)


def pack_bytes(items):
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def flatten(rows):
    return [v for row in rows for v in row]


def unpack_output(response, index):
    """(name, datatype, shape, values) of output `index`, from typed or raw form."""
    out = response.outputs[index]
    shape = list(out.shape)
    if not response.raw_output_contents:
        c = out.contents
        values = {"FP32": list(c.fp32_contents), "INT64": list(c.int64_contents),
                  "BYTES": list(c.bytes_contents)}[out.datatype]
        return out.name, out.datatype, shape, values
    raw = response.raw_output_contents[index]
    if out.datatype == "FP32":
        values = list(struct.unpack("<%df" % (len(raw) // 4), raw))
    elif out.datatype == "INT64":
        values = list(struct.unpack("<%dq" % (len(raw) // 8), raw))
    else:
        values, at = [], 0
        while at < len(raw):
            (n,) = struct.unpack_from("<I", raw, at)
            values.append(raw[at + 4:at + 4 + n])
            at += 4 + n
    return out.name, out.datatype, shape, values


FLOAT32_UNIT = 2.0 ** -24  # unit roundoff of IEEE binary32
ROUNDING_LAMBDA = 6.0


def float32_probability_bound(probabilities, depth=12, width=128):
    """Bound on the change of a probability between two float32 evaluations of the served
    chain (router features, router, fusion, forward: about `depth` stages of inner products of
    at most `width` terms; tests/testing/rounding.h derives it): lambda sqrt(width) u per stage
    and side, relative to the logits' size (their spread, at most the largest |log p|, plus 1),
    halved by the softmax."""
    spread = max([-math.log(max(p, 1e-30)) for p in probabilities] + [0.0])
    return 0.5 * 2 * depth * ROUNDING_LAMBDA * math.sqrt(width) * FLOAT32_UNIT * (1 + spread)


def outputs_by_name(response):
    return {name: (dtype, shape, values)
            for name, dtype, shape, values in
            (unpack_output(response, i) for i in range(len(response.outputs)))}


def tokens_request(rows=ROWS, masks=MASKS, raw=False, **params):
    request = pb.ModelInferRequest(model_name=MODEL)
    shape = [len(rows), len(rows[0])]
    ids = request.inputs.add(name="input_ids", datatype="INT64", shape=shape)
    mask = request.inputs.add(name="attention_mask", datatype="INT64", shape=shape)
    if raw:
        request.raw_input_contents.append(pack_int64(flatten(rows)))
        request.raw_input_contents.append(pack_int64(flatten(masks)))
    else:
        ids.contents.int64_contents.extend(flatten(rows))
        mask.contents.int64_contents.extend(flatten(masks))
    set_params(request, **params)
    return request


def text_request(texts=TEXTS, raw=False, **params):
    request = pb.ModelInferRequest(model_name=MODEL)
    text = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    encoded = [t.encode() for t in texts]
    if raw:
        request.raw_input_contents.append(pack_bytes(encoded))
    else:
        text.contents.bytes_contents.extend(encoded)
    set_params(request, **params)
    return request


def set_params(request, **params):
    for key, value in params.items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
        elif isinstance(value, int):
            request.parameters[key].int64_param = value
        elif isinstance(value, float):
            request.parameters[key].double_param = value
        else:
            request.parameters[key].string_param = value


class KServeClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.channel = grpc.insecure_channel(os.environ["KSERVE_ADDRESS"])
        cls.stub = pb_grpc.GRPCInferenceServiceStub(cls.channel)
        cls.twin = twin_grpc.TwinMergeStub(cls.channel)
        deadline = time.time() + float(os.environ.get("KSERVE_READY_TIMEOUT_S", "120"))
        pid = int(os.environ.get("KSERVE_SERVER_PID", "0"))
        while True:
            try:
                if cls.stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready:
                    return
            except grpc.RpcError:
                pass
            if pid:
                os.kill(pid, 0)  # raises if the server has died
            if time.time() > deadline:
                raise RuntimeError("twin-server did not become ready")
            time.sleep(0.2)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()

    def infer(self, request):
        return self.stub.ModelInfer(request, timeout=RPC_TIMEOUT_S)

    def reference(self, row=None, mask=None, text=None, task="", top_k=0, temperature=0.0):
        request = twin_pb.InferRequest(task=task)
        if text is not None:
            request.text = text
        else:
            request.tokens.input_ids.extend(row)
            request.tokens.attention_mask.extend(mask)
        request.routing.top_k = top_k
        request.routing.temperature = temperature
        return self.twin.Infer(request, timeout=RPC_TIMEOUT_S)

    def assert_error(self, request, code, needle):
        with self.assertRaises(grpc.RpcError) as caught:
            self.infer(request)
        self.assertEqual(caught.exception.code(), code, caught.exception.details())
        self.assertIn(needle, caught.exception.details())

    def assert_outputs_close(self, a, b):
        """Same outputs; floats within the float32 rounding bound. The rows of two requests
        may be batched with different neighbours (so padded to other lengths), which moves the
        last float bits: see float32_probability_bound."""
        out_a, out_b = outputs_by_name(a), outputs_by_name(b)
        self.assertEqual(sorted(out_a), sorted(out_b))
        for name in out_a:
            dtype, shape, values = out_a[name]
            self.assertEqual((dtype, shape), out_b[name][:2], name)
            if dtype.startswith("FP"):
                self.assertEqual(len(values), len(out_b[name][2]), name)
                bound = float32_probability_bound(values)
                for x, y in zip(values, out_b[name][2]):
                    self.assertLessEqual(abs(x - y), bound, msg=name)
            else:
                self.assertEqual(values, out_b[name][2], name)

    def assert_matches_reference(self, response, references):
        out = outputs_by_name(response)
        _, shape, probs = out["probabilities"]
        classes = shape[1]
        self.assertEqual(shape, [len(references), classes])
        self.assertEqual(classes, max(len(r.probabilities) for r in references))
        for b, ref in enumerate(references):
            want = list(ref.probabilities) + [0.0] * (classes - len(ref.probabilities))
            for got, expected in zip(probs[b * classes:(b + 1) * classes], want):
                self.assertAlmostEqual(got, expected, places=5)
            self.assertEqual(out["label_index"][2][b], ref.label_index)
            self.assertEqual(out["label"][2][b], ref.label.encode())
            self.assertEqual(out["task"][2][b], ref.task.encode())
            weights = out["router_weights"][2][b * len(TASKS):(b + 1) * len(TASKS)]
            for w in ref.router_weights:
                self.assertAlmostEqual(weights[TASKS.index(w.task)], w.weight, places=6)
            self.assertAlmostEqual(sum(weights), 1.0, places=5)

    # --- health and metadata -------------------------------------------------------------

    def test_server_live_and_ready(self):
        self.assertTrue(self.stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live)
        self.assertTrue(self.stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready)

    def test_model_ready(self):
        ready = self.stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=5)
        self.assertTrue(ready.ready)
        ready = self.stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version=VERSION), timeout=5)
        self.assertTrue(ready.ready)
        for request, needle in [(pb.ModelReadyRequest(name="bert"), "unknown model 'bert'"),
                                (pb.ModelReadyRequest(name=MODEL, version="v0"),
                                 "no version 'v0'")]:
            with self.assertRaises(grpc.RpcError) as caught:
                self.stub.ModelReady(request, timeout=5)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
            self.assertIn(needle, caught.exception.details())

    def test_server_metadata(self):
        meta = self.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)
        self.assertEqual(meta.name, "twin-server")
        self.assertRegex(meta.version, r"^\d+\.\d+\.\d+")

    def test_model_metadata(self):
        meta = self.stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=5)
        self.assertEqual(meta.name, MODEL)
        self.assertEqual(list(meta.versions), [VERSION])
        self.assertEqual(meta.platform, "pytorch_libtorch")
        inputs = {t.name: (t.datatype, list(t.shape)) for t in meta.inputs}
        self.assertEqual(inputs, {"input_ids": ("INT64", [-1, -1]),
                                  "attention_mask": ("INT64", [-1, -1]),
                                  "text": ("BYTES", [-1])})
        outputs = {t.name: (t.datatype, list(t.shape)) for t in meta.outputs}
        self.assertEqual(outputs, {"probabilities": ("FP32", [-1, -1]),
                                   "router_weights": ("FP32", [-1, len(TASKS)]),
                                   "label_index": ("INT64", [-1]),
                                   "label": ("BYTES", [-1]),
                                   "task": ("BYTES", [-1])})
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL, version="v2"), timeout=5)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)

    # --- inference -----------------------------------------------------------------------

    def test_typed_tokens_match_the_twinmerge_service(self):
        response = self.infer(tokens_request(task="task1"))
        self.assertEqual(response.model_name, MODEL)
        self.assertEqual(response.model_version, VERSION)
        self.assertFalse(response.raw_output_contents)
        self.assertEqual([o.name for o in response.outputs],
                         ["probabilities", "router_weights", "label_index", "label", "task"])
        refs = [self.reference(r, m, task="task1") for r, m in zip(ROWS, MASKS)]
        self.assert_matches_reference(response, refs)
        # Every row answered by task1: the shared task is a response parameter.
        self.assertEqual(response.parameters["task"].string_param, "task1")

    def test_raw_tokens_are_answered_raw_with_the_same_values(self):
        typed = self.infer(tokens_request())
        raw = self.infer(tokens_request(raw=True))
        self.assertEqual(len(raw.raw_output_contents), len(raw.outputs))
        for o in raw.outputs:
            self.assertFalse(o.HasField("contents"))
        self.assert_outputs_close(typed, raw)
        refs = [self.reference(r, m) for r, m in zip(ROWS, MASKS)]
        self.assert_matches_reference(raw, refs)

    def test_text_typed_and_raw(self):
        typed = self.infer(text_request(top_k=2, temperature=2.0))
        raw = self.infer(text_request(raw=True, top_k=2, temperature=2.0))
        self.assertTrue(raw.raw_output_contents)
        self.assert_outputs_close(typed, raw)
        refs = [self.reference(text=t, top_k=2, temperature=2.0) for t in TEXTS]
        self.assert_matches_reference(raw, refs)

    def test_single_row_reports_task_label_cluster_key_and_cache_hit(self):
        request = tokens_request(rows=[ROWS[2]], masks=[MASKS[2]], raw=True, task="task2",
                                 top_k=1)
        request.id = "one-row"
        first = self.infer(request)
        second = self.infer(request)
        self.assertEqual(second.id, "one-row")
        ref = self.reference(ROWS[2], MASKS[2], task="task2", top_k=1)
        params = second.parameters
        self.assertEqual(params["task"].string_param, "task2")
        self.assertEqual(params["label"].string_param, ref.label)
        self.assertEqual(params["cluster_key"].string_param, ref.cluster_key)
        self.assertEqual(first.parameters["cluster_key"].string_param, ref.cluster_key)
        self.assertTrue(params["cache_hit"].bool_param)
        # top_k = 1 keeps one router weight.
        weights = outputs_by_name(second)["router_weights"][2]
        self.assertEqual(sorted(weights), [0.0, 0.0, 1.0])

    def test_requested_outputs_come_in_the_requested_order(self):
        request = text_request(texts=["abc"])
        request.outputs.add(name="label")
        request.outputs.add(name="probabilities")
        response = self.infer(request)
        self.assertEqual([o.name for o in response.outputs], ["label", "probabilities"])

    # --- errors --------------------------------------------------------------------------

    def test_unknown_model_and_version_are_not_found(self):
        request = tokens_request()
        request.model_name = "resnet50"
        self.assert_error(request, grpc.StatusCode.NOT_FOUND, "unknown model 'resnet50'")
        request = tokens_request()
        request.model_version = "v42"
        self.assert_error(request, grpc.StatusCode.NOT_FOUND, "no version 'v42'")

    def test_wrong_datatype(self):
        request = tokens_request()
        request.inputs[0].datatype = "INT32"
        self.assert_error(request, grpc.StatusCode.INVALID_ARGUMENT,
                          "'input_ids' has datatype 'INT32'; expected INT64")
        request = text_request()
        request.inputs[0].datatype = "FP32"
        self.assert_error(request, grpc.StatusCode.INVALID_ARGUMENT, "expected BYTES")

    def test_wrong_shape(self):
        request = tokens_request()
        del request.inputs[1].shape[:]
        request.inputs[1].shape.extend([3, 5])
        self.assert_error(request, grpc.StatusCode.INVALID_ARGUMENT,
                          "'attention_mask' has shape [3, 5] but 'input_ids' has [3, 6]")
        request = tokens_request()
        request.inputs[0].shape[1] = 7
        self.assert_error(request, grpc.StatusCode.INVALID_ARGUMENT, "shape [3, 7] needs 21")
        request = tokens_request(raw=True)
        request.raw_input_contents[0] = request.raw_input_contents[0][:-8]
        self.assert_error(request, grpc.StatusCode.INVALID_ARGUMENT, "has 136 bytes")

    def test_mixing_raw_and_typed_contents(self):
        request = tokens_request()
        request.raw_input_contents.append(pack_int64(flatten(ROWS)))
        request.raw_input_contents.append(pack_int64(flatten(MASKS)))
        self.assert_error(request, grpc.StatusCode.INVALID_ARGUMENT,
                          "use one form for every input")

    def test_missing_inputs(self):
        request = pb.ModelInferRequest(model_name=MODEL)
        self.assert_error(request, grpc.StatusCode.INVALID_ARGUMENT, "missing input")
        request = tokens_request()
        del request.inputs[0]
        self.assert_error(request, grpc.StatusCode.INVALID_ARGUMENT,
                          "'attention_mask' needs input 'input_ids'")
        request = tokens_request(raw=True)
        del request.raw_input_contents[1]
        self.assert_error(request, grpc.StatusCode.INVALID_ARGUMENT,
                          "raw_input_contents has 1 entries but the request has 2 inputs")

    def test_bad_parameters(self):
        self.assert_error(tokens_request(priority=3), grpc.StatusCode.INVALID_ARGUMENT,
                          "unknown parameter 'priority'")
        self.assert_error(tokens_request(task="nope"), grpc.StatusCode.INVALID_ARGUMENT,
                          "unknown task 'nope'")
        self.assert_error(tokens_request(top_k=9), grpc.StatusCode.INVALID_ARGUMENT, "top_k")
        self.assert_error(tokens_request(temperature=-1.0), grpc.StatusCode.INVALID_ARGUMENT,
                          "temperature")

    def test_server_keeps_serving_after_errors(self):
        self.assert_error(tokens_request(task="nope"), grpc.StatusCode.INVALID_ARGUMENT, "nope")
        self.assertTrue(self.infer(tokens_request()).outputs)


if __name__ == "__main__":
    unittest.main()
