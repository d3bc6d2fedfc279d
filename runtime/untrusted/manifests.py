"""The image URIs a MANIFEST job lists, read as a stream: CSV or text, Parquet with a key column, S3 Inventory.

Every form is untrusted and bounded: at most `max_bytes` read from S3 (and as much text decompressed), lines of at
most 4 KiB, Parquet key lists read in a decoding child (runtime.untrusted.parquet), and every URI must be one the
workers may read (`Scope.dataset_outside`). The first problem stops the read with a `PlanError` naming the line
(or row): at planning `runtime submit` refuses the job, and an agent expanding it refuses the whole job
(dead-lettered with the reason) rather than caption part of a list someone may have tampered with.

Text and CSV: one key (relative to the manifest's bucket) or `s3://` URI a line, or `bucket,key` rows as S3
Inventory writes them; a first row naming columns (`key`, `uri`, `url`, `path`, `bucket`) is a header, and with
`key_column` the header must name it. A key holding a comma must be quoted, as CSV quotes it. An S3 Inventory
`manifest.json` names its data files (gzip CSV or Parquet; ORC is refused); its CSV keys are URL-encoded
("Key name ... When using the CSV file format, the key name is URL-encoded and must be decoded before you can use
it": https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory.html, "Inventory list contents").
"""

from __future__ import annotations

import csv
import gzip
import json
import posixpath
import urllib.parse
from typing import Callable, Iterator, Protocol

from runtime.errors import PlanError
from runtime.s3_keys import MAX_KEY_BYTES, parse_s3_uri
from runtime.untrusted.samples import ShardError

MAX_LINE_BYTES = 4096
MAX_INVENTORY_JSON_BYTES = 16 * 1024 * 1024  # ~100,000 data files listed
PARQUET_SLICE_ROWS = 65536
READ_BYTES = 1024 * 1024
HEADER_NAMES = ("key", "uri", "url", "path", "bucket")
PARQUET_KEY_COLUMNS = ("key", "uri", "url", "path")
PROGRESS_ROWS = 10_000
MAX_LINES = 20_000_000  # max_manifest_lines: 20 million keys is 20,000 parts of the default 1,000


class Scope(Protocol):
    """Where the workers may read (runtime.agent.scope.Scope): why a key is outside, or None."""

    def dataset_outside(self, bucket: str, key: str) -> str | None: ...


