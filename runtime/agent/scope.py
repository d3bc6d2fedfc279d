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

    @classmethod
    def of(cls, config: AgentConfig) -> Scope:
        return cls(config.images_bucket, config.images_prefix, results_location(config))

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
