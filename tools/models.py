"""`python -m tools.models upload|list|rollback`: the deployed stack's model registry, from a laptop."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from tools import target as targets
from tools.local_aws import aws_client
from tools.outputs import stack_outputs

HISTORY = 20  # previous pointers kept for rollback


def _registry(target: targets.Target):
    outputs = stack_outputs(target.stack_name, target.region, target.endpoint_url)
    return aws_client("s3", target.region, target.endpoint_url), outputs["ArtifactsBucket"], outputs.get(
        "ModelPointerKey", "models/current.json")


def read_pointer(s3, bucket: str, key: str) -> dict | None:
    """The current pointer, or None before the first upload."""
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def upload(s3, bucket: str, pointer_key: str, artifact: Path, progress: bool = True) -> dict:
    """Multipart upload to models/<sha256>.pt2 (S3 checks each part's SHA-256), verify, then move the pointer."""
    from boto3.s3.transfer import TransferConfig
    from tqdm import tqdm

    from runtime.artifact import verify
    from runtime.checksum import file_sha256

    manifest, _ = verify(artifact)  # never publish a file the runtime would refuse
    sha, size = file_sha256(artifact), artifact.stat().st_size
    key = f"models/{sha}.pt2"
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"upload {artifact.name}", disable=not progress,
              file=sys.stderr) as bar:
        s3.upload_file(str(artifact), bucket, key, Callback=bar.update,
                       ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": sha}},
                       Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=16 << 20))
    head = s3.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != size or head.get("Metadata", {}).get("sha256") != sha:
        raise SystemExit(f"s3://{bucket}/{key} is {head['ContentLength']} bytes / sha256 "
                         f"{head.get('Metadata', {}).get('sha256')}, expected {size} / {sha}; upload again")
    previous = read_pointer(s3, bucket, pointer_key)
    history = ([_entry(previous)] + previous.get("history", []))[:HISTORY] if previous else []
    pointer = {"key": key, "sha256": sha, "bytes": size, "model": manifest["source"]["model"],
               "family": manifest["family"], "dtype": manifest["dtype"], "torch_version": manifest["torch_version"],
               "uploaded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "history": history}
    _put_pointer(s3, bucket, pointer_key, pointer)
    return pointer


def _entry(pointer: dict) -> dict:
    return {k: v for k, v in pointer.items() if k != "history"}


def _put_pointer(s3, bucket: str, key: str, pointer: dict) -> None:
    # One PUT replaces the object whole: readers see the old pointer or the new one, never a mix.
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(pointer, indent=1).encode(), ContentType="application/json")


def rollback(s3, bucket: str, pointer_key: str) -> dict:
    """Move the pointer back to the model before the current one."""
    current = read_pointer(s3, bucket, pointer_key)
    if not current or not current.get("history"):
        raise SystemExit("nothing to roll back to: the pointer has no previous model")
    back, *older = current["history"]
    s3.head_object(Bucket=bucket, Key=back["key"])  # fails loudly if that version has expired
    pointer = {**back, "history": older, "rolled_back_from": current["key"]}
    _put_pointer(s3, bucket, pointer_key, pointer)
    return pointer


def list_models(s3, bucket: str, pointer_key: str) -> list[dict]:
    """Every uploaded .pt2, newest first, with which one is current."""
    current = (read_pointer(s3, bucket, pointer_key) or {}).get("key")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="models/")
    objects = [o for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".pt2")]
    objects.sort(key=lambda o: o["LastModified"], reverse=True)
    return [{"key": o["Key"], "bytes": o["Size"], "uploaded": o["LastModified"].isoformat(timespec="seconds"),
             "current": o["Key"] == current} for o in objects]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.models", description=__doc__)
    parser.add_argument("--target", choices=("local", "aws"), default=None,
                        help="default: local after `make local-up`, else aws (or CAPTIONKIT_TARGET)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upload", help="upload a .pt2 and make it the current model")
    up.add_argument("artifact", type=Path)
    commands.add_parser("list", help="uploaded models, newest first")
    commands.add_parser("rollback", help="make the previous model current again")
    args = parser.parse_args(argv)
    s3, bucket, pointer_key = _registry(targets.resolve(args.target))
    if args.command == "upload":
        if not args.artifact.is_file():
            raise SystemExit(f"{args.artifact}: no such file; export one first (make export)")
        pointer = upload(s3, bucket, pointer_key, args.artifact)
        print(f"s3://{bucket}/{pointer['key']} is now the current model ({pointer['model']})", file=sys.stderr)
        print(json.dumps(_entry(pointer)))
    elif args.command == "list":
        for row in list_models(s3, bucket, pointer_key):
            print(f"{'*' if row['current'] else ' '} {row['key']}  {row['bytes'] / 2**20:8.1f} MiB  {row['uploaded']}")
    else:
        pointer = rollback(s3, bucket, pointer_key)
        print(f"current model is back to s3://{bucket}/{pointer['key']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
