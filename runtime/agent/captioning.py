"""What the agent needs of a captioner: the protocol that runtime.captioner.Captioner and the tests' fakes satisfy."""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable


@runtime_checkable
class Captioner(Protocol):
    """A loaded model: its name and file checksum (for the result records), and captions for images or pixels."""

    name: str
    sha256: str
    max_batch: int

    def preprocess(self, images: Sequence[Any]) -> Any:
        """RGB images to a pixel batch (on any thread, before the device is free)."""

    def caption_pixels(self, pixel_values: Any) -> list[str]:
        """Captions for a batch `preprocess` made, on the device."""

    def caption(self, images: Sequence[Any]) -> list[str]:
        """Captions for RGB images (preprocess, then caption_pixels)."""
