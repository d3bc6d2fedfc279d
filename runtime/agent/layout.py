"""The results bucket's key layout: every key the agents write, and the rule that they never caption their own.

Under `<results prefix>` (the agent's `results_prefix`, e.g. `results/`) in the results bucket:
  <source key>.json                  the result record of one image (runtime.agent.results): S3 events and the
                                     images of prefix and URI-list jobs
  _long-keys/<sha256 of key>.json    the same, for a source key too long for the first form
  _jobs/<job id>/                    one folder per job, every kind alike (runtime.agent.plan, runtime.agent.ledger):
    manifest.json                    the job's parts, frozen at its first expansion
    parts/<index>.json               a MANIFEST, prefix or URI-list job's image URIs, cut into parts
    chunks/<index>.json              part <index>'s marker: its counts, errors, model and settings fingerprint
    started/<index>.json             when and by whom the part was last started (progress: in flight)
    shards/<index>.parquet           a dataset job's output: the captions of part <index>, one file, written whole
    runs/<run>/queued.json           the part indexes one submission (or retry) queued
    runs/<run>/done/<index>          one empty object per part of that run finished (listed by groups of 1,000)
    runs/<run>/groups/<group>        one empty object per 1,000 of the run's parts all done, if > 1,000
    runs/<run>/finished.json         the run's summary was written; nothing of the run changes after it
    runs/<run>/notified              put (IfNoneMatch) by the one agent that sends the run's completion notice
    summary.json                     written by whichever agent finishes a run's last part
    refused.json                     why no agent can expand the job (its message is dead-lettered)
  (a job expanded before the one job engine also has `groups/` and `notified` at its top: still read by status)
  _crashes/<sha256 of uri>.json      how often an image alone on the device took a worker down (runtime.agent.crashes)
Nothing under the prefix is ever captioned (`is_own_result`), so results never loop back as images.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from runtime.s3_keys import MAX_KEY_BYTES  # noqa: F401 - the limit the keys built here must keep

if TYPE_CHECKING:
    from runtime.agent.config import AgentConfig

LONG_KEYS = "_long-keys/"
JOBS_FOLDER = "_jobs/"  # tools.collect skips it
CRASHES_FOLDER = "_crashes/"
JOB_MANIFEST, JOB_SUMMARY, JOB_CHUNKS = "manifest.json", "summary.json", "chunks/"
JOB_REFUSED = "refused.json"  # a job no agent can expand: why (its message is dead-lettered)
JOB_PARTS, JOB_SHARDS, JOB_STARTED, JOB_RUNS = "parts/", "shards/", "started/", "runs/"
RUN_DONE, GROUPS = "done/", "groups/"  # in a run's folder; in a job's or a run's folder
RUN_QUEUED, NOTIFIED = "queued.json", "notified"  # in a run's folder; in a prefix job's or a run's folder
RUN_FINISHED = "finished.json"  # in a run's folder: its summary was written; nothing of the run changes after it


def results_location_uri(config: AgentConfig) -> str:
    """`s3://<results bucket>/<results prefix>`: where the result JSON of every image goes (`<prefix><key>.json`)."""
    return f"s3://{config.results_bucket_name}/{config.results_prefix}"


def results_location(config: AgentConfig) -> tuple[str, str]:
    """(bucket, prefix) of the agent's own results: objects there are never captioned, so never loop."""
    return config.results_bucket_name, config.results_prefix


def is_own_result(location: tuple[str, str], bucket: str, key: str) -> bool:
    """True for an object under the agent's results `location` (bucket, prefix): never captioned, never listed.

    The one place this rule lives (S3 events and job listings both ask it). An empty prefix matches nothing:
    `load_config` refuses an empty `results_prefix`, so that case is a caller's test double, never a fleet.
    """
    return bool(location[1]) and bucket == location[0] and key.startswith(location[1])


def result_key(results_prefix: str, source_key: str) -> str:
    """The result object's key for the source object `source_key`.

    A source key near S3's 1,024-byte limit would make `<prefix><key>.json` too long to write: such a result goes
    to `<prefix>_long-keys/<sha256 of the key>.json` instead (deterministic; the record holds the full key).
    """
    key = f"{results_prefix}{source_key}.json"
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    return f"{results_prefix}{LONG_KEYS}{hashlib.sha256(source_key.encode()).hexdigest()}.json"


def job_root(config: AgentConfig, job_id: str) -> str:
    """`<results prefix>_jobs/<job id>/`: where a job's manifest, chunk markers and summary go."""
    return f"{config.results_prefix}{JOBS_FOLDER}{job_id}/"


def _indexed(root: str, folder: str, index: int, suffix: str) -> str:
    """`<root><folder><index, 6 digits><suffix>`: the one shape of every per-index key in a job folder."""
    return f"{root}{folder}{index:06d}{suffix}"


def part_marker(root: str, index: int) -> str:
    """`<job root>chunks/<index, 6 digits>.json`: part `index`'s marker (the folder keeps its first name, `chunks/`,
    so the jobs of agents before the one job engine read as they were written)."""
    return _indexed(root, JOB_CHUNKS, index, ".json")


def crash_key(config: AgentConfig, uri: str) -> str:
    """Where the crash count of the image `uri` lives (in the results bucket)."""
    return f"{config.results_prefix}{CRASHES_FOLDER}{hashlib.sha256(uri.encode()).hexdigest()[:40]}.json"


def part_key(root: str, index: int) -> str:
    """`<job root>parts/<index, 6 digits>.json`: the image URIs of shard `index` of a MANIFEST job."""
    return _indexed(root, JOB_PARTS, index, ".json")


def shard_output(root: str, index: int) -> str:
    """`<job root>shards/<index, 6 digits>.parquet`: the one output file of input shard `index`."""
    return _indexed(root, JOB_SHARDS, index, ".parquet")


def started_marker(root: str, index: int) -> str:
    """`<job root>started/<index, 6 digits>.json`."""
    return _indexed(root, JOB_STARTED, index, ".json")


def run_root(root: str, run: str) -> str:
    """`<job root>runs/<run>/`: what one submission or retry of a dataset job queued, and what of it is done."""
    return f"{root}{JOB_RUNS}{run}/"


def done_marker(run: str, index: int) -> str:
    """`<run root>done/<index, 6 digits>`: shard `index` of the run is finished (an empty object)."""
    return _indexed(run, RUN_DONE, index, "")


def group_marker(root: str, group: int) -> str:
    """`<job or run root>groups/<group, 6 digits>`: every index of group `group` (runtime.agent.tally) finished."""
    return _indexed(root, GROUPS, group, "")
