"""Turn decoded images into pixel values exactly as HF's PIL-backed image processors do."""

from __future__ import annotations

import math
from typing import NoReturn

import numpy as np
import PIL.Image
import torch

from runtime.errors import ArtifactError

SPEC_KEYS = frozenset(
    {
        "processor_class",
        "backend",
        "do_convert_rgb",
        "do_resize",
        "size",
        "resample",
        "do_center_crop",
        "crop_size",
        "do_rescale",
        "rescale_factor",
        "do_normalize",
        "image_mean",
        "image_std",
        "channel_order",
        "data_format",
        "dtype",
    }
)
FIXED_VALUES = {"backend": "pil", "channel_order": "RGB", "data_format": "channels_first", "dtype": "float32"}
RESAMPLE_CODES = frozenset(int(r) for r in PIL.Image.Resampling)


def validate_spec(spec: dict) -> None:
    """Check a manifest's "preprocessing" entry; raise `ArtifactError` naming the bad key and value."""
    if not isinstance(spec, dict):
        _bad(f"expected a JSON object, got {type(spec).__name__}")
    missing, unknown = SPEC_KEYS - spec.keys(), spec.keys() - SPEC_KEYS
    if missing or unknown:
        _bad(f"missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    for key, value in FIXED_VALUES.items():
        if spec[key] != value:
            _bad(f"{key}={spec[key]!r}, only {value!r} is supported")
    if not isinstance(spec["processor_class"], str):
        _bad(f"processor_class={spec['processor_class']!r} is not a string")
    for key in ("do_convert_rgb", "do_resize", "do_center_crop", "do_rescale", "do_normalize"):
        if not isinstance(spec[key], bool):
            _bad(f"{key}={spec[key]!r} is not true or false")
    _check_used(spec, "do_resize", ("size", "resample"))
    _check_used(spec, "do_center_crop", ("crop_size",))
    _check_used(spec, "do_rescale", ("rescale_factor",))
    _check_used(spec, "do_normalize", ("image_mean", "image_std"))
    if spec["do_resize"]:
        _check_size(spec, "size", ({"height", "width"}, {"shortest_edge"}))
        if type(spec["resample"]) is not int or spec["resample"] not in RESAMPLE_CODES:
            _bad(f"resample={spec['resample']!r} is not a PIL resampling code {sorted(RESAMPLE_CODES)}")
    if spec["do_center_crop"]:
        _check_size(spec, "crop_size", ({"height", "width"},))
    if not spec["do_center_crop"] and (not spec["do_resize"] or "shortest_edge" in spec["size"]):
        _bad("the output size depends on the input image; a fixed size needs a height/width resize or a center crop")
    if spec["do_rescale"] and not _finite(spec["rescale_factor"]):
        _bad(f"rescale_factor={spec['rescale_factor']!r} is not a finite number")
    if spec["do_normalize"]:
        for key in ("image_mean", "image_std"):
            value = spec[key]
            if not (isinstance(value, list) and len(value) == 3 and all(_finite(v) for v in value)):
                _bad(f"{key}={value!r} is not a list of 3 finite numbers")
        if 0 in spec["image_std"]:
            _bad(f"image_std={spec['image_std']!r} contains 0")
    if not (spec["do_rescale"] or spec["do_normalize"]):
        _bad("neither do_rescale nor do_normalize is set, so HF would return uint8 pixels, not float32")


def output_size(spec: dict) -> tuple[int, int]:
    """The (height, width) every image comes out at under a valid spec."""
    size = spec["crop_size"] if spec["do_center_crop"] else spec["size"]
    return size["height"], size["width"]


class Preprocessor:
    """A validated spec with its per-channel lookup table; build once, call from any thread."""

    def __init__(self, spec: dict):
        validate_spec(spec)
        self.spec = spec
        self.height, self.width = output_size(spec)
        self._lut = _value_table(spec)

    def __call__(self, images: list[PIL.Image.Image]) -> torch.Tensor:
        """Pixel values, float32 of shape (N, 3, H, W), for RGB images of any sizes."""
        out = torch.empty((len(images), 3, self.height, self.width), dtype=torch.float32)
        view = out.numpy()
        for i, image in enumerate(images):
            pixels = self._pixels(image)
            for c in range(3):
                np.take(self._lut[c], pixels[:, :, c], out=view[i, c], mode="clip")
        return out

    def _pixels(self, image: PIL.Image.Image) -> np.ndarray:
        spec = self.spec
        if spec["do_convert_rgb"]:
            image = _convert_to_rgb(image)
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image (as runtime.images.load_image returns), got mode {image.mode}")
        if spec["do_resize"]:
            image = image.resize(_resize_target(image.size, spec["size"]), resample=spec["resample"])
        pixels = np.asarray(image)
        if spec["do_center_crop"]:
            pixels = _center_crop(pixels, spec["crop_size"]["height"], spec["crop_size"]["width"])
        return pixels


def preprocess(images: list[PIL.Image.Image], spec: dict) -> torch.Tensor:
    """Pixel values (float32, N x 3 x H x W) for `images` under `spec`; see `Preprocessor` to reuse one."""
    return Preprocessor(spec)(images)


def _value_table(spec: dict) -> np.ndarray:
    # Pixels are uint8, so tabulating HF's own arithmetic (float64 rescale, cast to float32, then
    # float32 normalize) over all 256 values reproduces it bit for bit at the cost of a lookup.
    values = np.arange(256, dtype=np.uint8)[None, :].repeat(3, axis=0)
    if spec["do_rescale"]:
        values = (values.astype(np.float64) * spec["rescale_factor"]).astype(np.float32)
    else:
        values = values.astype(np.float32)
    if spec["do_normalize"]:
        mean = np.array(spec["image_mean"], dtype=np.float32)[:, None]
        std = np.array(spec["image_std"], dtype=np.float32)[:, None]
        values = (values - mean) / std
    return np.ascontiguousarray(values, dtype=np.float32)


def _convert_to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    # HF's convert_to_rgb composites onto white whenever PIL reports transparency, which includes
    # RGB images still carrying a GIF or PNG "transparency" colour after load_image's convert("RGB").
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        background = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _resize_target(image_size: tuple[int, int], size: dict) -> tuple[int, int]:
    """PIL (width, height) after resizing, with HF's arithmetic for the shortest-edge case."""
    if "height" in size:
        return size["width"], size["height"]
    width, height = image_size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _center_crop(pixels: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    """HF's center_crop on an (H, W, C) array: floor offsets, zero padding when the image is smaller."""
    height, width = pixels.shape[:2]
    if height >= crop_height and width >= crop_width:
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        return pixels[top : top + crop_height, left : left + crop_width]
    out = np.zeros((crop_height, crop_width, pixels.shape[2]), dtype=pixels.dtype)
    src_top, dst_top, rows = _overlap(height, crop_height)
    src_left, dst_left, cols = _overlap(width, crop_width)
    out[dst_top : dst_top + rows, dst_left : dst_left + cols] = pixels[
        src_top : src_top + rows, src_left : src_left + cols
    ]
    return out


def _overlap(length: int, crop: int) -> tuple[int, int, int]:
    """(source start, destination start, count) along one axis of HF's pad-then-crop."""
    if length >= crop:
        return (length - crop) // 2, 0, crop
    return 0, math.ceil((crop - length) / 2), length


def _check_used(spec: dict, flag: str, keys: tuple[str, ...]) -> None:
    if not spec[flag]:
        for key in keys:
            if spec[key] is not None:
                _bad(f"{key}={spec[key]!r} but {flag} is false; unused settings must be null")


def _check_size(spec: dict, key: str, allowed: tuple[set[str], ...]) -> None:
    value = spec[key]
    if not (isinstance(value, dict) and set(value) in allowed):
        _bad(f"{key}={value!r}; expected an object with keys " + " or ".join(str(sorted(a)) for a in allowed))
    if not all(type(v) is int and v > 0 for v in value.values()):
        _bad(f"{key}={value!r} has a value that is not a positive integer")


def _finite(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _bad(reason: str) -> NoReturn:
    raise ArtifactError(
        f"manifest.json 'preprocessing' is invalid: {reason}; re-export the model with this version of CaptionKit"
    )
