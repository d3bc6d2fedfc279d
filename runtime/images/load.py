"""Open image bytes or files exactly as HF's `load_image` does, with clear errors for bad input."""
from __future__ import annotations

import io
import os
from pathlib import Path

import PIL.Image
import PIL.ImageOps

from runtime.errors import BadImage

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold


def load_image(source: bytes | str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> PIL.Image.Image:
    """Decode an image, apply its EXIF orientation and convert it to RGB (HF `load_image`).

    Raises `BadImage` with a reason a person can act on for empty, non-image, truncated or
    oversized inputs.
    """
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = "image bytes"
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BadImage(f"{path}: no such file") from None
        name = str(path)
    if not data:
        raise BadImage(f"{name}: the object is empty (0 bytes); upload the image again")
    try:
        with PIL.Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            fmt = probe.format
    except PIL.Image.DecompressionBombError as exc:
        raise BadImage(f"{name}: {exc}") from None
    except PIL.UnidentifiedImageError:
        raise BadImage(f"{name}: not a readable image (the {len(data)} bytes are in no format Pillow knows, "
                       f"starting {data[:8]!r}); upload a JPEG, PNG, WebP, GIF, BMP or TIFF") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImage(f"{name}: corrupt or truncated image ({exc}); upload the file again") from None
    if width * height > max_pixels:
        raise BadImage(
            f"{name}: {width}x{height} {fmt} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (decompression-bomb guard); resize it or raise max_pixels"
        )
    try:
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
        image = PIL.ImageOps.exif_transpose(image)
        return image.convert("RGB")
    except PIL.Image.DecompressionBombError as exc:
        raise BadImage(f"{name}: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImage(f"{name}: corrupt or truncated {fmt} image ({exc})") from None
