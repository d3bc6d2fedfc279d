"""Small JPEG thumbnails as data: URIs of untrusted image bytes, decoded by the runtime's bounded decoding children."""

from __future__ import annotations

import base64
import dataclasses
import io
from typing import Iterable

from runtime.errors import BadImage

THUMB_PX = 160
JPEG_QUALITY = 70


@dataclasses.dataclass(frozen=True)
class Thumb:
    """A thumbnail (`src`, a data: URI) or why there is none (`error`)."""

    src: str | None = None
    error: str | None = None


def thumbnail(data: bytes, px: int = THUMB_PX) -> str:
    """`data` decoded by runtime.images.load_image (in a decoding child: runtime.untrusted.sandbox), shrunk to fit
    px x px, as a JPEG data: URI."""
    from runtime.images import load_image

    image = load_image(data)
    image.thumbnail((px, px))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnails(images: Iterable[bytes | None], px: int = THUMB_PX) -> list[Thumb]:
    """A Thumb per image (None: no bytes, no thumbnail), in order, one image's bytes held at a time. A decoder that
    dies or runs over its limits costs only its image (an error naming why)."""
    out = []
    for data in images:
        if data is None:
            out.append(Thumb())
            continue
        try:
            out.append(Thumb(src=thumbnail(data, px)))
        except BadImage as exc:
            out.append(Thumb(error=str(exc)[:300]))
    return out
