"""The image types CaptionKit accepts: one list for the stack's S3 filter, the agent, the CLI and Pillow's decoders.

A suffix decides what becomes a job (S3 event filters and prefix listings, both case-sensitive on S3, so the stack
registers the lower- and the upper-case spelling); a Pillow format decides what may reach a decoder (`formats=` at
every open), so an EPS or PDF body under a `.png` name is refused before Ghostscript or any other plugin sees it.
"""

from __future__ import annotations

# Pillow format name -> the file suffixes that carry it
ACCEPTED: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "GIF": (".gif",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
}

PIL_FORMATS: tuple[str, ...] = tuple(ACCEPTED)
IMAGE_SUFFIXES: tuple[str, ...] = tuple(s for suffixes in ACCEPTED.values() for s in suffixes)
HUMAN_LIST = "JPEG, PNG, WebP, GIF, BMP or TIFF"
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold


def is_image_name(name: str) -> bool:
    """True when `name` ends in an accepted suffix, in any case (`photo.JPG`, `scan.Tiff`)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


def case_variants(suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> tuple[str, ...]:
    """Each suffix in lower and upper case, for filters that match case-sensitively (S3 notifications)."""
    out: list[str] = []
    for s in suffixes:
        for v in (s.lower(), s.upper()):
            if v not in out:
                out.append(v)
    return tuple(out)
