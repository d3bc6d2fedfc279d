"""The data the agent's modules pass around: a message, what it asks for, its images, a batch, the model."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Protocol, Sequence, runtime_checkable


@dataclasses.dataclass(eq=False)
class Message:
    """A received message and when its visibility runs out (monotonic seconds)."""

    id: str
    receipt: str
    body: str
    receive_count: int
    sent_at: float  # epoch seconds, when it entered the queue
    deadline: float  # monotonic seconds
    received_at: float = dataclasses.field(default_factory=time.time)  # epoch seconds
    held_since: float = dataclasses.field(default_factory=time.monotonic)
    lapsed: bool = False  # held past the hold limit: no longer extended


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """One S3 object to caption, optionally pinned to a version."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None  # the event's eTag: the read is IfMatch on it, so replaced bytes are never captioned

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclasses.dataclass(frozen=True)
class ShardRef:
    """Which part of which job (and which run of it) a part message (`captionkit.shard`) asks for: a dataset
    shard, or a part file of image URIs.

    The message carries no location: the part is `index` of the job's manifest in the results bucket, which only
    an agent expanding the job writes, so a forged part message can only redo a real part.
    """

    job_id: str
    index: int
    count: int
    run: str


@dataclasses.dataclass(frozen=True)
class Work:
    """What one message asks for. `images` may be empty (a test event, a removal): delete it."""

    images: tuple[ImageRef, ...] = ()  # an S3 event's objects
    job: dict | None = None  # a job to expand into part messages (runtime.agent.plan)
    shard: ShardRef | None = None  # one part of a job: read, captioned, written as its kind says (parts.run)
    note: str = ""


@dataclasses.dataclass(eq=False)
class Item:
    """One image of a batch and what became of it: a caption, an error record, or a retry."""

    ref: ImageRef
    message: Message
    image: object = None
    etag: str | None = None
    size: int | None = None
    version_id: str | None = None
    caption: str | None = None
    error: str | None = None  # permanent: written as an error record
    retry: str | None = None  # transient: the message goes back to the queue
    skipped: str | None = None  # no record from this message (the object was replaced; its newer event writes one)


@dataclasses.dataclass
class Batch:
    """The messages of one batch, what each asks for, and its images ready for the device."""

    messages: list[Message] = dataclasses.field(default_factory=list)
    work: dict[str, Work] = dataclasses.field(default_factory=dict)  # by message id
    unknown: list[tuple[Message, str]] = dataclasses.field(default_factory=list)  # refused: dead-lettered alone
    items: list[Item] = dataclasses.field(default_factory=list)
    groups: list[list[Item]] = dataclasses.field(default_factory=list)  # device batches
    pixels: list = dataclasses.field(default_factory=list)
    preprocessed_by: object = None
    fetch_s: float = 0.0
    alone: bool = False  # device batches of one image: its messages came back, maybe after a crash

    def suspects(self) -> list[Message]:
        """Messages with images that were received before (a crash, a hang or a retry sent them back)."""
        return [m for m in self.messages if m.receive_count > 1 and self.work.get(m.id) and self.work[m.id].images]

    def shard_messages(self) -> list[Message]:
        """Messages that ask for a dataset shard: each is processed alone, after the batch's images."""
        return [m for m in self.messages if self.work.get(m.id) and self.work[m.id].shard]

    def job_messages(self) -> list[Message]:
        """Messages that ask for a job's expansion: each is expanded on its own, after the batch's images."""
        return [m for m in self.messages if self.work.get(m.id) and self.work[m.id].job]

    def without(self, messages: list[Message]) -> Batch:
        """This batch less `messages`, which hold no images (shard or job messages): its device batches stay as
        made."""
        ids = {m.id for m in messages}
        return dataclasses.replace(
            self,
            messages=[m for m in self.messages if m.id not in ids],
            work={k: v for k, v in self.work.items() if k not in ids},
        )

    def split(self) -> list[Batch]:
        """This batch, or its first-time messages then each suspect message alone (fewest receives first)."""
        suspects = self.suspects()
        if not suspects or (self.alone and len(self.messages) == 1):
            return [self]
        first = [m for m in self.messages if m not in suspects]
        parts = [self._part(first, False)] if first else []
        return parts + [self._part([m], True) for m in sorted(suspects, key=lambda m: m.receive_count)]

    def _part(self, messages: list[Message], alone: bool) -> Batch:
        ids = {m.id for m in messages}
        return Batch(
            messages=messages,
            work={k: v for k, v in self.work.items() if k in ids},
            unknown=[(m, r) for m, r in self.unknown if m.id in ids],
            items=[i for i in self.items if i.message.id in ids],
            fetch_s=self.fetch_s,
            alone=alone,
        )


@runtime_checkable
class Captioner(Protocol):
    """What the agent needs of a captioner (runtime.captioner.Captioner and the tests' fakes): a loaded model,
    its name and file checksum (for the result records), and captions for images or pixels."""

    name: str
    sha256: str
    max_batch: int

    def preprocess(self, images: Sequence[Any]) -> Any:
        """RGB images to a pixel batch (on any thread, before the device is free)."""

    def caption_pixels(self, pixel_values: Any) -> list[str]:
        """Captions for a batch `preprocess` made, on the device."""

    def caption(self, images: Sequence[Any]) -> list[str]:
        """Captions for RGB images (preprocess, then caption_pixels)."""