class _Budget:
    """Bytes read so far of at most `limit`; past it, a `PlanError` naming `what`."""

    def __init__(self, limit: int, what: str):
        self.limit, self.what, self.used = limit, what, 0

    def take(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise PlanError(
                f"{self.what} is over max_manifest_bytes ({self.limit:,} bytes); split it into "
                f"several jobs or raise the setting"
            )


class Limits:
    """How far one manifest may expand: bytes read (and as many inflated), lines (blank ones too: a gzip of empty
    lines inflates fast and plans slowly), and `progress`, called at least every PROGRESS_BYTES of text, so whoever
    holds the job message can keep holding it."""

    def __init__(self, max_bytes: int, max_lines: int, progress: Callable[[], None] | None = None):
        self.max_bytes, self.max_lines, self.progress = max_bytes, max_lines, progress


class _Metered:
    """A text stream whose lines are counted against `max_lines` (PlanError past it), calling `progress` as it goes."""

    def __init__(self, stream, limits: Limits, what: str):
        self.stream, self.limits, self.what, self.lines = stream, limits, what, 0

    def read(self, size: int = READ_BYTES) -> bytes:
        data = self.stream.read(READ_BYTES if size is None or size < 0 else min(size, READ_BYTES))
        self.lines += data.count(b"\n")
        if self.lines > self.limits.max_lines:
            raise PlanError(
                f"{self.what} has over {self.limits.max_lines:,} lines (max_manifest_lines); split it "
                f"into several jobs or raise the setting"
            )
        if self.limits.progress is not None:
            self.limits.progress()
        return data


class _Counted:
    """A binary stream whose reads are charged to a budget (what gzip decompresses is counted apart)."""

    def __init__(self, stream, budget: _Budget):
        self.stream, self.budget = stream, budget

    def read(self, size: int = READ_BYTES) -> bytes:
        data = self.stream.read(READ_BYTES if size is None or size < 0 else min(size, READ_BYTES))
        self.budget.take(len(data))
        return data


def _lines(stream, budget: _Budget, where: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, bounded: no line over MAX_LINE_BYTES is ever buffered whole."""
    buffer, number = b"", 0
    while True:
        chunk = stream.read(READ_BYTES)
        budget.take(len(chunk))
        lines = (buffer + chunk).split(b"\n")
        buffer = lines.pop() if chunk else b""  # the last piece is a whole line only at the end
        for line in lines:
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise PlanError(f"{where} line {number}: over {MAX_LINE_BYTES:,} bytes; one key or URI a line")
            try:
                yield number, line.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r")
            except UnicodeDecodeError:
                raise PlanError(f"{where} line {number}: not UTF-8 text") from None
        if len(buffer) > MAX_LINE_BYTES:
            raise PlanError(f"{where} line {number + 1}: over {MAX_LINE_BYTES:,} bytes; one key or URI a line")
        if not chunk:
            return


def _uri(value: str, bucket: str, scope: Scope, where: str) -> str:
    """`value` (an s3:// URI, or a key in `bucket`) as a URI the workers may read, else a `PlanError`."""
    value = value.strip()
    if value.startswith("s3://"):
        try:
            bucket, key = parse_s3_uri(value)
        except ValueError as exc:
            raise PlanError(f"{where}: {exc}") from None
    else:
        key = value
    if not key or key.endswith("/"):
        raise PlanError(f"{where}: {value[:200]!r} names a folder or nothing, not an image")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise PlanError(f"{where}: the key is over S3's {MAX_KEY_BYTES:,} bytes")
    if why := scope.dataset_outside(bucket, key):
        raise PlanError(f"{where}: {why}")
    return f"s3://{bucket}/{key}"


def _rows(lines, where: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each CSV row read over the line stream, so a quoted field may hold commas and
    newlines as CSV allows; a row is bounded like a line (MAX_LINE_BYTES characters, its newlines included)."""
    at = {"line": 0, "first": 1, "size": 0}

    def feed() -> Iterator[str]:
        for number, line in lines:
            at["line"], at["size"] = number, at["size"] + len(line) + 1
            if at["size"] > MAX_LINE_BYTES + 1:
                raise PlanError(
                    f"{where} line {at['first']}: a row over {MAX_LINE_BYTES:,} characters; one key or "
                    f"URI a row (is a quote left open?)"
                )
            yield line + "\n"

    reader = csv.reader(feed())
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise PlanError(f"{where} line {at['first']}: not a CSV row ({exc})") from None
        yield at["first"], fields
        at["first"], at["size"] = at["line"] + 1, 0


def _header(fields: list[str], key_column: str | None, where: str) -> tuple[int, int | None]:
    """(key column, bucket column or None) named by a header row."""
    names = [field.strip() for field in fields]
    lowered = [name.lower() for name in names]
    wanted = key_column or next((name for name, low in zip(names, lowered) if low in PARQUET_KEY_COLUMNS), None)
    if wanted not in names:
        raise PlanError(f"{where}: the header {names[:10]} has no column {wanted or 'key, uri, url or path'!r}")
    bucket_at = lowered.index("bucket") if "bucket" in lowered and wanted.lower() == "key" else None
    return names.index(wanted), bucket_at


def _text_uris(lines, bucket: str, scope: Scope, where: str, key_column: str | None) -> Iterator[str]:
    """URIs of a text or CSV manifest: a value a line, `bucket,key` rows, or the column a header names."""
    columns = None  # None: the first row is still to come; (): there is no header
    for number, fields in _rows(lines, where):
        at = f"{where} line {number}"
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if columns is None:
            columns = ()
            if key_column or fields[0].strip().lower() in HEADER_NAMES:
                columns = _header(fields, key_column, at)
                continue
        if columns:
            key_at, bucket_at = columns
            if len(fields) <= max(key_at, bucket_at or 0):
                raise PlanError(f"{at}: {len(fields)} fields, fewer than the header names")
            value, row_bucket = fields[key_at], bucket if bucket_at is None else fields[bucket_at].strip()
        elif len(fields) >= 2:
            row_bucket, value = fields[0].strip(), fields[1]  # bucket,key as S3 Inventory writes them
        else:
            value, row_bucket = fields[0], bucket
        yield _uri(value, row_bucket, scope, at)


def _inventory_csv_uris(lines, columns: tuple[int, int], scope: Scope, where: str) -> Iterator[str]:
    bucket_at, key_at = columns
    for number, fields in _rows(lines, where):
        at = f"{where} line {number}"
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) <= max(columns):
            raise PlanError(
                f"{at}: {len(fields)} fields; the inventory's fileSchema puts Bucket and Key at "
                f"{bucket_at + 1} and {key_at + 1}"
            )
        try:
            key = urllib.parse.unquote_plus(fields[key_at], errors="strict")
        except UnicodeDecodeError:
            raise PlanError(f"{at}: the key is not URL-encoded UTF-8") from None
        yield _uri(key, fields[bucket_at], scope, at)


def _parquet_uris(
    s3,
    bucket: str,
    key: str,
    size: int,
    scope: Scope,
    where: str,
    key_column: str | None,
    bucket_column: bool,
    limits: Limits,
) -> Iterator[str]:
    """URIs of a Parquet key list, read in a decoding child a row group at a time, only its key (and bucket)."""
    from runtime.untrusted import parquet

    values = parquet.iter_values(
        parquet.RangedFile(s3, bucket, key, size),
        key_column=key_column,
        guesses=PARQUET_KEY_COLUMNS,
        bucket_column=bucket_column,
        max_value_bytes=MAX_LINE_BYTES,
        max_row_group_bytes=parquet.MAX_ROW_GROUP_BYTES,
    )
    row = 0
    try:
        for wanted, value, row_bucket in values:
            row += 1
            at = f"{where} row {row}"
            if row > limits.max_lines:
                raise PlanError(
                    f"{where} has over {limits.max_lines:,} rows (max_manifest_lines); split it into "
                    f"several jobs or raise the setting"
                )
            if limits.progress is not None and row % PROGRESS_ROWS == 0:
                limits.progress()
            if not isinstance(value, str):
                raise PlanError(f"{at}: the {wanted} column must hold text of at most {MAX_LINE_BYTES:,} bytes")
            if row_bucket is not None and not isinstance(row_bucket, str):
                raise PlanError(f"{at}: the bucket column must hold text")
            yield _uri(value, row_bucket if row_bucket is not None else bucket, scope, at)
    except ShardError as exc:
        raise PlanError(f"{where}: {exc}") from None


def _inventory_uris(
    s3, bucket: str, key: str, scope: Scope, budget: _Budget, text: _Budget, limits: Limits
) -> Iterator[str]:
    """The URIs of an S3 Inventory report: its `manifest.json` names the data files and their format."""
    where = f"s3://{bucket}/{key}"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    raw = body.read(MAX_INVENTORY_JSON_BYTES + 1)
    if len(raw) > MAX_INVENTORY_JSON_BYTES:
        raise PlanError(f"{where}: over {MAX_INVENTORY_JSON_BYTES:,} bytes, more than an inventory manifest holds")
    budget.take(len(raw))
    try:
        report = json.loads(raw)
        fmt, files = report["fileFormat"], report["files"]
        destination = report.get("destinationBucket", f"arn:aws:s3:::{bucket}").rsplit(":", 1)[-1]
        if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("key"), str) for f in files):
            raise TypeError("files must be a list of {key, size}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PlanError(f"{where}: not an S3 Inventory manifest ({exc.__class__.__name__}: {exc})") from None
    if fmt not in ("CSV", "Parquet"):
        raise PlanError(
            f"{where}: an inventory in {fmt!r} format; only CSV and Parquet inventories are read "
            f"(configure the inventory as CSV or Parquet)"
        )
    if fmt == "CSV":
        schema = [name.strip() for name in str(report.get("fileSchema", "Bucket, Key")).split(",")]
        if "Bucket" not in schema or "Key" not in schema:
            raise PlanError(f"{where}: its fileSchema {schema[:10]} has no Bucket and Key")
        columns = (schema.index("Bucket"), schema.index("Key"))
    for entry in files:
        data_uri = f"s3://{destination}/{entry['key']}"
        if why := scope.dataset_outside(destination, entry["key"]):
            raise PlanError(f"{where}: its data file {data_uri}: {why}")
        if fmt == "CSV":
            stream = s3.get_object(Bucket=destination, Key=entry["key"])["Body"]
            unzipped = _Metered(gzip.GzipFile(fileobj=_Counted(stream, budget), mode="rb"), limits, data_uri)
            yield from _inventory_csv_uris(_lines(unzipped, text, data_uri), columns, scope, data_uri)
        else:
            size = s3.head_object(Bucket=destination, Key=entry["key"])["ContentLength"]
            budget.take(size)
            yield from _parquet_uris(s3, destination, entry["key"], size, scope, data_uri, None, True, limits)


def manifest_format(key: str) -> str:
    """How a manifest is read, by its name: inventory, parquet, gzip (text or CSV), orc, or text."""
    name = posixpath.basename(key).lower()
    if name.endswith(".json"):
        return "inventory"
    return next(
        (fmt for suffix, fmt in ((".parquet", "parquet"), (".gz", "gzip"), (".orc", "orc")) if name.endswith(suffix)),
        "text",
    )


def iter_uris(
    s3,
    uri: str,
    scope: Scope,
    *,
    key_column: str | None = None,
    max_bytes: int,
    max_lines: int = MAX_LINES,
    progress: Callable[[], None] | None = None,
) -> Iterator[str]:
    """Each image URI the manifest at `uri` lists, in its order; `PlanError` at the first problem (past `max_bytes`
    read or inflated, past `max_lines` lines or rows). `progress` is called as the read goes on."""
    bucket, key = parse_s3_uri(uri)
    if why := scope.dataset_outside(bucket, key):
        raise PlanError(why)
    fmt, budget, text = manifest_format(key), _Budget(max_bytes, uri), _Budget(max_bytes, f"{uri} (decompressed)")
    limits = Limits(max_bytes, max_lines, progress)
    if fmt == "orc":
        raise PlanError(f"{uri}: ORC manifests are not read; write the keys as CSV, text or Parquet")
    if fmt == "inventory":
        yield from _inventory_uris(s3, bucket, key, scope, budget, text, limits)
        return
    if fmt == "parquet":
        size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        budget.take(size)
        yield from _parquet_uris(s3, bucket, key, size, scope, uri, key_column, True, limits)
        return
    reply = s3.get_object(Bucket=bucket, Key=key)
    if fmt == "text" and reply.get("ContentLength", 0) > max_bytes:
        reply["Body"].close()
        raise PlanError(
            f"{uri} is {reply['ContentLength']:,} bytes, over max_manifest_bytes ({max_bytes:,}); "
            f"split it into several jobs or raise the setting"
        )
    if fmt == "gzip":
        lines = _lines(
            _Metered(gzip.GzipFile(fileobj=_Counted(reply["Body"], budget), mode="rb"), limits, uri), text, uri
        )
    else:
        lines = _lines(_Metered(reply["Body"], limits, uri), budget, uri)
    yield from _text_uris(lines, bucket, scope, uri, key_column)
