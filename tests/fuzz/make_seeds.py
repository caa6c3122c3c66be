#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz (corpus/<target>/): valid inputs of every shape each
parser accepts, and the hostile inputs that once crashed or stalled a parser (the regression
cases of the unit tests, smaller where size is not the point). Deterministic; standard library
only. corpus/manifest/full-zoo.json (a real manifest of the full zoo) is kept as it is, and the
manifest variants are derived from it.

  python3 tests/fuzz/make_seeds.py          # rewrites the generated seeds in place
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------- protobuf wire
def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint((field << 3) | wire)


def f_varint(field, n):
    return key(field, 0) + varint(n)


def f_bytes(field, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return key(field, 2) + varint(len(data)) + data


def f_float(field, x):
    return key(field, 5) + struct.pack("<f", x)


def f_double(field, x):
    return key(field, 1) + struct.pack("<d", x)


def packed(field, values, fmt=None):
    if fmt is None:
        body = b"".join(varint(v) for v in values)
    else:
        body = b"".join(struct.pack(fmt, v) for v in values)
    return f_bytes(field, body)


# ------------------------------------------------------------------------- infer_request
def token_input(ids, mask=None):
    body = packed(1, ids)
    if mask is not None:
        body += packed(2, mask)
    return body


def routing(top_k=None, temperature=None):
    body = b""
    if top_k is not None:
        body += f_varint(1, top_k)
    if temperature is not None:
        body += f_float(2, temperature)
    return body


def infer_request(request_id=None, text=None, tokens=None, task=None, route=None):
    body = b""
    if request_id is not None:
        body += f_bytes(1, request_id)
    if text is not None:
        body += f_bytes(2, text)
    if tokens is not None:
        body += f_bytes(3, tokens)
    if task is not None:
        body += f_bytes(4, task)
    if route is not None:
        body += f_bytes(5, route)
    return body


def infer_request_seeds():
    t = "infer_request"
    write(t, "text", infer_request("r1", text="hello, twin-server"))
    write(t, "text-task", infer_request("r2", text="route me", task="task1"))
    write(t, "tokens", infer_request(tokens=token_input([1, 5, 9, 12, 40])))
    write(t, "tokens-mask", infer_request(tokens=token_input([1, 7, 8, 0], [1, 1, 1, 0])))
    write(t, "top-k", infer_request(text="abc", route=routing(top_k=1, temperature=0.5)))
    write(t, "top-k-all", infer_request(text="abc", route=routing(top_k=3, temperature=2.0)))
    write(t, "empty", b"")
    write(t, "unknown-task", infer_request(text="x", task="no-such-task"))
    write(t, "negative-id", infer_request(tokens=token_input([1, -3, 4])))
    write(t, "id-past-vocab", infer_request(tokens=token_input([1, 1 << 40, 4])))
    write(t, "mask-length", infer_request(tokens=token_input([1, 2, 3], [1, 1])))
    write(t, "mask-values", infer_request(tokens=token_input([1, 2, 3], [1, 2, 1])))
    write(t, "all-masked", infer_request(tokens=token_input([1, 2, 3], [0, 0, 0])))
    write(t, "long-text", infer_request(text="x" * 5000))
    write(t, "long-tokens", infer_request(tokens=token_input([5] * 3000)))
    write(t, "nan-temperature", infer_request(text="a", route=routing(temperature=float("nan"))))
    write(t, "negative-temperature", infer_request(text="a", route=routing(temperature=-1.0)))
    write(t, "huge-top-k", infer_request(text="a", route=routing(top_k=(1 << 31) - 1)))
    write(t, "negative-top-k", infer_request(text="a", route=routing(top_k=-1)))
    write(t, "long-request-id", infer_request("i" * 300, text="a"))
    write(t, "invalid-utf8", infer_request(text=b"\xff\xfe\xc3("))


# -------------------------------------------------------------------------- kserve_codec
def parameter(kind, value):
    if kind == "bool":
        return f_varint(1, 1 if value else 0)
    if kind == "int64":
        return f_varint(2, value)
    if kind == "string":
        return f_bytes(3, value)
    if kind == "double":
        return f_double(4, value)
    if kind == "uint64":
        return f_varint(5, value)
    raise ValueError(kind)


def map_entry(field, name, value_bytes):
    return f_bytes(field, f_bytes(1, name) + f_bytes(2, value_bytes))


def contents(int64=None, int32=None, fp32=None, raw_bytes=None):
    body = b""
    if int32 is not None:
        body += packed(2, int32)
    if int64 is not None:
        body += packed(3, int64)
    if fp32 is not None:
        body += packed(6, fp32, "<f")
    if raw_bytes is not None:
        body += b"".join(f_bytes(8, b) for b in raw_bytes)
    return body


def tensor(name, datatype, shape, content=None, params=()):
    body = f_bytes(1, name) + f_bytes(2, datatype) + packed(3, shape)
    for pname, kind, value in params:
        body += map_entry(4, pname, parameter(kind, value))
    if content is not None:
        body += f_bytes(5, content)
    return body


def model_infer(inputs, outputs=(), params=(), raw=(), model="twin", request_id="req"):
    body = f_bytes(1, model) + f_bytes(3, request_id)
    for pname, kind, value in params:
        body += map_entry(4, pname, parameter(kind, value))
    for t in inputs:
        body += f_bytes(5, t)
    for o in outputs:
        body += f_bytes(6, f_bytes(1, o))
    for r in raw:
        body += f_bytes(7, r)
    return body


def le_bytes(values):
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def kserve_seeds():
    t = "kserve_codec"
    ids = [1, 5, 9, 12, 1, 7, 8, 0]
    write(t, "ids-typed", model_infer([tensor("input_ids", "INT64", [2, 4], contents(int64=ids))]))
    write(t, "ids-mask-typed", model_infer([
        tensor("input_ids", "INT64", [2, 4], contents(int64=ids)),
        tensor("attention_mask", "INT64", [2, 4], contents(int64=[1, 1, 1, 1, 1, 1, 1, 0]))]))
    write(t, "ids-int32", model_infer([tensor("input_ids", "INT32", [1, 3],
                                              contents(int32=[1, 2, 3]))]))
    write(t, "ids-raw", model_infer([tensor("input_ids", "INT64", [1, 3])],
                                    raw=[struct.pack("<3q", 1, 2, 3)]))
    write(t, "text-typed", model_infer([tensor("text", "BYTES", [2],
                                               contents(raw_bytes=[b"hello", b"world"]))],
                                       outputs=["label", "probabilities"]))
    write(t, "text-raw", model_infer([tensor("text", "BYTES", [2, 1])],
                                     raw=[le_bytes([b"hello", b"twin"])]))
    write(t, "params", model_infer(
        [tensor("text", "BYTES", [1], contents(raw_bytes=[b"x"]))],
        params=[("task", "string", "task0"), ("top_k", "int64", 2), ("temperature", "double", 0.7)]))
    write(t, "top-k-uint64", model_infer(
        [tensor("text", "BYTES", [1], contents(raw_bytes=[b"x"]))],
        params=[("top_k", "uint64", (1 << 64) - 1)]))
    write(t, "raw-outputs", model_infer([tensor("text", "BYTES", [1], contents(raw_bytes=[b"y"]))],
                                        outputs=["router_weights", "task", "label_index"]))
    write(t, "raw-in-raw-out", model_infer([tensor("text", "BYTES", [1])],
                                           raw=[le_bytes([b"raw"])], outputs=["label"]))
    write(t, "unknown-parameter", model_infer(
        [tensor("text", "BYTES", [1], contents(raw_bytes=[b"x"]))],
        params=[("binary_data_output", "bool", True)]))
    write(t, "unknown-output", model_infer([tensor("text", "BYTES", [1],
                                                   contents(raw_bytes=[b"y"]))],
                                           outputs=["nope"]))
    write(t, "shape-mismatch", model_infer([tensor("input_ids", "INT64", [2, 4],
                                                   contents(int64=[1, 2, 3]))]))
    write(t, "shape-overflow", model_infer([tensor("input_ids", "INT64", [1 << 40, 1 << 40],
                                                   contents(int64=[1]))]))
    write(t, "negative-shape", model_infer([tensor("input_ids", "INT64", [-1, 4],
                                                   contents(int64=[1, 2, 3, 4]))]))
    write(t, "raw-short", model_infer([tensor("input_ids", "INT64", [1, 3])],
                                      raw=[struct.pack("<2q", 1, 2)]))
    write(t, "bytes-prefix-past-end", model_infer([tensor("text", "BYTES", [1])],
                                                  raw=[struct.pack("<I", 1 << 31) + b"abc"]))
    write(t, "too-many-rows", model_infer([tensor("text", "BYTES", [40],
                                                  contents(raw_bytes=[b"r"] * 40))]))
    write(t, "ids-and-text", model_infer([
        tensor("input_ids", "INT64", [1, 1], contents(int64=[3])),
        tensor("text", "BYTES", [1], contents(raw_bytes=[b"x"]))]))
    write(t, "input-parameter", model_infer([tensor("text", "BYTES", [1],
                                                    contents(raw_bytes=[b"x"]),
                                                    params=[("binary_data_size", "int64", 5)])]))
    write(t, "empty", b"")


# ---------------------------------------------------------------------------- safetensors
def safetensors(header, data=b"", length=None):
    if isinstance(header, (dict, list)):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode("utf-8")
    n = len(header) if length is None else length
    return struct.pack("<Q", n) + header + data


def safetensors_seeds():
    t = "safetensors"
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)
    write(t, "valid-f32", safetensors(
        {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, f32))
    mixed = {
        "__metadata__": {"format": "pt", "task": "spam"},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "I64", "shape": [1], "data_offsets": [8, 16]},
        "c": {"dtype": "F16", "shape": [2], "data_offsets": [16, 20]},
        "d": {"dtype": "BF16", "shape": [2], "data_offsets": [20, 24]},
        "e": {"dtype": "BOOL", "shape": [2], "data_offsets": [24, 26]},
        "f": {"dtype": "I8", "shape": [2], "data_offsets": [26, 28]},
        "g": {"dtype": "U8", "shape": [0], "data_offsets": [28, 28]},
        "h": {"dtype": "F64", "shape": [], "data_offsets": [28, 36]},
        "i": {"dtype": "I32", "shape": [1], "data_offsets": [36, 40]},
    }
    data = (struct.pack("<2f", 1.5, 2.5) + struct.pack("<q", 7) + struct.pack("<2e", 1.0, -1.0)
            + b"\x80\x3f\x00\x40" + b"\x01\x00" + b"\x7f\x80" + struct.pack("<d", 3.0)
            + struct.pack("<i", -5))
    write(t, "valid-mixed", safetensors(mixed, data))
    write(t, "empty-header", safetensors("{}"))
    write(t, "padded-header", safetensors('{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
                                          + " " * 7, b"\x09"))
    write(t, "truncated-data", safetensors(
        {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, f32[:13]))
    write(t, "length-past-end", struct.pack("<Q", 100) + b"{}        ")
    write(t, "length-huge", struct.pack("<Q", (1 << 64) - 1))
    write(t, "short-prefix", b"\x02\x00\x00\x00\x00")
    write(t, "overlap", safetensors(
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', b"\x00" * 12))
    write(t, "gap", safetensors(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', b"\x00" * 12))
    write(t, "duplicate-name", safetensors(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', b"\x00" * 8))
    write(t, "duplicate-field", safetensors(
        '{"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\x00" * 8))
    write(t, "shape-overflow", safetensors(
        {"w": {"dtype": "F32", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 4]}}, b"\x00" * 4))
    write(t, "negative-shape", safetensors(
        '{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', b"\x00" * 4))
    write(t, "bad-dtype", safetensors(
        '{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', b"\x00" * 16))
    write(t, "bool-invalid-byte", safetensors(
        '{"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}', b"\x01\x02"))
    write(t, "metadata-not-string", safetensors(
        '{"__metadata__":{"step":3},"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}', b"\x00"))
    write(t, "not-json", safetensors("{\"w\": [1, 2,", b""))
    # Hostile headers of issue 17 (the unit tests keep the full-size versions): a shape nested
    # far past any valid header, and a wide array of empty objects.
    levels = 20000
    write(t, "deep-shape", safetensors(
        '{"x":{"dtype":"F32","shape":' + "[" * levels + "]" * levels
        + ',"data_offsets":[0,0]}}'))
    write(t, "wide-array", safetensors('{"x":[' + ",".join(["{}"] * 20000) + "]}"))
    many = ",".join('"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % (2000 - i)
                    for i in range(2000))
    write(t, "many-tensors", safetensors("{" + many + "}"))


# ------------------------------------------------------------------------------ manifest
def manifest_seeds():
    t = "manifest"
    with open(os.path.join(CORPUS, t, "full-zoo.json"), encoding="utf-8") as f:
        text = f.read()
    base = json.loads(text)
    write(t, "compact.json", json.dumps(base, separators=(",", ":")))
    v = json.loads(text)
    v["version"] = "other"
    write(t, "other-version.json", json.dumps(v))
    v = json.loads(text)
    v["future_field"] = {"kept": [1, 2, 3]}
    write(t, "unknown-field.json", json.dumps(v))
    v = json.loads(text)
    v["router"]["spec"]["num_hidden_layers"] = 1 << 50
    write(t, "router-huge.json", json.dumps(v))
    v = json.loads(text)
    v["schema_version"] = 99
    write(t, "future-schema.json", json.dumps(v))
    v = json.loads(text)
    del v["blobs"]
    write(t, "no-blobs.json", json.dumps(v))
    write(t, "duplicate-key.json", '{"version": "other",' + text.lstrip()[1:])
    anchor = '"parameters": {'
    at = text.find(anchor)
    levels = 10000
    deep = "{\"a\":" * levels + "1" + "}" * levels + ","
    write(t, "deep-parameters.json", text[:at + len(anchor)] + '"deep": ' + deep
          + text[at + len(anchor):])
    write(t, "array.json", "[1, 2]")
    write(t, "garbage.json", "not json at all {")
    write(t, "nan.json", text.replace('"lambda": 0.3', '"lambda": NaN'))
    write(t, "big-number.json", text.replace('"lambda": 0.3', '"lambda": 1e400'))


# ------------------------------------------------------------------------------- s3_xml
def s3_xml_seeds():
    t = "s3_xml"
    write(t, "list-page.xml", """<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix>twin/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents><Key>twin/v1/manifest.json</Key><Size>30866</Size><ETag>&quot;abc&quot;</ETag></Contents>
  <Contents><Key>twin/v1/shared &amp; more.safetensors</Key><Size>7421704</Size></Contents>
</ListBucketResult>""")
    write(t, "list-last.xml", "<ListBucketResult><IsTruncated>false</IsTruncated>"
          "<Contents><Key>a</Key><Size>0</Size></Contents></ListBucketResult>")
    write(t, "error.xml", """<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>
<Key>twin/v1/manifest.json</Key><RequestId>4442587FB7D0A2F9</RequestId></Error>""")
    write(t, "upload.xml", "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
          "<UploadId>VXBsb2FkIElE</UploadId></InitiateMultipartUploadResult>")
    write(t, "entities.xml", "<a>&lt;&gt;&amp;&quot;&apos;&#65;&#x1F600;&#x10FFFF;</a>")
    write(t, "cdata-comment.xml", "<?xml version='1.0'?><!-- c --><a><![CDATA[<raw>]]>"
          "<?pi x?><b attr='1'/><s3:c xmlns:s3='u'>t</s3:c></a>")
    write(t, "mismatched.xml", "<a><b></a></b>")
    write(t, "unclosed.xml", "<ListBucketResult><Contents><Key>a</Key>")
    write(t, "bad-entity.xml", "<a>&bogus; &#xZZ; &#99999999999;</a>")
    write(t, "deep.xml", "<a>" * 5000 + "</a>" * 5000)
    write(t, "size-not-number.xml", "<ListBucketResult><Contents><Key>a</Key><Size>-1e9</Size>"
          "</Contents></ListBucketResult>")
    write(t, "truncated-no-token.xml", "<ListBucketResult><IsTruncated>true</IsTruncated>"
          "</ListBucketResult>")


# -------------------------------------------------------------------------------- configs
def server_config_seeds(root):
    t = "server_config"
    with open(os.path.join(root, "deploy", "docker", "server.yaml"), encoding="utf-8") as f:
        write(t, "docker.yaml", f.read())
    write(t, "full.yaml", """listen_address: 0.0.0.0:50051
metrics_address: 0.0.0.0:9090
admin: {listen_address: 127.0.0.1:50052, token_file: /var/run/twin/admin-token}
artifact_uri: s3://bucket/prefix
artifact_version: LATEST
cache_dir: /var/cache/twin
device: cpu
intra_op_threads: 2
workers: 1
batching: {max_batch_size: 16, max_queue_delay_us: 2000, max_queue_size: 1024,
           deadline_admission: true}
cache: {capacity_bytes: 1073741824, policy: fuse, background_fusion: true,
        max_fusions_per_s: 4, max_nearest_distance: 0.5}
cluster_key: {top_k: 2, grid: 10}
routing: {max_top_k: 3, default_temperature: 1.0, min_temperature: 0.05,
          max_temperature: 20, task_given: task}
limits: {max_input_length: 512, max_in_flight_per_client: 64, max_stream_in_flight: 32,
         max_message_bytes: 4194304, max_request_id_bytes: 128, max_text_bytes: 65536}
tls: {cert_file: /etc/twin/tls/tls.crt, key_file: /etc/twin/tls/tls.key,
      client_ca_file: /etc/twin/tls/ca.crt, refresh_interval_s: 60}
serving: {mode: experts, experts: {spam: /m/spam.pt, lang: /m/lang.pt}}
kserve: {model_name: twin, max_rows: 64}
reload: {poll_interval_ms: 30000, retry_interval_ms: 2000, keep_versions: 2,
         warm_cache_keys: 16}
max_connection_age_ms: 300000
drain_grace_ms: 1000
drain_timeout_ms: 30000
warmup_requests: 4
log_level: info
""")
    write(t, "empty.yaml", "")
    write(t, "unknown-key.yaml", "listen_adress: 0.0.0.0:1\n")
    write(t, "wrong-type.yaml", "workers: many\nbatching: [1, 2]\n")
    write(t, "negative.yaml", "workers: -4\nbatching: {max_batch_size: -1}\n")
    write(t, "sequence-key.yaml", "{[a]: 1}\n")
    write(t, "mapping-key.yaml", "batching: {{x: 1}: 2}\n")
    write(t, "deep.yaml", "listen_address: " + "[" * 20000 + "]" * 20000 + "\n")
    write(t, "anchors.yaml", "a: &x {b: *x}\n")
    write(t, "tabs-and-bom.yaml", "\ufefflisten_address:\t'0.0.0.0:1'\n")


def merge_config_seeds(root):
    t = "merge_config"
    write(t, "zoo.yaml", """merge_method: task_arithmetic
base_model: base.pt
models:
  - model: lang.pt
    name: lang
    labels: ["cs", "de", "en"]
    router_data: lang.router.safetensors
  - model: spam.pt
    name: spam
    labels: ["ham", "spam"]
    router_data: spam.router.safetensors
parameters: {lambda: 0.3}
tokenizer: {type: bytes, max_length: 128, pad_id: 0, bos_id: 1, offset: 4}
twin: {rank_policy: ratio, ratio: 0.1}
router: {hidden_dim: 256, max_epochs: 100, patience: 10, max_examples_per_task: 6000,
         features: auto, balance_tasks: true}
output: file:///data/store
seed: 7
""")
    write(t, "ties.yaml", """merge_method: ties
base_model: /m/base.pt
models:
  - {model: /m/a.pt, router_data: /m/a.txt}
  - {model: /m/b.pt, router_data: /m/b.txt}
parameters: {density: 0.2, lambda: 1.0}
twin: {rank_policy: energy, energy: 0.9}
version: v1
""")
    write(t, "dare-budget.yaml", """merge_method: dare_ties
base_model: b.pt
models: [{model: a.pt, router_data: a.txt}, {model: c.pt, router_data: c.txt}]
parameters: {drop_rate: 0.9}
twin: {rank_policy: budget, budget_bytes: 1000000}
router: {features: ngram, ngram: {max_order: 3, buckets: 4096}}
""")
    write(t, "one-model.yaml", "base_model: b.pt\nmodels:\n  - {model: a.pt, router_data: a.txt}\n")
    write(t, "bad-seed.yaml", "base_model: b.pt\nmodels: [{model: a.pt, router_data: a.txt},"
          " {model: c.pt, router_data: c.txt}]\nseed: lots\n")
    write(t, "sequence-key.yaml", "{[a]: 1}\n")
    write(t, "mapping-key-in-model.yaml",
          "base_model: b.pt\nmodels:\n  - {model: a.pt, router_data: a.txt, {x: 1}: 2}\n"
          "  - {model: c.pt, router_data: c.txt}\n")
    write(t, "deep.yaml", "base_model: " + "[" * 20000 + "]" * 20000 + "\n")
    write(t, "rank-huge.yaml", "base_model: b.pt\nmodels: [{model: a.pt, router_data: a.txt},"
          " {model: c.pt, router_data: c.txt}]\ntwin: {rank_policy: rank, rank: 99999999999}\n")


# ------------------------------------------------------------------------------ tokenizer
def tokenizer_seed(max_length, pad_id, bos_id, offset, texts):
    head = struct.pack("<4i", max_length, pad_id, bos_id, offset)
    return head + b"\x00".join(texts)


def tokenizer_seeds():
    t = "tokenizer"
    write(t, "zoo", tokenizer_seed(128, 0, 1, 4, [b"hello", "Grüße, 世界".encode(), b""]))
    write(t, "no-bos", tokenizer_seed(8, 0, -1, 4, [b"truncated past eight bytes", b"ab"]))
    write(t, "all-bytes", tokenizer_seed(300, 0, 1, 4, [bytes(range(256))]))
    write(t, "offset-zero", tokenizer_seed(16, 300, 299, 0, [b"\x00\x01\xff"]))
    write(t, "pad-collides", tokenizer_seed(16, 10, 1, 4, [b"x"]))
    write(t, "short-max", tokenizer_seed(1, 0, 1, 4, [b"x"]))
    write(t, "huge-offset", tokenizer_seed(16, 0, 1, 0x7FFFFFFF, [b"x"]))
    write(t, "negative", tokenizer_seed(16, -1, -2, -3, [b"x"]))
    write(t, "many-rows", tokenizer_seed(4, 0, 1, 4, [b"r"] * 200))


def main():
    root = os.path.dirname(os.path.dirname(HERE))
    infer_request_seeds()
    kserve_seeds()
    safetensors_seeds()
    manifest_seeds()
    s3_xml_seeds()
    server_config_seeds(root)
    merge_config_seeds(root)
    tokenizer_seeds()
    total = 0
    for dirpath, _, files in os.walk(CORPUS):
        for name in files:
            total += os.path.getsize(os.path.join(dirpath, name))
    print("seeds written under %s (%d bytes)" % (CORPUS, total))


if __name__ == "__main__":
    main()
