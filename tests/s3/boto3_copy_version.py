#!/usr/bin/python3
"""An independent S3 client (boto3) reads a version published by twin-merge and republishes it.

    boto3_copy_version.py --endpoint URL --bucket B --prefix P --version V --new-version W

Checks, with no code of the project: (with --require-latest) LATEST names V; V's objects are exactly manifest.json
plus the blobs the manifest lists; every blob's size and sha256 match the manifest. Then writes
a copy of the artifact set under W in the project's publishing order (blobs, then
manifest.json with "version" rewritten to W, then LATEST), so that twin-inspect can verify that
a version written by another S3 client reads back through the project's S3 store.

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Exits 1 with a message on the
first mismatch.
"""
import argparse
import hashlib
import json
import os
import sys

import boto3
from botocore.config import Config


def fail(message):
    print(f"boto3_copy_version: {message}", file=sys.stderr)
    sys.exit(1)


def list_keys(s3, bucket, prefix):
    """Every key under prefix, following continuation tokens."""
    keys = {}
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 2}):
        for obj in page.get("Contents", []):
            keys[obj["Key"]] = obj["Size"]
    return keys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--new-version", required=True)
    parser.add_argument("--require-latest", action="store_true",
                        help="fail unless LATEST names --version")
    parser.add_argument("--corrupt", default="",
                        help="store this blob of the copy damaged: the manifest declares a "
                             "digest the stored bytes do not have")
    args = parser.parse_args()

    s3 = boto3.client(
        "s3", endpoint_url=args.endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    root = args.prefix.strip("/") + "/"

    def get(key):
        return s3.get_object(Bucket=args.bucket, Key=root + key)["Body"].read()

    latest = get("LATEST").decode().strip()
    if args.require_latest and latest != args.version:
        fail(f"LATEST names {latest!r}, expected {args.version!r}")

    version_dir = f"{args.version}/"
    listed = list_keys(s3, args.bucket, root + version_dir)
    manifest_bytes = get(version_dir + "manifest.json")
    manifest = json.loads(manifest_bytes)
    if manifest.get("version") != args.version:
        fail(f"manifest.json names version {manifest.get('version')!r}")
    blobs = manifest["blobs"]
    expected = {root + version_dir + name for name in blobs} | {root + version_dir + "manifest.json"}
    if set(listed) != expected:
        fail(f"objects of {args.version} differ from the manifest: "
             f"extra {sorted(set(listed) - expected)}, missing {sorted(expected - set(listed))}")

    contents = {}
    for name, ref in sorted(blobs.items()):
        data = get(version_dir + name)
        if len(data) != ref["size_bytes"] or listed[root + version_dir + name] != len(data):
            fail(f"{name}: {len(data)} bytes, manifest says {ref['size_bytes']}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != ref["sha256"]:
            fail(f"{name}: sha256 {digest}, manifest says {ref['sha256']}")
        contents[name] = data
    print(f"boto3: {args.version} verified: {len(blobs)} blobs, "
          f"{sum(len(d) for d in contents.values())} bytes")

    new_dir = f"{args.new_version}/"
    if args.corrupt:
        if args.corrupt not in contents:
            fail(f"--corrupt {args.corrupt}: no such blob")
        # The manifest declares one new content (so no reader has its digest cached yet), the
        # store gets another of the same size: a reader that downloads it must refuse it.
        declared = contents[args.corrupt] + b"\n"
        blobs[args.corrupt] = {"sha256": hashlib.sha256(declared).hexdigest(),
                               "size_bytes": len(declared)}
        contents[args.corrupt] = contents[args.corrupt] + b"\0"
    for name, data in contents.items():
        s3.put_object(Bucket=args.bucket, Key=root + new_dir + name, Body=data)
    manifest["version"] = args.new_version
    s3.put_object(Bucket=args.bucket, Key=root + new_dir + "manifest.json",
                  Body=json.dumps(manifest, indent=2, sort_keys=True).encode())
    s3.put_object(Bucket=args.bucket, Key=root + "LATEST", Body=f"{args.new_version}\n".encode())
    print(f"boto3: published {args.new_version} ({len(contents)} blobs) and LATEST")


if __name__ == "__main__":
    main()
