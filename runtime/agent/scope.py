"""What the agent may caption: objects in its images bucket under its images prefix, never its own results."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from runtime.agent.layout import is_own_result, results_location

if TYPE_CHECKING:
    from runtime.agent.config import AgentConfig


@dataclasses.dataclass(frozen=True)
class Scope:
    """The images bucket and prefix a message may name, and the results location (bucket, prefix) it may not.

    Result keys hold the source key but not its bucket, so one bucket is what makes them unique: a message that
    names another bucket would otherwise overwrite the result of the same key in this one.
    """

    images_bucket: str
    images_prefix: str
    results: tuple[str, str] = ("", "")
    dataset_sources: tuple[str, ...] = ()  # s3://bucket/prefix/ where dataset jobs may also read

    @classmethod
    def of(cls, config: AgentConfig) -> Scope:
        return cls(config.images_bucket, config.images_prefix, results_location(config), config.dataset_sources)

    @property
    def where(self) -> str:
        return f"s3://{self.images_bucket}/{self.images_prefix}"

    def outside(self, bucket: str, key: str) -> str | None:
        """Why `s3://bucket/key` (an object or a prefix) is not the agent's to read, or None when it is."""
        uri = f"s3://{bucket}/{key}"
        if not self.images_bucket:
            return f"{uri}: images_bucket is not set, so this agent may read nothing; set CAPTIONKIT_IMAGES_BUCKET"
        if bucket != self.images_bucket:
            return f"{uri} is not in the images bucket; this agent reads only {self.where}"
        if not key.startswith(self.images_prefix):
            return f"{uri} is outside the images prefix; this agent reads only {self.where}"
        if is_own_result(self.results, bucket, key):
            return f"{uri} is one of this agent's results, never an image"
        return None

    def dataset_outside(self, bucket: str, key: str) -> str | None:
        """Why a dataset job may not read `s3://bucket/key` (a shard, a manifest, a listed image), or None.

        A dataset job reads the images prefix or any of `dataset_sources`. Its captions go to Parquet files under
        the job (keyed by the full URI), never to per-key result objects, so another bucket cannot collide there.
        """
        for source in self.dataset_sources:
            source_bucket, _, prefix = source.removeprefix("s3://").partition("/")
            if bucket == source_bucket and key.startswith(prefix) and not is_own_result(self.results, bucket, key):
                return None
        why = self.outside(bucket, key)
        if why and self.dataset_sources:
            return (
                f"{why} or the dataset sources ({', '.join(self.dataset_sources)}); to read more, add it to the "
                "stack setting dataset_sources"
            )
        if why and not is_own_result(self.results, bucket, key):
            return (
                f"{why}; a dataset job may read another location once the stack allows it: deploy with "
                f'`-c dataset_sources=s3://{bucket}/` (make local-up SETTINGS="dataset_sources=s3://{bucket}/")'
            )
        return why
