"""Image bytes to RGB pixels, as HF's `load_image` does, opened only by the decoders of the accepted formats.

`decode` runs inside a decoding child (runtime.untrusted.child); `load` is what everyone else calls: it sends the
bytes to a child and rebuilds the image from the pixels that come back, so a decoder that crashes on crafted bytes
costs one image, never the process. Pillow is asked for `formats=` runtime.images.formats.PIL_FORMATS at every open:
an EPS or PDF body under a `.png` name is an error, and no other plugin (Ghostscript behind EPS) ever sees it.
"""

from __future__ import annotations

import io

from runtime.errors import BadImage
from runtime.images.formats import DEFAULT_MAX_PIXELS, HUMAN_LIST, PIL_FORMATS
from runtime.untrusted import sandbox


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image bytes"):
    """Decode in this process: EXIF orientation applied, RGB out; BadImage with a reason a person can act on."""
    import PIL.Image
    import PIL.ImageOps

    if not data:
        raise BadImage(f"{name}: empty (0 bytes), not an image")
    try:
        with PIL.Image.open(io.BytesIO(data), formats=PIL_FORMATS) as probe:
            width, height = probe.size
            fmt = probe.format
    except PIL.Image.DecompressionBombError as exc:
        raise BadImage(f"{name}: {exc}") from None
    except PIL.UnidentifiedImageError:
        raise BadImage(
            f"{name}: not a readable image (the {len(data):,} bytes start {data[:8]!r}, in none of the "
            f"accepted formats: {HUMAN_LIST}); convert it to one of those"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImage(f"{name}: corrupt or truncated image ({exc})") from None
    if width * height > max_pixels:
        raise BadImage(
            f"{name}: {width}x{height} {fmt} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (decompression-bomb guard); resize it or raise max_pixels"
        )
    try:
        image = PIL.Image.open(io.BytesIO(data), formats=PIL_FORMATS)
        image.load()
        image = PIL.ImageOps.exif_transpose(image)
        return image.convert("RGB")
    except PIL.Image.DecompressionBombError as exc:
        raise BadImage(f"{name}: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImage(f"{name}: corrupt or truncated {fmt} image ({exc})") from None


def decode_request(_channel, args: dict, blobs: list[bytes]):
    """The child's side of `load`: one image's bytes in, its size and RGB bytes out."""
    image = decode(
        blobs[0] if blobs else b"",
        int(args.get("max_pixels", DEFAULT_MAX_PIXELS)),
        str(args.get("name", "image bytes"))[:1100],
    )
    header = {"size": list(image.size)}
    transparency = image.info.get("transparency")
    if isinstance(transparency, tuple) and len(transparency) == 3:
        header["transparency"] = list(transparency)  # HF composites such an image onto white: keep it
    return header, (image.tobytes(),)


def load(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image bytes", pool: sandbox.Sandbox | None = None
):
    """Decode `data` in a decoding child: an RGB PIL image, or BadImage (also when the decoder dies or runs over a
    limit, naming it)."""
    import PIL.Image

    if not data:
        raise BadImage(f"{name}: empty (0 bytes), not an image")
    pool = pool or sandbox.shared()
    header, blobs = pool.call(
        "image.decode",
        {"max_pixels": max_pixels, "name": name},
        (bytes(data),),
        what=f"{name}: the image decoder",
        error=BadImage,
    )
    size = header.get("size")
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(n, int) and n > 0 for n in size)
        and size[0] * size[1] <= max_pixels
        and len(blobs) == 1
        and len(blobs[0]) == size[0] * size[1] * 3
    ):
        raise BadImage(f"{name}: the image decoder answered with pixels that do not match their size")
    image = PIL.Image.frombytes("RGB", tuple(size), blobs[0])
    transparency = header.get("transparency")
    if (
        isinstance(transparency, list)
        and len(transparency) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in transparency)
    ):
        image.info["transparency"] = tuple(transparency)
    return image
