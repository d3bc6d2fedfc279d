"""Write small test image files of every format and mode the preprocessing parity tests cover."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

EXIF_ORIENTATION = 0x0112


def photo(width: int = 150, height: int = 100, seed: int = 0) -> np.ndarray:
    """An asymmetric, noisy RGB uint8 picture, so flips, rotations and filters all change the pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 7 + y / 11)], axis=-1)
    rgb[: height // 3, : width // 4] = (250, 30, 40)
    rgb += rng.normal(0, 12, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _gif(path: Path) -> None:
    indices = (photo() // 64).astype(np.uint8) @ np.array([16, 4, 1], dtype=np.uint8)
    image = PIL.Image.fromarray(indices, mode="P")
    image.putpalette([v for i in range(64) for v in ((i >> 4) * 85, ((i >> 2) & 3) * 85, (i & 3) * 85)])
    image.save(path, transparency=int(indices[0, 0]))


def _png16(path: Path) -> None:
    # 16-bit values above 255 are clipped by PIL's convert("RGB"), so keep most of them in range.
    image = PIL.Image.fromarray(photo()[:, :, 1].astype(np.uint16) * 2)
    assert image.mode == "I;16", image.mode
    image.save(path)


def _rgba(path: Path) -> None:
    alpha = np.tile(np.arange(150, dtype=np.uint8) * 17 // 10, (100, 1))
    PIL.Image.fromarray(np.dstack([photo(), alpha])).save(path)


def _rotated(orientation: int):
    def write(path: Path) -> None:
        exif = PIL.Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        PIL.Image.fromarray(photo()).save(path, quality=92, exif=exif)

    return write


WRITERS = {
    "jpeg.jpg": lambda p: PIL.Image.fromarray(photo()).save(p, quality=90),
    "png.png": lambda p: PIL.Image.fromarray(photo()).save(p),
    "webp.webp": lambda p: PIL.Image.fromarray(photo()).save(p, quality=80),
    "gif_palette.gif": _gif,
    "grayscale_l.jpg": lambda p: PIL.Image.fromarray(photo()).convert("L").save(p),
    "rgba.png": _rgba,
    "cmyk.jpg": lambda p: PIL.Image.fromarray(photo()).convert("CMYK").save(p, quality=90),
    "png16_i16.png": _png16,
    "exif_rotated6.jpg": _rotated(6),
    "exif_rotated8.jpg": _rotated(8),
    "tall_odd.png": lambda p: PIL.Image.fromarray(photo(57, 161, seed=1)).save(p),
    "large.jpg": lambda p: PIL.Image.fromarray(photo(900, 600, seed=2)).save(p, quality=85),
}
KINDS = tuple(WRITERS)


def write_image(kind: str, folder: Path) -> Path:
    """Write the test image `kind` (a name in `KINDS`) into `folder` and return its path."""
    path = Path(folder) / kind
    WRITERS[kind](path)
    return path
