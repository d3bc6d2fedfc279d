"""A dataset job checked before anything is queued: `runtime submit` runs these with the submitter's credentials.

A SHARDS job's prefix must hold at least one readable shard (one ranged GET each: a tar's first header, a Parquet
file's closing magic) and its first Parquet shard a usable image column; a MANIFEST job's every line must be in scope
(the whole file is read, within its limits). `PlanError` names the first problem. The agent expanding the job lists
the shards again (`list_shards`) and reads the manifest again: the checks save a fleet's time, they protect nothing.
"""

from __future__ import annotations

import collections
import concurrent.futures

from runtime.agent.layout import is_own_result
from runtime.agent.messages import MAX_SHARDS, parse_s3_uri
from runtime.agent.scope import Scope
from runtime.aws import GONE_CODES, error_code
from runtime.errors import PlanError
from runtime.untrusted import manifests
from runtime.untrusted.samples import ShardError, shard_format

TAR_BLOCK = 512
PARQUET_MAGIC = b"PAR1"
CHECK_THREADS = 8


def list_shards(s3, prefix_uri: str, scope: Scope) -> list[dict]:
    """Every `.tar` and `.parquet` under the prefix, sorted by key, with its size; folders and the agent's own
    results skipped. More than MAX_SHARDS is a `PlanError`."""
    bucket, prefix = parse_s3_uri(prefix_uri)
    shards = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            key = entry["Key"]
            if key.endswith("/") or is_own_result(scope.results, bucket, key) or not shard_format(key):
                continue
            shards.append({"uri": f"s3://{bucket}/{key}", "format": shard_format(key), "size": entry["Size"]})
            if len(shards) > MAX_SHARDS:
                raise PlanError(f"{prefix_uri}: over {MAX_SHARDS:,} shards; split the job by prefix")
    return sorted(shards, key=lambda shard: shard["uri"])


def tar_header_problem(header: bytes) -> str | None:
    """Why 512 bytes are not a tar header (too short, end of archive, a bad checksum), or None."""
    if len(header) < TAR_BLOCK:
        return f"{len(header)} bytes, shorter than one tar header ({TAR_BLOCK})"
    if not header.strip(b"\0"):
        return "an empty tar (it starts with the end-of-archive block)"
    try:
        stored = int(header[148:156].strip(b" \0").decode("ascii") or "x", 8)
    except ValueError:
        return "not a tar file (its first header has no octal checksum)"
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:TAR_BLOCK])
    signed = unsigned - 256 * sum(1 for byte in header[:148] + header[156:TAR_BLOCK] if byte > 127)
    return None if stored in (unsigned, signed) else "not a tar file (its first header's checksum does not match)"


def _shard_problem(s3, shard: dict) -> str | None:
    """Why a shard cannot be read (one ranged GET: its first tar header, or Parquet's closing magic), or None."""
    bucket, key = parse_s3_uri(shard["uri"])
    if shard["format"] == "parquet" and shard["size"] < 12:
        return f"{shard['size']} bytes, too short for a Parquet file"
    if shard["format"] == "tar" and shard["size"] < TAR_BLOCK:
        return f"{shard['size']} bytes, shorter than one tar header ({TAR_BLOCK})"
    span = "bytes=0-511" if shard["format"] == "tar" else "bytes=-8"
    try:
        head = s3.get_object(Bucket=bucket, Key=key, Range=span)["Body"].read(TAR_BLOCK)
    except Exception as exc:  # noqa: BLE001 - a shard gone or unreadable is a refusal, the rest is raised
        if error_code(exc) in GONE_CODES | {"AccessDenied", "403"}:
            return f"cannot be read ({error_code(exc)})"
        raise
    if shard["format"] == "tar":
        return tar_header_problem(head)
    return None if head[-4:] == PARQUET_MAGIC else "not a Parquet file (it does not end in PAR1)"


def check_shards(
    s3, prefix_uri: str, scope: Scope, *, image_column: str | None = None, key_column: str | None = None
) -> dict:
    """Refuse (`PlanError`, the first problem by key) unless the prefix holds at least one readable shard and the
    first Parquet shard has a usable image column. Returns {shards, bytes, formats, ...} for `runtime submit`."""
    bucket, prefix = parse_s3_uri(prefix_uri)
    if why := scope.dataset_outside(bucket, prefix):
        raise PlanError(why)
    shards = list_shards(s3, prefix_uri, scope)
    if not shards:
        raise PlanError(f"{prefix_uri}: no .tar or .parquet shards under it")
    with concurrent.futures.ThreadPoolExecutor(CHECK_THREADS) as pool:
        problems = list(pool.map(lambda shard: _shard_problem(s3, shard), shards))
    for shard, problem in zip(shards, problems):
        if problem:
            raise PlanError(f"{shard['uri']}: {problem}")
    summary = {
        "source": prefix_uri,
        "shards": len(shards),
        "bytes": sum(shard["size"] for shard in shards),
        "formats": dict(sorted(collections.Counter(shard["format"] for shard in shards).items())),
    }
    first = next((shard for shard in shards if shard["format"] == "parquet"), None)
    if first:
        from runtime.untrusted import parquet

        try:
            found = parquet.inspect(
                parquet.RangedFile(s3, *parse_s3_uri(first["uri"]), first["size"]),
                image_column=image_column,
                key_column=key_column,
            )
        except ShardError as exc:
            raise PlanError(f"{first['uri']}: {exc}") from None
        summary.update(image_column=found[0], key_column=found[1], first_shard_rows=found[2])
    return summary


def check_manifest(
    s3, uri: str, scope: Scope, *, key_column: str | None = None, max_bytes: int, max_lines: int = manifests.MAX_LINES
) -> dict:
    """Read the manifest through: refuse (`PlanError`) its first out-of-scope or malformed line, an empty list, or
    one past its limits. Returns {manifest, format, images}."""
    count = sum(
        1 for _ in manifests.iter_uris(s3, uri, scope, key_column=key_column, max_bytes=max_bytes, max_lines=max_lines)
    )
    if not count:
        raise PlanError(f"{uri}: lists no images")
    return {"manifest": uri, "format": manifests.manifest_format(parse_s3_uri(uri)[1]), "images": count}
