"""Small JPEG thumbnails as data: URIs, decoded from untrusted image bytes in a child process with bounded memory."""
from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import io
import itertools
import multiprocessing
import resource
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable

THUMB_PX = 160
JPEG_QUALITY = 70
CHILD_MEMORY_BYTES = 3 * 1024 ** 3  # a Pillow-limit image (89 M pixels) decodes in ~0.3 GiB; a bomb dies here
CHILD_TASKS = 64  # images per child: its CPU-time limit is per batch, and the parent holds only their bytes
CHILD_CPU_S = 120


@dataclasses.dataclass(frozen=True)
class Thumb:
    """A thumbnail (`src`, a data: URI) or why there is none (`error`)."""

    src: str | None = None
    error: str | None = None


def thumbnail(data: bytes, px: int = THUMB_PX) -> str:
    """`data` decoded by runtime.images.load_image (bounded), shrunk to fit px x px, as a JPEG data: URI."""
    from runtime.images import load_image

    image = load_image(data)
    image.thumbnail((px, px))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _limit_child() -> None:
    for kind, limit in ((resource.RLIMIT_AS, CHILD_MEMORY_BYTES), (resource.RLIMIT_CPU, CHILD_CPU_S)):
        hard = resource.getrlimit(kind)[1]
        limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        try:
            resource.setrlimit(kind, (limit, hard))
        except (ValueError, OSError):  # macOS refuses some RLIMIT_AS values: still a child, still one image's loss
            pass


def thumbnails(images: Iterable[bytes | None], px: int = THUMB_PX, *,
               work: Callable[[bytes, int], str] = thumbnail) -> list[Thumb]:
    """A Thumb per image (None: no bytes, no thumbnail), in order; `images` is consumed CHILD_TASKS at a time, so
    only that many images' bytes are held."""
    out: list[Thumb] = []
    source = iter(images)
    while chunk := list(itertools.islice(source, CHILD_TASKS)):
        out += _in_child(chunk, px, work)
    return out


def _in_child(images: list[bytes | None], px: int, work: Callable[[bytes, int], str]) -> list[Thumb]:
    """Decoded one at a time in a limited child. A child that dies (out of memory, out of CPU time, a crashing codec)
    costs only the image it was decoding: with one worker the first unfinished image is the one that killed it; the
    rest go to a fresh child."""
    out = [Thumb() for _ in images]
    pending = [i for i, data in enumerate(images) if data is not None]
    context = multiprocessing.get_context("spawn")  # no copy of the parent's threads and S3 clients
    while pending:
        batch, pending, broken = pending, [], False
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=_limit_child) as pool:
            futures = [(i, pool.submit(work, images[i], px)) for i in batch]
            for i, future in futures:
                try:
                    out[i] = Thumb(src=future.result())
                except BrokenProcessPool:
                    if broken:
                        pending.append(i)
                    else:
                        broken = True
                        out[i] = Thumb(error="the image decoder process died on this image (memory or time limit, "
                                             "or a crash in the codec)")
                except Exception as exc:  # noqa: BLE001 - untrusted bytes: whatever the decoder raises is this image's
                    out[i] = Thumb(error=str(exc)[:300] or exc.__class__.__name__)
    return out
