"""What a queue message asks for: S3 event notifications, jobs, and the part messages jobs fan out to."""

from __future__ import annotations

import json
import re
import urllib.parse

from runtime.agent.layout import MAX_KEY_BYTES, is_own_result
from runtime.agent.scope import Scope
from runtime.agent.work import ImageRef, ShardRef, Work
from runtime.errors import UnknownMessage
from runtime.s3_keys import parse_s3_uri  # noqa: F401 - the message layer's callers take it from here too

JOB_TYPE = "captionkit.job"
SHARD_TYPE = "captionkit.shard"  # one part of any job (a dataset shard, or a part of a prefix or URI-list job)
LEGACY_CHUNK_TYPE = "captionkit.chunk"  # what agents before the one job engine sent: refused, saying what to do
# A job message without a run (a submitter before runs, or one written by hand) is this run: it sorts before every
# run `submit` makes (they begin with their UTC time), and a replay of it is the same run, so it does nothing new.
FIRST_RUN = "00000000-000000-first"
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_BODY_BYTES = 256 * 1024  # what `runtime submit` sends at most; an S3 event is about 1 KiB
MAX_DEPTH = 16  # brackets deep: an S3 event nests 5, a job 2 (an SNS envelope is parsed on its own)
MAX_RECORDS = 10  # S3 sends one record per event; more is a forged message asking for an outsized batch
MAX_SHARDS = 1_000_000  # parts per job; the job's manifest proves a part message, this only bounds the numbers
MAX_PART_SIZE = 100_000  # images per part a job may ask for (`part_size`); the agent's max_shard_samples caps it too
MAX_COLUMN_CHARS = 128
DATASET_SOURCES = ("shards", "manifest", "retry")  # the message field naming what a dataset job reads
RETRY_CHOICES = ("failed", "errors", "both")
JOB_KINDS = ("images", "shards", "keys", "retry")  # a parsed job's "kind": a prefix or URI list, shards, a manifest


def parse_body(body: str, scope: Scope) -> Work:
    """Parse a message body into what it asks for, within `scope` (the images bucket and prefix; the agent's
    own results are skipped). Raises `UnknownMessage` saying why for anything else."""
    data = _decode(body)
    if isinstance(data, dict) and data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        data = _decode(data["Message"])  # delivered through SNS: unwrapped once, never recursively
    if not isinstance(data, dict):
        raise UnknownMessage(f"expected a JSON object, got {type(data).__name__}")
    if data.get("Event") == "s3:TestEvent":
        return Work(note="s3:TestEvent")
    if isinstance(data.get("Records"), list):
        return _s3_event(data["Records"], scope)
    if data.get("type") == JOB_TYPE:
        return Work(job=_job(data, scope))
    if data.get("type") == LEGACY_CHUNK_TYPE:
        raise UnknownMessage(
            f"a job chunk sent by an agent before the one job engine (job {_brief(data.get('job_id'))}): agents no "
            f"longer read chunks; submit the job again under a new job id to caption the images it had left"
        )
    if data.get("type") == SHARD_TYPE:
        return _shard(data)
    raise UnknownMessage(f"neither an S3 event nor a CaptionKit job: keys {sorted(data)[:10]}")


