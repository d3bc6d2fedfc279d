"""Crash isolation: a journal of what is on the device, and per-image crash counts that outlive the process.

A process killed on the device (out of memory, a segfault, a hang the watchdog ends) takes every held message
back to the queue. Messages that come back (receive count > 1) are suspects: the worker captions their images
one at a time (`Batch.alone`). Before each device call the journal names the images on it; a process that
starts and finds the journal was killed mid-call. If the journal names one image, that image is the culprit:
its count goes up under `<results prefix>_crashes/` (S3, so every worker of the fleet sees it). An image whose
count reached `crash_limit` ends as an error record instead of being captioned again, and its batch-mates,
captioned alone, are unharmed.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from runtime import cache
from runtime.agent.layout import crash_key
from runtime.agent.metrics import log
from runtime.aws import GONE_CODES, error_code


def journal_path(config) -> Path:
    return cache.journal_file(config.cache_dir)


class Journal:
    """The file that names the images on the device while a device call runs (and nothing otherwise)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def on_device(self, uris: list[str]):
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(uris))
        os.replace(partial, self.path)
        try:
            yield
        finally:
            self.clear()

    def clear(self) -> None:
        """Forget the call in hand (an orderly exit mid-call is not the images' fault)."""
        self.path.unlink(missing_ok=True)

    def left_over(self) -> list[str]:
        """The images a killed process had on the device, or [] (`recover` clears the journal once counted)."""
        try:
            uris = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        return [uri for uri in uris if isinstance(uri, str)] if isinstance(uris, list) else []


def crash_count(s3, config, uri: str) -> int:
    """How many times `uri` alone on the device took a worker down (0 when never)."""
    try:
        body = s3.get_object(Bucket=config.results_bucket_name, Key=crash_key(config, uri))["Body"].read()
    except Exception as exc:  # noqa: BLE001 - only "no record" means 0; anything else: retry the message
        if error_code(exc) in GONE_CODES:
            return 0
        raise
    return int(json.loads(body).get("crashes", 0))


def recover(journal: Journal, s3, config) -> list[str]:
    """At start-up: blame the one image a killed process had alone on the device. Returns the journal's images."""
    uris = journal.left_over()
    if len(uris) == 1:
        try:
            count = crash_count(s3, config, uris[0]) + 1
            s3.put_object(
                Bucket=config.results_bucket_name,
                Key=crash_key(config, uris[0]),
                ContentType="application/json",
                Body=json.dumps({"uri": uris[0], "crashes": count}).encode(),
            )
        except Exception as exc:  # noqa: BLE001 - S3 trouble at start-up: this crash goes uncounted, said so
            log("error", event="crash_count_failed", culprit=uris[0], reason=f"{exc.__class__.__name__}: {exc}")
            count = None
        log("error", event="device_crash", culprit=uris[0], crashes=count, crash_limit=config.crash_limit)
    elif uris:
        log(
            "error",
            event="device_crash",
            suspects=uris,
            reason="the worker died with these images on the device; they come back and are captioned one by one",
        )
    journal.clear()
    return uris


def crashed_reason(uri: str, count: int) -> str:
    return (
        f"{uri}: this image crashed the worker {count} times (alone on the device: out of memory, a segfault "
        f"or a hang); it is not captioned again. Check the image; to try again, delete its count (the object "
        f"under _crashes/ in the results prefix whose 'uri' is this one) and resubmit it"
    )
