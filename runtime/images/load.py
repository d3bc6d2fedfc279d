"""Open image bytes or files exactly as HF's `load_image` does, decoded in a bounded child process."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.errors import BadImage
from runtime.images.formats import DEFAULT_MAX_PIXELS
from runtime.untrusted import images as untrusted


def load_image(source: bytes | str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Decode an image, apply its EXIF orientation and convert it to RGB (HF `load_image`).

    The bytes are decoded in a child process (runtime.untrusted.images), only as one of the accepted formats
    (runtime.images.formats). Raises `BadImage` with a reason a person can act on for empty, non-image, truncated
    or oversized inputs, and for a decoder that crashed or ran over its limits.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return untrusted.load(bytes(source), max_pixels)
    path = Path(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadImage(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadImage(f"{path}: a folder, not an image file") from None
    except OSError as exc:
        raise BadImage(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return untrusted.load(data, max_pixels, str(path))