_ESCAPES, _STRINGS = re.compile(r"\\."), re.compile(r'"[^"]*"')
_NOT_BRACKETS, _INNERMOST = re.compile(r"[^\[\]{}]"), re.compile(r"\[\]|\{\}")


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """True when JSON `text` nests arrays and objects deeper than `limit` (or its brackets do not balance).

    Linear, without parsing: escapes, then strings, then all but brackets are removed, and each round removes
    the innermost pairs; a balanced text `limit` deep is empty after `limit` rounds.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", _ESCAPES.sub("", text)))
    for _ in range(limit):
        brackets, before = _INNERMOST.sub("", brackets), brackets
        if brackets == before:
            break
    return bool(brackets)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _decode(body: str):
    if not isinstance(body, str):
        raise UnknownMessage(f"the body is a {type(body).__name__}, not text")
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise UnknownMessage(f"the body is {size:,} bytes, over the {MAX_BODY_BYTES:,} any CaptionKit message needs")
    if too_deep(body):
        raise UnknownMessage(f"the body nests deeper than {MAX_DEPTH} levels (or its brackets do not balance)")
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, NaN/Infinity, an int of over 4,300 digits
        raise UnknownMessage(
            f"the body is not JSON ({exc.__class__.__name__}: {str(exc)[:200]}): {body[:200]!r}"
        ) from None


def _brief(value) -> str:
    try:
        return repr(value)[:60]
    except ValueError:  # an int too long to print
        return f"a {type(value).__name__}"


def _text(value, what: str) -> str:
    """`value` if it is a string that S3 could hold (valid Unicode), else `UnknownMessage`."""
    if not isinstance(value, str):
        raise UnknownMessage(f"{what} must be a string, not {type(value).__name__} {_brief(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UnknownMessage(f"{what} is not valid Unicode (a lone surrogate): {_brief(value)}") from None
    return value


def _field(value, *path: str):
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _s3_event(records: list, scope: Scope) -> Work:
    if not records or len(records) > MAX_RECORDS:
        raise UnknownMessage(f"an S3 event with {len(records)} records; S3 sends 1 (at most {MAX_RECORDS} read)")
    images, skipped = [], []
    for record in records:
        name = _text(_field(record, "eventName"), "an S3 event record's eventName")
        bucket = _text(_field(record, "s3", "bucket", "name"), "an S3 event record's bucket name")
        obj = _field(record, "s3", "object")
        quoted = _text(_field(obj, "key"), "an S3 event record's object key")
        try:
            key = urllib.parse.unquote_plus(quoted, errors="strict")
        except UnicodeDecodeError:
            raise UnknownMessage(f"the object key {quoted[:200]!r} is not URL-encoded UTF-8") from None
        version, etag = (_field(obj, field) for field in ("versionId", "eTag"))
        for value, what in ((version, "versionId"), (etag, "eTag")):
            if value is not None:
                _text(value, f"an S3 event record's {what}")
        if not name.startswith("ObjectCreated:") or key.endswith("/"):
            skipped.append(f"{name} {key}")
        elif is_own_result(scope.results, bucket, key):
            skipped.append(f"result object {key}")
        elif why := scope.outside(bucket, key):
            raise UnknownMessage(f"an S3 event for an object this agent may not caption: {why}")
        else:
            images.append(ImageRef(bucket, key, version or None, etag or None))
    return Work(images=tuple(images), note="; ".join(skipped))


def _job_id(value) -> str:
    if not isinstance(value, str) or not JOB_ID.match(value):
        raise UnknownMessage(
            f"job_id {_brief(value)} must be 1-128 letters, digits, '.', '_' or '-' (a letter or digit first)"
        )
    return value


def _images(uris, scope: Scope, what: str) -> tuple[ImageRef, ...]:
    if not isinstance(uris, list) or not uris:
        raise UnknownMessage(f"{what}: 'images' must be a non-empty list of S3 URIs, not {_brief(uris)}")
    refs = []
    for uri in uris:
        try:
            bucket, key = parse_s3_uri(_text(uri, f"{what}: an image URI"))
        except ValueError as exc:
            raise UnknownMessage(f"{what}: {exc}") from None
        why = scope.outside(bucket, key) or (
            f"{uri} names a folder, not an image" if key.endswith("/") or not key else None
        )
        if why:
            raise UnknownMessage(f"{what}: {why}")
        refs.append(ImageRef(bucket, key))
    return tuple(refs)


def _job(data: dict, scope: Scope) -> dict:
    job_id, images, prefix = _job_id(data.get("job_id")), data.get("images"), data.get("prefix")
    named = [name for name in ("images", "prefix", *DATASET_SOURCES) if data.get(name) is not None]
    if any(name in DATASET_SOURCES for name in named):
        if len(named) != 1:
            raise UnknownMessage(
                f"job {job_id} names {' and '.join(named)}: a job reads exactly one of images, "
                f"prefix, shards, manifest or retry"
            )
        return _dataset_job(job_id, data, named[0], scope)
    if (images is None) == (prefix is None):
        raise UnknownMessage(f"job {job_id} must name either 'images' (a list of S3 URIs) or 'prefix'")
    run = FIRST_RUN if data.get("run") is None else _run(data["run"], f"job {job_id}")
    job = {"job_id": job_id, "run": run, "kind": "images", "images": None, "source": None, "retry": None}
    job.update(image_column=None, key_column=None, part_size=_part_size(data.get("part_size"), f"job {job_id}"))
    if images is not None:
        _images(images, scope, f"job {job_id}")
        return {**job, "images": images}
    try:
        why = scope.outside(*parse_s3_uri(_text(prefix, f"job {job_id}: the prefix")))
    except ValueError as exc:
        raise UnknownMessage(f"job {job_id}: {exc}") from None
    if why:
        raise UnknownMessage(f"job {job_id}: {why}")
    return {**job, "source": prefix}


def _shard(data: dict) -> Work:
    job_id, index, count = _job_id(data.get("job_id")), data.get("index"), data.get("count")
    if type(index) is not int or type(count) is not int or not 0 <= index < count <= MAX_SHARDS:
        raise UnknownMessage(
            f"job part of {job_id}: index and count must be integers, 0 <= index < count <= "
            f"{MAX_SHARDS:,}, not {_brief(index)} and {_brief(count)}"
        )
    return Work(shard=ShardRef(job_id, index, count, _run(data.get("run"), f"job shard {job_id}/{index}")))


def _run(value, what: str) -> str:
    if not isinstance(value, str) or not JOB_ID.match(value):
        raise UnknownMessage(
            f"{what}: run {_brief(value)} must be 1-128 letters, digits, '.', '_' or '-' (a letter or digit first)"
        )
    return value


def _part_size(value, what: str) -> int | None:
    """Images per part a job asks for (None: the agent's setting)."""
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_PART_SIZE:
        raise UnknownMessage(f"{what}: part_size must be an integer from 1 to {MAX_PART_SIZE:,}, not {_brief(value)}")
    return value


def _column(value, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_COLUMN_CHARS or not value.isprintable():
        raise UnknownMessage(f"{what} must be 1-{MAX_COLUMN_CHARS} printable characters, not {_brief(value)}")
    return value


def _dataset_uri(value, what: str, scope: Scope, *, folder: bool) -> str:
    """A shards prefix (`folder`: '/'-terminated, or a bucket's root) or a manifest object, within the scope."""
    uri = _text(value, what)
    try:
        bucket, key = parse_s3_uri(uri)
    except ValueError as exc:
        raise UnknownMessage(f"{what}: {exc}") from None
    if len(key.encode()) > MAX_KEY_BYTES:
        raise UnknownMessage(f"{what}: the key is over S3's {MAX_KEY_BYTES:,} bytes")
    if folder and key and not key.endswith("/"):
        raise UnknownMessage(f"{what}: {uri[:200]} must end in '/' (a folder of shards)")
    if not folder and (not key or key.endswith("/")):
        raise UnknownMessage(f"{what}: {uri[:200]} names a folder, not a manifest file")
    if why := scope.dataset_outside(bucket, key):
        raise UnknownMessage(f"{what}: {why}")
    return uri


def _dataset_job(job_id: str, data: dict, kind: str, scope: Scope) -> dict:
    """A SHARDS, MANIFEST or retry job: the dict `plan.expand` takes."""
    what = f"job {job_id}"
    run = _run(data.get("run"), what)
    image_column = _column(data.get("image_column"), f"{what}: image_column")
    key_column = _column(data.get("key_column"), f"{what}: key_column")
    job = {
        "job_id": job_id,
        "run": run,
        "kind": "keys" if kind == "manifest" else kind,
        "source": None,
        "image_column": image_column,
        "key_column": key_column,
        "retry": None,
        "part_size": _part_size(data.get("part_size"), what),
    }
    if kind == "retry":
        if not isinstance(data["retry"], str) or data["retry"] not in RETRY_CHOICES:
            raise UnknownMessage(
                f"{what}: retry must be one of {', '.join(RETRY_CHOICES)}, not {_brief(data['retry'])}"
            )
        if image_column or key_column:
            raise UnknownMessage(f"{what}: a retry reads the job's own manifest; it takes no column names")
        return {**job, "retry": data["retry"]}
    if job["part_size"] is not None and kind != "manifest":
        raise UnknownMessage(f"{what}: part_size is for a prefix, a list of images or a manifest; a shard is one part")
    if kind == "manifest" and image_column:
        raise UnknownMessage(f"{what}: a manifest lists images, it has no image column (key_column names its keys)")
    return {**job, "source": _dataset_uri(data[kind], f"{what}: {kind}", scope, folder=kind == "shards")}
