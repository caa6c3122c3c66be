#!/usr/bin/python3
"""Reference Twin-Merging compression, for the merge benchmark.

The algorithm as the paper's code runs it: load the base and every expert whole, task
arithmetic theta* = theta0 + lambda * sum_t (theta_t - theta0) on every non-head tensor, then
per task v_t = theta_t - theta* and, per 2-D tensor, a full torch.linalg.svd truncated to
rank ceil(ratio * min(m, n)). 1-D deltas stay dense, heads are copied. Writes shared.safetensors
and one <task>.safetensors of factors per task under --out, and prints the mean relative
reconstruction error ||v - U_r S_r V_r^T||_F / ||v||_F over all (task, 2-D tensor) pairs.

Needs only torch (Debian's python3-torch); safetensors is read and written here by hand.

  /usr/bin/python3 reference_merge.py --base base.safetensors \
      --experts e0.safetensors e1.safetensors --lam 0.3 --ratio 0.1 --threads 2 --out DIR
"""
import argparse
import json
import math
import os
import re
import struct
import sys
import time

import torch

DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
HEADER_ALIGN_BYTES = 8
# ratio * min(m, n) is rounded up after this relative slack, as twin-merge does.
ROUNDING_SLACK = 1e-9


def load_safetensors(path):
    """Returns {name: tensor}; the tensors share one buffer holding the file's data section."""
    with open(path, "rb") as f:
        (header_bytes,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_bytes))
        data = bytearray(os.path.getsize(path) - 8 - header_bytes)
        if f.readinto(data) != len(data):
            raise ValueError(f"{path}: truncated data section")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor '{name}' has unknown dtype {info['dtype']}")
        dtype = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        count = (end - begin) // torch.tensor([], dtype=dtype).element_size()
        if count == 0:
            t = torch.empty(0, dtype=dtype)
        else:
            t = torch.frombuffer(data, dtype=dtype, count=count, offset=begin)
        tensors[name] = t.reshape(info["shape"])
    return tensors


def save_safetensors(path, tensors):
    header, offset = {}, 0
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % HEADER_ALIGN_BYTES)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for t in tensors.values():
            f.write(t.contiguous().numpy().tobytes())


def rank_for(ratio, m, n):
    exact = ratio * min(m, n)
    return max(1, min(min(m, n), math.ceil(exact - ROUNDING_SLACK * max(1.0, exact))))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True)
    p.add_argument("--experts", nargs="+", required=True)
    p.add_argument("--lam", type=float, default=0.3)
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--head_pattern", default=r"^(head|classifier)\.")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    head = re.compile(args.head_pattern)
    os.makedirs(args.out, exist_ok=True)
    clock = time.perf_counter()
    stages = {}

    base = load_safetensors(args.base)
    experts = [load_safetensors(path) for path in args.experts]
    stages["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    merged = {}
    for name, theta0 in base.items():
        if head.search(name):
            continue
        theta0 = theta0.float()
        missing = [p for p, e in zip(args.experts, experts) if name not in e]
        if missing:
            raise KeyError(f"{missing[0]}: tensor '{name}' of the base is missing")
        tau = sum(e[name].float() - theta0 for e in experts)
        merged[name] = theta0 + args.lam * tau
    save_safetensors(os.path.join(args.out, "shared.safetensors"), merged)
    stages["merge"] = time.perf_counter() - clock

    clock = time.perf_counter()
    errors = []
    with torch.no_grad():
        for t, expert in enumerate(experts):
            factors = {}
            for name, theta in expert.items():
                if head.search(name):
                    factors[name] = theta
                    continue
                if name not in merged:
                    raise KeyError(f"{args.experts[t]}: tensor '{name}' is not in the base")
                v = theta.float() - merged[name]
                if v.dim() < 2:
                    factors[name + ".delta"] = v
                    continue
                a = v.reshape(v.shape[0], -1)
                u, s, vh = torch.linalg.svd(a, full_matrices=False)
                r = rank_for(args.ratio, a.shape[0], a.shape[1])
                factors[name + ".us"] = u[:, :r] * s[:r]
                factors[name + ".v"] = vh[:r].t()
                norm = a.double().norm().item()
                dropped = s[r:].double().square().sum().sqrt().item()
                errors.append(dropped / norm if norm > 0 else 0.0)
            save_safetensors(os.path.join(args.out, f"task{t}.safetensors"), factors)
    stages["svd"] = time.perf_counter() - clock

    timing = " ".join(f"{k}={v:.2f}s" for k, v in stages.items())
    print(f"stages: {timing}", file=sys.stderr)
    print(f"tensors_compressed {len(errors)}")
    print(f"mean_rel_error {sum(errors) / len(errors):.6f}")


if __name__ == "__main__":
    try:
        main()
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        sys.exit(f"reference_merge: {type(e).__name__}: {e}")
